"""AutoLFADS runs end to end on the embedded engine: outputs, exploit, NaN workers, Duration, resume."""

import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from neurodyn.cli.main import main
from neurodyn.config import LfadsConfig, load_run_config
from neurodyn.data.seed_format import read_dataset, split_trials, write_dataset
from neurodyn.pbt import engines
from neurodyn.pbt.engines import WorkerData, WorkerJob, run_worker_generation
from neurodyn.runs.checkpoint import decode_state
from neurodyn.pbt.run import run_pbt
from neurodyn.synth.lorenz_spikes import make_lorenz_spikes

import pbt_helpers
from pbt_helpers import TINY_RUN, check_results, write_tiny_dataset


def write_config(folder: Path, **overrides) -> Path:
    """The tiny config on the embedded engine, which this file tests (the default engine is the
    population's: tests/test_pbt_population_engine.py)."""
    return pbt_helpers.write_config(folder, **{"engine": "embedded", **overrides})

ROOT = Path(__file__).resolve().parents[1]


def _split(data_path):
    dataset = read_dataset(data_path)
    train_idx, valid_idx = split_trials(dataset.num_trials, 0.2, 0, dataset.condition)
    return dataset.data[train_idx], dataset.data[valid_idx]


def test_embedded_run_with_two_processes_writes_every_output(tmp_path):
    data = write_tiny_dataset(tmp_path)
    config = write_config(tmp_path, max_processes=2)
    assert main(["run", str(config), "--data", str(data), "--out", str(tmp_path / "res"), "--no-progress"]) == 0
    check_results(tmp_path / "res", "tiny", num_workers=3, generations=2)


def test_data_defaults_to_run_name_beside_the_config(tmp_path, capsys):
    write_tiny_dataset(tmp_path, "other_data.h5")
    config = write_config(tmp_path)
    assert main(["run", str(config), "--out", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert "tiny_data.h5" in err and "other_data.h5" in err


def test_exploit_copies_weights_optimizer_state_and_hyperparameters(tmp_path):
    train, valid = _split(write_tiny_dataset(tmp_path))
    base = LfadsConfig(**{k: v for k, v in TINY_RUN.items() if k in LfadsConfig.model_fields}).model_dump()
    source = run_worker_generation(WorkerJob(1, 0, {**base, "seed": 1, "learning_rate_init": 0.01}, None, 2, 0),
                                   WorkerData(train, valid))
    copied = {**base, "seed": 0, "learning_rate_init": 0.002, "keep_ratio": 0.55, "kl_ic_weight": 3e-4}
    result = run_worker_generation(WorkerJob(0, 1, copied, source.state, 0, 0), WorkerData(train, valid))
    before, after = decode_state(source.state), decode_state(result.state)
    for name, tensor in before["model"].items():
        torch.testing.assert_close(after["model"][name], tensor, msg=name)
    assert after["adam"]["steps"] == before["adam"]["steps"] > 0
    for a, b in zip(before["adam"]["exp_avg"], after["adam"]["exp_avg"], strict=True):
        torch.testing.assert_close(a, b)
    assert after["learning_rate"] == 0.002
    assert after["config"]["keep_ratio"] == 0.55 and after["config"]["kl_ic_weight"] == 3e-4
    assert after["epoch"] == before["epoch"] == 2  # training continues the copied history


def test_run_copies_and_explores_within_the_range(tmp_path):
    data = write_tiny_dataset(tmp_path)
    config = load_run_config(write_config(tmp_path, num_workers=4, max_generations=3, keep_ratio={
        "explore_range": [0.4, 0.6], "init_sample_mode": "rand", "explore_param": 0.9}))
    run_pbt(config, data, tmp_path / "res", progress=False, echo=lambda line: None)
    rows = list(csv.DictReader((tmp_path / "res" / "tiny" / "pbt_log.csv").open()))
    assert all(0.4 <= float(r["keep_ratio"]) <= 0.6 for r in rows)
    by_key = {(int(r["generation"]), int(r["worker"])): r for r in rows}
    copied = [r for r in rows if r["copied_from"] != ""]
    assert copied, "a 4-worker tournament over 2 rounds should copy at least once"
    for row in copied:
        g, source = int(row["generation"]), int(row["copied_from"])
        parent = by_key[(g - 1, source)]
        assert float(parent["metric"]) <= float(by_key[(g - 1, int(row["worker"]))]["metric"])


def test_a_diverged_worker_is_replaced_and_the_run_goes_on(tmp_path, monkeypatch):
    data = write_tiny_dataset(tmp_path)
    real = engines.run_worker_generation

    def diverging(job, data, device=None):
        result = real(job, data, device)
        if job.worker == 0 and job.generation == 0:
            result.metric = math.nan
        return result

    monkeypatch.setattr(engines, "run_worker_generation", diverging)
    lines = []
    result = run_pbt(load_run_config(write_config(tmp_path)), data, tmp_path / "res", progress=False,
                     echo=lines.append)
    rows = list(csv.DictReader((tmp_path / "res" / "tiny" / "pbt_log.csv").open()))
    assert any("diverged and were replaced" in line for line in lines)
    second = [r for r in rows if r["generation"] == "1" and r["worker"] == "0"][0]
    assert second["copied_from"] in ("1", "2")
    assert math.isfinite(result.best_metric)
    check_results(tmp_path / "res", "tiny", 3, 2)


def test_duration_stops_cleanly_and_still_exports_the_best_model(tmp_path):
    data = write_tiny_dataset(tmp_path)
    lines = []
    result = run_pbt(load_run_config(write_config(tmp_path, max_generations=50, Duration=0.0001)), data,
                     tmp_path / "res", progress=False, echo=lines.append)
    assert result.generations == 1 and "Duration" in result.finished
    assert any("exporting the best model so far" in line for line in lines)
    check_results(tmp_path / "res", "tiny", 3, 1)


def test_a_rerun_of_a_finished_run_changes_nothing_and_a_changed_config_is_refused(tmp_path, capsys):
    data = write_tiny_dataset(tmp_path)
    config = write_config(tmp_path)
    args = ["run", str(config), "--data", str(data), "--out", str(tmp_path / "res"), "--no-progress"]
    assert main(args) == 0
    log = (tmp_path / "res" / "tiny" / "pbt_log.csv").read_text()
    assert main(args) == 0
    assert (tmp_path / "res" / "tiny" / "pbt_log.csv").read_text() == log
    write_config(tmp_path, max_generations=3, epochs_per_generation=1)
    assert main(args) == 2
    assert "another config" in capsys.readouterr().err


def test_resume_after_sigkill_loses_no_completed_generation(tmp_path):
    data = write_tiny_dataset(tmp_path)
    config = write_config(tmp_path, max_generations=5, epochs_per_generation=3)
    command = [sys.executable, "-m", "neurodyn.cli.main", "run", str(config), "--data", str(data),
               "--out", str(tmp_path / "res"), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    state_file = tmp_path / "res" / "tiny" / ".state" / "pbt_state.json"
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if state_file.is_file() and '"generation": 2' in state_file.read_text():
            break
        time.sleep(0.05)
    assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read().decode()}"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "res" / "pbt_best_model").exists()
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "res" / "tiny" / "pbt_log.csv").read_text())))
    pairs = [(int(r["generation"]), int(r["worker"])) for r in rows]
    assert sorted(pairs) == [(g, w) for g in range(5) for w in range(3)], "each generation exactly once"
    assert "resuming after generation" in (tmp_path / "res" / "tiny" / "run.log").read_text()
    check_results(tmp_path / "res", "tiny", 3, 5)


