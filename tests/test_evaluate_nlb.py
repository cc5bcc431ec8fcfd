"""vel R^2 and psth R^2 (Neural Latents Benchmark), checked against nlb_tools' own implementation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV

from neurodyn.errors import NeurodynError
from neurodyn.evaluate.nlb import NLB_ALPHAS, _cross_validated_alpha, behavior_pairs, psth_r2, velocity_r2

nlb_evaluation = pytest.importorskip("nlb_tools.evaluation", reason="pip install --no-deps nlb-tools")


def flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, x.shape[-1])


def decoding_problem(seed: int, trials: int, samples: int = 12, neurons: int = 10, dims: int = 2,
                     noise: float = 0.5):
    """Rates (expected counts per bin) and a behaviour that is a noisy linear readout of them."""
    rng = np.random.default_rng(seed)
    rates = rng.gamma(2.0, 0.4, (trials, samples, neurons))
    behavior = rates @ rng.normal(0, 1, (neurons, dims)) + noise * rng.standard_normal((trials, samples, dims))
    return rates, behavior


@pytest.mark.parametrize("seed, train_trials, noise", [(0, 30, 0.5), (1, 6, 2.0), (2, 4, 5.0), (3, 20, 0.05)])
def test_velocity_r2_matches_nlb_tools_fit_and_eval_decoder(seed, train_trials, noise):
    rates, behavior = decoding_problem(seed, train_trials + 9, noise=noise)
    train, held = slice(0, train_trials), slice(train_trials, None)
    expected = nlb_evaluation.fit_and_eval_decoder(flat(rates[train]), flat(behavior[train]),
                                                   flat(rates[held]), flat(behavior[held]))
    assert velocity_r2(rates[train], behavior[train], rates[held], behavior[held]) == pytest.approx(
        expected, rel=1e-9, abs=1e-12)
    # The whole-benchmark entry point (one decode mask) gives the same number.
    mask_train, mask_eval = np.ones((train_trials, 1), bool), np.ones((9, 1), bool)
    assert nlb_evaluation.velocity_decoding(rates[train], behavior[train], mask_train, rates[held], behavior[held],
                                            mask_eval) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed, train_trials, noise", [(1, 6, 2.0), (2, 4, 5.0), (3, 20, 0.05), (4, 3, 20.0)])
def test_penalty_is_the_one_nlbs_grid_search_picks(seed, train_trials, noise):
    rates, behavior = decoding_problem(seed, train_trials, noise=noise)
    search = GridSearchCV(Ridge(), {"alpha": NLB_ALPHAS}).fit(flat(rates), flat(behavior))
    assert _cross_validated_alpha(flat(rates), flat(behavior), NLB_ALPHAS) == search.best_params_["alpha"]


def test_penalty_grid_matters_on_these_problems():
    """The comparisons above are not trivially equal: different problems pick different penalties."""
    picked = set()
    for seed, trials, noise in [(1, 6, 2.0), (3, 20, 0.05), (4, 3, 20.0)]:
        rates, behavior = decoding_problem(seed, trials, noise=noise)
        picked.add(_cross_validated_alpha(flat(rates), flat(behavior), NLB_ALPHAS))
    assert len(picked) > 1


def test_velocity_r2_averages_dimensions_uniformly_like_nlb():
    rates, behavior = decoding_problem(5, 25, dims=3)
    behavior[..., 2] *= 100.0  # a dimension in much larger units: variance weighting would favour it
    train, held = slice(0, 16), slice(16, None)
    expected = nlb_evaluation.fit_and_eval_decoder(flat(rates[train]), flat(behavior[train]),
                                                   flat(rates[held]), flat(behavior[held]))
    assert velocity_r2(rates[train], behavior[train], rates[held], behavior[held]) == pytest.approx(expected, rel=1e-9)


def test_velocity_r2_is_one_for_an_exact_linear_readout_and_low_for_noise():
    rates, behavior = decoding_problem(6, 30, noise=0.0)
    assert velocity_r2(rates[:20], behavior[:20], rates[20:], behavior[20:]) > 0.999
    noise = np.random.default_rng(7).standard_normal(behavior.shape)
    assert velocity_r2(rates[:20], noise[:20], rates[20:], noise[20:]) < 0.05


def test_velocity_r2_without_behaviour_names_the_key():
    rates, behavior = decoding_problem(0, 10)
    with pytest.raises(NeurodynError, match="'behavior'"):
        velocity_r2(rates[:5], None, rates[5:], None)


@pytest.mark.parametrize("change, message", [
    (lambda r, b: (r[:, :-1], b), "same \\(trials, samples\\)"),
    (lambda r, b: (r, b[..., :1]), "same neurons and behaviour dimensions"),
    (lambda r, b: (r[..., 0], b), "expected 3 axes"),
])
def test_velocity_r2_shape_errors(change, message):
    rates, behavior = decoding_problem(0, 10)
    eval_rates, eval_behavior = change(rates[5:], behavior[5:])
    with pytest.raises(NeurodynError, match=message):
        velocity_r2(rates[:5], behavior[:5], eval_rates, eval_behavior)


def test_velocity_r2_leaves_out_bins_without_measured_behaviour():
    rates, behavior = decoding_problem(0, 12, samples=6)
    partial = behavior.copy()
    partial[1, 2:, :] = np.nan  # a training trial measured on its first two bins only
    partial[8] = np.nan  # an evaluation trial without behaviour (as NLB's evaluation trials come)
    kept_train = np.ones(rates[:6].shape[:2], dtype=bool)
    kept_train[1, 2:] = False
    eval_trials = [6, 7, 9, 10, 11]
    # The same score from the measured rows alone, cut out by hand and handed over as one-bin trials.
    expected = velocity_r2(rates[:6][kept_train][:, None], behavior[:6][kept_train][:, None],
                           rates[eval_trials], behavior[eval_trials])
    assert velocity_r2(rates[:6], partial[:6], rates[6:], partial[6:]) == pytest.approx(expected, abs=1e-12)
    partial[6:] = np.nan
    with pytest.raises(NeurodynError, match="no bin with measured behaviour"):
        velocity_r2(rates[:6], partial[:6], rates[6:], partial[6:])


def test_behavior_pairs_pair_rates_with_later_behaviour_on_the_main_window_only():
    rates = np.arange(10, dtype=float).reshape(1, 10, 1)
    behavior = 100 + np.arange(10, dtype=float).reshape(1, 10, 1)
    paired_rates, paired_behavior = behavior_pairs(rates, behavior, lag_bins=3, main_bins=8)
    assert paired_rates[0, :, 0].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert paired_behavior[0, :, 0].tolist() == [103, 104, 105, 106, 107, 108, 109]
    paired_rates, paired_behavior = behavior_pairs(rates, behavior, lag_bins=0, main_bins=8)
    assert (paired_behavior - paired_rates)[0, :, 0].tolist() == [100] * 8
    paired_rates, paired_behavior = behavior_pairs(rates, behavior, lag_bins=-2)
    assert paired_rates[0, :, 0].tolist() == list(range(2, 10)) and paired_behavior[0, 0, 0] == 100
    with pytest.raises(NeurodynError, match="leaves no bin"):
        behavior_pairs(rates, behavior, lag_bins=10)


def test_velocity_r2_needs_finite_values_and_enough_training_bins():
    rates, behavior = decoding_problem(0, 10, samples=2)
    bad = behavior.copy()
    bad[0, 1, 0] = np.inf
    with pytest.raises(NeurodynError, match="train behavior holds infinite"):
        velocity_r2(rates[:5], bad[:5], rates[5:], behavior[5:])
    with pytest.raises(NeurodynError, match="at least 5 training bins"):
        velocity_r2(rates[:2], behavior[:2], rates[5:], behavior[5:])


# --- psth R^2 -------------------------------------------------------------------------------------


def psth_problem(seed: int, conditions: int = 5, trials: int = 40, samples: int = 14, neurons: int = 7):
    """Per-condition true rates with trial-to-trial variability, inferred rates near the truth."""
    rng = np.random.default_rng(seed)
    condition = rng.integers(0, conditions, trials)
    condition[:conditions] = np.arange(conditions)  # every condition has a trial
    mean = rng.gamma(2.0, 0.4, (conditions, samples, neurons))
    truth = mean[condition] * rng.uniform(0.8, 1.2, (trials, samples, neurons))
    inferred = truth * rng.uniform(0.6, 1.4, truth.shape)
    return condition, truth, inferred


def nlb_psth_r2(reference, reference_condition, eval_rates, eval_condition):
    """nlb_tools' eval_psth with the target PSTH averaged over all reference trials of each condition."""
    labels = np.unique(reference_condition)
    psth = np.stack([reference[reference_condition == label].mean(axis=0) for label in labels])
    eval_cond_idx = [np.flatnonzero(eval_condition == label) for label in labels]
    return nlb_evaluation.eval_psth(psth, eval_rates, eval_cond_idx)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_psth_r2_matches_nlb_tools_eval_psth(seed):
    condition, truth, inferred = psth_problem(seed)
    scored = np.arange(10, 40, 2)  # the scored trials; the reference PSTH uses all trials
    expected = nlb_psth_r2(truth, condition, inferred[scored], condition[scored])
    assert psth_r2(inferred[scored], condition[scored], truth, condition) == pytest.approx(expected, rel=1e-9)


