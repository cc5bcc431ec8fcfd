"""Real data in and out: ``neurodyn convert``, ``neurodyn prepare nwb|2p``, ``neurodyn export nwb|nlb``."""

from __future__ import annotations

import argparse

from neurodyn.cli.common import add_overwrite_flag
from neurodyn.errors import NeurodynError


def register(subparsers) -> None:
    """Add the ``convert``, ``prepare`` and ``export`` commands to the ``neurodyn`` parser."""
    _register_convert(subparsers)
    prepare = subparsers.add_parser("prepare", help="prepare real recordings (NWB spikes, 2p) as an h5 data file")
    kinds = prepare.add_subparsers(dest="prepare_kind", required=True, metavar="KIND")
    _register_prepare_nwb(kinds)
    _register_prepare_nlb(kinds)
    _register_prepare_2p(kinds)
    _register_prepare_continuous(kinds)
    export = subparsers.add_parser("export", help="export a run's results (into NWB, or an NLB submission)")
    targets = export.add_subparsers(dest="export_kind", required=True, metavar="FORMAT")
    _register_export_nwb(targets)
    _register_export_nlb(targets)


# ---------------------------------------------------------------------------------------------
# convert


def _register_convert(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a MATLAB .mat file (v5 or v7.3) into the h5 data file",
        description="Replaces the AutoLFADS/RADICaL analysis' convert_h5.m: reads the data variable (MATLAB size num_neurons x "
        "num_samples x num_trials, or a cell array of num_neurons x num_samples trials) and optional truth, "
        "latents and condition variables, and writes the h5 data file (key 'data' (num_neurons, num_samples, "
        "num_trials) as h5py reads it).",
    )
    parser.add_argument("mat_file", metavar="FILE.mat", help="MATLAB file, v5/v6/v7 or v7.3")
    parser.add_argument("output", metavar="OUT.h5", help="h5 data file to write, e.g. run001_data.h5")
    parser.add_argument("--var", default=None, metavar="NAME",
                        help="data variable (default: 'data', or the only 3-D variable); struct fields as s.field")
    parser.add_argument("--truth", default=None, metavar="NAME", help="variable of true rates (same size as the data)")
    parser.add_argument("--latents", default=None, metavar="NAME",
                        help="variable of true latents (num_latents in place of num_neurons)")
    parser.add_argument("--condition", default=None, metavar="NAME", help="vector of integer labels, one per trial")
    parser.add_argument("--axes", default="neurons,samples,trials", metavar="A,B,C",
                        help="what the data variable's MATLAB dimensions are, in order "
                        "(default: neurons,samples,trials; e.g. trials,samples,neurons)")
    parser.add_argument("--bin-ms", type=float, default=None, help="bin width in ms, stored as the attribute bin_ms")
    add_overwrite_flag(parser)
    parser.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from neurodyn.data.matlab import MatVariables, convert_mat_file, describe_dataset

    axes = tuple(part.strip() for part in args.axes.split(","))
    variables = MatVariables(data=args.var, truth=args.truth, latents=args.latents, condition=args.condition)
    dataset = convert_mat_file(args.mat_file, args.output, variables, axes, args.bin_ms)
    print(f"wrote {args.output} from variable '{dataset.attrs['source_variable']}': {describe_dataset(dataset)}")
    return 0


# ---------------------------------------------------------------------------------------------
# prepare nwb


def _register_prepare_nwb(kinds) -> None:
    parser = kinds.add_parser(
        "nwb",
        help="bin the spikes of an NWB file's Units table per trial (trials table) into an h5 data file",
        description="Counts each unit's spikes in bins of --bin-ms around a trials-table column (seconds): "
        "bins from ALIGN + START to ALIGN + STOP ms with --window, else from ALIGN to each trial's stop_time "
        "(shorter trials padded with NaN). Units without a spike in any window are dropped (listed). "
        "Optionally holds out neurons for co-smoothing (key 'heldout_neurons'). A file in the Neural Latents "
        "Benchmark's layout keeps NLB's held-out units (the Units table's 'heldout' column, unless --heldout-* is "
        "given) and trial roles (the trials table's 'split': train, val -> valid, test; 'none' trials skipped).",
    )
    parser.add_argument("nwb_file", metavar="FILE.nwb", help="NWB file with a Units table and a trials table")
    parser.add_argument("output", metavar="OUT.h5", help="h5 data file to write")
    parser.add_argument("--bin-ms", type=float, required=True, help="bin width in ms")
    parser.add_argument("--align", default="start_time", metavar="COLUMN",
                        help="trials column to align to, in seconds (default: start_time)")
    parser.add_argument("--window", type=float, nargs=2, default=None, metavar=("START", "STOP"),
                        help="window in ms relative to the alignment time, e.g. -250 450 (default: to stop_time)")
    parser.add_argument("--condition", default=None, metavar="COLUMN",
                        help="trials column of condition labels (strings are numbered in sorted order)")
    held = parser.add_mutually_exclusive_group()
    held.add_argument("--heldout-fraction", type=float, default=None, metavar="F",
                      help="hold out a random fraction F of the neurons for co-bps (seeded by --seed)")
    held.add_argument("--heldout-neurons", default=None, metavar="I,J,...",
                      help="hold out these neurons (indices into the written neuron axis, from 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out choice (default: 0)")
    add_overwrite_flag(parser)
    parser.set_defaults(func=_run_prepare_nwb)


