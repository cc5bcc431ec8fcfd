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
from neurodyn.data.seed_format import read_dataset, split_trials, write_dataset
from neurodyn.errors import NeurodynError
from neurodyn.pbt import population_engine
from neurodyn.pbt.engines import WorkerData, WorkerJob, run_worker_generation
from neurodyn.pbt.population_engine import (PopulationEngine, PopulationLayout, cpu_workers_per_population,
                                            deal_out, describe_cpu_plan, estimate_worker_bytes_cpu, measure_worker_bytes,
                                            population_layout, train_population, workers_that_fit)
from neurodyn.pbt.run import choose_engine, run_pbt
from neurodyn.train.allocator import available_memory_bytes
from neurodyn.runs.checkpoint import decode_state
from neurodyn.synth.lorenz_spikes import make_lorenz_spikes
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
    # The configs' device (cpu) on both sides: the engine's own default is auto (a GPU when present).
    engine = PopulationEngine(data, device="cpu")
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
    capped = population_layout(8, cores=16, num_gpus=0, max_populations=2)  # the config's max_processes
    assert (capped.populations, capped.threads) == (2, 8)
    assert population_layout(8, cores=16, num_gpus=4, max_populations=3).devices == ("cuda:0", "cuda:1", "cuda:2")


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


def test_engine_auto_trains_the_population_unless_the_workers_cannot_share_one():
    name, why = choose_engine("auto", None, {"learning_rate_init", "keep_ratio"})
    assert name == "population" and "engine: auto" in why
    assert choose_engine("auto", None, {"batch_size", "keep_ratio"})[0] == "embedded"
    assert "batch_size" in choose_engine("auto", None, {"batch_size"})[1]
    for named in ("embedded", "ray", "population"):  # a config that names an engine gets it
        assert choose_engine(named, None, set()) == (named, "named in the config")
    assert choose_engine("embedded", "10.0.0.1:6379", set())[0] == "ray"
    with pytest.raises(NeurodynError, match="engine: population trains every worker with one batch_size"):
        choose_engine("population", None, {"batch_size"})


def test_a_run_that_names_no_engine_trains_the_population_with_the_embedded_engines_results(tmp_path):
    data = write_tiny_dataset(tmp_path)
    runs = {}
    for engine in ("auto", "embedded"):
        lines = []
        overrides = {} if engine == "auto" else {"engine": engine}
        folder = tmp_path / engine
        folder.mkdir()
        run_pbt(load_run_config(write_config(folder, max_generations=3, **overrides)), data, folder / "res",
                progress=False, echo=lines.append)
        check_results(folder / "res", "tiny", 3, 3)
        runs[engine] = (lines, list(csv.DictReader((folder / "res" / "tiny" / "pbt_log.csv").open())))
    lines = runs["auto"][0]
    assert any(line.startswith("engine: population") and line.endswith(
        "; engine: auto and every worker shares one architecture and batch size") for line in lines)
    assert any(line.startswith("population memory: about") and line.endswith("each population's 3 workers fit")
               for line in lines)
    assert any(line.startswith("engine: embedded") and line.endswith("; named in the config")
               for line in runs["embedded"][0])
    population, embedded = runs["auto"][1], runs["embedded"][1]
    assert [(r["generation"], r["worker"], r["copied_from"]) for r in population] == \
        [(r["generation"], r["worker"], r["copied_from"]) for r in embedded]
    for row, reference in zip(population, embedded):
        assert float(row["metric"]) == pytest.approx(float(reference["metric"]), rel=1e-4)


def test_a_searched_batch_size_runs_on_the_embedded_engine_by_default(tmp_path):
    data = write_tiny_dataset(tmp_path)
    config = write_config(tmp_path, max_generations=1, batch_size={"explore_range": [8, 16], "init_sample_mode": "rand"})
    lines = []
    run_pbt(load_run_config(config), data, tmp_path / "res", progress=False, echo=lines.append)
    assert any(line.startswith("engine: embedded") and "the search includes batch_size" in line for line in lines)


