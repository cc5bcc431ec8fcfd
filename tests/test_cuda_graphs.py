"""CapturedStep's bookkeeping (warm-up, capture once, replay, other shapes eager, a failed capture) with a
stand-in recorder on the CPU; the real CUDA graph is tested on a GPU in test_population_trainer."""

import pytest
import torch

from neurodyn.train.cuda_graphs import CapturedStep, cuda_graphs_enabled
from pbt_helpers import replay_by_running


class Recorder:
    """Counts what CapturedStep asks for; a 'graph' replays by running the step on the static inputs."""

    def __init__(self, fail: bool = False):
        self.fail, self.captures, self.eager_calls = fail, 0, 0

    def step(self, inputs):
        self.eager_calls += 1
        return {"double": inputs["x"] * 2}

    def capture(self, step, static_inputs, stream):
        if self.fail:  # as torch reports it: the step's error, then the recording's end failing over it
            try:
                raise RuntimeError("operation not permitted when stream is capturing\nmore detail")
            except RuntimeError:
                raise RuntimeError("CUDA error: operation failed due to a previous error during capture")
        self.captures += 1
        return replay_by_running(step, static_inputs, stream)


def test_warm_up_then_one_capture_per_shape_then_replays():
    recorder = Recorder()
    captured = CapturedStep(recorder.step, enabled=True, warmup_steps=2, max_graphs=2, capture=recorder.capture)
    for value in range(5):
        assert torch.equal(captured({"x": torch.full((3,), float(value))})["double"], torch.full((3,), 2.0 * value))
    assert (recorder.captures, captured.replays) == (1, 3)  # steps 3-5 replayed (3 captured, then replayed)
    for value in range(3):  # a smaller last batch: its own warm-up and graph
        assert torch.equal(captured({"x": torch.full((2,), float(value))})["double"], torch.full((2,), 2.0 * value))
    assert (recorder.captures, captured.captures, captured.replays) == (2, 2, 4)
    captured({"x": torch.ones(4)})  # beyond max_graphs: eager, however often
    captured({"x": torch.ones(4)})
    captured({"x": torch.ones(4)})
    assert (recorder.captures, captured.replays) == (2, 4)
    captured.reset()
    for _ in range(3):
        captured({"x": torch.ones(3)})
    assert recorder.captures == 3


def test_a_failed_capture_warns_once_and_later_steps_run_eagerly():
    recorder = Recorder(fail=True)
    captured = CapturedStep(recorder.step, enabled=True, warmup_steps=0, capture=recorder.capture)
    with pytest.warns(UserWarning, match="could not be recorded as a CUDA graph .RuntimeError: operation not permitted"):
        first = captured({"x": torch.ones(3)})
    assert torch.equal(first["double"], torch.full((3,), 2.0))
    assert captured.failure == "RuntimeError: operation not permitted when stream is capturing"
    captured({"x": torch.ones(3)})
    assert (recorder.eager_calls, captured.replays) == (2, 0)


def test_switched_off_it_always_runs_eagerly(monkeypatch):
    recorder = Recorder()
    captured = CapturedStep(recorder.step, enabled=False, warmup_steps=0, capture=recorder.capture)
    for _ in range(3):
        captured({"x": torch.ones(3)})
    assert (recorder.captures, recorder.eager_calls) == (0, 3)
    monkeypatch.setenv("NEURODYN_CUDA_GRAPHS", "0")
    assert not cuda_graphs_enabled()
    monkeypatch.setenv("NEURODYN_CUDA_GRAPHS", "1")
    assert cuda_graphs_enabled()


def test_a_trainer_releases_its_graphs():
    from neurodyn.config import LfadsConfig
    from neurodyn.train.population_trainer import PopulationTrainer

    data = torch.poisson(torch.full((12, 5, 3), 1.0)).numpy()
    config = LfadsConfig(ic_enc_dim=3, ci_enc_dim=2, con_dim=2, ic_dim=2, gen_dim=3, factors_dim=2, batch_size=4,
                         device="cpu")
    population = PopulationTrainer.from_configs([config, config], data[:8], data[8:])
    recorder = Recorder()
    for captured in (population.captured_step, population.captured_validation):
        captured.enabled, captured.warmup_steps, captured.capture = True, 0, recorder.capture
    population.step_epoch()
    assert (population.captured_step.captures, population.captured_validation.captures) == (1, 1)
    population.release_graphs()
    assert (population.captured_step.captures, population.captured_validation.captures) == (0, 0)
