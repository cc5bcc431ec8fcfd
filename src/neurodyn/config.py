"""The one validated configuration schema for every YAML key neurodyn reads.

Keys are flat, as in the user's config template (seed 000). Hyperparameter names follow the
seed (``learning_rate_init``, ``keep_prob``, ``keep_ratio``, ...). Every key has a default that
works on a dataset like the synthetic Lorenz set, so a config holding only ``run_name`` is valid.
Unknown keys are rejected with the closest valid key.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from neurodyn.errors import NeurodynError



class LfadsConfig(BaseModel):
    """Model, regularisation and training settings of one LFADS model."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # -- run --------------------------------------------------------------------------------
    run_name: str = Field("neurodyn_run", description="prefix of <run_name>_data.h5 and name of the run's folder")
    seed: int = Field(0, description="seed for the train/valid split, initial weights and sampling")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' uses a CUDA GPU when present")
    observation: str = Field("poisson", description="observation model: poisson (zig, gamma with RADICaL)")

    # -- observation-model settings (used by the models that need them) ------------------------
    s_min: float | Literal["auto"] = Field("auto", description="ZIG: smallest event size; 'auto' = just below the "
                                                               "smallest non-zero observed event")
    gamma_prior: float = Field(20.0, gt=0.0, description="ZIG/Gamma: prior value of the trainable sigmoid scales")
    l2_gamma_distance_scale: float = Field(1e-4, ge=0.0, description="ZIG/Gamma: penalty on scales' distance to the prior")
    temporal_shift_std: float = Field(0.0, ge=0.0, description="EMG augmentation: std (bins) of per-channel shifts; 0 = off")

    # -- data -------------------------------------------------------------------------------
    valid_ratio: float = Field(0.2, gt=0.0, lt=1.0, description="fraction of trials held out for validation")

    # -- architecture -----------------------------------------------------------------------
    ic_enc_dim: int = Field(64, ge=1, description="units per direction of the IC encoder BiGRU")
    ci_enc_dim: int = Field(64, ge=1, description="units per direction of the controller-input encoder BiGRU")
    ci_lag: int = Field(1, ge=0, description="time steps the controller inputs lag the data")
    con_dim: int = Field(64, ge=1, description="controller GRU units")
    co_dim: int = Field(0, ge=0, description="inferred-input dimensions; 0 = autonomous generator (no controller)")
    ic_dim: int = Field(64, ge=1, description="dimensions of the initial-condition latent")
    gen_dim: int = Field(100, ge=1, description="generator GRU units")
    factors_dim: int = Field(40, ge=1, description="number of factors (normalised projection of the generator)")
    cell_clip_value: float = Field(5.0, gt=0.0, description="recurrent states are clipped to +-this value")

    # -- priors -----------------------------------------------------------------------------
    ic_prior_var: float = Field(0.1, gt=0.0, description="variance of the Gaussian IC prior")
    ic_post_var_min: float = Field(1e-4, ge=0.0, description="floor added to the IC posterior variance")
    co_prior_tau: float = Field(10.0, gt=0.0, description="initial AR(1) time constant (bins) of the controller prior")
    co_prior_nvar: float = Field(0.1, gt=0.0, description="initial AR(1) noise variance of the controller prior")

    # -- regularisation (PBT-searchable) ----------------------------------------------------
    keep_prob: float = Field(0.95, gt=0.0, le=1.0, description="dropout keep probability")
    keep_ratio: float = Field(0.7, gt=0.0, le=1.0, description="coordinated dropout: input keep probability; 1 = off")
    cd_pass_fraction: float = Field(0.0, ge=0.0, le=1.0,
                                    description="fraction of kept entries that still pass gradient (0 = pure CD)")
    l2_gen_scale: float = Field(1e-4, ge=0.0, description="L2 cost of the generator's recurrent kernel")
    l2_con_scale: float = Field(1e-4, ge=0.0, description="L2 cost of the controller's recurrent kernel")
    kl_ic_weight: float = Field(1e-4, ge=0.0, description="weight of the IC KL term")
    kl_co_weight: float = Field(1e-4, ge=0.0, description="weight of the controller-output KL term")
    kl_increase_epochs: int = Field(80, ge=0, description="epochs over which the KL weight ramps from 0 to 1")
    l2_increase_epochs: int = Field(80, ge=0, description="epochs over which the L2 weight ramps from 0 to 1")

    # -- optimisation -----------------------------------------------------------------------
    learning_rate_init: float = Field(4e-3, gt=0.0, description="initial Adam learning rate")
    learning_rate_decay: float = Field(0.95, gt=0.0, le=1.0, description="factor applied on a validation plateau")
    learning_rate_patience: int = Field(6, ge=0, description="epochs without improvement before a decay")
    learning_rate_stop: float = Field(1e-5, ge=0.0, description="learning-rate floor")
    adam_epsilon: float = Field(1e-8, gt=0.0, description="Adam epsilon")
    loss_scale: float = Field(1e4, gt=0.0, description="the loss is multiplied by this before the gradient")
    max_grad_norm: float = Field(200.0, gt=0.0, description="global gradient-norm clip")
    batch_size: int = Field(128, ge=1, description="trials per training step")
    valid_batch_size: int = Field(512, ge=1, description="trials per validation/inference step")
    max_epochs: int = Field(400, ge=1, description="upper bound on training epochs")
    early_stopping_patience: int = Field(40, ge=1,
                                         description="stop after this many epochs without a better smoothed "
                                                     "validation NLL (counted once the ramps are complete)")
    posterior_samples: int = Field(50, ge=1, description="posterior samples averaged for the output rates")

    @field_validator("observation")
    @classmethod
    def _check_observation(cls, name: str) -> str:
        from neurodyn.observation.registry import OBSERVATION_MODELS

        if name not in OBSERVATION_MODELS:
            raise ValueError(f"expected one of {sorted(OBSERVATION_MODELS)}")
        return name

    @property
    def uses_controller(self) -> bool:
        return self.co_dim > 0


