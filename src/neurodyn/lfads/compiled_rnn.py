"""LFADS's recurrent loops as compiled CPU kernels (``compiled_rnn.cpp``), with autograd.

Two kernels: the controller/generator loop of the decoder, and a plain GRU over a sequence (the
bidirectional encoders, the autonomous generator); each also takes W models of one architecture
stacked along a worker axis (the PBT population engine). The C++ source is built once per machine by
``torch.utils.cpp_extension`` (about 30 s; cached in torch's extension folder) the first time a
CPU model runs. The kernels compute exactly what the PyTorch code they replace computes, forward
and backward, in a fraction of the operations; the modules use them on CPU whenever they are
available and fall back to PyTorch otherwise (GPU tensors, no C++ compiler, or
``NEURODYN_COMPILED_KERNELS=0``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import sys
import threading
from pathlib import Path
from types import ModuleType

import torch
from torch.autograd.function import once_differentiable

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_suffix(".cpp")
_build_lock = threading.Lock()


def compiled_kernels_enabled() -> bool:
    """False when the user switched the kernels off with ``NEURODYN_COMPILED_KERNELS=0``."""
    return os.environ.get("NEURODYN_COMPILED_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


def cpu_tag() -> str:
    """A short name for this CPU's instruction sets. The kernel is built with ``-march=native``; the
    build folder is often a shared home directory on a cluster, so each CPU type gets its own build
    instead of loading one compiled for another node's instructions."""
    flags = platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags += next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags += platform.processor()
    return hashlib.sha1(flags.encode()).hexdigest()[:10]


@functools.cache
def _build() -> ModuleType | None:
    from torch.utils import cpp_extension

    try:
        ninja_dir = None
        try:  # the PyPI `ninja` package puts its binary beside the module, not necessarily on PATH
            import ninja

            ninja_dir = ninja.BIN_DIR
        except ImportError:
            pass
        if ninja_dir and shutil.which("ninja") is None:
            os.environ["PATH"] = f"{ninja_dir}{os.pathsep}{os.environ.get('PATH', '')}"
        # The source's hash is part of the name: torch only notices an edited source within one
        # process, so two neurodyn versions sharing the build folder (two checkouts, an upgrade while
        # another process runs) would otherwise load each other's kernel.
        source_bytes = SOURCE.read_bytes()
        name = f"neurodyn_compiled_rnn_{cpu_tag()}_{hashlib.sha1(source_bytes).hexdigest()[:10]}"
        build_root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root())
        source = stable_source_copy(source_bytes, build_root / "neurodyn_sources" / f"{name}.cpp")
        # torch builds in <root>/<name>, or in a per-Python/CUDA subfolder such as <root>/py311_cpu/<name>.
        built = [*build_root.glob(f"{name}/{name}*.so"), *build_root.glob(f"*/{name}/{name}*.so")]
        if not built or not _built_from(built[0].parent, source):
            # A build takes tens of seconds with nothing else to show: say what is happening.
            print("neurodyn: building the compiled recurrent kernels (once per machine; about 30 s)",
                  file=sys.stderr, flush=True)
        return cpp_extension.load(
            name=name,
            sources=[str(source)],
            # fast-math lets gcc vectorise exp/tanh over the gate values; it is not passed to the
            # linker, so it does not switch the whole process to flush-denormals-to-zero.
            extra_cflags=["-O3", "-march=native", "-ffast-math", "-fopenmp-simd"],
            verbose=False,
        )
    except Exception as error:  # no compiler, no ninja, a failed build: the Python loop still works
        logger.warning("neurodyn: compiled RNN kernels unavailable (%s); using the slower PyTorch loops", error)
        return None


def stable_source_copy(source_bytes: bytes, path: Path) -> Path:
    """The kernel's source at ``path``, a place named by its content, written once (atomically).

    The build records the source's absolute path and rebuilds whenever it changes, so two checkouts
    of one neurodyn version (or two users of a shared cluster home) building from their own copies
    would rebuild each other's kernel, silently and for tens of seconds, at every switch. Built from
    this one copy, a kernel is built once per source and CPU type."""
    if not path.exists() or path.read_bytes() != source_bytes:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
        partial.write_bytes(source_bytes)
        os.replace(partial, path)
    return path


