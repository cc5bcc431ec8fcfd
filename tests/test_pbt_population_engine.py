"""The population engine (``engine: population``): the same results as the per-worker engine's jobs, and
AutoLFADS runs end to end with it (outputs, a NaN worker replaced, Duration export, resume after SIGKILL)."""

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from neurodyn.config import LfadsConfig, load_run_config
from neurodyn.data.seed_format import read_dataset, split_trials
from neurodyn.errors import NeurodynError
from neurodyn.pbt import population_engine
from neurodyn.pbt.engines import WorkerData, WorkerJob, run_worker_generation
from neurodyn.pbt.population_engine import (PopulationEngine, PopulationLayout, deal_out, measure_worker_bytes,
                                            population_layout, train_population, workers_that_fit)
from neurodyn.pbt.run import run_pbt
from neurodyn.runs.checkpoint import decode_state
from neurodyn.train.trainer import LfadsTrainer

from pbt_helpers import TINY_RUN, check_results, write_config, write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def pytorch_loops(monkeypatch):
    # Compare against the per-worker engine's PyTorch loops (no kernel build in this file).
    monkeypatch.setenv("NEURODYN_COMPILED_KERNELS", "0")


def _worker_data(tmp_path) -> WorkerData:
    dataset = read_dataset(write_tiny_dataset(tmp_path))
    train_idx, valid_idx = split_trials(dataset.num_trials, 0.2, 0, dataset.condition)
    return WorkerData(dataset.data[train_idx], dataset.data[valid_idx])


def _base_config(**overrides) -> dict:
    values = {k: v for k, v in TINY_RUN.items() if k in LfadsConfig.model_fields}
    return LfadsConfig(**{**values, "batch_threads": 1, "co_dim": 2, "con_dim": 5, "ci_enc_dim": 4,
                          "batch_size": 8, **overrides}).model_dump()


def _assert_same_result(result, expected, rel=1e-4):
    assert (result.worker, result.generation) == (expected.worker, expected.generation)
    assert result.metric == pytest.approx(expected.metric, rel=rel)
    assert len(result.history) == len(expected.history)
    for row, reference in zip(result.history, expected.history):
        assert row["valid_nll"] == pytest.approx(reference["valid_nll"], rel=rel)
        assert row["loss"] == pytest.approx(reference["loss"], rel=rel)
    state, reference = decode_state(result.state), decode_state(expected.state)
    assert torch.equal(state["generator"], reference["generator"])
    assert state["epoch"] == reference["epoch"]
    for name, tensor in reference["model"].items():
        torch.testing.assert_close(state["model"][name], tensor, rtol=1e-3, atol=1e-4, msg=name)


def test_population_engine_gives_the_per_worker_results(tmp_path):
    """float32 on both sides, so agreement to rounding (the float64 equality is tested in
    test_population_trainer); two generations, the second with an exploited, explored worker."""
    data = _worker_data(tmp_path)
    configs = [_base_config(seed=w, learning_rate_init=lr, keep_ratio=kr)
               for w, (lr, kr) in enumerate([(4e-3, 0.7), (1e-2, 1.0), (2e-3, 0.5)])]
    jobs = [WorkerJob(w, 0, config, None, 2, 7) for w, config in enumerate(configs)]
    engine = PopulationEngine(data)
    first = list(engine.run(jobs))
    singles = [run_worker_generation(job, data) for job in jobs]
    for result, expected in zip(first, singles):
        _assert_same_result(result, expected)
    # Generation 1: worker 0 copies worker 2 and explores; the others continue their own states.
    explored = {**configs[2], "seed": 0, "learning_rate_init": 3e-3, "kl_ic_weight": 2e-4}
    second_jobs = [WorkerJob(0, 1, explored, singles[2].state, 2, 7),
                   WorkerJob(1, 1, configs[1], singles[1].state, 2, 7),
                   WorkerJob(2, 1, configs[2], singles[2].state, 2, 7)]
    for result, job in zip(engine.run(second_jobs), second_jobs):
        _assert_same_result(result, run_worker_generation(job, data))
    # A result's state is an LfadsTrainer state.
    trainer = LfadsTrainer(LfadsConfig(**configs[1]), data.train, data.valid)
    trainer.load_state_dict(decode_state(first[1].state))
    assert trainer.epoch == 2


def test_populations_in_several_processes_give_the_per_worker_results_in_job_order(tmp_path):
    data = _worker_data(tmp_path)
    configs = [_base_config(seed=w, learning_rate_init=lr, keep_ratio=kr)
               for w, (lr, kr) in enumerate([(4e-3, 0.7), (1e-2, 1.0), (2e-3, 0.5)])]
    jobs = [WorkerJob(w, 0, config, None, 1, 7) for w, config in enumerate(configs)]
    engine = PopulationEngine(data, layout=PopulationLayout(2, 1, (None, None)))
    try:
        results = list(engine.run(jobs))
    finally:
        engine.close()
    assert [result.worker for result in results] == [0, 1, 2]
    for result, job in zip(results, jobs):
        _assert_same_result(result, run_worker_generation(job, data))


