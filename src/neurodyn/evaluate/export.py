"""Export a finished run's results: into a copy of the input NWB file, or as an NLB submission h5.

NWB: a processing module (default ``neurodyn``) with one TimeSeries per inferred quantity
(``rates``, ``factors`` and any other per-bin array of the output files, e.g. ``latents``):
rows = every (trial, bin) of the run's trials in data-file order, timestamps = bin centres in the
NWB file's clock, ``control`` = the trial's row in the data file. The timing comes from the data
file's attributes (``align_times_s``, ``window_start_ms``, ``bin_ms``) that ``neurodyn prepare``
writes.

NLB: nlb_tools' submission layout: one group named after the NLB dataset (e.g. ``mc_maze_small``)
holding ``train_rates_heldin``, ``train_rates_heldout``, ``eval_rates_heldin``, ``eval_rates_heldout``
``(trials, bins, neurons)`` float32; train = every training-phase trial (the run's train and valid
splits, in data-file order), eval = its test split (NLB's evaluation trials; without test trials,
the valid split, and train = the train split); held-out neurons from the data file's
``heldout_neurons``. A run trained with ``forward_bins`` f > 0 also gets
``eval_rates_heldin_forward`` and ``eval_rates_heldout_forward`` (its last f bins, fp-bps), and the
other arrays then cover the bins before them.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from neurodyn.data.atomic import atomic_path, write_h5_atomic
from neurodyn.data.seed_format import read_dataset
from neurodyn.errors import NeurodynError
from neurodyn.observation.registry import observation_class
from neurodyn.runs.layout import find_output_dir, output_file_name
from neurodyn.runs.outputs import held_out_split, rates_in_file_order, read_run_outputs

# Group names nlb_tools.evaluation.evaluate scores, each with its bin width in ms.
NLB_DATASETS = {f"{name}{suffix}": bin_ms
                for name in ("mc_maze", "mc_rtt", "area2_bump", "dmfc_rsg", "mc_maze_large", "mc_maze_medium",
                             "mc_maze_small")
                for suffix, bin_ms in (("", 5.0), ("_20", 20.0))}


@dataclass(frozen=True)
class RunArrays:
    """All trials of a run in data-file order: ``arrays`` name -> ``(trials, samples, dim)``;
    ``trial_idx`` ``(trials,)`` rows of the data file; ``split`` ``(trials,)`` "train"/"valid";
    ``observation``: the run's observation model (None for outputs that do not record it)."""

    arrays: dict
    trial_idx: np.ndarray
    split: np.ndarray
    observation: str | None = None


# ---------------------------------------------------------------------------------------------
# NLB submission


def nlb_group_name(data_path: str | os.PathLike, dataset_name: str | None = None) -> str:
    """The submission's group: ``dataset_name``, else the data file's ``nlb_dataset`` (``neurodyn prepare nlb``)
    with ``_20`` for 20 ms bins."""
    if dataset_name is not None:
        if not dataset_name or "/" in dataset_name:
            raise NeurodynError(f"NLB dataset name must be a plain group name such as 'mc_maze_20'; got {dataset_name!r}")
        return dataset_name
    attrs = _data_attrs(data_path)
    if "nlb_dataset" not in attrs:
        raise NeurodynError(f"{data_path}: no attribute 'nlb_dataset' to name the submission's group; give --dataset "
                            "(e.g. mc_maze_small, or mc_maze_small_20 for 20 ms bins)")
    suffix = "_20" if abs(float(attrs.get("bin_ms", 5.0)) - 20.0) < 1e-9 else ""
    return f"{attrs['nlb_dataset']}{suffix}"


