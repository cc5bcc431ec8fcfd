"""The LFADS decoder: controller and generator GRUs unrolled over time, and the factors.

Generator and controller are standard GRUs (PyTorch/cuDNN gate formulation) whose states are
clipped to +-``cell_clip_value`` after every step. Factors are a bias-free linear map of the
generator state with unit-norm weight rows, so their scale cannot drift into the readout.
Measured inputs (``ext_input``, e.g. a stimulus) enter the generator at each step beside the
inferred inputs: its input is ``[co_t, ext_t]``. Since ``W_ih [co; ext] + b = W_co co + (W_ext ext
+ b)``, the measured part is projected for all steps at once, outside the loop, and enters the loop
as a per-step input bias.
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
    or None for an autonomous generator; gen_states ``(B, T, G)``: the generator states after each
    step (before dropout), detached: they are an output to read, not a training signal (the compiled
    controlled loop does not differentiate them)."""

    factors: torch.Tensor
    co_mean: torch.Tensor | None = None
    co_std: torch.Tensor | None = None
    co_sample: torch.Tensor | None = None
    gen_states: torch.Tensor | None = None


class Decoder(nn.Module):
    """Generator (+ optional controller) unrolled for ``num_steps`` from the generator's initial state.

    The generator's input is ``[co_t, ext_t]``: ``co_dim`` inferred inputs then ``ext_input_dim``
    measured inputs (its ``weight_ih_l0`` columns in that order)."""

    def __init__(self, gen_dim: int, factors_dim: int, co_dim: int, con_dim: int, ci_dim: int,
                 cell_clip_value: float, dropout: Dropout, ext_input_dim: int = 0):
        super().__init__()
        self.co_dim = co_dim
        self.ext_input_dim = ext_input_dim
        self.cell_clip_value = cell_clip_value
        self.dropout = dropout
        # A generator without any input still needs one for torch's GRU: it gets a constant zero.
        self.generator = nn.GRU(max(co_dim + ext_input_dim, 1), gen_dim, batch_first=True)
        self.factors = NormalisedLinear(gen_dim, factors_dim)
        if co_dim > 0:
            self.controller = nn.GRU(ci_dim + factors_dim, con_dim, batch_first=True)
            self.controller_initial_state = nn.Parameter(torch.zeros(1, con_dim))
            self.controller_output = nn.Linear(con_dim, 2 * co_dim)

    def clip(self, h: torch.Tensor) -> torch.Tensor:
        return torch.clamp(h, -self.cell_clip_value, self.cell_clip_value)

    def forward(self, gen_init: torch.Tensor, num_steps: int, controller_inputs: torch.Tensor | None,
                sample: bool, rng: torch.Generator | None = None,
                ext_input: torch.Tensor | None = None) -> DecoderOutput:
        """``rng`` drives the dropout masks and the inferred-input samples (None = global);
        ``ext_input`` ``(B, T, ext_input_dim)``: the measured inputs (required when ext_input_dim > 0)."""
        if (ext_input is None) != (self.ext_input_dim == 0):
            raise ValueError(f"the generator takes {self.ext_input_dim} measured inputs per step; got "
                             f"{'none' if ext_input is None else tuple(ext_input.shape)}")
        if self.co_dim == 0:
            return self._autonomous(gen_init, num_steps, rng, ext_input)
        return self._controlled(gen_init, controller_inputs, sample, rng, ext_input)

    def _ext_input_weight(self) -> torch.Tensor:
        """The generator's input weights acting on the measured inputs ``(3G, ext_input_dim)``."""
        return self.generator.weight_ih_l0[:, self.co_dim:]

    def _generator_input_bias(self, ext_input: torch.Tensor | None) -> torch.Tensor:
        """The generator's input bias: ``b_ih`` ``(3G,)``, or with measured inputs the per-step, time-major
        ``W_ext ext_t + b_ih`` ``(T, B, 3G)`` (the part of the input projection that is known before the loop)."""
        if ext_input is None:
            return self.generator.bias_ih_l0
        return F.linear(ext_input.transpose(0, 1), self._ext_input_weight(), self.generator.bias_ih_l0)

    def _autonomous(self, gen_init: torch.Tensor, num_steps: int, rng: torch.Generator | None,
                    ext_input: torch.Tensor | None) -> DecoderOutput:
        batch = gen_init.shape[0]
        kernel = load_compiled_rnn() if gen_init.device.type == "cpu" else None
        if kernel is not None:
            # No inferred input: every step's input projection is the input bias (per step with measured inputs).
            projection = self._generator_input_bias(ext_input)
            if ext_input is None:
                projection = projection.expand(num_steps, batch, -1)
            states = run_gru_sequence(kernel, projection, gen_init, self.generator.weight_hh_l0,
                                      self.generator.bias_hh_l0, clip=self.cell_clip_value).transpose(0, 1)
            return DecoderOutput(factors=self.factors(self.dropout(states, rng)), gen_states=states.detach())
        inputs = gen_init.new_zeros(batch, num_steps, 1) if ext_input is None else ext_input
        first = self.clip(gru_step(self.generator, inputs[:, 0], gen_init))
        if self.cell_clip_value >= 1.0 and num_steps > 1:
            # A GRU state is a convex mix of the previous state and a tanh in (-1, 1), so once it is
            # inside +-clip (clip >= 1) it can never leave: clipping after step 1 is the identity and
            # the remaining steps can run in torch's fused sequence kernel with identical results.
            rest, _ = self.generator(inputs[:, 1:], first.unsqueeze(0))
            states = torch.cat([first.unsqueeze(1), rest], dim=1)
        else:
            h, steps = first, [first]
            for t in range(1, num_steps):
                h = self.clip(gru_step(self.generator, inputs[:, t], h))
                steps.append(h)
            states = torch.stack(steps, dim=1)
        return DecoderOutput(factors=self.factors(self.dropout(states, rng)), gen_states=states.detach())

    def _controlled(self, gen_init: torch.Tensor, controller_inputs: torch.Tensor, sample: bool,
                    rng: torch.Generator | None, ext_input: torch.Tensor | None) -> DecoderOutput:
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
            return self._controlled_compiled(kernel, gen_init, controller_inputs, noise, keep, ext_input)
        return self._controlled_python(gen_init, controller_inputs, noise, keep, ext_input)

    def _controller_weights(self, ci_dim: int, ext_input: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """(w_ci, w_factor_in, w_con_hh, b_con_hh, w_gen_co, gen_input_bias, w_gen_hh, b_gen_hh, factor weight).

        The controller's input weights act on [ci_t, factors_{t-1}]; split so that the ci part can
        be applied to all steps at once and only the factor part inside the loop. Likewise the
        generator's act on [co_t, ext_t]: ``w_gen_co`` is the co part and the ext part is folded into
        ``gen_input_bias`` (see ``_generator_input_bias``)."""
        w_ci, w_factor_in = self.controller.weight_ih_l0.split([ci_dim, self.factors.weight.shape[0]], dim=1)
        gen = self.generator
        w_gen_co = gen.weight_ih_l0 if self.ext_input_dim == 0 else gen.weight_ih_l0[:, :self.co_dim]
        return (w_ci, w_factor_in, self.controller.weight_hh_l0, self.controller.bias_hh_l0, w_gen_co,
                self._generator_input_bias(ext_input), gen.weight_hh_l0, gen.bias_hh_l0,
                self.factors.normalised_weight())

    def _controlled_compiled(self, kernel, gen_init: torch.Tensor, controller_inputs: torch.Tensor,
                             noise: torch.Tensor | None, keep: torch.Tensor | None,
                             ext_input: torch.Tensor | None) -> DecoderOutput:
        batch, num_steps, ci_dim = controller_inputs.shape
        w_ci, w_factor_in, w_hh, b_hh, w_gen_ih, gen_input_bias, w_gen_hh, b_gen_hh, factor_weight = \
            self._controller_weights(ci_dim, ext_input)
        ci_projection = F.linear(controller_inputs.transpose(0, 1), w_ci, self.controller.bias_ih_l0)
        # Zero noise gives the posterior mean and ones keep everything: the same numbers as the
        # Python loop's "no sample" and "no dropout" branches.
        factors, co_mean, co_std, co, gen_states = run_controlled_decoder(
            kernel, ci_projection, gen_init, self.controller_initial_state.expand(batch, -1),
            gen_init.new_zeros(num_steps, batch, self.co_dim) if noise is None else noise,
            gen_init.new_ones(num_steps + 1, *gen_init.shape) if keep is None else keep,
            (w_factor_in, w_hh, b_hh, self.controller_output.weight, self.controller_output.bias,
             w_gen_ih, gen_input_bias, w_gen_hh, b_gen_hh, factor_weight), self.cell_clip_value)
        return DecoderOutput(factors=factors.transpose(0, 1), co_mean=co_mean.transpose(0, 1),
                             co_std=co_std.transpose(0, 1), co_sample=co.transpose(0, 1),
                             gen_states=gen_states.transpose(0, 1))

    def _controlled_python(self, gen_init: torch.Tensor, controller_inputs: torch.Tensor,
                           noise: torch.Tensor | None, keep: torch.Tensor | None,
                           ext_input: torch.Tensor | None) -> DecoderOutput:
        batch, num_steps, ci_dim = controller_inputs.shape
        w_ci, w_factor_in, w_hh, b_hh, w_gen_ih, gen_input_bias, w_gen_hh, b_gen_hh, factor_weight = \
            self._controller_weights(ci_dim, ext_input)
        gen_bias = [gen_input_bias] * num_steps if ext_input is None else gen_input_bias.unbind(0)
        # unbind (not [:, t]) so the backward pass stacks step gradients once instead of
        # zero-filling a full-size tensor at every step.
        ci_projection = F.linear(controller_inputs, w_ci, self.controller.bias_ih_l0).unbind(1)
        w_factor_in_t, w_gen_ih_t = w_factor_in.t(), w_gen_ih.t()
        keep = None if keep is None else keep.unbind(0)
        noise = None if noise is None else noise.unbind(0)
        gen_h = gen_init
        con_h = self.controller_initial_state.expand(batch, -1)
        factor = F.linear(gen_h if keep is None else gen_h * keep[0], factor_weight)
        factors, means, stds, samples, gen_states = [], [], [], [], []
        for t in range(num_steps):
            gates_x = torch.addmm(ci_projection[t], factor, w_factor_in_t)
            con_h = self.clip(_gru_from_projection(gates_x, con_h, w_hh, b_hh))
            co_mean, co_logvar = self.controller_output(con_h).chunk(2, dim=-1)
            co_std = torch.exp(0.5 * co_logvar)
            co = co_mean if noise is None else torch.addcmul(co_mean, co_std, noise[t])
            gen_h = self.clip(_gru_from_projection(torch.addmm(gen_bias[t], co, w_gen_ih_t), gen_h, w_gen_hh, b_gen_hh))
            factor = F.linear(gen_h if keep is None else gen_h * keep[t + 1], factor_weight)
            factors.append(factor)
            means.append(co_mean)
            stds.append(co_std)
            samples.append(co)
            gen_states.append(gen_h)
        return DecoderOutput(
            factors=torch.stack(factors, 1),
            co_mean=torch.stack(means, 1),
            co_std=torch.stack(stds, 1),
            co_sample=torch.stack(samples, 1),
            gen_states=torch.stack(gen_states, 1).detach(),
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
