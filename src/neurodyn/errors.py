"""User-facing errors: the CLI prints these as one clear line, never as a traceback."""


class NeurodynError(Exception):
    """Bad input or configuration, described for the person who supplied it."""
