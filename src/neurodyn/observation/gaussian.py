"""Observations of continuous signals (dF/F traces, LFP power, EMG envelopes): any real value per bin.

Two models share the identity link (the readout is the signal's expected value):

* ``gaussian``: ``x ~ Normal(mu, sigma_n^2)`` with one trainable variance per neuron (channel), started
  at the channel's variance in the training data and kept above ``VARIANCE_FLOOR`` times it (a
  channel the model fits perfectly would otherwise drive its variance, and the loss, to minus infinity).
* ``mse``: the squared error ``(x - mu)^2``, the reconstruction cost of lfads-torch's MSE model: a
  Gaussian with one fixed variance of 1/2 for every channel, up to a constant, so channels on larger
  scales weigh more (standardise the channels first when that is not wanted).

Any finite value is accepted (``read_dataset`` already refuses infinities). The ``rates`` in the
outputs are the inferred signal ``mu``; the Gaussian model also writes each channel's ``std``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from neurodyn.observation.base import ObservationModel

# A channel's variance stays above this fraction of its training-data variance.
VARIANCE_FLOOR = 1e-4
LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, var) (also the LFADS priors' Gaussian, ``lfads.priors``)."""
    return -0.5 * (LOG_2PI + torch.log(var) + (x - mean) ** 2 / var)


def channel_variances(train_data) -> list[float]:
    """Each channel's variance over its observed training entries ``(trials, T, N)`` (NaN = unobserved);
    1.0 for a channel with fewer than two observed entries or none of spread."""
    flat = np.asarray(train_data, dtype=np.float64).reshape(-1, np.asarray(train_data).shape[-1])
    variances = []
    for channel in flat.T:
        observed = channel[~np.isnan(channel)]
        variance = float(observed.var()) if observed.size >= 2 else 0.0
        variances.append(variance if variance > 0 else 1.0)
    return variances


def per_channel(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-channel ``values`` ``(N,)``, or a population's ``(W, N)``, shaped to broadcast against entries
    ``like`` ``(..., N)`` (a population's entries lead with the worker axis, ``(W, ..., N)``)."""
    if values.dim() == 1:
        return values
    return values.view(values.shape[0], *([1] * (like.dim() - 2)), values.shape[-1])


class IdentityLink(ObservationModel):
    """One readout value per channel, the signal's expected value itself (no link function)."""

    params_per_neuron = 1
    value_unit = "units of the data"

    def mean(self, readout: torch.Tensor) -> torch.Tensor:
        return readout[..., 0]

    def initial_readout_bias(self, mean_observed: torch.Tensor) -> torch.Tensor:
        return mean_observed.unsqueeze(-1)

    def readout_weight_for_activity(self, activity_map, mean):
        # Identity link: the expected value moves by the activity map itself.
        return np.asarray(activity_map).T[:, None, :]


class Gaussian(IdentityLink):
    """The mean per channel from the readout; a trainable log variance per channel."""

    name = "gaussian"

    def __init__(self, num_neurons: int, initial_variance: list[float] | None = None):
        super().__init__(num_neurons)
        initial = torch.ones(num_neurons) if initial_variance is None else torch.tensor(initial_variance)
        self.initial_variance = None if initial_variance is None else [float(v) for v in initial_variance]
        self.log_variance = nn.Parameter(torch.log(initial.float()))
        self.register_buffer("variance_floor", VARIANCE_FLOOR * initial.float(), persistent=False)

    @classmethod
    def options_from_config(cls, config, train_data) -> dict:
        """Each channel's training-data variance: the starting variance and the scale of its floor."""
        return {"initial_variance": channel_variances(train_data)}

    def variance(self, like: torch.Tensor) -> torch.Tensor:
        """Each channel's variance, broadcastable against entries ``like`` ``(..., N)``."""
        variance = torch.exp(self.log_variance) + self.variance_floor.to(self.log_variance.dtype)
        return per_channel(variance, like)

    def elementwise_nll(self, readout: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mean = self.mean(readout)
        return -gaussian_log_density(target, mean, self.variance(mean))

    def elementwise_nll_up_to_constant(self, readout: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.elementwise_nll(readout, target) - 0.5 * LOG_2PI

    def named_params(self, readout: torch.Tensor) -> dict[str, torch.Tensor]:
        mean = self.mean(readout)
        return {"std": torch.sqrt(self.variance(mean)).expand_as(mean)}


class SquaredError(IdentityLink):
    """The mean per channel from the readout; the loss is the squared error."""

    name = "mse"

    def elementwise_nll(self, readout: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (target - self.mean(readout)).pow(2)
