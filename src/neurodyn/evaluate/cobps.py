"""Co-smoothing bits per spike (co-bps, Neural Latents Benchmark): bits per spike on held-out neurons.

The model sees only the held-in neurons of a trial and must predict the held-out neurons' rates;
co-bps scores those predictions with ``bits_per_spike`` (the one place for the math), so the null
model is each held-out neuron's mean count over the scored trials.
"""

from __future__ import annotations

import numpy as np

from neurodyn.errors import NeurodynError
from neurodyn.evaluate.metrics import bits_per_spike


def check_heldout_neurons(heldout_neurons, num_neurons: int, source: str = "heldout_neurons") -> np.ndarray:
    """``heldout_neurons`` as a sorted-as-given ``(k,)`` int64 array of distinct indices in [0, num_neurons)."""
    indices = np.asarray(heldout_neurons)
    if indices.ndim != 1 or indices.size == 0:
        raise NeurodynError(f"{source}: expected a non-empty (k,) vector of neuron indices; got shape {indices.shape}")
    if not (np.issubdtype(indices.dtype, np.integer)
            or (np.issubdtype(indices.dtype, np.floating) and np.all(indices == np.round(indices)))):
        raise NeurodynError(f"{source}: neuron indices must be integers (got dtype {indices.dtype})")
    indices = indices.astype(np.int64)
    if indices.min() < 0 or indices.max() >= num_neurons:
        raise NeurodynError(f"{source}: neuron indices must lie in [0, {num_neurons}); "
                            f"got {indices.min()} .. {indices.max()}")
    if np.unique(indices).size != indices.size:
        raise NeurodynError(f"{source}: neuron indices must be distinct")
    if indices.size == num_neurons:
        raise NeurodynError(f"{source}: all {num_neurons} neurons are held out; at least one must be held in")
    return indices


def co_bps(rates: np.ndarray, counts: np.ndarray, heldout_neurons) -> float:
    """Bits per spike of ``rates`` on the held-out neurons of ``counts``.

    ``rates``, ``counts``: ``(trials, samples, neurons)`` over all neurons (rates = expected counts
    per bin, counts may hold NaN for unobserved entries); ``heldout_neurons``: ``(k,)`` indices
    into the last axis. Pass the evaluation (test) trials only. Higher is better, 0 = no better
    than each held-out neuron's mean count.
    """
    rates, counts = np.asarray(rates), np.asarray(counts)
    if rates.shape != counts.shape or rates.ndim != 3:
        raise NeurodynError(f"co-bps: rates {rates.shape} and counts {counts.shape} must both be "
                            "(trials, samples, neurons) with the same shape")
    heldout = check_heldout_neurons(heldout_neurons, counts.shape[-1])
    return bits_per_spike(rates[..., heldout], counts[..., heldout])
