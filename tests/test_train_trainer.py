"""The training loop: NaN safety, schedules, mutable hyperparameters, exact resumption, learning."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from neurodyn.config import LfadsConfig
from neurodyn.data.seed_format import split_trials
from neurodyn.evaluate.metrics import rate_r2
from neurodyn.synth.lorenz_spikes import make_lorenz_spikes
from neurodyn.train.inference import infer
from neurodyn.train.schedules import Plateau, linear_ramp, smooth
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


def test_set_hyperparameters_updates_learning_rate_and_dropout_and_refuses_architecture():
    data = _counts()
    trainer = LfadsTrainer(LfadsConfig(**TINY), data[:16], data[16:])
    trainer.set_hyperparameters(learning_rate_init=1e-3, keep_prob=0.5, kl_ic_weight=0.2)
    assert trainer.learning_rate == 1e-3
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


def test_plateau_schedule_decays_as_torch_reduce_lr_on_plateau():
    """Independent check: the learning rates of ``Plateau`` against torch's ``ReduceLROnPlateau`` on a sequence
    with improvements, plateaus, values within the relative threshold, non-finite values and the floor."""
    rng = np.random.default_rng(3)
    metrics = np.concatenate([np.linspace(5, 4, 6), np.full(8, 4.0), 4.0 * (1 - 5e-5) + np.zeros(3), [np.inf, np.nan],
                              3.0 + rng.random(30), np.full(40, 2.0)])
    parameter = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=0.01)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=3, min_lr=1e-3)
    plateau, learning_rate = Plateau(), 0.01
    for metric in metrics:
        reference.step(metric)
        learning_rate = plateau.step(float(metric), learning_rate, factor=0.5, patience=3, min_lr=1e-3)
        assert learning_rate == optimizer.param_groups[0]["lr"]
        assert plateau.bad_epochs == reference.num_bad_epochs
    assert learning_rate == 1e-3  # the floor was reached


def test_a_state_in_torch_optimizer_format_resumes_the_same():
    """A state written before the Adam moments and the plateau schedule were plain tensors and numbers
    (``torch.optim`` state dicts under 'optimizer' and 'scheduler') loads to the same trainer state."""
    data = _counts()
    config = LfadsConfig(**TINY, co_dim=2)
    first = LfadsTrainer(config, data[:16], data[16:])
    fresh = first.state_dict()
    for _ in range(3):
        first.step_epoch()
    for state in (fresh, first.state_dict()):
        adam = state["adam"]
        older = {key: value for key, value in state.items() if key not in ("adam", "learning_rate", "plateau")}
        older["optimizer"] = {"state": {i: {"step": torch.tensor(float(adam["steps"])), "exp_avg": m, "exp_avg_sq": v}
                                        for i, (m, v) in enumerate(zip(adam["exp_avg"], adam["exp_avg_sq"]))
                                        if adam["steps"] > 0},
                              "param_groups": [{"lr": state["learning_rate"], "eps": 1e-8}]}
        older["scheduler"] = {"best": state["plateau"]["best"], "num_bad_epochs": state["plateau"]["bad_epochs"]}
        second = LfadsTrainer(config.model_copy(update={"seed": 7}), data[:16], data[16:])
        for moment in second.exp_avg:
            moment.fill_(1.0)  # a fresh state must zero them
        second.load_state_dict(older)
        loaded = second.state_dict()
        assert loaded["adam"]["steps"] == adam["steps"] and loaded["plateau"] == state["plateau"]
        assert loaded["learning_rate"] == state["learning_rate"]
        for key in ("exp_avg", "exp_avg_sq"):
            for a, b in zip(loaded["adam"][key], adam[key], strict=True):
                assert torch.equal(a, b)


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
    """The shards' losses (normalised by the whole batch, penalties in one shard) sum to the batch's
    loss, and so do their gradients -- the basis of splitting a batch over threads."""
    from neurodyn.lfads.stacked import ForwardNoise
    from neurodyn.train.population_trainer import STEP_HYPERPARAMETERS, trial_axes

    data = _counts(shape=(12, 10, 5), missing=0.3)
    if observation == "zig":
        data = np.where(np.isnan(data), np.nan, data * 0.7)
    trainer = LfadsTrainer(LfadsConfig(**{**TINY, "batch_size": 12}, co_dim=2, observation=observation), data, data[:4])
    engine = trainer.engine
    inputs = engine._step_inputs([torch.arange(12)], torch.tensor([0.5]), torch.tensor([0.7]))
    noise = engine._shard_noise(inputs, 0, 12, 10)  # the whole batch's, cut below as the shards' would be
    inputs.update({f"noise.{field.name}": getattr(noise, field.name) for field in dataclasses.fields(noise)
                   if getattr(noise, field.name) is not None})
    hyper = dict(zip(STEP_HYPERPARAMETERS, inputs["hyper"].unbind(1)))
    observed_total = inputs["observed"].sum((1, 2, 3)).clamp_min(1.0)
    axes = trial_axes(2)

    def terms_and_grads(start, size, carries_penalties):
        part = {name: value.narrow(axes[name], start, size) if name in axes else value for name, value in inputs.items()}
        part_noise = ForwardNoise(**{field.name: part.get(f"noise.{field.name}") for field in dataclasses.fields(noise)})
        terms = engine._objective(part, part_noise, hyper, observed_total, 12, carries_penalties)
        grads = torch.autograd.grad(terms[0, 0], engine.parameters, allow_unused=True)
        return terms.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(engine.parameters, grads)]

    whole, whole_grads = terms_and_grads(0, 12, True)
    parts = [terms_and_grads(0, 5, True), terms_and_grads(5, 7, False)]
    torch.testing.assert_close(parts[0][0] + parts[1][0], whole, rtol=1e-5, atol=1e-9)
    for index, grad in enumerate(whole_grads):
        torch.testing.assert_close(parts[0][1][index] + parts[1][1][index], grad, rtol=1e-4, atol=1e-6)


def test_one_step_is_clipped_adam_as_torch_computes_it():
    """Independent check of the step's optimiser: the gradient of the objective, clipped by
    ``torch.nn.utils.clip_grad_norm_`` and applied by ``torch.optim.Adam``, gives the weights the
    trainer's steps give (float64, a clip that binds, two steps so the moments count)."""
    from neurodyn.train.population_trainer import STEP_HYPERPARAMETERS

    data = _counts(shape=(16, 10, 5), missing=0.2)
    config = LfadsConfig(**{**TINY, "batch_size": 16}, co_dim=2, max_grad_norm=0.05, adam_epsilon=1e-6)
    trainer = LfadsTrainer(config, data, data[:4])
    trainer.set_dtype(torch.float64)
    reference = copy.deepcopy(trainer.model)
    optimizer = torch.optim.Adam(reference.parameters(), lr=trainer.config.learning_rate_init, eps=config.adam_epsilon)
    engine = trainer.engine
    ramp = torch.ones(1, dtype=torch.float64)
    for _ in range(2):
        inputs = engine._step_inputs([torch.arange(16)], ramp, ramp)
        hyper = dict(zip(STEP_HYPERPARAMETERS, inputs["hyper"].unbind(1)))
        noise = engine._shard_noise(inputs, 0, 16, 10)
        loss = engine._objective(inputs, noise, hyper, inputs["observed"].sum((1, 2, 3)).clamp_min(1.0), 16, True)[0, 0]
        grads = torch.autograd.grad(loss, engine.parameters, allow_unused=True)
        for parameter, grad in zip(reference.parameters(), grads):
            parameter.grad = torch.zeros_like(parameter) if grad is None else grad[0].clone()
        torch.nn.utils.clip_grad_norm_(list(reference.parameters()), config.max_grad_norm)
        optimizer.step()
        assert bool(engine._step(inputs)["taken"][0])
        trainer.adam_steps += 1  # as _train_step counts a step taken
        for name, value in reference.state_dict().items():
            torch.testing.assert_close(trainer.model.state_dict()[name], value, rtol=1e-9, atol=1e-11, msg=name)


