"""KL terms against closed forms computed independently (torch.distributions, SciPy)."""

import math

import numpy as np
import torch
from scipy import stats

from neurodyn.lfads.priors import AutoregressivePrior, ar1_kl_one_sample, ar1_log_prob, kl_diagonal_to_isotropic


def test_ic_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mean, std = torch.randn(7, 5, dtype=torch.float64), torch.rand(7, 5, dtype=torch.float64) + 0.1
    prior_var = 0.1
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, std), torch.distributions.Normal(0.0, math.sqrt(prior_var))).sum(-1)
    torch.testing.assert_close(kl_diagonal_to_isotropic(mean, std, prior_var), expected)


def _ar1_covariance(num_steps, tau, nvar):
    alpha = math.exp(-1.0 / tau)
    process_var = nvar / (1 - alpha ** 2)
    lags = np.abs(np.subtract.outer(np.arange(num_steps), np.arange(num_steps)))
    return process_var * alpha ** lags


def test_ar1_log_prob_matches_stationary_gaussian():
    tau, nvar, num_steps = 4.0, 0.3, 12
    prior = AutoregressivePrior(dim=2, tau=tau, nvar=nvar).double()
    z = torch.randn(3, num_steps, 2, dtype=torch.float64)
    cov = _ar1_covariance(num_steps, tau, nvar)
    expected = [sum(stats.multivariate_normal(cov=cov).logpdf(z[b, :, d].numpy()) for d in range(2)) for b in range(3)]
    # float32 initial parameters limit the agreement to ~1e-8 relative
    np.testing.assert_allclose(ar1_log_prob(z, prior.log_tau, prior.log_nvar).detach().numpy(), expected, rtol=1e-7)


def test_ar1_one_sample_kl_is_unbiased_for_the_gaussian_kl():
    tau, nvar, num_steps = 5.0, 0.2, 8
    prior = AutoregressivePrior(dim=1, tau=tau, nvar=nvar).double()
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(1, num_steps, 1, generator=gen, dtype=torch.float64) * 0.5
    std = torch.rand(1, num_steps, 1, generator=gen, dtype=torch.float64) * 0.3 + 0.1
    samples = 40000
    z = mean + std * torch.randn(samples, num_steps, 1, generator=gen, dtype=torch.float64)
    estimate = ar1_kl_one_sample(mean.expand_as(z), std.expand_as(z), z, prior.log_tau, prior.log_nvar).mean().item()
    cov = _ar1_covariance(num_steps, tau, nvar)
    inv = np.linalg.inv(cov)
    m, d = mean.flatten().numpy(), (std.flatten() ** 2).numpy()
    exact = 0.5 * (np.trace(inv @ np.diag(d)) + m @ inv @ m - num_steps
                   + np.linalg.slogdet(cov)[1] - np.log(d).sum())
    assert abs(estimate - exact) < 0.05 * exact + 0.02


def test_ar1_prior_parameters_are_trainable():
    prior = AutoregressivePrior(dim=3, tau=10.0, nvar=0.1)
    ar1_log_prob(torch.randn(2, 6, 3), prior.log_tau, prior.log_nvar).sum().backward()
    assert prior.log_tau.grad is not None and prior.log_nvar.grad is not None
    assert torch.allclose(prior.log_tau.detach().exp(), torch.full((3,), 10.0))


def test_student_t_innovations_log_prob_matches_scipy():
    tau, nvar, df, num_steps = 6.0, 0.2, 3.0, 10
    prior = AutoregressivePrior(dim=2, tau=tau, nvar=nvar).double()
    z = torch.randn(4, num_steps, 2, dtype=torch.float64) * 2
    alpha = math.exp(-1.0 / math.exp(prior.log_tau[0].item()))
    scale = math.sqrt(math.exp(prior.log_nvar[0].item()))
    zn = z.numpy()
    expected = (stats.t.logpdf(zn[:, 0], df, scale=scale / math.sqrt(1 - alpha ** 2)).sum(-1)
                + stats.t.logpdf(zn[:, 1:] - alpha * zn[:, :-1], df, scale=scale).sum((-1, -2)))
    ours = ar1_log_prob(z, prior.log_tau, prior.log_nvar, df=df).detach().numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-10)


def test_a_kick_costs_far_less_kl_under_student_t_innovations():
    prior = AutoregressivePrior(dim=1, tau=10.0, nvar=0.1).double()
    quiet = torch.zeros(1, 30, 1, dtype=torch.float64)
    kicked = quiet.clone()
    kicked[0, 15, 0] = 3.0  # one large input, about 10 innovation scales
    mean, std = torch.zeros_like(quiet), torch.full_like(quiet, 0.05)

    def kl(sample, df):
        return ar1_kl_one_sample(mean, std, sample, prior.log_tau, prior.log_nvar, df).item()

    gaussian_cost = kl(kicked, None) - kl(quiet, None)
    student_cost = kl(kicked, 4.0) - kl(quiet, 4.0)
    assert student_cost < gaussian_cost / 5
    # The Student-t's gradient reaches the prior's parameters as the Gaussian's does.
    ar1_kl_one_sample(mean, std, kicked, prior.log_tau, prior.log_nvar, 4.0).sum().backward()
    assert prior.log_tau.grad.abs().item() > 0 and prior.log_nvar.grad.abs().item() > 0


def test_kl_to_a_learnable_diagonal_prior_matches_torch_distributions_and_trains_it():
    from neurodyn.config import LfadsConfig
    from neurodyn.lfads.model import LFADS
    from neurodyn.lfads.priors import kl_diagonal_gaussians
    from neurodyn.observation.poisson import Poisson

    torch.manual_seed(1)
    mean, std = torch.randn(6, 4, dtype=torch.float64), torch.rand(6, 4, dtype=torch.float64) + 0.1
    prior_mean, prior_var = torch.randn(4, dtype=torch.float64), torch.rand(4, dtype=torch.float64) + 0.05
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, std), torch.distributions.Normal(prior_mean, prior_var.sqrt())).sum(-1)
    torch.testing.assert_close(kl_diagonal_gaussians(mean, std, prior_mean, prior_var), expected)

    model = LFADS(LfadsConfig(ic_dim=4, ic_prior="learnable", ic_prior_var=0.2, co_dim=0), 5, Poisson(5)).double()
    torch.testing.assert_close(model.ic_prior.log_var.exp(), torch.full((4,), 0.2, dtype=torch.float64))
    with torch.no_grad():
        model.ic_prior.mean.copy_(prior_mean)
        model.ic_prior.log_var.copy_(prior_var.log())
    torch.testing.assert_close(model.ic_kl(mean, std), expected)
    # Stacked posteriors (W, B, D) of a population of one take the same prior.
    torch.testing.assert_close(model.ic_kl(mean.unsqueeze(0), std.unsqueeze(0))[0], expected)
    model.ic_kl(mean, std).sum().backward()
    assert model.ic_prior.mean.grad.abs().sum() > 0 and model.ic_prior.log_var.grad.abs().sum() > 0
    fixed = LFADS(LfadsConfig(ic_dim=4, ic_prior_var=0.2, co_dim=0), 5, Poisson(5)).double()
    assert not hasattr(fixed, "ic_prior")
    torch.testing.assert_close(fixed.ic_kl(mean, std), kl_diagonal_to_isotropic(mean, std, 0.2))
