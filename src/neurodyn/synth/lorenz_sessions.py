"""Several recording sessions of one Lorenz system, each seen through other neurons (for stitching).

Every session shares the conditions' Lorenz trajectories (the same dynamical system and initial
states, as if the same task were recorded on several days); each has its own population of
log-linear Poisson neurons (its own readout weights and rates, as in ``lorenz_spikes``), its own
number of neurons and of trials per condition, and its own spikes.
"""

from __future__ import annotations

import numpy as np

from neurodyn.data.seed_format import NeuralDataset
from neurodyn.errors import NeurodynError
from neurodyn.synth.lorenz_spikes import lorenz_condition_latents, read_out_states


def make_lorenz_sessions(
    session_neurons: list[int],
    session_trials_per_condition: list[int],
    num_conditions: int = 20,
    num_samples: int = 50,
    bin_ms: float = 20.0,
    seed: int = 0,
    min_rate_hz: float = 2.5,
    max_rate_hz: float = 75.0,
    lorenz_time_per_bin: float = 0.03,
) -> list[NeuralDataset]:
    """One dataset per session, all of one Lorenz system.

    Parameters
    ----------
    session_neurons : list of int
        Neurons of each session.
    session_trials_per_condition : list of int
        Trials per condition of each session (same length as ``session_neurons``).
    num_conditions, num_samples, bin_ms, seed, min_rate_hz, max_rate_hz, lorenz_time_per_bin
        As in ``make_lorenz_spikes``; shared by the sessions.

    Returns
    -------
    list of NeuralDataset
        Session ``s``: ``data`` and ``truth`` ``(num_conditions * trials_s, num_samples, neurons_s)``
        (expected counts per bin), ``latents`` ``(..., 3)`` z-scored over all conditions (the same
        trajectories in every session), ``condition`` (the same labels in every session).
    """
    if len(session_neurons) != len(session_trials_per_condition) or not session_neurons:
        raise NeurodynError("give the neurons and the trials per condition of each session (lists of one length)")
    for neurons, trials in zip(session_neurons, session_trials_per_condition):
        if int(neurons) < 1 or int(trials) < 1:
            raise NeurodynError(f"every session needs at least one neuron and one trial per condition; got "
                                f"{neurons} neurons and {trials} trials per condition")
    streams = np.random.SeedSequence(seed).spawn(1 + 2 * len(session_neurons))
    ic_rng = np.random.default_rng(streams[0])
    states = lorenz_condition_latents(ic_rng, num_conditions, num_samples, lorenz_time_per_bin, 6, 3.0, 10.0)
    bin_s = bin_ms / 1000.0
    sessions = []
    for s, (neurons, trials) in enumerate(zip(session_neurons, session_trials_per_condition)):
        readout_rng, spike_rng = (np.random.default_rng(stream) for stream in streams[1 + 2 * s: 3 + 2 * s])
        # The same states in every session, so the same z-scored latents; each its own neurons.
        population = read_out_states(states, readout_rng, int(neurons), min_rate_hz * bin_s, max_rate_hz * bin_s)
        condition = np.repeat(np.arange(num_conditions, dtype=np.int64), int(trials))
        truth = population.rates[condition]
        attrs = {"generator": "neurodyn lorenz-sessions", "session": s, "bin_ms": float(bin_ms), "seed": int(seed),
                 "num_conditions": int(num_conditions), "trials_per_condition": int(trials),
                 "lorenz_time_per_bin": float(lorenz_time_per_bin), "latent_mean": population.latent_mean,
                 "latent_std": population.latent_std, "readout_weights": population.weights,
                 "readout_bias": population.bias}
        sessions.append(NeuralDataset(data=spike_rng.poisson(truth).astype(np.float32), truth=truth,
                                      latents=population.latents[condition], condition=condition, attrs=attrs,
                                      source=f"<lorenz-sessions {s}>"))
    return sessions