def test_batch_threads_give_a_reproducible_run_that_learns():
    """Two shards on two threads: the same seed gives the same weights, and the loss falls."""
    data = _counts(shape=(48, 12, 5))
    config = LfadsConfig(**{**TINY, "batch_size": 32}, co_dim=2, batch_threads=2)

    threads_before = torch.get_num_threads()

    def run():
        trainer = LfadsTrainer(config.model_copy(update={"learning_rate_init": 0.02}), data[:40], data[40:])
        assert trainer.batch_threads == 2
        shard_sizes = []
        trainer.engine.model.register_forward_pre_hook(  # the step's model: workers, trials, bins, neurons
            lambda module, args, kwargs: shard_sizes.append(args[0].shape[1]) if kwargs["sample_posteriors"] else None,
            with_kwargs=True)
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
    from neurodyn.lfads.population import PopulationLFADS

    data = np.repeat(np.arange(24, dtype=np.float32)[:, None, None], 12, 1).repeat(5, 2)  # trial i counts i
    ext = np.repeat(np.arange(24, dtype=np.float32)[:, None, None], 12, 1).repeat(2, 2)
    pairs = []
    original = PopulationLFADS.forward

    def recording(self, encoder_input, *args, ext_input=None, **kwargs):  # the step's model: a worker axis first
        pairs.append((encoder_input[0, :, 0, 0].detach().clone(), ext_input[0, :, 0, 0].clone()))
        return original(self, encoder_input, *args, ext_input=ext_input, **kwargs)

    monkeypatch.setattr(PopulationLFADS, "forward", recording)
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
    with pytest.raises(NeurodynError, match="train_ext_input: .* is missing"):
        LfadsTrainer(LfadsConfig(**TINY, ext_input_dim=2), data[:16], data[16:])
    with pytest.raises(NeurodynError, match=r"valid_ext_input: ext_input has shape \(8, 12, 3\)"):
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
    from neurodyn.lfads.population import PopulationLFADS

    data = _counts()
    ext = np.random.default_rng(4).normal(size=(24, 12, 2)).astype(np.float32)
    seen = []
    original = PopulationLFADS.forward

    def recording(self, *args, ext_input=None, **kwargs):  # the step's model: a worker axis first
        seen.append(ext_input[0].numpy().copy())
        return original(self, *args, ext_input=ext_input, **kwargs)

    monkeypatch.setattr(PopulationLFADS, "forward", recording)
    config = LfadsConfig(**TINY, ext_input_dim=2, keep_ratio=0.5, temporal_shift_std=2.0)
    LfadsTrainer(config, data[:16], data[16:], train_ext_input=ext[:16], valid_ext_input=ext[16:]).train_epoch()
    rows = np.concatenate(seen)
    order = np.argsort(rows[:, 0, 0])
    np.testing.assert_array_equal(rows[order], ext[:16][np.argsort(ext[:16, 0, 0])])


