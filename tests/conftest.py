"""Shared test settings: small, single-threaded torch so the suite is quick and repeatable on 2 cores."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def recorded_training_masks(monkeypatch):
    """Every ``BatchMasks`` the trainer forms while the test runs, in order (``training_masks`` wrapped)."""
    import neurodyn.train.trainer as trainer_module

    seen = []
    original = trainer_module.training_masks

    def recording(*args, **kwargs):
        masks = original(*args, **kwargs)
        seen.append(masks)
        return masks

    monkeypatch.setattr(trainer_module, "training_masks", recording)
    return seen


@pytest.fixture(params=["pytorch-loops", "compiled-kernels"])
def recurrent_loops(request, monkeypatch):
    """Run a test with the PyTorch recurrent loops and again with the compiled kernels (on CPU), so a
    comparison of two models (e.g. a population and its single models) covers both implementations."""
    monkeypatch.setenv("NEURODYN_COMPILED_KERNELS", "1" if request.param == "compiled-kernels" else "0")
