"""Lorenz integrator, bandwidth mask, the Lorenz spiking dataset and its CLI command."""

from __future__ import annotations

import argparse

import h5py
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from neurodyn.cli import synth_commands
from neurodyn.data.seed_format import read_dataset
from neurodyn.errors import NeurodynError
from neurodyn.synth.lorenz import BETA, RHO, SIGMA, fixed_points, integrate_lorenz, lorenz_derivative
from neurodyn.synth.lorenz_spikes import bandwidth_mask, make_lorenz_spikes

# A small dataset keeps the tests fast; the published design is checked separately for shapes.
SMALL = dict(num_neurons=12, num_samples=30, num_conditions=8, trials_per_condition=10)


# --- Lorenz system ----------------------------------------------------------------------------


def reference_solution(start, times):
    """Independent solution: scipy's adaptive 8th-order Dormand-Prince at tight tolerance."""
    solution = solve_ivp(lambda t, s: lorenz_derivative(s), (0.0, times[-1]), start, method="DOP853",
                         t_eval=times, rtol=1e-12, atol=1e-12)
    return solution.y.T


def test_rk4_matches_scipy_solve_ivp_with_tight_tolerance():
    initial = np.array([[1.0, 1.0, 1.0], [-5.0, 7.0, 30.0], [0.1, -0.2, 20.0]])
    dt, steps = 0.002, 301  # 0.6 time units: short enough that chaos does not amplify round-off
    ours = integrate_lorenz(initial, steps, dt)
    for trajectory, start in zip(ours, initial):
        np.testing.assert_allclose(trajectory, reference_solution(start, dt * np.arange(steps)), atol=1e-5)


def test_rk4_error_shrinks_with_fourth_order():
    start, end_time = np.array([-5.0, 7.0, 30.0]), 0.5
    reference = reference_solution(start, np.array([0.0, end_time]))[-1]
    errors = [np.abs(integrate_lorenz(start[None], round(end_time / dt) + 1, dt)[0, -1] - reference).max()
              for dt in (0.01, 0.005)]
    assert 10 < errors[0] / errors[1] < 24  # halving the step divides the error by about 2**4


def test_fixed_points_are_equilibria_and_stay_put():
    points = fixed_points()
    np.testing.assert_allclose(lorenz_derivative(points), 0.0, atol=1e-12)
    np.testing.assert_allclose(integrate_lorenz(points, 50, 0.01)[:, -1], points, atol=1e-9)


def test_integrate_shapes_and_initial_state():
    initial = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out = integrate_lorenz(initial, 10, 0.01)
    assert out.shape == (2, 10, 3)
    np.testing.assert_array_equal(out[:, 0], initial)


def test_parameters_are_the_classic_chaotic_ones():
    assert (SIGMA, RHO, BETA) == (10.0, 28.0, 8.0 / 3.0)


# --- bandwidth mask ---------------------------------------------------------------------------


def test_bandwidth_mask_keeps_exactly_b_per_trial_and_bin_uniformly():
    shape, keep = (200, 50, 29), 5
    mask = bandwidth_mask(np.random.default_rng(0), shape, keep)
    assert mask.shape == shape and mask.dtype == bool
    assert np.all(mask.sum(axis=-1) == keep)
    # each neuron is kept with probability keep / neurons; 10000 draws per neuron -> sd ~ 0.0035
    per_neuron = mask.mean(axis=(0, 1))
    np.testing.assert_allclose(per_neuron, keep / shape[-1], atol=0.02)
    # the choice changes from bin to bin (not one fixed subset)
    assert not np.array_equal(mask[:, 0], mask[:, 1])


@pytest.mark.parametrize("keep", [0, 30])
def test_bandwidth_mask_rejects_impossible_keep(keep):
    with pytest.raises(NeurodynError, match="keep"):
        bandwidth_mask(np.random.default_rng(0), (2, 3, 29), keep)


# --- the dataset ------------------------------------------------------------------------------


