"""The one validated configuration schema for every YAML key neurodyn reads.

Keys are flat, as in the RADICaL/AutoLFADS config template. Hyperparameter names follow
AutoLFADS (``learning_rate_init``, ``keep_prob``, ``keep_ratio``, ...). Every key has a default that
works on a dataset like the synthetic Lorenz set, so a config holding only ``run_name`` is valid.
Unknown keys are rejected with the closest valid key.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from neurodyn.errors import NeurodynError



# The smallest value of keys that also accept 'auto' (their schema cannot carry ge/gt bounds).
AUTO_FIELD_MINIMUM = {"max_epochs": 1, "early_stopping_patience": 1, "batch_threads": 1, "event_delay_bins": 0,
                      "batch_size": 1, "readin_dim": 1, "forward_bins": 0, "co_dim": 0}
AUTO_FIELD_POSITIVE = ("learning_rate_init",)
# 'auto' or a number in [low, high].
AUTO_FIELD_RANGE = {"cd_pass_fraction": (0.0, 1.0), "sample_validation_fraction": (0.0, 0.5)}


class LfadsConfig(BaseModel):
    """Model, regularisation and training settings of one LFADS model."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # -- run --------------------------------------------------------------------------------
    run_name: str = Field("neurodyn_run", description="names the data file <run_name>_data.h5 that `neurodyn run` reads when "
                                                     "--data is not given, and the folder of a PBT run's workers, "
                                                     "logs and state (RESULTS/<run_name>/); `neurodyn train` "
                                                     "writes straight into --out")
    seed: int = Field(0, description="seed for the train/valid split, initial weights and sampling")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' uses a CUDA GPU when present")
    observation: str = Field("poisson", description="observation model: poisson (spike counts), zig (deconvolved "
                                                   "calcium events, RADICaL), gamma (rectified EMG), gaussian "
                                                   "(continuous signals, a learned variance per channel) or mse "
                                                   "(continuous signals, squared error)")

    # -- observation-model settings (used by the models that need them) ------------------------
    s_min: float | Literal["auto"] = Field(
        "auto", description="ZIG: smallest event size; observed values at or below it count as zero (no event). "
                            "'auto' = 0.9 x the smallest non-zero training event that is at least half the 1% "
                            "quantile of the non-zero training events (just below the smallest event, unless a few "
                            "stray tiny events lie far below the rest: those count as zero)")
    gamma_prior: float = Field(20.0, gt=0.0, description="ZIG/Gamma: prior value of the trainable sigmoid scales")
    l2_gamma_distance_scale: float = Field(1e-4, ge=0.0, description="ZIG/Gamma: penalty on scales' distance to the prior")
    temporal_shift_std: float = Field(0.0, ge=0.0, description="EMG augmentation: std (bins) of per-channel shifts; 0 = off")
    spike_jitter_bins: int | Literal["auto"] = Field(
        "auto", description="spike-count augmentation: during training each spike moves by a uniform random offset "
                            "of up to this many bins either way (staying put where that bin is outside the trial "
                            "or unobserved); 0 = off; observation: poisson only. 'auto' = as many whole bins of the "
                            "data file's 'bin_ms' as fit in 20 ms when that is at least 2 (4 on 5 ms bins, 2 on "
                            "10 ms), else 0 (bins over 10 ms, no 'bin_ms' in the file, other observation models)")

    # -- data -------------------------------------------------------------------------------
    valid_ratio: float = Field(0.2, gt=0.0, lt=1.0, description="fraction of trials held out for validation")
    validation: Literal["trials", "entries"] = Field(
        "trials", description="what the validation NLL (early stopping, learning-rate decay, PBT fitness) scores: "
                              "'trials' = the validation trials, never trained on; 'entries' = held-out entries, so "
                              "no trial is given up: the validation trials train too, all but their held-out "
                              "neurons and forward bins (which stay unseen and are scored), and "
                              "sample_validation_fraction of every training trial's entries are held out and scored")
    sample_validation_fraction: float | Literal["auto"] = Field(
        "auto", description="sample validation: this fraction of the training trials' observed entries (seeded by "
                            "seed, drawn once per run) is never trained on, and the model's predictions of them join "
                            "the validation NLL; 0 = off; 'auto' = 0.1 with validation: entries, else 0")
    heldout_neurons: list[int] = Field(default_factory=list,
                                       description="neurons never shown to the encoder but reconstructed (co-bps); "
                                                   "taken from the data file's 'heldout_neurons' when not set")
    forward_bins: int | Literal["auto"] = Field(
        "auto", description="forward prediction (fp-bps): the last this many bins of every trial are never shown to "
                            "the encoders; the generator runs on through them and their rates are predictions, "
                            "scored by 'neurodyn evaluate' as fp-bps. Training still fits them. 0 = off; 'auto' = the "
                            "data file's attribute 'forward_bins' ('neurodyn prepare nlb' records NLB's forward "
                            "window there), else 0")
    event_delay_bins: int | Literal["auto"] = Field(
        "auto", description="bins by which each event trails the spikes it reports (calcium events: about a frame); "
                            "the model fits its rates at bin t to the events of bin t + this, so its rates line up "
                            "with the spikes. 'auto' = the data file's 'event_delay_ms' / 'bin_ms', rounded "
                            "(0 when the file has no 'event_delay_ms', e.g. spike counts)")

    # -- architecture -----------------------------------------------------------------------
    ic_enc_dim: int = Field(64, ge=1, description="units per direction of the IC encoder BiGRU")
    ci_enc_dim: int = Field(64, ge=1, description="units per direction of the controller-input encoder BiGRU")
    ci_lag: int = Field(1, ge=0, description="time steps the controller inputs lag the data")
    con_dim: int = Field(64, ge=1, description="controller GRU units")
    co_dim: int | Literal["auto"] = Field(
        "auto", description="inferred-input dimensions of the controller; 0 = autonomous generator (no controller); "
                            "'auto' = 4, or 0 when fewer than 1 in 5 of the training entries are observed (sparse "
                            "SBTT data, where a controller measured worse)")
    ic_dim: int = Field(64, ge=1, description="dimensions of the initial-condition latent")
    gen_dim: int = Field(100, ge=1, description="generator GRU units")
    factors_dim: int = Field(40, ge=1, description="number of factors (normalised projection of the generator)")
    readin_dim: int | Literal["auto"] = Field(
        "auto", description="several sessions (stitching): shared encoder inputs each session's read-in maps its "
                            "neurons to; 'auto' = factors_dim. Unused with one data file")
    session_neurons: list[int] = Field(default_factory=list,
                                       description="several sessions (stitching): neurons of each session, in the "
                                                   "order of the data files; set from the files (leave it out)")
    cell_clip_value: float = Field(5.0, gt=0.0, description="recurrent states are clipped to +-this value")
    ext_input_dim: int = Field(0, ge=0, description="measured inputs per bin (the data file's 'ext_input', e.g. a "
                                                     "stimulus) fed to the generator beside the inferred inputs; "
                                                     "0 = none. Set from the data file when it has 'ext_input'")
    mask_as_input: bool | Literal["auto"] = Field(
        False, description="the encoders also see where data were observed (0/1 per neuron and bin), telling an "
                           "observed zero from a missing entry. Off by default: it measured worse on every benchmark "
                           "set (calcium events and sparse spike counts); 'auto' is accepted and means off")

    # -- priors -----------------------------------------------------------------------------
    ic_prior_var: float = Field(0.1, gt=0.0, description="variance of the Gaussian IC prior (ic_prior: learnable: "
                                                         "its starting value)")
    ic_prior: Literal["fixed", "learnable"] = Field(
        "fixed", description="IC prior: 'fixed' = N(0, ic_prior_var); 'learnable' = a diagonal Gaussian whose mean "
                             "and variance per dimension are trained with the model (from 0 and ic_prior_var)")
    ic_post_var_min: float = Field(1e-4, ge=0.0, description="floor added to the IC posterior variance")
    co_prior_tau: float = Field(10.0, gt=0.0, description="initial AR(1) time constant (bins) of the controller prior")
    co_prior_nvar: float = Field(0.1, gt=0.0, description="initial AR(1) noise variance of the controller prior "
                                                         "(co_prior: student_t: the innovations' squared scale)")
    co_prior: Literal["ar1", "student_t"] = Field(
        "ar1", description="controller prior: 'ar1' (an AR(1) process with Gaussian innovations) or 'student_t' (the "
                           "same process with heavy-tailed Student-t innovations: rare large inputs, such as kicks, "
                           "cost less KL)")
    co_prior_df: float = Field(5.0, gt=0.0, description="co_prior: student_t: degrees of freedom of the innovations "
                                                        "(smaller = heavier tails)")

    # -- regularisation (PBT-searchable) ----------------------------------------------------
    keep_prob: float = Field(0.95, gt=0.0, le=1.0, description="dropout keep probability")
    keep_ratio: float = Field(0.7, gt=0.0, le=1.0, description="coordinated dropout: input keep probability; 1 = off")
    cd_pass_fraction: float | Literal["auto"] = Field(
        "auto", description="fraction of the encoder's (CD-kept) entries whose reconstruction still passes gradient "
                            "(0 = pure coordinated dropout); 'auto' = 0, or 0.2 when fewer than 1 in 5 "
                            "entries is observed (sparse sampling, where pure CD leaves little training signal)")
    l2_gen_scale: float = Field(1e-4, ge=0.0, description="L2 cost of the generator's recurrent kernel")
    l2_con_scale: float = Field(1e-4, ge=0.0, description="L2 cost of the controller's recurrent kernel")
    kl_ic_weight: float | Literal["auto"] = Field(
        "auto", description="weight of the IC KL term; 'auto' = 1e-4, or less on trials with many entries: "
                            "min(1e-4, 0.25 / (bins x neurons)), so that against the per-entry mean NLL the KL "
                            "of a whole trial never weighs more than a quarter of its evidence")
    kl_co_weight: float | Literal["auto"] = Field(
        "auto", description="weight of the controller-output KL term; 'auto' as kl_ic_weight")
    kl_increase_epochs: int = Field(80, ge=0, description="epochs over which the KL weight ramps from 0 to 1")
    l2_increase_epochs: int = Field(80, ge=0, description="epochs over which the L2 weight ramps from 0 to 1")

    # -- optimisation -----------------------------------------------------------------------
    learning_rate_init: float | Literal["auto"] = Field(
        "auto", description="initial Adam learning rate; 'auto' = matched to the batch size: 0.004 at 128 trials per "
                            "step, smaller for smaller batches (0.004 * (batch_size / 128) ** 0.226, e.g. 0.0025 at 16)")
    learning_rate_decay: float = Field(0.95, gt=0.0, le=1.0, description="factor applied on a validation plateau")
    learning_rate_patience: int = Field(6, ge=0, description="epochs without improvement before a decay")
    learning_rate_stop: float = Field(1e-5, ge=0.0, description="learning-rate floor")
    adam_epsilon: float = Field(1e-8, gt=0.0, description="Adam epsilon")
    loss_scale: float = Field(1e4, gt=0.0, description="the loss is multiplied by this before the gradient")
    max_grad_norm: float = Field(200.0, gt=0.0, description="global gradient-norm clip")
    batch_size: int | Literal["auto"] = Field(
        "auto", description="trials per training step; 'auto' = enough steps per epoch for the training trials: the "
                            "largest power of two <= training trials / 16, between 16 and 128 (all trials when fewer "
                            "than 16)")
    valid_batch_size: int = Field(512, ge=1, description="trials per validation/inference step")
    max_epochs: int | Literal["auto"] = Field(
        "auto", description="upper bound on training epochs; 'auto' = 400, or more when an epoch is fewer than 16 "
                            "optimiser steps (small data sets): enough epochs for 6400 steps")
    early_stopping_patience: int | Literal["auto"] = Field(
        "auto", description="stop after this many epochs without a better smoothed validation NLL (counted once the "
                            "ramps are complete); 'auto' = 40, or more when an epoch is fewer than 16 optimiser steps "
                            "(small data sets): enough epochs for 640 steps")
    posterior_samples: int = Field(50, ge=1, description="posterior samples averaged for the output rates")
    write_generator_states: bool = Field(False, description="also write the generator states (gen_dim, num_samples, "
                                                            "trials), averaged over the posterior samples, to the "
                                                            "output files (large: gen_dim values per bin)")
    tensorboard: bool = Field(False, description="also write TensorBoard event files to the run folder's tensorboard/ "
                                                 "(needs neurodyn[tensorboard]): train: each epoch's losses, KL and "
                                                 "L2 terms, ramps and learning rate; run: each worker's metric and "
                                                 "hyperparameters per generation, in <run_name>/tensorboard/")
    inference: Literal["auto", "refined", "sample_average", "empirical_bayes"] = Field(
        "auto", description="how the output rates are inferred: 'sample_average': average over samples of each "
                            "trial's own posterior, the encoder's; 'refined': the same after refining each "
                            "trial's posterior on its own evidence lower bound (refinement_steps; slower); "
                            "'empirical_bayes': weight the training trials' posterior draws by each trial's "
                            "likelihood (pools evidence across trials that repeat); 'auto' = 'refined' when more "
                            "than half the entries are unobserved (sparse sampling), else 'sample_average'")
    refinement_steps: int = Field(50, ge=0, description="with inference 'refined': at most this many Adam steps "
                                                        "refine each trial's initial-condition posterior (a trial "
                                                        "stops sooner once its steps are mostly noise); 0 = the "
                                                        "encoder's")
    empirical_bayes_samples: int = Field(5, ge=1, description="posterior draws per training trial that form the "
                                                              "empirical-Bayes prior")
    batch_threads: int | Literal["auto"] = Field(
        "auto", description="CPU threads that share each training batch (data parallel: same loss and gradient as "
                            "the whole batch); 'auto' = torch's CPU thread count, 1 on a GPU")

    @field_validator("observation")
    @classmethod
    def _check_observation(cls, name: str) -> str:
        from neurodyn.observation.registry import OBSERVATION_MODELS

        if name not in OBSERVATION_MODELS:
            raise ValueError(f"expected one of {sorted(OBSERVATION_MODELS)}")
        return name

    @field_validator(*AUTO_FIELD_MINIMUM)
    @classmethod
    def _check_auto_or_count(cls, value, info):
        minimum = AUTO_FIELD_MINIMUM[info.field_name]
        if value != "auto" and value < minimum:
            raise ValueError(f"expected 'auto' or an integer >= {minimum}")
        return value

    @field_validator("learning_rate_init")
    @classmethod
    def _check_auto_or_positive(cls, value):
        if value != "auto" and not value > 0:
            raise ValueError("expected 'auto' or a number > 0")
        return value

    @field_validator("kl_ic_weight", "kl_co_weight")
    @classmethod
    def _check_auto_or_weight(cls, value):
        if value != "auto" and not value >= 0:
            raise ValueError("expected 'auto' or a number >= 0")
        return value

    @field_validator(*AUTO_FIELD_RANGE)
    @classmethod
    def _check_auto_or_fraction(cls, value, info):
        low, high = AUTO_FIELD_RANGE[info.field_name]
        if value != "auto" and not low <= value <= high:
            raise ValueError(f"expected 'auto' or a number from {low:g} to {high:g}")
        return value

    @field_validator("spike_jitter_bins")
    @classmethod
    def _check_spike_jitter(cls, value, info):
        if value == "auto":
            return value
        if value < 0:
            raise ValueError("expected 'auto' or a number of bins >= 0")
        observation = info.data.get("observation", "poisson")
        if value and observation != "poisson":
            raise ValueError(f"jitter moves spikes: it needs observation: poisson, not {observation!r}")
        return value

    @property
    def controller_dim(self) -> int:
        """``co_dim`` as a model built without data takes it: 'auto' is resolved from the training data
        (``neurodyn.train.defaults``), and counts as 0 (no controller) until then."""
        return 0 if self.co_dim == "auto" else int(self.co_dim)

    @property
    def uses_controller(self) -> bool:
        return self.controller_dim > 0


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


