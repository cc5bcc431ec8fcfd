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


def test_heldout_neurons_pass_gradient_on_every_observed_entry_under_cd():
    """CD masks the reconstruction of held-in neurons only: a held-out neuron is never encoder input, so
    every observed entry of it trains the readout."""
    from neurodyn.lfads.augmentations import training_masks

    torch.manual_seed(0)
    model = LFADS(LfadsConfig(**SMALL, heldout_neurons=[1, 3]), 5, Poisson(5))
    data = torch.tensor(np.random.default_rng(0).poisson(1.0, (4, 9, 5)).astype(np.float32))
    data[0, 2, 1] = data[2, 5, 0] = np.nan
    masks = training_masks(data, keep_ratio=0.5, generator=torch.Generator().manual_seed(1),
                           encoder_input_mask=model.encoder_input_mask)
    output = model(masks.encoder_input, True, masks.encoder_visible)
    log_rate = output.readout.detach().requires_grad_()
    masks.reconstruction_loss(model.observation.elementwise_nll(log_rate, masks.target)).backward()
    observed = ~torch.isnan(data)
    heldout, heldin = [1, 3], [0, 2, 4]
    # Poisson: d NLL / d log-rate = rate - count, non-zero on every observed entry.
    assert (log_rate.grad[..., heldout, 0][observed[..., heldout]] != 0).all()
    assert (log_rate.grad[..., heldout, 0][~observed[..., heldout]] == 0).all()
    heldin_passes = masks.grad_mask[..., heldin] > 0
    assert 0.3 < heldin_passes.float().mean() < 0.7  # held-in neurons keep CD
    assert (log_rate.grad[..., heldin, 0][~heldin_passes] == 0).all()
    # And the readout weights of a held-out neuron get gradient from all its observed entries: the
    # same gradient as a loss with no CD at all on that neuron.
    model.zero_grad()
    masks.reconstruction_loss(model.observation.elementwise_nll(output.readout, masks.target)).backward()
    assert model.readout.weight.grad[heldout].abs().sum(1).min() > 0


def test_trainer_forms_cd_masks_with_the_heldout_neurons_exempt(recorded_training_masks):
    from neurodyn.train.trainer import LfadsTrainer

    seen = recorded_training_masks
    data = np.random.default_rng(3).poisson(1.0, (16, 8, 5)).astype(np.float32)
    config = LfadsConfig(**SMALL, heldout_neurons=[2], keep_ratio=0.5, batch_size=8, device="cpu")
    LfadsTrainer(config, data[:12], data[12:]).train_epoch()
    assert seen
    for masks in seen:
        assert (masks.grad_mask[..., 2] == masks.observed[..., 2]).all()
        assert masks.grad_mask[..., [0, 1, 3, 4]].mean() < 0.8
