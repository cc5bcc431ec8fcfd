"""Choosing the torch device from the ``device: auto | cpu | cuda`` setting."""

import torch

from neurodyn.errors import NeurodynError


def resolve_device(device: str = "auto") -> torch.device:
    """Return the torch device for ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda[:N]``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NeurodynError(f"device '{device}' was requested but no CUDA GPU is available; use 'auto' or 'cpu'")
        return torch.device(device)
    raise NeurodynError(f"unknown device '{device}': expected 'auto', 'cpu' or 'cuda'")
