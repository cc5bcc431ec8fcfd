"""``neurodyn evaluate DIR --data DATA.h5``: score a trained run against the data's ground truth."""

from __future__ import annotations

import argparse


def _run_evaluate(args: argparse.Namespace) -> int:
    # Imported here so that `neurodyn --help` does not pay for sklearn and matplotlib.
    from neurodyn.evaluate.report import evaluate_run, format_metrics

    result = evaluate_run(args.run_dir, args.data, figure_path=args.figure, lag_ms=args.lag_ms)
    print(format_metrics(result))
    return 0


def register(subparsers) -> None:
    """Add the ``evaluate`` sub-command to the ``neurodyn`` parser."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score a run (rate R^2, bits per spike, co-bps, vel R^2, psth R^2, latent R^2) and draw it; writes "
        "evaluation.json and figures",
        description="Evaluate a trained run (or a PBT results directory with pbt_best_model/) on its data "
        "file: rate R^2 against 'truth', bits per spike on observed entries, the ridge map from "
        "inferred log-rates to 'latents', and the Neural Latents Benchmark metrics co-bps ('heldout_neurons'), "
        "vel R^2 (ridge decoding of 'behavior' from the rates, at the behaviour's lag; main window only) and psth R^2 (condition-averaged rates vs "
        "condition-averaged 'truth', else data, by 'condition'). Metrics whose ground truth is absent are "
        "skipped, each NLB metric with its reason. Also draws "
        "evaluation_summary.png: condition-averaged data vs model rates, the factors' principal components and "
        "the training curve, useful on real data.",
    )
    parser.add_argument("run_dir", metavar="DIR", help="run directory holding train_output.h5 and valid_output.h5")
    parser.add_argument("--data", required=True, metavar="DATA.h5", help="the data file the run was trained on")
    parser.add_argument("--figure", metavar="PATH", default=None,
                        help="where to write the example-trial figure (default: DIR/evaluation.png); the summary "
                        "figure goes beside it as NAME_summary.png")
    parser.add_argument("--lag-ms", type=float, default=None, metavar="MS",
                        help="vel R^2 decodes the behaviour MS ms after the rates (NLB: 100 for MC_Maze, 120 for its "
                        "scaling sets; default: the data file's behavior_lag_ms, else 0); a behaviour the file stores "
                        "already shifted (behavior_lag_applied_ms) is not shifted again")
    parser.set_defaults(func=_run_evaluate)

    latents = subparsers.add_parser(
        "map-to-latents",
        help="ridge map from inferred rates to the true latents: R^2 per dimension and a figure",
        description="The map_to_latents analysis of RADICaL (Zhu et al. 2022): ridge regression (alpha by cross-validation on training "
        "trials) from a run's inferred log-rates to the data file's 'latents', R^2 on the test (valid) "
        "trials, and a figure of predicted vs true latents for example conditions.",
    )
    latents.add_argument("results", metavar="RESULTS", help="PBT results folder (uses pbt_best_model/) or a run folder")
    latents.add_argument("--data", required=True, metavar="DATA.h5", help="the data file the run was trained on")
    latents.add_argument("--figure", metavar="PATH", default=None,
                         help="where to write the PNG (default: RESULTS/map_to_latents.png)")
    latents.add_argument("--conditions", type=int, default=4, help="example conditions in the figure (default: 4)")
    latents.set_defaults(func=_run_map_to_latents)


def _run_map_to_latents(args: argparse.Namespace) -> int:
    from neurodyn.evaluate.latents_report import format_latent_mapping, map_latents_run

    print(format_latent_mapping(map_latents_run(args.results, args.data, args.figure, args.conditions)))
    return 0
