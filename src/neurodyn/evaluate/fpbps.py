"""Forward-prediction bits per spike (fp-bps, Neural Latents Benchmark): bits per spike on the bins
that follow what the model saw.

A run with ``forward_bins`` f > 0 never shows the last f bins of a trial to its encoders; the
generator runs on through them, so the rates there are predictions from the earlier bins alone.
fp-bps scores those predictions over every neuron with ``bits_per_spike`` (the one place for the
math), so the null model is each neuron's mean count over the forward window of the scored trials.
"""

from __future__ import annotations

import numpy as np

from neurodyn.errors import NeurodynError
from neurodyn.evaluate.metrics import bits_per_spike


def forward_window(array: np.ndarray, forward_bins: int) -> np.ndarray:
    """The last ``forward_bins`` bins of ``(trials, samples, ...)``."""
    return array[:, array.shape[1] - forward_bins:]


def fp_bps(rates: np.ndarray, counts: np.ndarray, forward_bins: int) -> float:
    """Bits per spike of ``rates`` on the last ``forward_bins`` bins of ``counts``, all neurons.

    ``rates``, ``counts``: ``(trials, samples, neurons)`` (rates = expected counts per bin, counts
    may hold NaN for unobserved entries); ``forward_bins``: the run's forward-prediction window,
    1 .. samples - 1. Pass the evaluation (test) trials only. Higher is better, 0 = no better
    than each neuron's mean count in the window.
    """
    rates, counts = np.asarray(rates), np.asarray(counts)
    if rates.shape != counts.shape or rates.ndim != 3:
        raise NeurodynError(f"fp-bps: rates {rates.shape} and counts {counts.shape} must both be "
                            "(trials, samples, neurons) with the same shape")
    if isinstance(forward_bins, bool) or int(forward_bins) != forward_bins \
            or not 1 <= forward_bins < counts.shape[1]:
        raise NeurodynError(f"fp-bps: forward_bins must be a whole number of bins in [1, {counts.shape[1]}) "
                            f"(the trials have {counts.shape[1]}); got {forward_bins!r}")
    forward_bins = int(forward_bins)
    return bits_per_spike(forward_window(rates, forward_bins), forward_window(counts, forward_bins))
