"""The h5 data format of the RADICaL/AutoLFADS analysis: read, validate, write and split into train/valid/test.

File layout, as h5py reads it (MATLAB's column-major order makes it trials-last)::

    data       (num_neurons, num_samples, num_trials)  float; NaN = neuron-time point not sampled
    truth      (num_neurons, num_samples, num_trials)  optional; true rate = expected count per bin
                                                       (the clean signal of continuous data)
    latents    (num_latents, num_samples, num_trials)  optional; true latent states
    condition  (num_trials,)                           optional; integer condition label per trial
    heldout_neurons (k,)                               optional; neuron indices never shown to the
                                                       encoder but reconstructed (co-bps evaluation)
    ext_input  (ext_input_dim, num_samples, num_trials) optional; measured inputs per bin (e.g. a
                                                       stimulus), finite everywhere, fed to the
                                                       generator beside the inferred inputs
    behavior   (behavior_dim, num_samples, num_trials) optional; measured behaviour per bin (e.g. hand
                                                       velocity), NaN where not measured (e.g. NLB's
                                                       evaluation trials); never shown to the model,
                                                       decoded from its rates (vel R^2). Attributes
                                                       behavior_lag_ms (the lag at which vel R^2 pairs
                                                       rates with behaviour) and behavior_lag_applied_ms
                                                       (the lag already applied to the stored values)
    split      (num_trials,)                           optional; each trial's role: 'train', 'valid'
                                                       or 'test' (strings, or integers 0 / 1 / 2);
                                                       without it a seeded valid_ratio split is drawn
    file attributes                                    optional; e.g. bin_ms, generator settings

In memory every array is trials-first: ``(num_trials, num_samples, num_neurons)``, the layout
the models consume. A run called ``run001`` reads ``run001_data.h5``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from neurodyn.data.atomic import write_h5_atomic
from neurodyn.errors import NeurodynError

FILE_AXES = "(num_neurons, num_samples, num_trials)"
EXT_INPUT_AXES = "(ext_input_dim, num_samples, num_trials)"
BEHAVIOR_AXES = "(behavior_dim, num_samples, num_trials)"
OPTIONAL_KEYS = ("truth", "latents", "condition", "heldout_neurons", "ext_input", "behavior")
# The trial roles of the 'split' key, in the order of their integer codes 0, 1, 2.
SPLIT_LABELS = ("train", "valid", "test")


def data_file_name(run_name: str) -> str:
    """The data file a run reads: ``<run_name>_data.h5``."""
    return f"{run_name}_data.h5"


@dataclass
class NeuralDataset:
    """Trials-first arrays of one dataset; see the module docstring for the file layout."""

    data: np.ndarray  # (num_trials, num_samples, num_neurons) float32; NaN = not sampled
    truth: np.ndarray | None = None  # (num_trials, num_samples, num_neurons) expected count per bin
    latents: np.ndarray | None = None  # (num_trials, num_samples, num_latents)
    condition: np.ndarray | None = None  # (num_trials,) int64
    heldout_neurons: np.ndarray | None = None  # (k,) int64 neuron indices hidden from the encoder
    attrs: dict = field(default_factory=dict)  # file attributes (e.g. bin_ms, generator settings)
    source: str = "<memory>"  # file path, for error messages
    ext_input: np.ndarray | None = None  # (num_trials, num_samples, ext_input_dim) float32 measured inputs
    split: np.ndarray | None = None  # (num_trials,) str: 'train', 'valid' or 'test' (integers 0/1/2 accepted)
    behavior: np.ndarray | None = None  # (num_trials, num_samples, behavior_dim) float32 measured behaviour

    def __post_init__(self):
        # One dtype per field, so that a write/read round trip returns identical arrays.
        self.data = np.asarray(self.data, dtype=np.float32)
        if self.truth is not None:
            self.truth = np.asarray(self.truth, dtype=np.float32)
        if self.latents is not None:
            self.latents = np.asarray(self.latents, dtype=np.float32)
        if self.condition is not None:
            self.condition = np.asarray(self.condition, dtype=np.int64)
        if self.heldout_neurons is not None:
            self.heldout_neurons = np.asarray(self.heldout_neurons, dtype=np.int64).reshape(-1)
        if self.ext_input is not None:
            self.ext_input = np.asarray(self.ext_input, dtype=np.float32)
        if self.behavior is not None:
            self.behavior = np.asarray(self.behavior, dtype=np.float32)
        if self.split is not None:
            self.split = split_labels(self.split)

    @property
    def num_trials(self) -> int:
        return self.data.shape[0]

    @property
    def num_samples(self) -> int:
        return self.data.shape[1]

    @property
    def num_neurons(self) -> int:
        return self.data.shape[2]

    @property
    def ext_input_dim(self) -> int:
        """Measured inputs per bin (0 without ``ext_input``)."""
        return 0 if self.ext_input is None else self.ext_input.shape[2]

    def observed_mask(self) -> np.ndarray:
        """Boolean array shaped like ``data``: True where the neuron-time point was sampled."""
        return ~np.isnan(self.data)

    def subset(self, trial_idx) -> "NeuralDataset":
        """The dataset restricted to ``trial_idx`` (indices or boolean mask over trials)."""
        trial_idx = np.asarray(trial_idx)

        def take(array):
            return None if array is None else array[trial_idx]

        return NeuralDataset(
            data=self.data[trial_idx],
            truth=take(self.truth),
            latents=take(self.latents),
            condition=take(self.condition),
            heldout_neurons=self.heldout_neurons,
            attrs=dict(self.attrs),
            source=self.source,
            ext_input=take(self.ext_input),
            split=take(self.split),
            behavior=take(self.behavior),
        )


def split_labels(split) -> np.ndarray:
    """A ``split`` vector as str labels: bytes are decoded, whole numbers 0/1/2 named by ``SPLIT_LABELS``.

    Anything else is kept as text (e.g. ``'3'``, ``'training'``), for the validation to name.
    """
    values = np.asarray(split)
    labels = [_split_label(value) for value in values.reshape(-1).tolist()]
    return np.array(labels, dtype=str).reshape(values.shape)


def count_trial_roles(split) -> dict[str, int]:
    """How many trials ``split`` gives each role: ``{'train': n, 'valid': n, 'test': n}``."""
    labels = split_labels(split)
    return {label: int(np.sum(labels == label)) for label in SPLIT_LABELS}


def _split_label(value) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if is_number and float(value).is_integer() and 0 <= value < len(SPLIT_LABELS):
        return SPLIT_LABELS[int(value)]
    return str(value)


# ---------------------------------------------------------------------------------------------
# Reading


def read_dataset(path: str | os.PathLike) -> NeuralDataset:
    """Read and validate a data file (format, shapes, NaN/inf); returns trials-first arrays.

    The values an observation model needs (e.g. Poisson: non-negative integer counts) are checked
    by ``neurodyn.observation.registry.read_dataset_for``.

    Parameters
    ----------
    path : str or PathLike
        An h5 data file: ``data`` ``(num_neurons, num_samples, num_trials)`` as h5py reads it, and
        optionally ``truth``, ``latents``, ``condition``, ``heldout_neurons``, ``ext_input``,
        ``behavior``, ``split`` and file attributes.

    Returns
    -------
    NeuralDataset
        ``data`` ``(num_trials, num_samples, num_neurons)`` float32 (NaN = not observed),
        ``truth`` and ``latents`` likewise trials-first (or None), ``condition`` ``(num_trials,)``,
        ``heldout_neurons`` ``(k,)``, ``ext_input`` and ``behavior`` trials-first (or None) and
        ``attrs`` (the file attributes, e.g. ``bin_ms``).

    Raises
    ------
    NeurodynError
        One line naming the file and key for every problem found.
    """
    source = str(path)
    arrays, attrs = _load_h5(Path(path), source)
    dataset = NeuralDataset(
        data=_to_trials_first(arrays["data"]),
        truth=_to_trials_first(arrays.get("truth")),
        latents=_to_trials_first(arrays.get("latents")),
        condition=arrays.get("condition"),
        heldout_neurons=arrays.get("heldout_neurons"),
        attrs=attrs,
        source=source,
        ext_input=_to_trials_first(arrays.get("ext_input")),
        split=arrays.get("split"),
        behavior=_to_trials_first(arrays.get("behavior")),
    )
    validate_values(dataset)
    return dataset


def _load_h5(path: Path, source: str) -> tuple[dict[str, np.ndarray], dict]:
    """Read the known keys (shape-checked in the file layout) and the file attributes."""
    if not path.exists():
        raise NeurodynError(f"{source}: data file not found")
    if path.is_dir():
        raise NeurodynError(f"{source}: is a directory, expected an h5 data file")
    if not h5py.is_hdf5(path):
        raise NeurodynError(f"{source}: not an HDF5 file (expected an h5 file with key 'data' {FILE_AXES})")
    try:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise NeurodynError(
                    f"{source}: missing key 'data' {FILE_AXES}; keys present: {sorted(f.keys()) or 'none'}"
                )
            arrays = {"data": _read_array(f, "data", source)}
            _check_data_shape(arrays["data"], source)
            for key in OPTIONAL_KEYS:
                if key in f:
                    arrays[key] = _read_array(f, key, source)
            if "split" in f:
                arrays["split"] = _read_split(f, source)
            attrs = {key: _python_value(value) for key, value in f.attrs.items()}
    except NeurodynError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError) as error:
        raise NeurodynError(f"{source}: cannot read the h5 file (corrupt or truncated?): {error}") from None
    num_neurons, num_samples, num_trials = arrays["data"].shape
    if "truth" in arrays:
        _check_shape(arrays["truth"], "truth", (num_neurons, num_samples, num_trials), FILE_AXES + " like 'data'", source)
    if "latents" in arrays:
        latents = arrays["latents"]
        expected = (latents.shape[0] if latents.ndim == 3 else "num_latents", num_samples, num_trials)
        _check_shape(latents, "latents", expected, "(num_latents, num_samples, num_trials)", source)
    if "condition" in arrays:
        arrays["condition"] = _condition_vector(arrays["condition"], num_trials, source)
    if "ext_input" in arrays:
        ext_input = arrays["ext_input"]
        dim = ext_input.shape[0] if ext_input.ndim == 3 and ext_input.shape[0] > 0 else "ext_input_dim >= 1"
        _check_shape(ext_input, "ext_input", (dim, num_samples, num_trials), EXT_INPUT_AXES, source)
    if "behavior" in arrays:
        behavior = arrays["behavior"]
        dim = behavior.shape[0] if behavior.ndim == 3 and behavior.shape[0] > 0 else "behavior_dim >= 1"
        _check_shape(behavior, "behavior", (dim, num_samples, num_trials), BEHAVIOR_AXES, source)
    if "split" in arrays:
        split = arrays["split"]
        if split.ndim == 2 and 1 in split.shape:  # MATLAB's (1, n) or (n, 1) vectors
            split = split.reshape(-1)
        _check_shape(split, "split", (num_trials,), "(num_trials,) like the last axis of 'data'", source)
        arrays["split"] = split
    return arrays, attrs


def _read_split(f: h5py.File, source: str) -> np.ndarray:
    """The 'split' key as stored: integer codes, or strings (fixed-length bytes or variable-length)."""
    node = f["split"]
    if not isinstance(node, h5py.Dataset):
        raise NeurodynError(f"{source}: key 'split' is a group, expected (num_trials,) labels "
                            f"{'/'.join(SPLIT_LABELS)} or 0/1/2")
    if h5py.check_string_dtype(node.dtype) is not None:
        return np.asarray(node.asstr()[()], dtype=object)
    array = node[()]
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biufS":
        raise NeurodynError(f"{source}: key 'split' must hold labels {'/'.join(SPLIT_LABELS)} or integers 0/1/2 "
                            f"(dtype {getattr(array, 'dtype', type(array))})")
    return array


def _read_array(f: h5py.File, key: str, source: str) -> np.ndarray:
    node = f[key]
    if not isinstance(node, h5py.Dataset):
        raise NeurodynError(f"{source}: key '{key}' is a group, expected a numeric array")
    array = node[()]
    if not isinstance(array, np.ndarray) or not (
        np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)
    ):
        raise NeurodynError(f"{source}: key '{key}' is not a numeric array (dtype {getattr(array, 'dtype', type(array))})")
    return array


def _check_data_shape(data: np.ndarray, source: str) -> None:
    if data.ndim != 3:
        raise NeurodynError(
            f"{source}: key 'data' has {data.ndim} dimensions {data.shape}; expected 3 = {FILE_AXES}"
        )
    if 0 in data.shape:
        raise NeurodynError(f"{source}: key 'data' is empty {data.shape}; expected {FILE_AXES}")


def _check_shape(array: np.ndarray, key: str, expected: tuple, meaning: str, source: str) -> None:
    if array.shape != expected:
        shown = "(" + ", ".join(str(n) for n in expected) + ("," if len(expected) == 1 else "") + ")"
        raise NeurodynError(f"{source}: key '{key}' has shape {array.shape}; expected {shown} = {meaning}")


def _condition_vector(condition: np.ndarray, num_trials: int, source: str) -> np.ndarray:
    # MATLAB writes vectors as (1, n) or (n, 1) matrices; those are accepted as (n,).
    if condition.ndim == 2 and 1 in condition.shape:
        condition = condition.reshape(-1)
    _check_shape(condition, "condition", (num_trials,), "(num_trials,) like the last axis of 'data'", source)
    if not np.all(np.isfinite(condition)) or not np.all(condition == np.round(condition)):
        raise NeurodynError(f"{source}: key 'condition' must hold integer labels, one per trial")
    return condition.astype(np.int64)


def _to_trials_first(array: np.ndarray | None) -> np.ndarray | None:
    """File layout ``(features, samples, trials)`` -> memory layout ``(trials, samples, features)``."""
    return None if array is None else np.ascontiguousarray(np.transpose(array, (2, 1, 0)))


def _python_value(value):
    """h5 attribute -> plain Python value (str, int, float, bool or list)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_python_value(v) for v in value.tolist()] if value.dtype.kind in "OS" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------------------------