def test_unlimited_explore_of_keep_prob_finishes_the_run(tmp_path):
    data = write_tiny_dataset(tmp_path)
    config = load_run_config(write_config(tmp_path, num_workers=4, max_generations=4, epochs_per_generation=1,
                                          keep_prob={"explore_range": [0.9, 1.0], "init_sample_mode": 1.0,
                                                     "explore_param": 0.9, "limit_explore": False}))
    lines = []
    result = run_pbt(config, data, tmp_path / "res", progress=False, echo=lines.append)
    assert result.generations == 4
    rows = list(csv.DictReader((tmp_path / "res" / "tiny" / "pbt_log.csv").open()))
    assert all(0 < float(r["keep_prob"]) <= 1.0 for r in rows)
    check_results(tmp_path / "res", "tiny", 4, 4)


def test_a_copy_with_nothing_explored_trains_differently_from_its_source(tmp_path):
    train, valid = _split(write_tiny_dataset(tmp_path))
    base = LfadsConfig(**{k: v for k, v in TINY_RUN.items() if k in LfadsConfig.model_fields}).model_dump()
    start = run_worker_generation(WorkerJob(1, 0, {**base, "seed": 1}, None, 1, 0), WorkerData(train, valid))
    source = run_worker_generation(WorkerJob(1, 1, {**base, "seed": 1}, start.state, 2, 0), WorkerData(train, valid))
    copier = run_worker_generation(WorkerJob(0, 1, {**base, "seed": 0}, start.state, 2, 0), WorkerData(train, valid))
    a, b = decode_state(source.state)["model"], decode_state(copier.state)["model"]
    assert any(not torch.equal(a[name], b[name]) for name in a), "the copier replayed its source's random stream"
    again = run_worker_generation(WorkerJob(0, 1, {**base, "seed": 0}, start.state, 2, 0), WorkerData(train, valid))
    c = decode_state(again.state)["model"]
    assert all(torch.equal(b[name], c[name]) for name in b), "a worker's stream is reproducible"


