"""Gamma observations: rectified, smoothed EMG (strictly positive values per channel and bin).

``x ~ Gamma(shape alpha, rate beta)`` with ``alpha, beta = sigmoid(.) * s``, ``s`` trainable
per-channel scales pulled towards ``gamma_prior`` (the same parameterisation and penalty as the
ZIG model, see ``observation.zig``). The expected value is ``alpha / beta``.
"""

from __future__ import annotations

import numpy as np
import torch

from neurodyn.errors import NeurodynError
from neurodyn.observation.base import ObservationModel
from neurodyn.observation.zig import SigmoidScales, fit_into_scales, gamma_log_density, gamma_moments


def gamma_nll(alpha: torch.Tensor, beta: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of each positive ``target`` under Gamma(shape alpha, rate beta); same shapes."""
    return -gamma_log_density(target, alpha, beta)


class Gamma(ObservationModel):
    """Two readout values per channel: raw alpha and raw beta."""

    name = "gamma"
    params_per_neuron = 2

    def __init__(self, num_neurons: int, gamma_prior: float = 20.0, l2_gamma_distance_scale: float = 1e-4,
                 initial_alpha: list[float] | None = None, initial_beta: list[float] | None = None):
        super().__init__(num_neurons)
        self.gamma_scales = SigmoidScales(2, num_neurons, gamma_prior, l2_gamma_distance_scale)
        self.initial_alpha = initial_alpha
        self.initial_beta = initial_beta

    @classmethod
    def options_from_config(cls, config, train_data) -> dict:
        """The prior settings, and per-channel starting (alpha, beta) from the moments of the training values."""
        data = np.asarray(train_data, dtype=np.float64)
        flat = data.reshape(-1, data.shape[-1])
        scale = float(config.gamma_prior)
        observed = flat[~np.isnan(flat)]
        pooled = gamma_moments(observed) or (1.0, 1.0 / max(float(observed.mean()) if observed.size else 1.0, 1e-6))
        alpha, beta = [], []
        for channel in flat.T:
            a, b = fit_into_scales(*(gamma_moments(channel[~np.isnan(channel)]) or pooled), scale)
            alpha.append(a)
            beta.append(b)
        return dict(gamma_prior=scale, l2_gamma_distance_scale=float(config.l2_gamma_distance_scale),
                    initial_alpha=alpha, initial_beta=beta)

    def _params(self, readout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scaled = self.gamma_scales(readout[..., 0:2])
        return scaled[..., 0], scaled[..., 1]

    def elementwise_nll(self, readout: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        alpha, beta = self._params(readout)
        # Masked (zero-filled) entries must not give log(0) = -inf: it would reach the gradient as NaN.
        safe_target = torch.where(target > 0, target, torch.ones_like(target))
        return gamma_nll(alpha, beta, safe_target)

    def mean(self, readout: torch.Tensor) -> torch.Tensor:
        alpha, beta = self._params(readout)
        return alpha / beta

    def named_params(self, readout: torch.Tensor) -> dict[str, torch.Tensor]:
        alpha, beta = self._params(readout)
        return {"alpha": alpha, "beta": beta}

    def penalty(self) -> torch.Tensor:
        return self.gamma_scales.penalty()

    def set_hyperparameters(self, config) -> None:
        self.gamma_scales.configure(config.gamma_prior, config.l2_gamma_distance_scale)

    def initial_readout_bias(self, mean_observed: torch.Tensor) -> torch.Tensor | None:
        """Bias ``(N, 2)`` from the per-channel moments found by ``options_from_config``; None without them."""
        if self.initial_alpha is None:
            return None
        like = self.gamma_scales.scales
        values = torch.tensor([self.initial_alpha, self.initial_beta], dtype=like.dtype, device=like.device).T
        return self.gamma_scales.raw_for(values)

    def validate_targets(self, data, source: str) -> None:
        data = np.asarray(data)
        observed = data[~np.isnan(data)]
        not_positive = observed <= 0
        if not_positive.any():
            raise NeurodynError(
                f"{source}: key 'data' holds {int(not_positive.sum())} value(s) <= 0 (min {observed.min():g}); a Gamma "
                "model needs strictly positive values (e.g. rectified, smoothed EMG) — use 'observation: zig' for "
                "data with zeros")
