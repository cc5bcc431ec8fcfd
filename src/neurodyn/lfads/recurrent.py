"""The recurrent building blocks of LFADS on a leading worker axis ``W`` (one model: ``W = 1``).

Per-worker linear maps (batched matrix products), the GRU gate arithmetic (PyTorch's gate order and
formulation, so ``nn.GRU``'s weights mean the same here), dropout multipliers drawn from an explicit
generator, and the GPU backend's bidirectional GRU that runs a group of workers as one cuDNN call.
Which implementation runs a recurrent loop is ``recurrent_backend``'s choice.
"""

from __future__ import annotations

import math
import warnings

import torch

from neurodyn.lfads.compiled_rnn import load_compiled_rnn

# The library backend runs a group of workers' encoders as one GRU whose weights are block-diagonal
# (worker k's units only see worker k's inputs and units). Its matrix products do (group size) times
# the needed arithmetic, so groups are capped at this many units: at the reference size (64 units per
# direction) up to 32 workers share one call, a few milliseconds of an H100's time per training step.
MAX_BLOCK_DIAGONAL_UNITS = 2048


def recurrent_backend(device: torch.device) -> str:
    """Which implementation runs the recurrent loops on ``device``: ``"compiled"`` (CPU with the
    compiled kernels of ``compiled_rnn`` built), ``"library"`` (a CUDA GPU: cuDNN for the encoders, the
    fused GRU gate kernel for the decoder, far fewer kernel launches than the loops) or ``"loop"`` (the
    plain PyTorch loops). All three compute the same numbers (tests compare them in float64)."""
    if device.type == "cuda":
        return "library"
    if device.type == "cpu" and load_compiled_rnn() is not None:
        return "compiled"
    return "loop"


def keep_multipliers(shape: tuple[int, ...], dropout_p: float, dtype: torch.dtype, device: torch.device,
                     rng: torch.Generator | None) -> torch.Tensor:
    """Inverted-dropout multipliers: ``0`` or ``1 / (1 - dropout_p)`` per entry of ``shape``, drawn from ``rng``
    (None: torch's global generator); ones when ``dropout_p`` is 0 (no draw)."""
    if dropout_p == 0.0:
        return torch.ones(shape, dtype=dtype, device=device)
    keep = torch.empty(shape, dtype=dtype, device=device).bernoulli_(1.0 - dropout_p, generator=rng)
    return keep.div_(1.0 - dropout_p)


def worker_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Per-worker ``F.linear``: x ``(W, ..., in)``, weight ``(W, out, in)``, bias ``(W, out)`` -> ``(W, ..., out)``."""
    workers, inner = x.shape[0], x.shape[1:-1]
    flat = x.reshape(workers, -1, x.shape[-1])
    if bias is None:
        out = torch.bmm(flat, weight.transpose(1, 2))
    else:
        out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return out.view(workers, *inner, weight.shape[1])


def gru_gates(gates_x: torch.Tensor, gates_h: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The GRU's gate arithmetic (PyTorch gate order r, z, n) on any leading shape: gates_x ``W_ih x +
    b_ih`` and gates_h ``W_hh h + b_hh`` ``(..., 3H)``, h ``(..., H)``. ``n = tanh(x_n + r * h_n)``,
    ``h' = n + z (h - n)``."""
    hidden = h.shape[-1]
    x_rz, x_n = gates_x.split([2 * hidden, hidden], dim=-1)
    h_rz, h_n = gates_h.split([2 * hidden, hidden], dim=-1)
    reset, update = torch.sigmoid(x_rz + h_rz).chunk(2, dim=-1)
    candidate = torch.tanh(torch.addcmul(x_n, reset, h_n))
    return torch.lerp(candidate, h, update)


def fusedgru_gates(gates_x: torch.Tensor, gates_h: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``gru_gates`` in one kernel on a CUDA GPU (the one ``nn.GRUCell`` uses there; its backward is
    one kernel too), on CPU the same arithmetic in PyTorch operations (no CPU kernel exists). Shapes
    as ``gru_gates``; the fused kernel takes 2-D rows, so the leading axes are flattened."""
    if not gates_x.is_cuda:
        return gru_gates(gates_x, gates_h, h)
    hidden = h.shape[-1]
    new_h, _ = torch.ops.aten._thnn_fused_gru_cell(gates_x.reshape(-1, 3 * hidden), gates_h.reshape(-1, 3 * hidden),
                                                   h.reshape(-1, hidden))
    return new_h.view(h.shape)


def gru_step(gates_x: torch.Tensor, h: torch.Tensor, w_hh_t: torch.Tensor, b_hh: torch.Tensor,
              fused: bool = False) -> torch.Tensor:
    """One GRU step for all workers, input projection already done: gates_x ``(W, B, 3H)`` = ``W_ih x +
    b_ih``; h ``(W, B, H)``; w_hh_t ``(W, H, 3H)`` (transposed); b_hh ``(W, 1, 3H)``. ``fused``: the gate
    arithmetic in ``fusedgru_gates``."""
    gates_h = torch.baddbmm(b_hh, h, w_hh_t)
    return (fusedgru_gates if fused else gru_gates)(gates_x, gates_h, h)


def _block_diagonal_gates(weight: torch.Tensor) -> torch.Tensor:
    """Per-worker GRU weights ``(W, 3H, D)`` as one GRU's weight ``(3 W H, W D)`` whose gate g, worker k,
    unit j (row ``g W H + k H + j``) reads only worker k's inputs (columns ``k D .. k D + D - 1``)."""
    workers, gate_rows, inputs = weight.shape
    if workers == 1:
        return weight[0]
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
    # A single worker has no neighbour to spread a non-finite number to: no guard needed.
    guarded = workers > 1
    if guarded:
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
    if guarded and isolated is not None and output.requires_grad:
        # cuDNN's backward hands the hook of an unused output None (no gradient: nothing to hold back).
        output.register_hook(lambda grad: None if grad is None else _isolate_workers(
            grad.view(num_steps, batch, 2, workers, hidden), 3, isolated).view(grad.shape))
        final.register_hook(lambda grad: None if grad is None else _isolate_workers(
            grad.view(2, batch, workers, hidden), 2, isolated).view(grad.shape))
    states = output.view(num_steps, batch, 2, workers, hidden).permute(3, 1, 0, 2, 4).reshape(
        workers, batch, num_steps, 2 * hidden)
    final = final.view(2, batch, workers, hidden).permute(2, 1, 0, 3).reshape(workers, batch, 2 * hidden)
    if not guarded:
        return states, final
    nan = torch.full((), math.nan, dtype=states.dtype, device=states.device)
    return torch.where(finite.view(-1, 1, 1, 1), states, nan), torch.where(finite.view(-1, 1, 1), final, nan)
