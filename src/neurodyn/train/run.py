"""``neurodyn train``: train one LFADS model on a seed-format file and write its outputs."""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurodyn.config import LfadsConfig
from neurodyn.data.atomic import write_text_atomic
from neurodyn.data.event_timing import append_unobserved_bins
from neurodyn.data.seed_format import NeuralDataset, split_trials
from neurodyn.errors import NeurodynError
from neurodyn.observation.registry import read_dataset_for
from neurodyn.lfads.model import LFADS
from neurodyn.observation.registry import make_observation_model
from neurodyn.train.inference import infer, infer_empirical_bayes
from neurodyn.train.outputs import (CHECKPOINT_NAME, CONFIG_NAME, load_checkpoint, save_checkpoint,
                                    write_resolved_config, write_split_output)
from neurodyn.train.trainer import LfadsTrainer

LOG_NAME = "train_log.csv"


@dataclass
class TrainResult:
    out_dir: Path
    trainer: LfadsTrainer
    train_idx: np.ndarray
    valid_idx: np.ndarray


def history_to_csv(history: list[dict[str, float]]) -> str:
    """The per-epoch log rows as CSV text."""
    buffer = io.StringIO()
    if history:
        writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    return buffer.getvalue()


def split_dataset(dataset: NeuralDataset, config: LfadsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/valid trial indices (condition-balanced when the file has ``condition``)."""
    return split_trials(dataset.num_trials, config.valid_ratio, config.seed, dataset.condition)


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


def read_model_dataset(data_path: str | Path, config: LfadsConfig) -> tuple[NeuralDataset, LfadsConfig]:
    """The data file as the model sees it, and the config with the settings taken from the file.

    Reads and checks the file for the observation model, takes its ``heldout_neurons`` (unless the
    config sets its own) and resolves ``event_delay_bins`` = d. With d > 0 each trial is followed by
    d unobserved bins, so the model runs d bins past the data; ``write_model_outputs`` then drops
    the first d bins of every output, leaving rates at bin t that were fit to the events of bin
    t + d (``data.event_timing``). The model never sees ``truth`` or ``latents``, so they are dropped.
    """
    dataset = read_dataset_for(data_path, config.observation)
    config = with_data_heldout_neurons(config, dataset)
    delay = resolve_event_delay(config, dataset)
    if delay >= dataset.num_samples:
        raise NeurodynError(f"{dataset.source}: event_delay_bins {delay} is not shorter than the trials "
                            f"({dataset.num_samples} bins)")
    config = LfadsConfig(**{**config.model_dump(), "event_delay_bins": delay})
    model_data = append_unobserved_bins(dataset.data, delay)
    return dataclasses.replace(dataset, data=model_data, truth=None, latents=None), config


def write_model_outputs(out_dir: Path, model: LFADS, dataset: NeuralDataset, train_idx: np.ndarray,
                        valid_idx: np.ndarray, config: LfadsConfig) -> None:
    """Inferred outputs of both splits: ``train_output.h5`` and ``valid_output.h5``.

    Posterior sample-and-average, or with ``inference: empirical_bayes`` the empirical-Bayes outputs
    against the training trials (leave-one-out for the training trials themselves), the
    sample-and-average rates then kept as ``rates_sample_average``. Every output drops the first
    ``event_delay_bins`` bins (see ``read_model_dataset``), so it has the data file's bins.
    """
    delay = int(config.event_delay_bins)  # resolved by read_model_dataset
    for split, idx in (("train", train_idx), ("valid", valid_idx)):
        inferred = infer(model, dataset.data[idx], config.posterior_samples, config.valid_batch_size, config.seed)
        if config.inference == "empirical_bayes":
            inferred["rates_sample_average"] = inferred["rates"]
            inferred.update(infer_empirical_bayes(
                model, dataset.data[idx], dataset.data[train_idx], config.empirical_bayes_samples, config.seed,
                data_ids=idx, reference_ids=train_idx, batch_size=config.valid_batch_size))
        # Model bin t + d was fit to the events of data bin t + d, which report the spikes of bin t.
        inferred = {name: value[:, delay:] for name, value in inferred.items()}
        write_split_output(out_dir / f"{split}_output.h5", inferred, idx,
                           attrs={"observation": config.observation, "posterior_samples": config.posterior_samples,
                                  "inference": config.inference, "event_delay_bins": config.event_delay_bins})


def train_model(config: LfadsConfig, data_path: str | Path, out_dir: str | Path, progress: bool = True) -> TrainResult:
    """Train one LFADS model and write everything it produces to ``out_dir``.

    Parameters
    ----------
    config : LfadsConfig
        Model, training and inference settings (``LfadsConfig()`` gives the defaults).
    data_path : str or Path
        The h5 data file: ``data`` ``(num_neurons, num_samples, num_trials)`` as h5py reads it,
        NaN where a neuron-time point was not observed.
    out_dir : str or Path
        Output folder, created if needed; the files are written straight into it.
    progress : bool, default True
        Show a progress bar.

    Returns
    -------
    TrainResult
        ``out_dir``, the ``trainer`` (its ``history``, ``best_epoch``, ``best_valid_nll`` and final
        ``config``), and ``train_idx`` / ``valid_idx``, the rows of the data file in each split.

    Notes
    -----
    Writes ``checkpoint.pt`` (best weights), ``config.yaml`` (resolved config), ``train_log.csv``
    (one row per epoch, rewritten as training goes) and ``train_output.h5`` / ``valid_output.h5``
    (``rates`` ``(num_neurons, num_samples, n)`` in expected counts per bin, ``factors``,
    ``trial_idx``; see the file-formats page of the documentation).
    """
    out_dir = Path(out_dir)
    dataset, config = read_model_dataset(data_path, config)
    train_idx, valid_idx = split_dataset(dataset, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = LfadsTrainer(config, dataset.data[train_idx], dataset.data[valid_idx])
    # After the trainer: it resolves settings from the data (e.g. s_min: auto -> the value used).
    write_resolved_config(out_dir / CONFIG_NAME, trainer.config)
    log_path = out_dir / LOG_NAME
    trainer.fit(on_epoch=lambda row: write_text_atomic(log_path, history_to_csv(trainer.history)), progress=progress)
    save_checkpoint(out_dir / CHECKPOINT_NAME, {
        "trainer": trainer.state_dict(), "num_neurons": dataset.num_neurons,
        "train_idx": train_idx, "valid_idx": valid_idx, "data_path": str(data_path),
    })
    write_model_outputs(out_dir, trainer.model, dataset, train_idx, valid_idx, trainer.config)
    return TrainResult(out_dir, trainer, train_idx, valid_idx)


def load_trained_model(run_dir: str | Path, device: str = "cpu") -> tuple[LFADS, LfadsConfig]:
    """The model saved by ``train_model`` (its best weights) and its config.

    Parameters
    ----------
    run_dir : str or Path
        A ``neurodyn train`` output folder, or a PBT run's ``pbt_best_model/``, holding ``checkpoint.pt``.
    device : str, default "cpu"
        Where to put the model: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns
    -------
    model : LFADS
        The trained model in evaluation mode (use ``neurodyn.train.inference.infer`` to run it on data).
    config : LfadsConfig
        The config it was trained with, values resolved from the data included.
    """
    checkpoint = load_checkpoint(Path(run_dir) / CHECKPOINT_NAME)
    state = checkpoint["trainer"]
    config = LfadsConfig(**state["config"])
    observation = make_observation_model(config.observation, checkpoint["num_neurons"],
                                         **state.get("observation_options", {}))
    model = LFADS(config, checkpoint["num_neurons"], observation)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config
