"""Baselines (spike smoothing, NLB's smoothing co-smoothing baseline), each checked against an independent
calculation: explicit loops, scikit-learn's PoissonRegressor, known true rates."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import PoissonRegressor

from neurodyn.errors import NeurodynError
from neurodyn.evaluate.baselines import (
    fit_poisson_glm,
    gaussian_smooth,
    leave_centre_out_smooth,
    smoothed_velocity_r2,
    smoothing_baseline,
    smoothing_glm_cosmoothing,
    trial_folds,
)
from neurodyn.evaluate.cobps import co_bps
from neurodyn.evaluate.metrics import bits_per_spike, rate_r2


def loop_smooth(counts: np.ndarray, sigma: float, centre: bool = True, truncate: float = 4.0) -> np.ndarray:
    """Gaussian-weighted average of the observed counts within reach, one entry at a time."""
    radius = int(truncate * sigma + 0.5)
    trials, bins, neurons = counts.shape
    out = np.full(counts.shape, np.nan)
    for trial in range(trials):
        for neuron in range(neurons):
            for t in range(bins):
                total = weight = 0.0
                for s in range(max(0, t - radius), min(bins, t + radius + 1)):
                    if np.isnan(counts[trial, s, neuron]) or (s == t and not centre):
                        continue
                    w = np.exp(-0.5 * ((s - t) / sigma) ** 2)
                    total += w * counts[trial, s, neuron]
                    weight += w
                if weight > 0:
                    out[trial, t, neuron] = total / weight
    return out


def counts_with_gaps(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(1.5, (3, 23, 2)).astype(np.float64)
    counts[0, 2, 0] = counts[1, 0, 1] = counts[2, 22, 1] = np.nan  # isolated gaps, one at each edge
    counts[1, 5:17, 0] = np.nan  # a long gap: its middle has no observed bin within reach of a narrow kernel
    return counts


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.5, 6.0])
def test_gaussian_smooth_is_the_weighted_average_of_observed_neighbours(sigma):
    counts = counts_with_gaps()
    expected = loop_smooth(counts, sigma)
    smoothed = gaussian_smooth(counts, sigma)
    np.testing.assert_array_equal(np.isnan(smoothed), np.isnan(expected))
    np.testing.assert_allclose(smoothed, expected, rtol=1e-10, equal_nan=True)
    if sigma == 0.7:
        assert np.isnan(smoothed[1, 9:13, 0]).all()  # no observed bin within 3 bins: stays NaN


def test_gaussian_smooth_zero_width_is_identity_and_input_untouched():
    counts = counts_with_gaps()
    before = counts.copy()
    np.testing.assert_array_equal(gaussian_smooth(counts, 0.0), counts)
    gaussian_smooth(counts, 2.0)
    np.testing.assert_array_equal(counts, before)


@pytest.mark.parametrize("sigma", [0.5, 1.5, 4.0])
def test_leave_centre_out_smooth_ignores_the_centre_bin(sigma):
    counts = counts_with_gaps(1)
    predicted = leave_centre_out_smooth(counts, sigma)
    expected = loop_smooth(counts, sigma, centre=False)
    np.testing.assert_array_equal(np.isnan(predicted), np.isnan(expected))
    np.testing.assert_allclose(predicted, expected, rtol=1e-9, atol=1e-12, equal_nan=True)
    changed = counts.copy()
    changed[0, 10, 1] = 40.0  # the prediction at a bin does not depend on that bin's count
    assert leave_centre_out_smooth(changed, sigma)[0, 10, 1] == pytest.approx(predicted[0, 10, 1], rel=1e-12)


def poisson_population(period_bins: float, mean: float, depth: float, seed: int,
                       trials: int = 30, bins: int = 200, neurons: int = 12):
    """Sinusoidal true rates (expected counts per bin) with random phases, and Poisson counts of them."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, (trials, 1, neurons))
    t = np.arange(bins)[None, :, None]
    rates = mean * (1.0 + depth * np.sin(2 * np.pi * t / period_bins + phase))
    return rates, rng.poisson(rates).astype(np.float64)


def test_smoothing_baseline_picks_wide_kernels_for_slow_rates_and_narrow_for_fast():
    widths = (1.0, 3.0, 10.0)
    slow_rates, slow_counts = poisson_population(period_bins=300.0, mean=0.3, depth=0.8, seed=0)
    fast_rates, fast_counts = poisson_population(period_bins=10.0, mean=3.0, depth=0.9, seed=1)
    slow = smoothing_baseline(slow_counts[:20], slow_counts[20:], widths)
    fast = smoothing_baseline(fast_counts[:20], fast_counts[20:], widths)
    assert slow.width_bins == 10.0
    assert fast.width_bins == 1.0
    for result, rates, counts in ((slow, slow_rates, slow_counts), (fast, fast_rates, fast_counts)):
        assert result.scores.shape == (3,) and np.argmax(result.scores) == list(widths).index(result.width_bins)
        np.testing.assert_allclose(result.eval_rates, gaussian_smooth(counts[20:], result.width_bins))
        assert rate_r2(rates[20:], result.eval_rates) > rate_r2(rates[20:], counts[20:]) + 0.1


