"""Selecting an observation model by its config name."""

from __future__ import annotations

from neurodyn.errors import NeurodynError
from neurodyn.observation.base import ObservationModel
from neurodyn.observation.poisson import Poisson

OBSERVATION_MODELS: dict[str, type[ObservationModel]] = {"poisson": Poisson}


def make_observation_model(name: str, num_neurons: int, **options) -> ObservationModel:
    """Build the observation model called ``name`` for ``num_neurons`` neurons."""
    try:
        cls = OBSERVATION_MODELS[name]
    except KeyError:
        raise NeurodynError(f"unknown observation model '{name}'; expected one of {sorted(OBSERVATION_MODELS)}") from None
    return cls(num_neurons, **options)
