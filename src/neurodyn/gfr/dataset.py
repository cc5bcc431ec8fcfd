"""The fitted-cell dataset ``gfr_dataset.json`` and loading GFR models from it.

The file is a JSON list of records, one per (cell, bin size, activation bin size), in the layout of
the published dataset (``params`` as the published model's ``get_params()`` gives it)::

    {"cell_id": 566517779, "cre-line": "Sst-IRES-Cre" | null, "bin_size": 10, "actv_bin_size": 20,
     "val_evr": 0.81, "test_evr": 0.78, "train_loss": 0.21, "test_loss": 0.25,
     "params": {"a": [[a_1, ..., a_n]], "b": [[b_1, ..., b_n]], "ds": [l_1, ..., l_n], "bin_size": 10,
                "g": {"max_current": [sigma], "max_firing_rate": [gamma], "poly_coeff": [[a_0, ..., a_d]],
                      "b": [threshold], "bin_size": 20}}}

Reading also accepts the flat ``params`` neurodyn wrote before (``a``, ``b``, ``poly_coeff`` flat lists,
the activation values bare numbers); writing always uses the published layout.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from neurodyn.data.atomic import write_text_atomic
from neurodyn.errors import NeurodynError
from neurodyn.gfr.model import GFR, parse_params

RECORD_KEYS = ("cell_id", "cre-line", "bin_size", "actv_bin_size", "val_evr", "test_evr", "train_loss",
               "test_loss", "params")
SCORE_KEYS = ("val_evr", "test_evr", "train_loss", "test_loss")


def _record_key(record: dict) -> tuple[int, int, int]:
    return int(record["cell_id"]), int(record["bin_size"]), int(record["actv_bin_size"])


def _record_source(source: str, index: int, record: dict) -> str:
    return f"{source}: record {index} (cell {record.get('cell_id')})"


def validate_records(records, source: str) -> list[dict]:
    """Check the dataset's structure; a NeurodynError names the first bad record (and cell) and key.

    Each record's ``params`` is read too (published or flat layout, see ``parse_params``), and its bin
    sizes must agree with the record's ``bin_size`` and ``actv_bin_size``.
    """
    if not isinstance(records, list):
        raise NeurodynError(f"{source}: expected a JSON list of cell records, got {type(records).__name__}")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise NeurodynError(f"{source}: record {index} is {type(record).__name__}, expected an object")
        where = _record_source(source, index, record)
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise NeurodynError(f"{where} lacks keys {missing}")
        try:
            _record_key(record)
        except (TypeError, ValueError):
            raise NeurodynError(f"{where}: cell_id, bin_size and actv_bin_size must be integers")
        cell = parse_params(record["params"], where)
        for key, inner, value in (("bin_size", "bin_size", cell.bin_size),
                                  ("actv_bin_size", "g.bin_size", cell.activation_bin_size)):
            if int(record[key]) != value:
                raise NeurodynError(f"{where}: '{key}' is {record[key]} but GFR parameter '{inner}' is {value}")
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
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def published_record(record: dict, source: str = "record") -> dict:
    """A record as the published dataset writes it: its nine keys (others are dropped), integers and
    floats (NaN as null), and ``params`` in the published layout whatever layout it came in."""
    cre_line = record["cre-line"]
    if isinstance(cre_line, float) and not math.isfinite(cre_line):
        cre_line = None
    cell_id, bin_size, actv_bin_size = _record_key(record)
    out = {"cell_id": cell_id, "cre-line": cre_line, "bin_size": bin_size, "actv_bin_size": actv_bin_size}
    try:
        out.update({k: _json_number(record[k]) for k in SCORE_KEYS})
    except (TypeError, ValueError):
        raise NeurodynError(f"{source}: {', '.join(SCORE_KEYS)} must be numbers or null, got "
                            f"{[record[k] for k in SCORE_KEYS]}")
    out["params"] = parse_params(record["params"], source).published()
    return out


def write_dataset_json(path: str | os.PathLike, records: list[dict], merge: bool = True) -> list[dict]:
    """Write records atomically in the published layout; with ``merge`` keep the records of an existing
    file that no new record replaces (a record replaces an old one with the same cell_id, bin_size and
    actv_bin_size). Old records in the flat layout are rewritten in the published one.

    Returns the records written, sorted by (bin_size, actv_bin_size, cell_id).
    """
    path = Path(path)
    validate_records(records, "new records")
    combined = {}
    if merge and path.exists():
        combined = {_record_key(r): published_record(r, _record_source(str(path), i, r))
                    for i, r in enumerate(read_dataset_json(path))}
    combined.update({_record_key(r): published_record(r, _record_source("new records", i, r))
                     for i, r in enumerate(records)})
    written = [combined[k] for k in sorted(combined, key=lambda k: (k[1], k[2], k[0]))]
    write_text_atomic(path, json.dumps(written, indent=1) + "\n")
    return written


def df_from_json(json_dataset: list[dict]) -> dict[tuple[int, int], pd.DataFrame]:
    """One DataFrame per ``(bin_size, activation_bin_size)`` present, a row per cell.

    ``json_dataset`` is the list ``json.load`` gives for a ``gfr_dataset.json`` file. Columns: cell_id,
    cre-line, bin_size, actv_bin_size, val_evr, test_evr, train_loss, test_loss, params (the record's
    parameter dict as stored, published or flat layout). Every record's ``params`` is checked here, so a
    malformed one is reported (record, cell and key) before any model is built.
    """
    records = validate_records(json_dataset, "GFR dataset")
    groups: dict[tuple[int, int], list[dict]] = {}
    for record in records:
        groups.setdefault((int(record["bin_size"]), int(record["actv_bin_size"])), []).append(record)
    columns = list(RECORD_KEYS)
    return {pair: pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=columns).reset_index(drop=True)
            for pair, rows in sorted(groups.items())}


def load_gfr_model(dataset, cell_id: int, bin_size: int, activation_bin_size: int, device: str = "cpu") -> GFR:
    """The GFR of one cell from ``df_from_json(...)`` output (a raw record list is accepted too).

    The record's ``params`` may be in the published layout or the flat one; a malformed one raises a
    NeurodynError naming the cell and the key.
    """
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
