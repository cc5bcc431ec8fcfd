"""Continuous signals (observation: gaussian / mse) through the commands: synth, train, evaluate, infer
and an AutoLFADS run on the population engine; the scores that stand in for bits per spike."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import yaml

from neurodyn.cli.main import main
from neurodyn.data.seed_format import read_dataset, write_dataset
from neurodyn.evaluate.metrics import gaussian_log_likelihood, observed_r2
from neurodyn.observation.gaussian import channel_variances
from neurodyn.synth.lorenz_continuous import make_lorenz_continuous

TINY = {"run_name": "traces", "ic_enc_dim": 8, "ci_enc_dim": 6, "con_dim": 6, "ic_dim": 4, "gen_dim": 12,
        "factors_dim": 5, "batch_size": 16, "max_epochs": 3, "kl_increase_epochs": 1, "l2_increase_epochs": 1,
        "posterior_samples": 2, "device": "cpu"}
HELD_OUT = [1, 6]


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """A small continuous data file (both signs) with two held-out channels six test and twelve valid trials."""
    folder = tmp_path_factory.mktemp("traces")
    dataset = make_lorenz_continuous(num_neurons=8, num_samples=20, num_conditions=6, trials_per_condition=7, seed=2)
    dataset.heldout_neurons = np.array(HELD_OUT)
    dataset.split = np.array([["test", "valid", "valid"][k % 7] if k % 7 < 3 else "train" for k in range(dataset.num_trials)])
    path = folder / "traces_data.h5"
    write_dataset(path, dataset)
    return path


def _train(folder, data, **overrides):
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({**TINY, **overrides}))
    out = folder / "run"
    assert main(["train", str(config), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    return out


def _outputs(path):
    with h5py.File(path) as f:
        return {key: np.transpose(f[key][()], (2, 1, 0)) if f[key].ndim == 3 else f[key][()] for key in f}


def test_gaussian_train_evaluate_and_infer_on_negative_values(traces, tmp_path, capsys):
    run = _train(tmp_path, traces, observation="gaussian")
    dataset = read_dataset(traces)
    valid = _outputs(run / "valid_output.h5")
    assert "std" in valid and np.all(valid["std"] > 0)

    assert main(["evaluate", str(run), "--data", str(traces)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((run / "evaluation.json").read_text())
    observed = dataset.data[valid["trial_idx"]]
    held_in = [n for n in range(dataset.num_neurons) if n not in HELD_OUT]
    # The scores are the metrics' own on the run's outputs (checked against SciPy and sklearn elsewhere).
    assert result["observed_r2"] == pytest.approx(observed_r2(valid["rates"][..., held_in], observed[..., held_in]))
    assert result["co_r2"] == pytest.approx(observed_r2(valid["rates"][..., HELD_OUT], observed[..., HELD_OUT]))
    assert result["gaussian_ll"] == pytest.approx(gaussian_log_likelihood(
        valid["rates"][..., held_in], valid["std"][..., held_in], observed[..., held_in]))
    assert result["bits_per_spike"] is None and result["co_bps"] is None
    test = _outputs(run / "test_output.h5")
    assert result["test"]["co_r2"] == pytest.approx(
        observed_r2(test["rates"][..., HELD_OUT], dataset.data[test["trial_idx"]][..., HELD_OUT]))
    assert "R^2 (valid, observed data):" in printed and "co-R^2 (valid, held-out channels):" in printed
    assert "log-likelihood (valid, nats/entry):" in printed

    # A model rebuilt from its checkpoint has the trained variances (a constant per channel: no sampling noise).
    assert main(["infer", str(run), "--data", str(traces), "--out", str(tmp_path / "again.h5")]) == 0
    again = _outputs(tmp_path / "again.h5")
    np.testing.assert_allclose(again["std"][valid["trial_idx"]], valid["std"], rtol=1e-6)
    # Three epochs of training moved the variances away from their start (each channel's training variance).
    train_idx = _outputs(run / "train_output.h5")["trial_idx"]
    start = np.sqrt(channel_variances(dataset.data[train_idx]))
    assert np.abs(valid["std"][0, 0] - start).max() > 1e-4


def test_mse_trains_and_scores_without_a_variance(traces, tmp_path):
    run = _train(tmp_path, traces, observation="mse")
    assert "std" not in _outputs(run / "valid_output.h5")
    assert main(["evaluate", str(run), "--data", str(traces)]) == 0
    result = json.loads((run / "evaluation.json").read_text())
    assert result["observed_r2"] is not None and result["co_r2"] is not None
    assert result["gaussian_ll"] is None


def test_autolfads_on_the_population_engine_learns_each_workers_variances(traces, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**{k: v for k, v in TINY.items() if k != "max_epochs"},
                                      "observation": "gaussian", "engine": "population", "num_workers": 2,
                                      "epochs_per_generation": 2, "max_generations": 1, "max_processes": 1}))
    results = tmp_path / "res"
    assert main(["run", str(config), "--data", str(traces), "--out", str(results), "--no-progress"]) == 0
    best = _outputs(results / "pbt_best_model" / "valid_output.h5")
    dataset = read_dataset(traces)
    train_idx = _outputs(results / "pbt_best_model" / "train_output.h5")["trial_idx"]
    start = np.sqrt(channel_variances(dataset.data[train_idx]))
    assert np.abs(best["std"][0, 0] - start).max() > 1e-4
    assert main(["evaluate", str(results), "--data", str(traces)]) == 0
    assert json.loads((results / "evaluation.json").read_text())["gaussian_ll"] is not None


def test_synth_lorenz_continuous_writes_the_generators_file_and_refuses_to_replace_it(tmp_path, capsys):
    path = tmp_path / "t_data.h5"
    args = ["synth", "lorenz-continuous", str(path), "--neurons", "5", "--conditions", "3",
            "--trials-per-condition", "2", "--bins", "10", "--noise", "0.2", "0.4", "--seed", "4"]
    assert main(args) == 0
    expected = make_lorenz_continuous(num_neurons=5, num_samples=10, num_conditions=3, trials_per_condition=2,
                                      noise_low=0.2, noise_high=0.4, seed=4)
    written = read_dataset(path)
    np.testing.assert_array_equal(written.data, expected.data)
    np.testing.assert_allclose(written.truth, expected.truth, rtol=1e-6)
    assert 0.2 <= min(written.attrs["noise_std"]) and max(written.attrs["noise_std"]) <= 0.4
    assert main(args) != 0 and "--overwrite" in capsys.readouterr().err
