"""Read the inferred rates and factors that ``neurodyn train`` (or the PBT run) wrote.

A run directory holds ``train_output.h5`` and ``valid_output.h5``; each stores ``rates``
``(neurons, samples, n)``, ``factors`` ``(factors, samples, n)`` and ``trial_idx`` ``(n,)``
(indices into the input file's trial axis). A PBT results directory holds the same files in
``pbt_best_model/``. In memory everything is trials-first, like the dataset reader.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from neurodyn.errors import NeurodynError

OUTPUT_FILES = {"train": "train_output.h5", "valid": "valid_output.h5"}
PBT_BEST_MODEL_DIR = "pbt_best_model"
REQUIRED_KEYS = ("rates", "factors", "trial_idx")


@dataclass(frozen=True)
class RunOutput:
    """One split's outputs: ``rates`` ``(n, samples, neurons)`` expected counts per bin,
    ``factors`` ``(n, samples, factors)``, ``trial_idx`` ``(n,)`` rows of the input file;
    ``event_delay_bins``: the model's rates at bin t were fit to the data of bin t + this."""

    rates: np.ndarray
    factors: np.ndarray
    trial_idx: np.ndarray
    event_delay_bins: int = 0


def find_output_dir(path: str | os.PathLike) -> Path:
    """The directory holding the output files: ``path`` itself, or ``path/pbt_best_model``."""
    path = Path(path)
    if not path.is_dir():
        raise NeurodynError(f"{path}: not a directory (expected a run directory or a PBT results directory)")
    if not (path / OUTPUT_FILES["valid"]).exists() and (path / PBT_BEST_MODEL_DIR).is_dir():
        return path / PBT_BEST_MODEL_DIR
    return path


def _read_split(path: Path, rates_key: str = "rates") -> RunOutput:
    if not path.is_file():
        raise NeurodynError(f"{path}: file not found (written by 'neurodyn train'; is this a run directory?)")
    try:
        with h5py.File(path, "r") as f:
            missing = [key for key in (*REQUIRED_KEYS, rates_key) if key not in f]
            if missing:
                raise NeurodynError(f"{path}: missing key(s) {', '.join(repr(k) for k in missing)}; "
                                    f"an output file needs {', '.join(REQUIRED_KEYS)}")
            arrays = {key: np.asarray(f[key][()]) for key in REQUIRED_KEYS}
            arrays["rates"] = np.asarray(f[rates_key][()])
            event_delay_bins = int(f.attrs.get("event_delay_bins", 0))
    except OSError as error:
        raise NeurodynError(f"{path}: cannot read as HDF5 ({error})") from error

    rates, factors, trial_idx = arrays["rates"], arrays["factors"], arrays["trial_idx"]
    for key, value in (("rates", rates), ("factors", factors)):
        if value.ndim != 3:
            raise NeurodynError(f"{path}: key {key!r} has shape {value.shape}; expected (dim, samples, trials)")
    if trial_idx.ndim != 1 or not np.issubdtype(trial_idx.dtype, np.integer):
        raise NeurodynError(f"{path}: key 'trial_idx' must be a 1-D integer array (got {trial_idx.dtype}, "
                            f"shape {trial_idx.shape})")
    num_trials = trial_idx.shape[0]
    if rates.shape[2] != num_trials or factors.shape[2] != num_trials or rates.shape[1] != factors.shape[1]:
        raise NeurodynError(f"{path}: inconsistent shapes: 'rates' {rates.shape}, 'factors' {factors.shape}, "
                            f"'trial_idx' {trial_idx.shape} (need the same samples and {num_trials} trials)")
    # File layout is (dim, samples, trials); transposing gives trials-first (trials, samples, dim).
    return RunOutput(
        rates=np.transpose(rates).astype(np.float64),
        factors=np.transpose(factors).astype(np.float64),
        trial_idx=trial_idx.astype(np.int64),
        event_delay_bins=event_delay_bins,
    )


def read_run_outputs(run_dir: str | os.PathLike, rates_key: str = "rates") -> dict[str, RunOutput]:
    """Read ``train_output.h5`` and ``valid_output.h5`` -> ``{"train": RunOutput, "valid": RunOutput}``.

    ``run_dir`` may be a run directory or a PBT results directory containing ``pbt_best_model/``.
    ``rates_key`` picks another rates array as ``rates`` (e.g. ``rates_sample_average``, written
    with ``inference: empirical_bayes``).
    """
    output_dir = find_output_dir(run_dir)
    return {split: _read_split(output_dir / name, rates_key) for split, name in OUTPUT_FILES.items()}
