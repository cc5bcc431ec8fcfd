"""User-facing errors: the CLI prints these as one clear line, never as a traceback."""


class NeurodynError(Exception):
    """Bad input or configuration, described for the person who supplied it."""


class RunInterrupted(NeurodynError):
    """A run stopped on request (Ctrl-C, SIGTERM) after saving what it needs to continue; exit status 130."""
