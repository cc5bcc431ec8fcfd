"""``neurodyn synth ...``: write synthetic benchmark datasets in the user's h5 format."""

from __future__ import annotations

import argparse

import numpy as np

from neurodyn.data.seed_format import write_dataset
from neurodyn.synth.lorenz_spikes import make_lorenz_spikes


def register(subparsers) -> None:
    """Add the ``synth`` command and its sub-commands."""
    synth = subparsers.add_parser("synth", help="write a synthetic dataset (h5, the user's data format)")
    kinds = synth.add_subparsers(dest="synth_kind", required=True, metavar="KIND")

    lorenz = kinds.add_parser(
        "lorenz-spikes",
        help="Poisson spiking population driven by the Lorenz system (the SBTT demo's design)",
        description="Lorenz latents -> random log-linear readout -> Poisson counts per bin; optional "
        "bandwidth masking keeps B neurons per trial and bin (the rest NaN). Writes data, truth "
        "(expected count per bin), latents and condition.",
    )
    lorenz.add_argument("output", metavar="OUT.h5", help="file to write, e.g. lorenz_data.h5 for run_name 'lorenz'")
    lorenz.add_argument("--keep", type=int, default=None, metavar="B",
                        help="observe exactly B neurons per trial and bin (default: all)")
    lorenz.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    lorenz.add_argument("--neurons", type=int, default=29, help="number of neurons (default: 29)")
    lorenz.add_argument("--conditions", type=int, default=65, help="number of conditions (default: 65)")
    lorenz.add_argument("--trials-per-condition", type=int, default=24, help="trials per condition (default: 24)")
    lorenz.add_argument("--bins", type=int, default=50, help="time bins per trial (default: 50)")
    lorenz.add_argument("--bin-ms", type=float, default=20.0, help="bin width in ms (default: 20)")
    lorenz.add_argument("--min-rate", type=float, default=2.5, metavar="HZ",
                        help="lowest firing rate of every neuron, spikes/s (default: 2.5)")
    lorenz.add_argument("--max-rate", type=float, default=75.0, metavar="HZ",
                        help="peak firing rate of every neuron, spikes/s: the rate scale (default: 75)")
    lorenz.add_argument("--lorenz-time-per-bin", type=float, default=0.03,
                        help="Lorenz system time advanced per bin; larger = faster dynamics (default: 0.03)")
    lorenz.set_defaults(func=run_lorenz_spikes)


def run_lorenz_spikes(args: argparse.Namespace) -> int:
    dataset = make_lorenz_spikes(
        num_neurons=args.neurons,
        num_samples=args.bins,
        bin_ms=args.bin_ms,
        num_conditions=args.conditions,
        trials_per_condition=args.trials_per_condition,
        keep=args.keep,
        seed=args.seed,
        min_rate_hz=args.min_rate,
        max_rate_hz=args.max_rate,
        lorenz_time_per_bin=args.lorenz_time_per_bin,
    )
    write_dataset(args.output, dataset)
    observed = dataset.observed_mask()
    print(
        f"wrote {args.output}: {dataset.num_trials} trials ({args.conditions} conditions x "
        f"{args.trials_per_condition}) x {dataset.num_samples} bins of {args.bin_ms:g} ms x "
        f"{dataset.num_neurons} neurons; {dataset.attrs['keep']} of {dataset.num_neurons} observed per bin; "
        f"true rate {dataset.truth.min():.2f}-{dataset.truth.max():.2f} (mean {dataset.truth.mean():.2f}) "
        f"spikes per bin; {np.nanmean(dataset.data[observed]):.2f} mean observed count; seed {args.seed}"
    )
    return 0
