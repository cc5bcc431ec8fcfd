"""``neurodyn train``: train one LFADS model on a data file and write its outputs.

The folder's files are named and written by ``neurodyn.runs``. A run is identified by its config
and the content of its data file (``run.json``); re-running the same command continues an
interrupted run (from ``resume.safetensors``, saved when training is stopped by Ctrl-C or
SIGTERM, and every few minutes) or reports that it has finished; anything else in the folder is
refused unless ``overwrite`` is given.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from neurodyn.config import LfadsConfig, config_to_yaml
from neurodyn.data.atomic import write_text_atomic
from neurodyn.data.continuous import file_attributes
from neurodyn.data.event_timing import append_unobserved_bins
from neurodyn.data.seed_format import NeuralDataset, hold_out_entries, split_sample_validation, split_train_valid_test
from neurodyn.data.sessions import SessionLayout, combine_sessions, session_names
from neurodyn.errors import NeurodynError, RunInterrupted
from neurodyn.lfads.model import LFADS
from neurodyn.lfads.stacked import hide_from_encoders
from neurodyn.observation.registry import read_dataset_for
from neurodyn.runs.checkpoint import build_model, load_checkpoint, save_checkpoint
from neurodyn.runs.identity import (RunIdentity, RunLock, join_data_paths, mark_status, open_run_folder, read_run_info,
                                    split_data_paths)
from neurodyn.runs.layout import TrainLayout
from neurodyn.runs.continuous_output import write_continuous_output
from neurodyn.runs.outputs import write_split_output
from neurodyn.runs.tables import rows_to_csv
from neurodyn.runs.tensorboard_log import TrainingBoard, require_tensorboard
from neurodyn.train.defaults import sample_validation_share
from neurodyn.train.inference import drop_leading_bins, infer, infer_empirical_bayes, select_neurons
from neurodyn.train.trainer import LfadsTrainer

# Seconds between resumable states saved while training (so a killed run loses at most this much).
RESUME_SAVE_SECONDS = 300.0


@dataclass(frozen=True)
class TrialSplit:
    """The trials' roles (indices into the data file, sorted): trained on, chosen by, and held out.

    Test trials are never trained on nor used for any choice (early stopping, learning-rate decay,
    PBT fitness); they only get outputs.
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    def with_outputs(self) -> list[tuple[str, np.ndarray]]:
        """(split name, trials) of every split that gets an output file (test only when it has trials)."""
        return [(name, idx) for name, idx in (("train", self.train), ("valid", self.valid), ("test", self.test))
                if name != "test" or idx.size]


@dataclass
class TrainResult:
    out_dir: Path
    trainer: LfadsTrainer | None       # None when the run had already finished
    split: TrialSplit
    messages: list[str] = field(default_factory=list)
    # Seconds of this command spent in training epochs and in writing the outputs (0 if none).
    training_seconds: float = 0.0
    output_seconds: float = 0.0

    @property
    def train_idx(self) -> np.ndarray:
        return self.split.train

    @property
    def valid_idx(self) -> np.ndarray:
        return self.split.valid


def split_dataset(dataset: NeuralDataset, config: LfadsConfig) -> TrialSplit:
    """The file's ``split`` when it has one, else a seeded train/valid split (condition-balanced when the
    file has ``condition``) and no test trials."""
    return TrialSplit(*split_train_valid_test(dataset, config.valid_ratio, config.seed))


def with_data_ext_input_dim(config: LfadsConfig, dataset: NeuralDataset) -> LfadsConfig:
    """The config with ``ext_input_dim`` taken from the file's ``ext_input`` (refused when it disagrees)."""
    if config.ext_input_dim == dataset.ext_input_dim:
        return config
    if config.ext_input_dim == 0:
        return LfadsConfig(**{**config.model_dump(), "ext_input_dim": dataset.ext_input_dim})
    raise NeurodynError(f"{dataset.source}: the config sets ext_input_dim {config.ext_input_dim} but the file's "
                        f"'ext_input' has {dataset.ext_input_dim} input(s) per bin"
                        + (" (no key 'ext_input')" if dataset.ext_input is None else ""))


