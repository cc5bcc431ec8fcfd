"""Training one LFADS model, one epoch at a time.

``LfadsTrainer`` owns the state of a training run — model, Adam moments, learning-rate schedule,
ramps, smoothed validation NLL, early stopping, the best weights — so that a single run
(``fit``) and a PBT worker (which trains a few epochs, is compared, maybe copies another worker's
state and hyperparameters) use the same code. Its training steps and validation passes are those
of a PBT population (``train.population_trainer``) of one worker, this one: one implementation of
the step for one model and for many. The Adam moments and the learning rate are plain tensors and
numbers held here (no ``torch.optim`` objects); while a population trains this trainer, its model's
weights and its moments are views of the population's stacked tensors, updated in place.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Callable

import numpy as np
import torch

from neurodyn.config import SEARCHABLE_HYPERPARAMETERS, LfadsConfig
from neurodyn.device import resolve_device
from neurodyn.errors import NeurodynError
from neurodyn.lfads.model import LFADS
from neurodyn.lfads.stitching import initialise_stitched_model
from neurodyn.observation.registry import make_observation_model, observation_class
from neurodyn.train.cpu_threads import default_threads
from neurodyn.train.defaults import resolve_data_defaults
from neurodyn.train.inference import ext_input_tensor
from neurodyn.train.population_trainer import PopulationTrainer
from neurodyn.train.schedules import Plateau, smooth

# Hyperparameters that may change during training (PBT explores them); all others fix the architecture.
MUTABLE_HYPERPARAMETERS = SEARCHABLE_HYPERPARAMETERS + (
    "valid_batch_size", "learning_rate_patience", "learning_rate_stop", "early_stopping_patience",
    "max_epochs", "posterior_samples", "write_generator_states",
)

class LfadsTrainer:
    """Trains LFADS on ``train_data`` and scores it on ``valid_data``, both ``(trials, T, N)`` with NaN = unobserved.

    With measured inputs (``ext_input_dim`` > 0), ``train_ext_input`` and ``valid_ext_input``
    ``(trials, T, ext_input_dim)`` hold them for the same trials in the same order; they are batched
    with the data and go to the generator unchanged (no CD, no temporal shift).

    A stitched model (``session_neurons`` with several sessions; data over the union of the
    sessions' neurons, see ``neurodyn.data.sessions``) needs ``train_session`` and ``valid_session``
    ``(trials,)``, each trial's session index; ``train_condition`` ``(trials,)`` (optional) gives the
    condition labels its read-in and readout are initialised from (``neurodyn.lfads.stitching``).

    ``sample_validation_data`` (sample validation; shaped like ``train_data``, NaN except the training
    trials' held-out entries, which ``train_data`` has as NaN: ``data.seed_format.split_sample_validation``)
    joins the validation NLL: the model reads the training trials and is scored on those entries too.
    With it, ``valid_data`` may have no trials (``validation: entries``, ``ModelData.trainer_inputs``).

    ``bin_ms`` (the data's bin width in ms, None when not known) resolves ``spike_jitter_bins: auto``.
    """

    def __init__(self, config: LfadsConfig, train_data: np.ndarray, valid_data: np.ndarray,
                 device: str | torch.device | None = None, train_ext_input: np.ndarray | None = None,
                 valid_ext_input: np.ndarray | None = None, train_session: np.ndarray | None = None,
                 valid_session: np.ndarray | None = None, train_condition: np.ndarray | None = None,
                 sample_validation_data: np.ndarray | None = None, bin_ms: float | None = None):
        if sample_validation_data is not None and np.shape(sample_validation_data) != np.shape(train_data):
            raise NeurodynError(f"sample_validation_data has shape {np.shape(sample_validation_data)}; expected "
                                f"the training data's {np.shape(train_data)}")
        # 'auto' settings (batch size, learning rate, mask_as_input) are resolved from the training trials,
        # spike_jitter_bins from the bin width.
        config, self.resolved_notes = resolve_data_defaults(config, np.asarray(train_data), bin_ms,
                                                            sample_validation_data)
        self.config = config
        self.device = resolve_device(config.device) if device is None else torch.device(device)
        torch.manual_seed(config.seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed)
        self.train_data = torch.as_tensor(np.asarray(train_data, dtype=np.float32), device=self.device)
        self.valid_data = torch.as_tensor(np.asarray(valid_data, dtype=np.float32), device=self.device)
        self.sample_validation_data = None
        if sample_validation_data is not None:
            self.sample_validation_data = torch.as_tensor(np.asarray(sample_validation_data, dtype=np.float32),
                                                          device=self.device)
        if self.valid_data.shape[0] == 0 and (self.sample_validation_data is None
                                              or bool(torch.isnan(self.sample_validation_data).all())):
            raise NeurodynError("nothing to validate on: no validation trials and no held-out entries of the "
                                "training trials (sample_validation_fraction)")
        num_neurons = self.train_data.shape[-1]
        self.observation_options = observation_class(config.observation).options_from_config(
            config, np.asarray(train_data, dtype=np.float32))
        observation = make_observation_model(config.observation, num_neurons, **self.observation_options)
        # Record resolved values (e.g. s_min: auto -> the number used) in the config that gets saved.
        resolved = {k: v for k, v in self.observation_options.items() if k in LfadsConfig.model_fields}
        if resolved:
            self.config = config = LfadsConfig(**{**config.model_dump(), **resolved})
        self.model = LFADS(config, num_neurons, observation).to(self.device)
        self.train_ext_input = ext_input_tensor(self.model, train_ext_input, self.train_data, "train_ext_input")
        self.valid_ext_input = ext_input_tensor(self.model, valid_ext_input, self.valid_data, "valid_ext_input")
        self.train_session = self._session_tensor(train_session, self.train_data, "train_session")
        self.valid_session = self._session_tensor(valid_session, self.valid_data, "valid_session")
        self._initialise_readout_bias()
        if self.model.is_stitched:
            initialise_stitched_model(self.model, np.asarray(train_data, dtype=np.float32),
                                      self.train_session.cpu().numpy(), train_condition)
        # Adam (torch's, see ``population_trainer``): moments in ``model.parameters()`` order, steps taken.
        self.exp_avg = [torch.zeros_like(parameter) for parameter in self.model.parameters()]
        self.exp_avg_sq = [torch.zeros_like(parameter) for parameter in self.model.parameters()]
        self.adam_steps = 0
        self.learning_rate = config.learning_rate_init
        self.plateau = Plateau()
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.valid_nll_smoothed: float | None = None
        self.best_valid_nll: float = math.inf
        self.best_epoch: int = -1
        self.best_model_state: dict[str, torch.Tensor] | None = None
        self.epochs_since_best = 0
        self.skipped_steps = 0
        self.notes: list[str] = []  # what a person should know about how training ended
        self._engine: PopulationTrainer | None = None  # the steps' machinery, built when first needed

    # -- set-up -------------------------------------------------------------------------------
    def _session_tensor(self, session: np.ndarray | None, data: torch.Tensor, name: str) -> torch.Tensor | None:
        """Each trial's session index as a tensor (stitched models only), checked against ``data``."""
        if not self.model.is_stitched:
            return None
        sessions = len(self.model.session_neurons)
        if session is None:
            raise NeurodynError(f"a model of {sessions} sessions needs {name} ({data.shape[0]},): each trial's session")
        session = np.asarray(session)
        if session.shape != (data.shape[0],) or session.min(initial=0) < 0 or session.max(initial=0) >= sessions:
            raise NeurodynError(f"{name} must hold one session index in [0, {sessions}) per trial "
                                f"({data.shape[0]},); got shape {session.shape}")
        return torch.as_tensor(session.astype(np.int64), device=self.device)

    def _initialise_readout_bias(self) -> None:
        """Start the readout at each neuron's mean observed value so early epochs learn structure, not scale."""
        data = self.train_data
        observed = ~torch.isnan(data)
        mean = torch.where(observed, data, torch.zeros_like(data)).sum((0, 1)) / observed.sum((0, 1)).clamp_min(1)
        bias = self.model.observation.initial_readout_bias(mean)
        if bias is not None:
            with torch.no_grad():
                self.model.readout.bias.copy_(bias.reshape(-1))

    def set_dtype(self, dtype: torch.dtype) -> None:
        """Compute in ``dtype`` from now on: model, data, measured inputs, Adam moments and best weights
        are converted (float64 lets tests compare implementations to tight tolerances; float32 is the
        default). The random streams are unchanged: each draw keeps the dtype it had."""
        self._release_engine()  # new tensors: the engine's views of the old ones would not follow
        self.model.to(dtype)
        self.train_data, self.valid_data = self.train_data.to(dtype), self.valid_data.to(dtype)
        if self.sample_validation_data is not None:
            self.sample_validation_data = self.sample_validation_data.to(dtype)
        if self.train_ext_input is not None:
            self.train_ext_input = self.train_ext_input.to(dtype)
            self.valid_ext_input = self.valid_ext_input.to(dtype)
        self.exp_avg = [moment.to(dtype) for moment in self.exp_avg]
        self.exp_avg_sq = [moment.to(dtype) for moment in self.exp_avg_sq]
        if self.best_model_state is not None:
            self.best_model_state = {key: value.to(dtype) if value.is_floating_point() else value
                                     for key, value in self.best_model_state.items()}

    @property
    def ramps_complete_epoch(self) -> int:
        return max(self.config.kl_increase_epochs, self.config.l2_increase_epochs)

    def set_hyperparameters(self, **updates: Any) -> None:
        """Change searchable hyperparameters mid-training (validated; architecture keys are refused)."""
        fixed = sorted(set(updates) - set(MUTABLE_HYPERPARAMETERS))
        if fixed:
            raise ValueError(f"cannot change {fixed} after the model is built")
        self.config = LfadsConfig(**{**self.config.model_dump(), **updates})
        if "learning_rate_init" in updates:
            # A new learning rate replaces the current one; any other change keeps the rate the
            # plateau schedule has decayed to.
            self.learning_rate = self.config.learning_rate_init
        self.model.set_keep_prob(self.config.keep_prob)
        self.model.observation.set_hyperparameters(self.config)

    # -- one epoch ----------------------------------------------------------------------------
    @property
    def engine(self) -> PopulationTrainer:
        """The population of one that runs this trainer's steps on its model's weights and Adam moments
        (built on first use with ``batch_threads`` shard threads)."""
        if self._engine is None:
            self._engine = PopulationTrainer([self], threads=self.batch_threads)
        return self._engine

    def _release_engine(self) -> None:
        """Drop the engine (before the model's tensors are replaced under it)."""
        if self._engine is not None:
            self._engine.release_graphs()
            self._engine = None

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training trials in shuffled batches; returns trial-weighted means of the terms."""
        self.model.train()
        return self.engine.train_epoch()[0]

    @property
    def batch_threads(self) -> int:
        """Threads that share each training batch (``batch_threads``; 'auto' = torch's CPU threads, 1 on a GPU)."""
        return default_threads(self.device) if self.config.batch_threads == "auto" else self.config.batch_threads

    @torch.no_grad()
    def validation_nll(self, data: torch.Tensor | None = None, ext_input: torch.Tensor | None = None,
                       session: torch.Tensor | None = None) -> float:
        """Mean NLL over observed entries using the posterior means (deterministic, no dropout, no CD).

        Default: the validation trials, their measured inputs and sessions; other ``data`` comes with
        its own ``ext_input`` ``(trials, T, ext_input_dim)`` when the model takes measured inputs, and
        ``session`` ``(trials,)`` for a stitched model."""
        self.model.eval()
        return self.engine.validation_nll(data, ext_input, session)[0]

    def step_epoch(self) -> dict[str, float]:
        """Train one epoch, validate, update the schedules and the best weights; returns the log row."""
        self.model.eval()  # (the steps run in the engine; this model's own forward is for inference)
        return self.engine.step_epoch()[0]

    def end_epoch(self, row: dict[str, float], valid_nll: float, best_weights: Callable[[], dict[str, torch.Tensor]],
                  seconds: float) -> dict[str, float]:
        """The bookkeeping after an epoch's validation: smoothed NLL, learning-rate schedule, best weights
        (``best_weights()`` gives a copy of the current ones) and patience; logs and returns ``row``.

        Shared with ``PopulationTrainer``, whose workers keep their bookkeeping in an ``LfadsTrainer``.
        """
        self.valid_nll_smoothed = smooth(self.valid_nll_smoothed, valid_nll)
        smoothed = self.valid_nll_smoothed if math.isfinite(self.valid_nll_smoothed) else math.inf
        config = self.config
        self.learning_rate = self.plateau.step(smoothed, self.learning_rate, config.learning_rate_decay,
                                               config.learning_rate_patience, config.learning_rate_stop)
        ramps_done = self.epoch >= self.ramps_complete_epoch
        if ramps_done and smoothed < self.best_valid_nll:
            self.best_valid_nll = smoothed
            self.best_epoch = self.epoch
            self.best_model_state = best_weights()
            self.epochs_since_best = 0
        elif ramps_done:
            self.epochs_since_best += 1
        row.update(valid_nll=valid_nll, valid_nll_smoothed=self.valid_nll_smoothed,
                   learning_rate=self.learning_rate, seconds=seconds)
        self.history.append(row)
        self.epoch += 1
        return row

    @property
    def should_stop(self) -> bool:
        """Early stopping: no better smoothed validation NLL for ``early_stopping_patience`` epochs after the ramps."""
        return self.epochs_since_best >= self.config.early_stopping_patience

    def fit(self, max_epochs: int | None = None, on_epoch: Callable[[dict[str, float]], None] | None = None,
            progress: bool = True, stop_requested: Callable[[], bool] | None = None) -> bool:
        """Train until ``max_epochs`` (default: the config's) or early stopping, then keep the best weights.

        ``stop_requested`` is asked after every epoch; when it says True, training stops there
        without touching the weights (the state can be saved and training continued later) and
        ``fit`` returns False. Returns True when training is complete.
        """
        from tqdm.auto import tqdm

        max_epochs = self.config.max_epochs if max_epochs is None else max_epochs
        with tqdm(total=max_epochs, initial=min(self.epoch, max_epochs), desc="training", unit="epoch",
                  disable=not progress, dynamic_ncols=True) as bar:
            while self.epoch < max_epochs and not self.should_stop:
                row = self.step_epoch()
                bar.update(1)
                bar.set_postfix(valid_nll=f"{row['valid_nll_smoothed']:.4f}", lr=f"{row['learning_rate']:.1e}")
                if on_epoch is not None:
                    on_epoch(row)
                if stop_requested is not None and stop_requested() and self.epoch < max_epochs:
                    return False
        self.restore_best()
        return True

    def restore_best(self) -> None:
        """Load the best weights seen after the ramps.

        When training ended before the KL/L2 ramps were complete there are none: the last epoch's
        weights (the ones trained with the most regularisation) are kept, recorded as the best, and
        ``notes`` says so.
        """
        if self.best_model_state is not None:
            self.model.load_state_dict(self.best_model_state)
            return
        if self.epoch == 0:
            return
        smoothed = self.valid_nll_smoothed if self.valid_nll_smoothed is not None else math.inf
        self.best_epoch, self.best_valid_nll = self.epoch - 1, smoothed
        self.best_model_state = _copied(self.model.state_dict())
        self.notes.append(f"training ended at epoch {self.epoch - 1}, before the KL/L2 ramps were complete (epoch "
                          f"{self.ramps_complete_epoch}); kept the last epoch's weights (smoothed validation NLL "
                          f"{smoothed:.5f}); raise max_epochs or shorten kl_increase_epochs/l2_increase_epochs")

    def reseed(self, seed: int) -> None:
        """Start a new random stream (batch order, masks, dropout, posterior samples) from ``seed``."""
        self.generator.manual_seed(int(seed) % (2 ** 63))

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly where it stopped.

        A deep copy: torch's ``state_dict`` tensors alias the live weights and Adam moments, and a
        PBT worker that loaded them would otherwise keep training another worker's optimiser state.
        """
        return _copied({
            "config": self.config.model_dump(),
            "observation_options": self.observation_options,
            "model": self.model.state_dict(),
            "adam": {"steps": self.adam_steps, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq},
            "learning_rate": self.learning_rate,
            "plateau": dataclasses.asdict(self.plateau),
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "history": list(self.history),
            "valid_nll_smoothed": self.valid_nll_smoothed,
            "best_valid_nll": self.best_valid_nll,
            "best_epoch": self.best_epoch,
            "best_model_state": self.best_model_state,
            "epochs_since_best": self.epochs_since_best,
            "skipped_steps": self.skipped_steps,
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` (the architecture must match; hyperparameters are taken from the state).
        Weights and moments are written in place (a population training this trainer sees them)."""
        self.config = LfadsConfig(**state["config"])
        self.model.load_state_dict(state["model"])
        self.model.set_keep_prob(self.config.keep_prob)
        self.model.observation.set_hyperparameters(self.config)
        if "optimizer" in state:  # written before 2026-12-07, in torch.optim's formats
            state = {**state, **_from_torch_optimizer(state["optimizer"], state["scheduler"])}
        adam = state["adam"]
        self.adam_steps = int(adam["steps"])
        with torch.no_grad():
            for moments, loaded in ((self.exp_avg, adam["exp_avg"]), (self.exp_avg_sq, adam["exp_avg_sq"])):
                for index, moment in enumerate(moments):
                    if loaded:
                        moment.copy_(loaded[index])
                    else:  # an older state, before any step
                        moment.zero_()
        self.learning_rate = float(state["learning_rate"])
        self.plateau = Plateau(**state["plateau"])
        self.generator.set_state(state["generator"].cpu() if hasattr(state["generator"], "cpu") else state["generator"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])
        self.valid_nll_smoothed = state["valid_nll_smoothed"]
        self.best_valid_nll = state["best_valid_nll"]
        self.best_epoch = state["best_epoch"]
        self.best_model_state = state["best_model_state"]
        self.epochs_since_best = state["epochs_since_best"]
        self.skipped_steps = state.get("skipped_steps", 0)


def _copied(node: Any) -> Any:
    """A deep copy of a state whose tensors are compact clones (``copy.deepcopy`` of a view copies the
    whole storage, and a population member's weights are views of every worker's stacked tensors)."""
    if isinstance(node, torch.Tensor):
        return node.detach().clone()
    if isinstance(node, dict):
        return {key: _copied(value) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_copied(value) for value in node)
    return copy.deepcopy(node)


def _from_torch_optimizer(optimizer: dict[str, Any], scheduler: dict[str, Any]) -> dict[str, Any]:
    """The ``adam``, ``learning_rate`` and ``plateau`` entries of a state from what an older state kept in
    ``torch.optim.Adam.state_dict()`` and ``ReduceLROnPlateau.state_dict()`` form."""
    entries = [optimizer["state"][index] for index in sorted(optimizer["state"])]
    steps = max((int(entry["step"]) for entry in entries), default=0)
    adam = {"steps": steps, "exp_avg": [e["exp_avg"] for e in entries], "exp_avg_sq": [e["exp_avg_sq"] for e in entries]}
    return {"adam": adam, "learning_rate": optimizer["param_groups"][0]["lr"],
            "plateau": {"best": scheduler["best"], "bad_epochs": scheduler["num_bad_epochs"]}}
