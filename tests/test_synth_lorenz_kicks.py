"""The single-trial Lorenz set with one input kick per trial, and its CLI command."""

from __future__ import annotations

import argparse

import h5py
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from neurodyn.cli import synth_commands
from neurodyn.data.seed_format import read_dataset
from neurodyn.errors import NeurodynError
from neurodyn.synth.lorenz import integrate_lorenz, lorenz_derivative
from neurodyn.synth.lorenz_kicks import kicked_lorenz_states, make_lorenz_kicks

SMALL = dict(num_neurons=12, num_samples=30, num_trials=40, earliest_kick_bin=5, latest_kick_bin=20)


def raw_states(dataset) -> np.ndarray:
    """The Lorenz states behind the z-scored latents, Lorenz units ``(trials, samples, 3)``."""
    return dataset.latents * np.asarray(dataset.attrs["latent_std"]) + np.asarray(dataset.attrs["latent_mean"])


# --- the kicked flow --------------------------------------------------------------------------


def test_kicked_states_match_scipy_with_the_push_switched_on_and_off():
    start = np.array([[-5.0, 7.0, 30.0], [1.0, 1.0, 20.0]])
    time_per_bin, steps, num_samples, duration = 0.02, 20, 12, 2
    kick_bin = np.array([4, 7])
    push = np.array([[300.0, 0.0, 0.0], [0.0, 0.0, -150.0]])
    ours = kicked_lorenz_states(start, num_samples, time_per_bin, steps, kick_bin, push, duration)
    for trial in range(2):
        # Independent: an adaptive solver run piece by piece, the push on from bin k - 1 to bin k - 1 + duration.
        on, off = (kick_bin[trial] - 1) * time_per_bin, (kick_bin[trial] - 1 + duration) * time_per_bin
        times = time_per_bin * np.arange(num_samples)
        pieces, state = [], start[trial]
        for begin, end, extra in ((0.0, on, 0.0), (on, off, push[trial]), (off, times[-1], 0.0)):
            inside = times[(times >= begin - 1e-12) & (times <= end + 1e-12)]
            solution = solve_ivp(lambda t, s: lorenz_derivative(s) + extra, (begin, end), state, method="DOP853",
                                 t_eval=inside, rtol=1e-12, atol=1e-12)
            pieces.append(solution.y.T if not pieces else solution.y.T[1:])
            state = solution.y[:, -1]
        np.testing.assert_allclose(ours[trial], np.concatenate(pieces), atol=1e-6)


def test_no_push_is_the_plain_lorenz_flow():
    start = np.array([[1.0, 2.0, 25.0]])
    ours = kicked_lorenz_states(start, 10, 0.03, 6, np.array([3]), np.zeros((1, 3)), 2)
    np.testing.assert_allclose(ours[0], integrate_lorenz(start, 9 * 6 + 1, 0.005)[0, ::6], atol=1e-12)


# --- the dataset ------------------------------------------------------------------------------


def test_shapes_and_the_kick_as_ext_input():
    dataset = make_lorenz_kicks(**SMALL, kick_axes="xz", seed=1)
    trials, samples, neurons = 40, 30, 12
    assert dataset.data.shape == dataset.truth.shape == (trials, samples, neurons)
    assert dataset.latents.shape == (trials, samples, 3)
    assert dataset.ext_input.shape == (trials, samples, 2)
    np.testing.assert_array_equal(dataset.condition, np.arange(trials))
    kick_bin, axis, sign = (np.asarray(dataset.attrs[key]) for key in ("kick_bin", "kick_axis", "kick_sign"))
    assert kick_bin.shape == axis.shape == sign.shape == (trials,)
    assert kick_bin.min() >= 5 and kick_bin.max() <= 20
    assert set(axis.tolist()) == {0, 2} and set(sign.tolist()) == {-1, 1}
    for trial in range(trials):
        expected = np.zeros((samples, 2), dtype=np.float32)
        expected[kick_bin[trial]:kick_bin[trial] + 2, "xz".index("xyz"[axis[trial]])] = sign[trial]
        np.testing.assert_array_equal(dataset.ext_input[trial], expected)
    # log-linear rates spanning the documented range (2.5-75 Hz in 20 ms bins)
    np.testing.assert_allclose(np.log(dataset.truth), dataset.latents @ np.asarray(dataset.attrs["readout_weights"]).T
                               + np.asarray(dataset.attrs["readout_bias"]), atol=1e-4)
    assert dataset.truth.min() == pytest.approx(0.05, rel=1e-4) and dataset.truth.max() == pytest.approx(1.5, rel=1e-4)
    assert np.all(dataset.data == np.round(dataset.data)) and dataset.data.min() >= 0


def test_no_two_trials_share_an_initial_condition():
    states = raw_states(make_lorenz_kicks(**{**SMALL, "num_trials": 200}, seed=2))[:, 0]
    distances = np.linalg.norm(states[:, None] - states[None], axis=-1)[np.triu_indices(len(states), 1)]
    assert distances.min() > 1e-2  # Lorenz units; the attractor spans tens of units