def delay_ext_input(ext_input: np.ndarray | None, delay: int) -> np.ndarray | None:
    """Measured inputs on the model's time axis when it runs ``delay`` bins behind the data: model bin
    t + d reports data time t, so the inputs move d bins later (zeros in the first d bins)."""
    if ext_input is None or delay == 0:
        return ext_input
    pad = np.zeros((ext_input.shape[0], delay, ext_input.shape[2]), dtype=ext_input.dtype)
    return np.concatenate([pad, ext_input], axis=1)


def with_data_heldout_neurons(config: LfadsConfig, dataset: NeuralDataset) -> LfadsConfig:
    """The config with the data file's ``heldout_neurons`` when the config does not set its own."""
    if config.heldout_neurons or dataset.heldout_neurons is None or not dataset.heldout_neurons.size:
        return config
    return LfadsConfig(**{**config.model_dump(), "heldout_neurons": dataset.heldout_neurons.tolist()})


def resolve_event_delay(config: LfadsConfig, dataset: NeuralDataset) -> int:
    """``event_delay_bins`` as a number: the config's, or for 'auto' the file's ``event_delay_ms`` over
    its ``bin_ms``, rounded (0 when the file has no ``event_delay_ms``)."""
    if config.event_delay_bins != "auto":
        return int(config.event_delay_bins)
    if "event_delay_ms" not in dataset.attrs:
        return 0
    if "bin_ms" not in dataset.attrs:
        raise NeurodynError(f"{dataset.source}: has attribute 'event_delay_ms' but no 'bin_ms' (the bin width in ms) "
                            "to turn it into bins; add 'bin_ms' or set event_delay_bins in the config")
    delay_ms, bin_ms = float(dataset.attrs["event_delay_ms"]), float(dataset.attrs["bin_ms"])
    if not (delay_ms >= 0 and bin_ms > 0):
        raise NeurodynError(f"{dataset.source}: attributes 'event_delay_ms' ({delay_ms}) and 'bin_ms' ({bin_ms}) "
                            "must be >= 0 and > 0")
    return int(round(delay_ms / bin_ms))


def describe_event_delay(config: LfadsConfig, attrs: dict, source: str) -> str | None:
    """A line for the log about the event delay training removes, or None when there is nothing to say.

    ``config`` has ``event_delay_bins`` resolved; ``attrs`` are the data file's attributes. Calcium events
    (ZIG) from a file without ``event_delay_ms`` get no correction, which is worth saying.
    """
    delay = int(config.event_delay_bins)
    if delay:
        details = [f"event_delay_ms {float(attrs['event_delay_ms']):.1f}"] if "event_delay_ms" in attrs else \
            ["event_delay_bins in the config"]
        kinetics = [f"{name} {float(attrs[key]):.0f} ms" for key, name in
                    (("indicator_decay_ms", "decay"), ("indicator_rise_ms", "rise")) if key in attrs]
        if kinetics:
            details.append("indicator " + ", ".join(kinetics))
        if "event_kinetics_source" in attrs:
            details.append(str(attrs["event_kinetics_source"]))
        return f"event delay of {delay} bin{'s' if delay != 1 else ''} removed ({'; '.join(details)})"
    if config.observation == "zig" and config.event_delay_bins == 0 and "event_delay_ms" not in attrs:
        return (f"no event-delay correction: {source} has no attribute 'event_delay_ms' (calcium events trail the "
                "spikes they report; 'neurodyn prepare 2p' computes it, or set event_delay_bins)")
    return None


def read_model_dataset(data_path: str | Path, config: LfadsConfig) -> tuple[NeuralDataset, LfadsConfig]:
    """The data file as the model sees it, and the config with the settings taken from the file.

    Reads and checks the file for the observation model, takes its ``heldout_neurons`` (unless the
    config sets its own), resolves ``forward_bins`` (``resolve_forward_bins``) and ``event_delay_bins`` = d. With d > 0 each trial is followed by
    d unobserved bins, so the model runs d bins past the data; ``write_model_outputs`` then drops
    the first d bins of every output, leaving rates at bin t that were fit to the events of bin
    t + d (``data.event_timing``). The model never sees ``truth`` or ``latents``, so they are dropped.
    """
    dataset = read_dataset_for(data_path, config.observation)
    config = with_data_ext_input_dim(with_data_heldout_neurons(config, dataset), dataset)
    delay = resolve_event_delay(config, dataset)
    if delay >= dataset.num_samples:
        raise NeurodynError(f"{dataset.source}: event_delay_bins {delay} is not shorter than the trials "
                            f"({dataset.num_samples} bins)")
    config = LfadsConfig(**{**config.model_dump(), "event_delay_bins": delay,
                            "forward_bins": resolve_forward_bins(config, dataset)})
    check_forward_bins(config, dataset)
    model_data = append_unobserved_bins(dataset.data, delay)
    return dataclasses.replace(dataset, data=model_data, ext_input=delay_ext_input(dataset.ext_input, delay),
                               truth=None, latents=None), config


