"""``neurodyn train`` and ``neurodyn demo``."""

from __future__ import annotations

import argparse
import sys

from neurodyn.cli.common import add_overwrite_flag


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train one LFADS model on an h5 data file")
    train.add_argument("config", help="YAML config (every key optional; see the config reference)")
    train.add_argument("--data", required=True, nargs="+", metavar="DATA.h5",
                       help="input h5 file: data (num_neurons, num_samples, num_trials); several files = sessions "
                            "stitched into one model (outputs in OUT/<file stem>/)")
    train.add_argument("--out", required=True, help="output directory")
    train.add_argument("--max-epochs", type=int, help="override the config's max_epochs")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the config's device")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--overwrite", action="store_true",
                       help="replace a run already in --out (otherwise the same command continues it or reports it "
                            "finished, and another run there is refused)")
    train.set_defaults(func=_train)

    infer = subparsers.add_parser(
        "infer", help="apply a trained model to every trial of another data file (same neurons and bin width)",
        description="Rebuilds the model of a 'neurodyn train' folder, a pbt_best_model folder or a 'neurodyn run' "
        "results folder and writes the outputs of every trial of --data (rates, factors, inferred inputs, initial "
        "conditions, ...) in the layout of <split>_output.h5, with trial_idx indexing the new file.")
    infer.add_argument("run_dir", metavar="RUN_DIR", help="the trained model's folder")
    infer.add_argument("--data", required=True, metavar="NEW.h5", help="the data file to infer")
    infer.add_argument("--out", required=True, dest="output", metavar="OUT.h5", help="the output file to write")
    infer.add_argument("--session", metavar="NAME", default=None,
                       help="a model of several sessions: the session the new file records (default: the session "
                            "named like the file's stem)")
    add_overwrite_flag(infer)
    infer.set_defaults(func=_infer)

    demo = subparsers.add_parser("demo", help="the demo: RADICaL on synthetic 2-photon Lorenz data "
                                              "(or --kind spikes: LFADS on Lorenz spikes; --kind nlb: LFADS on "
                                              "the real MC_Maze_Small recording)")
    demo.add_argument("--out", default="demo_results", help="output directory (default: demo_results)")
    demo.add_argument("--kind", choices=["radical", "spikes", "nlb"], default="radical",
                      help="which demo (default radical; nlb: the shipped NLB MC_Maze_Small tensors, default settings, "
                      "co-bps and vel R^2 on 15 local test trials)")
    demo.add_argument("--max-epochs", type=int, help="spikes and nlb demos: shorter run for a quick look")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)


def _train(args: argparse.Namespace) -> int:
    from neurodyn.config import LfadsConfig, load_config
    from neurodyn.train.run import train_model

    config = load_config(args.config, LfadsConfig)
    overrides = {key: value for key, value in (("max_epochs", args.max_epochs), ("device", args.device)) if value}
    if overrides:
        config = LfadsConfig(**{**config.model_dump(), **overrides})
    from neurodyn.train.interrupt import StopSignals

    with StopSignals() as signals:
        data = args.data if len(args.data) > 1 else args.data[0]
        result = train_model(config, data, args.out, progress=not args.no_progress, overwrite=args.overwrite,
                             stop_requested=signals.requested)
    trainer = result.trainer
    if trainer is not None:
        print(f"trained {trainer.epoch} epoch{'s' if trainer.epoch != 1 else ''}; best smoothed validation NLL "
              f"{trainer.best_valid_nll:.5f} at epoch {trainer.best_epoch}; outputs in {result.out_dir}")
    if signals.requested():  # a first Ctrl-C while the outputs were written: they were completed
        print(f"neurodyn: Ctrl-C received while the outputs were written; they are complete in {result.out_dir}",
              file=sys.stderr)
    return 0


def _infer(args: argparse.Namespace) -> int:
    from neurodyn.train.apply import infer_new_data

    shapes = infer_new_data(args.run_dir, args.data, args.output, session=args.session)
    print(f"wrote {args.output}: " + ", ".join(f"{name} {shape}" for name, shape in shapes.items()))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from neurodyn.demo import run_nlb_demo, run_radical_demo, run_spikes_demo

    if args.kind == "nlb":
        run_nlb_demo(args.out, max_epochs=args.max_epochs, progress=not args.no_progress)
    elif args.kind == "spikes":
        run_spikes_demo(args.out, max_epochs=args.max_epochs, progress=not args.no_progress)
    else:
        run_radical_demo(args.out, progress=not args.no_progress)
    return 0
