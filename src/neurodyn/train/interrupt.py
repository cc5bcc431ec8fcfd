"""Stop a run cleanly on Ctrl-C (SIGINT) or SIGTERM.

The first signal only asks the run to stop at its next safe point (an epoch boundary), where it
saves what it needs to continue; a second signal interrupts at once (KeyboardInterrupt).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Callable


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
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
