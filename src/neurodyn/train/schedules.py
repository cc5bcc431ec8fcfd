"""Small schedules of the training loop: regulariser ramps, the smoothed validation metric and the
learning rate's plateau schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

# torch.optim.lr_scheduler.ReduceLROnPlateau's defaults, which ``Plateau`` follows: a value is better when
# it is below the best so far by more than this fraction; a decay smaller than PLATEAU_EPS is not made.
PLATEAU_THRESHOLD, PLATEAU_EPS = 1e-4, 1e-8


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


@dataclass
class Plateau:
    """The learning rate's plateau schedule, as torch's ``ReduceLROnPlateau`` computes it (mode 'min',
    relative threshold, no cooldown): the rate is multiplied by ``factor`` (not below ``min_lr``) once the
    metric has not improved for more than ``patience`` epochs. Plain numbers, not an object bound to an
    optimiser: one model and each worker of a population keep one, and a checkpoint stores it as is."""

    best: float = math.inf
    bad_epochs: int = 0

    def step(self, metric: float, learning_rate: float, factor: float, patience: int, min_lr: float) -> float:
        """Record an epoch's ``metric``; returns the learning rate for the next epoch."""
        if metric < self.best * (1.0 - PLATEAU_THRESHOLD):
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs <= patience:
            return learning_rate
        self.bad_epochs = 0
        decayed = max(learning_rate * factor, min_lr)
        return decayed if learning_rate - decayed > PLATEAU_EPS else learning_rate