def test_smoothing_baseline_score_is_the_leave_centre_out_poisson_log_likelihood():
    _, counts = poisson_population(period_bins=40.0, mean=0.5, depth=0.5, seed=3, trials=4, bins=30, neurons=3)
    result = smoothing_baseline(counts, counts, (0.8, 2.0))
    for width, score in zip((0.8, 2.0), result.scores):
        rates = np.maximum(loop_smooth(counts, width, centre=False), 1e-9)
        log_factorial = np.vectorize(lambda n: np.sum(np.log(np.arange(1, int(n) + 1))))(counts)
        assert score == pytest.approx(np.mean(counts * np.log(rates) - rates - log_factorial), rel=1e-10)


@pytest.mark.parametrize("alpha", [0.0, 0.01, 1.0])
def test_fit_poisson_glm_matches_sklearn_poisson_regressor(alpha):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(600, 6)) @ rng.normal(size=(6, 6))  # correlated inputs
    x[:, 5] = 2.0 * x[:, 0] - x[:, 1] if alpha > 0 else x[:, 5]  # collinear (unique minimum only with alpha > 0)
    weights = rng.normal(scale=0.15, size=(6, 3))
    counts = rng.poisson(np.exp(x @ weights - 1.0)).astype(np.float64)
    counts[:50, 2] = np.nan  # unobserved rows of one column are left out of its fit
    coef, intercept = fit_poisson_glm(x, counts, alpha)
    for neuron in range(3):
        rows = ~np.isnan(counts[:, neuron])
        reference = PoissonRegressor(alpha=alpha, tol=1e-12, max_iter=100_000).fit(x[rows], counts[rows, neuron])
        np.testing.assert_allclose(coef[:, neuron], reference.coef_, atol=2e-5)
        assert intercept[neuron] == pytest.approx(reference.intercept_, abs=2e-5)


def loglinear_population(seed: int = 0, trials: int = 40, bins: int = 100, heldin: int = 25, heldout: int = 8,
                         heldin_rate: float = 0.25):
    """Held-in rates from smooth latents; held-out log-rates an exact linear function of held-in log-rates."""
    rng = np.random.default_rng(seed)
    t = np.arange(bins)[None, :, None]
    latents = np.sin(2 * np.pi * t / rng.uniform(40, 90, (1, 1, 3)) + rng.uniform(0, 2 * np.pi, (trials, 1, 3)))
    log_heldin = latents @ rng.normal(scale=0.5, size=(3, heldin)) + np.log(heldin_rate)
    mixing = rng.normal(scale=1.3 / np.sqrt(heldin), size=(heldin, heldout))
    log_heldout = (log_heldin - np.log(heldin_rate)) @ mixing + np.log(0.3)
    rates = np.exp(np.concatenate([log_heldin, log_heldout], axis=2))
    return rates, rng.poisson(rates).astype(np.float64), np.arange(heldin, heldin + heldout)


def test_cosmoothing_recovers_loglinear_heldout_rates_close_to_the_oracle():
    rates, counts, heldout = loglinear_population(trials=60, heldin=50, heldin_rate=0.5)
    heldin = np.arange(heldout[0])
    train, test = slice(0, 45), slice(45, 60)
    result = smoothing_glm_cosmoothing(counts[train][..., heldin], counts[train][..., heldout], counts[test][..., heldin],
                                       widths_bins=(1.0, 4.0), alphas=(1e-3, 1e-1), num_folds=3)
    predicted = counts[test].copy()
    predicted[..., heldout] = result.eval_rates_heldout
    predicted[..., heldin] = result.eval_rates_heldin
    score = co_bps(predicted, counts[test], heldout)
    oracle = co_bps(rates[test], counts[test], heldout)
    assert score > 0.2  # oracle: 0.36 (the true rates); the baseline sees only noisy smoothed held-in spikes
    assert score > 0.85 * oracle
    assert score == pytest.approx(bits_per_spike(result.eval_rates_heldout, counts[test][..., heldout]))
    assert result.width_bins == 4.0  # slowly varying rates: the wider kernel
    np.testing.assert_allclose(result.eval_rates_heldin, gaussian_smooth(counts[test][..., heldin], 4.0))


