"""Neural Latents Benchmark tensor files (nlb_tools) -> the h5 data file.

nlb_tools' ``make_train_input_tensors`` and ``make_eval_input_tensors`` write trials-first arrays
``(trials, bins, neurons)`` (as h5py reads them):

- the training file: ``train_spikes_heldin`` ``(n, T, H_in)`` and ``train_spikes_heldout``
  ``(n, T, H_out)``; optionally ``train_spikes_heldin_forward`` ``(n, F, H_in)`` and
  ``train_spikes_heldout_forward`` ``(n, F, H_out)`` (the F bins after the window, forward
  prediction) and ``train_behavior`` ``(n, T, B)`` (e.g. hand velocity, already shifted by the
  dataset's lag: bin t holds the behaviour at t + lag);
- the evaluation input: ``eval_spikes_heldin`` ``(m, T, H_in)`` (the held-out neurons, the forward
  bins and the behaviour of these trials are the benchmark's secret).

``nlb_dataset`` turns them into one data file: trials = the n training-phase trials (file order),
then the m evaluation trials; neurons = held-in, then held-out (``heldout_neurons``); bins = the
window, then the forward bins (attribute ``forward_bins``, which a config's ``forward_bins: auto``
takes). What NLB withholds is NaN (= not observed): the evaluation trials' held-out neurons and
forward bins, and their behaviour. ``split``: the training-phase trials are split into train and
valid (seeded), the evaluation trials are ``test``. Without an evaluation file, a fixed seeded
subset of the training-phase trials can be made ``test`` instead (``local_test_trials``): their
held-out neurons are known, so co-bps can be scored locally.

The behaviour is stored as nlb_tools wrote it, with the attributes ``behavior_lag_ms`` (the lag at
which NLB decodes it, ``NLB_BEHAVIOR_LAG_MS``) and ``behavior_lag_applied_ms`` (the same value: the
stored behaviour is already shifted, so ``neurodyn evaluate`` does not shift it again).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from neurodyn.data.seed_format import NeuralDataset
from neurodyn.errors import NeurodynError

# The lag (ms) at which NLB'21 pairs rates with behaviour, per dataset: the behaviour at t + lag is
# decoded from the rates at t (nlb_tools' make_tensors parameters; dmfc_rsg decodes no behaviour).
NLB_BEHAVIOR_LAG_MS = {"mc_maze": 100.0, "mc_rtt": 140.0, "area2_bump": -20.0, "dmfc_rsg": None,
                       "mc_maze_large": 120.0, "mc_maze_medium": 120.0, "mc_maze_small": 120.0}

# NLB's bin width unless the tensors were made at 20 ms ('_20' submissions).
NLB_BIN_MS = 5.0

TRAIN_AXES = "(trials, bins, neurons)"


@dataclass(frozen=True)
class NlbSplit:
    """How the training-phase trials are split: ``valid_fraction`` of them (after the local test
    trials are taken out) validate; ``local_test_trials`` of them become test trials when there is no
    evaluation file; both drawn with ``seed``."""

    valid_fraction: float = 0.2
    local_test_trials: int = 0
    seed: int = 0


def dataset_name_from_file(path: str | os.PathLike) -> str | None:
    """The NLB dataset a tensor file belongs to, from its name (``mc_maze_small_train.h5`` ->
    ``mc_maze_small``; the longest known name the file name starts with), or None."""
    stem = Path(path).name.lower()
    names = [name for name in NLB_BEHAVIOR_LAG_MS if stem.startswith(name)]
    return max(names, key=len) if names else None


def read_nlb_arrays(path: str | os.PathLike, required: tuple[str, ...], optional: tuple[str, ...]) -> dict:
    """The named arrays of an nlb_tools tensor file, each 3-D ``(trials, bins, neurons)`` float64."""
    source = str(path)
    if not Path(path).is_file():
        raise NeurodynError(f"{source}: NLB tensor file not found")
    if not h5py.is_hdf5(path):
        raise NeurodynError(f"{source}: not an HDF5 file (expected nlb_tools tensors such as "
                            f"'{required[0]}' {TRAIN_AXES})")
    arrays = {}
    with h5py.File(path, "r") as f:
        for key in (*required, *optional):
            if key not in f:
                if key in required:
                    raise NeurodynError(f"{source}: missing key '{key}' {TRAIN_AXES}; keys present: "
                                        f"{sorted(f.keys()) or 'none'}")
                continue
            node = f[key]
            if not isinstance(node, h5py.Dataset) or node.ndim != 3 or not np.issubdtype(node.dtype, np.number):
                raise NeurodynError(f"{source}: key '{key}' has shape {getattr(node, 'shape', 'a group')}; expected a "
                                    f"numeric array {TRAIN_AXES}")
            arrays[key] = np.asarray(node[()], dtype=np.float64)
    return arrays


def nlb_dataset(train_path: str | os.PathLike, eval_path: str | os.PathLike | None = None,
                dataset_name: str | None = None, bin_ms: float = NLB_BIN_MS,
                split: NlbSplit = NlbSplit()) -> NeuralDataset:
    """One data file's arrays from nlb_tools' training tensors (and its evaluation input).

    Parameters
    ----------
    train_path : str or PathLike
        ``make_train_input_tensors``' file (keys in the module docstring).
    eval_path : str or PathLike, optional
        ``make_eval_input_tensors``' file (``eval_spikes_heldin``); its trials become ``test``.
    dataset_name : str, optional
        The NLB dataset (e.g. ``mc_maze_small``): sets the behaviour's lag. Default: from the training
        file's name; needed when the file has behaviour and its name does not tell.
    bin_ms : float
        Bin width of the tensors in ms (NLB's 5, or 20 for the ``_20`` tensors).
    split : NlbSplit
        The training-phase trials' valid fraction, local test trials and seed.

    Returns
    -------
    NeuralDataset
        ``data`` ``(n + m, T + F, H_in + H_out)`` spike counts with NaN where NLB withholds them,
        ``heldout_neurons``, ``split``, ``behavior`` (NaN where not given) and attributes
        ``bin_ms``, ``forward_bins``, ``nlb_dataset``, ``behavior_lag_ms``,
        ``behavior_lag_applied_ms``, ``source_files``.
    """
    train = read_nlb_arrays(train_path, ("train_spikes_heldin", "train_spikes_heldout"),
                            ("train_spikes_heldin_forward", "train_spikes_heldout_forward", "train_behavior"))
    source = str(train_path)
    heldin, heldout = train["train_spikes_heldin"], train["train_spikes_heldout"]
    num_train, num_bins, num_heldin = heldin.shape
    num_heldout = heldout.shape[2]
    _expect(heldout, "train_spikes_heldout", (num_train, num_bins, None), source)
    forward_keys = ("train_spikes_heldin_forward", "train_spikes_heldout_forward")
    if sum(key in train for key in forward_keys) == 1:
        present = next(key for key in forward_keys if key in train)
        raise NeurodynError(f"{source}: has '{present}' but not its partner; the forward bins need both "
                            f"{forward_keys[0]} and {forward_keys[1]} {TRAIN_AXES}")
    num_forward = train[forward_keys[0]].shape[1] if forward_keys[0] in train else 0
    if num_forward:
        _expect(train[forward_keys[0]], forward_keys[0], (num_train, None, num_heldin), source)
        _expect(train[forward_keys[1]], forward_keys[1], (num_train, num_forward, num_heldout), source)
    behavior = train.get("train_behavior")
    if behavior is not None:
        _expect(behavior, "train_behavior", (num_train, num_bins, None), source)

    eval_heldin = None
    if eval_path is not None:
        eval_heldin = read_nlb_arrays(eval_path, ("eval_spikes_heldin",), ())["eval_spikes_heldin"]
        _expect(eval_heldin, "eval_spikes_heldin", (None, num_bins, num_heldin), str(eval_path),
                "the training file's bins and held-in neurons")
        if split.local_test_trials:
            raise NeurodynError("local test trials are drawn only without an evaluation file: with one, its trials "
                                "are the test trials")
    num_eval = 0 if eval_heldin is None else eval_heldin.shape[0]

    trials, samples, neurons = num_train + num_eval, num_bins + num_forward, num_heldin + num_heldout
    data = np.full((trials, samples, neurons), np.nan)
    data[:num_train, :num_bins, :num_heldin] = heldin
    data[:num_train, :num_bins, num_heldin:] = heldout
    if num_forward:
        data[:num_train, num_bins:, :num_heldin] = train[forward_keys[0]]
        data[:num_train, num_bins:, num_heldin:] = train[forward_keys[1]]
    if num_eval:
        data[num_train:, :num_bins, :num_heldin] = eval_heldin
    _check_counts(data, source if eval_path is None else f"{source} / {eval_path}")

    name = dataset_name or dataset_name_from_file(train_path)
    if name is not None and name not in NLB_BEHAVIOR_LAG_MS:
        raise NeurodynError(f"NLB dataset '{name}' is not one of {', '.join(NLB_BEHAVIOR_LAG_MS)}")
    attrs = {"bin_ms": float(bin_ms), "forward_bins": int(num_forward),
             "source_files": [Path(p).name for p in (train_path, eval_path) if p is not None]}
    if name is not None:
        attrs["nlb_dataset"] = name
    stored_behavior = None
    if behavior is not None:
        lag_ms = NLB_BEHAVIOR_LAG_MS.get(name) if name is not None else None
        if lag_ms is None:
            raise NeurodynError(f"{source}: has 'train_behavior' but the NLB dataset (and so the lag nlb_tools shifted "
                                "it by) is unknown from the file name; name it (--dataset mc_maze_small, ...)")
        stored_behavior = np.full((trials, samples, behavior.shape[2]), np.nan)
        stored_behavior[:num_train, :num_bins] = behavior
        attrs["behavior_lag_ms"] = attrs["behavior_lag_applied_ms"] = float(lag_ms)
    return NeuralDataset(data=data, heldout_neurons=np.arange(num_heldin, neurons), behavior=stored_behavior,
                         split=trial_roles(num_train, num_eval, split), attrs=attrs, source=source)


def trial_roles(num_train: int, num_eval: int, split: NlbSplit) -> np.ndarray:
    """``(num_train + num_eval,)`` labels: the training-phase trials 'train' / 'valid' (and 'test' for the
    local test trials), drawn with the seed; the evaluation trials 'test'."""
    if not 0.0 < split.valid_fraction < 1.0:
        raise NeurodynError(f"valid fraction must be in (0, 1); got {split.valid_fraction}")
    rng = np.random.default_rng(split.seed)
    order = rng.permutation(num_train)
    num_test = int(split.local_test_trials)
    num_valid = int(np.floor(split.valid_fraction * (num_train - num_test) + 0.5))
    if num_test < 0 or num_train - num_test - num_valid < 1 or num_valid < 1:
        raise NeurodynError(f"{num_train} training-phase trials cannot give {num_test} local test trials, "
                            f"{num_valid} valid trials and at least one train trial")
    roles = np.array(["train"] * num_train + ["test"] * num_eval, dtype=object)
    roles[order[:num_test]] = "test"
    roles[order[num_test:num_test + num_valid]] = "valid"
    return roles.astype(str)


def _expect(array: np.ndarray, key: str, shape: tuple, source: str, meaning: str = "the training file's") -> None:
    """Refuse ``array`` unless it has ``shape`` (None = any size on that axis)."""
    if array.ndim == len(shape) and all(want is None or got == want for got, want in zip(array.shape, shape)):
        return
    shown = ", ".join("any" if n is None else str(n) for n in shape)
    raise NeurodynError(f"{source}: key '{key}' has shape {array.shape}; expected ({shown}) = {TRAIN_AXES} "
                        f"matching {meaning} trials, bins and neurons")


def _check_counts(data: np.ndarray, source: str) -> None:
    observed = data[~np.isnan(data)]
    if np.isinf(observed).any() or (observed < 0).any() or not np.all(observed == np.round(observed)):
        raise NeurodynError(f"{source}: the spike tensors must hold non-negative whole counts")
