"""A training step replayed from a CUDA graph: the GPU's kernel launches without the CPU's cost.

A population's training step on a GPU is thousands of small kernels (recurrent loops of 50-100 time
steps, forward and backward), each launched by Python and PyTorch at a few microseconds of CPU time;
the GPU's own work is a small part of that. ``CapturedStep`` records one step as a CUDA graph once its
inputs' shapes are settled and from then on copies each step's inputs into the graph's static
tensors and replays it: one launch for the whole step.

The step must be a function of its input tensors alone (a dict name -> tensor, e.g. the stacked
batch, the random numbers drawn outside, per-worker hyperparameters as tensors) that writes its
results to tensors it returns and changes other state only in place (weights, optimiser moments):
no synchronisation with the CPU, no random numbers drawn inside, no shapes or Python values that
change between steps. Each input shape (an epoch's full batches, its smaller last one) gets a graph.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

StepInputs = dict[str, torch.Tensor]
StepOutputs = dict[str, torch.Tensor]


def cuda_graphs_enabled() -> bool:
    """False when the user switched graph capture off with ``NEURODYN_CUDA_GRAPHS=0``."""
    return os.environ.get("NEURODYN_CUDA_GRAPHS", "1").strip().lower() not in ("0", "false", "no", "off")


def _signature(inputs: StepInputs) -> tuple:
    return tuple((name, tuple(value.shape), value.dtype, value.device) for name, value in sorted(inputs.items()))


def capture_cuda_graph(step: Callable[[StepInputs], StepOutputs], static_inputs: StepInputs,
                       stream: Any) -> tuple[Callable[[], None], StepOutputs]:
    """Record ``step(static_inputs)`` as a CUDA graph on ``stream`` (the stream its warm-up steps ran on);
    returns the graph's replay and the step's (static) outputs. Nothing runs during the recording."""
    graph = torch.cuda.CUDAGraph()
    torch.cuda.synchronize()
    previous = torch.cuda.current_stream()
    try:
        with torch.cuda.graph(graph, stream=stream):
            static_outputs = step(static_inputs)
    finally:
        # A step that fails while recording makes the recording's end fail too, before the context
        # manager gives the previous stream back: later (eager) steps must not run on the capture stream.
        torch.cuda.set_stream(previous)
    return graph.replay, static_outputs


def _root_cause(error: BaseException) -> BaseException:
    """The first error of a chain (a failed recording's end raises while the step's own error is
    being handled: the step's is the one to report)."""
    while error.__context__ is not None and error.__context__ is not error:
        error = error.__context__
    return error


@dataclass
class _Graph:
    replay: Callable[[], None]
    static_inputs: StepInputs
    static_outputs: StepOutputs


class CapturedStep:
    """Runs ``step`` eagerly for its first ``warmup_steps`` calls with an input signature (shapes, dtypes,
    device), then captures it for that signature and replays the graph for every later call with it.

    Each signature gets its own graph (an epoch's full batches and its smaller last one), up to
    ``max_graphs`` (each holds the memory of one step); further signatures run eagerly. ``capture``
    records the step (``capture_cuda_graph``; a test hands in a stand-in). A capture that fails (an
    operation the GPU cannot record) warns once and leaves every later call eager. ``reset`` drops the
    graphs, e.g. after tensors the step reads were replaced rather than written in place. The outputs
    of a replay are the graph's own tensors, overwritten by the next replay: read them before.
    """

    def __init__(self, step: Callable[[StepInputs], StepOutputs], enabled: bool, warmup_steps: int = 2,
                 max_graphs: int = 2,
                 capture: Callable[..., tuple[Callable[[], None], StepOutputs]] = capture_cuda_graph,
                 device: torch.device | str | None = None):
        self.step = step
        self.enabled = enabled
        self.warmup_steps = warmup_steps
        self.max_graphs = max_graphs
        self.capture = capture
        self.replays = 0
        self.failure: str | None = None
        # The GPU the step runs on: its warm-up stream, recording and replays belong to that device (a
        # stream of another GPU would record nothing while the step ran there eagerly).
        self.device = torch.device(device) if device is not None else None
        on_gpu = enabled and torch.cuda.is_available() and (self.device is None or self.device.type == "cuda")
        self._stream = torch.cuda.Stream(device=self.device) if on_gpu else None
        self.reset()

    def reset(self) -> None:
        self._graphs: dict[tuple, _Graph] = {}
        self._eager_calls: dict[tuple, int] = {}

    @property
    def captures(self) -> int:
        """How many graphs are held."""
        return len(self._graphs)

    def __call__(self, inputs: StepInputs) -> StepOutputs:
        if not self.enabled or self.failure is not None:
            return self.step(inputs)
        if self._stream is None:
            return self._call(inputs)
        with torch.cuda.device(self._stream.device):
            return self._call(inputs)

    def _call(self, inputs: StepInputs) -> StepOutputs:
        signature = _signature(inputs)
        graph = self._graphs.get(signature)
        if graph is None:
            if len(self._graphs) >= self.max_graphs:
                return self.step(inputs)
            seen = self._eager_calls.get(signature, 0)
            if seen < self.warmup_steps:
                self._eager_calls[signature] = seen + 1
                return self._on_side_stream(inputs)
            static_inputs = {name: value.clone() for name, value in inputs.items()}
            try:
                replay, static_outputs = self.capture(self.step, static_inputs, self._stream)
            except Exception as error:  # noqa: BLE001 - any failure to record means: run eagerly
                cause = _root_cause(error)
                self.failure = f"{type(cause).__name__}: {cause}".splitlines()[0]
                warnings.warn(f"a training step could not be recorded as a CUDA graph ({self.failure}); "
                              "training goes on without graphs (slower on a GPU, same results)", stacklevel=2)
                self.reset()
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                return self.step(inputs)
            graph = self._graphs[signature] = _Graph(replay, static_inputs, static_outputs)
        else:
            for name, value in inputs.items():
                graph.static_inputs[name].copy_(value)
        graph.replay()
        self.replays += 1
        return graph.static_outputs

    def _on_side_stream(self, inputs: StepInputs) -> StepOutputs:
        """An eager step on the stream the capture will use: the warm-up PyTorch asks for before a
        capture (lazily created library handles and workspaces belong to that stream)."""
        if self._stream is None:
            return self.step(inputs)
        self._stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._stream):
            outputs = self.step(inputs)
        torch.cuda.current_stream().wait_stream(self._stream)
        return outputs