def _run_prepare_nwb(args: argparse.Namespace) -> int:
    import numpy as np

    from neurodyn.data.nwb_spikes import SpikeBinning, prepare_nwb_spikes
    from neurodyn.data.seed_format import count_trial_roles

    binning = SpikeBinning(bin_ms=args.bin_ms, align=args.align,
                           window_ms=tuple(args.window) if args.window else None, condition_column=args.condition)
    indices = _index_list(args.heldout_neurons, "--heldout-neurons") if args.heldout_neurons else None
    dataset, heldout = prepare_nwb_spikes(args.nwb_file, args.output, binning, args.heldout_fraction, indices,
                                          args.seed)
    lines = [f"wrote {args.output}: {dataset.num_trials} trials x {dataset.num_samples} bins of {args.bin_ms:g} ms "
             f"x {dataset.num_neurons} units; {int(np.nansum(dataset.data))} spikes"]
    if "dropped_unit_ids" in dataset.attrs:
        lines.append(f"  dropped units without spikes in any window (ids): {_shown(dataset.attrs['dropped_unit_ids'])}")
    if "skipped_trial_ids" in dataset.attrs:
        lines.append(f"  skipped trials whose '{args.align}' is NaN (ids): {_shown(dataset.attrs['skipped_trial_ids'])}")
    if "trial_num_samples" in dataset.attrs:
        lines.append("  trials of unequal length: shorter ones padded with NaN (attribute trial_num_samples)")
    if heldout is not None:
        source = " (the Units table's 'heldout' column, NLB's)" if args.heldout_fraction is None and \
            args.heldout_neurons is None else ""
        lines.append(f"  held-out neurons ({heldout.size}){source}: {_shown(heldout)}")
    if dataset.split is not None:
        roles = ", ".join(f"{count} {role}" for role, count in count_trial_roles(dataset.split).items())
        lines.append(f"  trial roles from the trials table's 'split' column (NLB's): {roles}"
                     + ("; held-out units are NaN in the test trials (withheld by NLB)" if heldout is not None else ""))
    print("\n".join(lines))
    return 0


