"""The PBT progress figure: best metric per generation and each searched hyperparameter over time."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from neurodyn.config import SearchSpec  # noqa: E402
from neurodyn.data.atomic import atomic_path  # noqa: E402
from neurodyn.pbt.search_space import is_log_scaled  # noqa: E402


def plot_pbt_progress(log_rows: list[dict[str, Any]], search_space: dict[str, SearchSpec], path: str | Path) -> None:
    """Write a PNG: top panel the best (and every worker's) smoothed validation NLL per generation,
    then one panel per hyperparameter with every worker's value per generation (the best in black)."""
    generations = sorted({row["generation"] for row in log_rows})
    best_rows = []
    for g in generations:
        finite = [r for r in log_rows if r["generation"] == g and math.isfinite(r["metric"])]
        best_rows.append(min(finite, key=lambda r: r["metric"]) if finite else None)
    panels = 1 + len(search_space)
    columns = 2 if panels > 3 else 1
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 2.6 * rows), squeeze=False)
    axes = axes.ravel()
    metric_axis = axes[0]
    metric_axis.scatter([r["generation"] for r in log_rows], [r["metric"] for r in log_rows], s=8, color="0.7",
                        label="workers")
    metric_axis.plot([g for g, r in zip(generations, best_rows) if r], [r["metric"] for r in best_rows if r],
                     "k.-", label="best")
    metric_axis.set_ylabel("smoothed valid NLL")
    metric_axis.set_title("population metric")
    metric_axis.legend(fontsize=8)
    for axis, (key, spec) in zip(axes[1:], search_space.items()):
        axis.scatter([r["generation"] for r in log_rows], [r[key] for r in log_rows], s=8, color="tab:blue", alpha=0.5)
        axis.plot([g for g, r in zip(generations, best_rows) if r], [r[key] for r in best_rows if r], "k.-")
        if is_log_scaled(spec):
            axis.set_yscale("log")
        axis.set_title(key, fontsize=9)
    for axis in axes[panels:]:
        axis.axis("off")
    for axis in axes[:panels]:
        axis.set_xlabel("generation")
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=90)
    plt.close(figure)