def test_a_population_share_larger_than_the_memory_allows_trains_in_turn(tmp_path, monkeypatch):
    data = _worker_data(tmp_path)
    jobs = [WorkerJob(w, 0, _base_config(seed=w, learning_rate_init=lr), None, 1, 7)
            for w, lr in enumerate([4e-3, 1e-2, 2e-3])]
    worker_bytes = estimate_worker_bytes_cpu(jobs[0], data)
    lines = []
    # Memory for one worker (and a bit) on this machine: a population of 3 must train one worker at a time.
    engine = PopulationEngine(data, layout=PopulationLayout(1, 1, (None,)), log=lines.append,
                              available_memory=lambda: int(1.5 * worker_bytes))
    planned = []
    real = population_engine.train_population

    def recorded(jobs, data, device=None, max_workers=None):
        planned.append((len(jobs), max_workers))
        return real(jobs, data, device, max_workers)

    monkeypatch.setattr(population_engine, "train_population", recorded)
    results = list(engine.run(jobs))
    assert planned[0] == (3, 1) and [size for size, _ in planned[1:]] == [1, 1, 1]
    assert lines == [f"population memory: about {worker_bytes / 2 ** 20:.0f} MiB per worker on the CPU, "
                     f"{1.5 * worker_bytes / 2 ** 20:.0f} MiB available -> at most 1 worker per population: "
                     "a share of 3 trains as 3 populations in turn"]
    for result, job in zip(results, jobs):
        _assert_same_result(result, run_worker_generation(job, data))


def test_the_memory_plan_line_says_whether_each_share_fits():
    assert describe_cpu_plan(2 ** 21, 2 ** 30, 400, 10) == (
        "population memory: about 2 MiB per worker on the CPU, 1024 MiB available: each population's 10 workers fit")
    assert describe_cpu_plan(2 ** 21, 2 ** 30, 4, 10).endswith(
        "-> at most 4 workers per population: a share of 10 trains as 3 populations in turn")
    assert "could not be read" in describe_cpu_plan(2 ** 21, None, None, 10)


def test_cpu_workers_per_population_share_the_available_memory():
    assert cpu_workers_per_population(100, 2000, populations=2) == 8  # 80% of 1000 each
    assert cpu_workers_per_population(100, 2000, populations=1) == 16
    assert cpu_workers_per_population(100, None, populations=2) is None  # unknown: no limit


def test_the_cpu_memory_estimate_counts_a_steps_activations(tmp_path):
    # The activations kept for the backward pass grow with the trials per step; the generator's states,
    # the factors and the rates of every bin of the step are among them (float32, 4 bytes each).
    data = _worker_data(tmp_path)
    jobs = {batch: WorkerJob(0, 0, _base_config(seed=0, batch_size=batch), None, 1, 7) for batch in (8, 16)}
    estimates = {batch: estimate_worker_bytes_cpu(job, data) for batch, job in jobs.items()}
    config = LfadsConfig(**jobs[16].config)
    bins, neurons = data.train.shape[1:]
    kept_at_least = 16 * bins * (config.gen_dim + config.factors_dim + neurons) * 4
    assert estimates[16] > population_engine.CPU_PEAK_PER_SAVED * kept_at_least
    assert 1.6 < estimates[16] / estimates[8] < 2.0  # about twice: the weights and Adam moments stay


