"""Continuous sessions after training: the merged series (continuous_output.h5) of ``train`` and ``run``,
and ``evaluate``'s scores of it (vel R^2 by contiguous folds over time, co-bps)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import scipy.io
import yaml
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from neurodyn.cli.main import main
from neurodyn.data.continuous import (ContinuousLayout, crossfade_weights, dataset_layout, merge_dataset_windows,
                                      window_starts)
from neurodyn.data.seed_format import read_dataset
from neurodyn.errors import NeurodynError
from neurodyn.evaluate.continuous import continuous_velocity_r2, ridge_fits
from neurodyn.runs.continuous_output import (merge_run_outputs, read_continuous_output, read_folder_outputs,
                                             write_continuous_output)
from neurodyn.runs.outputs import RunOutput, write_split_output

TINY = {"run_name": "tiny", "ic_enc_dim": 8, "ci_enc_dim": 6, "con_dim": 6, "co_dim": 1, "ic_dim": 4,
        "gen_dim": 12, "factors_dim": 5, "batch_size": 16, "max_epochs": 2, "kl_increase_epochs": 1,
        "l2_increase_epochs": 1, "posterior_samples": 2, "device": "cpu"}


def synthetic_session(path, num_neurons=12, num_bins=600, seed=0) -> dict:
    """A .mat session: Poisson counts of rates driven by two slow latents, the latents as behaviour."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_bins)
    latents = np.stack([np.sin(2 * np.pi * t / 60), np.cos(2 * np.pi * t / 95)])
    rates = np.exp(0.3 + rng.normal(scale=0.6, size=(num_neurons, 2)) @ latents)
    arrays = {"spikes": rng.poisson(rates).astype(np.uint8),
              "vel": np.concatenate([latents, np.zeros((1, num_bins))]),  # the third dimension never moves
              "time": 1.0 + 0.01 * t}
    scipy.io.savemat(path, arrays)
    return arrays


# ---------------------------------------------------------------------------------------------
# Merging a run's outputs


def fake_outputs(series: np.ndarray, starts: np.ndarray, window_bins: int, splits: dict) -> dict:
    """Split outputs whose rates are the windows of ``series`` ((num_bins, neurons)); factors = 2 * rates."""
    outputs = {}
    for split, idx in splits.items():
        rates = np.stack([series[starts[k]:starts[k] + window_bins] for k in idx])
        outputs[split] = RunOutput(rates=rates, factors=2 * rates, trial_idx=np.asarray(idx))
    return outputs


def test_windows_of_every_split_merge_back_to_the_series():
    num_bins, window_bins = 47, 10
    starts = window_starts(num_bins, window_bins, 3)
    layout = ContinuousLayout(starts=starts, num_bins=num_bins, window_bins=window_bins, overlap_bins=3, bin_ms=5.0)
    series = np.linspace(0.5, 3.0, num_bins)[:, None] * np.array([1.0, 2.0, 0.5])
    merged = merge_run_outputs(fake_outputs(series, starts, window_bins, {"train": [0, 2, 3, 6], "valid": [1, 5],
                                                                            "test": [4]}), layout)
    np.testing.assert_allclose(merged.rates, series, rtol=1e-12)
    np.testing.assert_allclose(merged.factors, 2 * series, rtol=1e-12)
    assert merged.window_split.tolist() == ["train", "valid", "train", "train", "test", "valid", "train"]
    only_valid = merged.bins_only_in(("valid", "test"))
    covered_by_train = np.zeros(num_bins, dtype=bool)
    for k in (0, 2, 3, 6):
        covered_by_train[starts[k]:starts[k] + window_bins] = True
    np.testing.assert_array_equal(only_valid, ~covered_by_train)


def test_missing_or_repeated_windows_are_refused():
    starts = window_starts(30, 10, 0)
    layout = ContinuousLayout(starts=starts, num_bins=30, window_bins=10, overlap_bins=0)
    series = np.ones((30, 2))
    with pytest.raises(NeurodynError, match="no outputs for 1 of the session's 3 windows"):
        merge_run_outputs(fake_outputs(series, starts, 10, {"train": [0], "valid": [2]}), layout, "run")
    with pytest.raises(NeurodynError, match="window 1 appears in two outputs"):
        merge_run_outputs(fake_outputs(series, starts, 10, {"train": [0, 1], "valid": [1, 2]}), layout, "run")


