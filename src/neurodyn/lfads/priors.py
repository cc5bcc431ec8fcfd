"""Priors of the LFADS latents and their KL divergences.

* The initial condition has an isotropic Gaussian prior N(0, ic_prior_var); its KL to the
  diagonal Gaussian posterior is analytic. With ``ic_prior: learnable`` the prior is a diagonal
  Gaussian N(mean, diag var) whose mean and log variance are trained (starting at 0 and
  ic_prior_var); its KL is analytic too.
* The controller outputs have an AR(1) prior per dimension with trainable time constant tau and
  noise variance nvar: z_0 ~ N(0, nvar / (1 - a^2)), z_t ~ N(a z_{t-1}, nvar), a = exp(-1/tau).
  Its KL is estimated from one posterior sample, log q(z) - log p(z).
* ``co_prior: student_t`` gives the same process heavy-tailed innovations: z_t - a z_{t-1} follows a
  Student-t with ``df`` degrees of freedom and scale sqrt(nvar) (z_0: scale sqrt(nvar / (1 - a^2))),
  so a rare large input (a kick) costs far less KL than under the Gaussian, while small ones cost
  about the same. Its KL is estimated the same way.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from neurodyn.observation.gaussian import gaussian_log_density


def kl_diagonal_gaussians(mean: torch.Tensor, std: torch.Tensor, prior_mean: torch.Tensor | float,
                          prior_var: torch.Tensor | float) -> torch.Tensor:
    """KL( N(mean, std^2) || N(prior_mean, prior_var) ), both diagonal, summed over the last axis:
    ``(..., D) -> (...)``; the prior's arrays broadcast against ``mean``."""
    var_ratio = std ** 2 / prior_var
    return 0.5 * (var_ratio + (mean - prior_mean) ** 2 / prior_var - 1.0 - torch.log(var_ratio)).sum(-1)


def kl_diagonal_to_isotropic(mean: torch.Tensor, std: torch.Tensor, prior_var: float) -> torch.Tensor:
    """KL( N(mean, std^2) || N(0, prior_var) ) summed over the last axis: ``(..., D) -> (...)``."""
    return kl_diagonal_gaussians(mean, std, 0.0, prior_var)


def student_t_log_density(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, df: float) -> torch.Tensor:
    """Elementwise log density of x under a Student-t with ``df`` degrees of freedom, location ``mean`` and
    squared scale ``var`` (its variance is ``var * df / (df - 2)`` for df > 2)."""
    return torch.distributions.StudentT(df, mean, torch.sqrt(var)).log_prob(x)


def ar1_log_prob(z: torch.Tensor, log_tau: torch.Tensor, log_nvar: torch.Tensor,
                 df: float | None = None) -> torch.Tensor:
    """log p(z) under the AR(1) prior, summed over time and dimensions: z ``(..., T, D) -> (...)``;
    ``log_tau`` and ``log_nvar`` broadcast against one step ``(..., D)`` (e.g. ``(D,)``). ``df``: Student-t
    innovations with that many degrees of freedom (``nvar`` their squared scale); None: Gaussian."""
    alpha = torch.exp(-1.0 / torch.exp(log_tau))
    noise_var = torch.exp(log_nvar)
    process_var = noise_var / (1.0 - alpha ** 2)
    first = z[..., 0, :]
    rest = z[..., 1:, :]
    density = gaussian_log_density if df is None else functools.partial(student_t_log_density, df=df)
    first_log_p = density(first, torch.zeros_like(first), process_var.expand_as(first))
    rest_log_p = density(rest, alpha.unsqueeze(-2) * z[..., :-1, :], noise_var.unsqueeze(-2).expand_as(rest))
    return first_log_p.sum(-1) + rest_log_p.sum((-1, -2))


def ar1_kl_one_sample(post_mean: torch.Tensor, post_std: torch.Tensor, sample: torch.Tensor,
                      log_tau: torch.Tensor, log_nvar: torch.Tensor, df: float | None = None) -> torch.Tensor:
    """Single-sample KL estimate log q(sample) - log p(sample) of a diagonal Gaussian posterior over
    ``(..., T, D)`` to the AR(1) prior: ``-> (...)`` (prior parameters and ``df`` as in ``ar1_log_prob``)."""
    log_q = gaussian_log_density(sample, post_mean, post_std ** 2).sum((-1, -2))
    return log_q - ar1_log_prob(sample, log_tau, log_nvar, df)


class InitialConditionPrior(nn.Module):
    """A learnable diagonal Gaussian prior of the initial condition: ``mean`` and ``log_var`` ``(D,)``."""

    def __init__(self, dim: int, var: float):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(dim))
        self.log_var = nn.Parameter(torch.full((dim,), math.log(var)))


class AutoregressivePrior(nn.Module):
    """The AR(1) prior's trainable parameters: log tau and log nvar per dimension ``(D,)``."""

    def __init__(self, dim: int, tau: float, nvar: float):
        super().__init__()
        self.log_tau = nn.Parameter(torch.full((dim,), math.log(tau)))
        self.log_nvar = nn.Parameter(torch.full((dim,), math.log(nvar)))
