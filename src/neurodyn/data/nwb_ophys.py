"""Read ROI fluorescence from an NWB ophys file as ``FluorescenceTraces`` (pynwb).

Traces: a ``RoiResponseSeries`` ``(frames, rois)`` (inside a ``Fluorescence`` or ``DfOverF``
container of any processing module), optionally a second one with the neuropil. Frame times:
the series' ``timestamps``, else ``starting_time + f / rate``. ROI positions: its
``PlaneSegmentation`` rows (``rois`` region): ``image_mask`` ``(rois, x, y)`` or ``pixel_mask``
``(x, y, weight)`` per ROI, as the NWB schema names the axes. The scan line of an ROI is its
weighted centroid along ``y`` (``line_axis="x"`` for files whose masks put the lines first);
lines per frame = the mask's extent along that axis (must be given for pixel masks).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from neurodyn.data.nwb_spikes import trial_table_columns
from neurodyn.data.prepare_2p import FluorescenceTraces
from neurodyn.errors import NeurodynError

LINE_AXES = ("x", "y")


def read_nwb_ophys(path: str | os.PathLike, series: str | None = None, neuropil_series: str | None = None,
                   lines_per_frame: int | None = None, line_axis: str = "y") -> FluorescenceTraces:
    """Traces, frame times and ROI scan lines of one RoiResponseSeries (named, or the only one)."""
    from pynwb import NWBHDF5IO

    source = str(path)
    if line_axis not in LINE_AXES:
        raise NeurodynError(f"line axis must be one of {LINE_AXES}; got {line_axis!r}")
    if not Path(path).is_file():
        raise NeurodynError(f"{source}: NWB file not found")
    try:
        with NWBHDF5IO(str(path), "r") as io:
            nwbfile = io.read()
            available = _roi_response_series(nwbfile)
            chosen = _choose_series(available, series, neuropil_series, source)
            fluorescence = _traces(chosen, source)
            neuropil = None
            if neuropil_series:
                neuropil = _traces(_choose_series(available, neuropil_series, None, source), source)
            frame_times, rate = _frame_times(chosen, fluorescence.shape[1], source)
            roi_rows = np.asarray(chosen.rois.data[:], dtype=np.int64)
            table = chosen.rois.table
            roi_ids = np.asarray(table.id[:], dtype=np.int64)[roi_rows]
            lines, extent = _roi_lines(table, roi_rows, line_axis, source)
    except NeurodynError:
        raise
    except Exception as error:  # pynwb/hdmf/h5py raise many types for files that are not NWB
        raise NeurodynError(f"{source}: cannot read as an NWB ophys file: {type(error).__name__}: {error}") from None
    if lines_per_frame is None:
        if extent is None:
            raise NeurodynError(f"{source}: the PlaneSegmentation has pixel masks only, so the frame's number of "
                                "scan lines is unknown; give it (--lines-per-frame)")
        lines_per_frame = extent
    return FluorescenceTraces(fluorescence=fluorescence, neuropil=neuropil, frame_times_s=frame_times,
                              frame_rate_hz=rate, roi_lines=lines, lines_per_frame=int(lines_per_frame),
                              roi_indices=roi_ids, source=source)


def read_nwb_trial_starts(path: str | os.PathLike, column: str = "start_time") -> np.ndarray:
    """The trials table's ``column`` (seconds) ``(trials,)``."""
    from pynwb import NWBHDF5IO

    try:
        with NWBHDF5IO(str(path), "r") as io:
            trials = io.read().trials
            if trials is None or len(trials) == 0:
                raise NeurodynError(f"{path}: no trials table (or it is empty); give trial start times instead")
            columns = trial_table_columns(trials)
            if column not in columns:
                raise NeurodynError(f"{path}: trials table has no column '{column}'; columns: {columns}")
            return np.asarray(trials[column].data[:], dtype=np.float64)
    except NeurodynError:
        raise
    except Exception as error:
        raise NeurodynError(f"{path}: cannot read the trials table: {type(error).__name__}: {error}") from None


