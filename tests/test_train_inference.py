"""Posterior sample-and-average inference: the latent outputs (initial conditions, inferred inputs,
generator states) and measured inputs."""

import numpy as np
import pytest
import torch

from neurodyn.config import LfadsConfig
from neurodyn.errors import NeurodynError
from neurodyn.lfads.model import LFADS
from neurodyn.observation.poisson import Poisson
from neurodyn.train.inference import infer, infer_empirical_bayes

from model_helpers import encoder_calls

T, N = 9, 4
SMALL = dict(ic_enc_dim=6, ci_enc_dim=5, con_dim=6, ic_dim=3, gen_dim=8, factors_dim=3, device="cpu")



def make_model(co_dim: int, ext_input_dim: int = 0) -> LFADS:
    torch.manual_seed(0)
    config = LfadsConfig(**SMALL, co_dim=co_dim, ext_input_dim=ext_input_dim)
    return LFADS(config, N, Poisson(N)).eval()


def counts(trials: int = 5, seed: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).poisson(1.0, (trials, T, N)).astype(np.float32)
    data[0, 3, 1] = np.nan
    return data


def every_copy_rates(model: LFADS, data: np.ndarray, samples: int, seed: int, ext: np.ndarray | None = None,
                     session: int | None = None, pass_stream: bool = True) -> np.ndarray:
    """The reference for reading each trial once: the rates of a pass that reads every copy of the trials
    through the encoders, as a training pass does, ``(samples * trials, T, N)`` in ``Tensor.repeat`` order.
    ``pass_stream``: draw from the stream of ``infer``'s first pass (seeded from ``seed``'s first draw),
    else from torch's global generator seeded with ``seed`` (empirical Bayes)."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, (1,)))) if pass_stream else None
    copies = torch.as_tensor(np.nan_to_num(data)).repeat(samples, 1, 1)
    with torch.no_grad():
        output = model(copies, sample_posteriors=True, rng=rng,
                       encoder_visible=torch.as_tensor(~np.isnan(data)).float().repeat(samples, 1, 1),
                       ext_input=None if ext is None else torch.as_tensor(ext).repeat(samples, 1, 1),
                       session=None if session is None else torch.full((copies.shape[0],), session))
    return model.observation.mean(output.readout).numpy()


def test_keys_and_shapes_with_a_controller():
    result = infer(make_model(co_dim=2), counts(), num_samples=4, write_generator_states=True)
    assert result["inferred_inputs"].shape == result["inferred_inputs_std"].shape == (5, T, 2)
    assert result["ic_mean"].shape == result["ic_std"].shape == (5, 3)
    assert result["generator_states"].shape == (5, T, 8)
    assert (result["inferred_inputs_std"] > 0).all() and (result["ic_std"] > 0).all()


def test_an_autonomous_model_has_no_inferred_inputs_and_states_only_on_request():
    result = infer(make_model(co_dim=0), counts(), num_samples=3)
    assert "inferred_inputs" not in result and "inferred_inputs_std" not in result
    assert "generator_states" not in result
    assert result["ic_mean"].shape == (5, 3)


def test_ic_posterior_is_the_encoders_and_does_not_depend_on_sampling():
    model = make_model(co_dim=2)
    data = counts()
    first, second = infer(model, data, num_samples=2, seed=0), infer(model, data, num_samples=7, seed=3)
    with torch.no_grad():
        output = model(torch.nan_to_num(torch.tensor(data)), sample_posteriors=False)
    for result in (first, second):
        np.testing.assert_allclose(result["ic_mean"], output.ic_mean.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result["ic_std"], output.ic_std.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("co_dim", [0, 2])
def test_generator_states_are_averaged_like_the_factors(co_dim):
    """Factors are a linear map of the generator states (dropout off), so the average of the samples'
    factors must be that map applied to the average of their states."""
    model = make_model(co_dim)
    result = infer(model, counts(), num_samples=6, write_generator_states=True)
    with torch.no_grad():
        mapped = (torch.tensor(result["generator_states"]) @ model.normalised_factor_weight()[0].T).numpy()
    np.testing.assert_allclose(result["factors"], mapped, rtol=1e-4, atol=1e-5)


def test_inferred_inputs_are_posterior_means_and_stds_averaged_over_samples():
    """With a known controller-output std (weights of the log-variance rows zero, bias 2 log 0.3) every
    sample's std is 0.3; with a zero-variance IC posterior and that std shrunk to ~0 all samples equal
    the posterior-mean pass, whose controller means are then the inferred inputs."""
    model = make_model(co_dim=2)
    with torch.no_grad():
        model.decoder.controller_output.weight[2:] = 0.0
        model.decoder.controller_output.bias[2:] = 2 * np.log(0.3)
    result = infer(model, counts(), num_samples=5)
    np.testing.assert_allclose(result["inferred_inputs_std"], 0.3, rtol=1e-5)
    with torch.no_grad():
        model.decoder.controller_output.bias[2:] = -60.0
        model.ic_posterior.weight[3:] = 0.0
        model.ic_posterior.bias[3:] = -60.0
    model.ic_post_var_min = 0.0
    result = infer(model, counts(), num_samples=5)
    with torch.no_grad():
        output = model(torch.nan_to_num(torch.tensor(counts())), sample_posteriors=False)
    np.testing.assert_allclose(result["inferred_inputs"], output.co_mean.numpy(), rtol=1e-4, atol=1e-6)


def test_ext_input_is_required_checked_and_changes_the_rates():
    model = make_model(co_dim=2, ext_input_dim=1)
    data = counts()
    ext = np.zeros((5, T, 1), np.float32)
    kicked = ext.copy()
    kicked[:, 4] = 3.0
    quiet, moved = infer(model, data, 3, ext_input=ext), infer(model, data, 3, ext_input=kicked)
    np.testing.assert_allclose(quiet["rates"][:, :4], moved["rates"][:, :4], rtol=1e-5)  # causal
    assert not np.allclose(quiet["rates"][:, 4:], moved["rates"][:, 4:])
    np.testing.assert_allclose(quiet["ic_mean"], moved["ic_mean"])  # the encoder never sees it
    with pytest.raises(NeurodynError, match="ext_input: .* is missing"):
        infer(model, data, 3)
    with pytest.raises(NeurodynError, match=r"ext_input: .*expected \(5, 9, 1\)"):
        infer(model, data, 3, ext_input=ext[:4])


def test_empirical_bayes_generates_each_draw_with_its_reference_trials_inputs():
    """A deterministic model (zero-variance posteriors): the result is the likelihood-weighted average of
    the reference trials' rates, each computed with that trial's own measured inputs."""
    from scipy import stats

    model = make_model(co_dim=0, ext_input_dim=1)
    with torch.no_grad():
        model.ic_posterior.weight[3:] = 0.0
        model.ic_posterior.bias[3:] = -60.0
    model.ic_post_var_min = 0.0
    rng = np.random.default_rng(1)
    reference, data = counts(3, seed=2), counts(4, seed=3)
    reference_ext = rng.normal(0, 2, (3, T, 1)).astype(np.float32)
    data_ext = rng.normal(0, 2, (4, T, 1)).astype(np.float32)
    reference_rates = infer(model, reference, 1, ext_input=reference_ext)["rates_posterior_mean"]
    result = infer_empirical_bayes(model, data, reference, samples_per_trial=2, ext_input=data_ext,
                                   reference_ext_input=reference_ext, write_generator_states=True)
    for trial, rates in zip(data, result["rates"]):
        observed = ~np.isnan(trial)
        log_lik = np.array([stats.poisson.logpmf(trial[observed], r[observed]).sum() for r in reference_rates])
        weights = np.exp(log_lik - log_lik.max())
        np.testing.assert_allclose(rates, np.tensordot(weights / weights.sum(), reference_rates, 1), rtol=1e-4)
    own = infer(model, data, 1, ext_input=data_ext)
    np.testing.assert_allclose(result["ic_mean"], own["ic_mean"], rtol=1e-5, atol=1e-6)
    assert result["generator_states"].shape == (4, T, 8)
    with pytest.raises(NeurodynError, match="reference_ext_input"):
        infer_empirical_bayes(model, data, reference, ext_input=data_ext)


def test_drop_leading_bins_keeps_the_per_trial_outputs_whole():
    from neurodyn.train.inference import drop_leading_bins

    result = infer(make_model(co_dim=2), counts(), num_samples=2, write_generator_states=True)
    dropped = drop_leading_bins(result, 3)
    for name, value in result.items():
        if name in ("ic_mean", "ic_std"):
            np.testing.assert_array_equal(dropped[name], value)
        else:
            np.testing.assert_array_equal(dropped[name], value[:, 3:])
            assert dropped[name].shape[1] == T - 3


READING_CASES = {
    "mask as input, unobserved entries": dict(mask_as_input=True),
    "held-out neuron and forward bins": dict(heldout_neurons=[3], forward_bins=2),
    "measured inputs": dict(ext_input_dim=2),
    "stitched, second session": dict(session_neurons=[2, 2]),
}


@pytest.mark.parametrize("case", READING_CASES)
def test_samples_read_once_match_a_pass_that_reads_every_copy_with_the_encoders_full_view(case):
    """A controller model in each setting that changes what the encoders see: the trials read once by
    ``encode`` and the sampled pass give the rates of a pass that reads every copy (same random stream)."""
    extra = READING_CASES[case]
    torch.manual_seed(0)
    model = LFADS(LfadsConfig(**SMALL, co_dim=2, **extra), N, Poisson(N)).eval()
    data, samples = counts(6, seed=7), 4
    data[np.random.default_rng(8).random(data.shape) < 0.3] = np.nan
    ext = np.random.default_rng(9).normal(size=(6, T, 2)).astype(np.float32) if "ext_input_dim" in extra else None
    session = None
    if "session_neurons" in extra:
        session = 1
        data[:, :, :2] = np.nan  # the second session records neurons 2 and 3
        with torch.no_grad():
            model.readin.bias[1] += 0.5  # the sessions' read-ins start equal; make them differ
    result = infer(model, data, num_samples=samples, seed=5, ext_input=ext, session=session)
    rates = every_copy_rates(model, data, samples, 5, ext, session).reshape(samples, len(data), T, N).mean(0)
    np.testing.assert_allclose(result["rates"], rates, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("co_dim", [0, 2])
def test_each_trial_is_encoded_once_and_the_samples_match_a_pass_that_encodes_every_copy(co_dim):
    model, data, samples = make_model(co_dim=co_dim), counts(), 6
    calls = encoder_calls(model)
    result = infer(model, data, num_samples=samples, seed=4)
    assert len(calls) == (2 if co_dim else 1)  # one block of trials: each encoder runs once
    rates = every_copy_rates(model, data, samples, 4).reshape(samples, len(data), T, N).mean(0)
    np.testing.assert_allclose(result["rates"], rates, rtol=1e-5, atol=1e-6)


def test_empirical_bayes_reads_each_reference_trial_once_and_weighs_the_draws_a_full_pass_gives():
    """With a controller: the draws are those of a pass that reads every copy of the reference trials
    through the encoders (same random stream), each weighted by its Poisson likelihood (SciPy)."""
    from scipy import stats

    model, samples = make_model(co_dim=2), 3
    reference, data = counts(4, seed=5), counts(3, seed=6)
    calls = encoder_calls(model)
    result = infer_empirical_bayes(model, data, reference, samples_per_trial=samples, seed=2)
    # Both encoders read the 4 reference trials once (not each of their 3 copies), then the 3 trials.
    assert [trials for _, trials in calls] == [4, 4, 3, 3]
    draws = every_copy_rates(model, reference, samples, 2, pass_stream=False)
    for trial, rates in zip(data, result["rates"]):
        observed = ~np.isnan(trial)
        log_lik = np.array([stats.poisson.logpmf(trial[observed], r[observed]).sum() for r in draws])
        weights = np.exp(log_lik - log_lik.max())
        np.testing.assert_allclose(rates, np.tensordot(weights / weights.sum(), draws, 1), rtol=1e-4, atol=1e-6)


def test_encode_reads_the_posterior_and_controller_inputs_a_forward_pass_uses():
    model, data = make_model(co_dim=2), torch.as_tensor(np.nan_to_num(counts()))
    reading = model.encode(data)
    with torch.no_grad():
        output = model(data, sample_posteriors=False)
        handed_back = model(data, sample_posteriors=False, ic_posterior_override=(reading.ic_mean, reading.ic_std),
                            controller_inputs_override=reading.controller_inputs)
    torch.testing.assert_close(reading.ic_mean, output.ic_mean)
    torch.testing.assert_close(reading.ic_std, output.ic_std)
    torch.testing.assert_close(handed_back.readout, output.readout)
    twice = reading.repeat(2)
    torch.testing.assert_close(twice.ic_mean[5:], reading.ic_mean)
    torch.testing.assert_close(twice.controller_inputs[5:], reading.controller_inputs)
    assert make_model(co_dim=0).encode(data).controller_inputs is None


def test_relative_weights_are_exact_or_zero_never_subnormal():
    from neurodyn.train.inference import NEGLIGIBLE_LOG_WEIGHT, relative_weights

    log_weights = -torch.linspace(0, 120, 2401)
    weights = relative_weights(log_weights)
    kept = log_weights >= NEGLIGIBLE_LOG_WEIGHT
    torch.testing.assert_close(weights[kept], torch.exp(log_weights[kept]))
    assert torch.all(weights[~kept] == 0)
    # No subnormal float32 values (the raw exponentials of this range include some).
    assert torch.all((weights == 0) | (weights >= torch.finfo(torch.float32).tiny))
    raw = torch.exp(log_weights)
    assert torch.any((raw > 0) & (raw < torch.finfo(torch.float32).tiny))
    assert relative_weights(torch.tensor([-torch.inf]))[0] == 0


@pytest.mark.parametrize("refinement_steps", [0, 5])
def test_passes_on_threads_give_the_result_of_one_thread(refinement_steps):
    """Passes (and refinement blocks) on two threads draw what they draw on one: each pass its own stream,
    seeded in order from ``seed``; another seed gives other draws."""
    model, data = make_model(co_dim=2), counts(12, seed=3)
    runs = [infer(model, data, num_samples=4, batch_size=12, seed=6, threads=threads,  # 3 trials per pass
                  refinement_steps=refinement_steps) for threads in (1, 2, 2)]
    for run in runs[1:]:
        assert run.keys() == runs[0].keys()
        for name, value in run.items():
            np.testing.assert_allclose(value, runs[0][name], rtol=1e-5, atol=1e-6, err_msg=name)
    other = infer(model, data, num_samples=4, batch_size=12, seed=7, threads=2, refinement_steps=refinement_steps)
    assert not np.allclose(other["rates"], runs[0]["rates"], rtol=1e-3, atol=1e-5)
