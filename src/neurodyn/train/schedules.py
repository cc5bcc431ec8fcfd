"""Small schedules of the training loop: regulariser ramps and the smoothed validation metric."""

from __future__ import annotations

import math


def linear_ramp(epoch: int, increase_epochs: int) -> float:
    """Weight of a ramped regulariser at (0-based) ``epoch``: 0 at epoch 0, 1 from ``increase_epochs`` on."""
    if increase_epochs <= 0:
        return 1.0
    return min(1.0, epoch / increase_epochs)


def smooth(previous: float | None, current: float, weight_previous: float = 0.3) -> float:
    """Exponential smoothing of the validation NLL: 0.3 * previous + 0.7 * current.

    A non-finite current value propagates, so a diverged model is never mistaken for a good one.
    """
    if previous is None or not math.isfinite(previous):
        return current
    return weight_previous * previous + (1.0 - weight_previous) * current