def test_the_kick_changes_the_trajectory_from_its_bin_on_only():
    kicked = make_lorenz_kicks(**SMALL, kick_size=10.0, seed=3)
    unkicked = make_lorenz_kicks(**SMALL, kick_size=0.0, seed=3)
    np.testing.assert_array_equal(kicked.attrs["kick_bin"], unkicked.attrs["kick_bin"])
    shift = np.linalg.norm(raw_states(kicked) - raw_states(unkicked), axis=-1)  # (trials, samples)
    bins = np.arange(SMALL["num_samples"])
    for trial, k in enumerate(np.asarray(kicked.attrs["kick_bin"])):
        assert shift[trial, bins < k].max() < 1e-3 * 50  # float32 storage of z-scored latents
        # one bin of a push that moves the state 10 units in two bins: about 5 units at bin k
        assert 2.0 < shift[trial, k] < 8.0
        assert shift[trial, k + 1] > 5.0


def test_same_seed_same_data_different_seed_different_data():
    first, second = make_lorenz_kicks(**SMALL, seed=5), make_lorenz_kicks(**SMALL, seed=5)
    for key in ("data", "truth", "latents", "ext_input"):
        np.testing.assert_array_equal(getattr(first, key), getattr(second, key))
    np.testing.assert_array_equal(first.attrs["kick_bin"], second.attrs["kick_bin"])
    other = make_lorenz_kicks(**SMALL, seed=6)
    assert not np.allclose(first.truth, other.truth)
    assert not np.array_equal(first.attrs["kick_bin"], other.attrs["kick_bin"])


@pytest.mark.parametrize("bad", [dict(kick_axes="w"), dict(kick_axes="xx"), dict(kick_axes=""),
                                 dict(earliest_kick_bin=0), dict(latest_kick_bin=29),
                                 dict(earliest_kick_bin=21), dict(kick_size=-1.0), dict(num_trials=0),
                                 dict(kick_duration_bins=0), dict(min_rate_hz=10.0, max_rate_hz=5.0)])
def test_invalid_settings_raise_clear_errors(bad):
    with pytest.raises(NeurodynError):
        make_lorenz_kicks(**{**SMALL, **bad})


# --- CLI --------------------------------------------------------------------------------------


def parse(argv):
    parser = argparse.ArgumentParser(prog="neurodyn")
    synth_commands.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_writes_a_readable_file_with_the_kicks(tmp_path, capsys):
    out = tmp_path / "kicks_data.h5"
    args = parse(["synth", "lorenz-kicks", str(out), "--seed", "4", "--neurons", "7", "--trials", "15",
                  "--bins", "25", "--kick-axes", "xy", "--earliest-kick", "6", "--latest-kick", "12",
                  "--kick-size", "5", "--kick-bins", "1"])
    assert args.func(args) == 0
    summary = capsys.readouterr().out.strip()
    assert "\n" not in summary and str(out) in summary
    with h5py.File(out, "r") as f:
        assert f["data"].shape == (7, 25, 15) and f["ext_input"].shape == (2, 25, 15)
    dataset = read_dataset(out)
    expected = make_lorenz_kicks(num_neurons=7, num_samples=25, num_trials=15, kick_axes="xy", earliest_kick_bin=6,
                                 latest_kick_bin=12, kick_size=5.0, kick_duration_bins=1, seed=4)
    np.testing.assert_array_equal(dataset.data, expected.data)
    np.testing.assert_array_equal(dataset.ext_input, expected.ext_input)
    np.testing.assert_array_equal(dataset.attrs["kick_bin"], expected.attrs["kick_bin"])
    assert dataset.attrs["kick_size"] == 5.0


def test_cli_can_leave_the_kick_out_of_ext_input(tmp_path, capsys):
    out = tmp_path / "blind_data.h5"
    args = parse(["synth", "lorenz-kicks", str(out), "--neurons", "5", "--trials", "6", "--bins", "20",
                  "--no-ext-input"])
    assert args.func(args) == 0
    assert "ext_input not written" in capsys.readouterr().out
    dataset = read_dataset(out)
    assert dataset.ext_input is None
    np.testing.assert_array_equal(dataset.attrs["kick_bin"],
                                  make_lorenz_kicks(num_neurons=5, num_trials=6, num_samples=20).attrs["kick_bin"])


def test_main_refuses_an_existing_file_without_overwrite(tmp_path, capsys):
    pytest.importorskip("neurodyn.cli.lfads_commands")
    from neurodyn.cli.main import main

    out = tmp_path / "tiny_data.h5"
    small = ["--neurons", "3", "--trials", "4", "--bins", "20"]
    assert main(["synth", "lorenz-kicks", str(out), *small]) == 0
    assert main(["synth", "lorenz-kicks", str(out), *small]) == 2
    assert "\n" not in capsys.readouterr().err.strip()
    assert main(["synth", "lorenz-kicks", str(out), *small, "--seed", "1", "--overwrite"]) == 0
    assert read_dataset(out).attrs["seed"] == 1
    assert main(["synth", "lorenz-kicks", str(tmp_path / "bad_data.h5"), "--kick-axes", "q"]) == 2
    error = capsys.readouterr().err.strip()
    assert "kick_axes" in error and "\n" not in error
