"""TensorBoard event files of a run (``tensorboard: true``; needs the optional ``tensorboard`` package).

``neurodyn train`` writes one scalar per column of ``train_log.csv`` and epoch, grouped by what it is
(``epoch_scalars``); ``neurodyn run`` writes, after each generation, every worker's metric and
hyperparameters in the worker's own sub-folder, so TensorBoard draws the workers as runs side by
side, and the population's best so far (``generation_scalars``). The CSV logs stay the record;
the event files are a view of the same numbers while a run goes on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from neurodyn.errors import NeurodynError

# train_log.csv column -> TensorBoard tag; a column not listed goes under "other/".
EPOCH_TAGS = {
    "loss": "loss/train_total",
    "train_nll": "loss/train_nll",
    "valid_nll": "loss/valid_nll",
    "valid_nll_smoothed": "loss/valid_nll_smoothed",
    "kl_ic": "regularisation/kl_ic",
    "kl_co": "regularisation/kl_co",
    "l2": "regularisation/l2",
    "kl_ramp": "ramps/kl",
    "l2_ramp": "ramps/l2",
    "learning_rate": "optimiser/learning_rate",
    "seconds": "time/epoch_seconds",
}
# pbt_log.csv columns that are not hyperparameters.
GENERATION_COLUMNS = ("generation", "worker", "metric", "copied_from", "seconds")


def epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The scalars of one ``train_log.csv`` row, by TensorBoard tag (the epoch itself is the step)."""
    return {EPOCH_TAGS.get(key, f"other/{key}"): float(value) for key, value in row.items()
            if key != "epoch" and isinstance(value, (int, float))}


def generation_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The scalars of one ``pbt_log.csv`` row (one worker, one generation), by tag: its smoothed validation
    NLL and each searched hyperparameter's value in that generation."""
    scalars = {"metric/smoothed_valid_nll": float(row["metric"]), "time/generation_seconds": float(row["seconds"])}
    scalars.update({f"hyperparameters/{key}": float(value) for key, value in row.items()
                    if key not in GENERATION_COLUMNS and isinstance(value, (int, float))})
    return scalars


def require_tensorboard() -> type:
    """torch's ``SummaryWriter`` class; a one-line error when the tensorboard package is missing (checked
    before a run touches its folder)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise NeurodynError("tensorboard: true needs the tensorboard package: pip install 'neurodyn[tensorboard]' "
                            "(or pip install tensorboard), or set tensorboard: false") from None
    return SummaryWriter


def summary_writer(folder: str | Path):
    """A ``SummaryWriter`` writing into ``folder``."""
    return require_tensorboard()(log_dir=str(folder))


class TrainingBoard:
    """The event files of one ``neurodyn train`` run, in ``folder``."""

    def __init__(self, folder: str | Path, writer_factory=summary_writer):
        self.writer = writer_factory(folder)

    def epoch(self, row: dict[str, Any]) -> None:
        """Log one epoch's row (``LfadsTrainer.history``)."""
        for tag, value in epoch_scalars(row).items():
            if math.isfinite(value):
                self.writer.add_scalar(tag, value, int(row["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class PopulationBoard:
    """The event files of one ``neurodyn run``: ``folder/worker_XX/`` per worker and ``folder/population/``."""

    def __init__(self, folder: str | Path, writer_factory=summary_writer):
        self.folder = Path(folder)
        self.writer_factory = writer_factory
        self.writers: dict[str, Any] = {}

    def _writer(self, name: str):
        if name not in self.writers:
            self.writers[name] = self.writer_factory(self.folder / name)
        return self.writers[name]

    def generation(self, rows: list[dict[str, Any]], best_metric: float) -> None:
        """Log one generation: ``rows`` its ``pbt_log.csv`` rows (one per worker), ``best_metric`` the
        population's best smoothed validation NLL so far."""
        for row in rows:
            writer = self._writer(f"worker_{int(row['worker']):02d}")
            for tag, value in generation_scalars(row).items():
                if math.isfinite(value):
                    writer.add_scalar(tag, value, int(row["generation"]))
            writer.flush()
        if rows and math.isfinite(best_metric):
            population = self._writer("population")
            population.add_scalar("metric/best_smoothed_valid_nll", best_metric, int(rows[0]["generation"]))
            population.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