def closest_key(key: str, valid_keys: list[str]) -> str | None:
    """The valid key nearest in spelling to ``key`` (None when nothing is close)."""
    matches = difflib.get_close_matches(key, valid_keys, n=1, cutoff=0.5)
    return matches[0] if matches else None


def validate_config(raw: dict[str, Any], schema: type[BaseModel] = LfadsConfig,
                    source: str = "config") -> BaseModel:
    """Validate a flat mapping of keys against ``schema``, with errors a person can act on."""
    if not isinstance(raw, dict):
        raise NeurodynError(f"{source}: expected a mapping of keys to values, got {type(raw).__name__}")
    valid_keys = list(schema.model_fields)
    for key in raw:
        if key not in schema.model_fields:
            suggestion = closest_key(str(key), valid_keys)
            hint = f"; did you mean '{suggestion}'?" if suggestion else ""
            raise NeurodynError(f"{source}: unknown key '{key}'{hint}")
    try:
        return schema(**raw)
    except ValidationError as error:
        problems = "; ".join(_describe_problem(item) for item in error.errors())
        raise NeurodynError(f"{source}: {problems}") from None


def _describe_problem(item: dict) -> str:
    key = ".".join(str(part) for part in item["loc"]) or "(config)"
    got = f" (got {item['input']!r})" if item["loc"] and "input" in item else ""
    return f"key '{key}': {item['msg']}{got}"


def load_config(path: str | Path, schema: type[BaseModel] = LfadsConfig) -> BaseModel:
    """Read a YAML file and validate it (an empty file gives all defaults)."""
    path = Path(path)
    if not path.is_file():
        raise NeurodynError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise NeurodynError(f"{path}: not valid YAML ({error})") from None
    return validate_config(raw, schema, source=str(path))


def config_to_yaml(config: BaseModel) -> str:
    """The resolved config (every key, defaults included) as YAML."""
    return yaml.safe_dump(config.model_dump(), sort_keys=False)
