"""Continuous observations (gaussian, mse): likelihoods vs SciPy and closed forms, gradients, the learned
variance, the continuous-signal metrics and the Lorenz continuous generator."""

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import r2_score

from neurodyn.config import LfadsConfig
from neurodyn.data.seed_format import write_dataset
from neurodyn.errors import NeurodynError
from neurodyn.evaluate.metrics import gaussian_log_likelihood, observed_r2
from neurodyn.observation.gaussian import VARIANCE_FLOOR, Gaussian, SquaredError, channel_variances
from neurodyn.observation.registry import make_observation_model, observation_class, read_dataset_for
from neurodyn.synth.lorenz_continuous import make_lorenz_continuous


def _gaussian(variances) -> Gaussian:
    """A Gaussian model in float64 whose learned variances are exactly ``variances`` (not float32-rounded)."""
    model = Gaussian(len(variances), initial_variance=list(variances)).double()
    with torch.no_grad():
        model.log_variance.copy_(torch.log(torch.tensor(np.asarray(variances, dtype=np.float64))))
    return model


def test_gaussian_nll_matches_scipy_per_channel():
    rng = np.random.default_rng(0)
    variances = rng.uniform(0.05, 4.0, 5)
    model = _gaussian(variances)
    readout = rng.normal(0, 2, (3, 7, 5, 1))
    target = rng.normal(0, 2, (3, 7, 5))  # negative values are data too
    with torch.no_grad():
        ours = model.elementwise_nll(torch.tensor(readout), torch.tensor(target)).numpy()
        mean = model.mean(torch.tensor(readout)).numpy()
        std = model.named_params(torch.tensor(readout))["std"].numpy()
    # The model's variance is its learned one plus the floor: compare with SciPy at that variance.
    effective = variances * (1 + VARIANCE_FLOOR)
    np.testing.assert_allclose(ours, -stats.norm.logpdf(target, loc=readout[..., 0], scale=np.sqrt(effective)),
                               rtol=1e-10)
    np.testing.assert_allclose(mean, readout[..., 0])
    np.testing.assert_allclose(std, np.broadcast_to(np.sqrt(effective), target.shape), rtol=1e-9)
    # The refinement's NLL drops only the constant log(2 pi) / 2.
    with torch.no_grad():
        up_to_constant = model.elementwise_nll_up_to_constant(torch.tensor(readout), torch.tensor(target)).numpy()
    np.testing.assert_allclose(ours - up_to_constant, 0.5 * np.log(2 * np.pi), rtol=1e-12)


def test_a_population_of_variances_broadcasts_over_its_workers_entries():
    rng = np.random.default_rng(1)
    per_worker = rng.uniform(0.1, 3.0, (2, 4))  # (workers, channels), as the population engine stacks them
    model = _gaussian(np.ones(4))
    model.log_variance = torch.nn.Parameter(torch.tensor(np.log(per_worker)))
    readout = rng.normal(0, 1, (2, 3, 6, 4, 1))  # (workers, trials, bins, channels, 1)
    target = rng.normal(0, 1, (2, 3, 6, 4))
    with torch.no_grad():
        ours = model.elementwise_nll(torch.tensor(readout), torch.tensor(target)).numpy()
    for worker in range(2):
        scale = np.sqrt(per_worker[worker] + VARIANCE_FLOOR)  # the floor of a unit initial variance
        np.testing.assert_allclose(ours[worker], -stats.norm.logpdf(target[worker], readout[worker, ..., 0], scale),
                                   rtol=1e-10)


def test_squared_error_is_the_squared_residual():
    rng = np.random.default_rng(2)
    readout, target = rng.normal(0, 3, (4, 5, 6, 1)), rng.normal(0, 3, (4, 5, 6))
    model = SquaredError(6).double()
    with torch.no_grad():
        np.testing.assert_allclose(model.elementwise_nll(torch.tensor(readout), torch.tensor(target)).numpy(),
                                   (target - readout[..., 0]) ** 2, rtol=1e-12)
        np.testing.assert_allclose(model.mean(torch.tensor(readout)).numpy(), readout[..., 0])
    assert model.named_params(torch.tensor(readout)) == {}


def test_gradients_match_finite_differences():
    model = _gaussian([0.5, 2.0])
    rng = np.random.default_rng(3)
    readout = torch.tensor(rng.normal(0, 1, (3, 4, 2, 1)), requires_grad=True)
    target = torch.tensor(rng.normal(0, 1.5, (3, 4, 2)))

    def loss():
        return model.elementwise_nll(readout, target).sum()

    loss().backward()
    step = 1e-6
    for tensor, index in [(readout, (0, 1, 0, 0)), (readout, (2, 3, 1, 0)), (model.log_variance, (0,)),
                          (model.log_variance, (1,))]:
        with torch.no_grad():
            tensor[index] += step
            up = loss().item()
            tensor[index] -= 2 * step
            down = loss().item()
            tensor[index] += step
        assert tensor.grad[index].item() == pytest.approx((up - down) / (2 * step), rel=1e-6)


