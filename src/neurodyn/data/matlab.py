"""Convert a MATLAB ``.mat`` file into the seed h5 format (replaces the seed's ``convert_h5.m``).

The seed describes its data in MATLAB terms: a variable of size ``num_neurons x num_samples x
num_trials``. That variable becomes the h5 key ``data`` ``(num_neurons, num_samples, num_trials)``
as h5py reads it, whatever the .mat version:

- v5/v6/v7 files are read with ``scipy.io.loadmat``, which keeps MATLAB's dimension order;
- v7.3 files are HDF5 files written column-major, so h5py sees every array with its dimensions
  reversed; they are reversed back here, so both versions give identical results.

A variable with another dimension order is described with ``axes`` (MATLAB's order, e.g.
``("trials", "samples", "neurons")``). MATLAB drops trailing singleton dimensions, so a 2-D
variable is read as the three axes with the last one of size 1 (e.g. one trial). A cell array
of per-trial matrices (``axes`` without ``trials``) may hold trials of unequal length: shorter
trials are padded with NaN (= not sampled) at the end and their lengths are kept in the file
attribute ``trial_num_samples``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from neurodyn.data.seed_format import NeuralDataset, write_dataset
from neurodyn.errors import NeurodynError

DATA_AXES = ("neurons", "samples", "trials")
# MATLAB v7.3 keeps cell contents and internal data in these groups; they are not user variables.
INTERNAL_GROUPS = ("#refs#", "#subsystem#")


@dataclass(frozen=True)
class MatVariables:
    """Names of the variables to convert; ``None`` = not present in the output."""

    data: str | None = None  # None: "data" if present, else the only numeric 3-D (or cell) variable
    truth: str | None = None
    latents: str | None = None
    condition: str | None = None


def read_mat_dataset(path: str | os.PathLike, variables: MatVariables = MatVariables(),
                     axes: tuple[str, str, str] = DATA_AXES) -> NeuralDataset:
    """Read a .mat file (any version) into a ``NeuralDataset`` (trials-first in memory).

    ``axes``: what each MATLAB dimension of the data variable is, a permutation of
    ``("neurons", "samples", "trials")``; ``truth`` has the same axes, ``latents`` the same with
    latent dimensions in place of neurons, ``condition`` is a vector with one label per trial.
    Variable names may reach into structs with dots, e.g. ``"session.counts"``.
    """
    source = str(path)
    axes = _check_axes(axes)
    mat = _open_mat(Path(path), source)
    data_name = variables.data or _default_data_variable(mat, source)
    data, trial_lengths = _to_file_layout(mat.get(data_name), axes, data_name, source)
    num_neurons, num_samples, num_trials = data.shape

    truth = latents = condition = None
    if variables.truth:
        truth, _ = _to_file_layout(mat.get(variables.truth), axes, variables.truth, source)
        _expect_shape(truth, data.shape, variables.truth, "like the data variable", source, axes)
    if variables.latents:
        latents, _ = _to_file_layout(mat.get(variables.latents), axes, variables.latents, source)
        _expect_shape(latents, (latents.shape[0], num_samples, num_trials), variables.latents,
                      "(num_latents, num_samples, num_trials) like the data", source, axes)
    if variables.condition:
        condition = _condition_labels(mat.get(variables.condition), num_trials, data.shape, variables.condition,
                                      source, axes)

    attrs = {"source_file": Path(path).name, "source_variable": data_name, "source_axes": ",".join(axes)}
    if trial_lengths is not None:
        attrs["trial_num_samples"] = trial_lengths

    def trials_first(array):
        return None if array is None else np.transpose(array, (2, 1, 0))

    return NeuralDataset(data=trials_first(data), truth=trials_first(truth), latents=trials_first(latents),
                         condition=condition, attrs=attrs, source=source)


def convert_mat_file(mat_path: str | os.PathLike, out_path: str | os.PathLike,
                     variables: MatVariables = MatVariables(), axes: tuple[str, str, str] = DATA_AXES,
                     bin_ms: float | None = None) -> NeuralDataset:
    """Read ``mat_path`` and write the seed h5 file ``out_path`` atomically; returns the dataset."""
    dataset = read_mat_dataset(mat_path, variables, axes)
    if bin_ms is not None:
        if not bin_ms > 0:
            raise NeurodynError(f"bin width must be a positive number of ms; got {bin_ms}")
        dataset.attrs["bin_ms"] = float(bin_ms)
    write_dataset(out_path, dataset)
    return dataset


def describe_dataset(dataset: NeuralDataset) -> str:
    """One line: trials x samples x neurons and which optional keys are present."""
    extras = [key for key in ("truth", "latents", "condition") if getattr(dataset, key) is not None]
    unobserved = float(np.isnan(dataset.data).mean())
    bin_ms = dataset.attrs.get("bin_ms")
    bins = f"{dataset.num_samples} bins" + (f" of {float(bin_ms):g} ms" if bin_ms is not None else "")
    return (f"{dataset.num_trials} trials x {bins} x {dataset.num_neurons} neurons"
            f"{'; with ' + ', '.join(extras) if extras else ''}"
            f"{f'; {unobserved:.1%} of entries NaN (not sampled)' if unobserved else ''}")


# ---------------------------------------------------------------------------------------------
# Opening either .mat version behind one small interface


def open_mat(path: str | os.PathLike) -> "MatFile":
    """The variables of a .mat file (v5/v6/v7 or v7.3) by name, each in MATLAB's dimension order.

    ``MatFile.get("s.field")`` gives a variable (an ndarray, a list for a cell array, a dict for a
    struct), ``MatFile.numeric(name)`` a real numeric array or one line naming the file and
    variable; a missing or unreadable file raises ``NeurodynError``.
    """
    return _open_mat(Path(path), str(path))


class MatFile:
    """Variables of a .mat file as NumPy arrays in MATLAB's dimension order (cells -> lists)."""

    def __init__(self, source: str, values: dict):
        self.source = source
        self._values = values  # top-level name -> value, already in MATLAB order

    def names(self) -> list[str]:
        return sorted(self._values)

    def describe(self) -> str:
        parts = []
        for name in self.names():
            value = self._values[name]
            if isinstance(value, list):
                parts.append(f"{name} (cell of {len(value)})")
            elif isinstance(value, dict):
                parts.append(f"{name} (struct: {', '.join(sorted(value))})")
            else:
                parts.append(f"{name} {' x '.join(str(n) for n in np.shape(value))}")
        return "; ".join(parts) or "none"

    def get(self, name: str):
        value: object = self._values
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                raise NeurodynError(f"{self.source}: variable '{name}' not found; variables present: {self.describe()}")
            value = value[part]
        return value

    def numeric(self, name: str) -> np.ndarray:
        """Variable ``name`` as a real numeric array (``NeurodynError`` naming it otherwise)."""
        return _numeric(self.get(name), name, self.source)


