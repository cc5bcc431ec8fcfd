"""``neurodyn synth ...``: write synthetic benchmark datasets as h5 data files."""

from __future__ import annotations

import argparse

from neurodyn.cli.common import add_overwrite_flag


def register(subparsers) -> None:
    """Add the ``synth`` command and its sub-commands."""
    synth = subparsers.add_parser("synth", help="write a synthetic dataset with known ground truth as an h5 data file")
    kinds = synth.add_subparsers(dest="synth_kind", required=True, metavar="KIND")

    lorenz = kinds.add_parser(
        "lorenz-spikes",
        help="Poisson spiking population driven by the Lorenz system (the SBTT demo's design)",
        description="Lorenz latents -> random log-linear readout -> Poisson counts per bin; optional "
        "bandwidth masking keeps B neurons per trial and bin (the rest NaN). Writes data, truth "
        "(expected count per bin), latents and condition (and behavior with --behavior).",
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
    lorenz.add_argument("--behavior", action="store_true",
                        help="also write 'behavior': the velocity (exact time derivative) of the first two latents, "
                        "in z-scored latent units per bin, for evaluate's vel R^2; the other keys are unchanged")
    add_overwrite_flag(lorenz)
    lorenz.set_defaults(func=run_lorenz_spikes)
    _register_lorenz_kicks(kinds)
    _register_lorenz_2p(kinds)
    _register_lorenz_sessions(kinds)
    _register_lorenz_continuous(kinds)


def _register_lorenz_continuous(kinds) -> None:
    continuous = kinds.add_parser(
        "lorenz-continuous",
        help="continuous signals (any sign) driven by the Lorenz system, for observation: gaussian or mse",
        description="Lorenz latents -> random linear readout plus an offset per channel (the clean signal, both "
        "signs) -> Gaussian noise with one standard deviation per channel. Writes data, truth (the clean signal), "
        "latents and condition; attribute noise_std (per channel).",
    )
    continuous.add_argument("output", metavar="OUT.h5", help="file to write, e.g. traces_data.h5 for run_name 'traces'")
    continuous.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    continuous.add_argument("--neurons", type=int, default=30, help="number of channels (default: 30)")
    continuous.add_argument("--conditions", type=int, default=65, help="number of conditions (default: 65)")
    continuous.add_argument("--trials-per-condition", type=int, default=8, help="trials per condition (default: 8)")
    continuous.add_argument("--bins", type=int, default=50, help="time bins per trial (default: 50)")
    continuous.add_argument("--bin-ms", type=float, default=20.0, help="bin width in ms (default: 20)")
    continuous.add_argument("--noise", type=float, nargs=2, default=[0.3, 1.0], metavar=("LOW", "HIGH"),
                            help="each channel's noise std is drawn uniformly from [LOW, HIGH], in units of the clean "
                            "signal's std (default: 0.3 1.0)")
    add_overwrite_flag(continuous)
    continuous.set_defaults(func=run_lorenz_continuous)


def _register_lorenz_sessions(kinds) -> None:
    sessions = kinds.add_parser(
        "lorenz-sessions",
        help="several sessions of one Lorenz system, each recorded with other neurons (for stitching)",
        description="One Lorenz system and one set of conditions; each session has its own Poisson neurons "
        "(log-linear readout of the latents), its own number of neurons and of trials per condition. Writes "
        "OUT_DIR/session<k>.h5 with data, truth, latents and condition.",
    )
    sessions.add_argument("output_dir", metavar="OUT_DIR", help="folder to write session0.h5, session1.h5, ... into")
    sessions.add_argument("--neurons", type=int, nargs="+", default=[30, 25, 20],
                          help="neurons of each session (default: 30 25 20)")
    sessions.add_argument("--trials-per-condition", type=int, nargs="+", default=[8, 8, 2],
                          help="trials per condition of each session (default: 8 8 2)")
    sessions.add_argument("--conditions", type=int, default=20, help="number of conditions (default: 20)")
    sessions.add_argument("--bins", type=int, default=50, help="time bins per trial (default: 50)")
    sessions.add_argument("--bin-ms", type=float, default=20.0, help="bin width in ms (default: 20)")
    sessions.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sessions.add_argument("--overwrite", action="store_true", help="replace session files that exist")
    sessions.set_defaults(func=run_lorenz_sessions)


def _register_lorenz_kicks(kinds) -> None:
    kicks = kinds.add_parser(
        "lorenz-kicks",
        help="single-trial Lorenz spiking population: no trial repeats, one input kick per trial",
        description="Every trial starts from its own Lorenz state; at a random bin its state is pushed along "
        "one axis (random sign) for a bin or two; log-linear readout -> Poisson counts. Writes data, truth "
        "(expected count per bin), latents, condition (one per trial) and ext_input (the kick: its sign at "
        "the kick's bins, one channel per kick axis); attributes kick_bin, kick_axis and kick_sign per trial.",
    )
    kicks.add_argument("output", metavar="OUT.h5", help="file to write, e.g. kicks_data.h5 for run_name 'kicks'")
    kicks.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    kicks.add_argument("--neurons", type=int, default=29, help="number of neurons (default: 29)")
    kicks.add_argument("--trials", type=int, default=600, help="number of trials, none repeated (default: 600)")
    kicks.add_argument("--bins", type=int, default=50, help="time bins per trial (default: 50)")
    kicks.add_argument("--bin-ms", type=float, default=20.0, help="bin width in ms (default: 20)")
    kicks.add_argument("--kick-size", type=float, default=10.0,
                       help="kick strength: the push's displacement in Lorenz units were the flow frozen; the "
                       "attractor's std is about 8 per axis (default: 10)")
    kicks.add_argument("--kick-bins", type=int, default=2, help="bins the push lasts (default: 2)")
    kicks.add_argument("--kick-axes", default="x",
                       help="Lorenz axes a kick may push along, e.g. x or xyz; one ext_input channel each (default: x)")
    kicks.add_argument("--earliest-kick", type=int, default=10, metavar="BIN",
                       help="earliest kick bin (default: 10)")
    kicks.add_argument("--latest-kick", type=int, default=None, metavar="BIN",
                       help="latest kick bin (default: bins - 10)")
    kicks.add_argument("--min-rate", type=float, default=2.5, metavar="HZ",
                       help="lowest firing rate of every neuron, spikes/s (default: 2.5)")
    kicks.add_argument("--max-rate", type=float, default=75.0, metavar="HZ",
                       help="peak firing rate of every neuron, spikes/s (default: 75)")
    kicks.add_argument("--no-ext-input", action="store_true",
                       help="leave out ext_input (the kicks stay in the attributes): a model trained on the file "
                       "must infer them")
    add_overwrite_flag(kicks)
    kicks.set_defaults(func=run_lorenz_kicks)


def _register_lorenz_2p(kinds) -> None:
    two_p = kinds.add_parser(
        "lorenz-2p",
        help="2-photon calcium imaging of a Lorenz-driven population (RADICaL's example dataset design)",
        description="Lorenz latents -> Poisson spikes at 1 ms steps -> GCaMP-like fluorescence sampled once per "
        "frame at each neuron's scan time, plus noise -> OASIS events -> sub-frame bins (each frame's event in the "
        "sub-bin of the neuron's scan time, the rest NaN). Writes data (events), truth (expected spikes per "
        "sub-bin), latents and condition; attributes frame_rate_hz, subframe_bins, scan_offsets, bin_ms. "
        "Needs the OASIS package (pip install oasis-deconv).",
    )
    two_p.add_argument("output", metavar="OUT.h5", help="file to write, e.g. lorenz2p_data.h5 for run_name 'lorenz2p'")
    two_p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    two_p.add_argument("--neurons", type=int, default=100, help="number of neurons (default: 100)")
    two_p.add_argument("--conditions", type=int, default=65, help="number of conditions (default: 65)")
    two_p.add_argument("--trials-per-condition", type=int, default=24, help="trials per condition (default: 24)")
    two_p.add_argument("--frames", type=int, default=32, help="imaging frames per trial (default: 32)")
    two_p.add_argument("--frame-rate", type=float, default=31.25, metavar="HZ",
                       help="imaging frames per second (default: 31.25, i.e. 32 ms frames)")
    two_p.add_argument("--subframe-bins", type=int, default=4, metavar="K",
                       help="sub-frame bins per frame (default: 4, i.e. 8 ms bins at 31.25 Hz)")
    two_p.add_argument("--lorenz-speed", type=float, default=1.5,
                       help="Lorenz time units per second; larger = faster dynamics (default: 1.5)")
    two_p.add_argument("--min-rate", type=float, default=2.0, metavar="HZ",
                       help="lowest firing rate of every neuron, spikes/s (default: 2)")
    two_p.add_argument("--max-rate", type=float, default=60.0, metavar="HZ",
                       help="peak firing rate of every neuron, spikes/s (default: 60)")
    two_p.add_argument("--rise-ms", type=float, default=20.0, help="calcium kernel rise time constant (default: 20)")
    two_p.add_argument("--decay-ms", type=float, default=300.0, help="calcium kernel decay time constant (default: 300)")
    two_p.add_argument("--noise", type=float, default=0.3,
                       help="fluorescence noise std in units of one spike's peak dF/F (default: 0.3)")
    two_p.add_argument("--min-event", type=float, default=0.1,
                       help="deconvolved events below this size are set to zero (default: 0.1)")
    add_overwrite_flag(two_p)
    two_p.set_defaults(func=run_lorenz_2p)


def run_lorenz_spikes(args: argparse.Namespace) -> int:
    import numpy as np

    from neurodyn.data.seed_format import write_dataset
    from neurodyn.synth.lorenz_spikes import make_lorenz_spikes

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
        behavior=args.behavior,
    )
    write_dataset(args.output, dataset)
    observed = dataset.observed_mask()
    print(
        f"wrote {args.output}: {dataset.num_trials} trials ({args.conditions} conditions x "
        f"{args.trials_per_condition}) x {dataset.num_samples} bins of {args.bin_ms:g} ms x "
        f"{dataset.num_neurons} neurons; {dataset.attrs['keep']} of {dataset.num_neurons} observed per bin; "
        f"true rate {dataset.truth.min():.2f}-{dataset.truth.max():.2f} (mean {dataset.truth.mean():.2f}) "
        f"spikes per bin; {np.nanmean(dataset.data[observed]):.2f} mean observed count; "
        f"{'behavior: velocity of latents 0, 1; ' if dataset.behavior is not None else ''}seed {args.seed}"
    )
    return 0


