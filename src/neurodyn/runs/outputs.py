"""The ``<split>_output.h5`` files: written after training, read by evaluation and export.

File layout (the data file's orientation, features first and trials last): ``rates``
``(num_neurons, num_samples, n)`` expected value per bin; ``factors`` ``(factors_dim,
num_samples, n)``; ``trial_idx`` ``(n,)`` indices into the data file's trial axis;
``rates_posterior_mean`` like ``rates``; the observation model's named parameters (e.g. ZIG ``q``,
``alpha``, ``beta``) shaped like ``rates``; and any other inferred array, per-bin arrays as
``(dim, num_samples, n)`` and per-trial arrays as ``(dim, n)``. File attributes record how the
outputs were made (observation model, posterior samples, inference, event delay, ``bin_ms``).
In memory every array is trials-first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from neurodyn.data.atomic import write_h5_atomic
from neurodyn.errors import NeurodynError
from neurodyn.runs.identity import DATA_PATH_SEPARATOR, file_sha256, read_run_info
from neurodyn.runs.layout import RUN_INFO_FILE, SPLITS, find_output_dir, output_file_name

REQUIRED_KEYS = ("rates", "factors", "trial_idx")


def to_file_layout(trials_first: np.ndarray) -> np.ndarray:
    """``(trials, ...)`` -> the file's features-first, trials-last order (the axes reversed)."""
    return np.ascontiguousarray(np.transpose(trials_first))


def write_split_output(path: str | Path, inferred: dict[str, np.ndarray], trial_idx: np.ndarray,
                       attrs: dict[str, Any] | None = None) -> None:
    """Write one split's inferred arrays (trials-first, e.g. from ``train.inference.infer``) atomically."""
    arrays = {name: to_file_layout(np.asarray(value)) for name, value in inferred.items()}
    arrays["trial_idx"] = np.asarray(trial_idx, dtype=np.int64)
    write_h5_atomic(path, arrays, {k: v for k, v in (attrs or {}).items() if v is not None})


@dataclass(frozen=True)
class RunOutput:
    """One split's outputs, trials-first: ``rates`` ``(n, samples, neurons)`` expected value per bin,
    ``factors`` ``(n, samples, factors)``, ``trial_idx`` ``(n,)`` rows of the data file;
    ``event_delay_bins``: the model's rates at bin t were fit to the data of bin t + this;
    ``arrays``: every array of the file (trials-first), ``attrs``: its attributes."""

    rates: np.ndarray
    factors: np.ndarray
    trial_idx: np.ndarray
    event_delay_bins: int = 0
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)


def read_split_output(path: str | Path, rates_key: str = "rates") -> RunOutput:
    """Read and check one ``<split>_output.h5``; ``rates_key`` picks another array as ``rates``."""
    path = Path(path)
    if not path.is_file():
        raise NeurodynError(f"{path}: file not found (written by 'neurodyn train' or 'neurodyn run'; is this a run "
                            "directory?)")
    try:
        with h5py.File(path, "r") as f:
            missing = [key for key in dict.fromkeys((*REQUIRED_KEYS, rates_key)) if key not in f]
            if missing:
                raise NeurodynError(f"{path}: missing key(s) {', '.join(repr(k) for k in missing)}; "
                                    f"an output file needs {', '.join(REQUIRED_KEYS)}")
            raw = {key: np.asarray(node[()]) for key, node in f.items() if isinstance(node, h5py.Dataset)}
            attrs = {key: value.item() if isinstance(value, np.generic) else value for key, value in f.attrs.items()}
    except OSError as error:
        raise NeurodynError(f"{path}: cannot read as HDF5 ({error})") from None
    rates, factors, trial_idx = raw[rates_key], raw["factors"], raw["trial_idx"]
    for key, value in ((rates_key, rates), ("factors", factors)):
        if value.ndim != 3:
            raise NeurodynError(f"{path}: key {key!r} has shape {value.shape}; expected (dim, samples, trials)")
    if trial_idx.ndim != 1 or not np.issubdtype(trial_idx.dtype, np.integer):
        raise NeurodynError(f"{path}: key 'trial_idx' must be a 1-D integer array (got {trial_idx.dtype}, "
                            f"shape {trial_idx.shape})")
    num_trials = trial_idx.shape[0]
    if rates.shape[2] != num_trials or factors.shape[2] != num_trials or rates.shape[1] != factors.shape[1]:
        raise NeurodynError(f"{path}: inconsistent shapes: {rates_key!r} {rates.shape}, 'factors' {factors.shape}, "
                            f"'trial_idx' {trial_idx.shape} (need the same samples and {num_trials} trials)")
    arrays = {key: np.transpose(value) for key, value in raw.items()
              if key != "trial_idx" and value.ndim >= 1 and value.shape[-1] == num_trials}
    return RunOutput(rates=np.transpose(rates).astype(np.float64), factors=np.transpose(factors).astype(np.float64),
                     trial_idx=trial_idx.astype(np.int64), event_delay_bins=int(attrs.get("event_delay_bins", 0)),
                     arrays=arrays, attrs=attrs)


