"""The population's decisions after each generation: who copies whom, and when to stop.

Plain functions over the workers' metrics (smoothed validation NLL, lower is better; NaN means
the worker diverged) so each rule can be tested on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def is_bad(metric: float) -> bool:
    return metric is None or not math.isfinite(metric)


def binary_tournament(metrics: list[float], rng: np.random.Generator) -> dict[int, int]:
    """Each worker meets one other at random and copies it if it is worse or diverged.

    Returns {copier: source}. A diverged worker whose opponent also diverged copies the best
    finite worker instead, so a NaN worker is always replaced while any worker is finite.
    """
    n = len(metrics)
    finite = [i for i in range(n) if not is_bad(metrics[i])]
    copies = {}
    for worker in range(n):
        opponent = int(rng.choice([i for i in range(n) if i != worker]))
        if is_bad(metrics[worker]):
            if not is_bad(metrics[opponent]):
                copies[worker] = opponent
            elif finite:
                copies[worker] = min(finite, key=lambda i: metrics[i])
        elif not is_bad(metrics[opponent]) and metrics[opponent] < metrics[worker]:
            copies[worker] = opponent
    return copies


def truncation(metrics: list[float], rng: np.random.Generator, fraction: float = 0.25) -> dict[int, int]:
    """The bottom ``fraction`` of workers (diverged ones first) each copy a random worker of the top fraction."""
    n = len(metrics)
    order = sorted(range(n), key=lambda i: (math.inf if is_bad(metrics[i]) else metrics[i]))
    count = max(1, int(round(fraction * n)))
    top = [i for i in order[:count] if not is_bad(metrics[i])]
    if not top:
        return {}
    bottom = set(order[-count:]) | {i for i in range(n) if is_bad(metrics[i])}
    return {worker: int(rng.choice(top)) for worker in sorted(bottom) if worker not in top}


def best_worker(metrics: list[float]) -> int | None:
    """Index of the lowest finite metric (None if every worker diverged)."""
    finite = [i for i in range(len(metrics)) if not is_bad(metrics[i])]
    return min(finite, key=lambda i: metrics[i]) if finite else None


@dataclass
class StoppingRule:
    """Stop when the best metric improved by less than ``percent_change`` percent for ``patience``
    generations in a row (an improvement smaller than that counts as none)."""

    patience: int
    percent_change: float = 0.0
    best: float = math.inf
    generations_without_best: int = 0
    history: list[float] = field(default_factory=list)

    def update(self, generation_best: float | None) -> bool:
        """Record one generation's best metric; return True if it is a new best."""
        value = math.inf if generation_best is None or not math.isfinite(generation_best) else generation_best
        self.history.append(value)
        if not math.isfinite(self.best):
            improved = math.isfinite(value)
        else:
            # percent of the previous best's magnitude (NLLs are positive, but be safe with sign)
            improved = (self.best - value) > abs(self.best) * self.percent_change / 100.0
            improved = improved and value < self.best
        if improved:
            self.best = value
            self.generations_without_best = 0
        else:
            self.generations_without_best += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.generations_without_best >= self.patience
