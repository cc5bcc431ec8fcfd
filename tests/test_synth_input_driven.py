"""The input-driven rotational spiking set: the linear dynamics, the pulses, the readout and the file."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm

from neurodyn.data.seed_format import read_dataset, write_dataset
from neurodyn.errors import NeurodynError
from neurodyn.synth.input_driven import (make_input_driven_spikes, rotational_dynamics, simulate_linear, true_inputs,
                                         zero_order_hold)

from synth_helpers import assert_counts_match_truth

SMALL = dict(num_neurons=16, num_trials=60, num_bins=50, bin_ms=10.0)


@pytest.fixture(scope="module")
def default_set():
    """The defaults: 40 neurons, 300 trials, 80 bins of 10 ms, a 2-D rotation at 2 Hz."""
    return make_input_driven_spikes(seed=0)


# --- the dynamics -------------------------------------------------------------------------------


def test_dynamics_matrix_has_the_requested_rotations_and_decay():
    rotation = np.linalg.qr(np.random.default_rng(1).standard_normal((5, 5)))[0]
    dynamics = rotational_dynamics(5, 2.0, 1.5, 400.0, rotation)
    eigenvalues = np.linalg.eigvals(dynamics)
    np.testing.assert_allclose(eigenvalues.real, -2.5, atol=1e-9)  # 1 / 0.4 s
    np.testing.assert_allclose(np.sort(np.abs(eigenvalues.imag)), np.sort([0.0, 4 * np.pi, 4 * np.pi, 6 * np.pi,
                                                                           6 * np.pi]), atol=1e-9)


def test_free_flow_is_the_matrix_exponential():
    rotation = np.linalg.qr(np.random.default_rng(2).standard_normal((3, 3)))[0]
    dynamics = rotational_dynamics(3, 2.0, 1.6, 400.0, rotation)
    start = np.random.default_rng(3).standard_normal((4, 3))
    states = simulate_linear(start, np.zeros((4, 30, 3)), dynamics, 0.01)
    for k in (1, 7, 29):
        np.testing.assert_allclose(states[:, k], start @ expm(dynamics * 0.01 * k).T, atol=1e-12)


def test_a_pulse_matches_scipy_with_the_input_switched_on_and_off():
    dynamics = rotational_dynamics(2, 2.0, 1.6, 400.0)
    dt, bins, pulse_bin, duration = 0.01, 20, 6, 2
    push = np.array([30.0, -10.0])  # state units per second
    inputs = np.zeros((1, bins, 2))
    inputs[0, pulse_bin:pulse_bin + duration] = push
    start = np.array([0.5, -0.2])
    ours = simulate_linear(start[None], inputs, dynamics, dt)[0]
    times = dt * np.arange(bins)
    on, off = (pulse_bin - 1) * dt, (pulse_bin - 1 + duration) * dt
    pieces, state = [], start
    for begin, end, u in ((0.0, on, 0.0), (on, off, push), (off, times[-1], 0.0)):
        inside = times[(times >= begin - 1e-12) & (times <= end + 1e-12)]
        solution = solve_ivp(lambda t, x: dynamics @ x + u, (begin, end), state, method="DOP853", t_eval=inside,
                             rtol=1e-12, atol=1e-12)
        pieces.append(solution.y.T if not pieces else solution.y.T[1:])
        state = solution.y[:, -1]
    np.testing.assert_allclose(ours, np.concatenate(pieces), atol=1e-9)


def test_zero_order_hold_input_matrix_is_the_integral_of_the_flow():
    dynamics = rotational_dynamics(2, 3.0, 1.6, 250.0)
    _, gamma = zero_order_hold(dynamics, 0.02)
    np.testing.assert_allclose(gamma, np.linalg.solve(dynamics, expm(dynamics * 0.02) - np.eye(2)), atol=1e-12)


def test_the_dataset_flows_freely_between_pulses(default_set):
    dynamics = np.asarray(default_set.attrs["dynamics_matrix"])
    inputs = true_inputs(default_set.attrs, 300, 80, default_set.condition)
    states = default_set.latents.astype(np.float64)
    flows = {gap: expm(dynamics * 0.01 * gap) for gap in range(81)}  # closed form over `gap` bins
    checked = 0
    for trial in range(300):
        pushed = np.flatnonzero(np.abs(inputs[trial]).sum(axis=-1) > 0)  # bins whose interval has input
        edges = np.concatenate([[0], pushed, [80]])
        longest = np.argmax(np.diff(edges))
        start, stop = edges[longest], edges[longest + 1] - 1  # no input over (start, stop]
        if stop - start >= 10:
            np.testing.assert_allclose(states[trial, stop], flows[stop - start] @ states[trial, start], atol=1e-5)
            checked += 1
    assert checked > 200
    # and a pulse moves the state by about its displacement (the flow turns it a little during the bin)
    trial, first = int(default_set.attrs["pulse_trial"][0]), int(default_set.attrs["pulse_bin"][0])
    free = states[trial, first - 1] @ expm(dynamics * 0.01).T
    jump = states[trial, first] - free
    displacement = np.asarray(default_set.attrs["pulse_displacement"][0])
    assert np.linalg.norm(jump - displacement) < 0.15 * np.linalg.norm(displacement)


# --- the dataset ------------------------------------------------------------------------------


def test_shapes_dtypes_and_the_pulses(default_set):
    assert default_set.data.shape == default_set.truth.shape == (300, 80, 40)
    assert default_set.latents.shape == (300, 80, 2)
    for array in (default_set.data, default_set.truth, default_set.latents):
        assert array.dtype == np.float32
    np.testing.assert_array_equal(default_set.condition, np.arange(300))
    assert default_set.ext_input is None and default_set.heldout_neurons is None
    assert np.all(default_set.data == np.round(default_set.data)) and default_set.data.min() >= 0
    trials, bins = np.asarray(default_set.attrs["pulse_trial"]), np.asarray(default_set.attrs["pulse_bin"])
    displacement = np.asarray(default_set.attrs["pulse_displacement"])
    assert bins.min() >= 1 and bins.max() <= 79
    np.testing.assert_allclose(np.linalg.norm(displacement, axis=1), 1.5, rtol=1e-6)
    expected = 1.5 * 0.01 * 79 * 300  # 1.5 Hz over the 79 bins a pulse may start in, 300 trials
    assert abs(trials.size - expected) < 4 * np.sqrt(expected)
    inputs = true_inputs(default_set.attrs, 300, 80)
    np.testing.assert_allclose(inputs.sum(axis=(0, 1)) * 0.01, displacement.sum(axis=0), atol=1e-4)  # float32
    assert np.all(inputs[:, 0] == 0)


def test_condition_inputs_point_around_the_slow_plane():
    dataset = make_input_driven_spikes(**SMALL, num_conditions=4, pulse_rate_hz=0.0, condition_input_size=2.0,
                                       condition_input_bin=10, seed=1)
    np.testing.assert_array_equal(dataset.condition, np.repeat(np.arange(4), 15))
    vectors = np.asarray(dataset.attrs["condition_input_displacement"])
    rotation = np.asarray(dataset.attrs["rotation"])
    np.testing.assert_allclose(vectors @ rotation[:, :2], 2.0 * np.array([[1, 0], [0, 1], [-1, 0], [0, -1]]),
                               atol=1e-12)
    inputs = true_inputs(dataset.attrs, 60, 50, dataset.condition)
    assert np.all(inputs[:, :10] == 0) and np.all(inputs[:, 11:] == 0)
    np.testing.assert_allclose(inputs[:, 10] * 0.01, vectors[dataset.condition], atol=1e-12)
    with pytest.raises(NeurodynError):
        true_inputs(dataset.attrs, 60, 50)


def test_mean_rates_span_the_requested_range(default_set):
    hz = default_set.truth.astype(np.float64) / 0.010
    means = hz.mean(axis=(0, 1))
    np.testing.assert_allclose(means, default_set.attrs["mean_rate_hz_per_neuron"], rtol=1e-4)
    np.testing.assert_allclose(np.sort(means), np.geomspace(1.0, 50.0, 40), rtol=1e-4)
    np.testing.assert_allclose(np.log(hz).std(axis=(0, 1)), 0.5, rtol=1e-3)
    # rates are exp(C x + b) of the state
    weights, bias = np.asarray(default_set.attrs["readout_weights"]), np.asarray(default_set.attrs["readout_bias"])
    np.testing.assert_allclose(np.log(default_set.truth), default_set.latents @ weights.T + bias, atol=1e-4)


def test_spike_counts_match_truth_within_sampling_error(default_set):
    assert_counts_match_truth(default_set, total_z=4.0, neuron_z=4.5)


def test_same_seed_same_data_other_seed_other_data():
    first, second = make_input_driven_spikes(**SMALL, seed=2), make_input_driven_spikes(**SMALL, seed=2)
    for key in ("data", "truth", "latents", "condition"):
        np.testing.assert_array_equal(getattr(first, key), getattr(second, key))
    np.testing.assert_array_equal(first.attrs["pulse_bin"], second.attrs["pulse_bin"])
    other = make_input_driven_spikes(**SMALL, seed=3)
    assert not np.allclose(first.truth, other.truth)
    assert not np.array_equal(first.attrs["pulse_trial"], other.attrs["pulse_trial"])


def test_keep_observes_exactly_keep_neurons_per_bin_of_the_same_counts():
    full = make_input_driven_spikes(**SMALL, seed=4)
    sparse = make_input_driven_spikes(**SMALL, keep=5, seed=4)
    observed = ~np.isnan(sparse.data)
    assert np.all(observed.sum(axis=-1) == 5)
    np.testing.assert_array_equal(sparse.data[observed], full.data[observed])
    np.testing.assert_array_equal(sparse.truth, full.truth)


def test_write_and_read_back(tmp_path):
    dataset = make_input_driven_spikes(**SMALL, latent_dim=3, num_conditions=3, keep=8, heldout_fraction=0.25,
                                       seed=5)
    path = tmp_path / "input_driven_data.h5"
    write_dataset(path, dataset)
    back = read_dataset(path)
    for key in ("data", "truth", "latents", "condition", "heldout_neurons"):
        np.testing.assert_array_equal(getattr(back, key), getattr(dataset, key))
    assert back.heldout_neurons.size == 4 and back.attrs["bin_ms"] == 10.0
    np.testing.assert_allclose(true_inputs(back.attrs, 60, 50, back.condition),
                               true_inputs(dataset.attrs, 60, 50, dataset.condition))
    np.testing.assert_allclose(back.attrs["dynamics_matrix"], dataset.attrs["dynamics_matrix"])
    # no pulses at all still writes and reads
    quiet = make_input_driven_spikes(**SMALL, pulse_rate_hz=0.0, seed=6)
    write_dataset(tmp_path / "quiet_data.h5", quiet)
    assert not np.any(true_inputs(read_dataset(tmp_path / "quiet_data.h5").attrs, 60, 50))


@pytest.mark.parametrize("bad", [dict(latent_dim=1), dict(num_trials=0), dict(keep=17), dict(pulse_rate_hz=200.0),
                                 dict(pulse_size=-1.0), dict(first_pulse_bin=50), dict(first_pulse_bin=0),
                                 dict(num_conditions=2, condition_input_bin=50), dict(num_conditions=61),
                                 dict(mean_rate_hz=(3.0, 2.0)), dict(decay_ms=0.0), dict(heldout_fraction=0.0),
                                 dict(num_trials=4000, pulse_rate_hz=10.0)])
def test_invalid_settings_raise_clear_errors(bad):
    with pytest.raises(NeurodynError):
        make_input_driven_spikes(**{**SMALL, **bad})
