"""The fitted-cell dataset ``gfr_dataset.json`` and loading GFR models from it.

The file is a JSON list of records, one per (cell, bin size, activation bin size)::

    {"cell_id": 566517779, "cre-line": "Sst-IRES-Cre" | null, "bin_size": 10, "actv_bin_size": 20,
     "val_evr": 0.81, "test_evr": 0.78, "train_loss": 0.21, "test_loss": 0.25,
     "params": {"a": [...], "b": [...], "ds": [...], "bin_size": 10,
                "g": {"max_current": ..., "max_firing_rate": ..., "poly_coeff": [...], "b": ..., "bin_size": 20}}}
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from neurodyn.data.atomic import write_text_atomic
from neurodyn.errors import NeurodynError
from neurodyn.gfr.model import GFR

RECORD_KEYS = ("cell_id", "cre-line", "bin_size", "actv_bin_size", "val_evr", "test_evr", "train_loss",
               "test_loss", "params")


def _record_key(record: dict) -> tuple[int, int, int]:
    return int(record["cell_id"]), int(record["bin_size"]), int(record["actv_bin_size"])


def validate_records(records, source: str) -> list[dict]:
    """Check the dataset's structure; a NeurodynError names the first bad record and key."""
    if not isinstance(records, list):
        raise NeurodynError(f"{source}: expected a JSON list of cell records, got {type(records).__name__}")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise NeurodynError(f"{source}: record {index} is {type(record).__name__}, expected an object")
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise NeurodynError(f"{source}: record {index} (cell {record.get('cell_id')}) lacks keys {missing}")
        try:
            _record_key(record)
        except (TypeError, ValueError):
            raise NeurodynError(f"{source}: record {index}: cell_id, bin_size and actv_bin_size must be integers")
    return records


def read_dataset_json(path: str | os.PathLike) -> list[dict]:
    """Records of a ``gfr_dataset.json`` file."""
    path = Path(path)
    try:
        records = json.loads(path.read_text())
    except FileNotFoundError:
        raise NeurodynError(f"{path}: GFR dataset file not found")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise NeurodynError(f"{path}: not valid JSON ({error})")
    return validate_records(records, str(path))


def _json_number(value):
    # JSON has no NaN; a cell whose EVR is undefined is written as null.
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_dataset_json(path: str | os.PathLike, records: list[dict], merge: bool = True) -> list[dict]:
    """Write records atomically; with ``merge`` keep records of an existing file not replaced by new ones.

    A record replaces an old one with the same (cell_id, bin_size, actv_bin_size). Returns what was written.
    """
    path = Path(path)
    validate_records(records, "new records")
    combined = {}
    if merge and path.exists():
        combined = {_record_key(r): r for r in read_dataset_json(path)}
    combined.update({_record_key(r): {k: _json_number(v) for k, v in r.items()} for r in records})
    written = [combined[k] for k in sorted(combined, key=lambda k: (k[1], k[2], k[0]))]
    write_text_atomic(path, json.dumps(written, indent=1) + "\n")
    return written


def df_from_json(json_dataset: list[dict]) -> dict[tuple[int, int], pd.DataFrame]:
    """One DataFrame per ``(bin_size, activation_bin_size)``, a row per cell.

    Columns: cell_id, cre-line, val_evr, test_evr, train_loss, test_loss, params (the parameter dict).
    """
    records = validate_records(json_dataset, "GFR dataset")
    groups: dict[tuple[int, int], list[dict]] = {}
    for record in records:
        groups.setdefault((int(record["bin_size"]), int(record["actv_bin_size"])), []).append(record)
    columns = ["cell_id", "cre-line", "val_evr", "test_evr", "train_loss", "test_loss", "params"]
    return {pair: pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=columns).reset_index(drop=True)
            for pair, rows in sorted(groups.items())}


def load_gfr_model(dataset, cell_id: int, bin_size: int, activation_bin_size: int, device: str = "cpu") -> GFR:
    """The GFR of one cell from ``df_from_json(...)`` output (a raw record list is accepted too)."""
    if isinstance(dataset, list):
        dataset = df_from_json(dataset)
    pair = (int(bin_size), int(activation_bin_size))
    if pair not in dataset:
        raise NeurodynError(f"no GFR models for bin size {bin_size} ms and activation bin size "
                            f"{activation_bin_size} ms; the dataset has pairs {sorted(dataset)}")
    df = dataset[pair]
    rows = df[df["cell_id"].astype(int) == int(cell_id)]
    if rows.empty:
        raise NeurodynError(f"cell {cell_id} is not in the dataset for ({bin_size}, {activation_bin_size}) ms "
                            f"({len(df)} cells there)")
    return GFR.from_params(rows.iloc[0]["params"], device=device, source=f"cell {cell_id}")
