"""Held-out neurons (co-bps): hidden from the encoder, still reconstructed; carried from the data file."""

import numpy as np
import pytest
import torch
import yaml

from neurodyn.config import LfadsConfig
from neurodyn.data.seed_format import NeuralDataset, read_dataset, write_dataset
from neurodyn.errors import NeurodynError
from neurodyn.lfads.model import LFADS
from neurodyn.observation.poisson import Poisson
from neurodyn.train.run import train_model

SMALL = dict(ic_enc_dim=8, ci_enc_dim=6, con_dim=6, ic_dim=4, gen_dim=10, factors_dim=4, co_dim=2)


def test_outputs_do_not_depend_on_heldout_inputs():
    torch.manual_seed(0)
    model = LFADS(LfadsConfig(**SMALL, heldout_neurons=[1, 3]), 5, Poisson(5)).eval()
    x = torch.rand(2, 7, 5)
    changed = x.clone()
    changed[..., [1, 3]] = 50.0
    torch.testing.assert_close(model(x, False).readout, model(changed, False).readout)
    other = x.clone()
    other[..., 0] = 50.0
    assert not torch.allclose(model(x, False).readout, model(other, False).readout)
    assert model(x, False).readout.shape[2] == 5  # held-out neurons are still reconstructed


def test_heldout_indices_must_fit_the_neurons():
    with pytest.raises(NeurodynError, match="heldout_neurons"):
        LFADS(LfadsConfig(**SMALL, heldout_neurons=[7]), 5, Poisson(5))


def test_data_file_round_trip_and_checks(tmp_path):
    data = np.random.default_rng(0).poisson(1.0, (4, 6, 5)).astype(np.float32)
    write_dataset(tmp_path / "d.h5", NeuralDataset(data=data, heldout_neurons=np.array([4, 2])))
    assert read_dataset(tmp_path / "d.h5").heldout_neurons.tolist() == [4, 2]
    for bad, message in (([5], "outside"), ([1, 1], "repeats"), ([0, 1, 2, 3, 4], "all 5")):
        with pytest.raises(NeurodynError, match=message):
            write_dataset(tmp_path / "bad.h5", NeuralDataset(data=data, heldout_neurons=np.array(bad)))


def test_training_takes_heldout_neurons_from_the_data_file(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.poisson(1.0, (20, 8, 5)).astype(np.float32)
    write_dataset(tmp_path / "d.h5", NeuralDataset(data=data, heldout_neurons=np.array([0])))
    config = LfadsConfig(**SMALL, max_epochs=1, batch_size=8, posterior_samples=2, device="cpu")
    result = train_model(config, tmp_path / "d.h5", tmp_path / "run", progress=False)
    assert result.trainer.config.heldout_neurons == [0]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["heldout_neurons"] == [0]
    assert result.trainer.model.encoder_input_mask.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]


def test_evaluate_reports_co_bps_on_the_heldout_neurons(tmp_path):
    from neurodyn.evaluate.cobps import co_bps
    from neurodyn.evaluate.report import evaluate_run
    from neurodyn.runs.outputs import read_run_outputs

    rng = np.random.default_rng(2)
    data = rng.poisson(1.0, (20, 8, 5)).astype(np.float32)
    write_dataset(tmp_path / "d.h5", NeuralDataset(data=data, heldout_neurons=np.array([1, 4])))
    config = LfadsConfig(**SMALL, max_epochs=1, batch_size=8, posterior_samples=2, device="cpu")
    train_model(config, tmp_path / "d.h5", tmp_path / "run", progress=False)
    result = evaluate_run(tmp_path / "run", tmp_path / "d.h5")
    valid = read_run_outputs(tmp_path / "run")["valid"]
    assert result["co_bps"] == pytest.approx(co_bps(valid.rates, data[valid.trial_idx], np.array([1, 4])))
