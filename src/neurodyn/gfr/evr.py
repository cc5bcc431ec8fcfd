"""Explained variance of repeated trials: how much of a rate's repeatable part a model captures."""

from __future__ import annotations

import numpy as np

from neurodyn.errors import NeurodynError


def explained_variance(p: np.ndarray, q: np.ndarray) -> float:
    """``EV(p, q) = (var p + var q - var(p - q)) / (var p + var q)``; NaN when both are constant.

    Equal to ``2 cov(p, q) / (var p + var q)``: 1 for identical traces, 0 for unrelated ones.
    """
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    if p.shape != q.shape:
        raise NeurodynError(f"explained variance needs traces of one shape, got {p.shape} and {q.shape}")
    total = p.var() + q.var()
    if total == 0:
        return float("nan")
    return float((total - (p - q).var()) / total)


def explained_variance_ratio(repeats: np.ndarray, predictions: np.ndarray) -> float:
    """EVR of a model on repeats of one stimulus.

    ``repeats`` (n_repeats, time): observed rate per bin of each repeat; ``predictions``: the model's
    rate per bin, shape (time,) or one row per repeat. EVR = mean_k EV(repeat_k, model_k) /
    mean_k EV(repeat_k, PSTH), where the PSTH is the mean over all repeats; the denominator is
    how well the repeats' own average explains each repeat, so EVR near 1 is as good as the data allow.
    """
    repeats = np.atleast_2d(np.asarray(repeats, dtype=float))
    predictions = np.broadcast_to(np.asarray(predictions, dtype=float), repeats.shape)
    psth = repeats.mean(axis=0)
    model_ev = np.mean([explained_variance(r, m) for r, m in zip(repeats, predictions)])
    data_ev = np.mean([explained_variance(r, psth) for r in repeats])
    if not np.isfinite(data_ev) or data_ev == 0:
        return float("nan")
    return float(model_ev / data_ev)