# ---------------------------------------------------------------------------------------------
# Sample validation


def test_sample_validation_takes_a_seeded_share_of_the_observed_entries():
    from neurodyn.data.seed_format import split_sample_validation

    data = _counts(shape=(10, 20, 6), missing=0.3)
    observed = ~np.isnan(data)
    training, held_out = split_sample_validation(data, 0.25, seed=3)
    held = ~np.isnan(held_out)
    assert held.sum() == int(np.floor(0.25 * observed.sum() + 0.5))
    assert not (held & ~observed).any()  # only observed entries are held out
    assert not (held & ~np.isnan(training)).any()  # and the model never sees them
    np.testing.assert_array_equal(np.where(held, held_out, training), data)  # together: the data
    again, _ = split_sample_validation(data, 0.25, seed=3)
    other, _ = split_sample_validation(data, 0.25, seed=4)
    np.testing.assert_array_equal(np.isnan(again), np.isnan(training))
    assert not np.array_equal(np.isnan(other), np.isnan(training))


def test_the_validation_nll_pools_the_valid_trials_with_the_held_out_entries():
    from neurodyn.data.seed_format import split_sample_validation
    from neurodyn.lfads.augmentations import inference_masks

    data = _counts(shape=(24, 12, 5))
    training, held_out = split_sample_validation(data[:16], 0.2, seed=0)
    trainer = LfadsTrainer(LfadsConfig(**TINY), training, data[16:], sample_validation_data=held_out)
    trainer.step_epoch()
    model = trainer.model.eval()

    def nll_sum(inputs, targets):
        # Independent of the engine: one model's forward pass at the posterior means, summed by hand.
        masks, scored = inference_masks(torch.tensor(inputs)), inference_masks(torch.tensor(targets))
        with torch.no_grad():
            output = model(masks.encoder_input, sample_posteriors=False, encoder_visible=masks.encoder_visible)
            nll = model.observation.elementwise_nll(output.readout, scored.target)
        return float(torch.where(scored.observed > 0, nll, torch.zeros_like(nll)).sum()), float(scored.observed.sum())

    valid_sum, valid_count = nll_sum(data[16:], data[16:])
    held_sum, held_count = nll_sum(training, held_out)
    assert trainer.validation_nll() == pytest.approx((valid_sum + held_sum) / (valid_count + held_count), rel=1e-5)
    assert trainer.validation_nll(trainer.valid_data) == pytest.approx(valid_sum / valid_count, rel=1e-5)
    assert torch.isnan(trainer.train_data[torch.tensor(~np.isnan(held_out))]).all()
    with pytest.raises(Exception, match="sample_validation_data has shape"):
        LfadsTrainer(LfadsConfig(**TINY), training, data[16:], sample_validation_data=held_out[:3])


