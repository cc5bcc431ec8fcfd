"""Synthetic continuous signals driven by the Lorenz system (for ``observation: gaussian`` / ``mse``).

Generative model, per condition c (trials of one condition share their clean signal; only the
noise differs between them):

1. The Lorenz latents of ``lorenz_spikes`` (a burnt-in trajectory per condition, sampled once per
   bin, z-scored per dimension): ``latents`` ``(trials, samples, 3)``.
2. Each channel reads a random direction of the latents (uniform on the sphere) with unit gain plus
   an offset drawn from N(0, 1): ``truth[n, t] = w_n . z_t + b_n``, which takes both signs, as a
   baseline-subtracted dF/F, a z-scored LFP power or a centred EMG envelope does.
3. ``data = truth + noise``, Gaussian, with one standard deviation per channel drawn uniformly from
   ``[noise_low, noise_high]`` (channels differ in quality, as real ones do: the case a learned
   variance per channel is for).

Independent random streams (initial states, readout, noise levels, noise) are derived from ``seed``.
"""

from __future__ import annotations

import numpy as np

from neurodyn.data.seed_format import NeuralDataset
from neurodyn.errors import NeurodynError
from neurodyn.synth.lorenz import BETA, RHO, SIGMA
from neurodyn.synth.lorenz_spikes import lorenz_condition_latents, zscore_latents


def make_lorenz_continuous(
    num_neurons: int = 30,
    num_samples: int = 50,
    bin_ms: float = 20.0,
    num_conditions: int = 65,
    trials_per_condition: int = 8,
    noise_low: float = 0.3,
    noise_high: float = 1.0,
    seed: int = 0,
    lorenz_time_per_bin: float = 0.03,
    integration_steps_per_bin: int = 6,
    burn_in_time: float = 3.0,
    initial_state_spread: float = 10.0,
) -> NeuralDataset:
    """Generate the Lorenz continuous dataset (see the module docstring for the model).

    Trials are ordered condition by condition (``condition[k] = k // trials_per_condition``);
    ``truth`` is the clean signal per bin (about unit standard deviation per channel, in the same units
    as ``data``), ``latents`` the z-scored Lorenz state; the attribute ``noise_std`` ``(channels,)``
    holds each channel's noise standard deviation.
    """
    for name, value, smallest in [("num_neurons", num_neurons, 1), ("num_samples", num_samples, 2),
                                  ("num_conditions", num_conditions, 1),
                                  ("trials_per_condition", trials_per_condition, 1)]:
        if int(value) != value or value < smallest:
            raise NeurodynError(f"{name} must be an integer of at least {smallest}; got {value}")
    if not (bin_ms > 0 and lorenz_time_per_bin > 0):
        raise NeurodynError(f"bin_ms and lorenz_time_per_bin must be positive; got {bin_ms}, {lorenz_time_per_bin}")
    if not 0 < noise_low <= noise_high:
        raise NeurodynError(f"the noise range must satisfy 0 < noise_low <= noise_high; got {noise_low}, {noise_high}")
    ic_rng, readout_rng, level_rng, noise_rng = (
        np.random.default_rng(stream) for stream in np.random.SeedSequence(seed).spawn(4)
    )
    states = lorenz_condition_latents(ic_rng, num_conditions, num_samples, lorenz_time_per_bin,
                                      integration_steps_per_bin, burn_in_time, initial_state_spread)
    latents, latent_mean, latent_std = zscore_latents(states)
    directions = readout_rng.standard_normal((num_neurons, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    offsets = readout_rng.standard_normal(num_neurons)
    noise_std = level_rng.uniform(noise_low, noise_high, num_neurons)

    condition = np.repeat(np.arange(num_conditions, dtype=np.int64), trials_per_condition)
    truth = (latents @ directions.T + offsets)[condition]
    data = (truth + noise_std * noise_rng.standard_normal(truth.shape)).astype(np.float32)
    attrs = {
        "generator": "neurodyn lorenz-continuous",
        "bin_ms": float(bin_ms),
        "seed": int(seed),
        "num_conditions": int(num_conditions),
        "trials_per_condition": int(trials_per_condition),
        "lorenz_sigma": SIGMA,
        "lorenz_rho": RHO,
        "lorenz_beta": BETA,
        "lorenz_time_per_bin": float(lorenz_time_per_bin),
        "latent_mean": latent_mean,  # (3,), Lorenz units: raw = latents * latent_std + latent_mean
        "latent_std": latent_std,  # (3,)
        "readout_weights": directions,  # (channels, 3), signal units per latent unit
        "readout_offsets": offsets,  # (channels,)
        "noise_std": noise_std,  # (channels,)
    }
    return NeuralDataset(data=data, truth=truth, latents=latents[condition], condition=condition,
                         attrs=attrs, source="<lorenz-continuous>")
