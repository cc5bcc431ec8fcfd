"""Per-trial refinement of the IC posterior on each trial's evidence lower bound."""

import h5py
import numpy as np
import pytest
import torch
from scipy import stats

from neurodyn.config import LfadsConfig
from neurodyn.lfads.model import LFADS
from neurodyn.observation.poisson import Poisson
from neurodyn.train.inference import infer
from neurodyn.train.posterior_refinement import refine_ic_posteriors

from model_helpers import encoder_calls

T, N, IC_DIM = 10, 6, 3


def small_model(**keys) -> LFADS:
    torch.manual_seed(0)
    config = LfadsConfig(ic_enc_dim=6, ic_dim=IC_DIM, gen_dim=8, factors_dim=4, device="cpu",
                         **{"co_dim": 0, **keys})
    return LFADS(config, N, Poisson(N)).eval()


def sparse_counts(trials: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.poisson(2.0, size=(trials, T, N)).astype(np.float32)
    data[rng.random(data.shape) < 0.6] = np.nan  # SBTT: most entries unobserved
    return data


def elbo_scipy(model: LFADS, data: np.ndarray, mean: np.ndarray, std: np.ndarray, draws: int = 400) -> np.ndarray:
    """Each trial's ELBO for an autonomous Poisson model, computed independently of the refinement code:
    Monte Carlo over IC draws (numpy), the rates of each draw from a deterministic pass, scipy's Poisson
    log-pmf over the observed entries and the closed-form Gaussian KL to N(0, ic_prior_var)."""
    rng = np.random.default_rng(123)
    prior_var = model.ic_prior_var
    result = []
    for trial, m, s in zip(data, mean, std):
        ics = m + s * rng.standard_normal((draws, IC_DIM))
        masked = torch.as_tensor(np.nan_to_num(trial))[None].repeat(draws, 1, 1)
        with torch.no_grad():
            output = model(masked, sample_posteriors=False,
                           ic_posterior_override=(torch.as_tensor(ics, dtype=torch.float32),
                                                  torch.zeros(draws, IC_DIM)))
        rates = model.observation.mean(output.readout).numpy()
        observed = ~np.isnan(trial)
        log_lik = stats.poisson.logpmf(trial[observed][None], rates[:, observed]).sum(1).mean()
        kl = 0.5 * np.sum(s ** 2 / prior_var + m ** 2 / prior_var - 1.0 - np.log(s ** 2 / prior_var))
        result.append(log_lik - kl)
    return np.array(result)


def encoder_posterior(model: LFADS, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = infer(model, data, num_samples=1)
    return out["ic_mean"], out["ic_std"]


def test_refinement_raises_every_trials_elbo_computed_with_scipy():
    model = small_model()
    data = sparse_counts(5)
    torch.manual_seed(0)
    mean, std = refine_ic_posteriors(model, torch.as_tensor(data), steps=150)
    before = elbo_scipy(model, data, *encoder_posterior(model, data))
    after = elbo_scipy(model, data, mean.numpy(), std.numpy())
    assert np.all(after > before + 0.5), (before, after)


def test_zero_steps_give_the_encoders_posterior_and_the_weights_stay_as_trained():
    model = small_model()
    data = sparse_counts(4)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    mean, std = refine_ic_posteriors(model, torch.as_tensor(data), steps=0)
    encoder_mean, encoder_std = encoder_posterior(model, data)
    np.testing.assert_allclose(mean.numpy(), encoder_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std.numpy(), encoder_std, rtol=1e-5, atol=1e-6)
    refine_ic_posteriors(model, torch.as_tensor(data), steps=5)
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())  # fixed during the refinement only


def test_held_out_neurons_are_not_evidence():
    model = small_model(heldout_neurons=[5])
    data = sparse_counts(3)
    changed = data.copy()
    changed[:, :, 5] = np.where(np.isnan(changed[:, :, 5]), np.nan, 7.0)
    torch.manual_seed(1)
    first = refine_ic_posteriors(model, torch.as_tensor(data), steps=10)
    torch.manual_seed(1)
    second = refine_ic_posteriors(model, torch.as_tensor(changed), steps=10)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)
    data[:, :, 0] = np.where(np.isnan(data[:, :, 0]), np.nan, 7.0)  # an encoder neuron does count
    torch.manual_seed(1)
    third = refine_ic_posteriors(model, torch.as_tensor(data), steps=10)
    assert not torch.allclose(first[0], third[0])


