"""Read one plane of a suite2p output folder (``suite2p/plane0``) as ``FluorescenceTraces``.

Files: ``F.npy`` ``(rois, frames)`` ROI fluorescence, ``Fneu.npy`` ``(rois, frames)`` neuropil,
``iscell.npy`` ``(rois, 2)`` (is-cell flag, classifier probability), ``ops.npy`` (pickled dict:
``fs`` frames per second of the plane, ``Ly`` lines per frame) and ``stat.npy`` (pickled list of
per-ROI dicts: ``med`` = [line, column] of the ROI's median pixel, or ``ypix``). The two pickled
files are read by ``safe_npy``, which builds their plain data and arrays and runs no code from them.
Frame ``f`` starts at ``first_frame_s + f / fs`` seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from neurodyn.data.prepare_2p import FluorescenceTraces
from neurodyn.data.safe_npy import load_object_npy
from neurodyn.errors import NeurodynError

REQUIRED_FILES = ("F.npy", "Fneu.npy", "iscell.npy", "ops.npy", "stat.npy")


def read_suite2p_plane(folder: str | os.PathLike, cells_only: bool = True, min_cell_probability: float = 0.0,
                       first_frame_s: float = 0.0) -> FluorescenceTraces:
    """The ROIs of one suite2p plane (by default those ``iscell`` marks as cells)."""
    folder = _plane_folder(Path(folder))
    source = str(folder)
    fluorescence = _load_array(folder / "F.npy", 2, "(rois, frames)")
    neuropil = _load_array(folder / "Fneu.npy", 2, "(rois, frames) like F.npy")
    rois, frames = fluorescence.shape
    roi_lines = _roi_lines(folder / "stat.npy", fluorescence.shape)
    if neuropil.shape != fluorescence.shape:
        raise NeurodynError(f"{folder / 'Fneu.npy'}: shape {neuropil.shape}; expected {fluorescence.shape} like F.npy")
    is_cell = _cell_flags(folder / "iscell.npy", rois, cells_only, min_cell_probability)
    ops = _load_pickled(folder / "ops.npy")
    if not isinstance(ops, dict):
        raise NeurodynError(f"{folder / 'ops.npy'}: expected suite2p's ops dict; got {type(ops).__name__}")
    frame_rate = _ops_number(ops, "fs", folder, "frames per second of this plane")
    lines_per_frame = _ops_number(ops, "Ly", folder, "lines per frame")
    if not is_cell.any():
        reason = (f"no ROI has a cell probability of at least {min_cell_probability:g}" if min_cell_probability > 0
                  else "no ROI is marked as a cell")
        raise NeurodynError(f"{folder / 'iscell.npy'}: {reason} (of {rois}); "
                            "use all ROIs (--all-rois) or a lower probability threshold")
    return FluorescenceTraces(
        fluorescence=fluorescence[is_cell], neuropil=neuropil[is_cell],
        frame_times_s=first_frame_s + np.arange(frames) / frame_rate, frame_rate_hz=frame_rate,
        roi_lines=roi_lines[is_cell], lines_per_frame=int(lines_per_frame),
        roi_indices=np.flatnonzero(is_cell), source=source)


def _plane_folder(folder: Path) -> Path:
    """``folder`` itself, or its only ``plane*`` sub-folder (``suite2p/`` -> ``suite2p/plane0``)."""
    if not folder.is_dir():
        raise NeurodynError(f"{folder}: not a folder (expected a suite2p plane folder holding {', '.join(REQUIRED_FILES)})")
    if (folder / "F.npy").exists():
        return folder
    planes = sorted(p for p in folder.glob("plane*") if (p / "F.npy").exists())
    if len(planes) == 1:
        return planes[0]
    if planes:
        raise NeurodynError(f"{folder}: {len(planes)} planes ({', '.join(p.name for p in planes)}); "
                            "prepare one plane folder at a time (each plane has its own scan timing)")
    raise NeurodynError(f"{folder}: missing F.npy; a suite2p plane folder holds {', '.join(REQUIRED_FILES)}")


def _load_array(path: Path, ndim: int, meaning: str) -> np.ndarray:
    if not path.is_file():
        raise NeurodynError(f"{path}: file not found (expected {meaning})")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as error:  # ValueError for pickled/corrupt files, OSError, EOFError
        raise NeurodynError(f"{path}: cannot read as a numeric .npy array ({error})") from None
    if array.ndim != ndim or 0 in array.shape or not np.issubdtype(array.dtype, np.number):
        raise NeurodynError(f"{path}: {array.dtype} array of shape {array.shape}; expected numeric {meaning}")
    return array


def _load_pickled(path: Path):
    if not path.is_file():
        raise NeurodynError(f"{path}: file not found")
    try:
        # suite2p stores ops as a pickled dict and stat as an array of dicts: read without running code.
        return load_object_npy(path)
    except Exception as error:  # ValueError, pickle.UnpicklingError, EOFError, OSError
        raise NeurodynError(f"{path}: cannot read ({error})") from None


def _cell_flags(path: Path, rois: int, cells_only: bool, min_probability: float) -> np.ndarray:
    iscell = _load_array(path, 2, f"({rois}, 2): is-cell flag and probability per ROI")
    if iscell.shape != (rois, 2):
        raise NeurodynError(f"{path}: shape {iscell.shape}; expected ({rois}, 2) = (rois of F.npy, flag and probability)")
    if not cells_only:
        return np.ones(rois, dtype=bool)
    return (iscell[:, 0] > 0) & (iscell[:, 1] >= min_probability)


def _ops_number(ops: dict, key: str, folder: Path, meaning: str) -> float:
    value = ops.get(key)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (np.isfinite(number) and number > 0):
        raise NeurodynError(f"{folder / 'ops.npy'}: key '{key}' ({meaning}) is {value!r}; expected a positive number")
    return number


def _roi_lines(path: Path, fluorescence_shape: tuple[int, int]) -> np.ndarray:
    """Each ROI's median line (``stat.npy``), checked against F.npy's ``(rois, frames)``."""
    rois, frames = fluorescence_shape
    stat = _load_pickled(path)
    if not isinstance(stat, (np.ndarray, list)) or np.ndim(stat) != 1:
        raise NeurodynError(f"{path}: expected suite2p's array of per-ROI dicts; got {type(stat).__name__}")
    if len(stat) != rois:
        if len(stat) == frames:
            raise NeurodynError(f"{path.with_name('F.npy')}: shape {fluorescence_shape} holds the {frames} ROIs of "
                                f"stat.npy along its second axis; expected (rois, frames) = ({frames}, {rois})")
        raise NeurodynError(f"{path}: {len(stat)} ROI entries; expected {rois} like F.npy")
    lines = np.empty(rois)
    for index, roi in enumerate(stat):
        if not isinstance(roi, dict) or not ("med" in roi or "ypix" in roi):
            raise NeurodynError(f"{path}: ROI {index} has no 'med' or 'ypix'; expected suite2p's per-ROI dict")
        # 'med' is suite2p's median pixel [line, column]; it lies inside the ROI, unlike a mean.
        lines[index] = float(roi["med"][0]) if "med" in roi else float(np.median(roi["ypix"]))
    return lines