def _built_from(build_dir: Path, source: Path) -> bool:
    """Whether the build in ``build_dir`` was made from ``source`` (else loading it rebuilds)."""
    try:
        return str(source) in (build_dir / "build.ninja").read_text()
    except OSError:
        return False


def load_compiled_rnn() -> ModuleType | None:
    """The built extension, or None if it is switched off or cannot be built (thread-safe, built once)."""
    if not compiled_kernels_enabled():
        return None
    with _build_lock:
        return _build()


def _after_first_step(sequence: torch.Tensor, w_con_hh: torch.Tensor) -> torch.Tensor:
    """Steps 1..T of a decoder sequence of T + 1 steps: ``(T + 1, B, X)`` for one model, worker-major
    ``(W, T + 1, B, X)`` stacked (told apart by the rank of the recurrent weight ``w_con_hh``)."""
    time_axis = 1 if w_con_hh.dim() == 3 else 0
    return sequence.narrow(time_axis, 1, sequence.shape[time_axis] - 1)


class _ControlledDecoderFunction(torch.autograd.Function):
    """Autograd wrapper: forward and backward both run in the compiled kernel.

    The generator states it also returns are for reading only (marked non-differentiable)."""

    @staticmethod
    def forward(ctx, ci_projection, gen_init, con_init, noise, keep, w_factor_in, w_con_hh, b_con_hh, w_co, b_co,
                w_gen_ih, gen_input_bias, w_gen_hh, b_gen_hh, w_factor, clip, kernel):
        (factors_all, co_mean, co_std, co, con_states, gen_states, kept, con_gates, con_gh_n, con_unclipped,
         gen_gates, gen_gh_n, gen_unclipped) = kernel.decoder_forward(
            ci_projection, gen_init, con_init, noise, keep, w_factor_in, w_con_hh, b_con_hh, w_co, b_co,
            w_gen_ih, gen_input_bias, w_gen_hh, b_gen_hh, w_factor, clip)
        ctx.kernel, ctx.clip, ctx.per_step_bias = kernel, clip, gen_input_bias.dim() == ci_projection.dim()
        # Everything through save_for_backward (tensors kept on ctx would form a reference cycle with
        # the outputs and leak); intermediates included, which makes this function differentiable once.
        ctx.save_for_backward(noise, keep, w_factor_in, w_con_hh, w_co, w_gen_ih, w_gen_hh, w_factor,
                              factors_all, co_std, co, con_states, gen_states, kept, con_gates, con_gh_n,
                              con_unclipped, gen_gates, gen_gh_n, gen_unclipped)
        states = _after_first_step(gen_states, w_con_hh)
        ctx.mark_non_differentiable(states)
        return _after_first_step(factors_all, w_con_hh), co_mean, co_std, co, states

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_factors, grad_co_mean, grad_co_std, grad_co, _grad_gen_states):
        saved = ctx.saved_tensors
        noise, keep, w_factor_in, w_con_hh, w_co, w_gen_ih, w_gen_hh, w_factor = saved[:8]
        intermediates = saved[8:]
        factors_all, co_std = intermediates[0], intermediates[1]

        def dense(grad, like):
            return torch.zeros_like(like) if grad is None else grad.contiguous()

        # Inputs 5-14 are the weights and biases: with none needing a gradient (the weights held fixed)
        # the kernel skips their products.
        weight_grads = any(ctx.needs_input_grad[5:15])
        grads = ctx.kernel.decoder_backward(
            dense(grad_factors, _after_first_step(factors_all, w_con_hh)), dense(grad_co_mean, co_std),
            dense(grad_co_std, co_std), dense(grad_co, co_std), noise, keep, w_factor_in, w_con_hh, w_co, w_gen_ih,
            w_gen_hh, w_factor, *intermediates, ctx.clip, ctx.per_step_bias, weight_grads)
        d_ci_projection, d_gen_init, d_con_init, *d_weights = grads
        return (d_ci_projection, d_gen_init, d_con_init, None, None, *d_weights, None, None)


