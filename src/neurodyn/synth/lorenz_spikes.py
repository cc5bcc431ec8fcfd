"""Synthetic spiking population driven by the Lorenz system (the SBTT demo's dataset design).

Generative model, per condition c (trials of one condition share their rates; only the
Poisson spike draws differ between them):

1. A random initial state, run for a burn-in so that it lies on the attractor.
2. The Lorenz state sampled once per bin, ``lorenz_time_per_bin`` system time units apart
   (RK4 with ``integration_steps_per_bin`` steps per bin), then z-scored per dimension over
   all conditions and bins: these are the ``latents`` ``(trials, samples, 3)``.
3. Log-rates linear in the latents: ``log r[n, t] = w_n . z_t + b_n``. Each neuron reads a
   random direction (uniform on the sphere); its gain and bias are set so that, over the
   whole dataset, its rate spans exactly ``[min_rate_hz, max_rate_hz]``. ``truth`` is the
   rate as expected count per bin, ``r * bin_ms / 1000``.
4. ``data`` ~ Poisson(truth), optionally bandwidth-masked: in every trial and bin exactly
   ``keep`` neurons, chosen uniformly without replacement, are observed; the rest are NaN.
5. Optionally a ``behavior`` to decode (the Neural Latents Benchmark's vel R^2): the "velocity" of
   the first two latents, their exact time derivative from the Lorenz equations,
   ``d latents[..., :2] / dt``, in z-scored latent units per bin. The first is linear in the
   latents, the second is not (``dy/dt = x (rho - z) - y``).

Independent random streams (initial states, readout, spikes, mask) are derived from ``seed``,
so the same seed with a different ``keep`` masks the very same spike counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurodyn.data.seed_format import NeuralDataset
from neurodyn.errors import NeurodynError
from neurodyn.synth.lorenz import BETA, RHO, SIGMA, integrate_lorenz, lorenz_derivative

# The butterfly's wings sit around z = rho - 1; initial states are spread around that height.
INITIAL_STATE_CENTRE = np.array([0.0, 0.0, RHO - 1.0])


def bandwidth_mask(rng: np.random.Generator, shape: tuple[int, int, int], keep: int) -> np.ndarray:
    """Boolean mask ``shape = (trials, samples, neurons)`` with exactly ``keep`` True per trial and bin.

    The kept neurons of each (trial, bin) are a uniform draw without replacement.
    """
    num_neurons = shape[-1]
    if not 1 <= keep <= num_neurons:
        raise NeurodynError(f"keep must be between 1 and the number of neurons ({num_neurons}); got {keep}")
    # The positions of the `keep` smallest of i.i.d. uniform scores are a uniform random subset.
    chosen = np.argsort(rng.random(shape), axis=-1)[..., :keep]
    mask = np.zeros(shape, dtype=bool)
    np.put_along_axis(mask, chosen, True, axis=-1)
    return mask


def lorenz_condition_latents(
    rng: np.random.Generator,
    num_conditions: int,
    num_samples: int,
    lorenz_time_per_bin: float,
    integration_steps_per_bin: int,
    burn_in_time: float,
    initial_state_spread: float,
) -> np.ndarray:
    """Raw Lorenz states at the bin times, one trajectory per condition: ``(conditions, samples, 3)``."""
    dt = lorenz_time_per_bin / integration_steps_per_bin
    initial = INITIAL_STATE_CENTRE + initial_state_spread * rng.standard_normal((num_conditions, 3))
    burn_in_steps = max(int(round(burn_in_time / dt)), 0) + 1
    start = integrate_lorenz(initial, burn_in_steps, dt, SIGMA, RHO, BETA)[:, -1]
    fine = integrate_lorenz(start, (num_samples - 1) * integration_steps_per_bin + 1, dt, SIGMA, RHO, BETA)
    return fine[:, ::integration_steps_per_bin]


def zscore_latents(states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-score each latent dimension over all conditions and bins.

    states: ``(..., 3)``; returns ``(z, mean (3,), std (3,))`` with ``states = z * std + mean``.
    """
    flat = states.reshape(-1, states.shape[-1])
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (states - mean) / std, mean, std


