"""Pieces several commands share."""

from __future__ import annotations

import argparse


def add_overwrite_flag(parser: argparse.ArgumentParser) -> None:
    """``--overwrite`` for a command that writes one file (``output``): without it an existing file is
    refused before any work is done (``main`` checks, see ``refuse_existing_output``)."""
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    parser.set_defaults(writes_output_file=True)


def refuse_existing_output(args: argparse.Namespace) -> None:
    """Stop (one line) when the command's output file exists and ``--overwrite`` was not given."""
    if getattr(args, "writes_output_file", False):
        from neurodyn.data.atomic import refuse_existing_file

        refuse_existing_file(args.output, args.overwrite)