def as_path_list(data_paths) -> list[Path]:
    """One data file or several (stitched sessions) as a list of paths."""
    return [Path(data_paths)] if isinstance(data_paths, (str, Path)) else [Path(p) for p in data_paths]


@dataclass
class ModelData:
    """What a model trains on: the data as the model sees it, the config with the settings the data
    decide, the trials' roles and, for several sessions, where each session sits.

    With several data files ``dataset`` spans the union of the sessions' neurons
    (``neurodyn.data.sessions``); its ``condition`` (labels taken as naming the same conditions in
    every session) only initialises the read-in layers.
    """

    dataset: NeuralDataset
    config: LfadsConfig
    split: TrialSplit
    sessions: SessionLayout | None = None

    def session_ids(self, idx: np.ndarray) -> np.ndarray | None:
        """The session of each trial of ``idx`` (None for one session)."""
        return None if self.sessions is None else self.sessions.session_of_trial()[np.asarray(idx)]

    @property
    def bin_ms(self) -> float | None:
        """The data file's bin width in ms (its attribute ``bin_ms``), None when it does not record one."""
        value = self.dataset.attrs.get("bin_ms")
        return None if value is None else float(value)

    def trainer_inputs(self) -> dict:
        """The arrays ``LfadsTrainer`` (and a PBT worker) takes besides the config, made once per run, so
        every PBT worker trains and is scored on the same entries.

        With ``validation: trials`` the training trials train and the validation trials validate; a
        seeded share of the training entries (``sample_validation_share``) may be held out of
        ``train_data`` into ``sample_validation_data`` (``split_sample_validation``) and scored too.
        With ``validation: entries`` the validation trials join the training trials (after them) and
        only held-out entries validate: that share of every trial's entries, and the validation
        trials' held-out neurons and forward bins, which the model never sees there, so co-bps and
        fp-bps on those trials stay held-out scores; ``valid_data`` then has no trials."""
        ext, split, config = self.dataset.ext_input, self.split, self.config
        stitched = self.sessions is not None
        entries = config.validation == "entries"
        train_idx = np.concatenate([split.train, split.valid]) if entries else split.train
        valid_idx = split.valid[:0] if entries else split.valid
        train_data, held_out = self.dataset.data[train_idx], None
        share = sample_validation_share(config)
        if share > 0:
            train_data, held_out = split_sample_validation(train_data, share, config.seed)
        if entries:
            # The entries no encoder sees (the model's own rule), on the validation trials only.
            neurons = torch.ones(train_data.shape[2])
            neurons[list(config.heldout_neurons)] = 0.0
            hidden = np.zeros(train_data.shape, dtype=bool)
            hidden[split.train.size:] = hide_from_encoders(neurons, train_data.shape[1],
                                                           int(config.forward_bins)).numpy() == 0
            train_data, held_out = hold_out_entries(train_data, held_out, hidden)
        return {"train_data": train_data, "valid_data": self.dataset.data[valid_idx],
                "sample_validation_data": held_out,
                "train_ext_input": None if ext is None else ext[train_idx],
                "valid_ext_input": None if ext is None else ext[valid_idx],
                "train_session": self.session_ids(train_idx), "valid_session": self.session_ids(valid_idx),
                "train_condition": self.dataset.condition[train_idx]
                if stitched and self.dataset.condition is not None else None}


def describe_validation(data: ModelData) -> str | None:
    """One line on what validates a run with ``validation: entries`` (None with validation trials)."""
    config = data.config
    if config.validation != "entries":
        return None
    unseen = [f"{len(config.heldout_neurons)} held-out neurons"] if config.heldout_neurons else []
    unseen += [f"{int(config.forward_bins)} forward bins"] if int(config.forward_bins) else []
    share = sample_validation_share(config)
    scored = ([f"their {' and '.join(unseen)} (never seen)"] if unseen else []) \
        + ([f"{share:.0%} of every training trial's entries"] if share else [])
    return (f"validation: entries: the {data.split.valid.size} validation trials train too"
            + (f" but for their {' and '.join(unseen)}" if unseen else "")
            + f"; the validation NLL scores {' and '.join(scored) if scored else 'nothing'}")