def test_hold_out_entries_moves_only_the_marked_observed_entries():
    from neurodyn.data.seed_format import hold_out_entries

    data = _counts(shape=(4, 6, 3), missing=0.3)
    where = np.zeros((6, 3), dtype=bool)
    where[:, 1] = True  # a neuron, broadcast over trials
    training, held_out = hold_out_entries(data, None, where)
    marked = np.broadcast_to(where, data.shape) & ~np.isnan(data)
    assert np.isnan(training[marked]).all() and np.array_equal(held_out[marked], data[marked])
    np.testing.assert_array_equal(training[~marked], data[~marked])
    assert np.isnan(held_out[~marked]).all()
    # Added to what was held out before, which stays.
    earlier = np.full_like(data, np.nan)
    earlier[0, 0, 0] = 7.0
    _, both = hold_out_entries(data, earlier, where)
    assert both[0, 0, 0] == 7.0 and np.array_equal(both[marked], data[marked])


def test_a_trainer_without_validation_trials_validates_on_the_held_out_entries():
    from neurodyn.data.seed_format import split_sample_validation
    from neurodyn.errors import NeurodynError
    from neurodyn.lfads.augmentations import inference_masks

    data = _counts(shape=(20, 12, 5))
    training, held_out = split_sample_validation(data, 0.2, seed=0)
    trainer = LfadsTrainer(LfadsConfig(**TINY), training, data[:0], sample_validation_data=held_out)
    trainer.step_epoch()
    model = trainer.model.eval()
    masks, scored = inference_masks(torch.tensor(training)), inference_masks(torch.tensor(held_out))
    with torch.no_grad():  # by hand: the held-out entries' NLL at the posterior means
        output = model(masks.encoder_input, sample_posteriors=False, encoder_visible=masks.encoder_visible)
        nll = model.observation.elementwise_nll(output.readout, scored.target)
    expected = float(torch.where(scored.observed > 0, nll, torch.zeros_like(nll)).sum() / scored.observed.sum())
    assert trainer.validation_nll() == pytest.approx(expected, rel=1e-5)
    assert trainer.history[-1]["valid_nll"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(NeurodynError, match="nothing to validate on"):
        LfadsTrainer(LfadsConfig(**TINY), training, data[:0])