def test_psth_r2_matches_nlb_tools_when_some_conditions_are_not_scored():
    condition, truth, inferred = psth_problem(3, conditions=6)
    scored = np.flatnonzero(condition != 4)[5:]
    assert 4 not in condition[scored]  # NLB skips conditions without evaluation trials
    expected = nlb_psth_r2(truth, condition, inferred[scored], condition[scored])
    assert psth_r2(inferred[scored], condition[scored], truth, condition) == pytest.approx(expected, rel=1e-9)


def test_psth_r2_leaves_out_bins_where_the_reference_is_undefined_like_nlb():
    condition, truth, inferred = psth_problem(4)
    reference = truth.copy()
    reference[condition == 2, :3] = np.nan  # condition 2 has no reference in its first 3 bins
    scored = np.arange(40)
    labels = np.unique(condition)
    psth = np.stack([reference[condition == label].mean(axis=0) for label in labels])
    expected = nlb_evaluation.eval_psth(psth, inferred, [np.flatnonzero(condition == label) for label in labels])
    assert psth_r2(inferred[scored], condition[scored], reference, condition) == pytest.approx(expected, rel=1e-9)


def test_psth_r2_leaves_out_each_neurons_own_undefined_bins():
    """Where the reference PSTH is undefined for some neurons only, each neuron's R^2 uses its own defined
    bins: nlb_tools' eval_psth run one neuron at a time, averaged over neurons."""
    condition, truth, inferred = psth_problem(7)
    reference = truth.copy()
    reference[condition == 1, 5:9, 3] = np.nan
    reference[condition == 4, :2, 0] = np.nan
    labels = np.unique(condition)
    psth = np.stack([reference[condition == label].mean(axis=0) for label in labels])
    eval_cond_idx = [np.flatnonzero(condition == label) for label in labels]
    expected = np.mean([nlb_evaluation.eval_psth(psth[..., [n]], inferred[..., [n]], eval_cond_idx)
                        for n in range(psth.shape[-1])])
    assert psth_r2(inferred, condition, reference) == pytest.approx(expected, rel=1e-9)


