"""The training loop: NaN safety, schedules, mutable hyperparameters, exact resumption, learning."""

import math

import numpy as np
import pytest
import torch

from neurodyn.config import LfadsConfig
from neurodyn.data.seed_format import split_trials
from neurodyn.evaluate.metrics import rate_r2
from neurodyn.synth.lorenz_spikes import make_lorenz_spikes
from neurodyn.train.inference import infer
from neurodyn.train.schedules import linear_ramp, smooth
from neurodyn.train.trainer import LfadsTrainer

TINY = dict(ic_enc_dim=8, ci_enc_dim=6, con_dim=6, ic_dim=4, gen_dim=10, factors_dim=4, batch_size=8,
            device="cpu", kl_increase_epochs=2, l2_increase_epochs=2, posterior_samples=3)


def _counts(shape=(24, 12, 5), missing=0.0, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.poisson(1.0, shape).astype(np.float32)
    data[rng.random(shape) < missing] = np.nan
    return data


def test_linear_ramp_and_smoothing():
    assert [linear_ramp(e, 4) for e in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert linear_ramp(0, 0) == 1.0
    assert smooth(None, 2.0) == 2.0
    assert smooth(1.0, 2.0) == pytest.approx(0.3 * 1.0 + 0.7 * 2.0)
    assert math.isnan(smooth(1.0, float("nan")))


@pytest.mark.parametrize("co_dim", [0, 2])
def test_nan_in_the_data_never_reaches_a_parameter(co_dim):
    data = _counts(missing=0.5)
    trainer = LfadsTrainer(LfadsConfig(**TINY, co_dim=co_dim, keep_ratio=0.7), data[:16], data[16:])
    for _ in range(3):
        row = trainer.step_epoch()
        assert math.isfinite(row["loss"]) and math.isfinite(row["valid_nll"])
    for name, parameter in trainer.model.named_parameters():
        assert torch.isfinite(parameter).all(), name
    assert trainer.skipped_steps == 0


def test_readout_bias_starts_at_the_mean_observed_count():
    data = _counts(missing=0.3)
    trainer = LfadsTrainer(LfadsConfig(**TINY), data[:16], data[16:])
    expected = np.log(np.nanmean(data[:16], axis=(0, 1)))
    np.testing.assert_allclose(trainer.model.readout.bias.detach().numpy(), expected, rtol=1e-5)


def test_set_hyperparameters_updates_optimizer_and_dropout_and_refuses_architecture():
    data = _counts()
    trainer = LfadsTrainer(LfadsConfig(**TINY), data[:16], data[16:])
    trainer.set_hyperparameters(learning_rate_init=1e-3, keep_prob=0.5, kl_ic_weight=0.2)
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-3
    assert trainer.model.dropout_p == pytest.approx(0.5)
    assert trainer.config.kl_ic_weight == 0.2
    with pytest.raises(ValueError, match="gen_dim"):
        trainer.set_hyperparameters(gen_dim=3)


def test_state_dict_resumes_training_exactly():
    data = _counts()
    config = LfadsConfig(**TINY, co_dim=2, keep_ratio=0.8)
    first = LfadsTrainer(config, data[:16], data[16:])
    first.step_epoch()
    state = first.state_dict()
    second = LfadsTrainer(config.model_copy(update={"seed": 99}), data[:16], data[16:])
    second.load_state_dict(state)
    torch.manual_seed(5)
    first.step_epoch()
    torch.manual_seed(5)
    second.step_epoch()
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert first.history == [] or first.history[-1]["valid_nll"] == second.history[-1]["valid_nll"]


def test_early_stopping_after_ramps_restores_the_best_weights():
    data = _counts()
    config = LfadsConfig(**TINY, early_stopping_patience=2, learning_rate_init=0.05)
    trainer = LfadsTrainer(config, data[:16], data[16:])
    trainer.fit(max_epochs=60, progress=False)
    # pure-noise data: the validation NLL stops improving and training ends early
    assert trainer.epoch < 60 and trainer.should_stop
    best = trainer.best_epoch
    assert best >= trainer.ramps_complete_epoch
    assert trainer.history[best]["valid_nll_smoothed"] == min(
        row["valid_nll_smoothed"] for row in trainer.history[trainer.ramps_complete_epoch:])
    torch.testing.assert_close(trainer.model.state_dict(), trainer.best_model_state)


def test_short_training_run_recovers_lorenz_rates():
    dataset = make_lorenz_spikes(num_conditions=20, trials_per_condition=10, seed=3)
    train_idx, valid_idx = split_trials(dataset.num_trials, 0.2, 0, dataset.condition)
    config = LfadsConfig(ic_enc_dim=32, ic_dim=16, gen_dim=48, factors_dim=10, batch_size=32, max_epochs=80,
                         kl_increase_epochs=10, l2_increase_epochs=10, learning_rate_init=0.01, device="cpu",
                         keep_ratio=0.7)
    trainer = LfadsTrainer(config, dataset.data[train_idx], dataset.data[valid_idx])
    trainer.fit(progress=False)
    inferred = infer(trainer.model, dataset.data[valid_idx], num_samples=10)
    assert rate_r2(dataset.truth[valid_idx], inferred["rates"]) >= 0.7


@pytest.mark.parametrize("observation", ["poisson", "zig"])
def test_shard_losses_add_up_to_the_whole_batch_loss_and_gradient(observation):
    """BatchShare: the shards' losses (normalised by the whole batch) sum to the batch's loss, and
    so do their gradients -- the basis of splitting a batch over threads."""
    from neurodyn.lfads.augmentations import training_masks
    from neurodyn.train.objective import BatchShare, lfads_loss

    data = _counts(shape=(12, 10, 5), missing=0.3)
    if observation == "zig":
        data = np.where(np.isnan(data), np.nan, data * 0.7)
    trainer = LfadsTrainer(LfadsConfig(**TINY, co_dim=2, observation=observation), data, data[:4])
    model, weights = trainer.model, trainer._weights()
    model.eval()  # deterministic outputs: no dropout, posterior means
    masks = training_masks(torch.as_tensor(data), 0.7, generator=torch.Generator().manual_seed(3))
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(shard_masks, share):
        output = model(shard_masks.encoder_input, sample_posteriors=False)
        terms = lfads_loss(model, output, shard_masks, weights, 0.5, 0.7, share)
        grads = torch.autograd.grad(terms.total, params, allow_unused=True)
        return terms, [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]

    whole, whole_grads = loss_and_grads(masks, None)
    share = BatchShare.whole(masks)
    parts = [loss_and_grads(masks.select(sl), BatchShare(share.observed, share.trials, carries_penalties=i == 0))
             for i, sl in enumerate([slice(0, 5), slice(5, 12)])]
    for field in ("total", "nll", "kl_ic", "kl_co", "l2"):
        summed = sum(float(getattr(terms, field).detach()) for terms, _ in parts)
        assert summed == pytest.approx(float(getattr(whole, field).detach()), rel=1e-5, abs=1e-9), field
    for index, grad in enumerate(whole_grads):
        summed = parts[0][1][index] + parts[1][1][index]
        torch.testing.assert_close(summed, grad, rtol=1e-4, atol=1e-6)


def test_batch_threads_give_a_reproducible_run_that_learns():
    """Two shards on two threads: the same seed gives the same weights, and the loss falls."""
    data = _counts(shape=(48, 12, 5))
    config = LfadsConfig(**{**TINY, "batch_size": 32}, co_dim=2, batch_threads=2)

    threads_before = torch.get_num_threads()

    def run():
        trainer = LfadsTrainer(config.model_copy(update={"learning_rate_init": 0.02}), data[:40], data[40:])
        assert trainer.batch_threads == 2
        shard_sizes = []
        trainer.model.register_forward_pre_hook(
            lambda module, args: shard_sizes.append(args[0].shape[0]) if module.training else None)
        rows = [trainer.step_epoch() for _ in range(6)]
        return trainer, rows, shard_sizes

    first, rows, shard_sizes = run()
    second, _, _ = run()
    assert shard_sizes[:3] == [16, 16, 8]  # a 32-trial batch in two shards, then the 8-trial rest whole
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert rows[-1]["train_nll"] < rows[0]["train_nll"]
    assert torch.get_num_threads() == threads_before  # restored after each epoch


def test_batch_threads_auto_follows_torch_threads_and_rejects_zero():
    data = _counts()
    trainer = LfadsTrainer(LfadsConfig(**TINY), data[:16], data[16:])
    assert trainer.batch_threads == torch.get_num_threads()
    with pytest.raises(ValueError, match="batch_threads"):
        LfadsConfig(batch_threads=0)


def test_ext_input_is_batched_with_its_trials(monkeypatch):
    """Each trial's measured inputs reach the model beside that trial's data (training and validation)."""
    from neurodyn.lfads.model import LFADS

    data = np.repeat(np.arange(24, dtype=np.float32)[:, None, None], 12, 1).repeat(5, 2)  # trial i counts i
    ext = np.repeat(np.arange(24, dtype=np.float32)[:, None, None], 12, 1).repeat(2, 2)
    pairs = []
    original = LFADS.forward

    def recording(self, encoder_input, *args, ext_input=None, **kwargs):
        pairs.append((encoder_input[:, 0, 0].detach().clone(), ext_input[:, 0, 0].clone()))
        return original(self, encoder_input, *args, ext_input=ext_input, **kwargs)

    monkeypatch.setattr(LFADS, "forward", recording)
    config = LfadsConfig(**{**TINY, "batch_size": 5}, ext_input_dim=2, keep_ratio=1.0, co_dim=2)
    trainer = LfadsTrainer(config, data[:16], data[16:], train_ext_input=ext[:16], valid_ext_input=ext[16:])
    trainer.step_epoch()
    assert len(pairs) == 4 + 1  # four training batches, one validation pass
    for counts, inputs in pairs:
        torch.testing.assert_close(counts, inputs)
    assert sorted(torch.cat([c for c, _ in pairs]).tolist()) == list(range(24))


def test_ext_input_must_match_the_data_and_the_config():
    from neurodyn.errors import NeurodynError

    data = _counts()
    ext = np.zeros((24, 12, 2), np.float32)
    with pytest.raises(NeurodynError, match="train_ext_input .* was not given"):
        LfadsTrainer(LfadsConfig(**TINY, ext_input_dim=2), data[:16], data[16:])
    with pytest.raises(NeurodynError, match=r"valid_ext_input has shape \(8, 12, 3\)"):
        LfadsTrainer(LfadsConfig(**TINY, ext_input_dim=2), data[:16], data[16:], train_ext_input=ext[:16],
                     valid_ext_input=np.zeros((8, 12, 3)))
    with pytest.raises(NeurodynError, match="ext_input_dim 0"):
        LfadsTrainer(LfadsConfig(**TINY), data[:16], data[16:], train_ext_input=ext[:16], valid_ext_input=ext[16:])


def test_write_generator_states_may_change_but_ext_input_dim_may_not():
    from neurodyn.config import SEARCHABLE_HYPERPARAMETERS

    data = _counts()
    trainer = LfadsTrainer(LfadsConfig(**TINY), data[:16], data[16:])
    trainer.set_hyperparameters(write_generator_states=True)
    assert trainer.config.write_generator_states
    with pytest.raises(ValueError, match="ext_input_dim"):
        trainer.set_hyperparameters(ext_input_dim=1)
    assert "ext_input_dim" not in SEARCHABLE_HYPERPARAMETERS


def test_cd_and_temporal_shift_leave_ext_input_unchanged(monkeypatch):
    from neurodyn.lfads.model import LFADS

    data = _counts()
    ext = np.random.default_rng(4).normal(size=(24, 12, 2)).astype(np.float32)
    seen = []
    original = LFADS.forward

    def recording(self, *args, ext_input=None, **kwargs):
        seen.append(ext_input.numpy().copy())
        return original(self, *args, ext_input=ext_input, **kwargs)

    monkeypatch.setattr(LFADS, "forward", recording)
    config = LfadsConfig(**TINY, ext_input_dim=2, keep_ratio=0.5, temporal_shift_std=2.0)
    LfadsTrainer(config, data[:16], data[16:], train_ext_input=ext[:16], valid_ext_input=ext[16:]).train_epoch()
    rows = np.concatenate(seen)
    order = np.argsort(rows[:, 0, 0])
    np.testing.assert_array_equal(rows[order], ext[:16][np.argsort(ext[:16, 0, 0])])
