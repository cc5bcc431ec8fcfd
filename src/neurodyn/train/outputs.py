"""The files a trained model leaves: ``<split>_output.h5``, the checkpoint, the resolved config.

Output h5 layout (the seed's orientation, features first and trials last):
``rates`` ``(num_neurons, num_samples, n)`` expected value per bin; ``factors``
``(factors_dim, num_samples, n)``; ``trial_idx`` ``(n,)`` indices into the input file's trial axis;
``rates_posterior_mean`` like ``rates``; plus the observation model's named parameters (e.g. ZIG
``q``, ``alpha``, ``beta``) shaped like ``rates``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurodyn.config import LfadsConfig, config_to_yaml
from neurodyn.data.atomic import atomic_path, write_h5_atomic, write_text_atomic
from neurodyn.errors import NeurodynError

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.yaml"


def to_file_layout(trials_first: np.ndarray) -> np.ndarray:
    """``(trials, T, features)`` -> ``(features, T, trials)``, the orientation of the seed's h5 files."""
    return np.ascontiguousarray(np.transpose(trials_first, (2, 1, 0)))


def write_split_output(path: str | Path, inferred: dict[str, np.ndarray], trial_idx: np.ndarray,
                       attrs: dict[str, Any] | None = None) -> None:
    """Write one split's inferred arrays (trials-first, from ``train.inference.infer``) atomically."""
    arrays = {name: to_file_layout(value) for name, value in inferred.items()}
    arrays["trial_idx"] = np.asarray(trial_idx, dtype=np.int64)
    write_h5_atomic(path, arrays, attrs)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save a trainer state (``LfadsTrainer.state_dict()`` plus anything else) atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint`` onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise NeurodynError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for a damaged file
        raise NeurodynError(f"{path}: not a readable neurodyn checkpoint ({error})") from None


def write_resolved_config(path: str | Path, config: LfadsConfig) -> None:
    write_text_atomic(path, config_to_yaml(config))