def test_written_file_holds_the_merged_series_features_first(tmp_path):
    num_bins, window_bins = 40, 8
    starts = window_starts(num_bins, window_bins, 2)
    layout = ContinuousLayout(starts=starts, num_bins=num_bins, window_bins=window_bins, overlap_bins=2, bin_ms=25.0,
                              first_bin_time_s=3.0)
    rng = np.random.default_rng(1)
    windows = rng.uniform(0.1, 2.0, size=(starts.size, window_bins, 3))  # windows that disagree on overlaps
    assert starts.tolist() == [0, 6, 12, 18, 24, 30, 32]
    for split, idx in (("train", [0, 1, 3, 4, 6]), ("valid", [2, 5])):
        write_split_output(tmp_path / f"{split}_output.h5", {"rates": windows[idx], "factors": windows[idx][..., :2]},
                           np.array(idx), attrs={"observation": "poisson"})
    assert write_continuous_output(tmp_path, {"bin_ms": 25.0}, "d.h5") is None  # not a continuous file
    path = write_continuous_output(tmp_path, layout.to_attrs(), "d.h5")
    with h5py.File(path) as f:
        assert f["rates"].shape == (3, num_bins) and f["factors"].shape == (2, num_bins)
        assert f.attrs["num_bins"] == num_bins and f.attrs["bin_ms"] == 25.0 and f.attrs["observation"] == "poisson"
    merged = read_continuous_output(path)
    weights = crossfade_weights(starts, window_bins, num_bins)
    expected = np.zeros((num_bins, 3))
    for k, start in enumerate(starts):
        expected[start:start + window_bins] += weights[k][:, None] * windows[k]
    np.testing.assert_allclose(merged["rates"], expected, rtol=1e-6)
    np.testing.assert_array_equal(merged["time_bins"], np.arange(num_bins))
    np.testing.assert_allclose(merged["time_s"], 3.0 + 0.025 * np.arange(num_bins))
    assert merged["window_split"].tolist() == ["train", "train", "valid", "train", "train", "valid", "train"]
    assert not list(tmp_path.glob(".*.tmp"))
    assert sorted(read_folder_outputs(tmp_path)) == ["train", "valid"]


# ---------------------------------------------------------------------------------------------
# vel R^2 by contiguous folds over time