def test_infer_samples_the_refined_posterior():
    model = small_model()
    data = sparse_counts(4)
    out = infer(model, data, num_samples=3, seed=7, refinement_steps=20)
    torch.manual_seed(7)
    mean, std = refine_ic_posteriors(model, torch.as_tensor(data), steps=20)
    np.testing.assert_allclose(out["ic_mean"], mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["ic_std"], std.numpy(), rtol=1e-5, atol=1e-6)
    # The posterior-mean pass runs from the refined mean.
    with torch.no_grad():
        at_mean = model(torch.as_tensor(np.nan_to_num(data)), sample_posteriors=False,
                        ic_posterior_override=(mean, std))
    np.testing.assert_allclose(out["rates_posterior_mean"], model.observation.mean(at_mean.readout).numpy(),
                               rtol=1e-5)
    assert not np.allclose(out["ic_mean"], encoder_posterior(model, data)[0])


@pytest.mark.parametrize("batch_size", [8, 512])
def test_a_model_with_a_controller_is_refined_in_blocks(batch_size):
    model = small_model(co_dim=2, ci_enc_dim=4, con_dim=5)
    data = sparse_counts(6)
    torch.manual_seed(0)
    mean, std = refine_ic_posteriors(model, torch.as_tensor(data), steps=30, batch_size=batch_size)
    assert mean.shape == std.shape == (6, IC_DIM)
    assert torch.all(std > 0) and torch.all(torch.isfinite(mean))
    assert not torch.allclose(mean, torch.as_tensor(encoder_posterior(model, data)[0]))


def test_controller_inputs_handed_back_give_the_same_pass():
    model = small_model(co_dim=2, ci_enc_dim=4, con_dim=5, mask_as_input=True)
    data = torch.as_tensor(sparse_counts(4))
    encoder_input, visible = torch.nan_to_num(data), (~torch.isnan(data)).float()
    ic = (torch.randn(4, IC_DIM), torch.rand(4, IC_DIM) + 0.1)
    torch.manual_seed(3)
    read_inside = model(encoder_input, sample_posteriors=True, encoder_visible=visible, ic_posterior_override=ic)
    handed_in = model.encode(encoder_input, visible).controller_inputs
    torch.manual_seed(3)
    read_before = model(encoder_input, sample_posteriors=True, ic_posterior_override=ic,
                        controller_inputs_override=handed_in)
    torch.testing.assert_close(read_before.readout, read_inside.readout)
    torch.testing.assert_close(read_before.co_mean, read_inside.co_mean)
    assert small_model().encode(encoder_input).controller_inputs is None


def test_a_stitched_controller_model_refines_each_trial_through_its_sessions_read_in():
    model = small_model(co_dim=2, ci_enc_dim=4, con_dim=5, session_neurons=[4, 2])
    with torch.no_grad():
        model.readin.bias[1] += 0.5  # the sessions' read-ins start equal; make them differ
    data = sparse_counts(6)
    session = torch.tensor([0, 0, 0, 1, 1, 1])
    data[session.numpy() == 0, :, 4:] = np.nan  # each session records its own neurons
    data[session.numpy() == 1, :, :4] = np.nan
    torch.manual_seed(0)
    mean, _ = refine_ic_posteriors(model, torch.as_tensor(data), steps=5, session=session)
    torch.manual_seed(0)
    swapped, _ = refine_ic_posteriors(model, torch.as_tensor(data), steps=5, session=1 - session)
    assert torch.all(torch.isfinite(mean)) and not torch.allclose(mean, swapped)


def test_the_refinement_reads_the_controllers_view_once_per_block():
    model = small_model(co_dim=2, ci_enc_dim=4, con_dim=5)
    calls = encoder_calls(model)
    torch.manual_seed(0)
    refine_ic_posteriors(model, torch.as_tensor(sparse_counts(6)), steps=25, batch_size=512)
    # One block: one pass of each encoder (the starting posterior, the controller's view), not one per step.
    assert sorted(name for name, _ in calls) == ["ci_encoder", "ic_encoder"]


