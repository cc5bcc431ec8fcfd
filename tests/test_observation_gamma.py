"""Gamma observations (EMG): likelihood vs SciPy, mean, gradients, starting values, input checks."""

import numpy as np
import pytest
import torch
from scipy import stats

from neurodyn.config import LfadsConfig
from neurodyn.errors import NeurodynError
from neurodyn.observation.gamma import Gamma, gamma_nll
from neurodyn.observation.registry import make_observation_model


def test_gamma_nll_matches_scipy():
    rng = np.random.default_rng(0)
    alpha, beta = rng.uniform(0.3, 15, 200), rng.uniform(0.3, 19, 200)
    x = rng.gamma(alpha, 1.0 / beta) + 1e-6
    ours = gamma_nll(torch.tensor(alpha), torch.tensor(beta), torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours, -stats.gamma.logpdf(x, a=alpha, scale=1.0 / beta), rtol=1e-10)


def test_model_params_mean_and_nll_from_readout():
    model = Gamma(3, gamma_prior=20.0).double()
    with torch.no_grad():
        model.gamma_scales.scales.copy_(torch.tensor([[10.0, 20.0, 30.0], [5.0, 15.0, 25.0]]))
    raw = torch.tensor(np.random.default_rng(1).normal(0, 1.5, (4, 3, 2)))
    scales = model.gamma_scales.scales.detach().numpy()
    sigmoid = 1.0 / (1.0 + np.exp(-raw.numpy()))
    alpha, beta = sigmoid[..., 0] * scales[0], sigmoid[..., 1] * scales[1]
    with torch.no_grad():
        params = model.named_params(raw)
        np.testing.assert_allclose(params["alpha"].numpy(), alpha, rtol=1e-12)
        np.testing.assert_allclose(params["beta"].numpy(), beta, rtol=1e-12)
        np.testing.assert_allclose(model.mean(raw).numpy(), stats.gamma.mean(alpha, scale=1.0 / beta), rtol=1e-12)
        x = np.random.default_rng(2).uniform(0.1, 3.0, (4, 3))
        np.testing.assert_allclose(model.elementwise_nll(raw, torch.tensor(x)).numpy(),
                                   -stats.gamma.logpdf(x, a=alpha, scale=1.0 / beta), rtol=1e-10)


def test_gradients_match_finite_differences_and_zero_filled_entries_stay_finite():
    model = Gamma(2, gamma_prior=20.0, l2_gamma_distance_scale=0.5).double()
    readout = torch.tensor(np.random.default_rng(3).normal(0, 1, (3, 2, 2)), requires_grad=True)
    target = torch.tensor([[0.4, 1.2], [0.0, 2.5], [0.7, 0.0]], dtype=torch.float64)  # zeros: masked entries
    observed = (target > 0).double()

    def loss():
        return (model.elementwise_nll(readout, target) * observed).sum() + model.penalty()

    loss().backward()
    assert torch.isfinite(readout.grad).all()
    assert torch.all(readout.grad[target == 0] == 0)
    step = 1e-6
    for index in [(0, 0, 0), (1, 1, 1), (2, 0, 1)]:
        with torch.no_grad():
            readout[index] += step
            up = loss().item()
            readout[index] -= 2 * step
            down = loss().item()
            readout[index] += step
        assert readout.grad[index].item() == pytest.approx((up - down) / (2 * step), rel=1e-5)
    scales = model.gamma_scales.scales
    with torch.no_grad():
        scales[1, 0] += 3.0
    scales.grad = None
    model.penalty().backward()
    assert scales.grad[1, 0].item() == pytest.approx(0.5 * 3.0)


def test_initial_bias_matches_channel_moments():
    rng = np.random.default_rng(4)
    data = np.stack([rng.gamma(2.0, 1 / 4.0, (50, 40)), rng.gamma(5.0, 1 / 10.0, (50, 40))], axis=-1)
    data[0, :5] = np.nan
    options = Gamma.options_from_config(LfadsConfig(observation="gamma"), data)
    model = make_observation_model("gamma", 2, **options)
    with torch.no_grad():
        params = model.named_params(model.initial_readout_bias(torch.zeros(2)))
    for n in range(2):
        values = data[..., n][~np.isnan(data[..., n])]
        assert params["alpha"][n].item() / params["beta"][n].item() == pytest.approx(values.mean(), rel=1e-4)
        assert params["alpha"][n].item() == pytest.approx(values.mean() ** 2 / values.var(), rel=1e-4)


def test_non_positive_values_are_an_error_naming_file_and_key():
    with pytest.raises(NeurodynError, match=r"emg\.h5: key 'data' holds 2 value\(s\) <= 0"):
        Gamma(3).validate_targets(np.array([[[0.0, np.nan, 0.5], [-1.0, 0.2, 0.3]]]), "emg.h5")
    Gamma(3).validate_targets(np.array([[[0.1, np.nan, 0.5]]]), "emg.h5")  # positive values pass
