"""Forward prediction (fp-bps): the last ``forward_bins`` bins of every trial are hidden from the encoders
(in training, validation and inference), still generated and reconstructed, and exempt from CD."""

import h5py
import numpy as np
import pytest
import torch
import yaml

from neurodyn.config import LfadsConfig, validate_config
from neurodyn.data.seed_format import NeuralDataset, write_dataset
from neurodyn.errors import NeurodynError
from neurodyn.lfads.augmentations import training_masks
from neurodyn.lfads.model import LFADS
from neurodyn.observation.poisson import Poisson
from neurodyn.train.inference import infer, infer_empirical_bayes
from neurodyn.train.run import train_model

SMALL = dict(ic_enc_dim=8, ci_enc_dim=6, con_dim=6, ic_dim=4, gen_dim=10, factors_dim=4, co_dim=2)
T, N, F = 9, 5, 3


def _model(**overrides) -> LFADS:
    torch.manual_seed(0)
    return LFADS(LfadsConfig(**{**SMALL, "forward_bins": F, **overrides}), N, Poisson(N))


def _counts(shape, seed=0) -> torch.Tensor:
    return torch.tensor(np.random.default_rng(seed).poisson(1.0, shape).astype(np.float32))


def _forward_changed(x: torch.Tensor) -> torch.Tensor:
    changed = x.clone()
    changed[:, T - F:] = 40.0
    return changed


def test_config_key_defaults_to_off_and_refuses_negative_values():
    assert LfadsConfig().forward_bins == "auto"
    assert validate_config({"forward_bins": 4}).forward_bins == 4
    with pytest.raises(NeurodynError, match="forward_bins"):
        validate_config({"forward_bins": -1})


@pytest.mark.parametrize("mask_as_input", [False, True])
def test_the_encoders_never_see_the_forward_bins(mask_as_input):
    model = _model(mask_as_input=mask_as_input).eval()
    x = _counts((2, T, N))
    visible = torch.ones_like(x)
    visible_changed = visible.clone()
    visible_changed[:, T - F:] = 0.0  # and other visibility there
    before, after = model(x, False, visible), model(_forward_changed(x), False, visible_changed)
    for name in ("ic_mean", "ic_std", "co_mean", "co_std", "readout", "factors"):
        torch.testing.assert_close(getattr(before, name), getattr(after, name), rtol=0, atol=0, msg=name)
    # The bin before the window is seen.
    earlier = x.clone()
    earlier[:, T - F - 1] = 40.0
    assert not torch.allclose(model(x, False, visible).ic_mean, model(earlier, False, visible).ic_mean)
    # Sampled posteriors and dropout (training mode) draw the same numbers either way.
    model.train()
    sampled = [model(data, True, visible, rng=torch.Generator().manual_seed(4)).readout
               for data in (x, _forward_changed(x))]
    torch.testing.assert_close(sampled[0], sampled[1], rtol=0, atol=0)
    assert model(x, False).readout.shape[1] == T  # the generator runs through the window


def test_the_encoder_mask_hides_heldout_neurons_and_forward_bins():
    mask = _model(heldout_neurons=[1]).encoder_mask(T)
    assert mask.shape == (T, N)
    assert (mask[T - F:] == 0).all() and (mask[:, 1] == 0).all()
    assert (mask[:T - F][:, [0, 2, 3, 4]] == 1).all()
    assert (_model(forward_bins=0).encoder_mask(T) == 1).all()


def test_trials_no_longer_than_the_window_are_refused():
    with pytest.raises(NeurodynError, match="forward_bins 3 is not shorter than the trials"):
        _model()(_counts((1, F, N)), False)


def test_forward_bins_pass_gradient_on_every_observed_entry_under_cd():
    """A forward bin never reaches the encoder, so no count of it can be copied to the output: CD leaves
    its reconstruction alone, as it does a held-out neuron's."""
    model = _model()
    data = _counts((4, T, N), seed=1)
    data[0, T - 1, 2] = data[1, 2, 0] = np.nan
    masks = training_masks(data, keep_ratio=0.5, generator=torch.Generator().manual_seed(1),
                           encoder_input_mask=model.encoder_mask(T))
    observed = ~torch.isnan(data)
    assert (masks.grad_mask[:, T - F:] == observed[:, T - F:]).all()
    seen_passes = masks.grad_mask[:, :T - F] > 0
    assert 0.3 < seen_passes.float().mean() < 0.7  # the seen bins keep CD
    output = model(masks.encoder_input, True, masks.encoder_visible)
    log_rate = output.readout.detach().requires_grad_()
    masks.reconstruction_loss(model.observation.elementwise_nll(log_rate, masks.target)).backward()
    grad = log_rate.grad[..., 0]
    # Poisson: d NLL / d log-rate = rate - count, non-zero on every observed entry.
    assert (grad[:, T - F:][observed[:, T - F:]] != 0).all()
    assert (grad[:, T - F:][~observed[:, T - F:]] == 0).all()
    assert (grad[:, :T - F][~seen_passes] == 0).all()


