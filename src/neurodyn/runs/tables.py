"""The CSV logs of a run (``train_log.csv``, ``pbt_log.csv``, ``hp_history.csv``): one writer."""

from __future__ import annotations

import csv
import io
from typing import Any, Iterable


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
