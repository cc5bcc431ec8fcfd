"""W LFADS models of one architecture as a single module with a leading worker dimension.

PBT trains many workers that share an architecture and differ only in hyperparameters. Held as
one module, every parameter of ``LFADS`` gets a leading worker axis ``W`` (``(W, *shape)``) and
every activation one too: a batch is ``(W, B, T, N)`` (each worker its own trials and masks). The
recurrent loops (bidirectional encoders, controller, generator) advance all workers in one
batched matrix product per time step; nothing loops over workers in the compute. Which code runs
the loops is ``recurrent_backend``'s choice: on CPU the compiled kernels of ``compiled_rnn`` in their
stacked form (worker k's numbers are those of the single-model kernel); on a GPU PyTorch's own
kernels (``library``: each bidirectional encoder one cuDNN call, the decoder's GRU steps in the
fused gate kernel); otherwise (no compiler) the plain PyTorch loops below.

The mathematics is ``LFADS``'s, step for step (see ``lfads.model``, ``lfads.decoder``,
``lfads.encoders``, ``lfads.priors``, ``observation``, ``lfads.stitching``): the same per-session
read-in of a stitched model (each worker's own), the same GRU gate formulation, state clip,
normalised factors, controller input ``[ci_t, factors_{t-1}]``, AR(1) prior, IC KL, recurrent L2
and observation models. The random numbers a single model draws inside its forward pass (dropout
masks, posterior noise) are drawn beforehand per worker by ``draw_forward_noise``, from each
worker's own generator and in the single model's order, so that worker k sees exactly the numbers
a single model with the same generator would.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from neurodyn.errors import NeurodynError
from neurodyn.lfads.compiled_rnn import load_compiled_rnn, run_controlled_decoder, run_gru_sequence
from neurodyn.lfads.encoders import lag_controller_inputs
from neurodyn.lfads.model import LFADS, LfadsOutput, hide_from_encoders, ic_std_from_log_var
from neurodyn.lfads.priors import gaussian_log_density, kl_diagonal_to_isotropic
from neurodyn.observation.gamma import gamma_nll
from neurodyn.observation.poisson import poisson_nll
from neurodyn.observation.zig import PARAM_FLOOR, Q_CLIP, SCALE_SOFTNESS, zig_nll

# Observation models the population can batch (their parameters are stacked like the rest).
BATCHED_OBSERVATIONS = ("poisson", "zig", "gamma")
# The library backend runs a group of workers' encoders as one GRU whose weights are block-diagonal
# (worker k's units only see worker k's inputs and units). Its matrix products do (group size) times
# the needed arithmetic, so groups are capped at this many units: at the reference size (64 units per
# direction) up to 32 workers share one call, a few milliseconds of an H100's time per training step.
MAX_BLOCK_DIAGONAL_UNITS = 2048


def recurrent_backend(device: torch.device) -> str:
    """Which implementation runs the population's recurrent loops on ``device``: ``"compiled"`` (CPU
    with the compiled kernels built), ``"library"`` (a CUDA GPU: cuDNN for the encoders, the fused GRU
    gate kernel for the decoder, far fewer kernel launches than the loops) or ``"loop"`` (the plain
    PyTorch loops). All three compute the same numbers (tests compare them in float64)."""
    if device.type == "cuda":
        return "library"
    if device.type == "cpu" and load_compiled_rnn() is not None:
        return "compiled"
    return "loop"


@dataclass
class ForwardNoise:
    """The random numbers of one training forward pass, stacked over workers.

    Dropout multipliers (``0`` or ``1 / keep``; ones for a worker without dropout) and standard
    normal posterior noise, each ``(W, ...)`` with the single model's shape after the worker axis:
    encoder input ``(W, B, T, N)``, IC encoder final state ``(W, B, 2 ic_enc)``, IC noise ``(W, B,
    ic_dim)``, generator initial state ``(W, B, G)``; with a controller: controller inputs ``(W, B,
    T, 2 ci_enc)``, inferred-input noise ``(W, T, B, co_dim)`` and the generator states' multipliers
    ``state_keep`` ``(W, T + 1, B, G)`` (the decoder's per-step masks); autonomous: ``state_keep`` ``(W,
    B, T, G)``. None where the pass draws nothing (no sampling: no noise).
    """

    input_keep: torch.Tensor
    ic_final_keep: torch.Tensor
    ic_noise: torch.Tensor | None
    gen_init_keep: torch.Tensor
    ci_keep: torch.Tensor | None = None
    co_noise: torch.Tensor | None = None
    state_keep: torch.Tensor | None = None


def _keep_multipliers(shape: tuple[int, ...], dropout_p: float, dtype: torch.dtype, device: torch.device,
                      rng: torch.Generator) -> torch.Tensor:
    """``lfads.dropout.Dropout.keep_multipliers`` drawn the same way (ones when ``dropout_p`` is 0)."""
    if dropout_p == 0.0:
        return torch.ones(shape, dtype=dtype, device=device)
    keep = torch.empty(shape, dtype=dtype, device=device).bernoulli_(1.0 - dropout_p, generator=rng)
    return keep.div_(1.0 - dropout_p)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Per-worker ``F.linear``: x ``(W, ..., in)``, weight ``(W, out, in)``, bias ``(W, out)`` -> ``(W, ..., out)``."""
    workers, inner = x.shape[0], x.shape[1:-1]
    flat = x.reshape(workers, -1, x.shape[-1])
    if bias is None:
        out = torch.bmm(flat, weight.transpose(1, 2))
    else:
        out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return out.view(workers, *inner, weight.shape[1])