def _open_mat(path: Path, source: str) -> MatFile:
    from scipy.io import loadmat
    from scipy.io.matlab import matfile_version

    if not path.is_file():
        raise NeurodynError(f"{source}: .mat file not found")
    try:
        major, _ = matfile_version(str(path))
    except Exception as error:  # scipy raises ValueError/TypeError/MatReadError for non-.mat files
        raise NeurodynError(f"{source}: not a MATLAB .mat file ({error})") from None
    if major == 2:  # v7.3: an HDF5 file
        return MatFile(source, _read_v73(path, source))
    try:
        raw = loadmat(str(path), squeeze_me=False, struct_as_record=True, mat_dtype=False)
    except Exception as error:
        raise NeurodynError(f"{source}: cannot read the .mat file (corrupt or truncated?): {error}") from None
    return MatFile(source, {name: _from_v5(value) for name, value in raw.items() if not name.startswith("__")})


def _from_v5(value):
    """loadmat value -> ndarray (MATLAB order), list (cell) or dict (scalar struct)."""
    if isinstance(value, np.ndarray) and value.dtype.names:  # struct array
        if value.size != 1:
            return value  # struct arrays are refused later as non-numeric
        return {field: _from_v5(value[field].reshape(-1)[0]) for field in value.dtype.names}
    if isinstance(value, np.ndarray) and value.dtype == object:  # cell array, column-major like MATLAB
        return [_from_v5(item) for item in value.reshape(-1, order="F")]
    return value