def test_a_share_too_large_for_memory_trains_as_several_populations_in_turn(tmp_path):
    data = _worker_data(tmp_path)
    jobs = [WorkerJob(w, 0, _base_config(seed=w, learning_rate_init=lr), None, 1, 7)
            for w, lr in enumerate([4e-3, 1e-2, 2e-3])]
    results = train_population(jobs, data, max_workers=2)  # populations of 2 and 1
    assert [result.worker for result in results] == [0, 1, 2]
    for result, job in zip(results, jobs):
        _assert_same_result(result, run_worker_generation(job, data))


def test_workers_that_fit_in_free_memory():
    assert workers_that_fit(100, 1000) == 8  # 80% of the free memory
    assert workers_that_fit(100, 1000, share=1.0) == 10
    assert workers_that_fit(5000, 1000) == 1  # never fewer than one worker


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_one_workers_gpu_memory_is_measured(tmp_path):
    data = _worker_data(tmp_path)
    job = WorkerJob(0, 0, _base_config(seed=0), None, 1, 7)
    needed, free = measure_worker_bytes(job, data, "cuda:0")
    assert 0 < needed < free


def test_population_layout_one_per_core_or_gpu():
    cpu = population_layout(8, cores=2, num_gpus=0)
    assert (cpu.populations, cpu.threads, cpu.devices) == (2, 1, (None, None))
    assert "2 processes x 1 thread" in cpu.describe(8) and "CPU core" in cpu.describe(8)
    assert population_layout(20, cores=16, num_gpus=0).populations == 16
    alone = population_layout(1, cores=4, num_gpus=0)
    assert (alone.populations, alone.threads) == (1, 4) and "in this process (4 threads)" in alone.describe(1)
    gpus = population_layout(8, cores=16, num_gpus=2)
    assert (gpus.populations, gpus.threads, gpus.devices) == (2, 8, ("cuda:0", "cuda:1"))
    assert "cuda:0, cuda:1" in gpus.describe(8) and "one per GPU" in gpus.describe(8)
    assert population_layout(8, cores=16, num_gpus=2, device_setting="cpu").devices == (None,) * 8
    assert population_layout(1, cores=16, num_gpus=2).devices == ("cuda:0",)


def test_deal_out_keeps_job_order_and_even_shares():
    jobs = list(range(7))
    groups = deal_out(jobs, 3)
    assert groups == [[0, 1, 2], [3, 4], [5, 6]]
    assert deal_out(jobs[:2], 5) == [[0], [1]]
    assert deal_out(jobs, 1) == [jobs]


def test_population_engine_refuses_different_epoch_counts(tmp_path):
    data = _worker_data(tmp_path)
    jobs = [WorkerJob(0, 0, _base_config(seed=0), None, 1, 0), WorkerJob(1, 0, _base_config(seed=1), None, 2, 0)]
    with pytest.raises(NeurodynError, match="same number of epochs"):
        list(PopulationEngine(data).run(jobs))


def test_run_with_the_population_engine_writes_every_output_and_replaces_a_nan_worker(tmp_path, monkeypatch):
    data = write_tiny_dataset(tmp_path)
    real = population_engine.worker_result

    def diverging(job, smoothed, *args):
        return real(job, math.nan if (job.worker, job.generation) == (0, 0) else smoothed, *args)

    monkeypatch.setattr(population_engine, "worker_result", diverging)
    monkeypatch.setattr(population_engine, "cpu_cores", lambda: 1)  # one population, in this process (the fake)
    lines = []
    result = run_pbt(load_run_config(write_config(tmp_path, engine="population")), data, tmp_path / "res",
                     progress=False, echo=lines.append)
    assert any("engine: population" in line for line in lines)
    assert any("diverged and were replaced" in line for line in lines)
    rows = list(csv.DictReader((tmp_path / "res" / "tiny" / "pbt_log.csv").open()))
    second = [r for r in rows if r["generation"] == "1" and r["worker"] == "0"][0]
    assert second["copied_from"] in ("1", "2")
    assert math.isfinite(result.best_metric)
    check_results(tmp_path / "res", "tiny", 3, 2)


def test_duration_with_the_population_engine_exports_the_best_model(tmp_path):
    data = write_tiny_dataset(tmp_path)
    config = write_config(tmp_path, engine="population", max_generations=50, Duration=0.0001)
    result = run_pbt(load_run_config(config), data, tmp_path / "res", progress=False, echo=lambda line: None)
    assert result.generations == 1 and "Duration" in result.finished
    check_results(tmp_path / "res", "tiny", 3, 1)


def test_resume_after_sigkill_with_the_population_engine(tmp_path):
    data = write_tiny_dataset(tmp_path)
    config = write_config(tmp_path, engine="population", max_generations=4, epochs_per_generation=1)
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
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    rows = list(csv.DictReader((tmp_path / "res" / "tiny" / "pbt_log.csv").open()))
    assert sorted((int(r["generation"]), int(r["worker"])) for r in rows) == [(g, w) for g in range(4) for w in range(3)]
    assert "resuming after generation" in (tmp_path / "res" / "tiny" / "run.log").read_text()
    check_results(tmp_path / "res", "tiny", 3, 4)


def test_a_searched_batch_size_is_refused_with_the_population_engine(tmp_path):
    data = write_tiny_dataset(tmp_path)
    config = write_config(tmp_path, engine="population",
                          batch_size={"explore_range": [8, 16], "init_sample_mode": "rand"})
    with pytest.raises(NeurodynError, match="batch_size"):
        run_pbt(load_run_config(config), data, tmp_path / "res", progress=False, echo=lambda line: None)
