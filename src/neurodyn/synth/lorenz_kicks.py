"""Single-trial Lorenz spiking population: no trial repeats, and each trial gets one input kick.

A benchmark for inferred inputs (the LFADS controller) and measured inputs (``ext_input``), where
trial averaging is impossible. Generative model, per trial:

1. Its own random initial state (no two trials share one), run for a burn-in so that it lies on the
   attractor.
2. The Lorenz flow sampled once per bin (RK4, ``integration_steps_per_bin`` steps per bin), with one
   kick: at a random bin ``k`` (uniform in ``[earliest_kick_bin, latest_kick_bin]``) a constant push
   of ``kick_size / (kick_duration_bins * lorenz_time_per_bin)`` Lorenz units per unit time is added
   to the derivative along one axis (drawn from ``kick_axes``) with a random sign, over the
   ``kick_duration_bins`` bin intervals that end at bins ``k, ..., k + kick_duration_bins - 1``. Bins
   before ``k`` are exactly those of the unkicked flow; bin ``k`` is the first the kick moves (were
   the flow frozen, the push would move the state by ``kick_size`` Lorenz units in all).
3. Latents z-scored per dimension over all trials and bins; log-linear rates spanning
   ``[min_rate_hz, max_rate_hz]``; Poisson counts (as ``synth.lorenz_spikes``).

``ext_input`` ``(trials, samples, len(kick_axes))`` is the kick as a measured input: channel ``a``
holds the push's sign (+1 or -1) at the kick bins of the trials kicked along axis ``kick_axes[a]``,
0 elsewhere. It sits at the bins the kick first moves, where an LFADS generator (whose state at
bin t already takes the input of bin t) needs it. The attribute ``kick_bin`` ``(trials,)`` is each
trial's ``k``; ``kick_axis`` ``(trials,)`` the axis (0 = x, 1 = y, 2 = z) and ``kick_sign`` the sign.
"""

from __future__ import annotations

import numpy as np

from neurodyn.data.seed_format import NeuralDataset
from neurodyn.errors import NeurodynError
from neurodyn.synth.lorenz import BETA, RHO, SIGMA, integrate_lorenz, lorenz_derivative
from neurodyn.synth.lorenz_spikes import INITIAL_STATE_CENTRE, read_out_states

AXIS_NAMES = "xyz"
# Per-trial attributes are stored as int32 h5 attributes, which HDF5 caps at 64 KiB each.
MAX_TRIALS = 16000


def kicked_lorenz_states(initial_states: np.ndarray, num_samples: int, time_per_bin: float,
                         integration_steps_per_bin: int, kick_bin: np.ndarray, kick_push: np.ndarray,
                         kick_duration_bins: int) -> np.ndarray:
    """Lorenz trajectories sampled once per bin, each with one constant push added to its derivative.

    Parameters
    ----------
    initial_states : ndarray, shape (trials, 3)
        The states at bin 0 (Lorenz units).
    num_samples : int
        Bins per trial.
    time_per_bin : float
        Lorenz time between bins.
    integration_steps_per_bin : int
        RK4 steps per bin.
    kick_bin : ndarray of int, shape (trials,)
        The first bin the push moves: it acts over the bin intervals ending at bins
        ``kick_bin, ..., kick_bin + kick_duration_bins - 1`` (from 1 to ``num_samples - 1``).
    kick_push : ndarray, shape (trials, 3)
        The push, Lorenz units per unit time, added to the derivative while it acts.
    kick_duration_bins : int
        Bin intervals the push lasts.

    Returns
    -------
    ndarray, shape (trials, num_samples, 3)
        Bin ``t`` holds the state at time ``t * time_per_bin``.
    """
    states = np.asarray(initial_states, dtype=np.float64)
    kick_bin = np.asarray(kick_bin)
    push = np.asarray(kick_push, dtype=np.float64)
    dt = time_per_bin / integration_steps_per_bin
    trajectory = np.empty((states.shape[0], num_samples, 3))
    trajectory[:, 0] = states
    for t in range(1, num_samples):
        # The interval (t - 1, t] carries the push when t is one of the trial's kicked bins.
        acting = ((kick_bin <= t) & (t < kick_bin + kick_duration_bins))[:, None] * push

        def derivative(s):
            return lorenz_derivative(s) + acting

        for _ in range(integration_steps_per_bin):
            k1 = derivative(states)
            k2 = derivative(states + 0.5 * dt * k1)
            k3 = derivative(states + 0.5 * dt * k2)
            k4 = derivative(states + dt * k3)
            states = states + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        trajectory[:, t] = states
    return trajectory


