"""The LFADS mathematics, written once, on a leading worker axis.

Every computation of LFADS — read-in, both bidirectional encoders, IC posterior, controller,
generator, factors, readout, the KL terms and the recurrent L2 — lives in ``StackedLfads`` and
runs on weights with a leading worker axis ``W`` (``(W, *shape)``) and activations with one too (a
batch is ``(W, B, T, N)``). Two modules hold the weights: ``LFADS`` (``lfads.model``), one model,
whose parameters keep their familiar shapes and are handed to the mathematics as ``W = 1`` views;
and ``PopulationLFADS`` (``lfads.population``), the PBT workers of one architecture, whose
parameters are stacked. Why this way round rather than ``torch.func.vmap`` over the single model:
the recurrent loops run in the compiled kernels of ``compiled_rnn`` (CPU) or in cuDNN calls and the
fused GRU cell (GPU), neither of which vmap can batch; a worker axis written into the loops lets
all workers advance in one batched matrix product per step, and costs one model nothing (its
products are the same size).

Which code runs the loops is ``recurrent.recurrent_backend``'s choice: the compiled kernels in
their stacked form on CPU, PyTorch's library kernels on a GPU (each bidirectional encoder one cuDNN
call, the decoder's GRU steps in the fused gate kernel), otherwise the plain PyTorch loops below.

The random numbers of a forward pass (dropout masks, posterior noise) are drawn beforehand by
``draw_noise``, per worker from its own generator and in a fixed order, so worker k of a
population sees exactly the numbers its single model with the same generator sees.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from neurodyn.errors import NeurodynError
from neurodyn.lfads.compiled_rnn import load_compiled_rnn, run_controlled_decoder, run_gru_sequence
from neurodyn.lfads.priors import ar1_kl_one_sample, kl_diagonal_gaussians
from neurodyn.lfads.recurrent import (MAX_BLOCK_DIAGONAL_UNITS, bidirectional_gru_block_diagonal, gru_step,
                                      keep_multipliers, recurrent_backend, worker_linear)


def _map_tensors(instance, function: Callable[[torch.Tensor], torch.Tensor]):
    """A copy of the dataclass ``instance`` with ``function`` applied to every tensor field (None stays)."""
    return dataclasses.replace(instance, **{field.name: function(value) for field in dataclasses.fields(instance)
                                            if (value := getattr(instance, field.name)) is not None})


@dataclass
class LfadsOutput:
    """Everything one forward pass produces (one model; a population's tensors have a leading ``W``).

    readout ``(B, T, N, P)`` (P = observation parameters per neuron); factors ``(B, T, F)``;
    ic_mean/ic_std ``(B, ic_dim)``; co_* ``(B, T, co_dim)`` or None without a controller;
    gen_states ``(B, T, gen_dim)`` the generator states (detached, for outputs).
    """

    readout: torch.Tensor
    factors: torch.Tensor
    ic_mean: torch.Tensor
    ic_std: torch.Tensor
    co_mean: torch.Tensor | None
    co_std: torch.Tensor | None
    co_sample: torch.Tensor | None
    gen_states: torch.Tensor | None = None

    def worker(self, k: int) -> LfadsOutput:
        """Worker ``k``'s output of a stacked one (the worker axis dropped)."""
        return _map_tensors(self, lambda tensor: tensor[k])

    def stacked(self) -> LfadsOutput:
        """One model's output with a worker axis of one in front."""
        return _map_tensors(self, lambda tensor: tensor.unsqueeze(0))


@dataclass
class EncoderReading:
    """What the encoders make of a batch of trials: the IC posterior ``ic_mean``/``ic_std``
    ``(B, ic_dim)`` and what the controller reads at each step, the CI encoder's outputs lagged by
    ``ci_lag``, ``controller_inputs`` ``(B, T, 2 * ci_enc_dim)`` (None without a controller)."""

    ic_mean: torch.Tensor
    ic_std: torch.Tensor
    controller_inputs: torch.Tensor | None

    def repeat(self, times: int) -> EncoderReading:
        """The reading of the batch repeated ``times`` times along the trials (as ``Tensor.repeat``:
        the whole batch, then the whole batch again), e.g. for several posterior samples per trial."""
        return _map_tensors(self, lambda tensor: tensor.repeat(times, *([1] * (tensor.dim() - 1))))

    def worker(self, k: int) -> EncoderReading:
        return _map_tensors(self, lambda tensor: tensor[k])


@dataclass
class ForwardNoise:
    """The random numbers of one forward pass, stacked over workers.

    Dropout multipliers (``0`` or ``1 / keep``; ones for a worker of a population without dropout)
    and standard normal posterior noise, each ``(W, ...)`` with one model's shape after the worker
    axis: encoder input ``(W, B, T, N)``, IC encoder final state ``(W, B, 2 ic_enc)``, IC noise ``(W,
    B, ic_dim)``, generator initial state ``(W, B, G)``; with a controller: controller inputs ``(W,
    B, T, 2 ci_enc)``, inferred-input noise ``(W, T, B, co_dim)`` and the generator states'
    multipliers ``state_keep`` ``(W, T + 1, B, G)`` (the decoder's per-step masks); autonomous:
    ``state_keep`` ``(W, B, T, G)``. None where the pass draws nothing (no dropout, no sampling).
    """

    input_keep: torch.Tensor | None = None
    ic_final_keep: torch.Tensor | None = None
    ic_noise: torch.Tensor | None = None
    gen_init_keep: torch.Tensor | None = None
    ci_keep: torch.Tensor | None = None
    co_noise: torch.Tensor | None = None
    state_keep: torch.Tensor | None = None


def ic_std_from_log_var(log_var: torch.Tensor, var_floor: float) -> torch.Tensor:
    """The IC posterior's standard deviation from the encoder's log variance, with ``var_floor``
    (``ic_post_var_min``) added so a posterior never collapses to a point."""
    return torch.sqrt(torch.exp(log_var) + var_floor)


def hide_from_encoders(neuron_mask: torch.Tensor, num_steps: int, forward_bins: int) -> torch.Tensor:
    """What the encoders may see of a trial of ``num_steps`` bins: ``neuron_mask`` ``(..., N)`` (0 for
    held-out neurons) repeated over the bins, ``(..., num_steps, N)``, with the last ``forward_bins``
    bins 0 (the forward-prediction window: the generator runs through it, no encoder sees it)."""
    if forward_bins >= num_steps:
        raise NeurodynError(f"forward_bins {forward_bins} is not shorter than the trials ({num_steps} bins): "
                            "the encoders would see nothing")
    in_window = torch.arange(num_steps, device=neuron_mask.device) < num_steps - forward_bins
    return neuron_mask.unsqueeze(-2) * in_window.to(neuron_mask.dtype).unsqueeze(-1)


def lag_controller_inputs(outputs: torch.Tensor, lag: int) -> torch.Tensor:
    """Lag the CI encoder outputs ``(..., T, 2H)`` so step t sees the forward pass up to t - lag and
    the backward pass from t + lag; padded with zeros. The lag keeps the controller from seeing the
    very bin it is asked to explain."""
    if lag == 0:
        return outputs
    num_steps, hidden = outputs.shape[-2], outputs.shape[-1] // 2
    forward, backward = outputs[..., :hidden], outputs[..., hidden:]
    pad = torch.zeros_like(forward.narrow(-2, 0, lag))
    forward = torch.cat([pad, forward.narrow(-2, 0, num_steps - lag)], dim=-2)
    backward = torch.cat([backward.narrow(-2, lag, num_steps - lag), pad], dim=-2)
    return torch.cat([forward, backward], dim=-1)


# The architecture's settings a ``StackedLfads`` subclass sets (besides its weights and ``observation``).
ARCHITECTURE_SETTINGS = ("num_neurons", "ic_dim", "co_dim", "ext_input_dim", "ci_lag", "ic_prior_var",
                         "ic_post_var_min", "co_prior_df", "learnable_ic_prior", "mask_as_input", "forward_bins",
                         "cell_clip_value", "is_stitched")


class StackedLfads(nn.Module):
    """The LFADS mathematics for weights with a leading worker axis (see the module docstring).

    A subclass holds the weights and sets ``ARCHITECTURE_SETTINGS`` (``learnable_ic_prior``: weights
    ``ic_prior.mean`` and ``ic_prior.log_var``; ``co_prior_df`` None: the Gaussian AR(1) controller
    prior) and ``observation`` (an observation model whose own parameters, if any, may be stacked too);
    ``_stacked(name)`` returns the weight of that ``LFADS`` parameter or buffer name for every worker,
    ``(W, *shape)``.
    """

    def _stacked(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def encoder_mask(self, num_steps: int) -> torch.Tensor:
        """``(num_steps, N)`` (``(W, num_steps, N)`` for a population): 1 where the encoders may see the
        data, 0 for held-out neurons and for the last ``forward_bins`` bins (see ``hide_from_encoders``)."""
        return hide_from_encoders(self.encoder_input_mask, num_steps, self.forward_bins)

    # -- random numbers ---------------------------------------------------------------------------
    def draw_noise(self, rngs: list[torch.Generator | None], dropout_ps: list[float] | None, batch: int,
                   num_steps: int, sample: bool, like: torch.Tensor) -> ForwardNoise:
        """Each worker's random numbers for one forward pass, drawn from ``rngs[k]`` (None: torch's global
        generator) in the order the pass uses them: encoder-input dropout, IC-state dropout, IC noise,
        initial-state dropout, then the decoder's (controller-input dropout, inferred-input noise,
        state dropout). ``dropout_ps``: each worker's dropout rate, None for a pass without dropout;
        ``sample``: draw the posterior noise; ``like`` gives dtype and device."""
        dtype, device = like.dtype, like.device
        gen_dim = self._stacked("ic_to_generator.weight").shape[1]
        ic_enc = self._stacked("ic_encoder.gru.weight_hh_l0").shape[2]
        draws: dict[str, list[torch.Tensor]] = {}

        def add(name: str, value: torch.Tensor) -> None:
            draws.setdefault(name, []).append(value)

        for k, rng in enumerate(rngs):
            p = None if dropout_ps is None else dropout_ps[k]

            def dropout(name: str, shape: tuple[int, ...]) -> None:
                if p is not None:
                    add(name, keep_multipliers(shape, p, dtype, device, rng))

            dropout("input_keep", (batch, num_steps, self.num_neurons))
            dropout("ic_final_keep", (batch, 2 * ic_enc))
            if sample:
                add("ic_noise", torch.randn((batch, self.ic_dim), generator=rng, device=device, dtype=dtype))
            dropout("gen_init_keep", (batch, gen_dim))
            if self.co_dim > 0:
                dropout("ci_keep", (batch, num_steps, 2 * self._stacked("ci_encoder.gru.weight_hh_l0").shape[2]))
                if sample:
                    add("co_noise", torch.randn(num_steps, batch, self.co_dim, generator=rng, device=device,
                                                dtype=dtype))
                dropout("state_keep", (num_steps + 1, batch, gen_dim))
            else:
                dropout("state_keep", (batch, num_steps, gen_dim))
        return ForwardNoise(**{name: torch.stack(values) for name, values in draws.items()})

    # -- forward ------------------------------------------------------------------------------------
    def stacked_forward(self, encoder_input: torch.Tensor, sample_posteriors: bool,
                        encoder_visible: torch.Tensor | None = None, noise: ForwardNoise | None = None,
                        ext_input: torch.Tensor | None = None, session: torch.Tensor | None = None,
                        ic_posterior_override: tuple[torch.Tensor, torch.Tensor] | None = None,
                        controller_inputs_override: torch.Tensor | None = None) -> LfadsOutput:
        """All workers' forward passes. encoder_input ``(W, B, T, N)`` zero-filled; encoder_visible
        likewise (for ``mask_as_input``); ``noise`` from ``draw_noise`` (None: no dropout, no sampling);
        ext_input ``(W, B, T, E)``; session ``(W, B)`` int (stitched models). The overrides ``(W, B,
        ...)`` replace what the encoders would read (see ``LFADS.forward``). Returns an ``LfadsOutput``
        whose tensors have the worker axis first (readout ``(W, B, T, N, P)``)."""
        workers, batch, num_steps, _ = encoder_input.shape
        noise = ForwardNoise() if noise is None else noise
        if sample_posteriors and noise.ic_noise is None:
            raise ValueError("sampling the posteriors needs the posterior noise of draw_noise")
        if (ext_input is None) != (self.ext_input_dim == 0):
            raise NeurodynError(f"the model takes {self.ext_input_dim} measured inputs per step; got "
                                f"{'none' if ext_input is None else tuple(ext_input.shape)}")
        self._isolated_workers = torch.zeros(workers, dtype=torch.bool, device=encoder_input.device)
        needs_encoders = ic_posterior_override is None or (self.co_dim > 0 and controller_inputs_override is None)
        x = self._encoder_features(encoder_input, encoder_visible, session, noise) if needs_encoders else None
        if ic_posterior_override is None:
            ic_mean, ic_std = self._ic_posterior(x, noise)
        else:
            ic_mean, ic_std = ic_posterior_override
        ic = ic_mean + ic_std * noise.ic_noise if sample_posteriors else ic_mean
        gen_init = worker_linear(ic, self._stacked("ic_to_generator.weight"), self._stacked("ic_to_generator.bias"))
        if noise.gen_init_keep is not None:
            gen_init = gen_init * noise.gen_init_keep
        if self.co_dim > 0:
            controller_inputs = (self._controller_inputs(x) if controller_inputs_override is None
                                 else controller_inputs_override)
            factors, co_mean, co_std, co_sample, states = self._controlled(
                gen_init, controller_inputs, sample_posteriors, noise, ext_input)
        else:
            factors, states = self._autonomous(gen_init, num_steps, noise, ext_input)
            co_mean = co_std = co_sample = None
        readout = worker_linear(factors, self._stacked("readout.weight"), self._stacked("readout.bias"))
        readout = readout.view(workers, batch, num_steps, self.num_neurons, -1)
        return LfadsOutput(readout, factors, ic_mean, ic_std, co_mean, co_std, co_sample, states)

    def stacked_encode(self, encoder_input: torch.Tensor, encoder_visible: torch.Tensor | None = None,
                       session: torch.Tensor | None = None, noise: ForwardNoise | None = None) -> EncoderReading:
        """Both encoders' reading of the trials without running the generator; arguments as in
        ``stacked_forward``, the reading's tensors with a leading ``W``."""
        noise = ForwardNoise() if noise is None else noise
        x = self._encoder_features(encoder_input, encoder_visible, session, noise)
        ic_mean, ic_std = self._ic_posterior(x, noise)
        return EncoderReading(ic_mean, ic_std, self._controller_inputs(x) if self.co_dim > 0 else None)

    def _encoder_features(self, encoder_input: torch.Tensor, encoder_visible: torch.Tensor | None,
                          session: torch.Tensor | None, noise: ForwardNoise) -> torch.Tensor:
        """What both encoders read, ``(W, B, T, features)``: the data with held-out neurons and forward bins
        hidden, dropout, the visibility mask when ``mask_as_input``, a stitched model's read-in."""
        mask = hide_from_encoders(self._stacked("encoder_input_mask"), encoder_input.shape[2],
                                  self.forward_bins).unsqueeze(1)
        x = encoder_input * mask
        if noise.input_keep is not None:
            x = x * noise.input_keep
        if self.mask_as_input:
            visible = torch.ones_like(encoder_input) if encoder_visible is None else encoder_visible
            x = torch.cat([x, visible * mask], dim=-1)
        if self.is_stitched:
            x = self._readin(x, session)
        return x

    def _ic_posterior(self, x: torch.Tensor, noise: ForwardNoise) -> tuple[torch.Tensor, torch.Tensor]:
        _, ic_final = self._bidirectional("ic_encoder", x, outputs=False)
        if noise.ic_final_keep is not None:
            ic_final = ic_final * noise.ic_final_keep
        ic_mean, ic_logvar = worker_linear(ic_final, self._stacked("ic_posterior.weight"),
                                           self._stacked("ic_posterior.bias")).chunk(2, dim=-1)
        return ic_mean, ic_std_from_log_var(ic_logvar, self.ic_post_var_min)

    def _controller_inputs(self, x: torch.Tensor) -> torch.Tensor:
        ci_outputs, _ = self._bidirectional("ci_encoder", x)
        return lag_controller_inputs(ci_outputs, self.ci_lag)

    def _readin(self, x: torch.Tensor, session: torch.Tensor | None) -> torch.Tensor:
        """The per-session read-in of a stitched model (``lfads.stitching``): x ``(W, B, T, D)``, session
        ``(W, B)`` -> ``(W, B, T, readin_dim)`` (one weight ``(W, R, D)``, a bias per worker and session ``(W, S, R)``)."""
        if session is None or tuple(session.shape) != tuple(x.shape[:2]):
            raise NeurodynError(f"a stitched model needs each trial's session index, shape {tuple(x.shape[1:2])} "
                                f"(trials,); got {None if session is None else tuple(session.shape[1:])}")
        bias = self._stacked("readin.bias")
        per_trial = bias[torch.arange(x.shape[0], device=bias.device).unsqueeze(1), session]  # (W, B, R)
        return worker_linear(x, self._stacked("readin.weight")) + per_trial.unsqueeze(2)

    def _bidirectional(self, prefix: str, x: torch.Tensor, outputs: bool = True
                       ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """A bidirectional encoder GRU (``nn.GRU``'s weights, a trainable initial state) for all workers:
        outputs ``(W, B, T, 2H)`` (None unless ``outputs``) and final states ``(W, B, 2H)`` (forward at
        T - 1, backward at 0).

        Both directions run in the same loop: they are stacked along the worker axis (``2W``), the
        backward direction fed the input reversed in time (the input is narrower than the gates, so it
        is the cheaper tensor to reverse)."""
        backend = recurrent_backend(x.device)
        if backend == "library":
            return self._bidirectional_library(prefix, x, outputs)
        workers, batch, num_steps, _ = x.shape
        g = f"{prefix}.gru."
        w_ih = torch.cat([self._stacked(g + "weight_ih_l0"), self._stacked(g + "weight_ih_l0_reverse")])
        b_ih = torch.cat([self._stacked(g + "bias_ih_l0"), self._stacked(g + "bias_ih_l0_reverse")])
        w_hh = torch.cat([self._stacked(g + "weight_hh_l0"), self._stacked(g + "weight_hh_l0_reverse")])
        b_hh = torch.cat([self._stacked(g + "bias_hh_l0"), self._stacked(g + "bias_hh_l0_reverse")])
        hidden = w_hh.shape[2]
        time_major = torch.cat([x, x.flip(2)]).transpose(1, 2)  # (2W, T, B, N)
        projection = worker_linear(time_major, w_ih, b_ih)  # (2W, T, B, 3H)
        initial = self._stacked(f"{prefix}.initial_state")  # (W, 2, 1, H)
        h = torch.cat([initial[:, 0], initial[:, 1]]).expand(2 * workers, batch, hidden)
        if backend == "compiled":
            states = run_gru_sequence(load_compiled_rnn(), projection, h, w_hh, b_hh)  # (2W, T, B, H)
            h = states[:, -1]
            states = states.transpose(1, 2)  # (2W, B, T, H)
        else:
            w_hh_t, b_hh = w_hh.transpose(1, 2), b_hh.unsqueeze(1)
            steps = []
            for gates_x in projection.unbind(1):
                h = gru_step(gates_x, h, w_hh_t, b_hh)
                steps.append(h)
            states = torch.stack(steps, dim=2) if outputs else None  # (2W, B, T, H)
        final = torch.cat([h[:workers], h[workers:]], dim=-1)
        if not outputs:
            return None, final
        return torch.cat([states[:workers], states[workers:].flip(2)], dim=-1), final

    def _bidirectional_library(self, prefix: str, x: torch.Tensor, outputs: bool
                               ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``_bidirectional`` through ``bidirectional_gru_block_diagonal``, workers in groups of at most
        ``MAX_BLOCK_DIAGONAL_UNITS`` units."""
        g = f"{prefix}.gru."
        names = [name + suffix for suffix in ("", "_reverse")
                 for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
        weights = {name: self._stacked(g + name) for name in names}
        initial = self._stacked(f"{prefix}.initial_state")
        group = max(1, MAX_BLOCK_DIAGONAL_UNITS // weights["weight_hh_l0"].shape[2])
        states, finals = [], []
        for start in range(0, x.shape[0], group):
            part = slice(start, start + group)
            group_states, group_final = bidirectional_gru_block_diagonal(
                x[part], {name: value[part] for name, value in weights.items()}, initial[part],
                self._isolated_workers[part])
            states.append(group_states)
            finals.append(group_final)
        return (torch.cat(states) if outputs else None), torch.cat(finals)

    def _clip(self, h: torch.Tensor) -> torch.Tensor:
        return torch.clamp(h, -self.cell_clip_value, self.cell_clip_value)

    def normalised_factor_weight(self) -> torch.Tensor:
        """The factors' weight ``(W, F, G)`` with unit-norm rows: factors are a bias-free linear map of the
        generator state whose scale cannot drift into the readout."""
        return F.normalize(self._stacked("decoder.factors.weight"), dim=2)

    def _generator_input_projection(self, ext_input: torch.Tensor | None, num_steps: int, batch: int) -> torch.Tensor:
        """The generator's input projection without inferred inputs, worker-major ``(W, T, B, 3G)``: its
        bias at every step, plus ``W_ext ext_t`` with measured inputs. The generator's input is ``[co_t,
        ext_t]`` (its ``weight_ih_l0`` columns in that order), and ``W_ih [co; ext] + b = W_co co + (W_ext
        ext + b)``: the measured part is known before the loop and enters it as a per-step bias."""
        bias = self._stacked("decoder.generator.bias_ih_l0")
        if ext_input is None:
            return bias[:, None, None, :].expand(-1, num_steps, batch, -1)
        w_ext = self._stacked("decoder.generator.weight_ih_l0")[:, :, self.co_dim:]
        return worker_linear(ext_input.transpose(1, 2), w_ext, bias)

    def _autonomous(self, gen_init: torch.Tensor, num_steps: int, noise: ForwardNoise,
                    ext_input: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The generator without a controller: factors ``(W, B, T, F)`` and states ``(W, B, T, G)`` (detached)."""
        w_hh = self._stacked("decoder.generator.weight_hh_l0")
        b_hh = self._stacked("decoder.generator.bias_hh_l0")
        backend = recurrent_backend(gen_init.device)
        projection = self._generator_input_projection(ext_input, num_steps, gen_init.shape[1])
        if backend == "compiled":
            states = run_gru_sequence(load_compiled_rnn(), projection, gen_init, w_hh, b_hh, clip=self.cell_clip_value)
            states = states.transpose(1, 2)  # (W, B, T, G)
        elif backend == "library" and gen_init.shape[0] == 1 and self.cell_clip_value >= 1.0 and num_steps > 1:
            states = self._autonomous_library(gen_init, projection, w_hh, b_hh, ext_input)
        else:
            w_hh_t, b_hh = w_hh.transpose(1, 2), b_hh.unsqueeze(1)
            h, steps = gen_init, []
            for gates_x in projection.unbind(1):
                h = self._clip(gru_step(gates_x, h, w_hh_t, b_hh, backend == "library"))
                steps.append(h)
            states = torch.stack(steps, dim=2)  # (W, B, T, G)
        kept = states if noise.state_keep is None else states * noise.state_keep
        return worker_linear(kept, self.normalised_factor_weight()), states.detach()

    def _autonomous_library(self, gen_init: torch.Tensor, projection: torch.Tensor, w_hh: torch.Tensor,
                            b_hh: torch.Tensor, ext_input: torch.Tensor | None) -> torch.Tensor:
        """One model's autonomous generator on a GPU, states ``(1, B, T, G)``. A GRU state is a convex mix
        of the previous state and a tanh in (-1, 1), so once inside +-clip (clip >= 1) it never leaves:
        clipping after step 1 is the identity, and the remaining steps run as one cuDNN sequence call
        with identical results. (A population keeps the step loop: its block-diagonal weights would
        grow with the square of the workers.)"""
        first = self._clip(gru_step(projection[:, 0], gen_init, w_hh.transpose(1, 2), b_hh.unsqueeze(1), True))
        batch, num_steps = gen_init.shape[1], projection.shape[1]
        inputs = (gen_init.new_zeros(num_steps - 1, batch, 1) if ext_input is None
                  else ext_input[0, :, 1:].transpose(0, 1))
        weights = [self._stacked(f"decoder.generator.{name}")[0]
                   for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
        # train=True: cuDNN's backward refuses a pass run in inference mode (dropout is 0 either way).
        rest, _ = torch._VF.gru(inputs.contiguous(), first.contiguous(), weights, True, 1, 0.0, True, False, False)
        return torch.cat([first, rest]).transpose(0, 1).unsqueeze(0)

    def _controlled(self, gen_init: torch.Tensor, controller_inputs: torch.Tensor, sample: bool,
                    noise: ForwardNoise, ext_input: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Controller and generator unrolled together: factors ``(W, B, T, F)``, the inferred inputs'
        posterior mean, std and sample ``(W, B, T, co_dim)``, generator states ``(W, B, T, G)`` (detached).
        The controller reads ``[ci_t, factors_{t-1}]``; its input weights are split so that the ci part
        is applied to all steps at once and only the factor part inside the loop."""
        workers, batch, num_steps, ci_dim = controller_inputs.shape
        if noise.ci_keep is not None:
            controller_inputs = controller_inputs * noise.ci_keep
        factor_weight = self.normalised_factor_weight()
        w_ci, w_factor_in = self._stacked("decoder.controller.weight_ih_l0").split([ci_dim, factor_weight.shape[1]], dim=2)
        b_ci = self._stacked("decoder.controller.bias_ih_l0")
        co_noise = noise.co_noise if sample else None
        gen_projection = self._generator_input_projection(ext_input, num_steps, batch)  # (W, T, B, 3G)
        con_init = self._stacked("decoder.controller_initial_state").expand(workers, batch, -1)
        w_gen_co = self._stacked("decoder.generator.weight_ih_l0")[:, :, :self.co_dim]
        weights = [self._stacked(f"decoder.{name}") for name in (
            "controller.weight_hh_l0", "controller.bias_hh_l0", "controller_output.weight", "controller_output.bias",
            "generator.weight_hh_l0", "generator.bias_hh_l0")]
        backend = recurrent_backend(gen_init.device)
        if backend == "compiled":
            # Projected in time order (W, T, B, 3C), the compiled kernel's layout: reordering the
            # narrower controller inputs costs less than reordering their projection. Zero noise gives
            # the posterior mean and ones keep everything, as the loop's "no sample" and "no dropout".
            ci_projection = worker_linear(controller_inputs.transpose(1, 2), w_ci, b_ci)
            w_con_hh, b_con_hh, w_co, b_co, w_gen_hh, b_gen_hh = weights
            gen_input_bias = self._stacked("decoder.generator.bias_ih_l0") if ext_input is None else gen_projection
            outputs = run_controlled_decoder(
                load_compiled_rnn(), ci_projection, gen_init, con_init,
                gen_init.new_zeros(workers, num_steps, batch, self.co_dim) if co_noise is None else co_noise,
                gen_init.new_ones(workers, num_steps + 1, *gen_init.shape[1:]) if noise.state_keep is None
                else noise.state_keep,
                (w_factor_in, w_con_hh, b_con_hh, w_co, b_co, w_gen_co, gen_input_bias, w_gen_hh, b_gen_hh,
                 factor_weight), self.cell_clip_value)
            return tuple(output.transpose(1, 2) for output in outputs)
        fused = backend == "library"
        # unbind (not [:, t]) so the backward pass stacks step gradients once instead of zero-filling a
        # full-size tensor at every step.
        ci_projection = worker_linear(controller_inputs, w_ci, b_ci).unbind(2)
        w_con_hh_t, b_con_hh, w_co_t, b_co, w_gen_hh_t, b_gen_hh = (
            weight.transpose(1, 2) if weight.dim() == 3 else weight.unsqueeze(1) for weight in weights)
        factor_weight_t, w_factor_in_t, w_gen_co_t = (w.transpose(1, 2) for w in (factor_weight, w_factor_in, w_gen_co))
        gen_bias = gen_projection.unbind(1)
        keep = None if noise.state_keep is None else noise.state_keep.unbind(1)  # T + 1 of (W, B, G)
        co_noise = None if co_noise is None else co_noise.unbind(1)
        gen_h, con_h = gen_init, con_init
        factor = torch.bmm(gen_h if keep is None else gen_h * keep[0], factor_weight_t)
        factors, means, stds, samples, gen_states = [], [], [], [], []
        for t in range(num_steps):
            gates_x = torch.baddbmm(ci_projection[t], factor, w_factor_in_t)
            con_h = self._clip(gru_step(gates_x, con_h, w_con_hh_t, b_con_hh, fused))
            co_mean, co_logvar = torch.baddbmm(b_co, con_h, w_co_t).chunk(2, dim=-1)
            co_std = torch.exp(0.5 * co_logvar)
            co = co_mean if co_noise is None else torch.addcmul(co_mean, co_std, co_noise[t])
            gen_h = self._clip(gru_step(torch.baddbmm(gen_bias[t], co, w_gen_co_t), gen_h, w_gen_hh_t, b_gen_hh, fused))
            factor = torch.bmm(gen_h if keep is None else gen_h * keep[t + 1], factor_weight_t)
            factors.append(factor)
            means.append(co_mean)
            stds.append(co_std)
            samples.append(co)
            gen_states.append(gen_h)
        return (torch.stack(factors, 2), torch.stack(means, 2), torch.stack(stds, 2), torch.stack(samples, 2),
                torch.stack(gen_states, 2).detach())

    # -- objective terms ------------------------------------------------------------------------------
    def kl_ic(self, output: LfadsOutput) -> torch.Tensor:
        """KL of the IC posterior to its prior, per trial (``(W, B)`` for a stacked output, ``(B,)`` for
        one model's): ``ic_kl`` of the output's posterior."""
        return self.ic_kl(output.ic_mean, output.ic_std)

    def ic_kl(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """KL of diagonal IC posteriors ``(W, B, ic_dim)`` (or one model's ``(B, ic_dim)``) to the prior:
        N(0, ic_prior_var), or each worker's learned N(mean, var) with ``ic_prior: learnable``."""
        if not self.learnable_ic_prior:
            return kl_diagonal_gaussians(mean, std, 0.0, self.ic_prior_var)
        prior_mean, log_var = self._stacked("ic_prior.mean"), self._stacked("ic_prior.log_var")  # (W, D)
        if mean.dim() == 3:
            prior_mean, log_var = prior_mean.unsqueeze(1), log_var.unsqueeze(1)  # against (W, B, D)
        else:
            prior_mean, log_var = prior_mean[0], log_var[0]  # one model's
        return kl_diagonal_gaussians(mean, std, prior_mean, torch.exp(log_var))

    def kl_co(self, output: LfadsOutput) -> torch.Tensor:
        """One-sample KL of the inferred inputs to each worker's AR(1) prior (Gaussian or Student-t
        innovations), per trial ``(W, B)`` (``(B,)`` for one model's output); zeros without a controller."""
        if output.ic_mean.dim() == 2:
            return self.kl_co(output.stacked())[0]
        if self.co_dim == 0:
            return output.ic_mean.new_zeros(output.ic_mean.shape[:2])
        # (W, D) -> (W, 1, D): against a step's samples (W, B, D).
        log_tau, log_nvar = (self._stacked(f"co_prior.{name}").unsqueeze(1) for name in ("log_tau", "log_nvar"))
        return ar1_kl_one_sample(output.co_mean, output.co_std, output.co_sample, log_tau, log_nvar, self.co_prior_df)

    def recurrent_l2(self, l2_gen_scale: torch.Tensor | float, l2_con_scale: torch.Tensor | float) -> torch.Tensor:
        """The recurrent L2 penalty per worker ``(W,)`` for per-worker scales ``(W,)`` (or numbers, the same
        for every worker): ``scale / 2`` times the summed squares of the generator's (and controller's)
        recurrent kernel, divided by the number of their entries; a kernel whose scale is 0 is left out of
        both the sum and the count."""
        gen = self._stacked("decoder.generator.weight_hh_l0")
        l2_gen_scale, l2_con_scale = (torch.as_tensor(scale, dtype=gen.dtype, device=gen.device).expand(gen.shape[0])
                                      for scale in (l2_gen_scale, l2_con_scale))
        terms = [(gen, l2_gen_scale)]
        if self.co_dim > 0:
            terms.append((self._stacked("decoder.controller.weight_hh_l0"), l2_con_scale))
        total = gen.new_zeros(gen.shape[0])
        count = gen.new_zeros(gen.shape[0])
        for weight, scale in terms:
            used = scale > 0
            value = (scale * 0.5) * weight.pow(2).flatten(1).sum(1)
            total = total + torch.where(used, value, torch.zeros_like(value))
            count = count + used.to(count.dtype) * weight[0].numel()
        return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