def read_model_data(data_paths, config: LfadsConfig) -> ModelData:
    """One data file (``read_model_dataset`` and ``split_dataset``) or several sessions stitched into
    one model.

    Each session is read and checked as one file would be, and split on its own (its ``split`` key,
    or the seeded ``valid_ratio`` split of its trials); the sessions must agree on the trial length,
    bin width, measured inputs and event delay. Their ``heldout_neurons`` become combined columns
    and ``session_neurons`` records each session's neurons.
    """
    paths = as_path_list(data_paths)
    if len(paths) == 1:
        if config.session_neurons:
            raise NeurodynError(f"the config sets session_neurons {list(config.session_neurons)} but one data file "
                                f"({paths[0]}) was given; leave session_neurons out (it is set from the files)")
        dataset, config = read_model_dataset(paths[0], config)
        return ModelData(dataset, config, split_dataset(dataset, config))
    if config.heldout_neurons:
        raise NeurodynError("heldout_neurons in the config cannot say which session they belong to; with several "
                            "data files put each session's 'heldout_neurons' in its file")
    names = session_names(paths)
    datasets, configs = zip(*(read_model_dataset(path, config) for path in paths))
    delays = [int(c.event_delay_bins) for c in configs]
    for path, delay in zip(paths, delays):
        if delay != delays[0]:
            raise NeurodynError(f"{path}: an event delay of {delay} bins but {paths[0]} has {delays[0]}; sessions of "
                                "one model share it (set event_delay_bins in the config)")
    combined, layout = combine_sessions(list(datasets), names)
    if config.session_neurons and list(config.session_neurons) != list(layout.num_neurons):
        raise NeurodynError(f"the config sets session_neurons {list(config.session_neurons)} but the data files have "
                            f"{list(layout.num_neurons)} neurons; leave session_neurons out")
    if all(d.condition is not None for d in datasets):
        combined.condition = np.concatenate([d.condition for d in datasets])
    config = LfadsConfig(**{**configs[0].model_dump(), "heldout_neurons": [] if combined.heldout_neurons is None
                            else combined.heldout_neurons.tolist(), "session_neurons": list(layout.num_neurons)})
    splits = [split_dataset(d, config) for d in datasets]
    split = TrialSplit(*(np.concatenate([getattr(part, role) + offset for part, offset in
                                         zip(splits, layout.trial_offsets)]) for role in ("train", "valid", "test")))
    return ModelData(combined, config, split, layout)


def describe_sessions(data: ModelData) -> str:
    """A line for the log: the sessions stitched into one model and their trials."""
    sessions, split = data.sessions, data.split
    parts = [f"{name} ({sessions.num_neurons[s]} neurons, {sessions.local_trials(s, split.train).size} train / "
             f"{sessions.local_trials(s, split.valid).size} valid trials)" for s, name in enumerate(sessions.names)]
    return f"stitching {sessions.num_sessions} sessions: " + ", ".join(parts)


def session_folders(layout: TrainLayout, sessions: SessionLayout | None) -> list[str]:
    """The session folders a train folder may hold: this run's sessions and those of the run it holds
    (named in its ``run.json``), so ``--overwrite`` removes the outputs of either."""
    names = list(sessions.names) if sessions is not None else []
    recorded = read_run_info(layout.run_info) or {}
    earlier = split_data_paths(str(recorded.get("data_path", "")))
    if len(earlier) > 1:
        names += [Path(path).stem for path in earlier if Path(path).stem not in names]
    return names


