"""Spiking NWB -> seed h5: bin each unit's spikes per trial around an alignment column.

Reads the Units table (``spike_times``, optional ``obs_intervals``) and the trials table with
pynwb. Trial ``k``'s bins start at ``trials[align][k] + window_ms[0]`` and are ``bin_ms`` wide,
half-open ``[left, right)``; spikes are counted whether or not they fall inside the trial's
``start_time``/``stop_time`` (the recording is continuous). Without a window each trial runs from
its alignment time to its ``stop_time`` (whole bins only); shorter trials are padded with NaN
(= not sampled) at the end.

The optional key ``heldout_neurons`` ``(k,)`` int64 lists the neurons (indices into the neuron
axis) held out for co-smoothing: the encoder never sees them, the model must reconstruct them.

Files in the Neural Latents Benchmark's layout (the DANDI NWB files of NLB'21) are read as NLB
means them: the Units table's boolean ``heldout`` column names the held-out neurons (unless the
caller chooses its own), and the trials table's ``split`` column gives each trial's role
(``NLB_SPLIT_ROLES``: ``train``, ``val`` -> valid, ``test``; ``none`` trials are skipped). A
held-out unit's counts in ``test`` trials are NaN: NLB withholds them, so a zero there would be a
false observation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurodyn.data.seed_format import NeuralDataset, write_dataset
from neurodyn.errors import NeurodynError


# How far (s) a bin edge may round past an observed interval's end and still count as inside (0.1 us).
EDGE_TOLERANCE_S = 1e-7

# NLB's trial roles (the trials table's 'split' column) as the data file's split labels; None = not used.
NLB_SPLIT_ROLES = {"train": "train", "val": "valid", "test": "test", "none": None}


@dataclass(frozen=True)
class SpikeBinning:
    """How trials are cut and binned. Times in ms relative to the alignment column."""

    bin_ms: float
    align: str = "start_time"  # a numeric column of the trials table, in seconds
    window_ms: tuple[float, float] | None = None  # None: from the alignment time to each trial's stop_time
    condition_column: str | None = None  # trials column stored as integer 'condition' labels


def read_nwb_spikes(path: str | os.PathLike, binning: SpikeBinning) -> NeuralDataset:
    """Binned spike counts of every unit with at least one spike in the trial windows.

    Returns trials-first ``data`` ``(trials, bins, units)`` with attributes ``bin_ms``,
    ``align``, ``window_start_ms``, ``align_times_s`` (per kept trial), ``trial_ids``,
    ``unit_ids`` (NWB ids of the kept units, in neuron order) and, when any, ``dropped_unit_ids``
    (units without spikes in any window) and ``skipped_trial_ids`` (alignment time NaN, or NLB's
    ``none`` split). A file in NLB's layout also gives ``split`` and ``heldout_neurons`` (see the
    module docstring).
    """
    source = str(path)
    _check_binning(binning)
    units, trials = _read_tables(Path(path), source, binning)
    align_times, trial_ids, stop_times, condition, condition_names, nlb_split = trials

    keep_trial = np.isfinite(align_times)
    if nlb_split is not None:
        keep_trial &= np.array([role is not None for role in nlb_split])
    if not keep_trial.any():
        raise NeurodynError(f"{source}: trials column '{binning.align}' is NaN in every trial (or NLB's split is "
                            "'none'); nothing to align to")
    align_times, stop_times = align_times[keep_trial], stop_times[keep_trial]
    edges_s, num_bins = _bin_edges(align_times, stop_times, trial_ids[keep_trial], binning, source)

    unit_ids, spike_times, obs_intervals, nlb_heldout = units
    counts = np.stack([_count_spikes(times, edges_s) for times in spike_times], axis=-1)
    split = None if nlb_split is None else np.array([nlb_split[k] for k in np.flatnonzero(keep_trial)])
    if split is not None and nlb_heldout is not None:
        counts[np.ix_(split == "test", np.arange(counts.shape[1]), np.flatnonzero(nlb_heldout))] = np.nan
    # Bins past a trial's end (no-window mode) or outside a unit's observed intervals are unsampled.
    valid_bin = np.arange(edges_s.shape[1] - 1)[None, :] < num_bins[:, None]
    counts[~valid_bin] = np.nan
    for unit, intervals in enumerate(obs_intervals):
        if intervals is not None:
            counts[..., unit][~_bins_inside(edges_s, intervals)] = np.nan

    has_spikes = np.nansum(counts, axis=(0, 1)) > 0
    heldout = None if nlb_heldout is None or not nlb_heldout[has_spikes].any() else \
        np.flatnonzero(nlb_heldout[has_spikes])
    if not has_spikes.any():
        raise NeurodynError(f"{source}: none of the {len(unit_ids)} units has a spike inside the trial windows "
                            f"(align '{binning.align}', window {binning.window_ms} ms)")
    attrs = {
        "bin_ms": float(binning.bin_ms),
        "align": binning.align,
        "window_start_ms": float(binning.window_ms[0]) if binning.window_ms else 0.0,
        "align_times_s": align_times,
        "trial_ids": trial_ids[keep_trial],
        "unit_ids": unit_ids[has_spikes],
        "source_file": Path(path).name,
    }
    if binning.window_ms:
        attrs["window_ms"] = np.asarray(binning.window_ms, dtype=np.float64)
    if not has_spikes.all():
        attrs["dropped_unit_ids"] = unit_ids[~has_spikes]
    if not keep_trial.all():
        attrs["skipped_trial_ids"] = trial_ids[~keep_trial]
    if not valid_bin.all():
        attrs["trial_num_samples"] = num_bins
    if condition_names is not None:
        attrs["condition_names"] = condition_names
    return NeuralDataset(data=counts[..., has_spikes], condition=None if condition is None else condition[keep_trial],
                         attrs=attrs, source=source, split=split, heldout_neurons=heldout)


def prepare_nwb_spikes(nwb_path: str | os.PathLike, out_path: str | os.PathLike, binning: SpikeBinning,
                       heldout_fraction: float | None = None, heldout_neurons=None,
                       seed: int = 0) -> tuple[NeuralDataset, np.ndarray | None]:
    """Bin ``nwb_path`` and write the seed h5 file ``out_path`` (atomically), with held-out neurons
    chosen at random (``heldout_fraction``, seeded) or given (``heldout_neurons``, indices into the
    written neuron axis), else NLB's (the Units table's ``heldout`` column), if any. Returns the
    dataset and the held-out indices (None without held-out neurons)."""
    if heldout_fraction is not None and heldout_neurons is not None:
        raise NeurodynError("give either a held-out fraction or held-out neuron indices, not both")
    dataset = read_nwb_spikes(nwb_path, binning)
    heldout = dataset.heldout_neurons
    if heldout_fraction is not None:
        heldout = choose_heldout_neurons(dataset.num_neurons, heldout_fraction, seed)
    elif heldout_neurons is not None:
        heldout = np.asarray(heldout_neurons)
    dataset.heldout_neurons = None if heldout is None else np.asarray(heldout, dtype=np.int64)
    write_dataset(out_path, dataset)  # validates the indices; atomic
    return dataset, dataset.heldout_neurons


def choose_heldout_neurons(num_neurons: int, fraction: float, seed: int) -> np.ndarray:
    """A seeded random ``round(fraction * num_neurons)`` neurons (at least 1, not all), sorted."""
    if not 0.0 < fraction < 1.0:
        raise NeurodynError(f"held-out fraction must be in (0, 1); got {fraction}")
    count = int(np.floor(fraction * num_neurons + 0.5))
    if count < 1 or count >= num_neurons:
        raise NeurodynError(f"held-out fraction {fraction} of {num_neurons} neurons holds out {count}; "
                            "at least one neuron must be held out and one held in")
    return np.sort(np.random.default_rng(seed).permutation(num_neurons)[:count]).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Reading the NWB tables


def _check_binning(binning: SpikeBinning) -> None:
    if not (np.isfinite(binning.bin_ms) and binning.bin_ms > 0):
        raise NeurodynError(f"bin width must be a positive number of ms; got {binning.bin_ms}")
    if binning.window_ms is not None:
        start, stop = binning.window_ms
        if not stop > start:
            raise NeurodynError(f"window {start} .. {stop} ms must end after it starts")
        bins = (stop - start) / binning.bin_ms
        if abs(bins - round(bins)) > 1e-9:
            raise NeurodynError(f"window {start} .. {stop} ms is not a whole number of {binning.bin_ms} ms bins")


def _read_tables(path: Path, source: str, binning: SpikeBinning):
    from pynwb import NWBHDF5IO

    if not path.is_file():
        raise NeurodynError(f"{source}: NWB file not found")
    try:
        with NWBHDF5IO(str(path), "r") as io:
            nwbfile = io.read()
            units = _read_units(nwbfile, source)
            trials = _read_trials(nwbfile, source, binning)
    except NeurodynError:
        raise
    except Exception as error:  # pynwb/hdmf/h5py raise many types for files that are not NWB
        raise NeurodynError(f"{source}: cannot read as an NWB file: {type(error).__name__}: {error}") from None
    return units, trials


def _read_units(nwbfile, source: str):
    units = nwbfile.units
    if units is None or len(units) == 0:
        raise NeurodynError(f"{source}: no Units table (or it is empty); expected sorted units with 'spike_times'")
    if "spike_times" not in units.colnames:
        raise NeurodynError(f"{source}: the Units table has no 'spike_times' column; columns: {list(units.colnames)}")
    unit_ids = np.asarray(units.id[:], dtype=np.int64)
    spike_times = [np.sort(np.asarray(units["spike_times"][index], dtype=np.float64)) for index in range(len(units))]
    has_intervals = "obs_intervals" in units.colnames
    obs_intervals = [np.asarray(units["obs_intervals"][index], dtype=np.float64).reshape(-1, 2) if has_intervals
                     else None for index in range(len(units))]
    heldout = None
    if "heldout" in units.colnames:  # NLB's layout
        heldout = np.asarray(units["heldout"].data[:])
        if heldout.dtype != bool and not np.isin(heldout, (0, 1)).all():
            raise NeurodynError(f"{source}: the Units table's 'heldout' column must be boolean (NLB's held-out flag)")
        heldout = heldout.astype(bool)
    return unit_ids, spike_times, obs_intervals, heldout


def trial_table_columns(trials) -> list[str]:
    """The columns of an NWB trials table, each once: pynwb lists ``start_time`` and ``stop_time`` among
    ``colnames`` in some versions and not in others."""
    return list(dict.fromkeys(["start_time", "stop_time", *trials.colnames]))


def _read_trials(nwbfile, source: str, binning: SpikeBinning):
    trials = nwbfile.trials
    if trials is None or len(trials) == 0:
        raise NeurodynError(f"{source}: no trials table (or it is empty); expected one row per trial with "
                            f"'{binning.align}'")
    columns = trial_table_columns(trials)

    def column(name: str, what: str) -> np.ndarray:
        if name not in columns:
            raise NeurodynError(f"{source}: trials table has no column '{name}' ({what}); columns: {columns}")
        return np.asarray(trials[name].data[:])

    align_times = column(binning.align, "the alignment column")
    if not np.issubdtype(align_times.dtype, np.number):
        raise NeurodynError(f"{source}: trials column '{binning.align}' is not numeric (dtype {align_times.dtype}); "
                            "expected times in seconds")
    condition = names = None
    if binning.condition_column:
        condition, names = _condition_labels(column(binning.condition_column, "the condition labels"),
                                             binning.condition_column, source)
    trial_ids = np.asarray(trials.id[:], dtype=np.int64)
    nlb_split = _nlb_split(column("split", "NLB's trial roles"), source) if "split" in columns else None
    return align_times.astype(np.float64), trial_ids, column("stop_time", "trial ends").astype(np.float64), \
        condition, names, nlb_split


def _nlb_split(values: np.ndarray, source: str) -> list[str | None]:
    """NLB's 'split' column as the data file's roles (None: a trial NLB does not use)."""
    text = [value.decode() if isinstance(value, bytes) else str(value) for value in values]
    unknown = sorted(set(text) - set(NLB_SPLIT_ROLES))
    if unknown:
        raise NeurodynError(f"{source}: the trials table's 'split' column holds {', '.join(map(repr, unknown[:5]))}; "
                            f"expected NLB's roles {', '.join(NLB_SPLIT_ROLES)}")
    return [NLB_SPLIT_ROLES[value] for value in text]


def _condition_labels(values: np.ndarray, name: str, source: str):
    """Integer labels as they are; anything else (e.g. strings) numbered by sorted unique value."""
    if np.issubdtype(values.dtype, np.number) and np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return values.astype(np.int64), None
    if np.issubdtype(values.dtype, np.number):
        raise NeurodynError(f"{source}: trials column '{name}' holds non-integer numbers; expected condition labels")
    text = np.array([value.decode() if isinstance(value, bytes) else str(value) for value in values])
    names, labels = np.unique(text, return_inverse=True)
    return labels.astype(np.int64), [str(n) for n in names]


# ---------------------------------------------------------------------------------------------
# Binning


def _bin_edges(align_times, stop_times, trial_ids, binning: SpikeBinning, source: str):
    """Bin edges ``(trials, max_bins + 1)`` in seconds and each trial's number of bins ``(trials,)``."""
    bin_s = binning.bin_ms / 1000.0
    if binning.window_ms is not None:
        start_ms, stop_ms = binning.window_ms
        num = int(round((stop_ms - start_ms) / binning.bin_ms))
        offsets_s = (start_ms + binning.bin_ms * np.arange(num + 1)) / 1000.0
        return align_times[:, None] + offsets_s[None, :], np.full(align_times.shape, num)
    # No window: each trial from its alignment time to its stop_time, whole bins only.
    num_bins = np.floor((stop_times - align_times) / bin_s + 1e-9).astype(np.int64)
    too_short = np.flatnonzero(~(num_bins >= 1))
    if too_short.size:
        first = too_short[0]
        raise NeurodynError(f"{source}: trial id {trial_ids[first]} lasts {1000 * (stop_times[first] - align_times[first]):g} "
                            f"ms from '{binning.align}' to 'stop_time', less than one {binning.bin_ms} ms bin "
                            "(give --window to use a fixed window instead)")
    offsets_s = bin_s * np.arange(num_bins.max() + 1)
    return align_times[:, None] + offsets_s[None, :], num_bins


def _count_spikes(sorted_times: np.ndarray, edges_s: np.ndarray) -> np.ndarray:
    """Spikes in each ``[left, right)`` bin: ``(trials, bins)`` float64 from edges ``(trials, bins + 1)``."""
    # searchsorted(side="left") counts spikes strictly before each edge; differences count each bin.
    before_edge = np.searchsorted(sorted_times, edges_s.ravel(), side="left").reshape(edges_s.shape)
    return np.diff(before_edge, axis=1).astype(np.float64)


def _bins_inside(edges_s: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """``(trials, bins)`` True where the whole bin lies inside one observed interval ``(n, 2)`` seconds."""
    left, right = edges_s[:, :-1], edges_s[:, 1:]
    inside = np.zeros(left.shape, dtype=bool)
    # Edges are sums of seconds (align + offset): a bin ending on an interval's end may round past it.
    for start, stop in intervals:
        inside |= (left >= start - EDGE_TOLERANCE_S) & (right <= stop + EDGE_TOLERANCE_S)
    return inside
