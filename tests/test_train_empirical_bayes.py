"""Empirical-Bayes inference: training trials' posterior draws weighted by each trial's likelihood."""

import numpy as np
import pytest
import torch
from scipy import stats

from neurodyn.config import LfadsConfig
from neurodyn.errors import NeurodynError
from neurodyn.lfads.model import LFADS
from neurodyn.observation.poisson import Poisson
from neurodyn.train.inference import infer, infer_empirical_bayes

T, N = 8, 5


def deterministic_model() -> LFADS:
    """A small LFADS whose IC posterior has (numerically) zero variance, so every draw is the posterior
    mean and the expected outputs can be computed from one deterministic pass per reference trial."""
    torch.manual_seed(0)
    config = LfadsConfig(ic_enc_dim=6, ic_dim=3, gen_dim=8, factors_dim=4, co_dim=0, ic_post_var_min=0.0,
                         device="cpu")
    model = LFADS(config, N, Poisson(N))
    with torch.no_grad():
        model.ic_posterior.weight[3:] = 0.0    # log-variance rows of the IC posterior
        model.ic_posterior.bias[3:] = -60.0
    return model.eval()


@pytest.fixture(scope="module")
def setting():
    rng = np.random.default_rng(0)
    reference = rng.poisson(1.0, size=(3, T, N)).astype(np.float32)
    data = rng.poisson(1.0, size=(4, T, N)).astype(np.float32)
    data[rng.random(data.shape) < 0.5] = np.nan  # SBTT: half the entries unobserved
    model = deterministic_model()
    reference_rates = infer(model, reference, num_samples=1)["rates_posterior_mean"]
    return model, reference, data, reference_rates


def expected_average(data: np.ndarray, reference_rates: np.ndarray, excluded=()) -> np.ndarray:
    """Weights from scipy's Poisson log-pmf over each trial's observed entries, computed independently."""
    out = []
    for trial in data:
        observed = ~np.isnan(trial)
        log_lik = np.array([stats.poisson.logpmf(trial[observed], rates[observed]).sum() if m not in excluded
                            else -np.inf for m, rates in enumerate(reference_rates)])
        weights = np.exp(log_lik - log_lik.max())
        out.append(np.tensordot(weights / weights.sum(), reference_rates, 1))
    return np.stack(out)


def test_rates_are_the_likelihood_weighted_average_of_the_reference_draws(setting):
    model, reference, data, reference_rates = setting
    result = infer_empirical_bayes(model, data, reference, samples_per_trial=2)
    np.testing.assert_allclose(result["rates"], expected_average(data, reference_rates), rtol=1e-4)
    assert result["factors"].shape == (4, T, 4)


def test_blocking_over_references_and_trials_does_not_change_the_result(setting):
    model, reference, data, _ = setting
    whole = infer_empirical_bayes(model, data, reference, samples_per_trial=1)
    blocked = infer_empirical_bayes(model, data, reference, samples_per_trial=1, batch_size=1, max_pair_entries=1)
    np.testing.assert_allclose(blocked["rates"], whole["rates"], rtol=1e-5)


def test_a_trial_is_not_weighted_against_its_own_draws(setting):
    model, reference, _, reference_rates = setting
    # Reference trials as data: trial 1 may use only the draws of trials 0 and 2.
    result = infer_empirical_bayes(model, reference, reference, samples_per_trial=1,
                                   data_ids=np.array([10, 11, 12]), reference_ids=np.array([10, 11, 12]))
    expected = expected_average(reference[1:2], reference_rates, excluded=(1,))
    np.testing.assert_allclose(result["rates"][1:2], expected, rtol=1e-4)


def test_no_reference_left_and_mismatched_shapes_are_clear_errors(setting):
    model, reference, data, _ = setting
    with pytest.raises(NeurodynError, match="no reference draw"):
        infer_empirical_bayes(model, reference[:1], reference[:1], data_ids=np.array([0]), reference_ids=np.array([0]))
    with pytest.raises(NeurodynError, match="cannot be weighted"):
        infer_empirical_bayes(model, data[:, :4], reference)


def test_heldout_neurons_are_not_evidence(setting):
    _, reference, data, _ = setting
    model = deterministic_model()
    model.encoder_input_mask[2] = 0.0  # neuron 2 held out (co-bps)
    changed = data.copy()
    changed[:, :, 2] = 7.0
    first = infer_empirical_bayes(model, data, reference, samples_per_trial=1)
    second = infer_empirical_bayes(model, changed, reference, samples_per_trial=1)
    np.testing.assert_allclose(first["rates"], second["rates"], rtol=1e-6)
    # ...while an observed neuron's counts do move the weights.
    changed[:, :, 3] = 7.0
    third = infer_empirical_bayes(model, changed, reference, samples_per_trial=1)
    assert not np.allclose(first["rates"], third["rates"], rtol=1e-3)