def _gru_gates(gates_x: torch.Tensor, gates_h: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The GRU's gate arithmetic (PyTorch gate order r, z, n) on any leading shape: gates_x ``W_ih x +
    b_ih`` and gates_h ``W_hh h + b_hh`` ``(..., 3H)``, h ``(..., H)``. ``n = tanh(x_n + r * h_n)``,
    ``h' = n + z (h - n)``."""
    hidden = h.shape[-1]
    x_rz, x_n = gates_x.split([2 * hidden, hidden], dim=-1)
    h_rz, h_n = gates_h.split([2 * hidden, hidden], dim=-1)
    reset, update = torch.sigmoid(x_rz + h_rz).chunk(2, dim=-1)
    candidate = torch.tanh(torch.addcmul(x_n, reset, h_n))
    return torch.lerp(candidate, h, update)


def _fused_gru_gates(gates_x: torch.Tensor, gates_h: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``_gru_gates`` in one kernel on a CUDA GPU (the one ``nn.GRUCell`` uses there; its backward is
    one kernel too), on CPU the same arithmetic in PyTorch operations (no CPU kernel exists). Shapes
    as ``_gru_gates``; the fused kernel takes 2-D rows, so the leading axes are flattened."""
    if not gates_x.is_cuda:
        return _gru_gates(gates_x, gates_h, h)
    hidden = h.shape[-1]
    new_h, _ = torch.ops.aten._thnn_fused_gru_cell(gates_x.reshape(-1, 3 * hidden), gates_h.reshape(-1, 3 * hidden),
                                                   h.reshape(-1, hidden))
    return new_h.view(h.shape)


def _gru_step(gates_x: torch.Tensor, h: torch.Tensor, w_hh_t: torch.Tensor, b_hh: torch.Tensor,
              fused: bool = False) -> torch.Tensor:
    """One GRU step for all workers, input projection already done: gates_x ``(W, B, 3H)`` = ``W_ih x +
    b_ih``; h ``(W, B, H)``; w_hh_t ``(W, H, 3H)`` (transposed); b_hh ``(W, 1, 3H)``. ``fused``: the gate
    arithmetic in ``_fused_gru_gates``."""
    gates_h = torch.baddbmm(b_hh, h, w_hh_t)
    return (_fused_gru_gates if fused else _gru_gates)(gates_x, gates_h, h)


def _block_diagonal_gates(weight: torch.Tensor) -> torch.Tensor:
    """Per-worker GRU weights ``(W, 3H, D)`` as one GRU's weight ``(3 W H, W D)`` whose gate g, worker k,
    unit j (row ``g W H + k H + j``) reads only worker k's inputs (columns ``k D .. k D + D - 1``)."""
    workers, gate_rows, inputs = weight.shape
    per_gate = weight.view(workers, 3, gate_rows // 3, inputs)
    identity = torch.eye(workers, dtype=weight.dtype, device=weight.device)
    return torch.einsum("kgjd,kl->gkjld", per_gate, identity).reshape(gate_rows * workers, workers * inputs)


def _gate_major(bias: torch.Tensor) -> torch.Tensor:
    """Per-worker biases ``(W, 3H)`` in the order of ``_block_diagonal_gates``'s rows ``(3 W H,)``."""
    workers, gate_rows = bias.shape
    return bias.view(workers, 3, gate_rows // 3).transpose(0, 1).reshape(-1)


def _isolate_workers(gradient: torch.Tensor, worker_axis: int, isolated: torch.Tensor) -> torch.Tensor:
    """A gradient hook's work: zero the gradient of every worker (along ``worker_axis``) that holds a
    non-finite entry, and mark those workers in ``isolated`` ``(W,)`` bool (in place)."""
    per_worker = torch.isfinite(gradient).movedim(worker_axis, 0).flatten(1).all(1)
    isolated |= ~per_worker
    shape = [1] * gradient.dim()
    shape[worker_axis] = -1
    return torch.where(per_worker.view(shape), gradient, torch.zeros((), dtype=gradient.dtype, device=gradient.device))


def bidirectional_gru_block_diagonal(x: torch.Tensor, weights: dict[str, torch.Tensor], initial: torch.Tensor,
                                     isolated: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """W workers' bidirectional GRUs as one library GRU call (cuDNN on a GPU) with block-diagonal weights.

    x ``(W, B, T, D)``; ``weights`` the stacked ``nn.GRU`` parameters (``weight_ih_l0`` ``(W, 3H, D)``,
    ``weight_hh_l0`` ``(W, 3H, H)``, ``bias_ih_l0``/``bias_hh_l0`` ``(W, 3H)`` and the ``_reverse`` ones);
    initial ``(W, 2, 1, H)`` (forward, backward). Returns the states ``(W, B, T, 2H)`` (forward then
    backward direction, both aligned with the input's time) and the final states ``(W, B, 2H)``.

    The workers meet in one matrix product, where one worker's non-finite number would spread to every
    other through the zero blocks (0 x inf is NaN). So a worker whose inputs, initial state or weights
    hold a non-finite number runs on zeros and gets NaN states (its loss is then NaN, as alone), and a
    worker whose gradient reaching the call is not finite gets zeros there; either way it is marked in
    ``isolated`` ``(W,)`` bool, for the trainer to skip its step as it would skip it anyway.
    """
    workers, batch, num_steps, inputs = x.shape
    hidden = weights["weight_hh_l0"].shape[2]
    finite = torch.stack([torch.isfinite(t).flatten(1).all(1) for t in (x, initial, *weights.values())]).all(0)
    if isolated is not None:
        isolated |= ~finite

    def finite_only(tensor: torch.Tensor) -> torch.Tensor:
        return torch.where(finite.view(-1, *([1] * (tensor.dim() - 1))), tensor, torch.zeros_like(tensor))

    x, initial = finite_only(x), finite_only(initial)
    weights = {name: finite_only(value) for name, value in weights.items()}
    params = []
    for suffix in ("", "_reverse"):
        params += [_block_diagonal_gates(weights["weight_ih_l0" + suffix]),
                   _block_diagonal_gates(weights["weight_hh_l0" + suffix]),
                   _gate_major(weights["bias_ih_l0" + suffix]), _gate_major(weights["bias_hh_l0" + suffix])]
    time_major = x.permute(2, 1, 0, 3).reshape(num_steps, batch, workers * inputs)
    h0 = initial[:, :, 0].transpose(0, 1).reshape(2, 1, workers * hidden).expand(2, batch, -1).contiguous()
    with warnings.catch_warnings():
        # cuDNN copies weights that are not one contiguous buffer (ours are built at every call anyway).
        warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
        # train=True: cuDNN's backward refuses a pass run in inference mode (dropout is 0 either way).
        output, final = torch._VF.gru(time_major, h0, params, True, 1, 0.0, True, True, False)
    if isolated is not None and output.requires_grad:
        # cuDNN's backward hands the hook of an unused output None (no gradient: nothing to hold back).
        output.register_hook(lambda grad: None if grad is None else _isolate_workers(
            grad.view(num_steps, batch, 2, workers, hidden), 3, isolated).view(grad.shape))
        final.register_hook(lambda grad: None if grad is None else _isolate_workers(
            grad.view(2, batch, workers, hidden), 2, isolated).view(grad.shape))
    states = output.view(num_steps, batch, 2, workers, hidden).permute(3, 1, 0, 2, 4).reshape(
        workers, batch, num_steps, 2 * hidden)
    final = final.view(2, batch, workers, hidden).permute(2, 1, 0, 3).reshape(workers, batch, 2 * hidden)
    nan = torch.full((), math.nan, dtype=states.dtype, device=states.device)
    return torch.where(finite.view(-1, 1, 1, 1), states, nan), torch.where(finite.view(-1, 1, 1), final, nan)


class PopulationLFADS(nn.Module):
    """``len(models)`` LFADS models of one architecture, stacked along a leading worker axis.

    Build with ``from_models``; read one worker back with ``worker_state_dict(k)`` (a state
    ``LFADS.load_state_dict`` accepts) and write one with ``load_worker_state(k, state)``.
    Per-worker settings that are not weights (dropout rate, the observation scales' prior and
    penalty weight) are set with ``set_worker_settings``.
    """

    def __init__(self, template: LFADS, num_workers: int):
        super().__init__()
        if template.observation.name not in BATCHED_OBSERVATIONS:
            raise NeurodynError(f"the population engine cannot batch observation model "
                                f"'{template.observation.name}'; expected one of {list(BATCHED_OBSERVATIONS)}")
        self.num_workers = num_workers
        self.num_neurons = template.num_neurons
        self.ic_dim, self.co_dim, self.ext_input_dim = template.ic_dim, template.co_dim, template.ext_input_dim
        self.ci_lag = template.ci_lag
        self.ic_prior_var, self.ic_post_var_min = template.ic_prior_var, template.ic_post_var_min
        self.mask_as_input = template.mask_as_input
        self.is_stitched = template.is_stitched
        self.forward_bins = template.forward_bins
        self.cell_clip_value = template.decoder.cell_clip_value
        self.observation_name = template.observation.name
        self.params_per_neuron = template.observation.params_per_neuron
        self.s_min = getattr(template.observation, "s_min", None)
        self.zero_tolerance = getattr(template.observation, "zero_tolerance", None)
        self.state_keys = list(template.state_dict().keys())
        self.parameter_names = [name for name, _ in template.named_parameters()]
        self.weights = nn.ParameterDict({
            _key(name): nn.Parameter(value.detach().unsqueeze(0).repeat(num_workers, *([1] * value.dim())))
            for name, value in template.named_parameters()})
        for name, value in template.named_buffers():
            self.register_buffer(_key(name), value.detach().unsqueeze(0).repeat(num_workers, *([1] * value.dim())))
        self.dropout_p = [float(template.dropout.p)] * num_workers
        self._isolated_workers = torch.zeros(num_workers, dtype=torch.bool)
        scales = getattr(template.observation, "gamma_scales", None)
        self.scale_prior = [scales.prior if scales else 0.0] * num_workers
        self.scale_weight = [scales.weight if scales else 0.0] * num_workers

    # -- building and reading workers --------------------------------------------------------------
    @classmethod
    def from_models(cls, models: list[LFADS]) -> "PopulationLFADS":
        """Stack ``models`` (same architecture, same observation settings) into one population."""
        if not models:
            raise NeurodynError("a population needs at least one model")
        population = cls(models[0], len(models)).to(next(models[0].parameters()).device)
        reference = models[0].state_dict()
        for k, model in enumerate(models):
            state = model.state_dict()
            shapes = {key: tuple(value.shape) for key, value in state.items()}
            expected = {key: tuple(value.shape) for key, value in reference.items()}
            if shapes != expected or model.observation.name != population.observation_name \
                    or getattr(model.observation, "s_min", None) != population.s_min:
                raise NeurodynError(f"model {k} of the population has another architecture or observation setting "
                                    "than model 0; every worker of a population must share them")
            population.load_worker_state(k, state)
            population.set_worker_settings(k, model)
        return population

    def set_worker_settings(self, k: int, model_or_settings) -> None:
        """Take worker ``k``'s dropout rate and observation-scale prior/weight from an ``LFADS`` model."""
        self.dropout_p[k] = float(model_or_settings.dropout.p)
        scales = getattr(model_or_settings.observation, "gamma_scales", None)
        if scales is not None:
            self.scale_prior[k], self.scale_weight[k] = scales.prior, scales.weight

    def _stacked(self, name: str) -> torch.Tensor:
        key = _key(name)
        return self.weights[key] if key in self.weights else getattr(self, key)

    @torch.no_grad()
    def worker_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Worker ``k`` as an ``LFADS`` state dict (copies, not views)."""
        return {name: self._stacked(name)[k].detach().clone() for name in self.state_keys}

    @torch.no_grad()
    def load_worker_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Write an ``LFADS`` state dict into worker ``k``'s slice."""
        missing = sorted(set(self.state_keys) - set(state))
        if missing:
            raise NeurodynError(f"the state for worker {k} lacks {missing[:3]}; expected an LFADS state dict "
                                "of the population's architecture")
        for name in self.state_keys:
            target = self._stacked(name)
            if tuple(state[name].shape) != tuple(target.shape[1:]):
                raise NeurodynError(f"the state for worker {k} has '{name}' of shape {tuple(state[name].shape)}; "
                                    f"expected {tuple(target.shape[1:])}")
            target[k].copy_(state[name])

    @torch.no_grad()
    def copy_worker(self, copier: int, source: int) -> None:
        """Worker ``copier`` takes worker ``source``'s weights and settings."""
        for name in self.state_keys:
            target = self._stacked(name)
            target[copier].copy_(target[source])
        self.dropout_p[copier] = self.dropout_p[source]
        self.scale_prior[copier], self.scale_weight[copier] = self.scale_prior[source], self.scale_weight[source]

    def stacked_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(LFADS parameter name, stacked parameter)`` in ``LFADS.parameters()`` order."""
        return [(name, self.weights[_key(name)]) for name in self.parameter_names]

    # -- random numbers ---------------------------------------------------------------------------
    def draw_forward_noise(self, rngs: list[torch.Generator], batch: int, num_steps: int, sample: bool,
                           like: torch.Tensor) -> ForwardNoise:
        """Each worker's random numbers for one training pass, drawn from ``rngs[k]`` in the order
        ``LFADS.forward`` draws them (encoder-input dropout, IC-state dropout, IC noise, initial-state
        dropout, then the decoder's). ``like`` gives dtype and device."""
        dtype, device = like.dtype, like.device
        gen_dim = self._stacked("ic_to_generator.weight").shape[1]
        ic_enc = self._stacked("ic_encoder.gru.weight_hh_l0").shape[2]
        draws: dict[str, list[torch.Tensor]] = {}

        def add(name: str, value: torch.Tensor) -> None:
            draws.setdefault(name, []).append(value)

        for k, rng in enumerate(rngs):
            p = self.dropout_p[k]
            add("input_keep", _keep_multipliers((batch, num_steps, self.num_neurons), p, dtype, device, rng))
            add("ic_final_keep", _keep_multipliers((batch, 2 * ic_enc), p, dtype, device, rng))
            if sample:
                add("ic_noise", torch.randn((batch, self.ic_dim), generator=rng, device=device, dtype=dtype))
            add("gen_init_keep", _keep_multipliers((batch, gen_dim), p, dtype, device, rng))
            if self.co_dim > 0:
                ci_dim = 2 * self._stacked("ci_encoder.gru.weight_hh_l0").shape[2]
                add("ci_keep", _keep_multipliers((batch, num_steps, ci_dim), p, dtype, device, rng))
                if sample:
                    add("co_noise", torch.randn(num_steps, batch, self.co_dim, generator=rng, device=device,
                                                dtype=dtype))
                add("gen_keep", _keep_multipliers((num_steps + 1, batch, gen_dim), p, dtype, device, rng))
            else:
                add("state_keep", _keep_multipliers((batch, num_steps, gen_dim), p, dtype, device, rng))
        stacked = {name: torch.stack(values) for name, values in draws.items()}
        return ForwardNoise(stacked["input_keep"], stacked["ic_final_keep"], stacked.get("ic_noise"),
                            stacked["gen_init_keep"], stacked.get("ci_keep"), stacked.get("co_noise"),
                            stacked.get("gen_keep", stacked.get("state_keep")))

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, encoder_input: torch.Tensor, sample_posteriors: bool, encoder_visible: torch.Tensor | None = None,
                noise: ForwardNoise | None = None, ext_input: torch.Tensor | None = None,
                session: torch.Tensor | None = None) -> LfadsOutput:
        """All workers' forward passes. encoder_input ``(W, B, T, N)`` zero-filled; encoder_visible
        likewise (for ``mask_as_input``); ``noise`` from ``draw_forward_noise`` for a training pass (None:
        no dropout; then ``sample_posteriors`` must be False); ext_input ``(W, B, T, E)``; session ``(W, B)``
        int, each trial's session (a stitched population only). Returns an ``LfadsOutput`` whose tensors
        have the worker axis first (readout ``(W, B, T, N, P)``)."""
        workers, batch, num_steps, _ = encoder_input.shape
        if workers != self.num_workers:
            raise NeurodynError(f"encoder_input has {workers} workers; the population has {self.num_workers}")
        if sample_posteriors and noise is None:
            raise ValueError("sampling the posteriors needs the noise of draw_forward_noise")
        if (ext_input is None) != (self.ext_input_dim == 0):
            raise NeurodynError(f"the population takes {self.ext_input_dim} measured inputs per step; got "
                                f"{'none' if ext_input is None else tuple(ext_input.shape)}")
        self._isolated_workers = torch.zeros(workers, dtype=torch.bool, device=encoder_input.device)
        mask = self.encoder_mask(num_steps).unsqueeze(1)
        x = encoder_input * mask
        if noise is not None:
            x = x * noise.input_keep
        if self.mask_as_input:
            visible = torch.ones_like(encoder_input) if encoder_visible is None else encoder_visible
            x = torch.cat([x, visible * mask], dim=-1)
        if self.is_stitched:
            x = self._readin(x, session)
        _, ic_final = self._bidirectional("ic_encoder", x, outputs=False)
        if noise is not None:
            ic_final = ic_final * noise.ic_final_keep
        ic_mean, ic_logvar = _linear(ic_final, self._stacked("ic_posterior.weight"),
                                     self._stacked("ic_posterior.bias")).chunk(2, dim=-1)
        ic_std = ic_std_from_log_var(ic_logvar, self.ic_post_var_min)
        ic = ic_mean + ic_std * noise.ic_noise if sample_posteriors else ic_mean
        gen_init = _linear(ic, self._stacked("ic_to_generator.weight"), self._stacked("ic_to_generator.bias"))
        if noise is not None:
            gen_init = gen_init * noise.gen_init_keep
        if self.co_dim > 0:
            ci_outputs, _ = self._bidirectional("ci_encoder", x)
            controller_inputs = lag_controller_inputs(ci_outputs.flatten(0, 1), self.ci_lag).view(ci_outputs.shape)
            factors, co_mean, co_std, co_sample, states = self._controlled(
                gen_init, controller_inputs, sample_posteriors, noise, ext_input)
        else:
            factors, states = self._autonomous(gen_init, num_steps, noise, ext_input)
            co_mean = co_std = co_sample = None
        readout = _linear(factors, self._stacked("readout.weight"), self._stacked("readout.bias"))
        readout = readout.view(workers, batch, num_steps, self.num_neurons, -1)
        return LfadsOutput(readout, factors, ic_mean, ic_std, co_mean, co_std, co_sample, states)

    def block_diagonal_bytes_per_worker(self) -> int:
        """Bytes per worker that the GPU backend's block-diagonal encoder weights take beyond what one
        worker alone shows: a group of g workers builds ``3 g H x g (D + H)`` numbers per direction,
        held about three times (the matrix, cuDNN's packed copy, its gradient), so ``g`` times one
        worker's share; g is the largest group (``MAX_BLOCK_DIAGONAL_UNITS // H``)."""
        total = 0
        for prefix in ("ic_encoder", "ci_encoder") if self.co_dim > 0 else ("ic_encoder",):
            _, gate_rows, inputs = self._stacked(f"{prefix}.gru.weight_ih_l0").shape
            hidden = gate_rows // 3
            group = max(1, MAX_BLOCK_DIAGONAL_UNITS // hidden)
            total += 2 * 3 * gate_rows * (inputs + hidden) * (group - 1)
        return total * self._stacked("readout.weight").element_size()

    def isolated_workers(self) -> torch.Tensor:
        """``(W,)`` bool: the workers whose non-finite numbers were held back from the others in the last
        forward pass run in Python and its backward pass (see ``bidirectional_gru_block_diagonal``; only
        the library backend joins workers in one product). Their gradients are not to be used. A step
        replayed from a CUDA graph updates the tensor of the pass it recorded: read it inside the step."""
        return self._isolated_workers

    def _readin(self, x: torch.Tensor, session: torch.Tensor | None) -> torch.Tensor:
        """``SessionReadin`` for all workers: x ``(W, B, T, D)``, session ``(W, B)`` -> ``(W, B, T, readin_dim)``
        (one weight ``(W, R, D)``, a bias per worker and session ``(W, S, R)``)."""
        if session is None or tuple(session.shape) != tuple(x.shape[:2]):
            raise NeurodynError(f"a stitched population needs each trial's session index, shape {tuple(x.shape[:2])} "
                                f"(workers, trials); got {None if session is None else tuple(session.shape)}")
        bias = self._stacked("readin.bias")
        per_trial = bias[torch.arange(x.shape[0], device=bias.device).unsqueeze(1), session]  # (W, B, R)
        return _linear(x, self._stacked("readin.weight")) + per_trial.unsqueeze(2)

    def encoder_mask(self, num_steps: int) -> torch.Tensor:
        """``(W, num_steps, N)``: each worker's ``LFADS.encoder_mask``."""
        return hide_from_encoders(self.encoder_input_mask, num_steps, self.forward_bins)

    def _bidirectional(self, prefix: str, x: torch.Tensor, outputs: bool = True
                       ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``BidirectionalEncoder`` for all workers: outputs ``(W, B, T, 2H)`` (None unless ``outputs``) and
        final states ``(W, B, 2H)``.

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
        projection = _linear(time_major, w_ih, b_ih)  # (2W, T, B, 3H)
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
                h = _gru_step(gates_x, h, w_hh_t, b_hh)
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

    def _normalised_factor_weight(self) -> torch.Tensor:
        return F.normalize(self._stacked("decoder.factors.weight"), dim=2)

    def _generator_input_bias(self, ext_input: torch.Tensor | None) -> list[torch.Tensor] | torch.Tensor:
        """``b_ih`` ``(W, 1, 3G)``, or with measured inputs the per-step ``W_ext ext_t + b_ih``, a list of
        ``T`` tensors ``(W, B, 3G)`` (see ``Decoder._generator_input_bias``)."""
        if ext_input is None:
            return self._stacked("decoder.generator.bias_ih_l0").unsqueeze(1)
        return self._generator_input_projection(ext_input, ext_input.shape[2], ext_input.shape[1]).unbind(1)

    def _generator_input_projection(self, ext_input: torch.Tensor | None, num_steps: int, batch: int) -> torch.Tensor:
        """The generator's input projection without inferred inputs, worker-major ``(W, T, B, 3G)``: its
        bias at every step, plus ``W_ext ext_t`` with measured inputs (the compiled kernels' layout)."""
        bias = self._stacked("decoder.generator.bias_ih_l0")
        if ext_input is None:
            return bias[:, None, None, :].expand(-1, num_steps, batch, -1)
        w_ext = self._stacked("decoder.generator.weight_ih_l0")[:, :, self.co_dim:]
        return _linear(ext_input.transpose(1, 2), w_ext, bias)

    def _autonomous(self, gen_init: torch.Tensor, num_steps: int, noise: ForwardNoise | None,
                    ext_input: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        w_hh = self._stacked("decoder.generator.weight_hh_l0")
        b_hh = self._stacked("decoder.generator.bias_hh_l0")
        backend = recurrent_backend(gen_init.device)
        if backend == "compiled":
            projection = self._generator_input_projection(ext_input, num_steps, gen_init.shape[1])
            states = run_gru_sequence(load_compiled_rnn(), projection, gen_init, w_hh, b_hh, clip=self.cell_clip_value)
            states = states.transpose(1, 2)  # (W, B, T, G)
        else:
            bias = self._generator_input_bias(ext_input)
            w_hh_t, b_hh = w_hh.transpose(1, 2), b_hh.unsqueeze(1)
            h, steps = gen_init, []
            for t in range(num_steps):
                gates_x = bias if ext_input is None else bias[t]
                h = self._clip(_gru_step(gates_x.expand(*h.shape[:2], -1), h, w_hh_t, b_hh, backend == "library"))
                steps.append(h)
            states = torch.stack(steps, dim=2)  # (W, B, T, G)
        kept = states if noise is None else states * noise.state_keep
        return _linear(kept, self._normalised_factor_weight()), states.detach()

    def _controlled(self, gen_init: torch.Tensor, controller_inputs: torch.Tensor, sample: bool,
                    noise: ForwardNoise | None, ext_input: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        workers, batch, num_steps, ci_dim = controller_inputs.shape
        if noise is not None:
            controller_inputs = controller_inputs * noise.ci_keep
        factor_weight = self._normalised_factor_weight()
        factor_weight_t = factor_weight.transpose(1, 2)
        w_con_ih = self._stacked("decoder.controller.weight_ih_l0")
        w_ci, w_factor_in = w_con_ih.split([ci_dim, factor_weight.shape[1]], dim=2)
        b_ci = self._stacked("decoder.controller.bias_ih_l0")
        backend = recurrent_backend(gen_init.device)
        if backend == "compiled":
            # Projected in time order (W, T, B, 3C), the compiled kernel's layout: reordering the
            # narrower controller inputs costs less than reordering their projection.
            ci_projection = _linear(controller_inputs.transpose(1, 2), w_ci, b_ci)
            return self._controlled_compiled(load_compiled_rnn(), gen_init, ci_projection, w_factor_in, factor_weight,
                                             sample, noise, ext_input)
        ci_projection = _linear(controller_inputs, w_ci, b_ci)
        fused = backend == "library"
        w_factor_in_t = w_factor_in.transpose(1, 2)
        w_con_hh_t = self._stacked("decoder.controller.weight_hh_l0").transpose(1, 2)
        b_con_hh = self._stacked("decoder.controller.bias_hh_l0").unsqueeze(1)
        w_co_t = self._stacked("decoder.controller_output.weight").transpose(1, 2)
        b_co = self._stacked("decoder.controller_output.bias").unsqueeze(1)
        w_gen_co_t = self._stacked("decoder.generator.weight_ih_l0")[:, :, :self.co_dim].transpose(1, 2)
        w_gen_hh_t = self._stacked("decoder.generator.weight_hh_l0").transpose(1, 2)
        b_gen_hh = self._stacked("decoder.generator.bias_hh_l0").unsqueeze(1)
        gen_bias = self._generator_input_bias(ext_input)
        keep = None if noise is None else noise.state_keep.unbind(1)  # T + 1 of (W, B, G)
        co_noise = None if noise is None or noise.co_noise is None or not sample else noise.co_noise.unbind(1)
        ci_projection = ci_projection.unbind(2)
        gen_h = gen_init
        con_h = self._stacked("decoder.controller_initial_state").expand(workers, batch, -1)
        factor = torch.bmm(gen_h if keep is None else gen_h * keep[0], factor_weight_t)
        factors, means, stds, samples, gen_states = [], [], [], [], []
        for t in range(num_steps):
            gates_x = torch.baddbmm(ci_projection[t], factor, w_factor_in_t)
            con_h = self._clip(_gru_step(gates_x, con_h, w_con_hh_t, b_con_hh, fused))
            co_mean, co_logvar = torch.baddbmm(b_co, con_h, w_co_t).chunk(2, dim=-1)
            co_std = torch.exp(0.5 * co_logvar)
            co = co_mean if co_noise is None else torch.addcmul(co_mean, co_std, co_noise[t])
            step_bias = gen_bias if ext_input is None else gen_bias[t]
            gen_h = self._clip(_gru_step(torch.baddbmm(step_bias, co, w_gen_co_t), gen_h, w_gen_hh_t, b_gen_hh, fused))
            factor = torch.bmm(gen_h if keep is None else gen_h * keep[t + 1], factor_weight_t)
            factors.append(factor)
            means.append(co_mean)
            stds.append(co_std)
            samples.append(co)
            gen_states.append(gen_h)
        return (torch.stack(factors, 2), torch.stack(means, 2), torch.stack(stds, 2), torch.stack(samples, 2),
                torch.stack(gen_states, 2).detach())

    def _controlled_compiled(self, kernel, gen_init: torch.Tensor, ci_projection: torch.Tensor,
                             w_factor_in: torch.Tensor, factor_weight: torch.Tensor, sample: bool,
                             noise: ForwardNoise | None, ext_input: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """``_controlled`` through the compiled kernel's stacked form: ``ci_projection`` ``(W, T, B, 3C)``
        and the weights ``_controlled`` prepared (the controller's factor part ``(W, 3C, F)``, the
        normalised factor weight ``(W, F, G)``); inputs go in the kernel's worker-major layout ``(W, T, B,
        ...)`` and outputs come back as ``(W, B, T, ...)``."""
        workers, num_steps, batch, _ = ci_projection.shape
        con_init = self._stacked("decoder.controller_initial_state").expand(workers, batch, -1)
        co_noise = None if noise is None or noise.co_noise is None or not sample else noise.co_noise
        if co_noise is None:  # zero noise: the posterior mean, as in the loop above
            co_noise = gen_init.new_zeros(workers, num_steps, batch, self.co_dim)
        keep = (gen_init.new_ones(workers, num_steps + 1, *gen_init.shape[1:]) if noise is None
                else noise.state_keep)
        if ext_input is None:
            gen_input_bias = self._stacked("decoder.generator.bias_ih_l0")
        else:
            gen_input_bias = self._generator_input_projection(ext_input, num_steps, batch)
        outputs = run_controlled_decoder(
            kernel, ci_projection, gen_init, con_init, co_noise, keep,
            (w_factor_in, self._stacked("decoder.controller.weight_hh_l0"), self._stacked("decoder.controller.bias_hh_l0"),
             self._stacked("decoder.controller_output.weight"), self._stacked("decoder.controller_output.bias"),
             self._stacked("decoder.generator.weight_ih_l0")[:, :, :self.co_dim], gen_input_bias,
             self._stacked("decoder.generator.weight_hh_l0"), self._stacked("decoder.generator.bias_hh_l0"),
             factor_weight), self.cell_clip_value)
        return tuple(output.transpose(1, 2) for output in outputs)

    # -- objective terms ------------------------------------------------------------------------------
    def kl_ic(self, output: LfadsOutput) -> torch.Tensor:
        """KL of each worker's IC posterior to its prior, per trial ``(W, B)``."""
        return kl_diagonal_to_isotropic(output.ic_mean, output.ic_std, self.ic_prior_var)

    def kl_co(self, output: LfadsOutput) -> torch.Tensor:
        """One-sample KL of the inferred inputs to each worker's AR(1) prior, per trial ``(W, B)``."""
        if self.co_dim == 0:
            return output.ic_mean.new_zeros(output.ic_mean.shape[:2])
        z = output.co_sample
        log_q = gaussian_log_density(z, output.co_mean, output.co_std ** 2).sum((-1, -2))
        alpha = torch.exp(-1.0 / torch.exp(self._stacked("co_prior.log_tau"))).unsqueeze(1)  # (W, 1, D)
        noise_var = torch.exp(self._stacked("co_prior.log_nvar")).unsqueeze(1)
        process_var = noise_var / (1.0 - alpha ** 2)
        first = gaussian_log_density(z[:, :, 0], torch.zeros_like(z[:, :, 0]), process_var.expand_as(z[:, :, 0]))
        rest = gaussian_log_density(z[:, :, 1:], alpha.unsqueeze(2) * z[:, :, :-1],
                                    noise_var.unsqueeze(2).expand_as(z[:, :, 1:]))
        return log_q - (first.sum(-1) + rest.sum((-1, -2)))

    def recurrent_l2(self, l2_gen_scale: torch.Tensor, l2_con_scale: torch.Tensor) -> torch.Tensor:
        """``LFADS.recurrent_l2`` per worker ``(W,)`` for per-worker scales ``(W,)``: a kernel whose scale
        is 0 is left out of both the sum and the count it is divided by."""
        gen = self._stacked("decoder.generator.weight_hh_l0")
        terms = [(gen, l2_gen_scale)]
        if self.co_dim > 0:
            terms.append((self._stacked("decoder.controller.weight_hh_l0"), l2_con_scale))
        total = gen.new_zeros(self.num_workers)
        count = gen.new_zeros(self.num_workers)
        for weight, scale in terms:
            used = scale > 0
            value = (scale * 0.5) * weight.pow(2).flatten(1).sum(1)
            total = total + torch.where(used, value, torch.zeros_like(value))
            count = count + used.to(count.dtype) * weight[0].numel()
        return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))

    def _scaled(self, raw: torch.Tensor) -> torch.Tensor:
        """``SigmoidScales`` per worker: raw ``(W, B, T, N, 2)`` -> ``max(sigmoid(raw) * s_k, PARAM_FLOOR)``."""
        scales = F.softplus(self._stacked("observation.gamma_scales.scales"), beta=1.0 / SCALE_SOFTNESS)
        workers, num_scaled, neurons = scales.shape
        scales = scales.transpose(1, 2).reshape(workers, *([1] * (raw.dim() - 3)), neurons, num_scaled)
        return (torch.sigmoid(raw) * scales).clamp_min(PARAM_FLOOR)

    def elementwise_nll(self, readout: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Each worker's observation NLL per entry: readout ``(W, B, T, N, P)``, target ``(W, B, T, N)``."""
        if self.observation_name == "poisson":
            return poisson_nll(readout[..., 0], target)
        if self.observation_name == "gamma":
            scaled = self._scaled(readout[..., 0:2])
            safe_target = torch.where(target > 0, target, torch.ones_like(target))
            return gamma_nll(scaled[..., 0], scaled[..., 1], safe_target)
        q = torch.sigmoid(readout[..., 0]).clamp(Q_CLIP, 1.0 - Q_CLIP)
        scaled = self._scaled(readout[..., 1:3])
        return zig_nll(q, scaled[..., 0], scaled[..., 1], target, self.s_min, self.zero_tolerance)

    def observation_penalty(self, prior: torch.Tensor | None = None, weight: torch.Tensor | None = None
                            ) -> torch.Tensor:
        """The observation model's penalty per worker ``(W,)`` (zeros for Poisson). ``prior`` and
        ``weight`` ``(W,)``: the scales' prior and penalty weight, by default each worker's settings
        (a caller replaying a recorded step hands them in as tensors)."""
        if self.observation_name == "poisson":
            return self._stacked("readout.bias").new_zeros(self.num_workers)
        scales = self._stacked("observation.gamma_scales.scales")
        prior = scales.new_tensor(self.scale_prior) if prior is None else prior
        weight = scales.new_tensor(self.scale_weight) if weight is None else weight
        return (0.5 * weight) * (scales - prior.view(-1, 1, 1)).pow(2).flatten(1).sum(1)


def _key(name: str) -> str:
    """A parameter name usable as a module attribute (``ic_encoder.gru.weight_ih_l0`` -> ``ic_encoder__gru__...``)."""
    return name.replace(".", "__")