def test_ridge_fits_match_scikit_learn():
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 3, size=(200, 7)), rng.normal(size=(200, 2))
    for (coef, intercept), alpha in zip(ridge_fits(x, y, np.array([1e-4, 0.1, 1.0])), (1e-4, 0.1, 1.0)):
        reference = Ridge(alpha=alpha).fit(x, y)
        np.testing.assert_allclose(coef, reference.coef_.T, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(intercept, reference.intercept_, rtol=1e-7, atol=1e-10)


def test_continuous_vel_r2_is_cross_validated_over_contiguous_blocks():
    rng = np.random.default_rng(3)
    num_bins = 500
    rates = rng.uniform(0.5, 2.0, size=(num_bins, 6))
    behavior = np.stack([rates @ rng.normal(size=6), np.zeros(num_bins)], axis=1)  # dim 1 constant
    behavior[:, 0] += 0.1 * rng.normal(size=num_bins)
    scores = continuous_velocity_r2(rates, behavior, square_root=False)
    assert scores["dims"] == [0] and len(scores["r2_per_fold"]) == 5 and scores["r2"] > 0.9
    # the same numbers by hand: each block predicted by a ridge fit on the other four, with the penalty
    # its inner folds chose (an independent scikit-learn fit)
    predicted = np.empty(num_bins)
    for k, alpha in enumerate(scores["alpha_per_fold"]):
        held = np.arange(k * 100, (k + 1) * 100)
        fit = np.setdiff1d(np.arange(num_bins), held)
        predicted[held] = Ridge(alpha=alpha).fit(rates[fit], behavior[fit, 0]).predict(rates[held])
    assert scores["r2"] == pytest.approx(r2_score(behavior[:, 0], predicted), rel=1e-9)
    # a block's behaviour never chooses its own penalty: scrambling block 2 leaves fold 2's penalty as it was
    scrambled = behavior.copy()
    scrambled[200:300, 0] = rng.normal(scale=50.0, size=100)
    again = continuous_velocity_r2(rates, scrambled, square_root=False)
    assert again["alpha_per_fold"][2] == scores["alpha_per_fold"][2]
    # unmeasured bins (NaN) are left out
    behavior[:50, 0] = np.nan
    assert continuous_velocity_r2(rates, behavior)["num_bins"] == num_bins - 50
    with pytest.raises(NeurodynError, match="every behaviour dimension is constant"):
        continuous_velocity_r2(rates, np.zeros((num_bins, 2)))


def test_continuous_vel_r2_decodes_square_root_rates_so_one_burst_cannot_drive_a_fold():
    """Behaviour carried by six neurons' square-root rates; in the last fifth one neuron bursts to 50x its
    usual rate for 20 bins. On the rates themselves the map fit on the other folds turns the burst into
    wild predictions; on their square roots (the default) the burst fold loses far less."""
    rng = np.random.default_rng(4)
    num_bins = 500
    rates = rng.uniform(0.1, 0.5, size=(num_bins, 6))
    behavior = np.stack([np.sqrt(rates) @ rng.normal(size=6)], axis=1) + 0.02 * rng.normal(size=(num_bins, 1))
    rates[430:450, 3] *= 50.0
    on_roots = continuous_velocity_r2(rates, behavior)
    on_rates = continuous_velocity_r2(rates, behavior, square_root=False)
    # the default is the same decoder run on np.sqrt(rates)
    assert on_roots["r2"] == continuous_velocity_r2(np.sqrt(rates), behavior, square_root=False)["r2"]
    assert on_roots["r2_per_fold"][4] > on_rates["r2_per_fold"][4] + 0.3
    assert on_roots["r2"] > on_rates["r2"]
    with pytest.raises(NeurodynError, match="non-negative"):
        continuous_velocity_r2(rates - 1.0, behavior)


# ---------------------------------------------------------------------------------------------
# End to end: prepare -> train / run -> continuous_output.h5 -> evaluate


@pytest.fixture(scope="module")
def trained_session(tmp_path_factory):
    root = tmp_path_factory.mktemp("continuous")
    arrays = synthetic_session(root / "session.mat")
    data = root / "session_data.h5"
    assert main(["prepare", "continuous", str(root / "session.mat"), str(data), "--window-ms", "200",
                 "--overlap-ms", "50", "--behavior", "vel", "--time", "time", "--heldout-fraction", "0.25"]) == 0
    (root / "config.yaml").write_text(yaml.safe_dump(TINY))
    assert main(["train", str(root / "config.yaml"), "--data", str(data), "--out", str(root / "run"),
                 "--no-progress"]) == 0
    return root, arrays, data


def test_train_writes_the_merged_series_of_the_whole_session(trained_session):
    root, arrays, data = trained_session
    merged = read_continuous_output(root / "run" / "continuous_output.h5")
    assert merged["rates"].shape == (600, 12) and merged["factors"].shape == (600, 5)
    assert np.all(merged["rates"] > 0) and np.isfinite(merged["factors"]).all()
    np.testing.assert_allclose(merged["time_s"], arrays["time"])
    assert merged["attrs"]["bin_ms"] == 10.0 and merged["attrs"]["num_bins"] == 600
    # a bin only window 0 covers holds window 0's rates as its split output wrote them
    dataset = read_dataset(data)
    for split in ("train", "valid"):
        with h5py.File(root / "run" / f"{split}_output.h5") as f:
            idx = f["trial_idx"][()]
            if 0 in idx:
                first = f["rates"][:, :, list(idx).index(0)].T
    np.testing.assert_allclose(merged["rates"][:15], first[:15], rtol=1e-6)
    assert dataset.attrs["continuous_num_bins"] == 600


def test_evaluate_scores_the_merged_series(trained_session, capsys):
    root, _, data = trained_session
    assert main(["evaluate", str(root / "run"), "--data", str(data)]) == 0
    printed = capsys.readouterr().out
    assert "continuous session (merged series, 600 bins, 6.0 s, " in printed and "vel R^2" in printed
    assert "(5-fold over time, from sqrt(rates))" in printed
    assert "dimension(s) 2 constant over the session, left out" in printed
    scores = json.loads((root / "run" / "evaluation.json").read_text())["continuous"]
    assert scores["num_bins"] == 600 and scores["vel_dims"] == [0, 1]
    assert scores["vel_r2"] is not None and scores["co_bps"] is not None and len(scores["vel_r2_per_fold"]) == 5
    assert scores["vel_features"] == "sqrt(rates)"  # spike counts


def test_a_session_of_other_signals_decodes_the_rates_themselves(trained_session):
    """Observations that are not spike counts: the decoder reads the rates (no square root), and the
    count scores are skipped with a note."""
    import dataclasses

    from neurodyn.evaluate.continuous import evaluate_continuous
    from neurodyn.runs.outputs import read_run_outputs

    root, _, data = trained_session
    dataset = read_dataset(data)
    signals = dataclasses.replace(dataset, data=dataset.data * 0.5 + 0.25)
    outputs = read_run_outputs(root / "run")
    scores = evaluate_continuous(outputs, signals)
    assert scores["vel_features"] == "rates" and scores["bits_per_spike"] is None
    assert any("not spike counts" in note for note in scores["notes"])
    merged = merge_run_outputs(outputs, dataset_layout(dataset), "test")
    behavior = merge_dataset_windows(dataset.behavior, dataset_layout(dataset))
    assert scores["vel_r2"] == pytest.approx(continuous_velocity_r2(merged.rates, behavior, square_root=False)["r2"])
    assert evaluate_continuous(outputs, dataset)["vel_r2"] == pytest.approx(
        continuous_velocity_r2(merged.rates, behavior)["r2"])


def test_pbt_run_writes_the_merged_series_into_its_best_model(trained_session):
    root, _, data = trained_session
    config = root / "pbt.yaml"
    config.write_text(yaml.safe_dump({**TINY, "num_workers": 2, "epochs_per_generation": 1, "max_generations": 1,
                                      "max_processes": 1}))
    assert main(["run", str(config), "--data", str(data), "--out", str(root / "results"), "--no-progress"]) == 0
    best = root / "results" / "pbt_best_model"
    merged = read_continuous_output(best / "continuous_output.h5")
    assert merged["rates"].shape == (600, 12)
    assert merged["attrs"]["data_path"] == str(data)


def test_m1_session_end_to_end(shared_data, tmp_path, capsys):
    """The real continuous M1 recording (171 neurons x 15536 bins of 50 ms): prepare, a tiny train, evaluate."""
    session = shared_data / "m1_stevenson_2011" / "m1_stevenson_2011.mat"
    data = tmp_path / "m1_data.h5"
    assert main(["prepare", "continuous", str(session), str(data), "--window-ms", "2000", "--overlap-ms", "500",
                 "--behavior", "handVel", "--time", "time", "--heldout-fraction", "0.25", "--seed", "0"]) == 0
    assert "15536 bins of 50 ms" in capsys.readouterr().out
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**TINY, "batch_size": 64}))
    assert main(["train", str(tmp_path / "config.yaml"), "--data", str(data), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    with h5py.File(tmp_path / "run" / "continuous_output.h5") as f:
        assert f["rates"].shape == (171, 15536) and f["factors"].shape == (5, 15536)
        assert f.attrs["bin_ms"] == 50.0 and f.attrs["num_windows"] == 518
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(data)]) == 0
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if "continuous session" in line)
    assert "merged series, 15536 bins" in line and "vel R^2 " in line and "co-bps " in line
    print(line)


def test_a_stitched_model_of_two_continuous_sessions_merges_each_session(tmp_path):
    paths = []
    for day, neurons in (("day1", 12), ("day2", 9)):
        synthetic_session(tmp_path / f"{day}.mat", num_neurons=neurons, num_bins=400 if day == "day1" else 300,
                          seed=len(paths))
        paths.append(tmp_path / f"{day}_data.h5")
        assert main(["prepare", "continuous", str(tmp_path / f"{day}.mat"), str(paths[-1]), "--window-ms", "200",
                     "--overlap-ms", "50", "--bin-ms", "10"]) == 0
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    assert main(["train", str(tmp_path / "config.yaml"), "--data", *map(str, paths), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    for day, neurons, bins in (("day1_data", 12, 400), ("day2_data", 9, 300)):
        merged = read_continuous_output(tmp_path / "run" / day / "continuous_output.h5")
        assert merged["rates"].shape == (bins, neurons) and merged["attrs"]["data_path"].endswith(f"{day}.h5")
    assert not (tmp_path / "run" / "continuous_output.h5").exists()
