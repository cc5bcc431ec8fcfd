"""Checkpoints without pickle: a trainer state round-trips exactly; a pickle is refused and never run."""

import io
import math
import pickle

import numpy as np
import pytest
import torch

from neurodyn.config import LfadsConfig
from neurodyn.errors import NeurodynError
from neurodyn.runs.checkpoint import decode_state, encode_state, load_checkpoint, save_checkpoint
from neurodyn.synth.lorenz_spikes import make_lorenz_spikes
from neurodyn.train.run import load_trained_model
from neurodyn.train.trainer import LfadsTrainer

TINY = {"ic_enc_dim": 6, "gen_dim": 8, "ic_dim": 3, "factors_dim": 3, "co_dim": 1, "ci_enc_dim": 4, "con_dim": 4,
        "batch_size": 8, "device": "cpu", "kl_increase_epochs": 1, "l2_increase_epochs": 1}


def _trained_state():
    data = make_lorenz_spikes(num_neurons=5, num_samples=8, num_conditions=2, trials_per_condition=6, seed=2).data
    trainer = LfadsTrainer(LfadsConfig(**TINY), data[:9], data[9:])
    for _ in range(2):
        trainer.step_epoch()
    return trainer.state_dict()


def _assert_same(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b and type(a) is type(b), where


def test_a_trainer_state_round_trips_exactly(tmp_path):
    state = {"trainer": _trained_state(), "train_idx": np.arange(9), "data_path": "x.h5", "nan": math.nan,
             "inf": -math.inf}
    save_checkpoint(tmp_path / "checkpoint.safetensors", state)
    _assert_same(state, load_checkpoint(tmp_path / "checkpoint.safetensors"))
    _assert_same(state, decode_state(encode_state(state)))


def test_the_file_is_a_plain_safetensors_file():
    from safetensors.torch import load

    state = _trained_state()
    tensors = load(encode_state(state))
    torch.testing.assert_close(tensors["model.readout.weight"], state["model"]["readout.weight"])


class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: what a malicious checkpoint could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
@pytest.mark.parametrize("name", ["checkpoint.safetensors", "checkpoint.pt"])
def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path, how, name):
    marker = tmp_path / "code_ran"
    path = tmp_path / name
    if how == "pickle":
        path.write_bytes(pickle.dumps({"trainer": _RunsCode(marker)}))
    else:
        buffer = io.BytesIO()
        torch.save({"trainer": _RunsCode(marker)}, buffer)
        path.write_bytes(buffer.getvalue())
    with pytest.raises(NeurodynError, match="never unpickles|not a neurodyn checkpoint") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(NeurodynError):
        decode_state(path.read_bytes(), "worker state")
    assert not marker.exists(), "loading must never run the file's code"


def test_a_run_folder_with_a_pickled_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    (tmp_path / "checkpoint.safetensors").write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(NeurodynError, match="checkpoint.safetensors"):
        load_trained_model(tmp_path)
    assert not marker.exists()


def test_other_safetensors_files_and_damaged_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(NeurodynError, match="not a neurodyn checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")
    blob = encode_state({"w": torch.zeros(3)})
    (tmp_path / "cut.safetensors").write_bytes(blob[: len(blob) - 4])
    with pytest.raises(NeurodynError, match="cut.safetensors"):
        load_checkpoint(tmp_path / "cut.safetensors")