# Validation (shared by read and write)


def validate_structure(dataset: NeuralDataset) -> None:
    """Check ranks and that the optional arrays match ``data``, in memory layout."""
    source = dataset.source
    if dataset.data.ndim != 3 or 0 in dataset.data.shape:
        raise NeurodynError(
            f"{source}: 'data' has shape {dataset.data.shape}; expected non-empty (num_trials, num_samples, num_neurons)"
        )
    trials, samples, neurons = dataset.data.shape
    if dataset.truth is not None and dataset.truth.shape != dataset.data.shape:
        raise NeurodynError(
            f"{source}: 'truth' has shape {dataset.truth.shape}; expected {dataset.data.shape} = "
            "(num_trials, num_samples, num_neurons) like 'data'"
        )
    if dataset.latents is not None and (dataset.latents.ndim != 3 or dataset.latents.shape[:2] != (trials, samples)):
        raise NeurodynError(
            f"{source}: 'latents' has shape {dataset.latents.shape}; expected ({trials}, {samples}, num_latents)"
        )
    if dataset.condition is not None and dataset.condition.shape != (trials,):
        raise NeurodynError(f"{source}: 'condition' has shape {dataset.condition.shape}; expected ({trials},)")
    heldout = dataset.heldout_neurons
    if heldout is not None:
        if heldout.size and (heldout.min() < 0 or heldout.max() >= neurons):
            raise NeurodynError(f"{source}: 'heldout_neurons' holds indices outside 0..{neurons - 1} (the neuron axis)")
        if np.unique(heldout).size != heldout.size:
            raise NeurodynError(f"{source}: 'heldout_neurons' repeats a neuron index")
        if heldout.size >= neurons:
            raise NeurodynError(f"{source}: 'heldout_neurons' holds out all {neurons} neurons; the encoder needs some")
    ext_input = dataset.ext_input
    if ext_input is not None and (ext_input.ndim != 3 or ext_input.shape[:2] != (trials, samples)
                                  or ext_input.shape[2] == 0):
        raise NeurodynError(f"{source}: 'ext_input' has shape {ext_input.shape}; expected ({trials}, {samples}, "
                            "ext_input_dim >= 1) = (num_trials, num_samples, ext_input_dim) like 'data'")
    behavior = dataset.behavior
    if behavior is not None and (behavior.ndim != 3 or behavior.shape[:2] != (trials, samples)
                                 or behavior.shape[2] == 0):
        raise NeurodynError(f"{source}: 'behavior' has shape {behavior.shape}; expected ({trials}, {samples}, "
                            "behavior_dim >= 1) = (num_trials, num_samples, behavior_dim) like 'data'")
    if dataset.split is not None:
        _validate_split(split_labels(dataset.split), trials, source)