def _read_v73(path: Path, source: str) -> dict:
    try:
        with h5py.File(path, "r") as f:
            return {name: _from_v73(f, f[name]) for name in f if name not in INTERNAL_GROUPS}
    except NeurodynError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise NeurodynError(f"{source}: cannot read the v7.3 .mat file (corrupt or truncated?): {error}") from None


def _from_v73(f: h5py.File, node):
    """v7.3 node -> ndarray (MATLAB order), list (cell) or dict (struct)."""
    if isinstance(node, h5py.Group):
        return {name: _from_v73(f, node[name]) for name in node}
    matlab_class = node.attrs.get("MATLAB_class", b"")
    matlab_class = matlab_class.decode() if isinstance(matlab_class, bytes) else str(matlab_class)
    if node.attrs.get("MATLAB_empty", 0):
        return np.zeros((0, 0))
    value = node[()]
    if matlab_class == "cell" or value.dtype == h5py.ref_dtype:
        # Column-major storage: reversing h5py's axes gives MATLAB's; F-order then lists the cells
        # in MATLAB's linear order (c{1}, c{2}, ...).
        refs = np.transpose(value).reshape(-1, order="F")
        return [_from_v73(f, f[ref]) for ref in refs]
    if value.dtype.names:  # complex numbers are stored as a (real, imag) compound
        return value
    # h5py reads the column-major array with its dimensions reversed; transposing restores them.
    return np.transpose(value)


# ---------------------------------------------------------------------------------------------
# Orientation


def _check_axes(axes) -> tuple[str, str, str]:
    axes = tuple(axes)
    if sorted(axes) != sorted(DATA_AXES):
        raise NeurodynError(f"axes {','.join(axes)} must name each of {', '.join(DATA_AXES)} once, "
                            "in the order of the MATLAB variable's dimensions")
    return axes


def _default_data_variable(mat: MatFile, source: str) -> str:
    if "data" in mat.names():
        return "data"
    candidates = [name for name in mat.names()
                  if isinstance(mat.get(name), list)
                  or (isinstance(mat.get(name), np.ndarray) and mat.get(name).ndim == 3)]
    if len(candidates) == 1:
        return candidates[0]
    raise NeurodynError(f"{source}: no variable 'data' and {len(candidates) or 'no'} 3-D variable(s) to choose from; "
                        f"name the data variable with --var (num_neurons x num_samples x num_trials). "
                        f"Variables present: {mat.describe()}")


