"""Digit images read row by row: MNIST from IDX or npz files, or scikit-learn's bundled 8x8 digits."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurodyn.errors import NeurodynError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class DigitData:
    """Images (samples, rows, pixels per row) scaled to [0, 1] and integer labels (samples,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An array from an IDX file (optionally gzip-compressed)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as error:
        raise NeurodynError(f"{path}: cannot read IDX file ({error})")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise NeurodynError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    if len(raw) - header != int(np.prod(shape)) * dtype.itemsize:
        raise NeurodynError(f"{path}: IDX header promises shape {shape} but the file holds "
                            f"{len(raw) - header} data bytes")
    return np.frombuffer(raw[header:], dtype=dtype).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).exists():
            return directory / name
    raise NeurodynError(f"{directory}: no '{stem}' (or .gz) file and no mnist.npz")


def _scaled(images: np.ndarray, labels: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    if images.ndim != 3 or len(images) != len(labels):
        raise NeurodynError(f"{source}: expected images (samples, rows, cols) matching the labels, got "
                            f"{images.shape} and {labels.shape}")
    images = images.astype(np.float32)
    return images / max(float(images.max()), 1.0), labels.astype(np.int64)


def load_mnist(directory: str | os.PathLike) -> DigitData:
    """MNIST from ``mnist.npz`` (keys x_train, y_train, x_test, y_test) or the four standard IDX files."""
    directory = Path(directory)
    npz = directory / "mnist.npz"
    if npz.exists():
        try:
            with np.load(npz) as f:
                arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        except KeyError as error:
            raise NeurodynError(f"{npz}: missing key {error}; expected x_train, y_train, x_test, y_test")
        except (OSError, ValueError) as error:
            raise NeurodynError(f"{npz}: not a readable npz file ({error})")
    else:
        arrays = {"x_train": read_idx(_find(directory, "train-images-idx3-ubyte")),
                  "y_train": read_idx(_find(directory, "train-labels-idx1-ubyte")),
                  "x_test": read_idx(_find(directory, "t10k-images-idx3-ubyte")),
                  "y_test": read_idx(_find(directory, "t10k-labels-idx1-ubyte"))}
    x_train, y_train = _scaled(arrays["x_train"], arrays["y_train"], f"{directory} (training set)")
    x_test, y_test = _scaled(arrays["x_test"], arrays["y_test"], f"{directory} (test set)")
    return DigitData(x_train, y_train, x_test, y_test, f"MNIST from {directory}")


def load_sklearn_digits(test_fraction: float = 0.2, seed: int = 0) -> DigitData:
    """scikit-learn's bundled 8x8 digits (1797 images), a stratified train/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images, labels = _scaled(digits.images, digits.target, "sklearn digits")
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=test_fraction,
                                                        random_state=seed, stratify=labels)
    return DigitData(x_train, y_train, x_test, y_test, "scikit-learn 8x8 digits")


def load_digit_data(mnist_dir: str | os.PathLike | None = None, seed: int = 0) -> DigitData:
    """MNIST when a directory is given, else the offline 8x8 digits."""
    return load_mnist(mnist_dir) if mnist_dir else load_sklearn_digits(seed=seed)


def validation_split(data: DigitData, fraction: float = 0.2, seed: int = 0) -> DigitData:
    """Hold out a stratified ``fraction`` of the training images as a validation set.

    Returns a DigitData whose ``x_train``/``y_train`` are the remaining training images and whose
    ``x_test``/``y_test`` are the validation images; the real test set is not used.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise NeurodynError(f"validation fraction must be in (0, 1), got {fraction}")
    x_fit, x_val, y_fit, y_val = train_test_split(data.x_train, data.y_train, test_size=fraction,
                                                  random_state=seed, stratify=data.y_train)
    return DigitData(x_fit, y_fit, x_val, y_val, f"{data.source} (validation split)")