def test_cosmoothing_cross_validation_matches_sklearn_fits_on_contiguous_trial_folds():
    rates, counts, heldout = loglinear_population(seed=5, trials=9, bins=40, heldin=6, heldout=3)
    heldin = np.arange(heldout[0])
    widths, alphas = (1.5, 3.0), (0.01, 0.3)
    result = smoothing_glm_cosmoothing(counts[..., heldin], counts[..., heldout], counts[:2][..., heldin],
                                       widths_bins=widths, alphas=alphas, num_folds=3)
    y = counts[..., heldout].reshape(-1, 3)
    for i, width in enumerate(widths):
        x = np.log(loop_smooth(counts[..., heldin], width) + 1e-4).reshape(-1, 6)
        for j, alpha in enumerate(alphas):
            pooled = np.empty_like(y)
            for held_trials in ([0, 1, 2], [3, 4, 5], [6, 7, 8]):
                held = np.isin(np.repeat(np.arange(9), 40), held_trials)
                for neuron in range(3):
                    glm = PoissonRegressor(alpha=alpha, tol=1e-12, max_iter=100_000).fit(x[~held], y[~held, neuron])
                    pooled[held, neuron] = glm.predict(x[held])
            assert result.cv_cobps[i, j] == pytest.approx(bits_per_spike(pooled, y), abs=1e-5)
    best = np.unravel_index(np.argmax(result.cv_cobps), result.cv_cobps.shape)
    assert (result.width_bins, result.alpha) == (widths[best[0]], alphas[best[1]])


def test_trial_folds_are_contiguous_whole_trials():
    folds = trial_folds(10, 3)
    assert [fold.tolist() for fold in folds] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_choices_never_depend_on_the_eval_trials():
    rates, counts, heldout = loglinear_population(seed=2, trials=24, bins=60, heldin=10, heldout=4)
    heldin = np.arange(heldout[0])
    rng = np.random.default_rng(9)
    other_eval = rng.poisson(5.0, (7, 45, counts.shape[2])).astype(np.float64)  # other trials, bins and rates
    kwargs = dict(widths_bins=(1.0, 3.0, 6.0), alphas=(0.01, 0.1), num_folds=4)
    first = smoothing_glm_cosmoothing(counts[:18][..., heldin], counts[:18][..., heldout], counts[18:][..., heldin],
                                      **kwargs)
    second = smoothing_glm_cosmoothing(counts[:18][..., heldin], counts[:18][..., heldout], other_eval[..., heldin],
                                       **kwargs)
    assert (first.width_bins, first.alpha) == (second.width_bins, second.alpha)
    np.testing.assert_array_equal(first.cv_cobps, second.cv_cobps)
    np.testing.assert_array_equal(first.coef, second.coef)
    assert second.eval_rates_heldout.shape == (7, 45, 4)
    np.testing.assert_allclose(first.predict_heldout(counts[18:][..., heldin]), first.eval_rates_heldout)

    smooth_first = smoothing_baseline(counts[:18], counts[18:], (1.0, 3.0, 6.0))
    smooth_second = smoothing_baseline(counts[:18], other_eval, (1.0, 3.0, 6.0))
    assert smooth_first.width_bins == smooth_second.width_bins
    np.testing.assert_array_equal(smooth_first.scores, smooth_second.scores)


def test_smoothed_velocity_r2_decodes_behaviour_linear_in_the_rates():
    rates, counts, _ = loglinear_population(seed=3, trials=30, bins=80, heldin=20, heldout=2)
    behavior = rates @ np.random.default_rng(1).normal(size=(rates.shape[2], 2))
    score = smoothed_velocity_r2(counts[:24], behavior[:24], counts[24:], behavior[24:], 4.0)
    assert 0.5 < score <= 1.0


GOOD = np.ones((4, 10, 3))


@pytest.mark.parametrize("call", [
    lambda: gaussian_smooth(np.ones((10, 3)), 2.0),
    lambda: gaussian_smooth(GOOD, -1.0),
    lambda: gaussian_smooth(-GOOD, 1.0),
    lambda: gaussian_smooth(GOOD * np.inf, 1.0),
    lambda: smoothing_baseline(GOOD, np.ones((2, 10, 4))),
    lambda: smoothing_baseline(GOOD, GOOD, widths_bins=()),
    lambda: smoothing_baseline(GOOD, GOOD, widths_bins=(0.05,)),
    lambda: smoothing_glm_cosmoothing(GOOD, np.ones((5, 10, 2)), GOOD),
    lambda: smoothing_glm_cosmoothing(GOOD, np.ones((4, 9, 2)), GOOD),
    lambda: smoothing_glm_cosmoothing(GOOD, np.ones((4, 10, 2)), np.ones((2, 10, 5))),
    lambda: smoothing_glm_cosmoothing(GOOD, np.ones((4, 10, 2)), GOOD, num_folds=5),
    lambda: smoothing_glm_cosmoothing(GOOD, np.zeros((4, 10, 2)), GOOD, num_folds=2),
    lambda: smoothing_glm_cosmoothing(GOOD, np.ones((4, 10, 2)), GOOD, alphas=(-1.0,), num_folds=2),
    lambda: fit_poisson_glm(np.ones((5, 2)), np.ones((4, 1)), 0.1),
])
def test_bad_input_raises_one_line_neurodyn_error(call):
    with pytest.raises(NeurodynError) as error:
        call()
    assert "\n" not in str(error.value) and str(error.value)