def test_the_learned_variance_converges_to_the_mean_squared_residual():
    # With the mean fixed, the maximum-likelihood variance of each channel is its mean squared residual.
    rng = np.random.default_rng(4)
    scales = np.array([0.3, 1.0, 2.5])
    residual = rng.normal(0, 1, (400, 3)) * scales
    model = _gaussian([1.0, 1.0, 1.0])
    optimiser = torch.optim.LBFGS([model.log_variance], max_iter=500, tolerance_grad=1e-14,
                                  tolerance_change=1e-16, line_search_fn="strong_wolfe")
    readout, target = torch.zeros(400, 3, 1, dtype=torch.float64), torch.tensor(residual)

    def closure():
        optimiser.zero_grad()
        value = model.elementwise_nll(readout, target).mean()
        value.backward()
        return value

    optimiser.step(closure)
    with torch.no_grad():
        learned = model.variance(target)
    np.testing.assert_allclose(learned.numpy(), (residual ** 2).mean(axis=0), rtol=1e-6)


def test_the_variance_never_falls_below_its_floor():
    model = _gaussian([2.0, 0.5])
    with torch.no_grad():
        model.log_variance.fill_(-200.0)  # a channel fit perfectly drives its variance towards zero
        floor = model.variance(torch.zeros(2))
        value = model.elementwise_nll(torch.zeros(1, 2, 1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64))
    np.testing.assert_allclose(floor.numpy(), VARIANCE_FLOOR * np.array([2.0, 0.5]), rtol=1e-6)
    assert torch.isfinite(value).all()


def test_starting_variances_are_each_channels_variance_over_its_observed_entries():
    rng = np.random.default_rng(5)
    data = rng.normal(0, [0.5, 2.0, 1.0], (20, 15, 3))
    data[rng.random(data.shape) < 0.3] = np.nan
    data[..., 2] = 4.0  # no spread: variance 1 so that the floor and the start stay positive
    np.testing.assert_allclose(channel_variances(data), [*np.nanvar(data[..., :2].reshape(-1, 2), axis=0), 1.0])
    options = Gaussian.options_from_config(LfadsConfig(observation="gaussian"), data)
    model = make_observation_model("gaussian", 3, **options)
    np.testing.assert_allclose(torch.exp(model.log_variance).detach().numpy(), options["initial_variance"], rtol=1e-6)
    assert observation_class("mse") is SquaredError


def test_observed_r2_is_sklearns_on_full_data_and_skips_unobserved_entries():
    rng = np.random.default_rng(6)
    observed = rng.normal(0, 1, (10, 8, 4))
    inferred = observed + rng.normal(0, 0.5, observed.shape)
    assert observed_r2(inferred, observed) == pytest.approx(
        r2_score(observed.reshape(-1, 4), inferred.reshape(-1, 4)), rel=1e-12)
    masked = observed.copy()
    masked[rng.random(masked.shape) < 0.4] = np.nan
    per_channel = []
    for n in range(4):
        seen = ~np.isnan(masked[..., n])
        per_channel.append(r2_score(masked[..., n][seen], inferred[..., n][seen]))
    assert observed_r2(inferred, masked) == pytest.approx(np.mean(per_channel), rel=1e-12)
    with pytest.raises(NeurodynError, match="no channel"):
        observed_r2(inferred, np.full_like(observed, np.nan))


def test_gaussian_log_likelihood_matches_scipy_on_observed_entries():
    rng = np.random.default_rng(7)
    mean, std = rng.normal(0, 1, (5, 6, 3)), rng.uniform(0.2, 2.0, (5, 6, 3))
    observed = rng.normal(mean, std)
    observed[0, :2] = np.nan
    seen = ~np.isnan(observed)
    expected = stats.norm.logpdf(observed[seen], mean[seen], std[seen]).mean()
    assert gaussian_log_likelihood(mean, std, observed) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(NeurodynError, match="positive"):
        gaussian_log_likelihood(mean, np.zeros_like(std), observed)


def test_lorenz_continuous_is_a_linear_readout_plus_per_channel_noise(tmp_path):
    dataset = make_lorenz_continuous(num_neurons=12, num_conditions=10, trials_per_condition=20, seed=3)
    attrs = dataset.attrs
    np.testing.assert_allclose(dataset.truth, dataset.latents @ attrs["readout_weights"].T + attrs["readout_offsets"],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(attrs["readout_weights"], axis=1), 1.0)
    residual_std = (dataset.data - dataset.truth).reshape(-1, 12).std(axis=0)
    np.testing.assert_allclose(residual_std, attrs["noise_std"], rtol=0.06)
    assert (dataset.data < 0).any() and (dataset.truth < 0).any()
    # A file of negative values and a negative truth reads back; a spike-count model refuses it.
    write_dataset(tmp_path / "traces.h5", dataset)
    assert read_dataset_for(tmp_path / "traces.h5", "gaussian").truth.min() < 0
    with pytest.raises(NeurodynError, match="traces.h5"):
        read_dataset_for(tmp_path / "traces.h5", "poisson")