def run_controlled_decoder(kernel: ModuleType, ci_projection: torch.Tensor, gen_init: torch.Tensor,
                           con_init: torch.Tensor, noise: torch.Tensor, keep: torch.Tensor,
                           weights: tuple[torch.Tensor, ...], clip: float) -> tuple[torch.Tensor, ...]:
    """Run the compiled loop. Time-major inputs: ``ci_projection (T, B, 3C)`` (controller input
    projection of the CI outputs, with its bias), ``gen_init (B, G)``, ``con_init (B, C)``, ``noise
    (T, B, K)`` (zeros for the posterior mean), ``keep (T + 1, B, G)`` dropout multipliers (ones
    without dropout); ``weights`` = (w_factor_in, w_con_hh, b_con_hh, w_co, b_co, w_gen_ih,
    gen_input_bias, w_gen_hh, b_gen_hh, w_factor), where ``w_gen_ih (3G, K)`` acts on the inferred
    inputs and ``gen_input_bias`` is the generator's input bias ``(3G,)`` or a per-step bias ``(T, B,
    3G)`` (measured inputs' projection plus the bias). Returns time-major factors ``(T, B, F)``,
    co_mean, co_std, co ``(T, B, K)`` and the generator states ``(T, B, G)`` (no gradient).

    Stacked workers (the population engine): every weight and bias with a leading ``W`` (``w_con_hh
    (W, 3C, C)``, ``b_con_hh (W, 3C)``, ``gen_input_bias (W, 3G)`` or per step ``(W, T, B, 3G)``),
    initial states ``(W, B, ...)`` and worker-major sequences ``(W, T, B, ...)``, inputs and outputs."""
    contiguous = [t.contiguous() for t in (ci_projection, gen_init, con_init, noise, keep, *weights)]
    return _ControlledDecoderFunction.apply(*contiguous, float(clip), kernel)


# Passed as the clip of an unclipped GRU: finite, because the kernel is built with fast-math.
NO_CLIP = 3.0e38


class _GruSequenceFunction(torch.autograd.Function):
    """Autograd wrapper of the compiled GRU over a sequence."""

    @staticmethod
    def forward(ctx, x_projection, h0, w_hh, b_hh, clip, reverse, kernel):
        states, gates, gh_n, unclipped = kernel.gru_sequence_forward(x_projection, h0, w_hh, b_hh, clip, reverse)
        ctx.kernel, ctx.clip, ctx.reverse = kernel, clip, reverse
        ctx.save_for_backward(h0, w_hh, states, gates, gh_n, unclipped)
        return states

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_states):
        h0, w_hh, states, gates, gh_n, unclipped = ctx.saved_tensors
        weight_grads = ctx.needs_input_grad[2] or ctx.needs_input_grad[3]
        d_x_projection, d_h0, d_w_hh, d_b_hh = ctx.kernel.gru_sequence_backward(
            grad_states.contiguous(), h0, w_hh, states, gates, gh_n, unclipped, ctx.clip, ctx.reverse, weight_grads)
        return d_x_projection, d_h0, d_w_hh, d_b_hh, None, None, None


def run_gru_sequence(kernel: ModuleType, x_projection: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor,
                     b_hh: torch.Tensor, clip: float = NO_CLIP, reverse: bool = False) -> torch.Tensor:
    """GRU states ``(T, B, H)`` (time order) from the input projection ``x_projection (T, B, 3H)``
    (``W_ih x_t + b_ih``) and the initial state ``h0 (B, H)``; ``reverse`` runs from the last step
    to the first, as the backward half of a bidirectional GRU. Stacked workers, worker-major: ``x_projection
    (W, T, B, 3H)``, ``h0 (W, B, H)``, ``w_hh (W, 3H, H)``, ``b_hh (W, 3H)`` give states ``(W, T, B, H)``
    (the layout a per-worker batched product gives the projection in, so it is passed on without a copy)."""
    tensors = [t.contiguous() for t in (x_projection, h0, w_hh, b_hh)]
    return _GruSequenceFunction.apply(*tensors, float(clip), bool(reverse), kernel)