def write_nlb_submission(run_dir: str | os.PathLike, data_path: str | os.PathLike, out_path: str | os.PathLike,
                         dataset_name: str | None = None) -> dict[str, tuple]:
    """Write the NLB submission h5 ``out_path`` in nlb_tools' layout; returns each written key's shape.

    The group ``dataset_name`` (default ``nlb_group_name``) holds ``train_rates_heldin``,
    ``train_rates_heldout`` (every training-phase trial: the run's train and valid trials, in data-file
    order), ``eval_rates_heldin``, ``eval_rates_heldout`` (its test trials in data-file order, NLB's
    evaluation trials; the valid trials when the file names no test trials, which then leave the
    train arrays), each ``(trials, bins, neurons)`` float32 over the main window, and for a run with
    ``forward_bins`` f > 0 ``eval_rates_heldin_forward`` / ``eval_rates_heldout_forward`` (the last f bins).
    """
    dataset_name = nlb_group_name(data_path, dataset_name)
    outputs = read_run_outputs(run_dir, data_path=data_path)
    heldout = read_dataset(data_path).heldout_neurons
    if heldout is None:
        raise NeurodynError(f"{data_path}: no key 'heldout_neurons' (k,); an NLB submission needs held-out neurons "
                            "(neurodyn prepare nlb, or prepare nwb ... --heldout-fraction 0.25)")
    bin_ms = _data_attrs(data_path).get("bin_ms")
    if dataset_name in NLB_DATASETS and bin_ms is not None and abs(float(bin_ms) - NLB_DATASETS[dataset_name]) > 1e-9:
        raise NeurodynError(f"{data_path}: bins of {bin_ms:g} ms, but NLB's '{dataset_name}' is scored at "
                            f"{NLB_DATASETS[dataset_name]:g} ms bins (names ending in _20 are 20 ms, the others 5 ms)")
    # NLB's eval trials are the held-out ones: the file's test trials when it names them, else the valid split;
    # its train trials are all the others (the decoder of vel R^2 is fit on every one of them).
    eval_split = held_out_split(outputs)
    train_splits = ["train", "valid"] if eval_split == "test" else ["train"]
    arrays = {}
    for splits, prefix in ((train_splits, "train"), ([eval_split], "eval")):
        rates, forward = _submission_rates([outputs[split] for split in splits], heldout, run_dir, data_path, splits)
        heldin = np.setdiff1d(np.arange(rates.shape[-1]), heldout)
        arrays[f"{dataset_name}/{prefix}_rates_heldin"] = rates[..., heldin].astype(np.float32)
        arrays[f"{dataset_name}/{prefix}_rates_heldout"] = rates[..., heldout].astype(np.float32)
        if prefix == "eval" and forward.shape[1]:
            arrays[f"{dataset_name}/eval_rates_heldin_forward"] = forward[..., heldin].astype(np.float32)
            arrays[f"{dataset_name}/eval_rates_heldout_forward"] = forward[..., heldout].astype(np.float32)
    write_h5_atomic(out_path, arrays)
    return {key: value.shape for key, value in arrays.items()}


def _submission_rates(parts: list, heldout: np.ndarray, run_dir, data_path, splits: list[str]):
    """The rates of the splits' trials in data-file order, cut into the main window and the forward bins:
    ``(trials, main_bins, neurons)`` and ``(trials, forward_bins, neurons)``."""
    for part, split in zip(parts, splits):
        where = find_output_dir(run_dir, data_path) / output_file_name(split)
        if heldout.max() >= part.rates.shape[-1]:
            raise NeurodynError(f"{data_path}: 'heldout_neurons' goes up to {heldout.max()} but {where} has rates of "
                                f"{part.rates.shape[-1]} neurons; is this the data file the run was trained on?")
        if not np.all(np.isfinite(part.rates)) or (part.rates < 0).any():
            raise NeurodynError(f"{where}: 'rates' must be finite and non-negative for an NLB submission")
    rates, _ = rates_in_file_order(parts)
    # A forward-prediction run's last bins are NLB's separate *_forward arrays (eval trials only).
    main_bins = rates.shape[1] - int(parts[0].attrs.get("forward_bins", 0))
    return rates[:, :main_bins], rates[:, main_bins:]


# ---------------------------------------------------------------------------------------------
# NWB export


def read_run_arrays(run_dir: str | os.PathLike, data_path: str | os.PathLike | None = None) -> RunArrays:
    """Every per-bin array of the run's output files (``rates``, ``factors``, ...), trials merged in data-file order
    (of ``data_path``'s session, for a model of several sessions)."""
    outputs = read_run_outputs(run_dir, data_path=data_path)  # checks the required keys and their shapes
    splits = list(outputs)
    num_samples = outputs["train"].rates.shape[1]
    per_split = {split: {name: value.astype(np.float64) for name, value in outputs[split].arrays.items()
                         if value.ndim == 3 and value.shape[1] == num_samples} for split in splits}
    names = [name for name in per_split["train"] if all(name in per_split[s] for s in splits)]
    trial_idx = np.concatenate([outputs[split].trial_idx for split in splits])
    split = np.concatenate([np.full(outputs[name].trial_idx.size, name) for name in splits])
    order = np.argsort(trial_idx, kind="stable")
    if np.unique(trial_idx).size != trial_idx.size:
        raise NeurodynError(f"{find_output_dir(run_dir, data_path)}: a trial appears in more than one split's "
                            "'trial_idx'")
    arrays = {name: np.concatenate([per_split[s][name] for s in splits])[order] for name in names}
    return RunArrays(arrays=arrays, trial_idx=trial_idx[order], split=split[order],
                     observation=outputs["train"].attrs.get("observation"))