def test_the_loss_includes_the_forward_bins():
    model = _model().eval()
    data = _counts((3, T, N), seed=2)
    masks = training_masks(data, keep_ratio=1.0, encoder_input_mask=model.encoder_mask(T))
    output = model(masks.encoder_input, False)
    changed = training_masks(_forward_changed(data), keep_ratio=1.0, encoder_input_mask=model.encoder_mask(T))
    torch.testing.assert_close(model(changed.encoder_input, False).readout, output.readout)
    loss = masks.reconstruction_loss(model.observation.elementwise_nll(output.readout, masks.target))
    changed_loss = changed.reconstruction_loss(model.observation.elementwise_nll(output.readout, changed.target))
    assert float(changed_loss.detach()) > float(loss.detach())  # same rates, other forward counts: the loss saw them


def test_a_temporal_shift_does_not_move_forward_data_into_view():
    model = _model()
    data = _counts((6, T, N), seed=3)
    mask = model.encoder_mask(T)
    masks = [training_masks(d, keep_ratio=0.7, generator=torch.Generator().manual_seed(5), temporal_shift_std=3.0,
                            encoder_input_mask=mask) for d in (data, _forward_changed(data))]
    torch.testing.assert_close(masks[0].encoder_input * mask, masks[1].encoder_input * mask, rtol=0, atol=0)
    torch.testing.assert_close(masks[0].encoder_visible * mask, masks[1].encoder_visible * mask, rtol=0, atol=0)
    assert not torch.equal(masks[0].target, masks[1].target)  # the targets do hold the forward data


def test_trainer_exempts_the_forward_bins_from_cd_and_validates_on_them(recorded_training_masks):
    from neurodyn.train.trainer import LfadsTrainer

    seen = recorded_training_masks
    data = _counts((16, T, N), seed=4).numpy()
    config = LfadsConfig(**SMALL, forward_bins=F, keep_ratio=0.5, batch_size=8, device="cpu")
    trainer = LfadsTrainer(config, data[:12], data[12:])
    trainer.train_epoch()
    assert seen
    for masks in seen:
        assert (masks.grad_mask[:, T - F:] == masks.observed[:, T - F:]).all()
        assert masks.grad_mask[:, :T - F].mean() < 0.8
    valid_nll = trainer.validation_nll()
    changed = torch.tensor(data[12:]).clone()
    changed[:, T - F:] += 5.0
    assert trainer.validation_nll(changed) != pytest.approx(valid_nll, rel=1e-6)


