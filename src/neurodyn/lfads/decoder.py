"""The LFADS decoder: controller and generator GRUs unrolled over time, and the factors.

Generator and controller are standard GRUs (PyTorch/cuDNN gate formulation) whose states are
clipped to +-``cell_clip_value`` after every step. Factors are a bias-free linear map of the
generator state with unit-norm weight rows, so their scale cannot drift into the readout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class NormalisedLinear(nn.Module):
    """Bias-free linear map whose weight rows (one per output) are L2-normalised on every call."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.normal_(self.weight, std=in_dim ** -0.5)

    def normalised_weight(self) -> torch.Tensor:
        return F.normalize(self.weight, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalised_weight())


def gru_step(gru: nn.GRU, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One time step of the single-layer ``gru`` (same weights, same maths as ``gru`` over a sequence)."""
    return torch.gru_cell(x, h, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)


@dataclass
class DecoderOutput:
    """Per-step decoder results. Shapes: factors ``(B, T, F)``; controller tensors ``(B, T, co_dim)``
    or None for an autonomous generator."""

    factors: torch.Tensor
    co_mean: torch.Tensor | None = None
    co_std: torch.Tensor | None = None
    co_sample: torch.Tensor | None = None


class Decoder(nn.Module):
    """Generator (+ optional controller) unrolled for ``num_steps`` from the generator's initial state."""

    def __init__(self, gen_dim: int, factors_dim: int, co_dim: int, con_dim: int, ci_dim: int,
                 cell_clip_value: float, dropout: nn.Dropout):
        super().__init__()
        self.co_dim = co_dim
        self.cell_clip_value = cell_clip_value
        self.dropout = dropout
        # An autonomous generator has no input; torch's GRU needs one, so it gets a constant zero.
        self.generator = nn.GRU(max(co_dim, 1), gen_dim, batch_first=True)
        self.factors = NormalisedLinear(gen_dim, factors_dim)
        if co_dim > 0:
            self.controller = nn.GRU(ci_dim + factors_dim, con_dim, batch_first=True)
            self.controller_initial_state = nn.Parameter(torch.zeros(1, con_dim))
            self.controller_output = nn.Linear(con_dim, 2 * co_dim)

    def clip(self, h: torch.Tensor) -> torch.Tensor:
        return torch.clamp(h, -self.cell_clip_value, self.cell_clip_value)

    def forward(self, gen_init: torch.Tensor, num_steps: int, controller_inputs: torch.Tensor | None,
                sample: bool) -> DecoderOutput:
        if self.co_dim == 0:
            return self._autonomous(gen_init, num_steps)
        return self._controlled(gen_init, controller_inputs, sample)

    def _autonomous(self, gen_init: torch.Tensor, num_steps: int) -> DecoderOutput:
        batch = gen_init.shape[0]
        zeros = gen_init.new_zeros(batch, num_steps, 1)
        first = self.clip(gru_step(self.generator, zeros[:, 0], gen_init))
        if self.cell_clip_value >= 1.0 and num_steps > 1:
            # A GRU state is a convex mix of the previous state and a tanh in (-1, 1), so once it is
            # inside +-clip (clip >= 1) it can never leave: clipping after step 1 is the identity and
            # the remaining steps can run in torch's fused sequence kernel with identical results.
            rest, _ = self.generator(zeros[:, 1:], first.unsqueeze(0))
            states = torch.cat([first.unsqueeze(1), rest], dim=1)
        else:
            h, steps = first, [first]
            for t in range(1, num_steps):
                h = self.clip(gru_step(self.generator, zeros[:, t], h))
                steps.append(h)
            states = torch.stack(steps, dim=1)
        return DecoderOutput(factors=self.factors(self.dropout(states)))

    def _controlled(self, gen_init: torch.Tensor, controller_inputs: torch.Tensor, sample: bool) -> DecoderOutput:
        batch, num_steps, ci_dim = controller_inputs.shape
        controller_inputs = self.dropout(controller_inputs)
        # The controller's input weights act on [ci_t, factors_{t-1}]: project the ci part for all
        # steps at once and only the factor part inside the loop.
        w_ci, w_factors = self.controller.weight_ih_l0.split([ci_dim, self.factors.weight.shape[0]], dim=1)
        # unbind (not [:, t]) so the backward pass stacks step gradients once instead of
        # zero-filling a full-size tensor at every step.
        ci_projection = F.linear(controller_inputs, w_ci, self.controller.bias_ih_l0).unbind(1)
        w_hh, b_hh = self.controller.weight_hh_l0, self.controller.bias_hh_l0
        noise = torch.randn(num_steps, batch, self.co_dim, device=gen_init.device) if sample else None

        # Normalise the factor weights and draw the per-step dropout masks once per pass rather
        # than once per step: same maths, a fraction of the operations.
        factor_weight = self.factors.normalised_weight()
        keep = self._dropout_masks(num_steps + 1, batch, gen_init.shape[1], gen_init)
        gen_h = gen_init
        con_h = self.controller_initial_state.expand(batch, -1)
        factor = F.linear(gen_h if keep is None else gen_h * keep[0], factor_weight)
        factors, means, stds, samples = [], [], [], []
        for t in range(num_steps):
            gates_x = ci_projection[t] + F.linear(factor, w_factors)
            con_h = self.clip(_gru_from_projection(gates_x, con_h, w_hh, b_hh))
            co_mean, co_logvar = self.controller_output(con_h).chunk(2, dim=-1)
            co_std = torch.exp(0.5 * co_logvar)
            co = co_mean + co_std * noise[t] if sample else co_mean
            gen_h = self.clip(gru_step(self.generator, co, gen_h))
            factor = F.linear(gen_h if keep is None else gen_h * keep[t + 1], factor_weight)
            factors.append(factor)
            means.append(co_mean)
            stds.append(co_std)
            samples.append(co)
        return DecoderOutput(
            factors=torch.stack(factors, 1),
            co_mean=torch.stack(means, 1),
            co_std=torch.stack(stds, 1),
            co_sample=torch.stack(samples, 1),
        )


    def _dropout_masks(self, num_steps: int, batch: int, dim: int, like: torch.Tensor) -> torch.Tensor | None:
        """Inverted-dropout multipliers ``(num_steps, batch, dim)`` matching ``self.dropout``; None when inactive."""
        p = self.dropout.p
        if not self.training or p == 0.0:
            return None
        return like.new_empty(num_steps, batch, dim).bernoulli_(1.0 - p) / (1.0 - p)


def _gru_from_projection(gates_x: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """GRU update given the input projection ``W_ih x + b_ih`` already computed (PyTorch gate order r, z, n)."""
    gates_h = F.linear(h, w_hh, b_hh)
    x_r, x_z, x_n = gates_x.chunk(3, dim=-1)
    h_r, h_z, h_n = gates_h.chunk(3, dim=-1)
    reset = torch.sigmoid(x_r + h_r)
    update = torch.sigmoid(x_z + h_z)
    candidate = torch.tanh(x_n + reset * h_n)
    return candidate + update * (h - candidate)