def read_yaml(path: str | Path) -> Any:
    """The contents of a YAML file (an empty file gives ``{}``), with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise NeurodynError(f"config file {path} does not exist")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        hint = " (an h5 data file goes to --data)" if path.suffix.lower() in (".h5", ".hdf5", ".nwb") else ""
        raise NeurodynError(f"{path}: not a YAML config (a binary file){hint}") from None
    except IsADirectoryError:
        raise NeurodynError(f"{path}: is a folder; expected a YAML config file") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise NeurodynError(f"{path}: not valid YAML ({error})") from None


def load_config(path: str | Path, schema: type[BaseModel] = LfadsConfig) -> BaseModel:
    """Read a YAML file and validate it (an empty file gives all defaults)."""
    return validate_config(read_yaml(path), schema, source=str(path))


def config_to_yaml(config: BaseModel) -> str:
    """The resolved config (every key, defaults included) as YAML."""
    return yaml.safe_dump(config.model_dump(), sort_keys=False)


# ------------------------------------------------------------------------------------------------
# Population-based training (AutoLFADS): run settings and per-hyperparameter search settings.
# ------------------------------------------------------------------------------------------------

# Hyperparameters PBT may search: those a running model can change (exploit copies weights between
# workers, so every worker must share one architecture).
SEARCHABLE_HYPERPARAMETERS = (
    "learning_rate_init", "keep_prob", "keep_ratio", "cd_pass_fraction", "l2_gen_scale", "l2_con_scale",
    "kl_ic_weight", "kl_co_weight", "gamma_prior", "l2_gamma_distance_scale", "learning_rate_decay",
    "loss_scale", "max_grad_norm", "batch_size", "temporal_shift_std",
)


class SearchSpec(BaseModel):
    """How PBT samples and explores one hyperparameter (the AutoLFADS names)."""

    model_config = ConfigDict(extra="forbid")

    explore_range: list[float] = Field(description="[low, high] range, or a list of 3+ allowed values")
    init_sample_mode: str | float = Field("rand", description="rand | logrand | grid | a fixed initial value")
    explore_method: Literal["perturb", "resample"] = Field("perturb", description="how explore changes the value")
    explore_param: float | None = Field(None, description="perturb: factor drawn from U(1-p, 1+p) (default 0.3); "
                                                          "resample: must be None (null)")
    explorable: bool = Field(True, description="whether explore changes this hyperparameter")
    limit_explore: bool = Field(True, description="keep explored values inside explore_range")

    @field_validator("init_sample_mode")
    @classmethod
    def _check_mode(cls, mode):
        if isinstance(mode, str):
            lowered = mode.lower()
            if lowered not in ("rand", "logrand", "grid"):
                try:
                    return float(mode)
                except ValueError:
                    raise ValueError("expected 'rand', 'logrand', 'grid' or a number") from None
            return lowered
        return float(mode)

    @model_validator(mode="before")
    @classmethod
    def _default_explore_param(cls, values: Any) -> Any:
        # perturb needs a factor range (0.3 unless given); resample takes none, as the published template says.
        if isinstance(values, dict) and values.get("explore_method", "perturb") == "perturb" \
                and values.get("explore_param") is None:
            values = {**values, "explore_param": 0.3}
        return values

    @model_validator(mode="after")
    def _check_consistency(self) -> "SearchSpec":
        values = self.explore_range
        if len(values) < 2:
            raise ValueError("explore_range needs [low, high] or a list of allowed values")
        if len(values) == 2 and values[0] >= values[1]:
            raise ValueError(f"explore_range [low, high] needs low < high, got {values}")
        if self.init_sample_mode == "logrand" and min(values) <= 0:
            raise ValueError("init_sample_mode 'logrand' needs a positive explore_range")
        if self.explore_method == "perturb" and not (self.explore_param is not None and 0 < self.explore_param < 1):
            raise ValueError("explore_method 'perturb' needs explore_param between 0 and 1")
        if self.explore_method == "resample" and self.explore_param is not None:
            raise ValueError("explore_method 'resample' draws anew from explore_range: explore_param must be None "
                             f"(null), got {self.explore_param}")
        if isinstance(self.init_sample_mode, float) and not (min(values) <= self.init_sample_mode <= max(values)):
            raise ValueError(f"fixed initial value {self.init_sample_mode} lies outside explore_range {values}")
        return self

    @property
    def is_discrete(self) -> bool:
        return len(self.explore_range) > 2


def _field_constraints(key: str) -> list[tuple[str, float]]:
    """Every bound ``LfadsConfig`` puts on ``key``'s numbers: ``(name, value)`` with name gt, ge, lt or le
    (an ``auto`` key's minimum as ge, a positive ``auto`` key as gt 0, a fraction's range as ge and le, then
    the field's own)."""
    bounds = [("ge", AUTO_FIELD_MINIMUM[key])] if key in AUTO_FIELD_MINIMUM else []
    bounds += [("gt", 0)] if key in AUTO_FIELD_POSITIVE else []
    bounds += [("ge", AUTO_FIELD_RANGE[key][0]), ("le", AUTO_FIELD_RANGE[key][1])] if key in AUTO_FIELD_RANGE else []
    for constraint in LfadsConfig.model_fields[key].metadata:
        bounds += [(name, getattr(constraint, name)) for name in ("gt", "ge", "lt", "le")
                   if getattr(constraint, name, None) is not None]
    return bounds


def field_bounds(key: str) -> tuple[float, float]:
    """The closed interval of values ``LfadsConfig`` accepts for ``key`` (from its gt/ge/lt/le).

    A strict bound (gt/lt) is moved inward by one part in a million of its magnitude (1e-12 at 0),
    so a value clipped to it is accepted.
    """
    low, high = -math.inf, math.inf
    inward = {"ge": 0.0, "gt": 1.0, "le": 0.0, "lt": -1.0}
    for name, bound in _field_constraints(key):
        step = inward[name] * max(abs(float(bound)) * 1e-6, 1e-12)
        if name in ("ge", "gt"):
            low = max(low, float(bound) + step)
        else:
            high = min(high, float(bound) + step)
    return low, high


def _spec(low: float, high: float, init: str | float) -> SearchSpec:
    return SearchSpec(explore_range=[low, high], init_sample_mode=init)


# The published AutoLFADS search space (REFERENCE section 5), used when a config has no search settings.
DEFAULT_SEARCH_SPACE: dict[str, SearchSpec] = {
    "learning_rate_init": _spec(1e-5, 5e-3, 4e-3),
    "keep_prob": _spec(0.4, 1.0, "rand"),
    "keep_ratio": _spec(0.3, 0.9, 0.5),
    "l2_gen_scale": _spec(1e-5, 1.0, "logrand"),
    "l2_con_scale": _spec(1e-5, 1.0, "logrand"),
    "kl_co_weight": _spec(1e-6, 1e-4, "logrand"),
    "kl_ic_weight": _spec(1e-6, 1e-3, "logrand"),
}


class PbtSettings(BaseModel):
    """Settings of a population-based training run (the AutoLFADS names; ``Duration`` in minutes)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    epochs_per_generation: int = Field(25, ge=1, description="epochs each worker trains per generation")
    max_generations: int = Field(50, ge=1, description="upper bound on generations")
    num_no_best_to_stop: int = Field(5, ge=1, description="stop after this many generations without a better best worker")
    percent_change_to_stop: float = Field(0.0, ge=0.0, description="an improvement below this percent counts as none")
    max_processes: int | None = Field(None, ge=1, description="worker processes (engine: embedded), batched "
                                                               "populations (engine: population) or Ray tasks "
                                                               "(engine: ray) trained at once (default: one per GPU, "
                                                               "else one per CPU core)")
    num_workers: int = Field(20, ge=2, description="workers in the population")
    Duration: float | None = Field(None, gt=0.0, description="minutes allowed for the run; the best model so far "
                                                             "is exported when the time is up")
    exploit_method: Literal["binary_tournament", "truncation"] = Field(
        "binary_tournament", description="how poor workers choose whom to copy")
    truncation_fraction: float = Field(0.25, gt=0.0, le=0.5,
                                       description="truncation: the bottom fraction copies the top fraction")
    start_from_config: bool = Field(True, description="worker 0 starts at the model config's values of the searched "
                                                      "keys (what one 'neurodyn train' with this config would use, "
                                                      "clipped to each explore_range), the others as init_sample_mode "
                                                      "says; so the search always includes the config's own settings")
    engine: Literal["auto", "embedded", "ray", "population"] = Field(
        "auto", description="where the workers train: population (this machine, the workers as batched models, one "
                            "per CPU core or GPU; needs one batch_size for all), embedded (this machine, one process "
                            "per worker), ray (a cluster); auto = population unless the search includes batch_size, "
                            "then embedded")
    ray_address: str | None = Field(None, description="address of an existing Ray cluster (engine: ray)")


class RunConfig(BaseModel):
    """A validated ``neurodyn run`` config: PBT settings, the model's fixed settings, the search space."""

    model_config = ConfigDict(extra="forbid")

    pbt: PbtSettings
    model: LfadsConfig
    search_space: dict[str, SearchSpec]


def validate_run_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Split a flat mapping into PBT settings, fixed model values and per-hyperparameter search settings.

    A model key whose value is a mapping holds search settings; a plain value fixes the key. With no
    search settings at all, the published search space is used, minus any key the config fixes (and
    minus the controller's keys when ``co_dim`` is 0, or resolves to 0 from the data when 'auto').
    """
    if not isinstance(raw, dict):
        raise NeurodynError(f"{source}: expected a mapping of keys to values, got {type(raw).__name__}")
    valid_keys = list(PbtSettings.model_fields) + list(LfadsConfig.model_fields)
    pbt_raw, model_raw, search = {}, {}, {}
    for key, value in raw.items():
        if key in PbtSettings.model_fields:
            pbt_raw[key] = value
        elif key in LfadsConfig.model_fields and isinstance(value, dict):
            if key not in SEARCHABLE_HYPERPARAMETERS:
                raise NeurodynError(f"{source}: key '{key}' cannot be searched by PBT (workers copy each other's "
                                    f"weights, so they must share one architecture); searchable keys: "
                                    f"{', '.join(SEARCHABLE_HYPERPARAMETERS)}")
            try:
                search[key] = SearchSpec(**value)
                low, high = field_bounds(key)
                if min(search[key].explore_range) < low or max(search[key].explore_range) > high:
                    raise NeurodynError(f"{source}: explore_range {search[key].explore_range} of '{key}' goes outside "
                                        f"the values '{key}' accepts ({_describe_bounds(key)})")
            except ValidationError as error:
                raise NeurodynError(f"{source}: search settings of '{key}': "
                                    + "; ".join(_describe_problem(item) for item in error.errors())) from None
            except TypeError as error:
                raise NeurodynError(f"{source}: search settings of '{key}': {error}") from None
        elif key in LfadsConfig.model_fields:
            model_raw[key] = value
        else:
            suggestion = closest_key(str(key), valid_keys)
            hint = f"; did you mean '{suggestion}'?" if suggestion else ""
            raise NeurodynError(f"{source}: unknown key '{key}'{hint}")
    pbt = validate_config(pbt_raw, PbtSettings, source)
    model = validate_config(model_raw, LfadsConfig, source)
    if not search:
        search = {k: v for k, v in DEFAULT_SEARCH_SPACE.items() if k not in model_raw}
        if model.co_dim != "auto":  # 'auto': the data decide (neurodyn.pbt.run, once they are read)
            search = without_controller_search(search, model)
    return RunConfig(pbt=pbt, model=model, search_space=search)


CONTROLLER_SEARCH_KEYS = ("l2_con_scale", "kl_co_weight")


def without_controller_search(search: dict[str, SearchSpec], model: LfadsConfig) -> dict[str, SearchSpec]:
    """``search`` minus the controller's keys when ``model`` has no controller (co_dim 0 or unresolved
    'auto'): they do nothing in an autonomous model, so the search is not spent on them."""
    if model.uses_controller:
        return search
    return {key: spec for key, spec in search.items() if key not in CONTROLLER_SEARCH_KEYS}


def _describe_bounds(key: str) -> str:
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return " and ".join(f"{symbols[name]} {bound}" for name, bound in _field_constraints(key)) or "any number"


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a ``neurodyn run`` YAML config."""
    return validate_run_config(read_yaml(path), source=str(path))


# ------------------------------------------------------------------------------------------------
# GFR fitting (``neurodyn gfr fit --config_path CONFIG.json``; JSON is read as YAML).
# ------------------------------------------------------------------------------------------------

GFR_VALIDATION_STIMULUS = "Noise 1"
GFR_TEST_STIMULUS = "Noise 2"


class GfrFitConfig(BaseModel):
    """Training settings of the GFR fitting pipeline (every key optional)."""

    model_config = ConfigDict(extra="forbid")

    activation_lr: float = Field(0.05, gt=0, description="Adam learning rate of the activation pre-fit")
    activation_epochs: int = Field(1000, ge=1, description="epochs of the activation pre-fit")
    activation_restarts: int = Field(3, ge=1, description="random restarts of the activation pre-fit (best kept)")
    learning_rates: list[float] = Field(default_factory=lambda: [1e-2, 1e-3, 1e-4], min_length=1,
                                        description="one full fit per learning rate; best validation EVR kept")
    epochs: int = Field(200, ge=1, description="epochs of each full fit")
    eval_every: int = Field(10, ge=1, description="epochs between validation EVR checks")
    train_stimuli: list[str] = Field(default_factory=lambda: ["Long Square", "Ramp"], min_length=1,
                                     description="sweep families trained on (never Noise 1 or Noise 2)")
    min_val_evr: float = Field(0.5, description="acceptance: validation EVR above this")
    max_train_loss: float = Field(0.45, description="acceptance: training Poisson NLL below this")
    workers: int = Field(2, ge=1, description="cells fitted in parallel")
    device: str = Field("cpu", description="auto | cpu | cuda")
    seed: int = Field(0, description="seed of the restarts")
    learn_feedback: bool = Field(True, description="False gives a linear-nonlinear model (no rate feedback)")

    @field_validator("train_stimuli")
    @classmethod
    def _no_held_out_sweeps(cls, stimuli: list[str]) -> list[str]:
        held_out = {GFR_VALIDATION_STIMULUS, GFR_TEST_STIMULUS} & set(stimuli)
        if held_out:
            raise ValueError(f"must not contain {sorted(held_out)}: Noise 1 is the validation set and Noise 2 "
                             "the test set")
        return stimuli
