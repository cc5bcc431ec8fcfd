"""Synthetic spiking population of a low-dimensional rotational system kicked by inputs the model never sees.

A benchmark for inferred inputs (the LFADS controller): the hidden state follows a stable linear system
with rotational dynamics (as in motor cortex), and brief input pulses at random times move it, different
in every trial. Generative model, time in seconds, ``d = latent_dim``:

1. Dynamics ``dx/dt = A x + u(t)`` with ``A = Q B Q^T``: ``Q`` a random rotation of ``R^d`` (seeded) and
   ``B`` block diagonal, one damped rotation per plane ``i = 0, 1, ...``::

       B_i = [[-1/T, -w_i], [w_i, -1/T]],   w_i = 2 pi frequency_hz * frequency_ratio^i,   T = decay_ms / 1000,

   plus one ``-1/T`` for an odd ``d``. Every mode decays with time constant ``T``; plane ``i`` turns at
   ``frequency_hz * frequency_ratio^i`` Hz. Its axes are the columns ``2i, 2i + 1`` of ``Q``.
2. Initial state per trial ``x(0) ~ N(0, initial_state_std^2 I)``.
3. Inputs, constant within each bin: ``u_k`` acts on the interval ``((k - 1) dt, k dt]``, ``dt = bin_ms / 1000``.
   - Random pulses: every bin ``k`` from ``first_pulse_bin`` to ``num_bins - pulse_bins`` starts a pulse
     with probability ``pulse_rate_hz * dt`` (independently per trial and bin). A pulse is a displacement
     ``v`` of length ``pulse_size`` in a uniformly random direction, delivered as ``u = v / (pulse_bins dt)``
     over the intervals ending at bins ``k, ..., k + pulse_bins - 1`` (were the flow frozen it would move
     the state by exactly ``v``); bin ``k`` is the first the pulse moves.
   - Optional condition input (``num_conditions > 0``): every trial of condition ``c`` also gets a pulse of
     length ``condition_input_size`` at ``condition_input_bin``, along ``Q[:, :2] (cos a_c, sin a_c)`` with
     ``a_c = 2 pi c / num_conditions``: directions evenly around the slowest rotation plane, like reach
     targets.
4. State at the bins, exact for piecewise-constant input (zero-order hold):
   ``x_k = Phi x_{k-1} + Gamma u_k`` with ``Phi = expm(A dt)`` and ``Gamma = int_0^dt expm(A s) ds``
   (both from one matrix exponential of ``[[A, I], [0, 0]] dt``). Bin ``k`` holds ``x(k dt)``.
5. Rates log-linear in the state, ``log r_n = c_n . x + b_n``: each neuron reads a random direction,
   scaled so that its log-rate has standard deviation ``log_rate_std`` over the dataset, and its mean rate
   over the dataset is exactly its target; the targets spread log-uniformly over ``mean_rate_hz``
   (``synth.chaotic_rnn.mean_rate_readout``). ``truth`` = expected count per bin, ``r dt``.
6. ``data`` ~ Poisson(truth); optional ``keep`` (exactly ``keep`` neurons observed per trial and bin, the
   rest NaN) and ``heldout_fraction`` (``heldout_neurons`` for co-bps), as ``synth.chaotic_rnn``.

``latents`` are the state ``x`` (not z-scored) ``(trials, bins, d)``. The inputs are not given to the model
(no ``ext_input``); they are in the attributes: the random pulses as ``pulse_trial``, ``pulse_bin`` ``(P,)``
and ``pulse_displacement`` ``(P, d)`` (the ``v`` of each pulse, state units), the condition inputs as
``condition_input_displacement`` ``(num_conditions, d)`` at ``condition_input_bin``; ``true_inputs``
rebuilds the dense ``u`` ``(trials, bins, d)`` (state units per second) from them. ``dynamics_matrix``
(``A``, 1/s) and ``rotation`` (``Q``) are stored too. ``condition`` is ``arange(num_trials)`` without
conditions (no trial repeats), else contiguous blocks of near-equal size.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import expm

from neurodyn.data.nwb_spikes import choose_heldout_neurons
from neurodyn.data.seed_format import NeuralDataset
from neurodyn.errors import NeurodynError
from neurodyn.synth.chaotic_rnn import (check_finite, check_keep_and_heldout, check_rate_range, check_whole_numbers,
                                        mean_rate_readout, spread_mean_rates)
from neurodyn.synth.lorenz_spikes import bandwidth_mask

_STREAMS = ("rotation", "initial", "pulses", "readout", "spikes", "mask")
# HDF5 stores an attribute of at most 64 KiB; the pulse list must fit (float32 displacements).
MAX_ATTRIBUTE_BYTES = 64000


def rotational_dynamics(latent_dim: int, frequency_hz: float, frequency_ratio: float, decay_ms: float,
                        rotation: np.ndarray | None = None) -> np.ndarray:
    """The dynamics matrix ``A = Q B Q^T`` ``(d, d)`` in 1/s (see the module docstring); ``rotation`` = ``Q``
    (identity when None)."""
    decay_rate = 1000.0 / decay_ms
    blocks = np.zeros((latent_dim, latent_dim))
    for plane in range(latent_dim // 2):
        omega = 2.0 * np.pi * frequency_hz * frequency_ratio ** plane
        i = 2 * plane
        blocks[i:i + 2, i:i + 2] = [[-decay_rate, -omega], [omega, -decay_rate]]
    if latent_dim % 2:
        blocks[-1, -1] = -decay_rate
    q = np.eye(latent_dim) if rotation is None else rotation
    return q @ blocks @ q.T


def random_rotation(rng: np.random.Generator, dim: int) -> np.ndarray:
    """A uniformly random rotation ``(dim, dim)`` (orthogonal, determinant +1)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q = q * np.sign(np.diag(r))  # Haar-distributed
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def zero_order_hold(dynamics: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """``(Phi, Gamma)`` with ``Phi = expm(A dt)`` and ``Gamma = int_0^dt expm(A s) ds``, both ``(d, d)``:
    ``x(t + dt) = Phi x(t) + Gamma u`` for an input ``u`` constant over the step."""
    d = dynamics.shape[0]
    block = np.zeros((2 * d, 2 * d))
    block[:d, :d] = dynamics
    block[:d, d:] = np.eye(d)
    exponential = expm(block * dt)
    return exponential[:d, :d], exponential[:d, d:]


def simulate_linear(initial_states: np.ndarray, inputs: np.ndarray, dynamics: np.ndarray, dt: float) -> np.ndarray:
    """States at the bins ``(trials, bins, d)`` of ``dx/dt = A x + u``, exact for piecewise-constant input.

    initial_states ``(trials, d)`` is bin 0; ``inputs[:, k]`` ``(trials, bins, d)`` acts over
    ``((k - 1) dt, k dt]`` (``inputs[:, 0]`` is unused).
    """
    phi, gamma = zero_order_hold(dynamics, dt)
    states = np.empty(inputs.shape)
    states[:, 0] = initial_states
    for k in range(1, inputs.shape[1]):
        states[:, k] = states[:, k - 1] @ phi.T + inputs[:, k] @ gamma.T
    return states


def true_inputs(attrs: dict, num_trials: int, num_bins: int, condition: np.ndarray | None = None) -> np.ndarray:
    """The dense input ``u`` ``(trials, bins, d)`` (state units per second) of a ``make_input_driven_spikes``
    dataset, rebuilt from its attributes (and ``condition`` when it has condition inputs)."""
    dim = int(attrs["latent_dim"])
    bin_s = float(attrs["bin_ms"]) / 1000.0
    duration = int(attrs["pulse_bins"])
    inputs = np.zeros((num_trials, num_bins, dim))
    trials = np.asarray(attrs["pulse_trial"], dtype=np.int64).reshape(-1)
    bins = np.asarray(attrs["pulse_bin"], dtype=np.int64).reshape(-1)
    push = np.asarray(attrs["pulse_displacement"], dtype=np.float64).reshape(-1, dim) / (duration * bin_s)
    for offset in range(duration):
        np.add.at(inputs, (trials, bins + offset), push)
    if int(attrs["num_conditions"]) > 0:
        if condition is None:
            raise NeurodynError("this dataset has condition inputs: pass its 'condition' to rebuild them")
        vectors = np.asarray(attrs["condition_input_displacement"], dtype=np.float64).reshape(-1, dim)
        first = int(attrs["condition_input_bin"])
        inputs[:, first:first + duration] += (vectors[np.asarray(condition)] / (duration * bin_s))[:, None]
    return inputs


def make_input_driven_spikes(
    num_neurons: int = 40,
    num_trials: int = 300,
    num_bins: int = 80,
    bin_ms: float = 10.0,
    latent_dim: int = 2,
    frequency_hz: float = 2.0,
    frequency_ratio: float = 1.6,
    decay_ms: float = 400.0,
    pulse_rate_hz: float = 1.5,
    pulse_size: float = 1.5,
    pulse_bins: int = 1,
    first_pulse_bin: int = 1,
    num_conditions: int = 0,
    condition_input_size: float = 2.0,
    condition_input_bin: int | None = None,
    initial_state_std: float = 1.0,
    mean_rate_hz: tuple[float, float] = (1.0, 50.0),
    log_rate_std: float = 0.5,
    keep: int | None = None,
    heldout_fraction: float | None = None,
    seed: int = 0,
) -> NeuralDataset:
    """Generate the input-driven rotational dataset (see the module docstring for the model).

    Parameters
    ----------
    num_neurons, num_trials, num_bins : int
        Population size, trials and bins per trial.
    bin_ms : float
        Bin width (ms); the inputs are constant within a bin.
    latent_dim : int
        State dimension ``d`` (at least 2): ``d // 2`` rotation planes, plus a decaying axis for odd ``d``.
    frequency_hz, frequency_ratio : float
        Rotation frequency of the first plane; each further plane turns ``frequency_ratio`` times faster.
    decay_ms : float
        Time constant of every mode's decay.
    pulse_rate_hz, pulse_size, pulse_bins, first_pulse_bin : float, float, int, int
        Random pulses: expected pulses per second of trial, length of each displacement (state units,
        the initial states' spread is ``initial_state_std``), bins each lasts, earliest bin one may start.
    num_conditions, condition_input_size, condition_input_bin : int, float, int or None
        Conditions (0 = none) and their pulse: length and start bin (None = ``num_bins // 4``).
    initial_state_std : float
        Spread of the initial states.
    mean_rate_hz, log_rate_std : (float, float), float
        Neurons' mean rates spread log-uniformly over this range (spikes/s); the std of each log-rate over
        the dataset. The pulses make the state's distribution heavy-tailed: with the defaults (0.5) a
        neuron's 99.9th-percentile rate is about 6 times its mean, its single highest bin 10-20 times.
    keep, heldout_fraction : int or None, float or None
        Sparse sampling (neurons observed per trial and bin) and the share of held-out neurons.
    seed : int
        Seed of independent streams for the rotation, initial states, pulses, readout, spikes and mask.

    Returns
    -------
    NeuralDataset
        ``data``, ``truth`` ``(trials, bins, neurons)``, ``latents`` (the state) ``(trials, bins, d)``,
        ``condition``, ``heldout_neurons`` (or None); the inputs in ``attrs`` (``true_inputs``).
    """
    if condition_input_bin is None:
        condition_input_bin = max(num_bins // 4, 1)
    _check_settings(num_neurons, num_trials, num_bins, bin_ms, latent_dim, frequency_hz, frequency_ratio, decay_ms,
                    pulse_rate_hz, pulse_size, pulse_bins, first_pulse_bin, num_conditions, condition_input_size,
                    condition_input_bin, initial_state_std, mean_rate_hz, log_rate_std, keep, heldout_fraction)
    streams = {name: np.random.default_rng(child)
               for name, child in zip(_STREAMS, np.random.SeedSequence(seed).spawn(len(_STREAMS)))}
    bin_s = bin_ms / 1000.0
    rotation = random_rotation(streams["rotation"], latent_dim)
    dynamics = rotational_dynamics(latent_dim, frequency_hz, frequency_ratio, decay_ms, rotation)

    # Random pulses: a Bernoulli draw per trial and allowed start bin.
    last_start = num_bins - pulse_bins
    starts = np.zeros((num_trials, num_bins), dtype=bool)
    starts[:, first_pulse_bin:last_start + 1] = (
        streams["pulses"].random((num_trials, last_start + 1 - first_pulse_bin)) < pulse_rate_hz * bin_s)
    pulse_trial, pulse_bin = np.nonzero(starts)
    directions = streams["pulses"].standard_normal((pulse_trial.size, latent_dim))
    directions /= np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-12)
    pulse_displacement = (pulse_size * directions).astype(np.float32)
    if pulse_displacement.nbytes > MAX_ATTRIBUTE_BYTES:
        raise NeurodynError(f"{pulse_trial.size} pulses of {latent_dim} dimensions do not fit an HDF5 attribute "
                            f"(64 KiB); use fewer trials or a lower pulse_rate_hz")

    if num_conditions > 0:
        condition = (np.arange(num_trials) * num_conditions) // num_trials
        angles = 2.0 * np.pi * np.arange(num_conditions) / num_conditions
        condition_displacement = condition_input_size * (
            np.stack([np.cos(angles), np.sin(angles)], axis=1) @ rotation[:, :2].T)
    else:
        condition = np.arange(num_trials)
        condition_displacement = np.zeros((0, latent_dim))

    attrs = {
        "generator": "neurodyn input-driven-spikes",
        "bin_ms": float(bin_ms),
        "seed": int(seed),
        "num_trials": int(num_trials),
        "latent_dim": int(latent_dim),
        "frequency_hz": float(frequency_hz),
        "frequency_ratio": float(frequency_ratio),
        "decay_ms": float(decay_ms),
        "pulse_rate_hz": float(pulse_rate_hz),
        "pulse_size": float(pulse_size),
        "pulse_bins": int(pulse_bins),
        "first_pulse_bin": int(first_pulse_bin),
        "num_conditions": int(num_conditions),
        "condition_input_size": float(condition_input_size),
        "condition_input_bin": int(condition_input_bin),
        "initial_state_std": float(initial_state_std),
        "mean_rate_hz": np.array([float(rate) for rate in mean_rate_hz]),
        "log_rate_std": float(log_rate_std),
        "keep": int(num_neurons if keep is None else keep),
        "heldout_fraction": float(0.0 if heldout_fraction is None else heldout_fraction),
        "latents_meaning": "the state x of dx/dt = A x + u (not z-scored)",
        "dynamics_matrix": dynamics,  # (d, d) A, 1/s
        "rotation": rotation,  # (d, d) Q
        "pulse_trial": pulse_trial.astype(np.int32),  # (P,) the trial of each random pulse
        "pulse_bin": pulse_bin.astype(np.int32),  # (P,) the first bin it moves
        "pulse_displacement": pulse_displacement,  # (P, d) its displacement v, state units
        "condition_input_displacement": condition_displacement,  # (num_conditions, d)
    }
    inputs = true_inputs(attrs, num_trials, num_bins, condition)
    initial = initial_state_std * streams["initial"].standard_normal((num_trials, latent_dim))
    states = simulate_linear(initial, inputs, dynamics, bin_s)

    target_hz = spread_mean_rates(streams["readout"], num_neurons, *(float(rate) for rate in mean_rate_hz))
    weights, bias = mean_rate_readout(streams["readout"], states, target_hz * bin_s, log_rate_std)
    truth = np.exp(states @ weights.T + bias)
    data = streams["spikes"].poisson(truth).astype(np.float32)
    if keep is not None:
        data[~bandwidth_mask(streams["mask"], data.shape, keep)] = np.nan
    heldout = None if heldout_fraction is None else choose_heldout_neurons(num_neurons, heldout_fraction, seed)
    attrs["mean_rate_hz_per_neuron"] = target_hz  # (neurons,) exact means over the dataset
    attrs["readout_weights"] = weights  # (neurons, d) log(expected count per bin) per state unit
    attrs["readout_bias"] = bias  # (neurons,) log(expected count per bin) at x = 0
    return NeuralDataset(data=data, truth=truth, latents=states, condition=condition, heldout_neurons=heldout,
                         attrs=attrs, source="<input-driven-spikes>")


def _check_settings(num_neurons, num_trials, num_bins, bin_ms, latent_dim, frequency_hz, frequency_ratio, decay_ms,
                    pulse_rate_hz, pulse_size, pulse_bins, first_pulse_bin, num_conditions, condition_input_size,
                    condition_input_bin, initial_state_std, mean_rate_hz, log_rate_std, keep, heldout_fraction):
    check_whole_numbers([("num_neurons", num_neurons, 1), ("num_trials", num_trials, 1), ("num_bins", num_bins, 2),
                         ("latent_dim", latent_dim, 2), ("pulse_bins", pulse_bins, 1),
                         ("first_pulse_bin", first_pulse_bin, 1), ("num_conditions", num_conditions, 0)])
    check_finite([("bin_ms", bin_ms), ("decay_ms", decay_ms), ("frequency_ratio", frequency_ratio)], positive=True)
    check_finite([("frequency_hz", frequency_hz), ("pulse_rate_hz", pulse_rate_hz), ("pulse_size", pulse_size),
                  ("condition_input_size", condition_input_size), ("initial_state_std", initial_state_std),
                  ("log_rate_std", log_rate_std)], positive=False)
    if pulse_rate_hz * bin_ms / 1000.0 > 1.0:
        raise NeurodynError(f"pulse_rate_hz ({pulse_rate_hz:g}) times the bin width must be at most 1 pulse per bin")
    if first_pulse_bin > num_bins - pulse_bins:
        raise NeurodynError(f"first_pulse_bin ({first_pulse_bin}) must be at most num_bins - pulse_bins "
                            f"({num_bins - pulse_bins}), so that a pulse fits in the trial")
    if num_conditions > num_trials:
        raise NeurodynError(f"num_conditions ({num_conditions}) must be at most num_trials ({num_trials})")
    if num_conditions > 0 and not 1 <= condition_input_bin <= num_bins - pulse_bins:
        raise NeurodynError(f"condition_input_bin must be from 1 to num_bins - pulse_bins ({num_bins - pulse_bins}); "
                            f"got {condition_input_bin}")
    check_rate_range(mean_rate_hz)
    check_keep_and_heldout(num_neurons, keep, heldout_fraction)
