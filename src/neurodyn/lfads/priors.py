"""Priors of the LFADS latents and their KL divergences.

* The initial condition has an isotropic Gaussian prior N(0, ic_prior_var); its KL to the
  diagonal Gaussian posterior is analytic.
* The controller outputs have an AR(1) prior per dimension with trainable time constant tau and
  noise variance nvar: z_0 ~ N(0, nvar / (1 - a^2)), z_t ~ N(a z_{t-1}, nvar), a = exp(-1/tau).
  Its KL is estimated from one posterior sample, log q(z) - log p(z).
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, var)."""
    return -0.5 * (LOG_2PI + torch.log(var) + (x - mean) ** 2 / var)


def kl_diagonal_to_isotropic(mean: torch.Tensor, std: torch.Tensor, prior_var: float) -> torch.Tensor:
    """KL( N(mean, std^2) || N(0, prior_var) ) summed over the last axis: ``(B, D) -> (B,)``."""
    var_ratio = std ** 2 / prior_var
    return 0.5 * (var_ratio + mean ** 2 / prior_var - 1.0 - torch.log(var_ratio)).sum(-1)


class AutoregressivePrior(nn.Module):
    """AR(1) prior over controller outputs ``(B, T, D)`` with trainable log tau and log nvar per dimension."""

    def __init__(self, dim: int, tau: float, nvar: float):
        super().__init__()
        self.log_tau = nn.Parameter(torch.full((dim,), math.log(tau)))
        self.log_nvar = nn.Parameter(torch.full((dim,), math.log(nvar)))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) summed over time and dimensions: ``(B, T, D) -> (B,)``."""
        alpha = torch.exp(-1.0 / torch.exp(self.log_tau))
        noise_var = torch.exp(self.log_nvar)
        process_var = noise_var / (1.0 - alpha ** 2)
        first = gaussian_log_density(z[:, 0], torch.zeros_like(z[:, 0]), process_var.expand_as(z[:, 0]))
        rest = gaussian_log_density(z[:, 1:], alpha * z[:, :-1], noise_var.expand_as(z[:, 1:]))
        return first.sum(-1) + rest.sum((-1, -2))

    def kl_one_sample(self, post_mean: torch.Tensor, post_std: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """Single-sample KL estimate log q(sample) - log p(sample): ``(B, T, D) -> (B,)``."""
        log_q = gaussian_log_density(sample, post_mean, post_std ** 2).sum((-1, -2))
        return log_q - self.log_prob(sample)
