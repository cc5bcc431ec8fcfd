"""``continuous_output.h5``: a continuous session's per-window outputs merged back into one series.

A data file made by ``neurodyn prepare continuous`` holds overlapping windows of one recording as
its trials (``neurodyn.data.continuous``). After a run writes its ``<split>_output.h5`` files,
``write_continuous_output`` gathers the rates and factors of every window (train, valid and test
splits together), merges them with the cross-faded overlaps of ``data.continuous.merge_windows``
and writes, atomically, beside the split outputs:

    rates        (num_neurons, num_bins)   expected count per bin of the whole session
    factors      (factors_dim, num_bins)   the model's factors of the whole session
    time_bins    (num_bins,) int           bin index in the session, 0 .. num_bins - 1
    time_s       (num_bins,)               bin time in s: the data file's continuous_first_bin_time_s
                                           (0 without one) plus the bin index times bin_ms
    window_starts (num_windows,) int       first bin of each window (= the data file's trials)
    window_split  (num_windows,) str       the split each window was in: train, valid or test

Features first, like every output file (as h5py reads it). File attributes: ``bin_ms``,
``num_bins``, ``num_windows``, ``window_bins``, ``overlap_bins``, ``merge``, ``data_path``,
``first_bin_time_s`` (when known) and the split outputs' own attributes (observation model,
event delay, ...). In memory (``merge_run_outputs``, ``read_continuous_output``) every series
is time-first: ``(num_bins, features)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from neurodyn.data.atomic import write_h5_atomic
from neurodyn.data.continuous import (STARTS_ATTR, ContinuousLayout, continuous_layout, is_continuous,
                                      merge_windows)
from neurodyn.errors import NeurodynError
from neurodyn.runs.layout import TrainLayout
from neurodyn.runs.outputs import RunOutput, read_split_output

MERGE_DESCRIPTION = "linear cross-fade over each overlap (weights sum to 1 at every bin)"


@dataclass
class MergedOutputs:
    """A session's merged outputs, time-first: ``rates`` ``(num_bins, neurons)``, ``factors``
    ``(num_bins, factors_dim)``; ``window_split`` ``(num_windows,)`` the split of each window;
    ``layout`` where the windows lie."""

    rates: np.ndarray
    factors: np.ndarray
    window_split: np.ndarray
    layout: ContinuousLayout

    def bins_only_in(self, splits: tuple[str, ...]) -> np.ndarray:
        """``(num_bins,)`` bool: the bins that no window outside ``splits`` covers (e.g. ``("valid",)``:
        bins only valid windows cover, whose merged rates no training window contributed to)."""
        covered = np.zeros(self.layout.num_bins, dtype=bool)
        for start, split in zip(self.layout.starts, self.window_split):
            if split not in splits:
                covered[start:start + self.layout.window_bins] = True
        return ~covered


def merge_run_outputs(outputs: Mapping[str, RunOutput], layout: ContinuousLayout,
                      where: str = "outputs") -> MergedOutputs:
    """Merge the rates and factors of every window of ``outputs`` (split name -> ``RunOutput``).

    Every window of ``layout`` must appear in exactly one split (``trial_idx`` = window index) with
    ``layout.window_bins`` bins; otherwise ``NeurodynError`` naming ``where``.
    """
    num_windows, window_bins = layout.num_windows, layout.window_bins
    split_of = np.full(num_windows, "", dtype=object)
    rates = factors = None
    for split, out in outputs.items():
        if out.rates.shape[1] != window_bins:
            raise NeurodynError(f"{where}: the {split} outputs cover {out.rates.shape[1]} bins per trial but the "
                                f"data file's windows hold {window_bins}")
        idx = out.trial_idx
        if idx.size and (idx.min() < 0 or idx.max() >= num_windows):
            raise NeurodynError(f"{where}: the {split} outputs name trials up to {idx.max()} but the session has "
                                f"{num_windows} windows; was the run trained on this data file?")
        if rates is None:
            rates = np.full((num_windows, window_bins, out.rates.shape[2]), np.nan)
            factors = np.full((num_windows, window_bins, out.factors.shape[2]), np.nan)
        twice = idx[split_of[idx] != ""]
        if twice.size or np.unique(idx).size != idx.size:
            raise NeurodynError(f"{where}: window {int((twice if twice.size else idx)[0])} appears in two outputs")
        split_of[idx] = split
        rates[idx], factors[idx] = out.rates, out.factors
    missing = np.flatnonzero(split_of == "")
    if rates is None or missing.size:
        raise NeurodynError(f"{where}: no outputs for {missing.size or num_windows} of the session's {num_windows} "
                            f"windows (e.g. window {int(missing[0]) if missing.size else 0}); every window needs "
                            "its rates to merge the session")
    return MergedOutputs(rates=merge_windows(rates, layout.starts, layout.num_bins),
                         factors=merge_windows(factors, layout.starts, layout.num_bins),
                         window_split=split_of.astype(str), layout=layout)


def read_folder_outputs(output_dir: str | os.PathLike) -> dict[str, RunOutput]:
    """The ``<split>_output.h5`` files in ``output_dir`` (train and valid, test when present)."""
    layout = TrainLayout(output_dir)
    return {split: read_split_output(layout.output(split)) for split in ("train", "valid", "test")
            if split != "test" or layout.output(split).is_file()}


def write_continuous_output(output_dir: str | os.PathLike, data_attrs: Mapping, data_path: str) -> Path | None:
    """Write ``output_dir/continuous_output.h5`` when the data file is a continuous session.

    Parameters
    ----------
    output_dir : str or PathLike
        The folder holding the run's ``<split>_output.h5`` files (a train folder, a session's
        folder of a stitched model, or the folder ``pbt_best_model/`` is built in).
    data_attrs : mapping
        The data file's attributes (``continuous_*``, ``bin_ms``).
    data_path : str
        The data file, for messages and the attribute ``data_path``.

    Returns
    -------
    Path or None
        The file written, or None when ``data_attrs`` describe no continuous session.
    """
    if not is_continuous(data_attrs):
        return None
    files = TrainLayout(output_dir)
    outputs = read_folder_outputs(files.root)
    num_windows = np.asarray(data_attrs[STARTS_ATTR]).size
    layout = continuous_layout(data_attrs, num_windows, outputs["valid"].rates.shape[1], str(data_path))
    merged = merge_run_outputs(outputs, layout, str(files.root))
    arrays = {"rates": merged.rates.T, "factors": merged.factors.T,
              "time_bins": np.arange(layout.num_bins, dtype=np.int64), "time_s": layout.bin_times_s(),
              "window_starts": layout.starts,
              "window_split": np.array(merged.window_split.tolist(), dtype=h5py.string_dtype())}
    attrs = {key: value for key, value in outputs["valid"].attrs.items() if value is not None}
    attrs.update(num_bins=layout.num_bins, num_windows=layout.num_windows, window_bins=layout.window_bins,
                 overlap_bins=layout.overlap_bins, merge=MERGE_DESCRIPTION, data_path=str(data_path))
    if layout.bin_ms is not None:
        attrs["bin_ms"] = layout.bin_ms
    if layout.first_bin_time_s is not None:
        attrs["first_bin_time_s"] = layout.first_bin_time_s
    write_h5_atomic(files.continuous_output, arrays, attrs)
    return files.continuous_output


def read_continuous_output(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A ``continuous_output.h5`` in memory: ``rates`` ``(num_bins, neurons)``, ``factors``
    ``(num_bins, factors_dim)``, ``time_bins``, ``time_s``, ``window_starts``, ``window_split`` and
    ``attrs`` (a dict)."""
    path = Path(path)
    if not path.is_file():
        raise NeurodynError(f"{path}: file not found (written by 'neurodyn train' or 'neurodyn run' for a data file "
                            "made by 'neurodyn prepare continuous')")
    with h5py.File(path, "r") as f:
        missing = [key for key in ("rates", "factors", "time_bins") if key not in f]
        if missing:
            raise NeurodynError(f"{path}: missing key(s) {', '.join(missing)}; not a continuous output file")
        result = {key: np.asarray(f[key][()]) for key in ("rates", "factors", "time_bins", "time_s", "window_starts")
                  if key in f}
        if "window_split" in f:
            result["window_split"] = np.asarray(f["window_split"].asstr()[()])
        result["attrs"] = {key: value.item() if isinstance(value, np.generic) else value
                           for key, value in f.attrs.items()}
    result["rates"], result["factors"] = result["rates"].T, result["factors"].T
    return result
