"""Poisson observations: spike counts per bin given a log-rate (expected count per bin)."""

from __future__ import annotations

import numpy as np
import torch

from neurodyn.errors import NeurodynError
from neurodyn.observation.base import ObservationModel


def poisson_nll(log_rate: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Full Poisson negative log-likelihood per entry: ``r - n log r + log n!`` with ``r = exp(log_rate)``.

    The ``log n!`` constant is kept so that values are comparable across models (bits per spike).
    """
    return poisson_nll_without_log_factorial(log_rate, counts) + torch.lgamma(counts + 1.0)


def poisson_nll_without_log_factorial(log_rate: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``r - n log r`` per entry: ``poisson_nll`` less its ``log n!``, a constant of the counts."""
    return torch.exp(log_rate) - counts * log_rate


class Poisson(ObservationModel):
    """One parameter per neuron: the log expected count per bin."""

    name = "poisson"
    params_per_neuron = 1

    def elementwise_nll(self, readout: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return poisson_nll(readout[..., 0], target)

    def elementwise_nll_up_to_constant(self, readout: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Without log n!: a constant of the counts, recomputed at every refinement step for nothing.
        return poisson_nll_without_log_factorial(readout[..., 0], target)

    def pairwise_log_likelihood(self, readout: torch.Tensor, target: torch.Tensor, observed: torch.Tensor,
                                max_entries: int = 2 ** 24) -> torch.Tensor:
        # sum_obs (n log r - r - log n!) is linear in (observed * n) and observed: two matrix products.
        log_rate = readout[..., 0].flatten(1)
        observed_counts = (observed * target).flatten(1)
        observed = observed.flatten(1)
        constant = (observed * torch.lgamma(target.flatten(1) + 1.0)).sum(1, keepdim=True)
        return observed_counts @ log_rate.T - observed @ torch.exp(log_rate).T - constant

    def mean(self, readout: torch.Tensor) -> torch.Tensor:
        return torch.exp(readout[..., 0])

    def initial_readout_bias(self, mean_observed: torch.Tensor) -> torch.Tensor:
        # Floor the mean so a silent neuron starts at a small rate rather than log(0).
        return torch.log(mean_observed.clamp_min(1e-3)).unsqueeze(-1)

    def readout_weight_for_activity(self, activity_map, mean):
        # log-rate link: d log(rate) = d rate / rate, at each neuron's mean (floored like the bias).
        return (np.asarray(activity_map) / np.maximum(np.asarray(mean), 1e-3)).T[:, None, :]

    def validate_targets(self, data, source: str) -> None:
        observed = np.asarray(data)[~np.isnan(data)]
        if observed.size and observed.min() < 0:
            raise NeurodynError(f"{source}: key 'data' holds negative values (min {observed.min():g}); "
                                "a Poisson model needs non-negative spike counts")
        if observed.size and not np.all(observed == np.round(observed)):
            bad = observed[observed != np.round(observed)][0]
            raise NeurodynError(f"{source}: key 'data' holds non-integer values (e.g. {bad:g}); a Poisson model "
                                "needs spike counts — use 'observation: zig' for deconvolved calcium events")
