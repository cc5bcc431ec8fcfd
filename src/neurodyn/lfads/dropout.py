"""Dropout whose random masks come from an explicit ``torch.Generator``.

The trainer splits a batch over threads (``batch_threads``); each shard draws its masks from its
own seeded ``rng`` (a ``torch.Generator``) so that a seed gives the same run whatever the thread timing. torch's
``nn.Dropout`` only uses the global generator, which the threads would share in arbitrary order.
"""

from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Module):
    """Inverted dropout with rate ``p`` (same maths as ``nn.Dropout``); identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def keep_multipliers(self, shape: tuple[int, ...], like: torch.Tensor,
                         rng: torch.Generator | None = None) -> torch.Tensor | None:
        """``0`` or ``1 / (1 - p)`` per entry of ``shape``; None when dropout is inactive."""
        if not self.training or self.p == 0.0:
            return None
        keep = like.new_empty(shape).bernoulli_(1.0 - self.p, generator=rng)
        return keep.div_(1.0 - self.p)

    def forward(self, x: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        keep = self.keep_multipliers(x.shape, x, rng)
        return x if keep is None else x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"
