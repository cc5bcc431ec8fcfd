"""The CSV logs of a run (``train_log.csv``, ``pbt_log.csv``, ``hp_history.csv``): one writer, one reader."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from neurodyn.runs.layout import PBT_LOG_FILE, TrainLayout


def rows_to_csv(rows: Iterable[dict[str, Any]]) -> str:
    """Rows as CSV text; the header is every key in order of first appearance (empty when a row lacks one)."""
    rows = list(rows)
    buffer = io.StringIO()
    if rows:
        fields = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def read_csv_columns(path: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """The columns of a run's CSV log as float arrays (NaN where a cell is not a number); None when the
    file is absent or empty."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (FileNotFoundError, IsADirectoryError):
        return None
    if not rows:
        return None

    def number(text: str) -> float:
        try:
            return float(text)
        except (TypeError, ValueError):
            return float("nan")

    return {column: np.array([number(row[column]) for row in rows]) for column in rows[0]}


def find_training_logs(output_dir: str | os.PathLike,
                       results_dir: str | os.PathLike | None = None) -> dict[str, dict[str, np.ndarray] | None]:
    """The logs that show how a run trained: ``{"train_log": ..., "pbt_log": ...}`` (each None when absent).

    ``train_log`` is the ``train_log.csv`` of ``output_dir`` (a ``neurodyn train`` folder); ``pbt_log`` is
    the ``pbt_log.csv`` of a ``neurodyn run`` results folder ``results_dir`` (``RESULTS/<run_name>/``),
    used when the folder holds exactly one run.
    """
    pbt_log = None
    if results_dir is not None:
        candidates = sorted(Path(results_dir).glob(f"*/{PBT_LOG_FILE}"))
        if len(candidates) == 1:
            pbt_log = read_csv_columns(candidates[0])
    return {"train_log": read_csv_columns(TrainLayout(output_dir).train_log), "pbt_log": pbt_log}