def test_default_design_matches_the_sbtt_demo():
    dataset = make_lorenz_spikes()
    assert dataset.data.shape == (65 * 24, 50, 29)
    assert dataset.truth.shape == dataset.data.shape
    assert dataset.latents.shape == (65 * 24, 50, 3)
    np.testing.assert_array_equal(np.bincount(dataset.condition), np.full(65, 24))
    assert dataset.attrs["bin_ms"] == 20.0 and dataset.attrs["keep"] == 29
    assert not np.isnan(dataset.data).any()
    # rates span the documented 2.5-75 Hz = 0.05-1.5 expected spikes per 20 ms bin
    assert dataset.truth.min() == pytest.approx(0.05, rel=1e-4)
    assert dataset.truth.max() == pytest.approx(1.5, rel=1e-4)


def test_truth_is_the_expected_count():
    dataset = make_lorenz_spikes(**{**SMALL, "trials_per_condition": 400}, seed=1)
    # trials of a condition share their rates, so averaging them estimates the expectation
    for c in range(SMALL["num_conditions"]):
        trials = dataset.condition == c
        np.testing.assert_array_equal(dataset.truth[trials], np.broadcast_to(dataset.truth[trials][0], dataset.truth[trials].shape))
        mean_counts = dataset.data[trials].mean(axis=0)
        standard_error = np.sqrt(dataset.truth[trials][0] / trials.sum())
        assert np.all(np.abs(mean_counts - dataset.truth[trials][0]) < 5 * standard_error + 1e-3)
    assert np.all(dataset.data == np.round(dataset.data)) and dataset.data.min() >= 0


def test_latents_are_zscored_lorenz_states_that_drive_the_log_rates():
    dataset = make_lorenz_spikes(**SMALL, seed=2)
    flat = dataset.latents.reshape(-1, 3)
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(flat.std(axis=0), 1.0, atol=1e-5)
    weights = np.asarray(dataset.attrs["readout_weights"])
    bias = np.asarray(dataset.attrs["readout_bias"])
    np.testing.assert_allclose(np.log(dataset.truth), dataset.latents @ weights.T + bias, atol=1e-4)
    # consecutive bins follow the Lorenz flow: undo the z-score and integrate one bin ahead
    settings = dataset.attrs
    states = dataset.latents[dataset.condition == 0][0] * np.asarray(settings["latent_std"]) + np.asarray(settings["latent_mean"])
    steps = settings["integration_steps_per_bin"]
    ahead = integrate_lorenz(states[:-1], steps + 1, settings["lorenz_time_per_bin"] / steps)[:, -1]
    np.testing.assert_allclose(ahead, states[1:], atol=1e-3 * np.abs(states).max())  # float32 storage


def test_same_seed_same_data_different_seed_different_data():
    first = make_lorenz_spikes(**SMALL, keep=6, seed=5)
    second = make_lorenz_spikes(**SMALL, keep=6, seed=5)
    np.testing.assert_array_equal(first.data, second.data)
    np.testing.assert_array_equal(first.truth, second.truth)
    np.testing.assert_array_equal(first.latents, second.latents)
    other = make_lorenz_spikes(**SMALL, keep=6, seed=6)
    assert not np.allclose(first.truth, other.truth)


def test_keep_masks_the_same_counts_and_keeps_exactly_b_neurons():
    full = make_lorenz_spikes(**SMALL, seed=3)
    masked = make_lorenz_spikes(**SMALL, keep=4, seed=3)
    observed = masked.observed_mask()
    assert np.all(observed.sum(axis=-1) == 4)
    np.testing.assert_array_equal(masked.data[observed], full.data[observed])
    np.testing.assert_array_equal(masked.truth, full.truth)
    assert masked.attrs["keep"] == 4


def test_behavior_is_the_latents_velocity_and_changes_nothing_else():
    plain = make_lorenz_spikes(**SMALL, keep=5, seed=4)
    dataset = make_lorenz_spikes(**SMALL, keep=5, seed=4, behavior=True)
    assert plain.behavior is None
    assert dataset.behavior.shape == (dataset.num_trials, SMALL["num_samples"], 2)
    for key in ("data", "truth", "latents", "condition"):
        np.testing.assert_array_equal(getattr(dataset, key), getattr(plain, key))
    # Independent check: a centred finite difference of finely integrated states, in latent units per bin.
    settings = dataset.attrs
    std, mean = np.asarray(settings["latent_std"]), np.asarray(settings["latent_mean"])
    states = dataset.latents[:, 1:-1].reshape(-1, 3).astype(np.float64) * std + mean
    h = 1e-4
    forward = integrate_lorenz(states, 2, h)[:, -1]
    backward = integrate_lorenz(states, 2, -h)[:, -1]
    per_bin = (forward - backward) / (2 * h) / std * settings["lorenz_time_per_bin"]
    np.testing.assert_allclose(dataset.behavior[:, 1:-1].reshape(-1, 2), per_bin[:, :2], rtol=1e-3, atol=1e-3)
    # Trials of one condition share their behaviour, like their rates.
    first = dataset.condition == 0
    np.testing.assert_array_equal(dataset.behavior[first], np.broadcast_to(dataset.behavior[first][0],
                                                                          dataset.behavior[first].shape))


