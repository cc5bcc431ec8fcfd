"""The ``neurodyn`` command: one sub-command per job, each registered by its own module."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings

from neurodyn.cli.common import refuse_existing_output
from neurodyn.errors import NeurodynError, RunInterrupted
from neurodyn.train.interrupt import catch_startup_signals, restore_handlers, startup_signal

# This module and the command modules import only the standard library at import time: the heavy
# libraries (torch, numpy, h5py, sklearn, matplotlib) are imported inside the command functions, so
# `neurodyn --help` and `neurodyn --version` answer at once (tests/test_cli_main.py checks it).


def package_version() -> str:
    """The installed neurodyn version (the source tree's when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("neurodyn")
    except PackageNotFoundError:
        from neurodyn import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    from neurodyn.cli import (
        data_commands,
        evaluate_commands,
        gfr_commands,
        lfads_commands,
        pbt_commands,
        synth_commands,
    )

    parser = argparse.ArgumentParser(
        prog="neurodyn", description="Infer the hidden dynamics of neural populations and single neurons."
    )
    parser.add_argument("--version", action="version", version=f"neurodyn {package_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lfads_commands.register(subparsers)
    pbt_commands.register(subparsers)
    synth_commands.register(subparsers)
    evaluate_commands.register(subparsers)
    gfr_commands.register(subparsers)
    data_commands.register(subparsers)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line for the user, not Python's file:line report with a line of our source."""
    print(f"neurodyn: warning: {message}", file=file if file is not None else sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status: 0 done, 2 refused (one line), 130 interrupted (one line).

    A Ctrl-C (or SIGTERM) at any moment gives status 130 and one line, except one that arrives once
    the command's outputs are complete: status 0 and a line saying so. The signal handlers are
    restored on return (``main`` may be called from Python)."""
    previous = catch_startup_signals()
    prefer_sleeping_threads()
    try:
        status = _run_command(argv)
        if status == 0 and startup_signal() is not None:
            # Swallowed by a library while it imported (see neurodyn.train.interrupt), after which the
            # command ran to the end.
            print("neurodyn: Ctrl-C received, but the command had completed its outputs: they are kept",
                  file=sys.stderr)
        return status
    except KeyboardInterrupt:  # between the command's end and its return
        print("neurodyn: interrupted", file=sys.stderr)
        return 130
    finally:
        restore_handlers(previous)


def _run_command(argv: list[str] | None) -> int:
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            parser = build_parser()
            args = parser.parse_args(argv)
            refuse_existing_output(args)
            return int(args.func(args) or 0)
    except RunInterrupted as stopped:
        print(f"neurodyn: {stopped}", file=sys.stderr)
        return 130
    except NeurodynError as error:
        print(f"neurodyn: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neurodyn: interrupted", file=sys.stderr)
        return 130


def prefer_sleeping_threads() -> None:
    """OpenMP threads that wait for work sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``), unless
    the user chose a policy. On a machine whose cores are busy with other jobs, spinning threads fight
    them for the cores: a small-matrix loop on 2 threads of the 2-core VM beside two busy processes took
    6.0 s spinning, 0.77 s sleeping and 0.99 s on one thread. On the idle VM (2 threads, 2026-12-07):
    bench/speed.py 1.48 / 1.63 s per epoch spinning, 1.11 / 1.11 sleeping; refined inference of 312
    sparse trials 8.7 / 11.1 s spinning, 13.4 / 13.5 s sleeping (the one cost). It must be set before
    torch is imported (here: the commands import it), and worker processes inherit it."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _finished(signum, frame) -> None:
    print("neurodyn: Ctrl-C received after the command had finished: nothing was lost", file=sys.stderr, flush=True)


def entry_point() -> None:
    """The ``neurodyn`` executable: ``main``, then exit with its status. A signal that arrives while the
    interpreter shuts down (the outputs complete) is answered with one line and changes nothing."""
    status = main()
    signal.signal(signal.SIGINT, _finished)
    signal.signal(signal.SIGTERM, _finished)
    sys.exit(status)


if __name__ == "__main__":
    entry_point()
