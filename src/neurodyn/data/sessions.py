"""Several recording sessions as one dataset for a stitched model.

Sessions share the bin width and the trial length but not their neurons: session ``s`` brings
``N_s`` neurons and ``n_s`` trials. The combined dataset stacks the trials of every session
(session 0's first) over the union of the neurons (session 0's first): a trial of session ``s``
is observed only on its own block of neurons, every other entry is NaN (unobserved). A stitched
model reads each trial through its session's read-in and writes its session's block through the
readout rows of those neurons, so the blocks never mix.

This module only combines and splits arrays; what a model does with the blocks is in
``neurodyn.lfads.stitching``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurodyn.data.seed_format import NeuralDataset
from neurodyn.errors import NeurodynError


@dataclass(frozen=True)
class SessionLayout:
    """Where each session sits in the combined dataset.

    ``names[s]`` is the session's name (its file's stem, unique), ``sources[s]`` its file;
    ``num_neurons[s]``, ``num_trials[s]`` its sizes; its neurons are the combined columns
    ``neuron_offsets[s]`` to ``neuron_offsets[s] + num_neurons[s] - 1`` and its trials the combined
    trials ``trial_offsets[s]`` onwards.
    """

    names: tuple[str, ...]
    sources: tuple[str, ...]
    num_neurons: tuple[int, ...]
    num_trials: tuple[int, ...]

    @property
    def num_sessions(self) -> int:
        return len(self.names)

    @property
    def neuron_offsets(self) -> tuple[int, ...]:
        return tuple(int(x) for x in np.concatenate([[0], np.cumsum(self.num_neurons)[:-1]]))

    @property
    def trial_offsets(self) -> tuple[int, ...]:
        return tuple(int(x) for x in np.concatenate([[0], np.cumsum(self.num_trials)[:-1]]))

    def neurons(self, session: int) -> slice:
        """The session's columns in the combined neuron axis."""
        start = self.neuron_offsets[session]
        return slice(start, start + self.num_neurons[session])

    def trials(self, session: int) -> np.ndarray:
        """The session's trials in the combined trial axis ``(n_s,)``."""
        start = self.trial_offsets[session]
        return np.arange(start, start + self.num_trials[session], dtype=np.int64)

    def session_of_trial(self) -> np.ndarray:
        """The session index of every combined trial ``(sum n_s,)`` int64."""
        return np.repeat(np.arange(self.num_sessions, dtype=np.int64), self.num_trials)

    def to_union(self, data: np.ndarray, session: int) -> np.ndarray:
        """A session's ``data`` ``(trials, T, N_s)`` over the union of the sessions' neurons ``(trials, T, sum N_s)``:
        its own block, NaN (unobserved) elsewhere, float32."""
        union = np.full((*data.shape[:2], sum(self.num_neurons)), np.nan, dtype=np.float32)
        union[..., self.neurons(session)] = data
        return union

    def local_trials(self, session: int, combined_idx: np.ndarray) -> np.ndarray:
        """The trials of ``combined_idx`` that belong to ``session``, as indices into its own file."""
        combined_idx = np.asarray(combined_idx, dtype=np.int64)
        start = self.trial_offsets[session]
        mine = (combined_idx >= start) & (combined_idx < start + self.num_trials[session])
        return combined_idx[mine] - start

    def to_dict(self) -> dict:
        """Plain values for a checkpoint's metadata."""
        return {"names": list(self.names), "sources": list(self.sources),
                "num_neurons": list(self.num_neurons), "num_trials": list(self.num_trials)}

    @classmethod
    def from_dict(cls, values: dict) -> "SessionLayout":
        return cls(tuple(str(x) for x in values["names"]), tuple(str(x) for x in values["sources"]),
                   tuple(int(x) for x in values["num_neurons"]), tuple(int(x) for x in values["num_trials"]))


def session_names(paths: list[str | Path]) -> tuple[str, ...]:
    """Each file's stem as its session's name; two files with the same stem get one clear line."""
    names = [Path(path).stem for path in paths]
    for index, name in enumerate(names):
        if name in names[:index]:
            other = paths[names.index(name)]
            raise NeurodynError(f"{paths[index]}: has the same file name as {other}; a session is named by its file's "
                                "stem (its outputs go to OUT/<stem>/), so rename one of them")
    return tuple(names)


def check_compatible_sessions(datasets: list[NeuralDataset]) -> None:
    """One clear line, naming the file, for sessions that cannot share a model: another trial length,
    bin width, number of measured inputs, or the same data as an earlier file."""
    first = datasets[0]
    first_bin = first.attrs.get("bin_ms")
    for dataset in datasets[1:]:
        if dataset.num_samples != first.num_samples:
            raise NeurodynError(f"{dataset.source}: trials of {dataset.num_samples} bins (key 'data' (num_neurons, "
                                f"num_samples, num_trials)) but {first.source} has {first.num_samples}; sessions of "
                                "one model share the trial length")
        bin_ms = dataset.attrs.get("bin_ms")
        if (bin_ms is None) != (first_bin is None) or (
                bin_ms is not None and abs(float(bin_ms) - float(first_bin)) > 1e-9):
            raise NeurodynError(f"{dataset.source}: attribute 'bin_ms' is {bin_ms} but {first.source} has {first_bin}; "
                                "sessions of one model share the bin width")
        if dataset.ext_input_dim != first.ext_input_dim:
            raise NeurodynError(f"{dataset.source}: key 'ext_input' has {dataset.ext_input_dim} input(s) per bin but "
                                f"{first.source} has {first.ext_input_dim}; sessions share the measured inputs' shape")
    for index, dataset in enumerate(datasets):
        for earlier in datasets[:index]:
            if dataset.data.shape == earlier.data.shape and np.array_equal(dataset.data, earlier.data, equal_nan=True):
                raise NeurodynError(f"{dataset.source}: holds the same data as {earlier.source}; give each session "
                                    "once")


def combine_sessions(datasets: list[NeuralDataset], names: tuple[str, ...]) -> tuple[NeuralDataset, SessionLayout]:
    """The sessions as one dataset over the union of their neurons (see the module docstring).

    Parameters
    ----------
    datasets
        One dataset per session, checked by ``check_compatible_sessions``.
    names
        The sessions' names (``session_names``).

    Returns
    -------
    (NeuralDataset, SessionLayout)
        ``data`` ``(sum n_s, T, sum N_s)`` with NaN outside each trial's own block; ``ext_input``
        stacked; ``heldout_neurons`` in combined columns; ``split`` dropped (each session is split
        on its own, see ``neurodyn.train.run``);
        ``condition`` dropped (labels of different sessions need not mean the same); ``truth`` and
        ``latents`` dropped. The attributes are the first session's.
    """
    check_compatible_sessions(datasets)
    layout = SessionLayout(names, tuple(d.source for d in datasets), tuple(d.num_neurons for d in datasets),
                           tuple(d.num_trials for d in datasets))
    data = np.concatenate([layout.to_union(dataset.data, s) for s, dataset in enumerate(datasets)], axis=0)
    heldout = [dataset.heldout_neurons + layout.neuron_offsets[s] for s, dataset in enumerate(datasets)
               if dataset.heldout_neurons is not None]
    ext_input = None
    if datasets[0].ext_input is not None:
        ext_input = np.concatenate([d.ext_input for d in datasets], axis=0)
    combined = NeuralDataset(
        data=data, heldout_neurons=np.concatenate(heldout) if heldout else None, attrs=dict(datasets[0].attrs),
        source=" + ".join(layout.sources), ext_input=ext_input)
    return combined, layout