def test_inference_rates_in_the_window_do_not_depend_on_its_data():
    model = _model().eval()
    data = _counts((4, T, N), seed=5).numpy()
    data[0, 1, 1] = np.nan
    changed = _forward_changed(torch.tensor(data)).numpy()
    first, second = infer(model, data, num_samples=3), infer(model, changed, num_samples=3)
    for name in ("rates", "rates_posterior_mean", "ic_mean", "inferred_inputs"):
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    # Empirical Bayes: the forward bins are no evidence either.
    reference = _counts((3, T, N), seed=6).numpy()
    weighted = [infer_empirical_bayes(model, d, reference, samples_per_trial=2) for d in (data, changed)]
    np.testing.assert_allclose(weighted[0]["rates"], weighted[1]["rates"], rtol=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("forward")
    rng = np.random.default_rng(7)
    data = rng.poisson(1.5, (24, 10, N)).astype(np.float32)
    split = np.array(["train"] * 14 + ["valid"] * 5 + ["test"] * 5)
    write_dataset(root / "d.h5", NeuralDataset(data=data, heldout_neurons=np.array([1]), split=split))
    config = LfadsConfig(**SMALL, forward_bins=4, max_epochs=2, batch_size=8, posterior_samples=3, device="cpu")
    result = train_model(config, root / "d.h5", root / "run", progress=False)
    return root, data, result


def test_a_trained_run_records_forward_bins_and_its_window_rates_are_predictions(trained):
    from neurodyn.observation.registry import read_dataset_for
    from neurodyn.train.run import infer_outputs, load_trained_model, read_model_dataset

    root, data, result = trained
    assert yaml.safe_load((root / "run" / "config.yaml").read_text())["forward_bins"] == 4
    assert result.trainer.model.forward_bins == 4
    with h5py.File(root / "run" / "valid_output.h5", "r") as f:
        assert f.attrs["forward_bins"] == 4
        written, valid_idx = np.transpose(f["rates"][()]), f["trial_idx"][()]
    model, config = load_trained_model(root / "run")
    assert model.forward_bins == 4
    dataset, _ = read_model_dataset(root / "d.h5", config)
    assert dataset.num_samples == 10 and read_dataset_for(root / "d.h5", "poisson").num_samples == 10
    dataset.data = dataset.data.copy()
    dataset.data[:, 6:] = 30.0  # other data in the forward window: the same outputs
    rerun = infer_outputs(model, dataset, valid_idx, config)
    np.testing.assert_allclose(rerun["rates"], written, rtol=1e-6)
    dataset.data[:, 5] = 30.0  # but the last seen bin matters
    assert not np.allclose(infer_outputs(model, dataset, valid_idx, config)["rates"], written, rtol=1e-6)


def test_a_window_as_long_as_the_trials_is_refused_naming_the_data_file(tmp_path):
    write_dataset(tmp_path / "d.h5", NeuralDataset(data=_counts((6, 5, N)).numpy()))
    config = LfadsConfig(**SMALL, forward_bins=5, max_epochs=1, device="cpu")
    with pytest.raises(NeurodynError, match=r"d\.h5: forward_bins 5 is not shorter than the trials \(5 bins\)"):
        train_model(config, tmp_path / "d.h5", tmp_path / "run", progress=False)


def test_forward_bins_with_an_event_delay_is_refused(tmp_path):
    write_dataset(tmp_path / "d.h5", NeuralDataset(data=_counts((6, 8, N)).numpy()))
    config = LfadsConfig(**SMALL, forward_bins=2, event_delay_bins=1, max_epochs=1, device="cpu")
    with pytest.raises(NeurodynError, match="forward_bins cannot be combined with an event delay"):
        train_model(config, tmp_path / "d.h5", tmp_path / "run", progress=False)


def test_evaluate_scores_fp_bps_on_the_window_and_co_bps_on_the_seen_bins(trained, capsys):
    from neurodyn.evaluate.cobps import co_bps
    from neurodyn.evaluate.fpbps import fp_bps
    from neurodyn.evaluate.report import evaluate_run, format_metrics
    from neurodyn.runs.outputs import read_run_outputs

    root, data, _ = trained
    result = evaluate_run(root / "run", root / "d.h5")
    outputs = read_run_outputs(root / "run")
    for scores, split in ((result, "valid"), (result["test"], "test")):
        out = outputs[split]
        assert scores["fp_bps"] == pytest.approx(fp_bps(out.rates, data[out.trial_idx], 4), rel=1e-12)
        assert scores["co_bps"] == pytest.approx(co_bps(out.rates[:, :6], data[out.trial_idx][:, :6], [1]),
                                                 rel=1e-12)
    assert not any("fp-bps" in note for note in result["notes"])
    text = format_metrics(result)
    assert f"fp-bps (valid, forward window):        {result['fp_bps']:.4f}" in text
    assert f"    fp-bps:         {result['test']['fp_bps']:.4f}" in text


def test_infer_on_new_data_hides_the_window_and_refuses_trials_no_longer_than_it(trained, tmp_path):
    from neurodyn.train.apply import infer_new_data

    root, data, _ = trained
    changed = data.copy()
    changed[:, 6:] = 30.0
    rates = []
    for name, values in (("new.h5", data), ("changed.h5", changed)):
        write_dataset(tmp_path / name, NeuralDataset(data=values))
        infer_new_data(root / "run", tmp_path / name, tmp_path / f"out_{name}")
        with h5py.File(tmp_path / f"out_{name}", "r") as f:
            assert f.attrs["forward_bins"] == 4
            rates.append(f["rates"][()])
    np.testing.assert_array_equal(rates[0], rates[1])
    write_dataset(tmp_path / "short.h5", NeuralDataset(data=data[:, :4]))
    with pytest.raises(NeurodynError, match=r"short\.h5: forward_bins 4 is not shorter than the trials \(4 bins\)"):
        infer_new_data(root / "run", tmp_path / "short.h5", tmp_path / "out_short.h5")
