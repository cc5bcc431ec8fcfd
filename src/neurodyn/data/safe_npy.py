"""Read ``.npy`` files that hold Python objects (suite2p's ``ops.npy`` and ``stat.npy``) without
running any code from them.

``np.load(..., allow_pickle=True)`` unpickles the object part, and unpickling can call any function
the file names: a crafted file runs code. Here the pickle stream is read by an unpickler that builds
only plain data (dicts, lists, strings, numbers: pickle's own opcodes) and numpy arrays, scalars
and dtypes; any other class or function the file names becomes an inert ``UnreadableObject`` that
keeps nothing and calls nothing. suite2p's files hold only such plain data and arrays.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

# (module, name) pairs a numpy object array's pickle may name, in numpy 1.x and 2.x spellings.
_NUMPY_GLOBALS = frozenset(
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) | {("numpy", "ndarray"), ("numpy", "dtype")}


class UnreadableObject:
    """Stands in for an object of a class the file names but this reader does not build."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        return UnreadableObject


def load_object_npy(path: str | Path) -> Any:
    """The content of the ``.npy`` file at ``path``: a numeric array as ``np.load`` gives it, an
    object array read without running code from it, and a 0-d object array (a pickled dict, as
    suite2p's ``ops.npy``) as its single object.

    Raises ``ValueError`` (not a ``.npy`` file, a damaged header) and ``pickle.UnpicklingError`` /
    ``EOFError`` (a damaged object part), as ``np.load`` would."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        if not dtype.hasobject:
            handle.seek(0)
            return np.load(handle, allow_pickle=False)
        # np.save writes an object array as one pickle of the whole array after the header.
        loaded = _DataOnlyUnpickler(handle).load()
    if not isinstance(loaded, np.ndarray):
        raise pickle.UnpicklingError(f"expected a pickled numpy array of shape {shape}; got {type(loaded).__name__}")
    return loaded.item() if loaded.shape == () else loaded