@pytest.mark.parametrize("bad", [dict(keep=13), dict(num_samples=1), dict(min_rate_hz=10.0, max_rate_hz=5.0),
                                 dict(bin_ms=0.0), dict(num_conditions=0)])
def test_invalid_settings_raise_clear_errors(bad):
    with pytest.raises(NeurodynError):
        make_lorenz_spikes(**{**SMALL, **bad})


# --- CLI --------------------------------------------------------------------------------------


def parse(argv):
    parser = argparse.ArgumentParser(prog="neurodyn")
    synth_commands.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_writes_a_readable_file_with_the_requested_design(tmp_path, capsys):
    out = tmp_path / "lorenz_data.h5"
    args = parse(["synth", "lorenz-spikes", str(out), "--keep", "3", "--seed", "7", "--neurons", "9",
                  "--conditions", "4", "--trials-per-condition", "5", "--bins", "12", "--bin-ms", "10",
                  "--max-rate", "120"])
    assert args.func(args) == 0
    summary = capsys.readouterr().out.strip()
    assert "\n" not in summary and str(out) in summary
    with h5py.File(out, "r") as f:
        assert f["data"].shape == (9, 12, 20)  # (neurons, samples, trials) in the file
        assert f["latents"].shape == (3, 12, 20)
    dataset = read_dataset(out)
    assert np.all(dataset.observed_mask().sum(axis=-1) == 3)
    assert dataset.attrs["seed"] == 7 and dataset.attrs["bin_ms"] == 10.0
    assert dataset.truth.max() == pytest.approx(120 * 0.010, rel=1e-4)
    expected = make_lorenz_spikes(num_neurons=9, num_samples=12, bin_ms=10.0, num_conditions=4,
                                  trials_per_condition=5, keep=3, seed=7, max_rate_hz=120.0)
    np.testing.assert_array_equal(dataset.data, expected.data)
    assert dataset.behavior is None


def test_cli_behavior_flag_writes_the_behavior_key(tmp_path, capsys):
    out = tmp_path / "lorenz_data.h5"
    args = parse(["synth", "lorenz-spikes", str(out), "--neurons", "5", "--conditions", "3",
                  "--trials-per-condition", "2", "--bins", "10", "--behavior"])
    assert args.func(args) == 0
    assert "behavior: velocity of latents 0, 1" in capsys.readouterr().out
    with h5py.File(out, "r") as f:
        assert f["behavior"].shape == (2, 10, 6)  # (behavior_dim, samples, trials) in the file
    expected = make_lorenz_spikes(num_neurons=5, num_conditions=3, trials_per_condition=2, num_samples=10,
                                  behavior=True)
    np.testing.assert_array_equal(read_dataset(out).behavior, expected.behavior)


def test_cli_rejects_bad_keep_without_writing(tmp_path):
    out = tmp_path / "x_data.h5"
    args = parse(["synth", "lorenz-spikes", str(out), "--keep", "40"])
    with pytest.raises(NeurodynError, match="keep"):
        args.func(args)
    assert not out.exists()


def test_main_command_runs_synth_and_prints_errors_on_one_line(tmp_path, capsys):
    # The main parser also imports the other teams' command modules; run once they exist.
    pytest.importorskip("neurodyn.cli.lfads_commands")
    from neurodyn.cli.main import main

    out = tmp_path / "tiny_data.h5"
    code = main(["synth", "lorenz-spikes", str(out), "--neurons", "4", "--conditions", "2",
                 "--trials-per-condition", "2", "--bins", "5"])
    assert code == 0 and read_dataset(out).num_trials == 4
    assert main(["synth", "lorenz-spikes", str(tmp_path / "bad_data.h5"), "--keep", "40"]) == 2
    error = capsys.readouterr().err.strip()
    assert "keep" in error and "\n" not in error