def _index_list(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise NeurodynError(f"{option} expects comma-separated integers, e.g. 0,5,9; got {text!r}") from None


def _shown(values, limit: int = 20) -> str:
    import numpy as np

    values = list(np.asarray(values).tolist())
    return ", ".join(str(v) for v in values[:limit]) + (", ..." if len(values) > limit else "")


# ---------------------------------------------------------------------------------------------
# prepare nlb


def _register_prepare_nlb(kinds) -> None:
    parser = kinds.add_parser(
        "nlb",
        help="Neural Latents Benchmark tensors (nlb_tools' *_train.h5 [and eval input]) -> an h5 data file",
        description="Reads nlb_tools' training tensors (train_spikes_heldin, train_spikes_heldout, the *_forward "
        "bins and train_behavior) and, optionally, its evaluation input (eval_spikes_heldin), and writes one data "
        "file: the training-phase trials (split into train and valid), then the evaluation trials (split 'test'); "
        "held-in then held-out neurons ('heldout_neurons'); the window's bins, then the forward bins (attribute "
        "forward_bins, taken by the config's forward_bins: auto). What NLB withholds (the evaluation trials' "
        "held-out neurons, forward bins and behaviour) is NaN. The behaviour is kept as nlb_tools shifted it, with "
        "its lag recorded (behavior_lag_ms, behavior_lag_applied_ms) so it is never shifted twice.",
    )
    parser.add_argument("inputs", metavar="TRAIN.h5 [EVAL_INPUT.h5]", nargs="+",
                        help="nlb_tools' training tensors (e.g. mc_maze_small_train.h5), optionally its evaluation "
                        "input (mc_maze_small_eval_input.h5)")
    parser.add_argument("output", metavar="OUT.h5", help="h5 data file to write")
    parser.add_argument("--dataset", default=None, metavar="NAME",
                        help="the NLB dataset, e.g. mc_maze_small (sets the behaviour's lag; default: from TRAIN's file "
                        "name)")
    parser.add_argument("--bin-ms", type=float, default=5.0, help="bin width of the tensors in ms (default: 5, NLB's; "
                        "20 for the _20 tensors)")
    parser.add_argument("--valid-fraction", type=float, default=0.2, metavar="F",
                        help="fraction of the training-phase trials (after any local test trials) that validate "
                        "(default: 0.2)")
    parser.add_argument("--local-test-trials", type=int, default=0, metavar="N",
                        help="without an evaluation file: make N training-phase trials (seeded) test trials, never "
                        "trained on, with their held-out neurons known, to score co-bps locally (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the valid and local test trials (default: 0)")
    add_overwrite_flag(parser)
    parser.set_defaults(func=_run_prepare_nlb)


def _run_prepare_nlb(args: argparse.Namespace) -> int:
    from neurodyn.data.nlb_tensors import NlbSplit, nlb_dataset
    from neurodyn.data.seed_format import count_trial_roles, write_dataset

    if len(args.inputs) > 2:
        raise NeurodynError(f"prepare nlb takes TRAIN.h5 [EVAL_INPUT.h5] OUT.h5; got {len(args.inputs) + 1} files")
    train_path, eval_path = args.inputs[0], (args.inputs[1] if len(args.inputs) == 2 else None)
    split = NlbSplit(valid_fraction=args.valid_fraction, local_test_trials=args.local_test_trials, seed=args.seed)
    dataset = nlb_dataset(train_path, eval_path, args.dataset, args.bin_ms, split)
    write_dataset(args.output, dataset)
    roles = count_trial_roles(dataset.split)
    attrs = dataset.attrs
    lines = [f"wrote {args.output}: {dataset.num_trials} trials x {dataset.num_samples} bins of {args.bin_ms:g} ms x "
             f"{dataset.num_neurons} neurons ({dataset.num_neurons - dataset.heldout_neurons.size} held in, "
             f"{dataset.heldout_neurons.size} held out); {roles['train']} train, {roles['valid']} valid, "
             f"{roles['test']} test trials",
             f"  forward bins: {attrs['forward_bins']} (after the {dataset.num_samples - attrs['forward_bins']}-bin "
             "window; forward_bins: auto takes them)"]
    if eval_path is not None:
        lines.append(f"  the {roles['test']} evaluation trials' held-out neurons, forward bins and behaviour are NaN "
                     "(withheld by NLB)")
    if "behavior_lag_ms" in attrs:
        lines.append(f"  behaviour: {dataset.behavior.shape[2]} dimensions, already shifted by NLB's "
                     f"{attrs['behavior_lag_ms']:g} ms lag ({attrs['nlb_dataset']})")
    print("\n".join(lines))
    return 0


# ---------------------------------------------------------------------------------------------
# prepare 2p


def _register_prepare_2p(kinds) -> None:
    parser = kinds.add_parser(
        "2p",
        help="suite2p folder or NWB ophys file -> OASIS events (or dF/F) in sub-frame bins (h5 data file for RADICaL)",
        description="Neuropil correction (F - c * Fneu), OASIS deconvolution of each ROI's whole recording, trials "
        "cut at the first frame at or after each start time, per-ROI scan offsets from the ROI's centroid line "
        "((line + 0.5) / lines per frame), and sub-frame binning (each frame's event in the sub-bin of the ROI's "
        "scan time, NaN elsewhere). SOURCE is a suite2p plane folder (F.npy, Fneu.npy, iscell.npy, ops.npy, "
        "stat.npy; ops/stat are pickles: trusted folders only) or an NWB file (RoiResponseSeries + "
        "PlaneSegmentation). --signal dff writes dF/F instead of events (no deconvolution), for observation: "
        "gaussian.",
    )
    parser.add_argument("source", metavar="SOURCE", help="suite2p plane folder (or suite2p/ with one plane), or FILE.nwb")
    parser.add_argument("output", metavar="OUT.h5", help="h5 data file to write")
    parser.add_argument("--trial-starts", default=None, metavar="FILE|T1,T2,...",
                        help="trial start times in seconds: a text file (one per line) or a comma list; "
                        "for NWB the default is the trials table (--align)")
    parser.add_argument("--align", default="start_time", metavar="COLUMN",
                        help="NWB trials column of trial starts when --trial-starts is not given (default: start_time)")
    parser.add_argument("--trial-frames", type=int, required=True, help="imaging frames per trial")
    parser.add_argument("--subframe-bins", type=int, default=4, metavar="K", help="sub-frame bins per frame (default: 4)")
    parser.add_argument("--neuropil-coefficient", type=float, default=0.7,
                        help="c in F - c * Fneu (default: 0.7, suite2p's; 0 = no correction)")
    parser.add_argument("--decay-s", type=float, default=None,
                        help="indicator decay time constant in s (default: estimated per ROI by OASIS)")
    parser.add_argument("--rise-s", type=float, default=0.0, help="rise time constant in s (> 0: AR(2); default 0)")
    parser.add_argument("--min-event-size", type=float, default=0.0, help="drop smaller events (default: 0)")
    parser.add_argument("--signal", choices=("events", "dff"), default="events",
                        help="events: OASIS events, for observation: zig (default); dff: dF/F of the corrected traces "
                        "(no deconvolution), for observation: gaussian")
    parser.add_argument("--baseline-window-s", type=float, default=60.0,
                        help="--signal dff: window of the running baseline F0, in s (default: 60)")
    parser.add_argument("--first-frame-s", type=float, default=0.0,
                        help="suite2p: time of the first frame on the trial clock, s (default: 0)")
    parser.add_argument("--all-rois", action="store_true", help="suite2p: keep ROIs that iscell.npy rejects")
    parser.add_argument("--min-cell-probability", type=float, default=0.0,
                        help="suite2p: keep cells whose classifier probability is at least this (default: 0)")
    parser.add_argument("--series", default=None, help="NWB: the RoiResponseSeries to use (default: the only one)")
    parser.add_argument("--neuropil-series", default=None, help="NWB: RoiResponseSeries holding the neuropil traces")
    parser.add_argument("--lines-per-frame", type=int, default=None,
                        help="NWB: scan lines per frame (default: the image masks' extent)")
    parser.add_argument("--line-axis", choices=("x", "y"), default="y",
                        help="NWB: mask axis along which the lines are stacked (default: y, the schema's)")
    add_overwrite_flag(parser)
    parser.set_defaults(func=_run_prepare_2p)


def _run_prepare_2p(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from neurodyn.data.prepare_2p import TwoPhotonSettings, prepare_two_photon
    from neurodyn.data.seed_format import write_dataset

    source = Path(args.source)
    if not source.exists():
        raise NeurodynError(f"{source}: not found (expected a suite2p plane folder, or an NWB file with "
                            "two-photon fluorescence)")
    if source.is_dir():
        from neurodyn.data.suite2p import read_suite2p_plane

        traces = read_suite2p_plane(source, cells_only=not args.all_rois,
                                    min_cell_probability=args.min_cell_probability, first_frame_s=args.first_frame_s)
        if args.trial_starts is None:
            raise NeurodynError("a suite2p folder has no trial times: give --trial-starts FILE or T1,T2,...")
        starts = _trial_starts(args.trial_starts)
    else:
        from neurodyn.data.nwb_ophys import read_nwb_ophys, read_nwb_trial_starts

        traces = read_nwb_ophys(source, args.series, args.neuropil_series, args.lines_per_frame, args.line_axis)
        starts = _trial_starts(args.trial_starts) if args.trial_starts else read_nwb_trial_starts(source, args.align)
    settings = TwoPhotonSettings(trial_frames=args.trial_frames, subframe_bins=args.subframe_bins,
                                 neuropil_coefficient=args.neuropil_coefficient, decay_s=args.decay_s,
                                 rise_s=args.rise_s, min_event_size=args.min_event_size, signal=args.signal,
                                 baseline_window_s=args.baseline_window_s)
    dataset = prepare_two_photon(traces, starts, settings)
    write_dataset(args.output, dataset)
    attrs = dataset.attrs
    written = (f"wrote {args.output}: {dataset.num_trials} trials x {dataset.num_samples} sub-frame bins of "
               f"{attrs['bin_ms']:.3g} ms ({args.trial_frames} frames x {args.subframe_bins}) x "
               f"{dataset.num_neurons} ROIs at {traces.frame_rate_hz:g} Hz")
    if args.signal == "dff":
        print(f"{written}; dF/F (baseline: running {args.baseline_window_s:g} s maximin), "
              f"{np.nanmin(dataset.data):.2f} to {np.nanmax(dataset.data):.2f}; train it with observation: gaussian")
        return 0
    print(f"{written}; each ROI observed once per frame; events "
          f"trail the spikes by ~{attrs['event_delay_ms']:.0f} ms (event_delay_ms; training removes it by default), "
          f"assuming indicator decay {attrs['indicator_decay_ms']:.0f} ms and rise {attrs['indicator_rise_ms']:.0f} ms "
          f"({attrs['event_kinetics_source']}; --decay-s and --rise-s set them)")
    return 0


def _trial_starts(text: str):
    from pathlib import Path

    import numpy as np

    path = Path(text)
    content = path.read_text() if path.is_file() else text
    try:
        return np.array([float(part) for part in content.replace(",", " ").split()], dtype=np.float64)
    except ValueError:
        where = f"{path}: " if path.is_file() else ""
        raise NeurodynError(f"{where}trial start times must be numbers in seconds (one per line, or T1,T2,...); "
                            f"got {content[:60]!r}") from None


# ---------------------------------------------------------------------------------------------
# prepare continuous


def _register_prepare_continuous(kinds) -> None:
    parser = kinds.add_parser(
        "continuous",
        help="cut a continuous session (neurons x bins counts, no trials) into overlapping windows (h5 data file)",
        description="Reads a neurons x bins count matrix (and optional behaviour, dims x bins) from a MATLAB .mat "
        "file (v5 or v7.3) or an h5 file and cuts it into windows of --window-ms stepping by --window-ms minus "
        "--overlap-ms; the last window is aligned to the session's end so every bin is covered. The windows are the "
        "data file's trials; its attributes (continuous_window_starts, continuous_num_bins, ...) let 'neurodyn "
        "train' and 'neurodyn run' merge the windows' rates and factors back into one series "
        "(continuous_output.h5, overlaps cross-faded) and 'neurodyn evaluate' score it.",
    )
    parser.add_argument("session", metavar="SESSION", help="MATLAB .mat (v5/v6/v7 or v7.3) or h5 file")
    parser.add_argument("output", metavar="OUT.h5", help="h5 data file to write")
    parser.add_argument("--window-ms", type=float, required=True, metavar="W",
                        help="window length in ms (a whole number of bins)")
    parser.add_argument("--overlap-ms", type=float, default=0.0, metavar="O",
                        help="overlap of consecutive windows in ms, 0 <= O < W (default: 0)")
    parser.add_argument("--var", default=None, metavar="NAME",
                        help="the count matrix, num_neurons x num_bins (default: 'spikes', or the only 2-D matrix); "
                        "struct fields / h5 groups as s.field")
    parser.add_argument("--behavior", default=None, metavar="NAME",
                        help="behaviour matrix, dims x num_bins (e.g. handVel; NaN = not measured)")
    parser.add_argument("--bin-ms", type=float, default=None,
                        help="bin width in ms (needed without --time; checked against it with one)")
    parser.add_argument("--time", default=None, metavar="NAME",
                        help="vector of bin times in s, one per bin: gives the bin width and the first bin's time")
    parser.add_argument("--axes", choices=("neurons,bins", "bins,neurons"), default="neurons,bins",
                        help="order of the count and behaviour matrices' dimensions (default: neurons,bins, MATLAB "
                        "order for .mat files, as h5py reads them for h5 files)")
    parser.add_argument("--heldout-fraction", type=float, default=None, metavar="F",
                        help="hold out a random fraction F of the neurons for co-bps (seeded by --seed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out choice (default: 0)")
    add_overwrite_flag(parser)
    parser.set_defaults(func=_run_prepare_continuous)


def _run_prepare_continuous(args: argparse.Namespace) -> int:
    from neurodyn.data.continuous import (SessionVariables, Windowing, constant_dimensions, describe_session,
                                          prepare_continuous)

    windowing = Windowing(window_ms=args.window_ms, overlap_ms=args.overlap_ms, bin_ms=args.bin_ms)
    variables = SessionVariables(data=args.var, behavior=args.behavior, time=args.time)
    dataset, layout = prepare_continuous(args.session, args.output, windowing, variables, args.heldout_fraction,
                                         args.seed, args.axes)
    lines = [f"wrote {args.output} from variable '{dataset.attrs['source_variable']}': "
             f"{describe_session(dataset, layout)}"]
    if dataset.heldout_neurons is not None:
        lines.append(f"  held-out neurons ({dataset.heldout_neurons.size}): {_shown(dataset.heldout_neurons)}")
    constant = constant_dimensions(dataset.behavior) if dataset.behavior is not None else []
    if constant:
        lines.append(f"  note: behaviour dimension(s) {_shown(constant)} of '{args.behavior}' never change (nothing to "
                     "decode; the continuous vel R^2 leaves them out)")
    print("\n".join(lines))
    return 0


# ---------------------------------------------------------------------------------------------
# export


def _register_export_nwb(targets) -> None:
    parser = targets.add_parser(
        "nwb",
        help="write a run's inferred rates, factors (and latents) into a copy of the input NWB file",
        description="Copies FILE.nwb to OUT.nwb and adds a processing module with one TimeSeries per inferred "
        "array of the run (rates, factors, ...): rows = trials x bins, timestamps = bin centres from the data "
        "file's attributes (written by 'neurodyn prepare'), control = the trial's row in the data file.",
    )
    parser.add_argument("run_dir", metavar="DIR", help="run directory or PBT results directory (pbt_best_model/)")
    parser.add_argument("output", metavar="OUT.nwb", help="NWB file to write (a copy of --nwb plus the results)")
    parser.add_argument("--data", required=True, metavar="DATA.h5", help="the data file the run was trained on")
    parser.add_argument("--nwb", required=True, metavar="FILE.nwb", help="the NWB file the data file was prepared from")
    parser.add_argument("--module", default="neurodyn", help="name of the processing module (default: neurodyn)")
    add_overwrite_flag(parser)
    parser.set_defaults(func=_run_export_nwb)


def _run_export_nwb(args: argparse.Namespace) -> int:
    from neurodyn.evaluate.export import export_run_to_nwb

    names = export_run_to_nwb(args.run_dir, args.data, args.nwb, args.output, args.module)
    print(f"wrote {args.output}: {args.nwb} plus processing module '{args.module}' with {', '.join(names)}")
    _print_other_data_file_note(args.run_dir, args.data)
    return 0


def _print_other_data_file_note(run_dir: str, data_path: str) -> None:
    """The exports take trial timing and held-out neurons from ``--data``: say when it is not the run's own file."""
    from neurodyn.runs.outputs import other_data_file_note

    note = other_data_file_note(run_dir, data_path)
    if note:
        print(f"  note: {note}")


def _register_export_nlb(targets) -> None:
    parser = targets.add_parser(
        "nlb",
        help="write a Neural Latents Benchmark submission h5 (held-in / held-out rates of train and eval trials)",
        description="Writes nlb_tools' submission layout: group DATASET with train_rates_heldin, train_rates_heldout, "
        "eval_rates_heldin, eval_rates_heldout (trials, bins, neurons): eval = the run's test split (NLB's evaluation "
        "trials, as 'neurodyn prepare nlb' marks them), train = every other trial (train and valid splits) in "
        "data-file order; without test trials, eval = the valid split and train = the train split (for a model of "
        "several sessions: the session of --data); held-out neurons from the data file's 'heldout_neurons'. A run trained with forward_bins also gets "
        "eval_rates_heldin_forward and eval_rates_heldout_forward (its last forward_bins bins, scored as fp-bps); "
        "the other arrays then cover the bins before them. nlb_tools.evaluation.evaluate scores groups "
        "named like mc_maze (5 ms bins) or mc_maze_20 (20 ms bins).",
    )
    parser.add_argument("run_dir", metavar="DIR", help="run directory or PBT results directory (pbt_best_model/)")
    parser.add_argument("output", metavar="OUT.h5", help="submission file to write")
    parser.add_argument("--data", required=True, metavar="DATA.h5", help="the data file (with heldout_neurons)")
    parser.add_argument("--dataset", default=None, metavar="NAME",
                        help="NLB dataset group name, e.g. mc_maze_small or mc_maze_20 (default: the data file's "
                        "nlb_dataset attribute, written by 'neurodyn prepare nlb')")
    add_overwrite_flag(parser)
    parser.set_defaults(func=_run_export_nlb)


def _run_export_nlb(args: argparse.Namespace) -> int:
    from neurodyn.evaluate.export import write_nlb_submission

    shapes = write_nlb_submission(args.run_dir, args.data, args.output, args.dataset)
    print(f"wrote {args.output}:")
    for key, shape in shapes.items():
        print(f"  {key} {shape}")
    _print_other_data_file_note(args.run_dir, args.data)
    return 0