def export_run_to_nwb(run_dir: str | os.PathLike, data_path: str | os.PathLike, nwb_in: str | os.PathLike,
                      nwb_out: str | os.PathLike, module_name: str = "neurodyn") -> list[str]:
    """Copy ``nwb_in`` to ``nwb_out`` (atomically) with the run's results in processing module
    ``module_name``; returns the names of the TimeSeries written."""
    from pynwb import NWBHDF5IO, TimeSeries

    nwb_in, nwb_out = Path(nwb_in), Path(nwb_out)
    if nwb_in.resolve() == nwb_out.resolve():
        raise NeurodynError(f"{nwb_out}: the export is written to a copy; choose an output path other than the input")
    if not nwb_in.is_file():
        raise NeurodynError(f"{nwb_in}: NWB file not found")
    run = read_run_arrays(run_dir, data_path)
    timing = _bin_timing(data_path, run)
    num_trials, num_samples = run.arrays["rates"].shape[:2]
    timestamps = (timing["align_times_s"][run.trial_idx][:, None]
                  + (timing["window_start_ms"] + timing["bin_ms"] * (np.arange(num_samples) + 0.5))[None, :] / 1000.0)
    control = np.repeat(run.trial_idx, num_samples).astype(np.uint32)
    control_description = [f"row {i} of the data file's trial axis ({run.split[k]} split)"
                           for k, i in enumerate(run.trial_idx)]
    # Every rates array (sample-averaged, posterior-mean, ...) is the observation model's expected value: a
    # count per bin for spikes and events, the data's own units for continuous signals (as a Gaussian's std).
    value_unit = observation_class(run.observation).value_unit if run.observation else "expected count per bin"
    units = {name: value_unit for name in run.arrays if name.startswith("rates") or name == "std"}
    with atomic_path(nwb_out) as tmp:
        shutil.copyfile(nwb_in, tmp)
        try:
            with NWBHDF5IO(str(tmp), "a") as io:
                nwbfile = io.read()
                if module_name in nwbfile.processing:
                    raise NeurodynError(f"{nwb_in}: already has a processing module '{module_name}'; "
                                        "choose another name with --module")
                module = nwbfile.create_processing_module(
                    name=module_name, description=f"neurodyn results of run {Path(run_dir).name} "
                    f"(data file {Path(data_path).name}); {timing['bin_ms']:g} ms bins")
                for name, values in run.arrays.items():
                    module.add(TimeSeries(
                        name=name, data=values.reshape(num_trials * num_samples, values.shape[-1]),
                        unit=units.get(name, "a.u."), timestamps=timestamps.reshape(-1), control=control,
                        control_description=control_description,
                        description=f"inferred {name} (trials x bins stacked as rows; columns: "
                        f"{_column_meaning(name, values.shape[-1], timing)}); timestamps are bin centres"))
                io.write(nwbfile)
        except NeurodynError:
            raise
        except Exception as error:  # pynwb/hdmf raise many types for files they cannot extend
            raise NeurodynError(f"{nwb_in}: cannot add the results to a copy of this NWB file: "
                                f"{type(error).__name__}: {error}") from None
    return list(run.arrays)


def _data_attrs(data_path: str | os.PathLike) -> dict:
    try:
        with h5py.File(data_path, "r") as f:
            return {key: f.attrs[key] for key in f.attrs}
    except OSError as error:
        raise NeurodynError(f"{data_path}: cannot read as HDF5 ({error})") from None


def _bin_timing(data_path, run: RunArrays) -> dict:
    attrs = _data_attrs(data_path)
    needed = ("align_times_s", "window_start_ms", "bin_ms")
    missing = [key for key in needed if key not in attrs]
    if missing:
        raise NeurodynError(f"{data_path}: missing attribute(s) {', '.join(missing)}; the NWB export needs the bin "
                            "times that 'neurodyn prepare nwb' / 'prepare 2p' store in the data file")
    align = np.asarray(attrs["align_times_s"], dtype=np.float64).reshape(-1)
    if run.trial_idx.max() >= align.size:
        raise NeurodynError(f"{data_path}: attribute 'align_times_s' has {align.size} trials but the run has trial "
                            f"index {run.trial_idx.max()}; is this the data file the run was trained on?")
    timing = {"align_times_s": align, "window_start_ms": float(attrs["window_start_ms"]),
              "bin_ms": float(attrs["bin_ms"])}
    if "unit_ids" in attrs:
        timing["unit_ids"] = np.asarray(attrs["unit_ids"]).tolist()
    if "roi_indices" in attrs:
        timing["roi_indices"] = np.asarray(attrs["roi_indices"]).tolist()
    return timing


def _column_meaning(name: str, num_columns: int, timing: dict) -> str:
    """What the TimeSeries columns are: the data file's neurons (named by the source's ids) or dimensions."""
    for key, what in (("unit_ids", "Units ids"), ("roi_indices", "ROI indices")):
        if name != "factors" and key in timing and len(timing[key]) == num_columns:
            return f"neurons = {what} {timing[key]}"
    return "one per dimension"
