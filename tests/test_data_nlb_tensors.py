"""``neurodyn prepare nlb``: nlb_tools' tensor files -> the data file, tested on the real MC_Maze_Small tensors
(the project's shipped copy; the published files in ../shared/data are checked to be the same)."""

from __future__ import annotations

import hashlib
import re

import h5py
import numpy as np
import pytest

from neurodyn.cli.main import main
from neurodyn.config import LfadsConfig
from neurodyn.data.nlb_tensors import NlbSplit, dataset_name_from_file, nlb_dataset, trial_roles
from neurodyn.data.seed_format import read_dataset
from neurodyn.datasets import mc_maze_small_files
from neurodyn.errors import NeurodynError
from neurodyn.train.run import read_model_dataset

TRAIN, EVAL = mc_maze_small_files()


def tensors(path) -> dict:
    with h5py.File(path, "r") as f:
        return {key: f[key][()].astype(np.float64) for key in f}


def test_the_shipped_tensors_are_the_published_ones(shared_data):
    for shipped in (TRAIN, EVAL):
        published = shared_data / "nlb_mc_maze_small" / shipped.name
        assert hashlib.sha256(shipped.read_bytes()).hexdigest() == hashlib.sha256(published.read_bytes()).hexdigest()


def test_prepare_nlb_lays_out_train_and_evaluation_trials_with_what_nlb_withholds_as_nan(tmp_path, capsys):
    out = tmp_path / "mc_maze_small_data.h5"
    assert main(["prepare", "nlb", str(TRAIN), str(EVAL), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "100 trials x 180 bins of 5 ms x 142 neurons (107 held in, 35 held out); 60 train, 15 valid, 25 test" \
        in printed
    data = read_dataset(out)
    train, evaluation = tensors(TRAIN), tensors(EVAL)
    # Trials: the 75 training-phase trials in file order, then the 25 evaluation trials; held-in then held-out.
    np.testing.assert_array_equal(data.data[:75, :140, :107], train["train_spikes_heldin"])
    np.testing.assert_array_equal(data.data[:75, :140, 107:], train["train_spikes_heldout"])
    np.testing.assert_array_equal(data.data[:75, 140:, :107], train["train_spikes_heldin_forward"])
    np.testing.assert_array_equal(data.data[:75, 140:, 107:], train["train_spikes_heldout_forward"])
    np.testing.assert_array_equal(data.data[75:, :140, :107], evaluation["eval_spikes_heldin"])
    assert np.isnan(data.data[75:, :, 107:]).all() and np.isnan(data.data[75:, 140:]).all()
    assert data.heldout_neurons.tolist() == list(range(107, 142))
    assert (data.split[75:] == "test").all()
    assert sorted(set(data.split[:75])) == ["train", "valid"] and (data.split[:75] == "valid").sum() == 15
    # Behaviour as nlb_tools shifted it, recorded so, NaN where NLB has none (evaluation trials, forward bins).
    np.testing.assert_allclose(data.behavior[:75, :140], train["train_behavior"], rtol=1e-6)
    assert np.isnan(data.behavior[75:]).all() and np.isnan(data.behavior[:, 140:]).all()
    assert data.attrs["behavior_lag_ms"] == data.attrs["behavior_lag_applied_ms"] == 120.0
    assert data.attrs["forward_bins"] == 40 and data.attrs["bin_ms"] == 5.0
    assert data.attrs["nlb_dataset"] == "mc_maze_small"


def test_forward_bins_auto_takes_the_files_forward_window(tmp_path):
    out = tmp_path / "d.h5"
    nlb = nlb_dataset(TRAIN, EVAL)
    from neurodyn.data.seed_format import write_dataset

    write_dataset(out, nlb)
    _, config = read_model_dataset(out, LfadsConfig())
    assert config.forward_bins == 40 and config.heldout_neurons == list(range(107, 142))
    _, config = read_model_dataset(out, LfadsConfig(forward_bins=0))
    assert config.forward_bins == 0  # a number in the config wins


def test_local_test_trials_are_training_phase_trials_with_their_heldout_neurons(tmp_path):
    local = nlb_dataset(TRAIN, split=NlbSplit(local_test_trials=15, seed=3))
    assert local.num_trials == 75
    roles = {label: int((local.split == label).sum()) for label in ("train", "valid", "test")}
    assert roles == {"train": 48, "valid": 12, "test": 15}
    assert not np.isnan(local.data).any() and not np.isnan(local.behavior[:, :140]).any()
    again = nlb_dataset(TRAIN, split=NlbSplit(local_test_trials=15, seed=3))
    np.testing.assert_array_equal(local.split, again.split)  # fixed by the seed
    other = nlb_dataset(TRAIN, split=NlbSplit(local_test_trials=15, seed=4))
    assert (other.split != local.split).any()


def test_trial_roles_counts_and_refusals():
    roles = trial_roles(10, 3, NlbSplit(valid_fraction=0.2, local_test_trials=0, seed=0))
    assert roles.tolist()[10:] == ["test"] * 3 and (roles[:10] == "valid").sum() == 2
    with pytest.raises(NeurodynError, match="cannot give"):
        trial_roles(3, 0, NlbSplit(valid_fraction=0.2, local_test_trials=2))
    with pytest.raises(NeurodynError, match="valid fraction"):
        trial_roles(10, 0, NlbSplit(valid_fraction=1.0))


def test_dataset_name_from_the_file_name():
    assert dataset_name_from_file("mc_maze_small_train.h5") == "mc_maze_small"
    assert dataset_name_from_file("/x/mc_maze_train.h5") == "mc_maze"
    assert dataset_name_from_file("session.h5") is None


def write_tensors(path, **arrays):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value


@pytest.mark.parametrize("arrays, eval_arrays, message", [
    ({"train_spikes_heldin": np.zeros((4, 6, 3))}, None, "missing key 'train_spikes_heldout'"),
    ({"train_spikes_heldin": np.zeros((4, 6, 3)), "train_spikes_heldout": np.zeros((4, 5, 2))}, None,
     r"key 'train_spikes_heldout' has shape \(4, 5, 2\); expected \(4, 6, any\)"),
    ({"train_spikes_heldin": np.zeros((4, 6, 3)), "train_spikes_heldout": np.zeros((4, 6, 2)),
      "train_spikes_heldin_forward": np.zeros((4, 2, 3))}, None, "not its partner"),
    ({"train_spikes_heldin": np.zeros((4, 6, 3)), "train_spikes_heldout": np.zeros((4, 6, 2))},
     {"eval_spikes_heldin": np.zeros((2, 6, 4))}, r"key 'eval_spikes_heldin' has shape \(2, 6, 4\); expected "
     r"\(any, 6, 3\)"),
    ({"train_spikes_heldin": np.full((4, 6, 3), 0.5), "train_spikes_heldout": np.zeros((4, 6, 2))}, None,
     "non-negative whole counts"),
    ({"train_spikes_heldin": np.zeros((4, 6, 3)), "train_spikes_heldout": np.zeros((4, 6, 2)),
      "train_behavior": np.zeros((4, 6, 2))}, None, "NLB dataset .* is unknown"),
])
def test_bad_tensor_files_get_one_line_naming_file_and_key(tmp_path, capsys, arrays, eval_arrays, message):
    train = tmp_path / "session_train.h5"
    write_tensors(train, **arrays)
    files = [str(train)]
    if eval_arrays is not None:
        write_tensors(tmp_path / "session_eval.h5", **eval_arrays)
        files.append(str(tmp_path / "session_eval.h5"))
    out = tmp_path / "out.h5"
    assert main(["prepare", "nlb", *files, str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("neurodyn: error: ") and "\n" not in error and str(train.parent) in error
    assert re.search(message, error)
    assert not out.exists()


def test_prepare_nlb_refuses_an_existing_output_and_a_local_test_with_an_evaluation_file(tmp_path, capsys):
    out = tmp_path / "d.h5"
    out.write_text("keep")
    assert main(["prepare", "nlb", str(TRAIN), str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "keep"
    assert main(["prepare", "nlb", str(TRAIN), str(EVAL), str(tmp_path / "e.h5"), "--local-test-trials", "5"]) == 2
    assert "only without an evaluation file" in capsys.readouterr().err
