"""Binning raw sweeps into current and firing rate per bin, and the processed-cell h5 file.

Processed file ``processed_I_and_firing_rate_{cell_id}.h5``::

    attrs: cell_id, max_firing_rate (spikes/ms, max 1/ISI), max_current (pA, max |I|),
           cre_line (may be ""), format_version
    bin_{B}/sweep_{N}/current   mean current per bin (pA), float64 (bins,)
    bin_{B}/sweep_{N}/rate      firing rate per bin (spikes/ms), float64 (bins,)
    bin_{B}/sweep_{N}.attrs     stimulus_name, sweep_number

for every bin size B in 10, 20, 50, 100 ms.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from neurodyn.data.atomic import atomic_path, write_text_atomic
from neurodyn.errors import NeurodynError
from neurodyn.gfr.model import check_bin_size

STIMULUS_NAMES = ("Long Square", "Ramp", "Noise 1", "Noise 2")
PROCESSED_BIN_SIZES = (10, 20, 50, 100)
FORMAT_VERSION = 1


@dataclass
class RawSweep:
    """One recorded (or simulated) sweep: the stimulus and the spikes it evoked."""

    sweep_number: int
    stimulus_name: str
    current_pa: np.ndarray  # (samples,) stimulus current in pA
    sampling_rate_hz: float
    spike_times_s: np.ndarray  # (spikes,) seconds from the sweep start


@dataclass
class BinnedSweep:
    """A sweep at one bin size: mean current (pA) and firing rate (spikes/ms) per bin."""

    sweep_number: int
    stimulus_name: str
    current: np.ndarray
    rate: np.ndarray


@dataclass
class ProcessedCell:
    """All binned sweeps of a cell, keyed by bin size (ms)."""

    cell_id: int
    max_firing_rate: float
    max_current: float
    cre_line: str = ""
    sweeps: dict[int, list[BinnedSweep]] = field(default_factory=dict)

    def sweeps_at(self, bin_size: int, stimulus_name: str | None = None, source: str = "") -> list[BinnedSweep]:
        """Sweeps at ``bin_size`` (optionally only one stimulus), or a NeurodynError if it is absent."""
        if bin_size not in self.sweeps:
            raise NeurodynError(f"{source or f'cell {self.cell_id}'}: no sweeps binned at {bin_size} ms "
                                f"(has {sorted(self.sweeps)})")
        sweeps = self.sweeps[bin_size]
        return sweeps if stimulus_name is None else [s for s in sweeps if s.stimulus_name == stimulus_name]


def bin_sweep(sweep: RawSweep, bin_size: int) -> BinnedSweep:
    """Mean current and spike count / bin size in consecutive whole bins (a trailing partial bin is dropped)."""
    bin_size = check_bin_size(bin_size, PROCESSED_BIN_SIZES)
    samples_per_bin = sweep.sampling_rate_hz * bin_size / 1000.0
    n_bins = int(len(sweep.current_pa) // samples_per_bin)
    # Sample k lies in bin floor(k / samples_per_bin); this also works for non-integer samples per bin.
    sample_bin = np.floor(np.arange(len(sweep.current_pa)) / samples_per_bin).astype(int)
    keep = sample_bin < n_bins
    current = np.bincount(sample_bin[keep], weights=sweep.current_pa[keep], minlength=n_bins).astype(float)
    current /= np.maximum(np.bincount(sample_bin[keep], minlength=n_bins), 1)
    edges_s = np.arange(n_bins + 1) * bin_size / 1000.0
    counts, _ = np.histogram(sweep.spike_times_s, bins=edges_s)
    return BinnedSweep(sweep.sweep_number, sweep.stimulus_name, current, counts / float(bin_size))


def max_firing_rate(sweeps: list[RawSweep]) -> float:
    """Maximum instantaneous rate, ``max 1 / ISI`` over all sweeps, in spikes/ms (0 without any ISI)."""
    rates = [1.0 / (np.diff(np.sort(s.spike_times_s)) * 1000.0).min() for s in sweeps
             if len(s.spike_times_s) > 1 and np.diff(np.sort(s.spike_times_s)).min() > 0]
    return float(max(rates, default=0.0))


def process_cell(cell_id: int, sweeps: list[RawSweep], cre_line: str = "",
                 bin_sizes=PROCESSED_BIN_SIZES) -> ProcessedCell:
    """Bin every sweep at every bin size and record the cell's max firing rate and max |current|."""
    unknown = sorted({s.stimulus_name for s in sweeps} - set(STIMULUS_NAMES))
    if unknown:
        raise NeurodynError(f"cell {cell_id}: unknown stimulus names {unknown}; expected {list(STIMULUS_NAMES)}")
    return ProcessedCell(
        cell_id=int(cell_id),
        max_firing_rate=max_firing_rate(sweeps),
        max_current=float(max((np.abs(s.current_pa).max() for s in sweeps if len(s.current_pa)), default=0.0)),
        cre_line=cre_line or "",
        sweeps={int(b): [bin_sweep(s, b) for s in sweeps] for b in bin_sizes},
    )


