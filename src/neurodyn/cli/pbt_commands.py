"""``neurodyn run``: an AutoLFADS (population-based training) run."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser("run", help="AutoLFADS: population-based training of LFADS (resumable)")
    run.add_argument("config", help="YAML config: PBT settings, model settings, search settings (see the config reference)")
    run.add_argument("--data", nargs="+", metavar="DATA.h5",
                     help="input h5 file (default: <run_name>_data.h5 beside the config); several files = sessions "
                          "stitched into one model (outputs in OUT/pbt_best_model/<file stem>/)")
    run.add_argument("--out", required=True, help="results folder (pbt_best_model/ and <run_name>/)")
    run.add_argument("--ray-address", help="run the workers on this Ray cluster (e.g. auto or HOST:PORT)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--overwrite", action="store_true",
                     help="replace a run already in --out (otherwise the same command continues it or reports it "
                          "finished, and another run there is refused)")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from neurodyn.config import load_run_config
    from neurodyn.pbt.run import resolve_data_path, run_pbt
    from neurodyn.train.interrupt import startup_signal

    run_config = load_run_config(args.config)
    data_path = resolve_data_path(args.config, run_config.model.run_name, args.data)
    # SIGTERM (e.g. from a job scheduler) stops the run like Ctrl-C, the completed generations kept; SIGINT
    # too, even when a script started the run in the background with SIGINT ignored (as shells do for
    # background jobs). Both come from the command line's own handler (neurodyn.cli.main installs
    # neurodyn.train.interrupt's start-up handler for the whole command), which raises KeyboardInterrupt.
    if startup_signal() is not None:  # a Ctrl-C during start-up that an imported library swallowed
        raise KeyboardInterrupt
    result = run_pbt(run_config, data_path, args.out, ray_address=args.ray_address,
                     progress=not args.no_progress, overwrite=args.overwrite)
    print(f"best smoothed validation NLL {result.best_metric:.5f} with {result.best_hyperparameters}; "
          f"{result.finished}; results in {result.results_dir}")
    return 0
