"""The ``neurodyn`` command: one sub-command per job, each registered by its own module."""

from __future__ import annotations

import argparse
import sys

from neurodyn.cli.common import refuse_existing_output
from neurodyn.errors import NeurodynError, RunInterrupted


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
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lfads_commands.register(subparsers)
    pbt_commands.register(subparsers)
    synth_commands.register(subparsers)
    evaluate_commands.register(subparsers)
    gfr_commands.register(subparsers)
    data_commands.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
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


if __name__ == "__main__":
    sys.exit(main())