def make_lorenz_kicks(
    num_neurons: int = 29,
    num_samples: int = 50,
    bin_ms: float = 20.0,
    num_trials: int = 600,
    kick_size: float = 10.0,
    kick_duration_bins: int = 2,
    kick_axes: str = "x",
    earliest_kick_bin: int = 10,
    latest_kick_bin: int | None = None,
    seed: int = 0,
    min_rate_hz: float = 2.5,
    max_rate_hz: float = 75.0,
    lorenz_time_per_bin: float = 0.03,
    integration_steps_per_bin: int = 6,
    burn_in_time: float = 3.0,
    initial_state_spread: float = 10.0,
) -> NeuralDataset:
    """Generate the single-trial Lorenz set with one input kick per trial (see the module docstring).

    Parameters
    ----------
    num_neurons, num_samples, bin_ms, num_trials : int, int, float, int
        Population size, bins per trial, bin width (ms) and trials (each its own initial state).
    kick_size : float
        The kick's strength: the displacement (Lorenz units; the attractor's std is about 8 per axis)
        the push would cause were the flow frozen. 0 gives the unkicked flow from the same states.
    kick_duration_bins : int
        Bins the push lasts (1 or 2 make a brief kick).
    kick_axes : str
        The axes a kick may push along, a subset of "xyz"; each trial draws one uniformly and a random sign.
    earliest_kick_bin, latest_kick_bin : int, int or None
        The range of kick bins, inclusive; None = ``num_samples - 10`` (at least ``earliest_kick_bin``).
    seed : int
        Seed of independent streams for initial states, kicks, readout and spikes.
    min_rate_hz, max_rate_hz : float
        Every neuron's rate spans exactly this range over the dataset (spikes/s).
    lorenz_time_per_bin, integration_steps_per_bin, burn_in_time, initial_state_spread
        As ``make_lorenz_spikes``.

    Returns
    -------
    NeuralDataset
        ``data`` (spike counts) and ``truth`` (expected counts per bin) ``(trials, samples, neurons)``,
        ``latents`` ``(trials, samples, 3)`` z-scored, ``condition`` ``arange(trials)`` (no trial
        repeats), ``ext_input`` ``(trials, samples, len(kick_axes))`` and attributes ``kick_bin``,
        ``kick_axis``, ``kick_sign`` ``(trials,)`` besides the generator settings.
    """
    if latest_kick_bin is None:
        latest_kick_bin = max(num_samples - 10, earliest_kick_bin)
    _check_settings(num_neurons, num_samples, bin_ms, num_trials, kick_size, kick_duration_bins, kick_axes,
                    earliest_kick_bin, latest_kick_bin, min_rate_hz, max_rate_hz, lorenz_time_per_bin,
                    integration_steps_per_bin, burn_in_time)
    ic_rng, kick_rng, readout_rng, spike_rng = (
        np.random.default_rng(stream) for stream in np.random.SeedSequence(seed).spawn(4))
    dt = lorenz_time_per_bin / integration_steps_per_bin
    initial = INITIAL_STATE_CENTRE + initial_state_spread * ic_rng.standard_normal((num_trials, 3))
    burn_in_steps = max(int(round(burn_in_time / dt)), 0) + 1
    start = integrate_lorenz(initial, burn_in_steps, dt, SIGMA, RHO, BETA)[:, -1]

    kick_bin = kick_rng.integers(earliest_kick_bin, latest_kick_bin + 1, size=num_trials)
    axis_choice = kick_rng.integers(0, len(kick_axes), size=num_trials)  # index into kick_axes
    kick_sign = kick_rng.choice(np.array([-1, 1]), size=num_trials)
    kick_axis = np.array([AXIS_NAMES.index(kick_axes[i]) for i in axis_choice], dtype=np.int64)
    push = np.zeros((num_trials, 3))
    push[np.arange(num_trials), kick_axis] = kick_sign * kick_size / (kick_duration_bins * lorenz_time_per_bin)
    states = kicked_lorenz_states(start, num_samples, lorenz_time_per_bin, integration_steps_per_bin, kick_bin,
                                  push, kick_duration_bins)

    bin_s = bin_ms / 1000.0
    population = read_out_states(states, readout_rng, num_neurons, min_rate_hz * bin_s, max_rate_hz * bin_s)
    latents, truth = population.latents, population.rates
    data = spike_rng.poisson(truth).astype(np.float32)

    ext_input = np.zeros((num_trials, num_samples, len(kick_axes)), dtype=np.float32)
    for offset in range(kick_duration_bins):
        ext_input[np.arange(num_trials), kick_bin + offset, axis_choice] = kick_sign
    attrs = {
        "generator": "neurodyn lorenz-kicks",
        "bin_ms": float(bin_ms),
        "seed": int(seed),
        "num_trials": int(num_trials),
        "kick_size": float(kick_size),
        "kick_duration_bins": int(kick_duration_bins),
        "kick_axes": str(kick_axes),
        "earliest_kick_bin": int(earliest_kick_bin),
        "latest_kick_bin": int(latest_kick_bin),
        "kick_bin": kick_bin.astype(np.int32),  # (trials,) first bin the kick moves
        "kick_axis": kick_axis.astype(np.int32),  # (trials,) 0 = x, 1 = y, 2 = z
        "kick_sign": kick_sign.astype(np.int32),  # (trials,) +1 or -1
        "min_rate_hz": float(min_rate_hz),
        "max_rate_hz": float(max_rate_hz),
        "lorenz_sigma": SIGMA,
        "lorenz_rho": RHO,
        "lorenz_beta": BETA,
        "lorenz_time_per_bin": float(lorenz_time_per_bin),
        "integration_steps_per_bin": int(integration_steps_per_bin),
        "burn_in_time": float(burn_in_time),
        "initial_state_spread": float(initial_state_spread),
        "latent_mean": population.latent_mean,  # (3,), Lorenz units: raw = latents * latent_std + latent_mean
        "latent_std": population.latent_std,  # (3,)
        "readout_weights": population.weights,  # (neurons, 3), log(expected count per bin) per latent unit
        "readout_bias": population.bias,  # (neurons,), log(expected count per bin)
    }
    return NeuralDataset(data=data, truth=truth, latents=latents, condition=np.arange(num_trials), attrs=attrs,
                         source="<lorenz-kicks>", ext_input=ext_input)


