"""TensorBoard event files (tensorboard: true): what train and run write, read back with TensorBoard's own
reader and compared with the CSV logs; the tags; the one-line error without the package."""

from __future__ import annotations

import csv
import sys

import pytest
import yaml

from neurodyn.cli.main import main
from neurodyn.runs.tensorboard_log import EPOCH_TAGS, PopulationBoard, epoch_scalars, generation_scalars

from pbt_helpers import TINY_RUN, write_tiny_dataset

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

TINY_TRAIN = {k: v for k, v in TINY_RUN.items() if k not in {"num_workers", "epochs_per_generation",
                                                              "max_generations", "max_processes"}}


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the event files in ``folder``: tag -> [(step, value)]."""
    accumulator = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def _csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tags_group_the_logs_columns():
    row = {"epoch": 3, "loss": 2.0, "train_nll": 1.5, "kl_ic": 0.2, "kl_ramp": 0.5, "learning_rate": 1e-3,
           "new_column": 7}
    assert epoch_scalars(row) == {"loss/train_total": 2.0, "loss/train_nll": 1.5, "regularisation/kl_ic": 0.2,
                                  "ramps/kl": 0.5, "optimiser/learning_rate": 1e-3, "other/new_column": 7.0}
    row = {"generation": 2, "worker": 1, "keep_prob": 0.7, "kl_ic_weight": 1e-5, "metric": 0.3, "copied_from": "",
           "seconds": 4.0}
    assert generation_scalars(row) == {"metric/smoothed_valid_nll": 0.3, "time/generation_seconds": 4.0,
                                       "hyperparameters/keep_prob": 0.7, "hyperparameters/kl_ic_weight": 1e-5}


def test_train_writes_every_epochs_losses_terms_ramps_and_learning_rate(tmp_path):
    data = write_tiny_dataset(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**TINY_TRAIN, "max_epochs": 3, "tensorboard": True}))
    out = tmp_path / "run"
    assert main(["train", str(config), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    scalars = _scalars(out / "tensorboard")
    log = _csv(out / "train_log.csv")
    for column, tag in EPOCH_TAGS.items():
        assert [step for step, _ in scalars[tag]] == [int(row["epoch"]) for row in log]
        assert [value for _, value in scalars[tag]] == pytest.approx([float(row[column]) for row in log], rel=1e-6)
    # --overwrite starts a new run: the old event files go with the rest of the old run.
    assert main(["train", str(config), "--data", str(data), "--out", str(out), "--no-progress", "--overwrite"]) == 0
    assert len(_scalars(out / "tensorboard")["loss/train_nll"]) == len(log)


def test_run_writes_each_workers_metric_and_hyperparameters_per_generation(tmp_path):
    data = write_tiny_dataset(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**TINY_RUN, "tensorboard": True}))
    results = tmp_path / "res"
    assert main(["run", str(config), "--data", str(data), "--out", str(results), "--no-progress"]) == 0
    board = results / TINY_RUN["run_name"] / "tensorboard"
    rows = _csv(results / TINY_RUN["run_name"] / "pbt_log.csv")
    for worker in range(TINY_RUN["num_workers"]):
        scalars = _scalars(board / f"worker_{worker:02d}")
        own = [row for row in rows if int(row["worker"]) == worker]
        for tag, column in (("metric/smoothed_valid_nll", "metric"), ("hyperparameters/keep_prob", "keep_prob")):
            assert [step for step, _ in scalars[tag]] == [int(row["generation"]) for row in own]
            assert [value for _, value in scalars[tag]] == pytest.approx([float(row[column]) for row in own], rel=1e-6)
    best = _scalars(board / "population")["metric/best_smoothed_valid_nll"]
    running_best = [min(float(r["metric"]) for r in rows if int(r["generation"]) <= g)
                    for g in range(TINY_RUN["max_generations"])]
    assert [value for _, value in best] == pytest.approx(running_best, rel=1e-6)


def test_a_population_board_skips_a_diverged_workers_nan(tmp_path):
    written = []

    class FakeWriter:
        def __init__(self, folder):
            self.folder = folder

        def add_scalar(self, tag, value, step):
            written.append((self.folder.name, tag, value, step))

        def flush(self):
            pass

        def close(self):
            pass

    board = PopulationBoard(tmp_path, writer_factory=FakeWriter)
    board.generation([{"generation": 0, "worker": 0, "lr": 0.1, "metric": float("nan"), "copied_from": "",
                       "seconds": 1.0}], float("inf"))
    assert ("worker_00", "hyperparameters/lr", 0.1, 0) in written
    assert not [w for w in written if w[1].startswith("metric/")]


def test_without_the_package_the_run_stops_with_one_line_before_writing(tmp_path, monkeypatch, capsys):
    data = write_tiny_dataset(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**TINY_TRAIN, "tensorboard": True}))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    assert main(["train", str(config), "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress"]) != 0
    error = capsys.readouterr().err
    assert "neurodyn[tensorboard]" in error and "Traceback" not in error
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