def rate_readout(
    rng: np.random.Generator, latents: np.ndarray, num_neurons: int, min_log_rate: float, max_log_rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Random log-linear readout ``(weights (neurons, latents), bias (neurons,))``.

    Each neuron's weight vector points in a uniformly random direction; its length and the
    bias stretch the neuron's log-rate over ``latents`` to exactly ``[min_log_rate, max_log_rate]``.
    """
    directions = rng.standard_normal((num_neurons, latents.shape[-1]))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    projection = latents.reshape(-1, latents.shape[-1]) @ directions.T  # (points, neurons)
    low, high = projection.min(axis=0), projection.max(axis=0)
    gain = (max_log_rate - min_log_rate) / np.where(high > low, high - low, 1.0)
    return directions * gain[:, None], min_log_rate - gain * low


@dataclass
class LorenzPopulation:
    """Per-condition Lorenz latents and the log-linear rates of a population reading them out.

    latents ``(conditions, steps, 3)`` z-scored (raw state = latents * latent_std + latent_mean);
    rates ``(conditions, steps, neurons)`` expected count per step = exp(latents @ weights.T + bias).
    """

    latents: np.ndarray
    latent_mean: np.ndarray
    latent_std: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    rates: np.ndarray


def latent_velocity(population: LorenzPopulation, lorenz_time_per_bin: float, dims: int = 2) -> np.ndarray:
    """Time derivative of the first ``dims`` z-scored latents, in latent units per bin: ``(conditions, steps, dims)``.

    Exact (the Lorenz equations at each bin's state), not a finite difference of the samples.
    """
    states = population.latents * population.latent_std + population.latent_mean  # raw Lorenz units
    per_system_time = lorenz_derivative(states)[..., :dims] / population.latent_std[:dims]
    return per_system_time * lorenz_time_per_bin


def lorenz_population(ic_rng: np.random.Generator, readout_rng: np.random.Generator, num_conditions: int,
                      num_steps: int, time_per_step: float, integration_steps_per_step: int, burn_in_time: float,
                      initial_state_spread: float, num_neurons: int, min_rate_per_step: float,
                      max_rate_per_step: float) -> LorenzPopulation:
    """Lorenz trajectories per condition, z-scored, read out by ``num_neurons`` log-linear neurons whose
    rates span exactly [min_rate_per_step, max_rate_per_step] over the dataset (shared by every Lorenz set)."""
    states = lorenz_condition_latents(ic_rng, num_conditions, num_steps, time_per_step, integration_steps_per_step,
                                      burn_in_time, initial_state_spread)
    return read_out_states(states, readout_rng, num_neurons, min_rate_per_step, max_rate_per_step)


def read_out_states(states: np.ndarray, readout_rng: np.random.Generator, num_neurons: int,
                    min_rate_per_step: float, max_rate_per_step: float) -> LorenzPopulation:
    """Raw Lorenz states ``(..., steps, 3)`` z-scored and read out by ``num_neurons`` log-linear neurons whose
    rates span exactly [min_rate_per_step, max_rate_per_step] (expected counts per step) over the states."""
    latents, latent_mean, latent_std = zscore_latents(states)
    weights, bias = rate_readout(readout_rng, latents, num_neurons, np.log(min_rate_per_step),
                                 np.log(max_rate_per_step))
    return LorenzPopulation(latents, latent_mean, latent_std, weights, bias, np.exp(latents @ weights.T + bias))


def make_lorenz_spikes(
    num_neurons: int = 29,
    num_samples: int = 50,
    bin_ms: float = 20.0,
    num_conditions: int = 65,
    trials_per_condition: int = 24,
    keep: int | None = None,
    seed: int = 0,
    min_rate_hz: float = 2.5,
    max_rate_hz: float = 75.0,
    lorenz_time_per_bin: float = 0.03,
    integration_steps_per_bin: int = 6,
    burn_in_time: float = 3.0,
    initial_state_spread: float = 10.0,
    behavior: bool = False,
) -> NeuralDataset:
    """Generate the Lorenz spiking dataset (see the module docstring for the model).

    Trials are ordered condition by condition (``condition[k] = k // trials_per_condition``).
    Rates are in spikes per second; ``truth`` holds expected counts per bin. With the
    defaults (20 ms bins, 2.5-75 Hz) that is 0.05-1.5 spikes per bin, about 0.35 on average.
    ``keep=None`` observes every neuron in every bin. ``behavior=True`` adds the velocity of the first
    two latents as ``behavior`` ``(trials, samples, 2)`` (``latent_velocity``); the other arrays are the
    same either way.
    """
    _check_settings(num_neurons, num_samples, bin_ms, num_conditions, trials_per_condition, keep,
                    min_rate_hz, max_rate_hz, lorenz_time_per_bin, integration_steps_per_bin, burn_in_time)
    ic_rng, readout_rng, spike_rng, mask_rng = (
        np.random.default_rng(stream) for stream in np.random.SeedSequence(seed).spawn(4)
    )
    bin_s = bin_ms / 1000.0
    population = lorenz_population(ic_rng, readout_rng, num_conditions, num_samples, lorenz_time_per_bin,
                                   integration_steps_per_bin, burn_in_time, initial_state_spread, num_neurons,
                                   min_rate_hz * bin_s, max_rate_hz * bin_s)
    latents, condition_truth = population.latents, population.rates  # per condition; counts per bin

    condition = np.repeat(np.arange(num_conditions, dtype=np.int64), trials_per_condition)
    truth = condition_truth[condition]
    data = spike_rng.poisson(truth).astype(np.float32)
    if keep is not None:
        data[~bandwidth_mask(mask_rng, data.shape, keep)] = np.nan

    attrs = {
        "generator": "neurodyn lorenz-spikes",
        "bin_ms": float(bin_ms),
        "keep": int(num_neurons if keep is None else keep),
        "seed": int(seed),
        "num_conditions": int(num_conditions),
        "trials_per_condition": int(trials_per_condition),
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
    velocity = None
    if behavior:
        velocity = latent_velocity(population, lorenz_time_per_bin)[condition]
        attrs["behavior_meaning"] = "d/dt of latents 0 and 1 (Lorenz x, y), z-scored latent units per bin"
    return NeuralDataset(data=data, truth=truth, latents=latents[condition], condition=condition,
                         attrs=attrs, source="<lorenz-spikes>", behavior=velocity)


def _check_settings(num_neurons, num_samples, bin_ms, num_conditions, trials_per_condition, keep,
                    min_rate_hz, max_rate_hz, lorenz_time_per_bin, integration_steps_per_bin, burn_in_time):
    for name, value, smallest in [("num_neurons", num_neurons, 1), ("num_samples", num_samples, 2),
                                  ("num_conditions", num_conditions, 1),
                                  ("trials_per_condition", trials_per_condition, 1),
                                  ("integration_steps_per_bin", integration_steps_per_bin, 1)]:
        if int(value) != value or value < smallest:
            raise NeurodynError(f"{name} must be an integer of at least {smallest}; got {value}")
    for name, value in [("bin_ms", bin_ms), ("min_rate_hz", min_rate_hz), ("lorenz_time_per_bin", lorenz_time_per_bin)]:
        if not value > 0:
            raise NeurodynError(f"{name} must be positive; got {value}")
    if not max_rate_hz > min_rate_hz:
        raise NeurodynError(f"max_rate_hz ({max_rate_hz}) must be greater than min_rate_hz ({min_rate_hz})")
    if burn_in_time < 0:
        raise NeurodynError(f"burn_in_time must be non-negative; got {burn_in_time}")
    if keep is not None and not 1 <= keep <= num_neurons:
        raise NeurodynError(f"keep must be between 1 and the number of neurons ({num_neurons}); got {keep}")
