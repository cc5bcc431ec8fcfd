"""Stop a run cleanly on Ctrl-C (SIGINT) or SIGTERM.

The first signal only asks the run to stop at its next safe point (an epoch boundary), where it
saves what it needs to continue; a second signal interrupts at once (KeyboardInterrupt).

Before a run installs its handlers (the command still importing torch or reading its config), the
command line's start-up handler (``catch_startup_signals``) raises KeyboardInterrupt and also
records the signal: a library that swallows every exception while it imports cannot lose the
Ctrl-C, because ``StopSignals`` refuses to start a run once one is recorded.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Callable


_startup_signal: list[int] = []  # the signal received during start-up (at most one entry)


def _record_and_interrupt(signum, frame) -> None:
    if not _startup_signal:
        _startup_signal.append(signum)
    raise KeyboardInterrupt


def catch_startup_signals() -> dict[int, object]:
    """Install the start-up handler for SIGINT and SIGTERM (main thread only) and forget any signal
    recorded before; returns the handlers it replaced, for ``restore_handlers``."""
    _startup_signal.clear()
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, _record_and_interrupt) for signum in StopSignals.SIGNALS}


def startup_signal() -> int | None:
    """The SIGINT/SIGTERM received since ``catch_startup_signals``, or None."""
    return _startup_signal[0] if _startup_signal else None


def restore_handlers(previous: dict[int, object]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


class StopSignals:
    """Context manager that turns SIGINT/SIGTERM into a stop request (``requested()``).

    ``announce`` is called once with a line for the user when the first signal arrives. Outside
    the main thread (where Python cannot install handlers) it does nothing and ``requested()``
    stays False.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: Callable[[str], None] | None = None):
        self.announce = announce or (lambda line: print(line, file=sys.stderr, flush=True))
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}

    def requested(self) -> bool:
        return self.signal_number is not None

    def _handle(self, signum, frame) -> None:
        if self.signal_number is not None:
            raise KeyboardInterrupt
        self.signal_number = signum
        self.announce("neurodyn: stopping at the end of this epoch to save a resumable state "
                      "(press Ctrl-C again to stop at once, losing the current epoch)")

    def __enter__(self) -> "StopSignals":
        if startup_signal() is not None:  # a Ctrl-C during start-up that something swallowed
            raise KeyboardInterrupt
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        restore_handlers(self._previous)
        self._previous.clear()
