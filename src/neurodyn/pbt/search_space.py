"""Sampling and exploring hyperparameters as the seed defines them.

* init: ``rand`` uniform in the range, ``logrand`` log-uniform, ``grid`` evenly spaced over the
  workers (log-spaced when the range spans more than a decade of positive values), or a fixed value.
  A range given as a list of allowed values is sampled from that list.
* explore: ``perturb`` multiplies by a factor from U(1 - p, 1 + p); ``resample`` draws anew from the
  distribution ``init_sample_mode`` names. With ``limit_explore`` the result is kept inside the
  range (clipped; for allowed-value lists, the nearest allowed value); without it, inside the
  values the config accepts for the key.
"""

from __future__ import annotations

import typing

import numpy as np

from neurodyn.config import LfadsConfig, SearchSpec, field_bounds


def is_log_scaled(spec: SearchSpec) -> bool:
    """Whether a range is best plotted on a log scale (log-uniform sampling, or more than a decade)."""
    low, high = min(spec.explore_range), max(spec.explore_range)
    return spec.init_sample_mode == "logrand" or (low > 0 and high / low > 10)


def samples_log_uniformly(spec: SearchSpec) -> bool:
    """Whether ``resample`` draws log-uniformly: as ``init_sample_mode`` says (``logrand``; ``grid`` when its
    grid is log-spaced); a fixed initial value says nothing, so its range's width decides (> a decade)."""
    mode = spec.init_sample_mode
    if mode == "logrand":
        return True
    if mode == "rand":
        return False
    return is_log_scaled(spec)


def _draw(spec: SearchSpec, rng: np.random.Generator, log: bool) -> float:
    if spec.is_discrete:
        return float(rng.choice(spec.explore_range))
    low, high = spec.explore_range
    if log:
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return float(rng.uniform(low, high))


def initial_values(spec: SearchSpec, num_workers: int, rng: np.random.Generator) -> list[float]:
    """One starting value per worker."""
    mode = spec.init_sample_mode
    if isinstance(mode, float):
        return [mode] * num_workers
    if mode == "grid":
        if spec.is_discrete:
            values = spec.explore_range
            return [float(values[i % len(values)]) for i in range(num_workers)]
        low, high = spec.explore_range
        grid = np.geomspace(low, high, num_workers) if is_log_scaled(spec) else np.linspace(low, high, num_workers)
        return [float(v) for v in rng.permutation(grid)]
    return [_draw(spec, rng, log=(mode == "logrand")) for _ in range(num_workers)]


def limit(value: float, spec: SearchSpec) -> float:
    """``value`` kept inside the spec's range (nearest allowed value for a list)."""
    if spec.is_discrete:
        allowed = np.asarray(spec.explore_range)
        return float(allowed[np.argmin(np.abs(allowed - value))])
    low, high = spec.explore_range
    return float(min(max(value, low), high))


def explore(value: float, spec: SearchSpec, rng: np.random.Generator) -> float:
    """A new value of one hyperparameter after a worker copied another.

    ``perturb`` multiplies by a factor from U(1 - p, 1 + p); ``resample`` draws anew from the range
    (log-uniformly when ``samples_log_uniformly``). With ``limit_explore`` the value stays inside
    ``explore_range``; without it, see ``keep_valid``.
    """
    if not spec.explorable:
        return value
    if spec.explore_method == "resample":
        new = _draw(spec, rng, log=samples_log_uniformly(spec))
    else:
        new = value * rng.uniform(1.0 - spec.explore_param, 1.0 + spec.explore_param)
    return limit(new, spec) if spec.limit_explore else new


def keep_valid(key: str, value: float) -> tuple[float, str]:
    """``value`` kept inside the values the config accepts for ``key`` (e.g. ``keep_prob`` <= 1), and a
    note saying what was done (empty when nothing was)."""
    low, high = field_bounds(key)
    kept = float(min(max(value, low), high))
    if kept != value:
        return kept, f"{key} {value:.6g} is outside the values the config accepts; kept at {kept:.6g}"
    return value, ""


def as_config_value(key: str, value: float):
    """Cast a sampled number to the config field's type (e.g. ``batch_size`` is an integer)."""
    annotation = LfadsConfig.model_fields[key].annotation
    is_integer = annotation is int or int in typing.get_args(annotation)
    return int(round(value)) if is_integer else float(value)