def read_run_outputs(run_dir: str | os.PathLike, rates_key: str = "rates",
                     data_path: str | os.PathLike | None = None) -> dict[str, RunOutput]:
    """``{"train": RunOutput, "valid": RunOutput}`` plus ``"test"`` when the run wrote one.

    ``run_dir`` is a run directory or a PBT results directory holding ``pbt_best_model/``.
    ``rates_key`` picks another rates array as ``rates`` (e.g. ``rates_sample_average``, written
    with ``inference: empirical_bayes``). For a model of several sessions, ``data_path`` (one
    session's file) picks that session's outputs.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise NeurodynError(f"{path}: not a directory (expected a run directory or a PBT results directory)")
    output_dir = find_output_dir(path, data_path)
    if not (output_dir / output_file_name("valid")).is_file():
        sessions = sorted(folder.name for folder in output_dir.iterdir()
                          if (folder / output_file_name("valid")).is_file()) if output_dir.is_dir() else []
        if sessions:
            raise NeurodynError(f"{path}: a model of several sessions ({', '.join(sessions)}); give the data file of "
                                "one of them (its outputs are in the folder named by the file's stem)")
        status = _unfinished_status(path)
        if status:
            raise NeurodynError(f"{path}: the run is unfinished (status '{status}' in {RUN_INFO_FILE}), so it has no "
                                "outputs yet; run the same 'neurodyn train' or 'neurodyn run' command to finish it")
    outputs = {split: read_split_output(output_dir / output_file_name(split), rates_key) for split in ("train", "valid")}
    if (output_dir / output_file_name("test")).is_file():
        outputs["test"] = read_split_output(output_dir / output_file_name("test"), rates_key)
    return outputs


def _run_info_if_readable(folder: str | os.PathLike) -> dict | None:
    """``folder/run.json``, or None when it is missing or damaged: for reading outputs, which do not
    depend on it, a damaged record is no reason to stop (a missing output file is the clearer message)."""
    try:
        return read_run_info(Path(folder) / RUN_INFO_FILE)
    except NeurodynError:
        return None


def _unfinished_status(folder: Path) -> str | None:
    """The status recorded in ``folder/run.json`` when it says the run has not finished (else None)."""
    info = _run_info_if_readable(folder)
    status = None if info is None else info.get("status")
    return status if status in ("running", "interrupted") else None


def other_data_file_note(run_dir: str | os.PathLike, data_path: str | os.PathLike) -> str | None:
    """A note when ``data_path`` is not the file the run in ``run_dir`` was trained on (its SHA-256
    differs from the one in ``run.json``), else None.

    The outputs name trials by their index in the training file, so another file's trials at those
    indices are scored against them. Only a note, not a refusal: the same recordings re-saved with an
    added key (behaviour, true latents) are a different file of the same trials. A run of several
    sessions records one hash for all its files, and a run without ``run.json`` none: no note."""
    info = _run_info_if_readable(run_dir)
    if info is None or DATA_PATH_SEPARATOR in str(info.get("data_path", "")) or "data_sha256" not in info:
        return None
    if file_sha256(data_path) == info["data_sha256"]:
        return None
    return (f"{data_path} is not the file this run was trained on ({info.get('data_path')}; the SHA-256 differs): "
            "its trials were scored at the indices of the training file's trials")


def held_out_split(outputs: dict[str, RunOutput]) -> str:
    """The split a run is scored on as held out: ``test`` when the data file named test trials (never used
    for any choice), else ``valid``."""
    return "test" if "test" in outputs else "valid"


def rates_in_file_order(parts: list[RunOutput]) -> tuple[np.ndarray, np.ndarray]:
    """Several splits' rates merged in data-file order: ``(trials, samples, neurons)`` and their
    ``trial_idx`` ``(trials,)``, sorted (as NLB's files list trials)."""
    trial_idx = np.concatenate([part.trial_idx for part in parts])
    order = np.argsort(trial_idx, kind="stable")
    return np.concatenate([part.rates for part in parts])[order], trial_idx[order]


def output_path(run_dir: str | os.PathLike, split: str, data_path: str | os.PathLike | None = None) -> Path:
    """Where the output file of ``split`` of the run in ``run_dir`` (of ``data_path``'s session) is (for messages)."""
    return find_output_dir(run_dir, data_path) / output_file_name(split)


__all__ = ["RunOutput", "read_run_outputs", "read_split_output", "write_split_output", "to_file_layout",
           "rates_in_file_order",
           "output_path", "SPLITS"]