def _roi_response_series(nwbfile) -> dict:
    """``"Container/Series"`` (and plain ``"Series"``) -> RoiResponseSeries, from every processing module."""
    from pynwb.ophys import DfOverF, Fluorescence, RoiResponseSeries

    found = {}
    for module in nwbfile.processing.values():
        for interface in module.data_interfaces.values():
            if isinstance(interface, (Fluorescence, DfOverF)):
                for name, series in interface.roi_response_series.items():
                    found[f"{interface.name}/{name}"] = series
            elif isinstance(interface, RoiResponseSeries):
                found[interface.name] = interface
    return found


def _choose_series(available: dict, wanted: str | None, neuropil: str | None, source: str):
    if not available:
        raise NeurodynError(f"{source}: no RoiResponseSeries (Fluorescence / DfOverF) in any processing module")
    if wanted:
        matches = [series for key, series in available.items() if wanted in (key, key.split("/")[-1])]
        if len(matches) != 1:
            raise NeurodynError(f"{source}: {'no' if not matches else 'several'} RoiResponseSeries named '{wanted}'; "
                                f"available: {', '.join(sorted(available))}")
        return matches[0]
    candidates = {key: series for key, series in available.items()
                  if neuropil not in (key, key.split("/")[-1])}
    if len(candidates) != 1:
        raise NeurodynError(f"{source}: {len(candidates)} RoiResponseSeries; name one with --series "
                            f"(available: {', '.join(sorted(available))})")
    return next(iter(candidates.values()))


def _traces(series, source: str) -> np.ndarray:
    data = np.asarray(series.data[:], dtype=np.float64)
    if data.ndim != 2 or 0 in data.shape:
        raise NeurodynError(f"{source}: RoiResponseSeries '{series.name}' data has shape {data.shape}; "
                            "expected (frames, rois)")
    num_rois = len(series.rois.data)
    if data.shape[1] != num_rois:
        raise NeurodynError(f"{source}: RoiResponseSeries '{series.name}' data has shape {data.shape}; expected "
                            f"(frames, {num_rois}) for its {num_rois} ROIs (NWB series are time-first)")
    return data.T  # (rois, frames)


def _frame_times(series, num_frames: int, source: str) -> tuple[np.ndarray, float]:
    if series.timestamps is not None:
        times = np.asarray(series.timestamps[:], dtype=np.float64)
        if times.shape != (num_frames,) or num_frames < 2 or not np.all(np.diff(times) > 0):
            raise NeurodynError(f"{source}: RoiResponseSeries '{series.name}' timestamps must increase, one per frame")
        return times, float(1.0 / np.median(np.diff(times)))
    rate = float(series.rate)
    return float(series.starting_time or 0.0) + np.arange(num_frames) / rate, rate


def _roi_lines(table, roi_rows: np.ndarray, line_axis: str, source: str) -> tuple[np.ndarray, int | None]:
    """Weighted centroid scan line of each ROI and the masks' extent along the line axis (None for pixel masks)."""
    axis = LINE_AXES.index(line_axis)
    if "image_mask" in table.colnames:
        masks = np.asarray(table["image_mask"].data[:], dtype=np.float64)[roi_rows]  # (rois, x, y)
        if masks.ndim != 3:
            raise NeurodynError(f"{source}: image_mask has shape {masks.shape}; expected (rois, x, y) for one plane")
        weight_per_line = np.abs(masks).sum(axis=2 - axis)  # (rois, lines)
        total = weight_per_line.sum(axis=1)
        if (total == 0).any():
            raise NeurodynError(f"{source}: ROI row {roi_rows[np.flatnonzero(total == 0)[0]]} has an empty image_mask")
        lines = weight_per_line @ np.arange(weight_per_line.shape[1]) / total
        return lines, masks.shape[1 + axis]
    if "pixel_mask" in table.colnames:
        lines = np.empty(roi_rows.size)
        for position, row in enumerate(roi_rows):
            pixels = np.asarray([tuple(p) for p in table["pixel_mask"][int(row)]], dtype=np.float64)  # (pixels, 3)
            if pixels.ndim != 2 or pixels.shape[0] == 0 or np.abs(pixels[:, 2]).sum() == 0:
                raise NeurodynError(f"{source}: ROI row {row} has an empty pixel_mask")
            lines[position] = np.average(pixels[:, axis], weights=np.abs(pixels[:, 2]))
        return lines, None
    raise NeurodynError(f"{source}: the PlaneSegmentation has neither image_mask nor pixel_mask; "
                        "cannot place ROIs in the frame")