def _check_settings(num_neurons, num_samples, bin_ms, num_trials, kick_size, kick_duration_bins, kick_axes,
                    earliest_kick_bin, latest_kick_bin, min_rate_hz, max_rate_hz, lorenz_time_per_bin,
                    integration_steps_per_bin, burn_in_time):
    for name, value, smallest in [("num_neurons", num_neurons, 1), ("num_samples", num_samples, 2),
                                  ("num_trials", num_trials, 1), ("kick_duration_bins", kick_duration_bins, 1),
                                  ("integration_steps_per_bin", integration_steps_per_bin, 1)]:
        if int(value) != value or value < smallest:
            raise NeurodynError(f"{name} must be an integer of at least {smallest}; got {value}")
    if num_trials > MAX_TRIALS:
        raise NeurodynError(f"num_trials must be at most {MAX_TRIALS} (the per-trial kick attributes must fit "
                            f"HDF5's 64 KiB attribute limit); got {num_trials}")
    for name, value in [("bin_ms", bin_ms), ("min_rate_hz", min_rate_hz), ("lorenz_time_per_bin", lorenz_time_per_bin)]:
        if not value > 0:
            raise NeurodynError(f"{name} must be positive; got {value}")
    if not max_rate_hz > min_rate_hz:
        raise NeurodynError(f"max_rate_hz ({max_rate_hz}) must be greater than min_rate_hz ({min_rate_hz})")
    if not (kick_size >= 0 and np.isfinite(kick_size)):
        raise NeurodynError(f"kick_size must be finite and non-negative; got {kick_size}")
    if burn_in_time < 0:
        raise NeurodynError(f"burn_in_time must be non-negative; got {burn_in_time}")
    if not kick_axes or set(kick_axes) - set(AXIS_NAMES) or len(set(kick_axes)) != len(kick_axes):
        raise NeurodynError(f"kick_axes must name distinct Lorenz axes among 'x', 'y', 'z' (e.g. 'x' or 'xz'); "
                            f"got {kick_axes!r}")
    last_allowed = num_samples - kick_duration_bins
    if not (1 <= earliest_kick_bin <= latest_kick_bin <= last_allowed):
        raise NeurodynError(f"kick bins must satisfy 1 <= earliest_kick_bin ({earliest_kick_bin}) <= latest_kick_bin "
                            f"({latest_kick_bin}) <= num_samples - kick_duration_bins ({last_allowed}), so that "
                            "every kick lies inside the trial")
