"""Selecting an observation model by its config name."""

from __future__ import annotations

from neurodyn.data.seed_format import NeuralDataset, read_dataset
from neurodyn.errors import NeurodynError
from neurodyn.observation.base import ObservationModel
from neurodyn.observation.gamma import Gamma
from neurodyn.observation.gaussian import Gaussian, SquaredError
from neurodyn.observation.poisson import Poisson
from neurodyn.observation.zig import ZeroInflatedGamma

OBSERVATION_MODELS: dict[str, type[ObservationModel]] = {
    "poisson": Poisson,
    "zig": ZeroInflatedGamma,
    "gamma": Gamma,
    "gaussian": Gaussian,
    "mse": SquaredError,
}


def observation_class(name: str) -> type[ObservationModel]:
    """The observation model class registered as ``name``."""
    try:
        return OBSERVATION_MODELS[name]
    except KeyError:
        raise NeurodynError(f"unknown observation model '{name}'; expected one of {sorted(OBSERVATION_MODELS)}") from None


def read_dataset_for(path, observation: str) -> NeuralDataset:
    """``read_dataset`` plus the observation model's check of the observed values (e.g. Poisson:
    non-negative integer counts; ZIG: non-negative events)."""
    model_class = observation_class(observation)
    dataset = read_dataset(path)
    model_class(dataset.num_neurons).validate_targets(dataset.data, dataset.source)
    return dataset


def make_observation_model(name: str, num_neurons: int, **options) -> ObservationModel:
    """Build the observation model called ``name`` for ``num_neurons`` neurons."""
    return observation_class(name)(num_neurons, **options)
