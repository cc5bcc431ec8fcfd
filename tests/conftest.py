"""Shared test settings: small, single-threaded torch so the suite is quick and repeatable on 2 cores."""

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def recorded_training_masks(monkeypatch):
    """Every ``BatchMasks`` the trainer forms while the test runs, in order (``training_masks`` wrapped)."""
    import neurodyn.train.population_trainer as trainer_module  # where the training step forms them

    seen = []
    original = trainer_module.training_masks

    def recording(*args, **kwargs):
        masks = original(*args, **kwargs)
        seen.append(masks)
        return masks

    monkeypatch.setattr(trainer_module, "training_masks", recording)
    return seen


@pytest.fixture(params=["pytorch-loops", "compiled-kernels", "library-kernels"])
def recurrent_loops(request, monkeypatch):
    """Run a test with the PyTorch recurrent loops, again with the compiled kernels (on CPU) and again with
    the GPU backend (``library``: its block-diagonal encoder GRU runs on the CPU too; the fused
    gate kernel's CPU stand-in is the same arithmetic, checked against the real kernel on a GPU), so a
    comparison of two models (e.g. a population and its single models) covers every implementation."""
    monkeypatch.setenv("NEURODYN_COMPILED_KERNELS", "1" if request.param == "compiled-kernels" else "0")
    if request.param == "library-kernels":
        from neurodyn.lfads import stacked

        monkeypatch.setattr(stacked, "recurrent_backend", lambda device: "library")


# The real recordings that lie beside the project (../shared/data, as CI lays it out): a test that needs one
# takes this fixture and is skipped, saying why, where the folder is absent (e.g. a clone on its own).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
    """The folder of real recordings (``../shared/data``); skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not found at {SHARED_DATA}")
    return SHARED_DATA