def _validate_split(split: np.ndarray, num_trials: int, source: str) -> None:
    if split.shape != (num_trials,):
        raise NeurodynError(f"{source}: key 'split' has shape {split.shape}; expected ({num_trials},) = "
                            "(num_trials,), one label per trial")
    unknown = sorted(set(split.tolist()) - set(SPLIT_LABELS))
    if unknown:
        shown = ", ".join(repr(label) for label in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise NeurodynError(f"{source}: key 'split' holds unknown label(s) {shown}; each trial must be "
                            f"{', '.join(repr(label) for label in SPLIT_LABELS)} (or 0, 1, 2)")


def validate_values(dataset: NeuralDataset) -> None:
    """Structure plus values: no infinities, no all-NaN trials, a finite truth (the expected value of each entry:
    rates for counts, the clean signal for continuous data, which may be negative)."""
    validate_structure(dataset)
    source = dataset.source
    if np.isinf(dataset.data).any():
        raise NeurodynError(f"{source}: key 'data' holds infinite values; use NaN for unsampled points")
    unsampled_trials = np.flatnonzero(np.isnan(dataset.data).all(axis=(1, 2)))
    if unsampled_trials.size:
        shown = ", ".join(str(i) for i in unsampled_trials[:10]) + (", ..." if unsampled_trials.size > 10 else "")
        raise NeurodynError(
            f"{source}: key 'data' has {unsampled_trials.size} trial(s) that are all NaN (never sampled); "
            f"trial indices (last file axis, from 0): {shown}"
        )
    if dataset.truth is not None:
        if not np.isfinite(dataset.truth).all():
            raise NeurodynError(f"{source}: key 'truth' holds NaN or infinite values; it must be a finite rate everywhere")
    if dataset.latents is not None and not np.isfinite(dataset.latents).all():
        raise NeurodynError(f"{source}: key 'latents' holds NaN or infinite values")
    if dataset.ext_input is not None and not np.isfinite(dataset.ext_input).all():
        bad = np.flatnonzero(~np.isfinite(dataset.ext_input).all(axis=(1, 2)))
        raise NeurodynError(f"{source}: key 'ext_input' holds NaN or infinite values (trial indices "
                            f"{', '.join(str(i) for i in bad[:10])}{', ...' if bad.size > 10 else ''}); measured "
                            "inputs must be finite at every bin")
    if dataset.behavior is not None and np.isinf(dataset.behavior).any():
        # NaN says "not measured" (e.g. NLB's evaluation trials); an infinity is never a measurement.
        bad = np.flatnonzero(np.isinf(dataset.behavior).any(axis=(1, 2)))
        raise NeurodynError(f"{source}: key 'behavior' holds infinite values (trial indices "
                            f"{', '.join(str(i) for i in bad[:10])}{', ...' if bad.size > 10 else ''}); use NaN "
                            "where the behaviour was not measured")


# ---------------------------------------------------------------------------------------------
# Writing


def write_dataset(path: str | os.PathLike, dataset: NeuralDataset) -> None:
    """Validate and write ``dataset`` atomically in the file layout, ``attrs`` as h5 attributes.

    Parameters
    ----------
    path : str or PathLike
        The h5 file to write (complete or absent, never half-written).
    dataset : NeuralDataset
        Trials-first arrays, ``data`` ``(num_trials, num_samples, num_neurons)``; they are stored
        as ``(num_neurons, num_samples, num_trials)``, the layout ``read_dataset`` reads.

    Raises
    ------
    NeurodynError
        When the arrays are inconsistent or an attribute cannot be stored in HDF5.
    """
    validate_values(dataset)
    arrays = {"data": np.transpose(dataset.data, (2, 1, 0))}
    for key in ("truth", "latents", "ext_input", "behavior"):
        value = getattr(dataset, key)
        if value is not None:
            arrays[key] = np.transpose(value, (2, 1, 0))
    if dataset.condition is not None:
        arrays["condition"] = dataset.condition
    if dataset.heldout_neurons is not None:
        arrays["heldout_neurons"] = dataset.heldout_neurons
    if dataset.split is not None:
        arrays["split"] = np.array(split_labels(dataset.split).tolist(), dtype=h5py.string_dtype())
    try:
        write_h5_atomic(path, arrays, dataset.attrs)
    except TypeError as error:  # an attribute h5 cannot store, e.g. None or a dict
        raise NeurodynError(f"{path}: cannot store the dataset attributes: {error}") from None


# ---------------------------------------------------------------------------------------------
# Train / valid / test split


def split_train_valid_test(
    dataset: NeuralDataset, valid_ratio: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The trials' roles as ``(train_idx, valid_idx, test_idx)``, each sorted int64.

    From the data file's ``split`` key when present (which must name at least one train and one
    valid trial); otherwise the seeded ``split_trials`` of all trials (condition-balanced when the
    dataset has ``condition``) and an empty test set. Test trials must never be trained on nor used
    for any choice (early stopping, learning-rate decay, PBT fitness).
    """
    if dataset.split is None:
        train, valid = split_trials(dataset.num_trials, valid_ratio, seed, dataset.condition)
        return train, valid, np.zeros(0, dtype=np.int64)
    labels = split_labels(dataset.split)
    _validate_split(labels, dataset.num_trials, dataset.source)
    train, valid, test = (np.flatnonzero(labels == label).astype(np.int64) for label in SPLIT_LABELS)
    for label, trials in (("train", train), ("valid", valid)):
        if trials.size == 0:
            raise NeurodynError(f"{dataset.source}: key 'split' names no '{label}' trials ({train.size} train, "
                                f"{valid.size} valid, {test.size} test); training needs at least one train and one "
                                "valid trial")
    return train, valid, test


def split_sample_validation(train_data: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample validation: a seeded ``fraction`` of the observed entries of ``train_data`` ``(trials, T, N)``
    (NaN = unobserved), held out of training and kept to score the model on.

    Returns ``(training, held_out)``, both shaped like ``train_data``: ``training`` with the held-out
    entries set to NaN (the model neither sees nor fits them), ``held_out`` NaN everywhere but those
    entries. Exactly ``round(fraction * observed entries)`` entries are drawn, uniformly without
    replacement, from ``np.random.default_rng(seed)``.
    """
    data = np.asarray(train_data)
    if not 0.0 <= fraction < 1.0:
        raise NeurodynError(f"sample_validation_fraction must be in [0, 1); got {fraction}")
    observed = np.flatnonzero(~np.isnan(data).reshape(-1))
    count = int(np.floor(fraction * observed.size + 0.5))
    held = np.zeros(data.size, dtype=bool)
    held[np.random.default_rng(seed).choice(observed, size=count, replace=False)] = True
    held = held.reshape(data.shape)
    nan = np.array(np.nan, dtype=data.dtype)
    return np.where(held, nan, data), np.where(held, data, nan)


def hold_out_entries(training: np.ndarray, held_out: np.ndarray | None, where: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Move the observed entries of ``training`` ``(trials, T, N)`` that ``where`` (bool, broadcast to
    it) marks into ``held_out`` (shaped like it, NaN = not held out; None = none yet). Returns the new
    ``(training, held_out)``: the marked entries NaN in the first, their values in the second."""
    training = np.asarray(training)
    where = np.broadcast_to(where, training.shape) & ~np.isnan(training)
    held_out = np.full_like(training, np.nan) if held_out is None else held_out
    nan = np.array(np.nan, dtype=training.dtype)
    return np.where(where, nan, training), np.where(where, training, held_out)


def split_trials(
    num_trials: int, valid_ratio: float, seed: int, condition: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of the trial axis into ``(train_idx, valid_idx)``, both sorted int64.

    The valid split gets ``round(valid_ratio * num_trials)`` trials (halves round up). With
    ``condition``, each condition ``c`` with ``n_c`` trials gives ``floor(valid_ratio * n_c)``
    or one more to valid; the extra trials go to the conditions with the largest remainders
    (ties broken by the seed), so every condition is represented in proportion and the total
    matches the unbalanced split, e.g. 65 conditions x 24 trials at 0.2 -> 1248 / 312.
    """
    if not 0.0 < valid_ratio < 1.0:
        if valid_ratio == 0.0:
            raise NeurodynError("valid_ratio is 0: the validation split would be empty; use a value in (0, 1)")
        raise NeurodynError(f"valid_ratio must be in [0, 1); got {valid_ratio}")
    rng = np.random.default_rng(seed)
    num_valid = int(np.floor(valid_ratio * num_trials + 0.5))
    if num_valid == 0 or num_valid >= num_trials:
        raise NeurodynError(
            f"valid_ratio {valid_ratio} of {num_trials} trials gives {num_valid} validation and "
            f"{num_trials - num_valid} training trials; both splits must be non-empty"
        )
    if condition is None:
        valid = rng.permutation(num_trials)[:num_valid]
    else:
        valid = _balanced_valid_trials(np.asarray(condition), num_trials, valid_ratio, num_valid, rng)
    is_valid = np.zeros(num_trials, dtype=bool)
    is_valid[valid] = True
    return np.flatnonzero(~is_valid).astype(np.int64), np.flatnonzero(is_valid).astype(np.int64)


def _balanced_valid_trials(
    condition: np.ndarray, num_trials: int, valid_ratio: float, num_valid: int, rng: np.random.Generator
) -> np.ndarray:
    if condition.shape != (num_trials,):
        raise NeurodynError(f"condition has shape {condition.shape}; expected ({num_trials},), one label per trial")
    labels, trial_condition = np.unique(condition, return_inverse=True)
    trials_per_condition = np.bincount(trial_condition, minlength=labels.size)
    share = valid_ratio * trials_per_condition
    per_condition = np.floor(share).astype(int)
    # Largest remainder first; a random key breaks ties so no condition is favoured by its label.
    missing = num_valid - per_condition.sum()
    order = np.lexsort((rng.random(labels.size), -(share - per_condition)))
    per_condition[order[:missing]] += 1
    valid = []
    for index in range(labels.size):
        members = np.flatnonzero(trial_condition == index)
        valid.append(rng.permutation(members)[: per_condition[index]])
    return np.concatenate(valid)
