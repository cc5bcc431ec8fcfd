"""The chaotic-RNN spiking set (LFADS paper design): the network's integration and chaos, the readout, the file."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from neurodyn.data.seed_format import read_dataset, write_dataset
from neurodyn.errors import NeurodynError
from neurodyn.synth.chaotic_rnn import (integrate_rnn, largest_lyapunov, make_chaotic_rnn_spikes, rnn_connectivity,
                                        rnn_derivative)

from synth_helpers import assert_counts_match_truth

# Small and fast: the first random network as it is (no chaos check) unless a test asks for one.
SMALL = dict(num_neurons=24, num_conditions=6, trials_per_condition=5, num_bins=40, bin_ms=10.0, rnn_units=20,
             min_lyapunov_per_s=None)


@pytest.fixture(scope="module")
def default_set():
    """The defaults (50 neurons, 20 conditions x 10 trials, 100 bins of 10 ms, a chaotic 50-unit network)."""
    return make_chaotic_rnn_spikes(seed=0)


@pytest.fixture(scope="module")
def default_network():
    """``(J, estimated largest Lyapunov exponent, candidates drawn)`` behind ``default_set``."""
    return rnn_connectivity(0, 50, 2.5, 25.0, 1.0)


def random_network(units: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((units, units)) / np.sqrt(units)


# --- the network --------------------------------------------------------------------------------


def test_rk4_integration_matches_scipy():
    connectivity, gamma, tau = random_network(30, 1), 2.5, 0.025
    start = np.random.default_rng(2).standard_normal((2, 30))
    ours = integrate_rnn(start, connectivity, gamma, tau, dt=0.001, num_samples=6, steps_per_sample=10)
    times = 0.01 * np.arange(6)
    for trial in range(2):
        reference = solve_ivp(lambda t, x: rnn_derivative(x, connectivity, gamma, tau), (0.0, times[-1]),
                              start[trial], method="DOP853", t_eval=times, rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(ours[trial], reference.y.T, atol=3e-6)  # 1 ms steps, tau = 25 ms


def test_the_derivative_is_the_rate_equation():
    connectivity = random_network(5, 3)
    x = np.random.default_rng(4).standard_normal((1, 5))
    expected = (-x[0] + 1.7 * connectivity @ np.tanh(x[0])) / 0.02
    np.testing.assert_allclose(rnn_derivative(x, connectivity, 1.7, 0.02)[0], expected, rtol=1e-12)


def test_the_chosen_network_is_chaotic_and_a_weak_gain_decays(default_network):
    tau = 0.025
    connectivity, exponent, _ = default_network
    assert exponent > 1.0
    # Independent crude estimate: two states 1e-7 apart, after 1 s on the attractor, drift apart.
    start = integrate_rnn(np.random.default_rng(5).standard_normal((1, 50)), connectivity, 2.5, tau, 0.001, 2,
                          1000)[:, -1]
    nearby = start + 1e-7 * np.random.default_rng(6).standard_normal((1, 50))
    paths = integrate_rnn(np.concatenate([start, nearby]), connectivity, 2.5, tau, 0.001, 31, 100)  # 3 s
    separation = np.linalg.norm(paths[0] - paths[1], axis=-1)
    assert np.log(separation[-1] / separation[0]) / 3.0 > 0.5  # largest Lyapunov exponent > 0 (1/s)
    assert separation[-1] > 100 * separation[0]
    # gamma = 0.5: every trajectory decays to the origin and nearby ones converge.
    weak = integrate_rnn(np.concatenate([start, nearby]), connectivity, 0.5, tau, 0.001, 11, 100)  # 1 s
    assert np.abs(weak[:, -1]).max() < 1e-4 * np.abs(start).max()
    assert np.linalg.norm(weak[0, -1] - weak[1, -1]) < 1e-3 * separation[0]
    assert largest_lyapunov(connectivity[None], 0.5, tau, np.random.default_rng(7), starts=1,
                            duration_tau=40.0)[0, 0] < -5.0


def test_the_dataset_follows_its_network(default_set, default_network):
    connectivity, exponent, candidates = default_network
    assert default_set.attrs["lyapunov_per_s"] == pytest.approx(exponent)
    assert default_set.attrs["connectivity_candidates"] == candidates
    assert default_set.attrs["integration_steps_per_bin"] == 10
    rates = default_set.latents[0].astype(np.float64)  # tanh(x) of condition 0, (bins, units)
    start = np.arctanh(rates[10])
    reference = solve_ivp(lambda t, x: rnn_derivative(x, connectivity, 2.5, 0.025), (0.0, 0.03), start,
                          method="DOP853", t_eval=[0.01, 0.02, 0.03], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.tanh(reference.y.T), rates[11:14], atol=2e-4)  # float32 latents


# --- the dataset ------------------------------------------------------------------------------


def test_shapes_dtypes_and_conditions(default_set):
    assert default_set.data.shape == default_set.truth.shape == (200, 100, 50)
    assert default_set.latents.shape == (200, 100, 50)
    for array in (default_set.data, default_set.truth, default_set.latents):
        assert array.dtype == np.float32
    np.testing.assert_array_equal(default_set.condition, np.repeat(np.arange(20), 10))
    assert default_set.condition.dtype == np.int64
    assert np.all(default_set.data == np.round(default_set.data)) and default_set.data.min() >= 0
    assert np.abs(default_set.latents).max() < 1.0
    # trials of a condition share their rates (no initial-state noise) but not their spikes
    np.testing.assert_array_equal(default_set.truth[0], default_set.truth[9])
    assert not np.array_equal(default_set.data[0], default_set.data[9])
    assert default_set.heldout_neurons is None and default_set.ext_input is None and default_set.split is None
    assert default_set.attrs["bin_ms"] == 10.0 and default_set.attrs["generator"] == "neurodyn chaotic-rnn-spikes"
    assert "tanh" in default_set.attrs["latents_meaning"]


def test_mean_rates_span_the_requested_range(default_set):
    hz = default_set.truth.astype(np.float64) / 0.010
    means = hz.mean(axis=(0, 1))
    np.testing.assert_allclose(means, default_set.attrs["mean_rate_hz_per_neuron"], rtol=1e-4)
    assert means.min() == pytest.approx(1.0, rel=1e-4) and means.max() == pytest.approx(50.0, rel=1e-4)
    # log-uniform spread: the sorted means are a geometric sequence
    np.testing.assert_allclose(np.sort(means), np.geomspace(1.0, 50.0, 50), rtol=1e-4)
    np.testing.assert_allclose(np.log(hz).std(axis=(0, 1)), 0.6, rtol=1e-3)


def test_spike_counts_match_truth_within_sampling_error(default_set):
    assert_counts_match_truth(default_set, total_z=4.0, neuron_z=4.5)


def test_same_seed_same_data_other_seed_other_data():
    first, second = make_chaotic_rnn_spikes(**SMALL, seed=3), make_chaotic_rnn_spikes(**SMALL, seed=3)
    for key in ("data", "truth", "latents", "condition"):
        np.testing.assert_array_equal(getattr(first, key), getattr(second, key))
    other = make_chaotic_rnn_spikes(**SMALL, seed=4)
    assert not np.allclose(first.truth, other.truth)
    assert not np.array_equal(first.data, other.data)


def test_keep_observes_exactly_keep_neurons_per_bin_of_the_same_counts():
    full = make_chaotic_rnn_spikes(**SMALL, seed=5)
    sparse = make_chaotic_rnn_spikes(**SMALL, keep=7, seed=5)
    observed = ~np.isnan(sparse.data)
    assert np.all(observed.sum(axis=-1) == 7)
    np.testing.assert_array_equal(sparse.data[observed], full.data[observed])
    np.testing.assert_array_equal(sparse.truth, full.truth)
    assert sparse.attrs["keep"] == 7 and full.attrs["keep"] == 24


def test_initial_state_noise_gives_every_trial_its_own_rates():
    noisy = make_chaotic_rnn_spikes(**SMALL, initial_state_noise=0.1, seed=6)
    shared = make_chaotic_rnn_spikes(**SMALL, seed=6)
    assert not np.allclose(noisy.truth[0], noisy.truth[1])
    # the same condition's trials stay closer to each other than to another condition's
    gap_within = np.abs(noisy.latents[0, :5] - noisy.latents[1, :5]).mean()
    gap_between = np.abs(noisy.latents[0, :5] - noisy.latents[5, :5]).mean()
    assert gap_within < 0.5 * gap_between
    np.testing.assert_allclose(shared.truth.mean(axis=(0, 1)) / 0.01, noisy.truth.mean(axis=(0, 1)) / 0.01,
                               rtol=1e-4)  # both meet the same targets


def test_principal_component_latents():
    full = make_chaotic_rnn_spikes(**SMALL, seed=7)
    pcs = make_chaotic_rnn_spikes(**SMALL, latent_pcs=3, seed=7)
    assert pcs.latents.shape == (30, 40, 3)
    np.testing.assert_array_equal(pcs.truth, full.truth)
    flat = pcs.latents.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-5)
    variances = flat.var(axis=0)
    assert variances[0] >= variances[1] >= variances[2]
    covariance = np.cov(flat.T)
    np.testing.assert_allclose(covariance - np.diag(np.diag(covariance)), 0.0, atol=1e-4 * variances[0])
    total = full.latents.reshape(-1, 20).astype(np.float64).var(axis=0).sum()
    assert variances.sum() <= total * (1 + 1e-5)
    assert "principal components" in pcs.attrs["latents_meaning"]


def test_write_and_read_back_with_heldout_neurons(tmp_path):
    dataset = make_chaotic_rnn_spikes(**SMALL, keep=10, heldout_fraction=0.25, seed=8)
    assert dataset.heldout_neurons.size == 6
    path = tmp_path / "chaotic_data.h5"
    write_dataset(path, dataset)
    back = read_dataset(path)
    for key in ("data", "truth", "latents", "condition", "heldout_neurons"):
        np.testing.assert_array_equal(getattr(back, key), getattr(dataset, key))
    assert back.attrs["bin_ms"] == 10.0 and back.attrs["generator"] == "neurodyn chaotic-rnn-spikes"
    assert back.attrs["gamma"] == 2.5 and back.attrs["rnn_units"] == 20
    np.testing.assert_allclose(back.attrs["mean_rate_hz_per_neuron"], dataset.attrs["mean_rate_hz_per_neuron"])


@pytest.mark.parametrize("bad", [dict(num_neurons=0), dict(num_bins=1), dict(keep=25), dict(keep=0),
                                 dict(mean_rate_hz=(10.0, 5.0)), dict(mean_rate_hz=(0.0, 5.0)),
                                 dict(mean_rate_hz=5.0), dict(heldout_fraction=1.0), dict(gamma=-1.0),
                                 dict(tau_ms=0.0), dict(latent_pcs=21), dict(bin_ms=float("nan")),
                                 dict(min_lyapunov_per_s=float("inf"))])
def test_invalid_settings_raise_clear_errors(bad):
    with pytest.raises(NeurodynError):
        make_chaotic_rnn_spikes(**{**SMALL, **bad})