def processed_path(data_dir: str | os.PathLike, cell_id: int) -> Path:
    """Where a processed cell lives: ``{data_dir}/processed_data/processed_I_and_firing_rate_{id}.h5``."""
    return Path(data_dir) / "processed_data" / f"processed_I_and_firing_rate_{cell_id}.h5"


def write_processed(path: str | os.PathLike, cell: ProcessedCell) -> None:
    """Write a processed cell atomically (layout in the module docstring)."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(cell_id=cell.cell_id, max_firing_rate=cell.max_firing_rate,
                           max_current=cell.max_current, cre_line=cell.cre_line, format_version=FORMAT_VERSION)
            for bin_size, sweeps in cell.sweeps.items():
                for s in sweeps:
                    group = f.create_group(f"bin_{bin_size}/sweep_{s.sweep_number}")
                    group.attrs.update(stimulus_name=s.stimulus_name, sweep_number=s.sweep_number)
                    group.create_dataset("current", data=np.asarray(s.current, dtype=np.float64))
                    group.create_dataset("rate", data=np.asarray(s.rate, dtype=np.float64))


def read_processed(path: str | os.PathLike) -> ProcessedCell:
    """Read a processed cell; a missing, corrupt or incomplete file gives a NeurodynError naming it."""
    path = Path(path)
    if not path.exists():
        raise NeurodynError(f"{path}: processed cell file not found (run 'neurodyn gfr preprocess' or "
                            "'neurodyn gfr simulate' first)")
    try:
        with h5py.File(path, "r") as f:
            for key in ("cell_id", "max_firing_rate", "max_current"):
                if key not in f.attrs:
                    raise NeurodynError(f"{path}: missing file attribute '{key}'")
            cell = ProcessedCell(int(f.attrs["cell_id"]), float(f.attrs["max_firing_rate"]),
                                 float(f.attrs["max_current"]), str(f.attrs.get("cre_line", "")))
            for bin_name, bin_group in f.items():
                if not bin_name.startswith("bin_"):
                    continue
                sweeps = []
                for sweep_name, g in bin_group.items():
                    where = f"{path}: '{bin_name}/{sweep_name}'"
                    if "current" not in g or "rate" not in g or "stimulus_name" not in g.attrs:
                        raise NeurodynError(f"{where} needs datasets 'current', 'rate' and attribute 'stimulus_name'")
                    current, rate = g["current"][()], g["rate"][()]
                    if current.shape != rate.shape or current.ndim != 1:
                        raise NeurodynError(f"{where}: 'current' {current.shape} and 'rate' {rate.shape} must be "
                                            "1-D of one length")
                    sweeps.append(BinnedSweep(int(g.attrs.get("sweep_number", sweep_name.split("_")[-1])),
                                              str(g.attrs["stimulus_name"]), current, rate))
                cell.sweeps[int(bin_name[4:])] = sorted(sweeps, key=lambda s: s.sweep_number)
    except NeurodynError:
        raise
    except (OSError, KeyError, ValueError) as error:
        raise NeurodynError(f"{path}: not a readable processed-cell h5 file ({error})")
    return cell


def read_cell_ids(path: str | os.PathLike) -> tuple[list[int], dict[int, str]]:
    """Cell ids from a CSV (a ``cell_id`` or ``specimen_id`` column, or one header-less column).

    Returns the ids in file order and any cre lines given in a ``cre_line``/``cre-line`` column.
    """
    import pandas as pd

    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str)
    except FileNotFoundError:
        raise NeurodynError(f"{path}: cell-id CSV not found")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise NeurodynError(f"{path}: not a readable CSV file ({error})")
    column = next((c for c in ("cell_id", "specimen_id", "id") if c in table.columns), None)
    if column is None:
        if len(table.columns) != 1:
            raise NeurodynError(f"{path}: expected a 'cell_id' column, found columns {list(table.columns)}")
        table = pd.read_csv(path, header=None, dtype=str)
        column = table.columns[0]
    ids = []
    for row, value in enumerate(table[column], start=2):
        try:
            ids.append(int(str(value).strip()))
        except ValueError:
            raise NeurodynError(f"{path}: row {row} of column '{column}' is {value!r}; expected an integer cell id")
    cre_column = next((c for c in ("cre_line", "cre-line") if c in table.columns), None)
    cre = {} if cre_column is None else {i: str(c) for i, c in zip(ids, table[cre_column]) if isinstance(c, str)}
    return ids, cre


def write_cell_ids(path: str | os.PathLike, cell_ids: list[int], cre_lines: dict[int, str] | None = None) -> None:
    """Write a ``cell_id,cre_line`` CSV atomically."""
    cre_lines = cre_lines or {}
    lines = ["cell_id,cre_line"] + [f"{i},{cre_lines.get(i, '')}" for i in cell_ids]
    write_text_atomic(path, "\n".join(lines) + "\n")
