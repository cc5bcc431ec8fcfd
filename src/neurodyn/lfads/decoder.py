"""The LFADS decoder: controller and generator GRUs unrolled over time, and the factors.

Generator and controller are standard GRUs (PyTorch/cuDNN gate formulation) whose states are
clipped to +-``cell_clip_value`` after every step. Factors are a bias-free linear map of the
generator state with unit-norm weight rows, so their scale cannot drift into the readout.
On CPU the recurrent loops run in the compiled kernels of ``compiled_rnn`` (same maths); the PyTorch
loops below are the reference implementation and the fallback (GPU, no compiler).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from neurodyn.lfads.compiled_rnn import load_compiled_rnn, run_controlled_decoder, run_gru_sequence
from neurodyn.lfads.dropout import Dropout


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
                 cell_clip_value: float, dropout: Dropout):
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
                sample: bool, rng: torch.Generator | None = None) -> DecoderOutput:
        """``rng`` drives the dropout masks and the inferred-input samples (None = global)."""
        if self.co_dim == 0:
            return self._autonomous(gen_init, num_steps, rng)
        return self._controlled(gen_init, controller_inputs, sample, rng)

    def _autonomous(self, gen_init: torch.Tensor, num_steps: int, rng: torch.Generator | None) -> DecoderOutput:
        batch = gen_init.shape[0]
        kernel = load_compiled_rnn() if gen_init.device.type == "cpu" else None
        if kernel is not None:
            # No input: every step's input projection is the input bias.
            projection = self.generator.bias_ih_l0.expand(num_steps, batch, -1)
            states = run_gru_sequence(kernel, projection, gen_init, self.generator.weight_hh_l0,
                                      self.generator.bias_hh_l0, clip=self.cell_clip_value).transpose(0, 1)
            return DecoderOutput(factors=self.factors(self.dropout(states, rng)))
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
        return DecoderOutput(factors=self.factors(self.dropout(states, rng)))

    def _controlled(self, gen_init: torch.Tensor, controller_inputs: torch.Tensor, sample: bool,
                    rng: torch.Generator | None) -> DecoderOutput:
        batch, num_steps, ci_dim = controller_inputs.shape
        # Random draws in a fixed order (inputs' dropout, inferred-input noise, state dropout), so
        # both implementations below see the same numbers for the same generator.
        controller_inputs = self.dropout(controller_inputs, rng)
        noise = (torch.randn(num_steps, batch, self.co_dim, generator=rng, device=gen_init.device,
                             dtype=gen_init.dtype) if sample else None)
        # The per-step dropout masks of the generator state, drawn once per pass: (T + 1, B, G) or None.
        keep = self.dropout.keep_multipliers((num_steps + 1, batch, gen_init.shape[1]), gen_init, rng)
        kernel = load_compiled_rnn() if gen_init.device.type == "cpu" else None
        if kernel is not None:
            return self._controlled_compiled(kernel, gen_init, controller_inputs, noise, keep)
        return self._controlled_python(gen_init, controller_inputs, noise, keep)

    def _controller_weights(self, ci_dim: int) -> tuple[torch.Tensor, ...]:
        """(w_ci, w_factor_in, w_con_hh, b_con_hh, w_gen_ih, b_gen_ih, w_gen_hh, b_gen_hh, factor weight).

        The controller's input weights act on [ci_t, factors_{t-1}]; split so that the ci part can
        be applied to all steps at once and only the factor part inside the loop."""
        w_ci, w_factor_in = self.controller.weight_ih_l0.split([ci_dim, self.factors.weight.shape[0]], dim=1)
        gen = self.generator
        return (w_ci, w_factor_in, self.controller.weight_hh_l0, self.controller.bias_hh_l0, gen.weight_ih_l0,
                gen.bias_ih_l0, gen.weight_hh_l0, gen.bias_hh_l0, self.factors.normalised_weight())

    def _controlled_compiled(self, kernel, gen_init: torch.Tensor, controller_inputs: torch.Tensor,
                             noise: torch.Tensor | None, keep: torch.Tensor | None) -> DecoderOutput:
        batch, num_steps, ci_dim = controller_inputs.shape
        w_ci, w_factor_in, w_hh, b_hh, w_gen_ih, b_gen_ih, w_gen_hh, b_gen_hh, factor_weight = \
            self._controller_weights(ci_dim)
        ci_projection = F.linear(controller_inputs.transpose(0, 1), w_ci, self.controller.bias_ih_l0)
        # Zero noise gives the posterior mean and ones keep everything: the same numbers as the
        # Python loop's "no sample" and "no dropout" branches.
        factors, co_mean, co_std, co = run_controlled_decoder(
            kernel, ci_projection, gen_init, self.controller_initial_state.expand(batch, -1),
            gen_init.new_zeros(num_steps, batch, self.co_dim) if noise is None else noise,
            gen_init.new_ones(num_steps + 1, *gen_init.shape) if keep is None else keep,
            (w_factor_in, w_hh, b_hh, self.controller_output.weight, self.controller_output.bias,
             w_gen_ih, b_gen_ih, w_gen_hh, b_gen_hh, factor_weight), self.cell_clip_value)
        return DecoderOutput(factors=factors.transpose(0, 1), co_mean=co_mean.transpose(0, 1),
                             co_std=co_std.transpose(0, 1), co_sample=co.transpose(0, 1))

    def _controlled_python(self, gen_init: torch.Tensor, controller_inputs: torch.Tensor,
                           noise: torch.Tensor | None, keep: torch.Tensor | None) -> DecoderOutput:
        batch, num_steps, ci_dim = controller_inputs.shape
        w_ci, w_factor_in, w_hh, b_hh, w_gen_ih, b_gen_ih, w_gen_hh, b_gen_hh, factor_weight = \
            self._controller_weights(ci_dim)
        # unbind (not [:, t]) so the backward pass stacks step gradients once instead of
        # zero-filling a full-size tensor at every step.
        ci_projection = F.linear(controller_inputs, w_ci, self.controller.bias_ih_l0).unbind(1)
        w_factor_in_t = w_factor_in.t()
        keep = None if keep is None else keep.unbind(0)
        noise = None if noise is None else noise.unbind(0)
        gen_h = gen_init
        con_h = self.controller_initial_state.expand(batch, -1)
        factor = F.linear(gen_h if keep is None else gen_h * keep[0], factor_weight)
        factors, means, stds, samples = [], [], [], []
        for t in range(num_steps):
            gates_x = torch.addmm(ci_projection[t], factor, w_factor_in_t)
            con_h = self.clip(_gru_from_projection(gates_x, con_h, w_hh, b_hh))
            co_mean, co_logvar = self.controller_output(con_h).chunk(2, dim=-1)
            co_std = torch.exp(0.5 * co_logvar)
            co = co_mean if noise is None else torch.addcmul(co_mean, co_std, noise[t])
            gen_h = self.clip(_gru_from_projection(F.linear(co, w_gen_ih, b_gen_ih), gen_h, w_gen_hh, b_gen_hh))
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


def _gru_from_projection(gates_x: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """GRU update given the input projection ``W_ih x + b_ih`` already computed (PyTorch gate order r, z, n).

    Same maths as ``torch.gru_cell`` in fewer operations (this loop is bound by the number of small
    operations, not by arithmetic): reset and update gates in one sigmoid, the candidate's
    ``x_n + r * h_n`` in one addcmul, and ``n + z (h - n)`` as one lerp.
    """
    hidden = h.shape[-1]
    gates_h = F.linear(h, w_hh, b_hh)
    x_rz, x_n = gates_x.split([2 * hidden, hidden], dim=-1)
    h_rz, h_n = gates_h.split([2 * hidden, hidden], dim=-1)
    reset, update = torch.sigmoid(x_rz + h_rz).chunk(2, dim=-1)
    candidate = torch.tanh(torch.addcmul(x_n, reset, h_n))
    return torch.lerp(candidate, h, update)
