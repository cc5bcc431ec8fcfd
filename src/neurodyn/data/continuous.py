"""Continuous sessions (recordings not cut into trials): overlapping windows in, one series out.

A session is a ``(num_bins, num_neurons)`` series of counts (in the source file a neurons x bins
matrix). ``neurodyn prepare continuous`` cuts it into windows of ``W`` bins whose starts step by
``W - O`` bins (``O`` = the overlap); the last window is aligned to the session's end, so every bin
is in at least one window (that window may overlap its neighbour by more than ``O``). The windows
are the data file's trials; the file attributes (``continuous_*``, below) say where each one lies,
so that the per-window outputs of a trained model can be merged back into one series.

Merging cross-fades the overlaps: where windows ``k`` and ``k + 1`` overlap on ``L`` bins, window
``k + 1``'s weight rises linearly ``1/(L+1), 2/(L+1), ..., L/(L+1)`` over those bins and window
``k``'s falls as ``1 -`` that, so the two sum to 1; outside overlaps a window's weight is 1. When
more than two windows cover a bin (overlap over half the window, or the end-aligned last window)
each window's weight is the product of its rising and falling ramps, and the weights of every bin
are divided by their sum. Either way the weights of the windows covering a bin are positive and sum
to 1, so a series that the windows agree on (a constant, a line, the data itself) merges back
exactly.

File attributes of a continuous data file (``ContinuousLayout.to_attrs``)::

    continuous_window_starts  (num_windows,) int   first bin of each window (= trial) in the session
    continuous_num_bins       int                  the session's length in bins
    continuous_window_bins    int                  W, bins per window
    continuous_overlap_bins   int                  O, the nominal overlap in bins
    continuous_first_bin_time_s  float, optional   time of the session's first bin (s), from --time
    bin_ms                    float                the bin width in ms

This module only reads the session, cuts and merges; ``neurodyn.runs.continuous_output`` merges a
run's outputs and ``neurodyn.evaluate.continuous`` scores the merged series.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from neurodyn.data.seed_format import NeuralDataset, write_dataset
from neurodyn.errors import NeurodynError

STARTS_ATTR = "continuous_window_starts"
NUM_BINS_ATTR = "continuous_num_bins"
WINDOW_BINS_ATTR = "continuous_window_bins"
OVERLAP_BINS_ATTR = "continuous_overlap_bins"
FIRST_TIME_ATTR = "continuous_first_bin_time_s"
# Time vectors whose steps differ from their median by more than this fraction are not one
# evenly binned recording (a gap, or times that are not bin times).
TIME_STEP_TOLERANCE = 0.1
AXES = ("neurons,bins", "bins,neurons")


# ---------------------------------------------------------------------------------------------
# Windows: pure functions


def window_starts(num_bins: int, window_bins: int, overlap_bins: int) -> np.ndarray:
    """First bin of every window that covers a session.

    Parameters
    ----------
    num_bins : int
        The session's length in bins.
    window_bins : int
        W, bins per window (>= 1, at most ``num_bins``).
    overlap_bins : int
        O, bins shared by consecutive windows (0 <= O < W); the starts step by W - O.

    Returns
    -------
    ndarray, shape (num_windows,), int64
        ``0, W - O, 2 (W - O), ...`` as long as the window ends inside the session, then, when the
        last of these ends before ``num_bins``, one more window starting at ``num_bins - W`` (aligned to
        the session's end). Strictly increasing; every bin lies in at least one window.
    """
    num_bins, window_bins, overlap_bins = int(num_bins), int(window_bins), int(overlap_bins)
    if window_bins < 1:
        raise NeurodynError(f"a window must hold at least one bin; got {window_bins}")
    if not 0 <= overlap_bins < window_bins:
        raise NeurodynError(f"the overlap ({overlap_bins} bins) must be at least 0 and shorter than the window "
                            f"({window_bins} bins)")
    if window_bins > num_bins:
        raise NeurodynError(f"the window ({window_bins} bins) is longer than the session ({num_bins} bins)")
    starts = np.arange(0, num_bins - window_bins + 1, window_bins - overlap_bins, dtype=np.int64)
    if starts[-1] + window_bins < num_bins:
        starts = np.append(starts, num_bins - window_bins)
    return starts


def check_window_starts(starts, window_bins: int, num_bins: int, source: str = "windows") -> np.ndarray:
    """``starts`` as int64 after checking that the windows lie in the session, in order, and cover every bin."""
    starts = np.asarray(starts)
    if starts.ndim != 1 or starts.size == 0 or not np.issubdtype(starts.dtype, np.integer):
        raise NeurodynError(f"{source}: window starts must be a non-empty (num_windows,) integer vector; got "
                            f"{starts.dtype} of shape {starts.shape}")
    starts = starts.astype(np.int64)
    if window_bins < 1 or starts.min() < 0 or starts.max() + window_bins > num_bins:
        raise NeurodynError(f"{source}: windows of {window_bins} bins starting at {starts.min()} .. {starts.max()} "
                            f"do not lie inside a session of {num_bins} bins")
    if np.any(np.diff(starts) <= 0):
        raise NeurodynError(f"{source}: window starts must be strictly increasing")
    gaps = np.flatnonzero(starts[1:] > starts[:-1] + window_bins)
    if starts[0] != 0 or starts[-1] + window_bins != num_bins or gaps.size:
        raise NeurodynError(f"{source}: the windows leave bins of the {num_bins}-bin session uncovered")
    return starts


def cut_windows(series: np.ndarray, starts, window_bins: int) -> np.ndarray:
    """The windows of a series.

    Parameters
    ----------
    series : ndarray, shape (num_bins, features)
        One value per bin and feature (e.g. counts of each neuron).
    starts : array of int, shape (num_windows,)
        First bin of each window (``window_starts``).
    window_bins : int
        Bins per window.

    Returns
    -------
    ndarray, shape (num_windows, window_bins, features)
        ``out[k, t] = series[starts[k] + t]``, the dtype of ``series``.
    """
    series = np.asarray(series)
    if series.ndim != 2:
        raise NeurodynError(f"a session series must be (num_bins, features); got shape {series.shape}")
    starts = check_window_starts(starts, window_bins, series.shape[0])
    return series[starts[:, None] + np.arange(window_bins)[None, :]]


def crossfade_weights(starts, window_bins: int, num_bins: int) -> np.ndarray:
    """Each window's weight at each of its bins when the windows are merged (see the module docstring).

    Parameters
    ----------
    starts : array of int, shape (num_windows,)
        First bin of each window, strictly increasing, the windows covering ``0 .. num_bins - 1``.
    window_bins : int
        Bins per window.
    num_bins : int
        The session's length in bins.

    Returns
    -------
    ndarray, shape (num_windows, window_bins), float64
        Positive weights; at every session bin the weights of the windows covering it sum to 1.
        Where only windows ``k`` and ``k + 1`` overlap, on ``L`` bins, they are the linear ramps
        ``j / (L + 1)`` (rising, ``j = 1 .. L``) and ``1 - j / (L + 1)`` (falling).
    """
    starts = check_window_starts(starts, window_bins, num_bins)
    weights = np.ones((starts.size, window_bins), dtype=np.float64)
    for k in range(starts.size - 1):
        overlap = int(starts[k] + window_bins - starts[k + 1])
        if overlap <= 0:
            continue
        rising = np.arange(1, overlap + 1, dtype=np.float64) / (overlap + 1)
        weights[k + 1, :overlap] *= rising
        weights[k, window_bins - overlap:] *= 1.0 - rising
    total = np.zeros(num_bins)
    np.add.at(total, starts[:, None] + np.arange(window_bins)[None, :], weights)
    return weights / total[starts[:, None] + np.arange(window_bins)[None, :]]


def merge_windows(windows: np.ndarray, starts, num_bins: int) -> np.ndarray:
    """One series from overlapping windows, the overlaps cross-faded (``crossfade_weights``).

    Parameters
    ----------
    windows : ndarray, shape (num_windows, window_bins, features)
        A value per window, bin and feature (e.g. a model's rates of every window, in the order of
        ``starts``). NaN stays NaN where a window holding it has weight (a bin whose covering
        windows are all NaN is NaN).
    starts : array of int, shape (num_windows,)
        First bin of each window.
    num_bins : int
        The session's length in bins.

    Returns
    -------
    ndarray, shape (num_bins, features), float64
        ``out[t] = sum_k w_k(t) windows[k, t - starts[k]]`` over the windows covering bin ``t``.
    """
    windows = np.asarray(windows, dtype=np.float64)
    if windows.ndim != 3:
        raise NeurodynError(f"windows must be (num_windows, window_bins, features); got shape {windows.shape}")
    starts = np.asarray(starts)
    if starts.shape != (windows.shape[0],):
        raise NeurodynError(f"{windows.shape[0]} windows but {starts.size} window starts")
    weights = crossfade_weights(starts, windows.shape[1], num_bins)
    merged = np.zeros((num_bins, windows.shape[2]))
    np.add.at(merged, starts[:, None] + np.arange(windows.shape[1])[None, :], weights[..., None] * windows)
    return merged


# ---------------------------------------------------------------------------------------------
# The layout recorded in a data file


@dataclass(frozen=True)
class ContinuousLayout:
    """Where the windows (trials) of a continuous data file lie in the session.

    ``starts`` ``(num_windows,)`` first bin of each window; ``num_bins`` the session's length;
    ``window_bins`` W; ``overlap_bins`` the nominal overlap O; ``bin_ms`` the bin width (ms);
    ``first_bin_time_s`` the session's first bin time (s) when known.
    """

    starts: np.ndarray
    num_bins: int
    window_bins: int
    overlap_bins: int
    bin_ms: float | None = None
    first_bin_time_s: float | None = None

    @property
    def num_windows(self) -> int:
        return int(self.starts.size)

    def to_attrs(self) -> dict:
        """The data file attributes (see the module docstring)."""
        attrs = {STARTS_ATTR: np.asarray(self.starts, dtype=np.int64), NUM_BINS_ATTR: int(self.num_bins),
                 WINDOW_BINS_ATTR: int(self.window_bins), OVERLAP_BINS_ATTR: int(self.overlap_bins)}
        if self.bin_ms is not None:
            attrs["bin_ms"] = float(self.bin_ms)
        if self.first_bin_time_s is not None:
            attrs[FIRST_TIME_ATTR] = float(self.first_bin_time_s)
        return attrs

    def bin_times_s(self) -> np.ndarray:
        """``(num_bins,)`` time of each bin in s: from ``first_bin_time_s`` (else 0) in steps of ``bin_ms``."""
        step = (self.bin_ms or 0.0) / 1000.0
        return (self.first_bin_time_s or 0.0) + step * np.arange(self.num_bins)


def is_continuous(attrs: Mapping) -> bool:
    """True when data file attributes describe a continuous session (``continuous_window_starts``)."""
    return STARTS_ATTR in attrs


def continuous_layout(attrs: Mapping, num_windows: int, window_bins: int,
                      source: str = "data file") -> ContinuousLayout | None:
    """The layout in a data file's attributes (None when the file is not a continuous session).

    ``num_windows`` and ``window_bins`` are the file's trials and samples; attributes that disagree
    with them, or windows that do not cover the session, raise ``NeurodynError`` naming the file and
    attribute.
    """
    if not is_continuous(attrs):
        return None
    for key in (NUM_BINS_ATTR, WINDOW_BINS_ATTR, OVERLAP_BINS_ATTR):
        if key not in attrs:
            raise NeurodynError(f"{source}: has attribute '{STARTS_ATTR}' but not '{key}'; re-make it with "
                                "'neurodyn prepare continuous'")
    starts = np.asarray(attrs[STARTS_ATTR]).reshape(-1)
    if starts.shape != (num_windows,):
        raise NeurodynError(f"{source}: attribute '{STARTS_ATTR}' has {starts.size} window starts; expected "
                            f"({num_windows},), one per trial")
    if int(attrs[WINDOW_BINS_ATTR]) != window_bins:
        raise NeurodynError(f"{source}: attribute '{WINDOW_BINS_ATTR}' is {attrs[WINDOW_BINS_ATTR]} but the trials "
                            f"hold {window_bins} bins")
    num_bins = int(attrs[NUM_BINS_ATTR])
    starts = check_window_starts(np.round(starts).astype(np.int64) if starts.dtype.kind == "f" else starts,
                                 window_bins, num_bins, f"{source}: attribute '{STARTS_ATTR}'")
    bin_ms = attrs.get("bin_ms")
    first = attrs.get(FIRST_TIME_ATTR)
    return ContinuousLayout(starts=starts, num_bins=num_bins, window_bins=window_bins,
                            overlap_bins=int(attrs[OVERLAP_BINS_ATTR]),
                            bin_ms=None if bin_ms is None else float(bin_ms),
                            first_bin_time_s=None if first is None else float(first))


def dataset_layout(dataset: NeuralDataset) -> ContinuousLayout | None:
    """``continuous_layout`` of a read data file (None when it is not a continuous session)."""
    return continuous_layout(dataset.attrs, dataset.num_trials, dataset.num_samples, dataset.source)


def file_attributes(path: str | os.PathLike) -> dict:
    """A data file's attributes as stored (h5py values), without reading its arrays ({} for no file)."""
    if not Path(path).is_file():
        return {}
    with h5py.File(path, "r") as f:
        return dict(f.attrs)


def merge_dataset_windows(values: np.ndarray, layout: ContinuousLayout) -> np.ndarray:
    """The session series of a trials-first array of the data file (all windows, in file order).

    For the data's own ``data`` and ``behavior``, which every window covering a bin agrees on: each
    bin takes its value from the last window covering it, so the session comes back exactly as it
    was cut (no weights, no rounding). ``values`` ``(num_windows, window_bins, features)`` ->
    ``(num_bins, features)`` of the same dtype.
    """
    values = np.asarray(values)
    if values.ndim != 3 or values.shape[:2] != (layout.num_windows, layout.window_bins):
        raise NeurodynError(f"expected ({layout.num_windows}, {layout.window_bins}, features) windows; got "
                            f"{values.shape}")
    series = np.empty((layout.num_bins, values.shape[2]), dtype=values.dtype)
    for start, window in zip(layout.starts, values):
        series[start:start + layout.window_bins] = window
    return series


# ---------------------------------------------------------------------------------------------
# Reading a session and writing the data file


@dataclass(frozen=True)
class SessionVariables:
    """Names of the session file's variables (struct fields / h5 groups with dots); None = absent.

    ``data``: neurons x bins counts (None: ``spikes`` if present, else the only 2-D matrix);
    ``behavior``: dims x bins; ``time``: one time per bin, in s.
    """

    data: str | None = None
    behavior: str | None = None
    time: str | None = None


@dataclass(frozen=True)
class Windowing:
    """How the session is cut: window and overlap in ms, the bin width (or None: from the time vector)."""

    window_ms: float
    overlap_ms: float = 0.0
    bin_ms: float | None = None


@dataclass
class Session:
    """A continuous recording: ``counts`` ``(num_bins, neurons)``, ``behavior`` ``(num_bins, dims)`` or None,
    ``bin_ms``, ``first_bin_time_s`` (None without a time vector), and the names it was read from."""

    counts: np.ndarray
    behavior: np.ndarray | None
    bin_ms: float
    first_bin_time_s: float | None
    source: str
    variables: dict


def read_session(path: str | os.PathLike, variables: SessionVariables = SessionVariables(),
                 bin_ms: float | None = None, axes: str = "neurons,bins") -> Session:
    """Read a continuous session from a MATLAB .mat file (v5/v6/v7 or v7.3) or an h5 file.

    Parameters
    ----------
    path : str or PathLike
        The session file. A .mat file's variables are in MATLAB's dimension order; a plain h5
        file's datasets as h5py reads them.
    variables : SessionVariables
        The data matrix (neurons x bins counts), optional behaviour (dims x bins, NaN = not
        measured) and optional time vector (one time per bin, in s).
    bin_ms : float, optional
        Bin width in ms; needed without ``variables.time``, checked against it with one.
    axes : {"neurons,bins", "bins,neurons"}
        The order of the data and behaviour matrices' dimensions.

    Returns
    -------
    Session
        ``counts`` ``(num_bins, neurons)`` float64, ``behavior`` ``(num_bins, dims)`` or None,
        ``bin_ms`` (given, or the time vector's mean step to the microsecond), ``first_bin_time_s``.

    Raises
    ------
    NeurodynError
        One line naming the file, the variable and the shape expected.
    """
    source = str(path)
    if axes not in AXES:
        raise NeurodynError(f"axes must be one of {', '.join(AXES)}; got {axes!r}")
    bins_first = axes == "bins,neurons"
    values = _open_session(Path(path), source)
    data_name = variables.data or _default_data_name(values, source)
    counts = _matrix(values, data_name, "num_neurons x num_bins", bins_first)
    num_bins = counts.shape[0]
    if not np.isfinite(counts[~np.isnan(counts)]).all():
        raise NeurodynError(f"{source}: variable '{data_name}' holds infinite values; use NaN for unobserved bins")
    names = {"source_variable": data_name}
    behavior = None
    if variables.behavior:
        behavior = _matrix(values, variables.behavior, f"behavior_dims x {num_bins} (num_bins of '{data_name}')",
                           bins_first, num_bins)
        if np.isinf(behavior).any():
            raise NeurodynError(f"{source}: variable '{variables.behavior}' holds infinite values; use NaN where "
                                "the behaviour was not measured")
        names["behavior_variable"] = variables.behavior
    first_time = None
    if variables.time:
        bin_ms, first_time = _bin_width_from_times(values, variables.time, num_bins, data_name, bin_ms)
        names["time_variable"] = variables.time
    elif bin_ms is None:
        raise NeurodynError(f"{source}: give the bin width with --bin-ms, or a vector of bin times (s) with --time")
    if not (np.isfinite(bin_ms) and bin_ms > 0):
        raise NeurodynError(f"bin width must be a positive number of ms; got {bin_ms}")
    return Session(counts=counts, behavior=behavior, bin_ms=float(bin_ms), first_bin_time_s=first_time,
                   source=source, variables=names)


def bins_of(ms: float, bin_ms: float, what: str) -> int:
    """``ms`` as a whole number of bins of ``bin_ms`` (``NeurodynError`` naming ``what`` otherwise)."""
    if not np.isfinite(ms) or ms < 0:
        raise NeurodynError(f"{what} must be a non-negative number of ms; got {ms}")
    bins = ms / bin_ms
    if abs(bins - round(bins)) > 1e-6 * max(1.0, bins):
        raise NeurodynError(f"{what} of {ms:g} ms is not a whole number of {bin_ms:g} ms bins")
    return int(round(bins))


def session_dataset(session: Session, windowing: Windowing, heldout_neurons: np.ndarray | None = None,
                    ) -> tuple[NeuralDataset, ContinuousLayout]:
    """The windows of a session as a data set (trials = windows) and their layout.

    ``data`` ``(num_windows, window_bins, neurons)``, ``behavior`` likewise when the session has
    it, ``heldout_neurons`` as given, attributes ``ContinuousLayout.to_attrs`` plus the source file
    and variable names.
    """
    bin_ms = session.bin_ms
    if windowing.bin_ms is not None and abs(windowing.bin_ms - bin_ms) > 1e-9 * bin_ms:
        raise NeurodynError(f"bin width {windowing.bin_ms:g} ms differs from the session's {bin_ms:g} ms")
    window_bins = bins_of(windowing.window_ms, bin_ms, f"{session.source}: the window")
    overlap_bins = bins_of(windowing.overlap_ms, bin_ms, f"{session.source}: the overlap")
    num_bins = session.counts.shape[0]
    try:
        starts = window_starts(num_bins, window_bins, overlap_bins)
    except NeurodynError as error:
        raise NeurodynError(f"{session.source}: {error} (window {windowing.window_ms:g} ms, overlap "
                            f"{windowing.overlap_ms:g} ms, bins of {bin_ms:g} ms)") from None
    layout = ContinuousLayout(starts=starts, num_bins=num_bins, window_bins=window_bins, overlap_bins=overlap_bins,
                              bin_ms=bin_ms, first_bin_time_s=session.first_bin_time_s)
    attrs = {**layout.to_attrs(), "source_file": Path(session.source).name, **session.variables}
    behavior = None if session.behavior is None else cut_windows(session.behavior, starts, window_bins)
    dataset = NeuralDataset(data=cut_windows(session.counts, starts, window_bins), behavior=behavior,
                            heldout_neurons=heldout_neurons, attrs=attrs, source=session.source)
    return dataset, layout


def prepare_continuous(path: str | os.PathLike, out_path: str | os.PathLike, windowing: Windowing,
                       variables: SessionVariables = SessionVariables(), heldout_fraction: float | None = None,
                       seed: int = 0, axes: str = "neurons,bins") -> tuple[NeuralDataset, ContinuousLayout]:
    """Read a session, cut it into windows and write the data file ``out_path`` atomically.

    With ``heldout_fraction`` a seeded random share of the neurons becomes ``heldout_neurons``
    (``nwb_spikes.choose_heldout_neurons``). Returns the written data set and its layout.
    """
    from neurodyn.data.nwb_spikes import choose_heldout_neurons

    session = read_session(path, variables, windowing.bin_ms, axes)
    heldout = None
    if heldout_fraction is not None:
        heldout = choose_heldout_neurons(session.counts.shape[1], heldout_fraction, seed)
    dataset, layout = session_dataset(session, windowing, heldout)
    if heldout is not None:
        dataset.attrs["heldout_seed"] = int(seed)
    write_dataset(out_path, dataset)
    return dataset, layout


# ---------------------------------------------------------------------------------------------
# Session file access


def _open_session(path: Path, source: str):
    """The file's variables behind ``MatFile``'s interface: a .mat file (any version) or a plain h5 file."""
    from neurodyn.data.matlab import MatFile, open_mat

    if not path.is_file():
        raise NeurodynError(f"{source}: session file not found")
    if h5py.is_hdf5(path):
        with open(path, "rb") as handle:
            is_mat = handle.read(6) == b"MATLAB"  # v7.3: HDF5 behind a MATLAB header
        if not is_mat:
            try:
                with h5py.File(path, "r") as f:
                    return MatFile(source, _h5_values(f))
            except OSError as error:
                raise NeurodynError(f"{source}: cannot read the h5 file (corrupt or truncated?): {error}") from None
    return open_mat(path)


def _h5_values(group: h5py.Group) -> dict:
    """An h5 group as nested dicts of arrays (as h5py reads them; groups -> dicts)."""
    values = {}
    for name, node in group.items():
        if isinstance(node, h5py.Group):
            values[name] = _h5_values(node)
        elif isinstance(node, h5py.Dataset):
            values[name] = np.asarray(node[()])
    return values


def _default_data_name(values, source: str) -> str:
    if "spikes" in values.names():
        return "spikes"
    matrices = [name for name in values.names() if isinstance(values.get(name), np.ndarray)
                and values.get(name).ndim == 2 and min(values.get(name).shape) > 1]
    if len(matrices) == 1:
        return matrices[0]
    raise NeurodynError(f"{source}: no variable 'spikes' and {len(matrices) or 'no'} 2-D matrices to choose from; "
                        f"name the data variable with --var (num_neurons x num_bins). Variables present: "
                        f"{values.describe()}")


def _matrix(values, name: str, expected: str, bins_first: bool, num_bins: int | None = None) -> np.ndarray:
    """Variable ``name`` as ``(num_bins, features)`` float64."""
    array = values.numeric(name.replace("/", "."))
    shown = " x ".join(str(n) for n in array.shape)
    order = "--axes bins,neurons: bins first" if bins_first else "--axes neurons,bins: bins second"
    if array.ndim != 2 or 0 in array.shape:
        raise NeurodynError(f"{values.source}: variable '{name}' has size {shown}; expected a non-empty {expected} "
                            f"matrix ({order})")
    series = np.asarray(array, dtype=np.float64)
    series = series if bins_first else series.T
    if num_bins is not None and series.shape[0] != num_bins:
        hint = ""
        if series.shape[1] == num_bins:
            hint = "; it matches with its dimensions swapped: store it in the data matrix's order (--axes sets both)"
        elif 1 in array.shape:
            hint = "; a vector is read as one dimension over the bins"
        raise NeurodynError(f"{values.source}: variable '{name}' has size {shown}; expected {expected} ({order})"
                            f"{hint}")
    return series


def _bin_width_from_times(values, name: str, num_bins: int, data_name: str,
                          bin_ms: float | None) -> tuple[float, float]:
    """The bin width (ms) and first bin time (s) of a vector of bin times in s."""
    times = values.numeric(name.replace("/", ".")).astype(np.float64)
    source = values.source
    if times.ndim > 2 or (times.ndim == 2 and 1 not in times.shape) or times.size != num_bins:
        raise NeurodynError(f"{source}: variable '{name}' has size {' x '.join(str(n) for n in times.shape)}; "
                            f"expected a vector of {num_bins} bin times in s (one per bin of '{data_name}')")
    times = times.reshape(-1)
    if num_bins < 2:
        raise NeurodynError(f"{source}: variable '{name}' holds one time; a bin width needs two (give --bin-ms)")
    steps = np.diff(times)
    if not np.isfinite(times).all() or np.any(steps <= 0):
        raise NeurodynError(f"{source}: variable '{name}' must hold finite, increasing bin times (s)")
    step = float(np.median(steps))
    uneven = np.flatnonzero(np.abs(steps - step) > TIME_STEP_TOLERANCE * step)
    if uneven.size:
        at = int(uneven[0])
        raise NeurodynError(f"{source}: variable '{name}' is not evenly binned: the step from bin {at} to {at + 1} is "
                            f"{steps[at] * 1000:g} ms, the median {step * 1000:g} ms (a gap in the recording?); "
                            "a continuous session needs one time per bin without gaps")
    derived_ms = step * 1000.0
    if bin_ms is not None:
        if abs(bin_ms - derived_ms) > 0.01 * bin_ms:
            raise NeurodynError(f"{source}: --bin-ms {bin_ms:g} but variable '{name}' steps by {derived_ms:g} ms")
        return float(bin_ms), float(times[0])
    # Bin times stored rounded (e.g. steps of 49.5 .. 50.5 ms): the mean step over the whole session,
    # to the microsecond.
    return float(np.round((times[-1] - times[0]) / (num_bins - 1) * 1000.0, 3)), float(times[0])


def constant_dimensions(behavior: np.ndarray) -> list[int]:
    """The dimensions of ``behavior`` ``(..., dims)`` that hold at most one value where measured (NaN ignored)."""
    flat = np.asarray(behavior, dtype=np.float64).reshape(-1, np.shape(behavior)[-1])
    return [d for d in range(flat.shape[1]) if np.unique(flat[~np.isnan(flat[:, d]), d]).size <= 1]


def describe_session(dataset: NeuralDataset, layout: ContinuousLayout) -> str:
    """One line: the session, its windows and what the data file holds."""
    bin_ms = layout.bin_ms or 0.0
    extras = []
    if dataset.behavior is not None:
        dims = dataset.behavior.shape[2]
        extras.append(f"behaviour ({dims} dim{'s' if dims != 1 else ''})")
    if dataset.heldout_neurons is not None:
        extras.append(f"{dataset.heldout_neurons.size} held-out neurons")
    last_overlap = (int(layout.starts[-2] + layout.window_bins - layout.starts[-1])
                    if layout.num_windows > 1 else 0)
    end_note = (f"; the last window is aligned to the session's end (overlap {last_overlap} bins)"
                if layout.num_windows > 1 and last_overlap != layout.overlap_bins else "")
    return (f"{layout.num_bins} bins of {bin_ms:g} ms ({layout.num_bins * bin_ms / 1000:.1f} s) x "
            f"{dataset.num_neurons} neurons -> {layout.num_windows} windows of {layout.window_bins} bins overlapping "
            f"by {layout.overlap_bins}{end_note}; {np.nansum(merge_dataset_windows(dataset.data, layout)):.0f} counts"
            f"{'; with ' + ', '.join(extras) if extras else ''}")