def _numeric(value, name: str, source: str) -> np.ndarray:
    if isinstance(value, dict):
        raise NeurodynError(f"{source}: variable '{name}' is a struct with fields {', '.join(sorted(value))}; "
                            f"name a field, e.g. '{name}.{sorted(value)[0]}'")
    if not isinstance(value, np.ndarray) or value.dtype.names or value.dtype == object or not (
            np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
        kind = getattr(value, "dtype", type(value).__name__)
        raise NeurodynError(f"{source}: variable '{name}' is not a real numeric array ({kind}); "
                            "expected numbers (double, single, integer or logical)")
    if np.iscomplexobj(value):
        raise NeurodynError(f"{source}: variable '{name}' is complex; expected real numbers")
    return value


def _to_file_layout(value, axes: tuple[str, str, str], name: str, source: str) -> tuple[np.ndarray, list | None]:
    """A variable in MATLAB order -> ``(features, samples, trials)`` float64, plus trial lengths for cells."""
    if isinstance(value, list):
        return _cell_trials_to_file_layout(value, axes, name, source)
    array = _numeric(value, name, source).astype(np.float64)
    expected = " x ".join(f"num_{axis}" for axis in axes)
    if array.ndim == 2:
        array = array[..., np.newaxis]  # MATLAB dropped a trailing singleton dimension
    if array.ndim != 3 or 0 in array.shape:
        raise NeurodynError(f"{source}: variable '{name}' has size {' x '.join(map(str, np.shape(value)))}; "
                            f"expected a non-empty {expected} array (MATLAB order; see --axes)")
    order = [axes.index(axis) for axis in DATA_AXES]
    return np.transpose(array, order), None


def _cell_trials_to_file_layout(cells: list, axes, name: str, source: str) -> tuple[np.ndarray, list]:
    """A cell array of per-trial matrices -> ``(features, samples, trials)``, NaN-padded at the end."""
    trial_axes = tuple(axis for axis in axes if axis != "trials")
    expected = " x ".join(f"num_{axis}" for axis in trial_axes)
    if not cells:
        raise NeurodynError(f"{source}: variable '{name}' is an empty cell array; expected one {expected} matrix per trial")
    trials = []
    for index, cell in enumerate(cells):
        matrix = _numeric(cell, f"{name}{{{index + 1}}}", source).astype(np.float64)
        if matrix.ndim != 2 or 0 in matrix.shape:
            raise NeurodynError(f"{source}: variable '{name}{{{index + 1}}}' has size "
                                f"{' x '.join(map(str, matrix.shape))}; expected a {expected} matrix per trial")
        # -> (features, samples)
        trials.append(matrix if trial_axes[0] == "neurons" else matrix.T)
    num_features = trials[0].shape[0]
    for index, matrix in enumerate(trials):
        if matrix.shape[0] != num_features:
            raise NeurodynError(f"{source}: variable '{name}{{{index + 1}}}' has {matrix.shape[0]} neurons but "
                                f"'{name}{{1}}' has {num_features}; every trial needs the same neurons "
                                f"({expected}, see --axes)")
    lengths = [matrix.shape[1] for matrix in trials]
    stacked = np.full((num_features, max(lengths), len(trials)), np.nan)
    for index, matrix in enumerate(trials):
        stacked[:, : matrix.shape[1], index] = matrix
    return stacked, lengths


def _expect_shape(array, expected, name, meaning, source, axes) -> None:
    if array.shape != tuple(expected):
        raise NeurodynError(f"{source}: variable '{name}' gives shape {array.shape} in (features, samples, trials) "
                            f"order; expected {tuple(expected)} = {meaning} (MATLAB axes {','.join(axes)})")


def _condition_labels(value, num_trials: int, data_shape, name: str, source: str, axes) -> np.ndarray:
    labels = _numeric(value, name, source)
    if labels.ndim == 2 and 1 in labels.shape:
        labels = labels.reshape(-1)
    if labels.shape != (num_trials,):
        hint = ""
        sizes = dict(zip(DATA_AXES, data_shape))
        matches = [axis for axis in ("neurons", "samples") if labels.shape == (sizes[axis],)]
        if matches:
            hint = (f"; it matches the {matches[0]} axis instead, so the data variable is probably in another "
                    f"orientation: give its MATLAB dimension order with --axes (now {','.join(axes)})")
        raise NeurodynError(f"{source}: variable '{name}' has {labels.size} label(s) of size "
                            f"{' x '.join(map(str, np.shape(value)))}; expected one per trial ({num_trials},){hint}")
    if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
        raise NeurodynError(f"{source}: variable '{name}' must hold integer condition labels, one per trial")
    return labels.astype(np.int64)