def test_exploring_other_keys_keeps_the_decayed_learning_rate(tmp_path):
    from neurodyn.train.trainer import LfadsTrainer

    train, valid = _split(write_tiny_dataset(tmp_path))
    base = {k: v for k, v in TINY_RUN.items() if k in LfadsConfig.model_fields}
    trainer = LfadsTrainer(LfadsConfig(**base), train, valid)
    trainer.learning_rate = 1e-4  # as if the plateau schedule had decayed it
    trainer.set_hyperparameters(keep_ratio=0.5, kl_ic_weight=1e-3)
    assert trainer.learning_rate == 1e-4
    trainer.set_hyperparameters(learning_rate_init=3e-3)
    assert trainer.learning_rate == 3e-3


def test_a_changed_data_file_is_refused(tmp_path, capsys):
    data = write_tiny_dataset(tmp_path)
    config = write_config(tmp_path, max_generations=1, epochs_per_generation=1)
    args = ["run", str(config), "--data", str(data), "--out", str(tmp_path / "res"), "--no-progress"]
    assert main(args) == 0
    from neurodyn.synth.lorenz_spikes import make_lorenz_spikes
    from neurodyn.data.seed_format import write_dataset

    write_dataset(data, make_lorenz_spikes(num_neurons=8, num_samples=12, num_conditions=4, trials_per_condition=8,
                                           seed=5))
    assert main(args) == 2
    assert "content has changed since" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_engine_processes_ignore_ctrl_c_and_no_longer_block_it_once_started():
    """Once started, an engine process ignores SIGINT and has unblocked it (it was blocked while it
    started, see the next test); the starting process keeps its own mask."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    pool = engines.start_process_pool(None, 1, [None])
    try:
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
        child_mask = pool.apply(signal.pthread_sigmask, (signal.SIG_BLOCK, []))
        child_handler = pool.apply(signal.getsignal, (signal.SIGINT,))
    finally:
        pool.terminate()
        pool.join()
    assert signal.SIGINT not in child_mask
    assert child_handler == signal.SIG_IGN


def test_engine_processes_are_started_with_ctrl_c_blocked(monkeypatch):
    """What the processes inherit: the pool is made while SIGINT is blocked (so one that arrives while
    they import is held, not delivered to them), and the mask is restored afterwards."""
    import queue

    seen = {}

    class Context:
        Queue = queue.Queue

        @staticmethod
        def Pool(processes, initializer, initargs):
            seen["mask"] = signal.pthread_sigmask(signal.SIG_BLOCK, [])
            return "pool"

    monkeypatch.setattr(engines, "get_context", lambda method: Context)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert engines.start_process_pool(None, 1, [None]) == "pool"
    assert signal.SIGINT in seen["mask"] and signal.SIGINT not in before
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


def test_ctrl_c_during_a_run_prints_one_line_and_keeps_the_completed_generations(tmp_path):
    data = write_tiny_dataset(tmp_path)
    config = write_config(tmp_path, max_generations=30, epochs_per_generation=2, max_processes=2)
    command = [sys.executable, "-m", "neurodyn.cli.main", "run", str(config), "--data", str(data),
               "--out", str(tmp_path / "res"), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    state_file = tmp_path / "res" / "tiny" / ".state" / "pbt_state.json"
    # A session of its own, so the signal can go to the whole group, as a terminal's Ctrl-C does.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
        if state_file.is_file() and '"generation": 1' in state_file.read_text():
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("neurodyn: interrupted during generation")
    assert json.loads((tmp_path / "res" / "run.json").read_text())["status"] == "interrupted"
    assert json.loads(state_file.read_text())["generation"] >= 1


def test_co_dim_auto_searches_the_controllers_keys_only_when_the_data_give_a_controller(tmp_path):
    # Dense data: co_dim auto -> a controller, and the default search includes its keys; 1 of 10 neurons
    # observed per bin: no controller, and the search leaves its keys out (they would do nothing).
    searched = {}
    for name, keep in (("dense", None), ("sparse", 1)):
        folder = tmp_path / name
        folder.mkdir()
        data = folder / "tiny_data.h5"
        write_dataset(data, make_lorenz_spikes(num_neurons=10, num_samples=12, num_conditions=4, trials_per_condition=8,
                                               keep=keep, seed=1))
        config = write_config(folder, num_workers=2, max_generations=1)
        assert main(["run", str(config), "--data", str(data), "--out", str(folder / "res"), "--no-progress"]) == 0
        log = (folder / "res" / "tiny" / "run.log").read_text()
        searching = next(line for line in log.splitlines() if "searching " in line)
        searched[name] = searching.split("searching ")[1].split(" (")[0].split(", ")
        best = yaml.safe_load((folder / "res" / "pbt_best_model" / "config.yaml").read_text())
        assert best["co_dim"] == (4 if keep is None else 0)
    assert {"kl_co_weight", "l2_con_scale"} <= set(searched["dense"])
    assert not {"kl_co_weight", "l2_con_scale"} & set(searched["sparse"])
    assert set(searched["dense"]) - set(searched["sparse"]) == {"kl_co_weight", "l2_con_scale"}