def run_lorenz_continuous(args: argparse.Namespace) -> int:
    from neurodyn.data.seed_format import write_dataset
    from neurodyn.synth.lorenz_continuous import make_lorenz_continuous

    dataset = make_lorenz_continuous(num_neurons=args.neurons, num_samples=args.bins, bin_ms=args.bin_ms,
                                     num_conditions=args.conditions, trials_per_condition=args.trials_per_condition,
                                     noise_low=args.noise[0], noise_high=args.noise[1], seed=args.seed)
    write_dataset(args.output, dataset)
    print(f"wrote {args.output}: {dataset.num_trials} trials ({args.conditions} conditions x "
          f"{args.trials_per_condition}) x {dataset.num_samples} bins of {args.bin_ms:g} ms x {dataset.num_neurons} "
          f"channels; clean signal {dataset.truth.min():.2f} to {dataset.truth.max():.2f}, noise std "
          f"{args.noise[0]:g}-{args.noise[1]:g} per channel; seed {args.seed}")
    return 0


def run_lorenz_sessions(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neurodyn.data.atomic import refuse_existing_file
    from neurodyn.data.seed_format import write_dataset
    from neurodyn.errors import NeurodynError
    from neurodyn.synth.lorenz_sessions import make_lorenz_sessions

    if len(args.neurons) != len(args.trials_per_condition):
        raise NeurodynError(f"--neurons names {len(args.neurons)} sessions but --trials-per-condition "
                            f"{len(args.trials_per_condition)}; give one value per session to each")
    folder = Path(args.output_dir)
    paths = [folder / f"session{index}.h5" for index in range(len(args.neurons))]
    for path in paths:
        refuse_existing_file(path, args.overwrite)
    datasets = make_lorenz_sessions(args.neurons, args.trials_per_condition, args.conditions, args.bins, args.bin_ms,
                                    args.seed)
    folder.mkdir(parents=True, exist_ok=True)
    for path, dataset in zip(paths, datasets):
        write_dataset(path, dataset)
        print(f"wrote {path}: {dataset.num_trials} trials ({args.conditions} conditions x "
              f"{dataset.attrs['trials_per_condition']}) x {dataset.num_samples} bins of {args.bin_ms:g} ms x "
              f"{dataset.num_neurons} neurons")
    return 0


def run_lorenz_kicks(args: argparse.Namespace) -> int:
    import numpy as np

    from neurodyn.data.seed_format import write_dataset
    from neurodyn.synth.lorenz_kicks import make_lorenz_kicks

    dataset = make_lorenz_kicks(
        num_neurons=args.neurons,
        num_samples=args.bins,
        bin_ms=args.bin_ms,
        num_trials=args.trials,
        kick_size=args.kick_size,
        kick_duration_bins=args.kick_bins,
        kick_axes=args.kick_axes,
        earliest_kick_bin=args.earliest_kick,
        latest_kick_bin=args.latest_kick,
        seed=args.seed,
        min_rate_hz=args.min_rate,
        max_rate_hz=args.max_rate,
    )
    if args.no_ext_input:
        dataset.ext_input = None
    write_dataset(args.output, dataset)
    kick_bin = np.asarray(dataset.attrs["kick_bin"])
    measured = "not written" if args.no_ext_input else f"has {dataset.ext_input_dim} channel(s)"
    print(
        f"wrote {args.output}: {dataset.num_trials} trials (each its own initial state) x {dataset.num_samples} "
        f"bins of {args.bin_ms:g} ms x {dataset.num_neurons} neurons; one kick per trial of size "
        f"{args.kick_size:g} along {args.kick_axes} over {args.kick_bins} bin(s), at bins "
        f"{kick_bin.min()}-{kick_bin.max()} (attribute kick_bin; ext_input {measured}); "
        f"true rate {dataset.truth.min():.2f}-{dataset.truth.max():.2f} (mean {dataset.truth.mean():.2f}) spikes "
        f"per bin; seed {args.seed}"
    )
    return 0


def run_lorenz_2p(args: argparse.Namespace) -> int:
    import numpy as np

    from neurodyn.data.seed_format import write_dataset
    from neurodyn.synth.lorenz_2p import make_lorenz_2p

    dataset = make_lorenz_2p(
        num_neurons=args.neurons,
        num_frames=args.frames,
        frame_rate_hz=args.frame_rate,
        subframe_bins=args.subframe_bins,
        num_conditions=args.conditions,
        trials_per_condition=args.trials_per_condition,
        lorenz_speed=args.lorenz_speed,
        min_rate_hz=args.min_rate,
        max_rate_hz=args.max_rate,
        rise_ms=args.rise_ms,
        decay_ms=args.decay_ms,
        noise_std=args.noise,
        min_event_size=args.min_event,
        seed=args.seed,
    )
    write_dataset(args.output, dataset)
    observed = dataset.data[dataset.observed_mask()]
    print(
        f"wrote {args.output}: {dataset.num_trials} trials ({args.conditions} conditions x "
        f"{args.trials_per_condition}) x {args.frames} frames at {args.frame_rate:g} Hz = {dataset.num_samples} "
        f"sub-frame bins of {dataset.attrs['bin_ms']:g} ms x {dataset.num_neurons} neurons; each neuron observed "
        f"once per frame; {np.mean(observed > 0):.0%} of observations are events (median size "
        f"{np.median(observed[observed > 0]):.2f}); events trail the spikes by ~"
        f"{dataset.attrs['event_delay_ms']:.0f} ms (event_delay_ms); seed {args.seed}"
    )
    return 0
