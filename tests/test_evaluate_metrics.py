"""Metrics checked against independent calculations (hand-written R^2, scipy's Poisson pmf)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import poisson

from neurodyn.errors import NeurodynError
from neurodyn.evaluate.metrics import RATE_FLOOR, bits_per_spike, map_to_latents, rate_r2


def _hand_r2_per_neuron(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """1 - SS_res / SS_tot for each neuron over all flattened trials x samples."""
    t = truth.reshape(-1, truth.shape[-1])
    p = pred.reshape(-1, pred.shape[-1])
    ss_res = ((t - p) ** 2).sum(axis=0)
    ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    return 1.0 - ss_res / ss_tot


def _hand_bits_per_spike(rates: np.ndarray, counts: np.ndarray) -> float:
    """NLB bits per spike with scipy's log pmf, looping over neurons to build the null model."""
    nll_model = 0.0
    nll_null = 0.0
    for n in range(counts.shape[-1]):
        c = counts[..., n]
        r = rates[..., n]
        seen = ~np.isnan(c)
        if not seen.any():
            continue
        mean_count = c[seen].mean()
        nll_model -= poisson.logpmf(c[seen], r[seen]).sum()
        nll_null -= poisson.logpmf(c[seen], mean_count).sum()
    return (nll_null - nll_model) / np.nansum(counts) / np.log(2)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------- rate R^2 ----------

def test_rate_r2_equals_mean_of_per_neuron_r2(rng):
    truth = rng.gamma(2.0, 1.0, size=(7, 20, 5))
    pred = truth + rng.normal(0, 0.5, size=truth.shape) * np.arange(1, 6)  # neuron-specific noise
    assert rate_r2(truth, pred) == pytest.approx(_hand_r2_per_neuron(truth, pred).mean(), rel=1e-12)


def test_rate_r2_is_one_for_perfect_rates_and_rejects_shape_mismatch(rng):
    truth = rng.gamma(2.0, 1.0, size=(4, 10, 3))
    assert rate_r2(truth, truth.copy()) == pytest.approx(1.0)
    with pytest.raises(NeurodynError, match="shape"):
        rate_r2(truth, truth[:, :, :2])


# ---------- bits per spike ----------

def _poisson_data(rng, shape=(40, 30, 6), drop=0.3):
    log_rates = rng.normal(0.0, 0.8, size=shape) + np.linspace(-1, 1, shape[-1])
    rates = np.exp(log_rates)
    counts = rng.poisson(rates).astype(float)
    counts[rng.random(shape) < drop] = np.nan  # unobserved entries
    return rates, counts


def test_bits_per_spike_matches_scipy_with_masked_entries(rng):
    true_rates, counts = _poisson_data(rng)
    model_rates = true_rates * rng.uniform(0.5, 1.5, size=true_rates.shape)  # an imperfect model
    assert bits_per_spike(model_rates, counts) == pytest.approx(_hand_bits_per_spike(model_rates, counts), rel=1e-10)


def test_bits_per_spike_ignores_rates_at_unobserved_entries(rng):
    true_rates, counts = _poisson_data(rng)
    changed = true_rates.copy()
    changed[np.isnan(counts)] = 1e3  # wildly wrong, but only where nothing was observed
    assert bits_per_spike(changed, counts) == pytest.approx(bits_per_spike(true_rates, counts), rel=1e-12)


def test_bits_per_spike_is_zero_for_null_model_and_positive_for_true_rates(rng):
    true_rates, counts = _poisson_data(rng)
    neuron_means = np.nanmean(counts.reshape(-1, counts.shape[-1]), axis=0)
    null_rates = np.broadcast_to(neuron_means, counts.shape)
    assert bits_per_spike(null_rates, counts) == pytest.approx(0.0, abs=1e-12)
    assert bits_per_spike(true_rates, counts) > 0.05


def test_bits_per_spike_clips_zero_rates(rng):
    true_rates, counts = _poisson_data(rng, drop=0.0)
    rates = true_rates.copy()
    rates[counts == 0] = 0.0  # zero rate where no spike: finite, same as the floor value
    floored = np.where(counts == 0, RATE_FLOOR, true_rates)
    result = bits_per_spike(rates, counts)
    assert np.isfinite(result)
    assert result == pytest.approx(_hand_bits_per_spike(floored, counts), rel=1e-10)


def test_bits_per_spike_without_observed_spikes_is_an_error():
    counts = np.full((2, 3, 4), np.nan)
    counts[0, 0, 0] = 0.0
    with pytest.raises(NeurodynError, match="no spikes"):
        bits_per_spike(np.ones_like(counts), counts)


# ---------- map_to_latents ----------

def test_map_to_latents_recovers_linear_map_of_log_rates(rng):
    num_neurons, num_latents = 12, 3
    weights = rng.normal(size=(num_neurons, num_latents))
    offset = rng.normal(size=num_latents)
    train_log_rates = rng.normal(size=(30, 25, num_neurons))
    test_log_rates = rng.normal(size=(10, 25, num_neurons))
    train_latents = train_log_rates @ weights + offset
    test_latents = test_log_rates @ weights + offset

    result = map_to_latents(np.exp(train_log_rates), train_latents, np.exp(test_log_rates), test_latents,
                            alphas=[1e-4, 1e-2, 1.0, 100.0])
    assert result.r2 > 0.999
    assert result.test_predictions.shape == test_latents.shape
    np.testing.assert_allclose(result.test_predictions, test_latents, atol=0.05 * test_latents.std())
    assert result.r2_per_dim.shape == (num_latents,)
    hand = _hand_r2_per_neuron(test_latents, result.test_predictions)
    np.testing.assert_allclose(result.r2_per_dim, hand, rtol=1e-10)
    assert result.r2 == pytest.approx(hand.mean(), rel=1e-10)
    assert result.alpha in (1e-4, 1e-2, 1.0, 100.0)
    assert result.alpha <= 1.0  # a noiseless linear map should not be shrunk hard


def test_map_to_latents_gives_low_r2_on_noise(rng):
    rates = np.exp(rng.normal(size=(40, 20, 10)))
    latents = rng.normal(size=(40, 20, 3))  # independent of the rates
    result = map_to_latents(rates[:30], latents[:30], rates[30:], latents[30:])
    assert result.r2 < 0.05
    assert np.all(result.r2_per_dim < 0.05)


def test_map_to_latents_rejects_mismatched_shapes(rng):
    rates = np.ones((5, 10, 4))
    with pytest.raises(NeurodynError, match="trials, samples"):
        map_to_latents(rates, np.zeros((5, 9, 3)), rates, np.zeros((5, 10, 3)))