def test_available_memory_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n")
    assert available_memory_bytes(meminfo) == 20000000 * 1024
    fallback = available_memory_bytes(tmp_path / "missing")  # the C library's free pages, or unknown
    assert fallback is None or fallback > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_population_engine_gives_the_per_worker_results(tmp_path):
    """float32 on the GPU for both engines (the float64 equality on a GPU is tested in
    test_population_trainer). Both run their encoders in cuDNN (the population one block-diagonal call
    for all workers), the population's step replayed from a CUDA graph: measured on an H100 the metrics
    were equal (relative gap 0; 2e-7 when the population's encoders were PyTorch loops)."""
    data = _worker_data(tmp_path)
    configs = [_base_config(seed=w, learning_rate_init=lr, keep_ratio=kr, device="cuda")
               for w, (lr, kr) in enumerate([(4e-3, 0.7), (1e-2, 1.0)])]
    jobs = [WorkerJob(w, 0, config, None, 2, 7) for w, config in enumerate(configs)]
    for result, job in zip(PopulationEngine(data, device="cuda").run(jobs), jobs):
        expected = run_worker_generation(job, data)
        assert result.metric == pytest.approx(expected.metric, rel=1e-4)
        for row, reference in zip(result.history, expected.history):
            assert row["valid_nll"] == pytest.approx(reference["valid_nll"], rel=1e-4)
        assert decode_state(result.state)["epoch"] == decode_state(expected.state)["epoch"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_run_on_a_gpu_defaults_to_a_population_on_the_gpu_and_writes_every_output(tmp_path):
    """``device: auto`` and no ``engine``: one batched population on the GPU, refined inference on
    the GPU for the exported outputs, every output file as on a CPU."""
    import h5py

    data = write_tiny_dataset(tmp_path)
    config = write_config(tmp_path, device="auto", num_workers=6, inference="refined", refinement_steps=3)
    lines = []
    result = run_pbt(load_run_config(config), data, tmp_path / "res", progress=False, echo=lines.append)
    assert any("engine: population" in line and "cuda:0" in line for line in lines), lines
    assert math.isfinite(result.best_metric)
    check_results(tmp_path / "res", "tiny", 6, 2)
    with h5py.File(tmp_path / "res" / "pbt_best_model" / "valid_output.h5", "r") as f:
        assert (f.attrs["inference"], int(f.attrs["refinement_steps"])) == ("refined", 3)


def test_a_ray_tasks_share_trains_as_a_population_and_plans_cpu_memory_once(tmp_path, monkeypatch):
    """``train_share_in_task`` (what a Ray task runs) gives the single models' results; the CPU memory
    estimate (a training step) is taken once per process, not every generation."""
    data = _worker_data(tmp_path)
    calls = []
    real = population_engine.estimate_worker_bytes_cpu
    monkeypatch.setattr(population_engine, "estimate_worker_bytes_cpu",
                        lambda job, data: calls.append(job.worker) or real(job, data))
    monkeypatch.setattr(population_engine, "_CPU_WORKER_BYTES", {})
    configs = [_base_config(seed=w, learning_rate_init=lr) for w, lr in enumerate([4e-3, 1e-2])]
    for generation in range(2):
        jobs = [WorkerJob(w, generation, config, None, 1, 7) for w, config in enumerate(configs)]
        results = population_engine.train_share_in_task(jobs, data, threads=1)
        for result, job in zip(results, jobs):
            _assert_same_result(result, run_worker_generation(job, data))
    assert calls == [0]


def test_a_worker_that_copied_another_does_not_replay_its_random_stream(tmp_path):
    """The per-worker (LfadsTrainer) exploit path: a job that starts from another worker's state gets that
    state's weights and a random stream of its own for the generation (``prepare_worker`` reseeds every
    job once, by worker and generation), in both engines."""
    from neurodyn.pbt.engines import prepare_worker

    data = _worker_data(tmp_path)
    config = _base_config(keep_ratio=0.6, keep_prob=0.8)
    source = run_worker_generation(WorkerJob(1, 0, config, None, 1, seed=3), data)
    jobs = [WorkerJob(worker, 1, config, source.state, 1, seed=3) for worker in (1, 0)]  # 0 copied 1
    trainers = [prepare_worker(job, data) for job in jobs]
    for name, tensor in trainers[0].model.state_dict().items():
        assert torch.equal(trainers[1].model.state_dict()[name], tensor), name
    assert not torch.equal(trainers[0].generator.get_state(), trainers[1].generator.get_state())
    for results in (train_population(jobs, data), [run_worker_generation(job, data) for job in jobs]):
        assert abs(results[0].history[0]["loss"] - results[1].history[0]["loss"]) > 1e-6


@pytest.mark.parametrize("validation", [{"sample_validation_fraction": 0.2}, {"validation": "entries"}])
def test_sample_validation_scores_every_worker_on_the_same_held_out_entries(tmp_path, validation):
    # A population refuses workers built on other data: the run finishes only if every worker (each its
    # own seed) got the one set of held-out entries drawn for the run (with validation: entries, and no
    # validation trials, those entries alone validate).
    from neurodyn.cli.main import main

    data = write_tiny_dataset(tmp_path)
    config = write_config(tmp_path, engine="population", **validation)
    assert main(["run", str(config), "--data", str(data), "--out", str(tmp_path / "res"), "--no-progress"]) == 0
    check_results(tmp_path / "res", "tiny", num_workers=3, generations=2)


def test_the_new_priors_and_spike_jitter_train_in_a_population(tmp_path):
    # Each worker's learnable IC prior is stacked like its other weights; the Student-t controller prior and
    # the jitter are settings every worker shares.
    from neurodyn.cli.main import main

    data = tmp_path / "tiny_10ms.h5"  # 10 ms bins: jitter 'auto' -> 2 bins
    write_dataset(data, make_lorenz_spikes(num_neurons=8, num_samples=12, num_conditions=4, trials_per_condition=8,
                                           bin_ms=10.0, seed=1))
    config = write_config(tmp_path, engine="population", ic_prior="learnable", co_prior="student_t", co_dim=2,
                          spike_jitter_bins="auto")
    assert main(["run", str(config), "--data", str(data), "--out", str(tmp_path / "res"), "--no-progress"]) == 0
    check_results(tmp_path / "res", "tiny", num_workers=3, generations=2)
    from neurodyn.train.run import load_trained_model

    model, config_used = load_trained_model(tmp_path / "res" / "pbt_best_model")
    assert config_used.ic_prior == "learnable" and model.co_prior_df == 5.0
    # 'auto' jitter resolved once from the file's bin width for every worker
    from neurodyn.train.defaults import auto_spike_jitter_bins

    assert config_used.spike_jitter_bins == auto_spike_jitter_bins(10.0, "poisson") == 2
    assert model.ic_prior.mean.abs().max() > 0
