"""``neurodyn train`` and ``neurodyn demo``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train one LFADS model on an h5 data file")
    train.add_argument("config", help="YAML config (every key optional; see the config reference)")
    train.add_argument("--data", required=True, help="input h5 file: data (num_neurons, num_samples, num_trials)")
    train.add_argument("--out", required=True, help="output directory")
    train.add_argument("--max-epochs", type=int, help="override the config's max_epochs")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the config's device")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    demo = subparsers.add_parser("demo", help="the demo: RADICaL on synthetic 2-photon Lorenz data "
                                              "(or --kind spikes: LFADS on Lorenz spikes)")
    demo.add_argument("--out", default="demo_results", help="output directory (default: demo_results)")
    demo.add_argument("--kind", choices=["radical", "spikes"], default="radical", help="which demo (default radical)")
    demo.add_argument("--max-epochs", type=int, help="spikes demo: shorter run for a quick look")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)


def _train(args: argparse.Namespace) -> int:
    from neurodyn.config import LfadsConfig, load_config
    from neurodyn.train.run import train_model

    config = load_config(args.config, LfadsConfig)
    overrides = {key: value for key, value in (("max_epochs", args.max_epochs), ("device", args.device)) if value}
    if overrides:
        config = LfadsConfig(**{**config.model_dump(), **overrides})
    result = train_model(config, args.data, args.out, progress=not args.no_progress)
    trainer = result.trainer
    print(f"trained {trainer.epoch} epoch{'s' if trainer.epoch != 1 else ''}; best smoothed validation NLL {trainer.best_valid_nll:.5f} "
          f"at epoch {trainer.best_epoch}; outputs in {result.out_dir}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from neurodyn.demo import run_radical_demo, run_spikes_demo

    if args.kind == "spikes":
        run_spikes_demo(args.out, max_epochs=args.max_epochs, progress=not args.no_progress)
    else:
        run_radical_demo(args.out, progress=not args.no_progress)
    return 0