def test_psth_r2_averages_observed_counts_ignoring_unobserved_entries():
    condition, truth, inferred = psth_problem(5)
    counts = np.random.default_rng(5).poisson(truth).astype(float)
    masked = counts.copy()
    masked[1, 4, 2] = np.nan  # trial 1 (condition 1) unobserved at one bin and neuron
    reference = masked.copy()
    # The PSTH of the masked counts is the mean over the trials that observed each entry.
    others = np.flatnonzero((condition == condition[1]) & (np.arange(40) != 1))
    reference[1, 4, 2] = counts[others, 4, 2].mean()
    labels = np.unique(condition)
    psth = np.stack([reference[condition == label].mean(axis=0) for label in labels])
    expected = nlb_evaluation.eval_psth(psth, inferred, [np.flatnonzero(condition == label) for label in labels])
    assert psth_r2(inferred, condition, masked, condition) == pytest.approx(expected, rel=1e-9)


def test_psth_r2_is_one_when_the_rates_are_the_reference():
    condition, truth, _ = psth_problem(6)
    assert psth_r2(truth, condition, truth) == pytest.approx(1.0)


def test_psth_r2_without_conditions_names_the_key():
    condition, truth, inferred = psth_problem(0)
    with pytest.raises(NeurodynError, match="'condition'"):
        psth_r2(inferred, None, truth)


def test_psth_r2_errors():
    condition, truth, inferred = psth_problem(0)
    with pytest.raises(NeurodynError, match="one label per trial"):
        psth_r2(inferred, condition[:-1], truth, condition)
    with pytest.raises(NeurodynError, match="same \\(samples, neurons\\)"):
        psth_r2(inferred[:, :-1], condition, truth, condition)
    with pytest.raises(NeurodynError, match="condition\\(s\\) 9 .*no reference trial"):
        psth_r2(inferred, np.where(condition == 0, 9, condition), truth, condition)
    with pytest.raises(NeurodynError, match="undefined"):
        psth_r2(inferred, condition, np.full_like(truth, np.nan), condition)