def resolve_forward_bins(config: LfadsConfig, dataset: NeuralDataset) -> int:
    """``forward_bins`` as a number: the config's, or for 'auto' the data file's attribute ``forward_bins``
    (written by ``neurodyn prepare nlb``), else 0."""
    if config.forward_bins != "auto":
        return int(config.forward_bins)
    value = dataset.attrs.get("forward_bins", 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise NeurodynError(f"{dataset.source}: attribute 'forward_bins' must be a whole number of bins >= 0; "
                            f"got {value!r}")
    return int(value)


def check_forward_bins(config: LfadsConfig, dataset: NeuralDataset) -> None:
    """Refuse a ``forward_bins`` the data file's trials cannot hold (``event_delay_bins`` resolved)."""
    if not config.forward_bins:
        return
    if config.forward_bins >= dataset.num_samples:
        raise NeurodynError(f"{dataset.source}: forward_bins {config.forward_bins} is not shorter than the trials "
                            f"({dataset.num_samples} bins); the encoders must see some bins of every trial")
    if int(config.event_delay_bins):
        raise NeurodynError(f"{dataset.source}: forward_bins cannot be combined with an event delay "
                            f"(event_delay_bins {int(config.event_delay_bins)}: the model runs behind the data, "
                            "so its last bins are not the data's); set one of them to 0")


def output_attributes(config: LfadsConfig, dataset: NeuralDataset) -> dict:
    """The attributes every output file carries: how its arrays were made, and the bin width when known."""
    attrs = {"observation": config.observation, "posterior_samples": config.posterior_samples,
             "inference": config.inference, "event_delay_bins": int(config.event_delay_bins),
             "forward_bins": int(config.forward_bins), "validation": config.validation}
    if config.inference == "refined":
        attrs["refinement_steps"] = int(config.refinement_steps)
    if "bin_ms" in dataset.attrs:
        attrs["bin_ms"] = float(dataset.attrs["bin_ms"])
    return attrs


def infer_outputs(model: LFADS, dataset: NeuralDataset, idx: np.ndarray, config: LfadsConfig,
                  reference_idx: np.ndarray | None = None, session: int | None = None) -> dict[str, np.ndarray]:
    """The outputs of trials ``idx`` of a dataset as ``read_model_dataset`` gives it, on the data file's bins.

    Posterior sample-and-average (of each trial's refined posterior with ``inference: refined``), or
    with ``inference: empirical_bayes`` the empirical-Bayes outputs
    against the ``reference_idx`` trials (the training trials; each trial is left out of its own
    prior), the sample-and-average rates then kept as ``rates_sample_average``. The first
    ``event_delay_bins`` bins are dropped (see ``read_model_dataset``). A stitched model takes the
    ``session`` of the trials (all of ``idx`` and ``reference_idx`` belong to it).
    """
    ext = None if dataset.ext_input is None else dataset.ext_input[idx]
    inferred = infer(model, dataset.data[idx], config.posterior_samples, config.valid_batch_size, config.seed,
                     ext_input=ext, write_generator_states=config.write_generator_states, session=session,
                     refinement_steps=config.refinement_steps if config.inference == "refined" else 0)
    if config.inference == "empirical_bayes":
        if reference_idx is None:
            raise NeurodynError("empirical Bayes needs the training trials as the prior's reference")
        inferred["rates_sample_average"] = inferred["rates"]
        reference_ext = None if dataset.ext_input is None else dataset.ext_input[reference_idx]
        inferred.update(infer_empirical_bayes(
            model, dataset.data[idx], dataset.data[reference_idx], config.empirical_bayes_samples, config.seed,
            data_ids=idx, reference_ids=reference_idx, batch_size=config.valid_batch_size, ext_input=ext,
            reference_ext_input=reference_ext, write_generator_states=config.write_generator_states,
            session=session))
    # Model bin t + d was fit to the events of data bin t + d, which report the spikes of bin t.
    return drop_leading_bins(inferred, int(config.event_delay_bins))


def write_model_outputs(out_dir: Path, model: LFADS, dataset: NeuralDataset, split: TrialSplit,
                        config: LfadsConfig, sessions: SessionLayout | None = None) -> None:
    """Inferred outputs of every split: ``train_output.h5``, ``valid_output.h5`` and, when the file names
    test trials, ``test_output.h5`` (see ``infer_outputs``; ``event_delay_bins`` resolved).

    For several sessions each goes to ``out_dir/<session>/``: its own trials (``trial_idx`` indexing
    its file) and neurons, inferred through its read-in, empirical Bayes against its own training trials.
    A data file of a continuous session (``neurodyn prepare continuous``) also gets its windows merged
    into ``continuous_output.h5`` beside them (``runs.continuous_output``).
    """
    layout = TrainLayout(out_dir)
    if sessions is None:
        for name, idx in split.with_outputs():
            inferred = infer_outputs(model, dataset, idx, config, split.train)
            write_split_output(layout.output(name), inferred, idx, attrs=output_attributes(config, dataset))
        write_continuous_output(layout.root, dataset.attrs, dataset.source)
        return
    for s, session_name in enumerate(sessions.names):
        offset, neurons = sessions.trial_offsets[s], sessions.neurons(s)
        reference = sessions.local_trials(s, split.train) + offset
        for name, idx in split.with_outputs():
            local = sessions.local_trials(s, idx)
            if name == "test" and not local.size:
                continue
            inferred = infer_outputs(model, dataset, local + offset, config, reference, session=s)
            inferred = select_neurons(inferred, neurons)
            attrs = {**output_attributes(config, dataset), "session": session_name, "data_path": sessions.sources[s]}
            write_split_output(layout.session(session_name).output(name), inferred, local, attrs=attrs)
        write_continuous_output(layout.session(session_name).root, file_attributes(sessions.sources[s]),
                                sessions.sources[s])


def time_outputs(model: LFADS, dataset: NeuralDataset, split: TrialSplit, config: LfadsConfig,
                 sessions: SessionLayout | None = None, sample_trials: int = 32) -> float:
    """Seconds that ``write_model_outputs`` would spend inferring every split's trials with ``config``'s
    inference, timed on ``sample_trials`` of them (spread over the splits; the first session's when
    several are stitched) and scaled to all. Torch's random state is left as it was."""
    import torch

    outputs = np.concatenate([idx for _, idx in split.with_outputs()])
    session, reference = None, split.train
    if sessions is not None:  # the first session's trials, through its read-in
        session = 0
        offset = sessions.trial_offsets[0]
        candidates = sessions.local_trials(0, outputs) + offset
        reference = sessions.local_trials(0, split.train) + offset
    else:
        candidates = outputs
    step = max(1, candidates.size // max(1, sample_trials))
    sample = np.sort(candidates[::step][:sample_trials])
    with torch.random.fork_rng(devices=[]):
        start = time.perf_counter()
        infer_outputs(model, dataset, sample, config, reference, session=session)
        seconds = time.perf_counter() - start
    return seconds * outputs.size / max(1, sample.size)


def checkpoint_state(trainer_state: dict, data: ModelData, data_paths) -> dict:
    """What ``checkpoint.safetensors`` (and ``resume.safetensors``) holds: the trainer state, the data's
    shape and bin width (what ``neurodyn infer`` checks new data against), the split and, for several
    sessions, their layout (names, files, neurons, trials)."""
    dataset, split = data.dataset, data.split
    state = {"trainer": trainer_state, "num_neurons": dataset.num_neurons, "num_samples": dataset.num_samples,
             "bin_ms": float(dataset.attrs["bin_ms"]) if "bin_ms" in dataset.attrs else None,
             "train_idx": np.asarray(split.train), "valid_idx": np.asarray(split.valid),
             "test_idx": np.asarray(split.test), "data_path": join_data_paths(as_path_list(data_paths))}
    if data.sessions is not None:
        state["sessions"] = data.sessions.to_dict()
    return state


def train_model(config: LfadsConfig, data_path, out_dir: str | Path, progress: bool = True,
                overwrite: bool = False, stop_requested: Callable[[], bool] | None = None,
                echo: Callable[[str], None] = print) -> TrainResult:
    """Train on ``data_path``; write the resolved config, CSV log, checkpoint and outputs to ``out_dir``.

    Parameters
    ----------
    config
        The model and training settings.
    data_path
        The data file (``data`` ``(num_neurons, num_samples, num_trials)``, optional keys), or a list
        of several: sessions stitched into one model (``read_model_data``), whose outputs go to
        ``out_dir/<file stem>/``.
    out_dir
        The run's folder. A folder holding this run (same config, same data content) continues it
        or reports that it has finished; a folder holding another run is refused unless
        ``overwrite``.
    progress
        Show a progress bar.
    overwrite
        Replace a run already in ``out_dir`` (only the files a run owns are removed).
    stop_requested
        Asked after every epoch; True stops training there, saves ``resume.safetensors`` and
        raises ``RunInterrupted`` (the same call later continues to the same result).
    echo
        Where lines for the user go.

    Returns
    -------
    TrainResult
        The folder, the trainer (None when the run had already finished), the split and messages.
    """
    with RunLock(out_dir):
        return _train_model(config, data_path, out_dir, progress, overwrite, stop_requested, echo)


def _train_model(config: LfadsConfig, data_path, out_dir: str | Path, progress: bool, overwrite: bool,
                 stop_requested: Callable[[], bool] | None, echo: Callable[[str], None]) -> TrainResult:
    layout = TrainLayout(out_dir)
    if config.tensorboard:
        require_tensorboard()
    paths = as_path_list(data_path)
    identity = RunIdentity.of("train", config.model_dump(), paths, defaults=LfadsConfig().model_dump())
    data = read_model_data(paths, config)
    dataset, model_config, split = data.dataset, data.config, data.split
    decision = open_run_folder(layout.root, layout.owned_entries(session_folders(layout, data.sessions)), identity,
                               overwrite)
    messages = [decision.message] if decision.message else []
    if data.sessions is not None and decision.action == "start":
        messages.append(describe_sessions(data))
    if decision.action != "finished":
        messages += [note for note in (describe_event_delay(model_config, dataset.attrs, join_data_paths(paths)),
                                       describe_validation(data)) if note]
    for line in messages:
        echo(line)
    if decision.action == "finished":
        return TrainResult(layout.root, None, split, messages)
    trainer = LfadsTrainer(model_config, bin_ms=data.bin_ms, **data.trainer_inputs())
    if decision.action == "continue":
        if layout.resume.is_file():
            trainer.load_state_dict(load_checkpoint(layout.resume)["trainer"])
            messages.append(f"resuming from epoch {trainer.epoch} ({layout.resume.name})")
        else:
            messages.append(f"no resumable state in {layout.root}; training from epoch 0")
        echo(messages[-1])
    # After the trainer: it resolves settings from the data (e.g. s_min: auto -> the value used).
    write_text_atomic(layout.config, config_to_yaml(trainer.config))
    if decision.action == "start":
        for note in trainer.resolved_notes:
            echo(note)
    last_save = [time.monotonic()]

    def save_resumable() -> None:
        save_checkpoint(layout.resume, checkpoint_state(trainer.state_dict(), data, paths))
        last_save[0] = time.monotonic()

    board = TrainingBoard(layout.tensorboard) if trainer.config.tensorboard else None

    def after_epoch(row: dict) -> None:
        write_text_atomic(layout.train_log, rows_to_csv(trainer.history))
        if board is not None:
            board.epoch(row)
        if time.monotonic() - last_save[0] > RESUME_SAVE_SECONDS:
            save_resumable()

    clock = time.perf_counter()
    try:
        complete = trainer.fit(on_epoch=after_epoch, progress=progress, stop_requested=stop_requested)
    finally:
        if board is not None:
            board.close()
    training_seconds = time.perf_counter() - clock
    if not complete:
        save_resumable()
        mark_status(layout.root, identity, "interrupted", epoch=trainer.epoch)
        raise RunInterrupted(f"interrupted after epoch {trainer.epoch - 1}: saved a resumable state in "
                             f"{layout.resume}; run the same command again to continue")
    clock = time.perf_counter()
    save_checkpoint(layout.checkpoint, checkpoint_state(trainer.state_dict(), data, paths))
    write_model_outputs(layout.root, trainer.model, dataset, split, trainer.config, data.sessions)
    output_seconds = time.perf_counter() - clock
    layout.resume.unlink(missing_ok=True)
    mark_status(layout.root, identity, "finished", epochs=trainer.epoch, best_epoch=trainer.best_epoch)
    for note in trainer.notes:
        echo(f"note: {note}")
    return TrainResult(layout.root, trainer, split, messages + trainer.notes, training_seconds, output_seconds)


def load_trained_model(run_dir: str | Path, device: str = "cpu") -> tuple[LFADS, LfadsConfig]:
    """The model a run saved (its best weights) and its config.

    Parameters
    ----------
    run_dir
        A ``neurodyn train`` folder or a ``pbt_best_model`` folder.
    device
        Where to put the model.

    Returns
    -------
    (LFADS, LfadsConfig)
        The model in eval mode and its resolved config.
    """
    checkpoint = load_checkpoint(TrainLayout(run_dir).checkpoint)
    model, config = build_model(checkpoint["trainer"], int(checkpoint["num_neurons"]))
    return model.to(device).eval(), config
