"""A run's Duration includes writing its outputs: the pure decisions (pbt.time_budget) and the run that
applies them (a measured export cost, the fallback to the standard inference, busy cores)."""

import multiprocessing
import time

import h5py
import pytest

from neurodyn.config import load_run_config
from neurodyn.pbt import run as pbt_run
from neurodyn.pbt.run import run_pbt
from neurodyn.pbt.time_budget import (ExportCost, export_inference, grace_seconds, should_stop_training)

import pbt_helpers
from pbt_helpers import check_results, write_tiny_dataset


def test_grace_is_a_tenth_of_the_duration_and_at_least_a_minute():
    assert grace_seconds(60.0) == 60.0
    assert grace_seconds(3600.0) == pytest.approx(360.0)


def test_the_export_cost_follows_the_machine_when_it_slows_never_below_the_measurement():
    cost = ExportCost(configured_seconds=40.0, standard_seconds=4.0, generation_seconds=10.0)
    busy = cost.scaled(30.0)  # generations now take 3x as long
    assert (busy.configured_seconds, busy.standard_seconds) == pytest.approx((120.0, 12.0))
    idle = cost.scaled(5.0)
    assert (idle.configured_seconds, idle.standard_seconds) == (40.0, 4.0)


def test_training_stops_when_another_generation_and_the_export_would_pass_the_duration():
    cost = ExportCost(configured_seconds=100.0, standard_seconds=10.0, generation_seconds=20.0)
    duration = 600.0
    # 450 + 20 + 100 = 570 <= 600: another generation
    assert not should_stop_training(450.0, 20.0, cost, "refined", duration)
    # 490 + 20 + 100 = 610 > 600: stop
    assert should_stop_training(490.0, 20.0, cost, "refined", duration)
    # without the export counted (the old rule) it would have gone on
    assert not should_stop_training(490.0, 20.0, None, "refined", duration)


def test_an_export_that_cannot_fit_is_planned_with_the_standard_inference():
    # The refined export (2000 s) can never fit a 10-minute Duration + grace: training goes on while the
    # standard one (10 s) fits after the next generation, and the export then uses it.
    cost = ExportCost(configured_seconds=2000.0, standard_seconds=10.0, generation_seconds=20.0)
    assert not should_stop_training(500.0, 20.0, cost, "refined", 600.0)
    assert should_stop_training(575.0, 20.0, cost, "refined", 600.0)
    inference, note = export_inference("refined", 590.0, cost, 600.0)
    assert inference == "sample_average"
    assert "refined outputs would take ~2000 s" in note and "standard sample_average" in note
    # When it fits within the grace, the configured inference stays.
    assert export_inference("refined", 590.0, ExportCost(60.0, 10.0, 20.0), 600.0) == ("refined", None)
    # The standard inference has nothing cheaper to fall back to.
    assert export_inference("sample_average", 590.0, cost, 600.0) == ("sample_average", None)


def test_a_run_that_cannot_afford_the_refined_export_writes_the_standard_one_and_says_so(tmp_path, monkeypatch):
    real = pbt_run.time_outputs

    def refined_is_very_slow(model, dataset, split, config, sessions=None, sample_trials=32):
        seconds = real(model, dataset, split, config, sessions, sample_trials)
        return 1e6 if config.inference == "refined" else seconds

    monkeypatch.setattr(pbt_run, "time_outputs", refined_is_very_slow)
    data = write_tiny_dataset(tmp_path)
    config = pbt_helpers.write_config(tmp_path, engine="embedded", max_generations=3, Duration=5,
                                      inference="refined", refinement_steps=3)
    lines = []
    result = run_pbt(load_run_config(config), data, tmp_path / "res", progress=False, echo=lines.append)
    assert any("writing the outputs is expected to take ~1000000 s (refined inference" in line for line in lines)
    assert any("writing the standard sample_average outputs" in line for line in lines)
    check_results(tmp_path / "res", "tiny", 3, result.generations)
    with h5py.File(tmp_path / "res" / "pbt_best_model" / "train_output.h5") as f:
        assert f.attrs["inference"] == "sample_average"


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_with_the_cores_busy_the_outputs_are_written_within_the_duration_and_its_grace(tmp_path):
    """The promise on a busy machine: another process keeps every core busy while the run trains with
    the refined inference; the outputs are complete by Duration + max(10%, 60 s) after training starts."""
    data = write_tiny_dataset(tmp_path)
    duration_min = 0.25
    config = pbt_helpers.write_config(tmp_path, engine="embedded", max_generations=1000, num_no_best_to_stop=1000,
                                      Duration=duration_min, inference="refined", refinement_steps=20)
    busy = [multiprocessing.get_context("spawn").Process(target=_spin, args=(600.0,), daemon=True)
            for _ in range(max(2, multiprocessing.cpu_count()))]
    for process in busy:
        process.start()
    lines = []
    try:
        result = run_pbt(load_run_config(config), data, tmp_path / "res", progress=False,
                         echo=lambda line: lines.append((time.monotonic(), line)))
    finally:
        for process in busy:
            process.terminate()
    assert "Duration" in result.finished
    started = next(t for t, line in lines if line.startswith("engine:") or "AutoLFADS run" in line)
    exported = next(t for t, line in lines if line.startswith("exported "))
    assert any("writing the outputs is expected to take" in line for _, line in lines)
    assert exported - started <= duration_min * 60 + grace_seconds(duration_min * 60)
    check_results(tmp_path / "res", "tiny", 3, result.generations)


def test_timing_the_outputs_leaves_the_random_state_and_scales_a_sample_to_every_trial(tmp_path, monkeypatch):
    import numpy as np
    import torch

    from neurodyn.config import LfadsConfig
    from neurodyn.data.seed_format import read_dataset
    from neurodyn.train import run as train_run
    from neurodyn.train.run import TrialSplit, time_outputs

    dataset = read_dataset(write_tiny_dataset(tmp_path))
    config = LfadsConfig(ic_enc_dim=4, gen_dim=6, ic_dim=3, factors_dim=3, posterior_samples=2, device="cpu",
                         kl_ic_weight=1e-4, kl_co_weight=1e-4)
    split = TrialSplit(np.arange(20), np.arange(20, 26), np.arange(26, 32))
    seen = []

    def counting(model, dataset, idx, config, reference_idx=None, session=None):
        seen.append(np.asarray(idx))
        torch.randn(3)  # inference draws from torch's generator
        return {}

    ticks = iter([100.0, 102.5])  # the sample's inference takes 2.5 s on this clock

    monkeypatch.setattr(train_run, "infer_outputs", counting)
    monkeypatch.setattr(train_run.time, "perf_counter", lambda: next(ticks))
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    seconds = time_outputs(None, dataset, split, config, sample_trials=8)
    monkeypatch.undo()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert seconds == 2.5 * 32 / 8 and len(seen) == 1
    sample = seen[0]
    assert sample.size == 8 and np.all(np.diff(sample) > 0)  # spread over the splits, in order
    assert sample.min() < 20 <= sample.max()
