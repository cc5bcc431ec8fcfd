"""Shared set-up for the bits-per-spike tests (co-bps, fp-bps): spike counts and a good but imperfect model."""

import numpy as np


def population(seed: int = 0, trials: int = 12, samples: int = 15, neurons: int = 9):
    """Inferred rates and spike counts, both ``(trials, samples, neurons)``: counts drawn from gamma-distributed
    true rates, the inferred rates those true rates each scaled by a factor in [0.7, 1.3]."""
    rng = np.random.default_rng(seed)
    true_rates = rng.gamma(2.0, 0.3, (trials, samples, neurons))
    counts = rng.poisson(true_rates).astype(np.float64)
    inferred = true_rates * rng.uniform(0.7, 1.3, true_rates.shape)  # a good but imperfect model
    return inferred, counts