def test_new_data_get_refined_posteriors_where_the_model_used_empirical_bayes(tmp_path):
    from neurodyn.data.seed_format import write_dataset
    from neurodyn.synth.lorenz_spikes import make_lorenz_spikes
    from neurodyn.train.apply import infer_new_data
    from neurodyn.train.run import train_model

    dataset = make_lorenz_spikes(num_neurons=N, num_samples=T, num_conditions=3, trials_per_condition=6)
    write_dataset(tmp_path / "d.h5", dataset)
    config = LfadsConfig(ic_enc_dim=6, ic_dim=IC_DIM, gen_dim=8, factors_dim=4, max_epochs=1, kl_increase_epochs=1,
                         l2_increase_epochs=1, posterior_samples=2, inference="empirical_bayes", refinement_steps=2,
                         device="cpu")
    train_model(config, tmp_path / "d.h5", tmp_path / "run", progress=False, echo=lambda line: None)
    infer_new_data(tmp_path / "run", tmp_path / "d.h5", tmp_path / "new.h5")
    with h5py.File(tmp_path / "new.h5", "r") as f:
        assert (f.attrs["inference"], int(f.attrs["refinement_steps"])) == ("refined", 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_refinement_runs_on_a_cuda_model_and_raises_the_elbo():
    model = small_model()
    data = sparse_counts(5)
    before = elbo_scipy(model, data, *encoder_posterior(model, data))
    model.cuda()
    torch.manual_seed(0)
    mean, std = refine_ic_posteriors(model, torch.as_tensor(data, device="cuda"), steps=150)
    assert mean.device.type == "cuda"
    model.cpu()
    after = elbo_scipy(model, data, mean.cpu().numpy(), std.cpu().numpy())
    assert np.all(after > before + 0.5), (before, after)


def test_the_weights_gradient_flags_are_restored_after_an_error_and_a_frozen_weight_stays_frozen(monkeypatch):
    from neurodyn.lfads import model as lfads_model

    model = small_model(co_dim=2, ci_enc_dim=4, con_dim=5)
    model.readout.weight.requires_grad_(False)  # frozen by the caller before the refinement
    flags_before = {name: p.requires_grad for name, p in model.named_parameters()}
    seen_during = []

    def failing_forward(self, *args, **kwargs):
        if torch.is_grad_enabled() and kwargs.get("sample_posteriors"):
            seen_during.append(any(p.requires_grad for p in self.parameters()))
            raise RuntimeError("out of memory, say")
        return original_forward(self, *args, **kwargs)

    original_forward = lfads_model.LFADS.forward
    monkeypatch.setattr(lfads_model.LFADS, "forward", failing_forward)
    with pytest.raises(RuntimeError, match="out of memory"):
        refine_ic_posteriors(model, torch.as_tensor(sparse_counts(3)), steps=3)
    assert seen_during == [False]  # the weights needed no gradient while the posteriors moved
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags_before
    assert not model.readout.weight.requires_grad and model.decoder.generator.weight_hh_l0.requires_grad


@pytest.mark.parametrize("steps", [0, 2])
def test_missing_measured_inputs_are_refused_even_without_steps(steps):
    from neurodyn.errors import NeurodynError

    model = small_model(ext_input_dim=2)
    with pytest.raises(NeurodynError, match="ext_input .* is missing"):
        refine_ic_posteriors(model, torch.as_tensor(sparse_counts(3)), steps=steps)


def test_without_stopping_the_refinement_is_torch_adam_on_the_elbo():
    # The reference: torch.optim.Adam on the negative ELBO written out here from the model's own parts.
    from neurodyn.lfads.augmentations import inference_masks
    from neurodyn.train.posterior_refinement import REFINEMENT_LEARNING_RATE, REFINEMENT_SAMPLES

    model, steps, draws = small_model(), 12, REFINEMENT_SAMPLES
    data = torch.as_tensor(sparse_counts(5))
    torch.manual_seed(7)
    mean, std = refine_ic_posteriors(model, data, steps, stop_snr=0.0)
    masks = inference_masks(data)
    with torch.no_grad():
        reading = model.encode(masks.encoder_input, masks.encoder_visible)
    ref_mean = reading.ic_mean.clone().requires_grad_(True)
    ref_log_var = model.ic_log_var_of(reading.ic_std).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([ref_mean, ref_log_var], lr=REFINEMENT_LEARNING_RATE)
    torch.manual_seed(7)  # one block of trials: its draws come from one seed drawn from the global stream
    rng = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, (1,))))
    for _ in range(steps):
        ref_std = model.ic_std_of(ref_log_var)
        output = model(masks.encoder_input.repeat(draws, 1, 1), sample_posteriors=True, rng=rng,
                       ic_posterior_override=(ref_mean.repeat(draws, 1), ref_std.repeat(draws, 1)))
        nll = (model.observation.elementwise_nll_up_to_constant(output.readout, masks.target.repeat(draws, 1, 1))
               * model.evidence_mask(masks.observed).repeat(draws, 1, 1)).sum()
        loss = nll / draws + model.ic_kl(ref_mean, ref_std).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    np.testing.assert_allclose(mean.numpy(), ref_mean.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std.numpy(), model.ic_std_of(ref_log_var).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_adam_direction_is_torch_adams_step():
    from neurodyn.train.posterior_refinement import ADAM_BETAS, adam_direction

    gradients = torch.as_tensor(np.random.default_rng(3).normal(0.5, 1.0, size=(6, 4)), dtype=torch.float32)
    parameter = torch.zeros(4, requires_grad=True)
    optimiser = torch.optim.Adam([parameter], lr=0.1)
    first, second = torch.zeros(4), torch.zeros(4)
    for step, gradient in enumerate(gradients, start=1):
        before = parameter.detach().clone()
        parameter.grad = gradient.clone()
        optimiser.step()
        first = ADAM_BETAS[0] * first + (1 - ADAM_BETAS[0]) * gradient
        second = ADAM_BETAS[1] * second + (1 - ADAM_BETAS[1]) * gradient ** 2
        np.testing.assert_allclose((before - parameter.detach()).numpy(),
                                   (0.1 * adam_direction(first, second, step)).numpy(), rtol=1e-5, atol=1e-7)


def test_a_steady_gradient_keeps_moving_and_noise_stops():
    # The rule as refine applies it: checked at every step from REFINEMENT_MIN_STEPS on; a trial stops at
    # the first check it fails. 200 trials whose gradient holds its sign, 200 whose gradient is noise.
    from neurodyn.train.posterior_refinement import (ADAM_BETAS, REFINEMENT_MIN_STEPS, REFINEMENT_STOP_SNR,
                                                     adam_direction, still_moving)

    rng = np.random.default_rng(0)
    trials, steps = 200, 50
    for gradients, expected in ((0.7 + 0.3 * rng.standard_normal((steps, trials, 6)), 1.0),
                                (rng.standard_normal((steps, trials, 6)), 0.0)):
        first, second = torch.zeros(trials, 6), torch.zeros(trials, 6)
        moving = torch.ones(trials, dtype=torch.bool)
        for step, gradient in enumerate(torch.as_tensor(gradients, dtype=torch.float32), start=1):
            first = ADAM_BETAS[0] * first + (1 - ADAM_BETAS[0]) * gradient
            second = ADAM_BETAS[1] * second + (1 - ADAM_BETAS[1]) * gradient ** 2
            if step >= REFINEMENT_MIN_STEPS:
                moving &= still_moving(adam_direction(first, second, step), REFINEMENT_STOP_SNR)
        assert abs(moving.float().mean().item() - expected) <= 0.02


def test_a_stopped_trial_keeps_the_values_it_stopped_with():
    # A threshold no trial reaches stops every trial at min_steps: the same as refining that many steps.
    model, data = small_model(), torch.as_tensor(sparse_counts(4))
    rows_run = []
    forward = model.forward

    def counting_forward(x, *args, **kwargs):
        rows_run.append(x.shape[0])
        return forward(x, *args, **kwargs)

    model.forward = counting_forward
    torch.manual_seed(2)
    stopped = refine_ic_posteriors(model, data, steps=30, stop_snr=1e9, min_steps=5)
    assert len(rows_run) == 5  # no pass after every trial stopped
    del model.forward
    torch.manual_seed(2)
    five_steps = refine_ic_posteriors(model, data, steps=5, stop_snr=0.0)
    for a, b in zip(stopped, five_steps):
        torch.testing.assert_close(a, b)


def test_blocks_on_threads_give_the_result_of_one_thread():
    """Blocks of trials refined on two threads draw the numbers they draw on one (each block its own
    seeded stream): the same posteriors, whatever the threads' timing."""
    from neurodyn.train.posterior_refinement import REFINEMENT_SAMPLES

    model, data = small_model(), torch.as_tensor(sparse_counts(40))
    batch_size = 10 * REFINEMENT_SAMPLES  # 10 trials per block, 4 blocks
    results = []
    for threads in (1, 2, 2):
        torch.manual_seed(3)
        results.append(refine_ic_posteriors(model, data, 12, batch_size=batch_size, threads=threads))
    for mean, std in results[1:]:
        torch.testing.assert_close(mean, results[0][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(std, results[0][1], rtol=1e-5, atol=1e-6)
    torch.manual_seed(4)
    other_seed = refine_ic_posteriors(model, data, 12, batch_size=batch_size, threads=2)[0]
    assert not torch.allclose(other_seed, results[0][0], rtol=1e-3, atol=1e-4)
