"""The real-recording path end to end on MC_Maze_Small: prepare nlb -> train -> evaluate -> export nlb, the
submission scored by nlb_tools' own ``evaluate`` against a target with the keys of NLB's real ones."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest
import yaml

from neurodyn.cli.main import main
from neurodyn.data.seed_format import read_dataset
from neurodyn.datasets import mc_maze_small_files
from neurodyn.runs.outputs import read_run_outputs

nlb_evaluation = pytest.importorskip("nlb_tools.evaluation", reason="pip install --no-deps nlb-tools")

TRAIN, EVAL = mc_maze_small_files()
TINY = {"run_name": "mcs", "ic_enc_dim": 8, "ci_enc_dim": 8, "con_dim": 8, "ic_dim": 8, "gen_dim": 16,
        "factors_dim": 8, "max_epochs": 2, "posterior_samples": 2, "device": "cpu", "inference": "sample_average"}


def train_tiny(tmp_path, data, name="run"):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run = tmp_path / name
    assert main(["train", str(config), "--data", str(data), "--out", str(run), "--no-progress"]) == 0
    return run


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """A tiny model trained on MC_Maze_Small with 15 local test trials (their held-out neurons known)."""
    tmp_path = tmp_path_factory.mktemp("nlb_local")
    data = tmp_path / "mcs_data.h5"
    assert main(["prepare", "nlb", str(TRAIN), str(data), "--local-test-trials", "15"]) == 0
    return train_tiny(tmp_path, data), data


def local_target(data) -> dict:
    """NLB's evaluation target for the local test trials, keys as nlb_tools' make_eval_target_tensors writes them."""
    dataset = read_dataset(data)
    train = np.flatnonzero(dataset.split != "test")
    test = np.flatnonzero(dataset.split == "test")
    heldin, heldout = np.arange(107), dataset.heldout_neurons
    return {"mc_maze_small": {
        "eval_spikes_heldout": dataset.data[test][:, :140][..., heldout],
        "train_behavior": dataset.behavior[train][:, :140],
        "eval_behavior": dataset.behavior[test][:, :140],
        "eval_spikes_heldin_forward": dataset.data[test][:, 140:][..., heldin],
        "eval_spikes_heldout_forward": dataset.data[test][:, 140:][..., heldout],
    }}


def test_export_nlb_is_scored_by_nlb_tools_as_evaluate_scores_it(local_run, tmp_path, capsys):
    run, data = local_run
    assert yaml.safe_load((run / "config.yaml").read_text())["forward_bins"] == 40  # 'auto' took the file's
    submission = tmp_path / "submission.h5"
    assert main(["export", "nlb", str(run), str(submission), "--data", str(data)]) == 0
    assert "mc_maze_small/eval_rates_heldout_forward (15, 40, 35)" in capsys.readouterr().out
    dataset = read_dataset(data)
    outputs = read_run_outputs(run)
    with h5py.File(submission, "r") as f:
        group = f["mc_maze_small"]
        assert sorted(group) == ["eval_rates_heldin", "eval_rates_heldin_forward", "eval_rates_heldout",
                                 "eval_rates_heldout_forward", "train_rates_heldin", "train_rates_heldout"]
        # train = every training-phase trial (train and valid splits) in data-file order; eval = the test trials.
        training_phase = np.flatnonzero(dataset.split != "test")
        rates = np.concatenate([outputs["train"].rates, outputs["valid"].rates])
        order = np.argsort(np.concatenate([outputs["train"].trial_idx, outputs["valid"].trial_idx]))
        assert group["train_rates_heldout"].shape == (training_phase.size, 140, 35)
        np.testing.assert_allclose(group["train_rates_heldout"][()], rates[order][:, :140, 107:], rtol=1e-6)
        test_order = np.argsort(outputs["test"].trial_idx)
        np.testing.assert_allclose(group["eval_rates_heldin_forward"][()],
                                   outputs["test"].rates[test_order][:, 140:, :107], rtol=1e-6)
    scored = nlb_evaluation.evaluate(local_target(data), str(submission))[0]["mc_maze_scaling_split"]

    assert main(["evaluate", str(run), "--data", str(data)]) == 0
    printed = capsys.readouterr().out
    result = yaml.safe_load((run / "evaluation.json").read_text())
    test = result["test"]
    # float32 submission vs float64 outputs: equal to rounding.
    assert test["co_bps"] == pytest.approx(scored["[100] co-bps"], abs=1e-5)
    assert test["fp_bps"] == pytest.approx(scored["[100] fp-bps"], abs=1e-5)
    assert test["vel_r2"] == pytest.approx(scored["[100] vel R2"], abs=1e-4)
    assert result["vel_lag_ms"] == 120.0
    assert "co-bps:" in printed and "vel R^2:" in printed


def test_evaluate_on_nlb_evaluation_trials_reports_what_it_can_and_says_what_it_cannot(tmp_path, capsys):
    data = tmp_path / "mcs_data.h5"
    assert main(["prepare", "nlb", str(TRAIN), str(EVAL), str(data)]) == 0
    run = train_tiny(tmp_path, data)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(data)]) == 0
    printed = capsys.readouterr().out
    result = yaml.safe_load((run / "evaluation.json").read_text())
    assert result["co_bps"] is not None and result["vel_r2"] is not None  # the valid trials have everything
    test = result["test"]
    assert test["num_trials"] == 25 and test["bits_per_spike"] is not None
    assert test["co_bps"] is None and test["fp_bps"] is None and test["vel_r2"] is None
    assert set(test["not_computed"]) == {"co_bps", "fp_bps", "vel_r2"}
    assert "not computed: co-bps: the held-out neurons of these trials were not recorded" in printed
    submission = tmp_path / "submission.h5"
    assert main(["export", "nlb", str(run), str(submission), "--data", str(data)]) == 0
    with h5py.File(submission, "r") as f:
        assert f["mc_maze_small/train_rates_heldin"].shape == (75, 140, 107)
        assert f["mc_maze_small/eval_rates_heldout"].shape == (25, 140, 35)


def test_demo_nlb_prepares_trains_and_prints_cobps_and_vel_r2_on_local_test_trials(tmp_path, capsys):
    assert main(["demo", "--kind", "nlb", "--out", str(tmp_path / "demo"), "--max-epochs", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    data = read_dataset(tmp_path / "demo" / "mc_maze_small_data.h5")
    assert (data.split == "test").sum() == 15 and data.heldout_neurons.size == 35
    result = yaml.safe_load((tmp_path / "demo" / "mc_maze_small" / "evaluation.json").read_text())
    test = result["test"]
    assert test["num_trials"] == 15
    assert f"local test trials (15, never trained on): co-bps {test['co_bps']:.3f}, vel R^2 {test['vel_r2']:.3f}" \
        in printed
    assert re.search(r"demo finished in \d+ s: training \d+ s, outputs \d+ s$", printed.strip())
