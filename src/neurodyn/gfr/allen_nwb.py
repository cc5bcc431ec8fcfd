"""Reading Allen Cell Types electrophysiology NWB (2.x) files a user has on disk.

Per sweep we need the stimulus name, the stimulus current, its sampling rate and the spike times:

* stimulus: the ``PatchClampSeries`` in ``nwbfile.stimulus``; its ``stimulus_description`` names the
  protocol, either in words ("Long Square", "Noise 1", ...) or as an Allen stimulus code
  (``C1LS...`` Long Square, ``C1RP...`` Ramp, ``C1NSSEED_1`` Noise 1, ``C1NSSEED_2`` Noise 2);
  other protocols are skipped;
* spike times: the ``spikes`` processing module's ``Sweep_{N}`` series (timestamps in s from the
  sweep start, as the Allen pipeline writes them); when absent, upward crossings of
  ``spike_threshold_mv`` in the recorded membrane voltage of the same sweep.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from neurodyn.errors import NeurodynError
from neurodyn.gfr.preprocess import STIMULUS_NAMES, RawSweep

_CODE_PATTERNS = (
    (re.compile(r"^C1LS"), "Long Square"),
    (re.compile(r"^C1RP"), "Ramp"),
    (re.compile(r"^C1NSSEED_1"), "Noise 1"),
    (re.compile(r"^C1NSSEED_2"), "Noise 2"),
)
_UNIT_TO_PA = {"amperes": 1e12, "ampere": 1e12, "a": 1e12, "pa": 1.0, "picoamperes": 1.0}
_UNIT_TO_MV = {"volts": 1e3, "volt": 1e3, "v": 1e3, "mv": 1.0, "millivolts": 1.0}


def stimulus_name(description: str) -> str | None:
    """The GFR stimulus family of a stimulus description, or None for protocols GFR does not use."""
    text = (description or "").strip()
    for name in STIMULUS_NAMES:
        if text.lower() == name.lower():
            return name
    for pattern, name in _CODE_PATTERNS:
        if pattern.match(text.upper()):
            return name
    return None


def _scaled(series, table: dict, path: Path, what: str) -> np.ndarray:
    unit = str(getattr(series, "unit", "")).lower()
    if unit not in table:
        raise NeurodynError(f"{path}: {what} '{series.name}' has unit '{series.unit}'; expected one of {sorted(table)}")
    offset = getattr(series, "offset", 0.0) or 0.0
    return (np.asarray(series.data[:], dtype=float) * series.conversion + offset) * table[unit]


def _sampling_rate(series, path: Path) -> float:
    if series.rate is not None:
        return float(series.rate)
    timestamps = np.asarray(series.timestamps[:], dtype=float)
    if len(timestamps) < 2:
        raise NeurodynError(f"{path}: series '{series.name}' has neither a rate nor timestamps to derive one")
    return float(1.0 / np.median(np.diff(timestamps)))


def detect_spikes(voltage_mv: np.ndarray, sampling_rate_hz: float, threshold_mv: float = -20.0) -> np.ndarray:
    """Spike times (s): samples where the voltage crosses ``threshold_mv`` upwards."""
    above = voltage_mv >= threshold_mv
    onsets = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    return onsets / sampling_rate_hz


def read_allen_nwb(path: str | os.PathLike, spike_threshold_mv: float = -20.0) -> list[RawSweep]:
    """Sweeps of the four GFR stimulus families in one NWB file, sorted by sweep number."""
    from pynwb import NWBHDF5IO
    from pynwb.icephys import PatchClampSeries

    path = Path(path)
    if not path.exists():
        raise NeurodynError(f"{path}: NWB file not found")
    io = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pynwb warns about cached namespaces of newer files
            io = NWBHDF5IO(str(path), "r", load_namespaces=True)
            nwbfile = io.read()
    except Exception as error:  # h5py, hdmf and pynwb raise many types for a bad file
        if io is not None:
            io.close()
        raise NeurodynError(f"{path}: not a readable NWB 2 file ({type(error).__name__}: {error})")
    try:
        responses = {s.sweep_number: s for s in nwbfile.acquisition.values()
                     if isinstance(s, PatchClampSeries) and s.sweep_number is not None}
        spikes_module = nwbfile.processing.get("spikes")
        sweeps, skipped = [], set()
        for series in nwbfile.stimulus.values():
            if not isinstance(series, PatchClampSeries):
                continue
            name = stimulus_name(series.stimulus_description)
            if name is None:
                skipped.add(series.stimulus_description)
                continue
            if series.sweep_number is None:
                raise NeurodynError(f"{path}: stimulus '{series.name}' ({name}) has no sweep_number")
            number = int(series.sweep_number)
            rate = _sampling_rate(series, path)
            current = _scaled(series, _UNIT_TO_PA, path, "stimulus")
            spike_key = f"Sweep_{number}"
            if spikes_module is not None and spike_key in spikes_module.data_interfaces:
                spike_times = np.asarray(spikes_module[spike_key].timestamps[:], dtype=float)
                start = float(series.starting_time or 0.0)
                # Spike times are relative to the sweep start; files with session times are shifted back.
                if len(spike_times) and spike_times.max() > len(current) / rate and start > 0:
                    spike_times = spike_times - start
            elif number in responses:
                response = responses[number]
                spike_times = detect_spikes(_scaled(response, _UNIT_TO_MV, path, "response"),
                                            _sampling_rate(response, path), spike_threshold_mv)
            else:
                raise NeurodynError(f"{path}: sweep {number} ({name}) has neither spike times "
                                    f"(processing/spikes/{spike_key}) nor a recorded voltage")
            sweeps.append(RawSweep(number, name, current, rate, spike_times))
    finally:
        io.close()
    if not sweeps:
        raise NeurodynError(f"{path}: no Long Square, Ramp, Noise 1 or Noise 2 sweeps (found stimulus "
                            f"descriptions {sorted(skipped) or 'none'})")
    return sorted(sweeps, key=lambda s: s.sweep_number)


def find_nwb_file(nwb_dir: str | os.PathLike, cell_id: int) -> Path:
    """``{dir}/{id}.nwb`` or the AllenSDK cache layout ``{dir}/specimen_{id}/ephys.nwb``."""
    nwb_dir = Path(nwb_dir)
    for candidate in (nwb_dir / f"{cell_id}.nwb", nwb_dir / f"specimen_{cell_id}" / "ephys.nwb"):
        if candidate.exists():
            return candidate
    raise NeurodynError(f"{nwb_dir}: no NWB file for cell {cell_id} (looked for {cell_id}.nwb and "
                        f"specimen_{cell_id}/ephys.nwb)")


def list_nwb_cells(nwb_dir: str | os.PathLike) -> list[int]:
    """Cell ids of all NWB files in a directory, in either layout of ``find_nwb_file``."""
    nwb_dir = Path(nwb_dir)
    ids = {int(p.stem) for p in nwb_dir.glob("*.nwb") if p.stem.isdigit()}
    ids |= {int(p.parent.name[len("specimen_"):]) for p in nwb_dir.glob("specimen_*/ephys.nwb")
            if p.parent.name[len("specimen_"):].isdigit()}
    return sorted(ids)


def preprocess_nwb_cells(nwb_dir: str | os.PathLike, data_dir: str | os.PathLike, cell_ids: list[int] | None = None,
                         cre_lines: dict[int, str] | None = None, progress: bool = True) -> list[int]:
    """Read, bin and write every requested cell's NWB file; writes ``{data_dir}/cell_ids.csv`` too.

    Without ``cell_ids`` every NWB file in ``nwb_dir`` is used. Returns the processed cell ids.
    """
    from tqdm import tqdm

    from neurodyn.gfr.preprocess import process_cell, processed_path, write_cell_ids, write_processed

    cre_lines = cre_lines or {}
    if cell_ids is None:
        cell_ids = list_nwb_cells(nwb_dir)
        if not cell_ids:
            raise NeurodynError(f"{nwb_dir}: no NWB files named {{cell_id}}.nwb or specimen_{{cell_id}}/ephys.nwb")
    for cell_id in tqdm(cell_ids, desc="preprocessing NWB files", disable=not progress):
        sweeps = read_allen_nwb(find_nwb_file(nwb_dir, cell_id))
        cell = process_cell(cell_id, sweeps, cre_line=cre_lines.get(cell_id, ""))
        write_processed(processed_path(data_dir, cell_id), cell)
    write_cell_ids(Path(data_dir) / "cell_ids.csv", cell_ids, cre_lines)
    return list(cell_ids)
