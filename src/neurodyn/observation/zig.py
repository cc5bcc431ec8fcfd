"""Zero-inflated gamma (ZIG) observations: deconvolved calcium events (RADICaL).

Per neuron and time bin, an event ``x`` (non-negative, mostly zero, continuous sizes) has

    P(x <= s_min) = 1 - q                         (no event above s_min: reported as 0)
    p(x) = q * Gamma(x - s_min; alpha, beta)      if x > s_min   (shape alpha, rate beta)

The gamma's support is shifted by ``s_min``, the smallest event size the model describes. An
observed value at or below ``s_min`` (a zero, a deconvolution residue, or a small event below
the detection threshold the data were cut at) is scored as the censored observation
"x <= s_min", whose probability is ``1 - q``: the zero branch. This is the likelihood of a
fixed function of the data, so it stays a proper score: its NLL ``-log(1 - q)`` is >= 0, does
not depend on alpha or beta, and no model is rewarded for such a value beyond the probability it
gives the class. (Scoring it as an event "just above ``s_min``" would evaluate a density there,
which for ``alpha < 1`` is unbounded and rewarded models for values outside their support.)

The readout gives three numbers per neuron: ``q = sigmoid(.)`` clipped to [1e-5, 1 - 1e-5], and
``alpha``, ``beta = sigmoid(.) * s`` with ``s`` a trainable per-neuron scale (one vector for
alpha, one for beta), pulled towards ``gamma_prior`` by the penalty
``0.5 * l2_gamma_distance_scale * sum (s - gamma_prior)^2``. The scale enters through a sharp
softplus (``SCALE_SOFTNESS``; exactly ``s`` for ``s > 20 * SCALE_SOFTNESS``) and alpha and beta
never fall below ``PARAM_FLOOR``, so that no value of ``s`` or the readout (a scale driven to or
below zero, a saturated sigmoid) gives NaN. The inferred event rate is the distribution's mean,
``q * (alpha / beta + s_min)`` (event size per bin).

``s_min: auto`` is ``AUTO_S_MIN_FRACTION`` x the smallest non-zero training event that is not an
outlier: events below ``AUTO_S_MIN_OUTLIER_FRACTION`` x the ``AUTO_S_MIN_QUANTILE`` quantile of
the non-zero training events are outliers (they then count as zeros, like any value <= s_min).
On data cut at a detection threshold (a dense lower edge) this is just below the smallest event;
a few stray tiny events (fewer than 1% of them) no longer decide it.

Deconvolution leaves floating-point residues around zero (e.g. 1e-9, -3e-15): observed values
within ``zero_tolerance`` of zero count as zero, in the likelihood itself so that training,
validation and evaluation agree. This module also holds the pieces the Gamma model reuses:
the gamma log-density, the sigmoid-scale parameterisation and a method-of-moments start.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from torch import nn

from neurodyn.errors import NeurodynError
from neurodyn.observation.base import ObservationModel

logger = logging.getLogger(__name__)

Q_CLIP = 1e-5  # q is kept in [Q_CLIP, 1 - Q_CLIP] so that neither branch's log-probability is -inf
ZERO_TOLERANCE = 1e-6  # |x| <= this counts as zero: deconvolution residues, far below any real event
AUTO_S_MIN_FRACTION = 0.9  # s_min: auto = this fraction of the smallest non-outlying non-zero training event
# Outliers for s_min: auto: non-zero events below this fraction of this quantile of all non-zero events.
AUTO_S_MIN_QUANTILE = 0.01
AUTO_S_MIN_OUTLIER_FRACTION = 0.5
DEFAULT_S_MIN = 0.1  # the published default, used when a model is built without data (e.g. to validate a file)
# Scaled parameters start inside (0, scale), away from the sigmoid's flat ends.
INIT_SIGMOID_RANGE = (0.01, 0.99)
# The trainable scales enter as SCALE_SOFTNESS * softplus(s / SCALE_SOFTNESS): s itself for s > 0.2,
# positive (with a gradient) below; alpha and beta are kept >= PARAM_FLOOR (a saturated sigmoid is 0).
SCALE_SOFTNESS = 0.01
PARAM_FLOOR = 1e-4


# ---------------------------------------------------------------------------------------------
# Shared gamma pieces (also used by observation.gamma)


def gamma_log_density(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """log Gamma(x; shape alpha, rate beta) = alpha log beta - lgamma(alpha) + (alpha - 1) log x - beta x, x > 0."""
    return alpha * torch.log(beta) - torch.lgamma(alpha) + (alpha - 1.0) * torch.log(x) - beta * x


class SigmoidScales(nn.Module):
    """Trainable per-neuron scales ``s`` mapping raw readout values to ``sigmoid(raw) * s``.

    ``scales`` is ``(num_scaled, N)``: one row per scaled parameter (e.g. alpha, beta), all
    initialised at ``prior``. ``penalty = 0.5 * weight * sum (scales - prior)^2``. The scale used
    is ``effective_scales`` (``s`` itself in the usual range, positive for any ``s``) and every
    value is at least ``PARAM_FLOOR``, so a scale pushed to or below zero gives no NaN.
    """

    def __init__(self, num_scaled: int, num_neurons: int, prior: float, weight: float):
        super().__init__()
        self.prior = float(prior)
        self.weight = float(weight)
        self.scales = nn.Parameter(torch.full((num_scaled, num_neurons), self.prior))

    def effective_scales(self) -> torch.Tensor:
        """``(num_scaled, N)``: ``SCALE_SOFTNESS * softplus(s / SCALE_SOFTNESS)``, equal to ``s`` for ``s > 0.2``.

        A sharp softplus rather than a clamp: a scale driven below zero still gets a gradient back.
        """
        return nn.functional.softplus(self.scales, beta=1.0 / SCALE_SOFTNESS)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """raw ``(..., N, num_scaled)`` -> ``max(sigmoid(raw) * s, PARAM_FLOOR)`` of the same shape. A PBT
        population's scales are stacked, ``(W, num_scaled, N)``, against raw ``(W, ..., N, num_scaled)``."""
        scales = self.effective_scales().transpose(-1, -2)
        if scales.dim() == 3:
            scales = scales.view(scales.shape[0], *([1] * (raw.dim() - 3)), *scales.shape[1:])
        return (torch.sigmoid(raw) * scales).clamp_min(PARAM_FLOOR)

    def penalty(self, prior: torch.Tensor | None = None, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``0.5 * weight * sum (scales - prior)^2``; stacked scales with per-worker ``prior`` and ``weight``
        ``(W,)`` give one penalty per worker ``(W,)``."""
        if prior is None:
            return 0.5 * self.weight * (self.scales - self.prior).pow(2).sum()
        return (0.5 * weight) * (self.scales - prior.view(-1, 1, 1)).pow(2).flatten(1).sum(1)

    def configure(self, prior: float, weight: float) -> None:
        """New prior and penalty weight (PBT searches both); the trained scales are kept."""
        self.prior, self.weight = float(prior), float(weight)

    def raw_for(self, values: torch.Tensor) -> torch.Tensor:
        """Raw readout ``(N, num_scaled)`` giving ``values`` ``(N, num_scaled)`` (clipped into the sigmoid's range)."""
        scales = self.effective_scales().detach().transpose(0, 1)
        low, high = INIT_SIGMOID_RANGE
        fraction = (values / scales).clamp(low, high)
        return torch.log(fraction) - torch.log1p(-fraction)


def gamma_moments(values: np.ndarray) -> tuple[float, float] | None:
    """Method-of-moments (shape, rate) of positive ``values``: ``mean^2 / var``, ``mean / var``; None if undefined."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return None
    mean, var = values.mean(), values.var()
    if not (mean > 0 and var > 0):
        return None
    return float(mean * mean / var), float(mean / var)


def fit_into_scales(alpha: float, beta: float, scale: float) -> tuple[float, float]:
    """Shape and rate reachable by ``sigmoid(.) * scale`` with the same mean ``alpha / beta`` where possible.

    A rate or shape above the sigmoid's range is lowered together with the other, keeping the mean.
    """
    high = INIT_SIGMOID_RANGE[1] * scale
    mean = alpha / beta
    if beta > high:
        beta, alpha = high, high * mean
    if alpha > high:
        alpha, beta = high, high / mean
    return alpha, beta


def count_near_zero(observed: np.ndarray, tolerance: float) -> tuple[int, float]:
    """Number of non-zero ``observed`` values within ``tolerance`` of zero, and the largest magnitude among them."""
    residues = observed[(observed != 0) & (np.abs(observed) <= tolerance)]
    return int(residues.size), float(np.abs(residues).max()) if residues.size else 0.0


# ---------------------------------------------------------------------------------------------
# ZIG


def event_threshold(s_min: float, zero_tolerance: float = ZERO_TOLERANCE) -> float:
    """Observed values above this are events (gamma branch); all others count as zero: ``max(s_min, zero_tolerance)``."""
    return max(float(s_min), float(zero_tolerance))


def zig_nll(q: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, target: torch.Tensor, s_min: float,
            zero_tolerance: float = ZERO_TOLERANCE) -> torch.Tensor:
    """Negative log-likelihood of each ``target`` entry under ZIG(q, alpha, beta; s_min); all the same shape.

    Entries with ``target > max(s_min, zero_tolerance)`` are events:
    ``-log q - log Gamma(target - s_min; alpha, beta)``. All others (zeros, residues, values at or
    below ``s_min``) are the censored observation ``x <= s_min`` of probability ``1 - q``:
    ``-log(1 - q)`` (see the module docstring).
    """
    is_event = target > event_threshold(s_min, zero_tolerance)
    # The gamma branch is evaluated everywhere; a safe excess at non-event entries keeps NaN out of
    # its (discarded) values and therefore out of the gradient.
    excess = torch.where(is_event, target - s_min, torch.ones_like(target))
    event_nll = -torch.log(q) - gamma_log_density(excess, alpha, beta)
    zero_nll = -torch.log1p(-q)
    return torch.where(is_event, event_nll, zero_nll)


class ZeroInflatedGamma(ObservationModel):
    """Three readout values per neuron: logit q, raw alpha, raw beta (see the module docstring)."""

    name = "zig"
    params_per_neuron = 3

    def __init__(self, num_neurons: int, s_min: float = DEFAULT_S_MIN, gamma_prior: float = 20.0,
                 l2_gamma_distance_scale: float = 1e-4, zero_tolerance: float = ZERO_TOLERANCE,
                 initial_event_fraction: list[float] | None = None, initial_alpha: list[float] | None = None,
                 initial_beta: list[float] | None = None):
        super().__init__(num_neurons)
        if not s_min > 0:
            raise NeurodynError(f"s_min must be positive (just below the smallest event); got {s_min}")
        self.s_min = float(s_min)
        self.zero_tolerance = float(zero_tolerance)
        self.gamma_scales = SigmoidScales(2, num_neurons, gamma_prior, l2_gamma_distance_scale)
        self.initial_event_fraction = initial_event_fraction
        self.initial_alpha = initial_alpha
        self.initial_beta = initial_beta

    # -- options --------------------------------------------------------------------------------
    @classmethod
    def options_from_config(cls, config, train_data) -> dict:
        """Resolve ``s_min`` (``auto``: see ``auto_s_min``) and per-neuron starting values (fraction of
        entries above ``s_min``; gamma moments of their excess over ``s_min``)."""
        original = np.asarray(train_data)
        data = original.astype(np.float64)
        observed = ~np.isnan(data)
        nonzero = observed & (data > ZERO_TOLERANCE)
        residues, largest = count_near_zero(data[observed], ZERO_TOLERANCE)
        if residues:
            logger.info("ZIG: %d observed training values within %g of zero (largest magnitude %.3g) count as zero",
                        residues, ZERO_TOLERANCE, largest)
        if not nonzero.any():
            raise NeurodynError("observation 'zig': the training data hold no non-zero events; "
                                "ZIG needs deconvolved events (non-negative, some above zero)")
        smallest = float(data[nonzero].min())
        s_min = auto_s_min(data[nonzero]) if config.s_min == "auto" else float(config.s_min)
        # Compared in the data's own precision, as the likelihood compares its (float32) targets.
        threshold = np.asarray(event_threshold(s_min), dtype=original.dtype if original.dtype.kind == "f" else None)
        is_event = observed & (original > threshold)
        below = int(nonzero.sum() - is_event.sum())
        if below and config.s_min == "auto":
            logger.info("ZIG: s_min auto = %.4g; %d of %d non-zero training events (from %.3g) lie far below the "
                        "others and count as zero", s_min, below, int(nonzero.sum()), smallest)
        elif below:
            warnings.warn(f"s_min = {s_min:g} is not below {below} training event(s) (smallest {smallest:.3g}); "
                          "values at or below s_min count as zero — use 's_min: auto'", stacklevel=2)
        options = dict(s_min=s_min, gamma_prior=float(config.gamma_prior),
                       l2_gamma_distance_scale=float(config.l2_gamma_distance_scale))
        options.update(_initial_values(data, observed, is_event, s_min, float(config.gamma_prior)))
        return options

    # -- parameters -----------------------------------------------------------------------------
    def _params(self, readout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = torch.sigmoid(readout[..., 0]).clamp(Q_CLIP, 1.0 - Q_CLIP)
        scaled = self.gamma_scales(readout[..., 1:3])
        return q, scaled[..., 0], scaled[..., 1]

    def elementwise_nll(self, readout: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        q, alpha, beta = self._params(readout)
        return zig_nll(q, alpha, beta, target, self.s_min, self.zero_tolerance)

    def pairwise_log_likelihood(self, readout: torch.Tensor, target: torch.Tensor, observed: torch.Tensor,
                                max_entries: int = 2 ** 24) -> torch.Tensor:
        # zig_nll summed over observed entries is linear in four statistics of the data (zero / event
        # indicators, log excess and excess at events): one matrix product each, same branches as zig_nll.
        q, alpha, beta = (p.flatten(1) for p in self._params(readout))
        observed = observed.to(target.dtype)
        is_event = target > event_threshold(self.s_min, self.zero_tolerance)
        excess = torch.where(is_event, target - self.s_min, torch.ones_like(target))
        event = (is_event * observed).flatten(1)
        zero = observed.flatten(1) - event
        event_log_excess = event * torch.log(excess.flatten(1))
        event_excess = event * excess.flatten(1)
        event_constant = torch.log(q) + alpha * torch.log(beta) - torch.lgamma(alpha)
        return (zero @ torch.log1p(-q).T + event @ event_constant.T + event_log_excess @ (alpha - 1.0).T
                - event_excess @ beta.T)

    def mean(self, readout: torch.Tensor) -> torch.Tensor:
        q, alpha, beta = self._params(readout)
        return q * (alpha / beta + self.s_min)

    def named_params(self, readout: torch.Tensor) -> dict[str, torch.Tensor]:
        q, alpha, beta = self._params(readout)
        return {"q": q, "alpha": alpha, "beta": beta}

    def penalty(self) -> torch.Tensor:
        return self.gamma_scales.penalty()

    def set_hyperparameters(self, config) -> None:
        self.gamma_scales.configure(config.gamma_prior, config.l2_gamma_distance_scale)

    def initial_readout_bias(self, mean_observed: torch.Tensor) -> torch.Tensor | None:
        """Bias ``(N, 3)``: q = each neuron's fraction of training entries above s_min; alpha, beta from the
        moments of its event excess (``mean_observed`` is not needed: both come from ``options_from_config``)."""
        if self.initial_event_fraction is None:
            return None
        like = self.gamma_scales.scales
        fraction = torch.tensor(self.initial_event_fraction, dtype=like.dtype, device=like.device)
        fraction = fraction.clamp(Q_CLIP, 1.0 - Q_CLIP)
        gamma = torch.tensor([self.initial_alpha, self.initial_beta], dtype=like.dtype, device=like.device).T
        logit_q = torch.log(fraction) - torch.log1p(-fraction)
        return torch.cat([logit_q.unsqueeze(-1), self.gamma_scales.raw_for(gamma)], dim=-1)

    # -- data checks ----------------------------------------------------------------------------
    def validate_targets(self, data, source: str) -> None:
        """Events must be non-negative; values within ``zero_tolerance`` of zero are counted (warning) as zero."""
        data = np.asarray(data)
        observed = data[~np.isnan(data)]
        negative = observed < -self.zero_tolerance
        if negative.any():
            raise NeurodynError(
                f"{source}: key 'data' holds {int(negative.sum())} negative value(s) (min {observed.min():g}); "
                f"a ZIG model needs non-negative deconvolved events (values within {self.zero_tolerance:g} "
                "of zero are accepted as zero)")
        residues, largest = count_near_zero(observed, self.zero_tolerance)
        if residues:
            warnings.warn(f"{source}: key 'data': {residues} observed value(s) within {self.zero_tolerance:g} of "
                          f"zero (largest magnitude {largest:.3g}) are deconvolution residues and count as zero",
                          stacklevel=2)


def auto_s_min(events: np.ndarray) -> float:
    """``s_min: auto`` from the non-zero training events ``(n,)`` (all > 0).

    ``AUTO_S_MIN_FRACTION`` x the smallest event that is at least ``AUTO_S_MIN_OUTLIER_FRACTION``
    x the ``AUTO_S_MIN_QUANTILE`` quantile of ``events``. Deconvolved events cut at a detection
    threshold have a dense lower edge: there the rule gives 0.9 x the smallest event. A few stray
    events far below that edge (fewer than 1% of all) are outliers that would otherwise set the
    gamma's support for every neuron; they count as zeros instead.
    """
    events = np.asarray(events, dtype=np.float64).reshape(-1)
    edge = AUTO_S_MIN_OUTLIER_FRACTION * float(np.quantile(events, AUTO_S_MIN_QUANTILE))
    return AUTO_S_MIN_FRACTION * float(events[events >= edge].min())


def _initial_values(data: np.ndarray, observed: np.ndarray, is_event: np.ndarray, s_min: float,
                    scale: float) -> dict[str, list[float]]:
    """Per-neuron starting values: event fraction, and (alpha, beta) of the excess ``x - s_min`` (pooled if too few)."""
    num_neurons = data.shape[-1]
    flat_data = data.reshape(-1, num_neurons)
    flat_observed = observed.reshape(-1, num_neurons)
    flat_event = is_event.reshape(-1, num_neurons)
    fraction = flat_event.sum(0) / np.maximum(flat_observed.sum(0), 1)
    excess_all = np.maximum(flat_data[flat_event] - s_min, 0.0)
    pooled = gamma_moments(excess_all) or (1.0, 1.0 / max(float(excess_all.mean()), 1e-6))
    alpha, beta = [], []
    for n in range(num_neurons):
        moments = gamma_moments(np.maximum(flat_data[flat_event[:, n], n] - s_min, 0.0)) or pooled
        a, b = fit_into_scales(*moments, scale)
        alpha.append(a)
        beta.append(b)
    return dict(initial_event_fraction=[float(f) for f in fraction], initial_alpha=alpha, initial_beta=beta)
