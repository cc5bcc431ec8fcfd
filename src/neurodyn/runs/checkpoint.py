"""Checkpoints without pickle: tensors in safetensors, everything else as plain JSON.

A trainer state is a tree of dicts, lists and tuples whose leaves are tensors, NumPy arrays,
numbers, strings, booleans and None. ``encode_state`` stores every tensor (and array) under a
readable name in a safetensors file and the rest of the tree, with a placeholder for each tensor,
as JSON in the file's metadata; ``decode_state`` rebuilds the tree. Neither format can carry code,
so a checkpoint someone shares cannot run anything when loaded, and a file that is not such a
checkpoint (a pickled ``checkpoint.pt`` above all) is refused with one line, never unpickled.
The same bytes carry worker states between PBT processes.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurodyn.config import LfadsConfig
from neurodyn.data.atomic import atomic_path
from neurodyn.errors import NeurodynError
from neurodyn.lfads.model import LFADS
from neurodyn.runs.layout import LEGACY_CHECKPOINT_FILE
from neurodyn.observation.registry import make_observation_model

FORMAT_NAME = "neurodyn.checkpoint"
FORMAT_VERSION = "1"
_TENSOR, _ARRAY, _TUPLE, _ITEMS, _FLOAT = "__tensor__", "__ndarray__", "__tuple__", "__items__", "__float__"


def _flatten(node: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """The JSON-able tree of ``node``, its tensors moved into ``tensors`` under readable unique names."""
    if isinstance(node, (torch.Tensor, np.ndarray)):
        key = name or "tensor"
        while key in tensors:
            key += "_"
        if isinstance(node, torch.Tensor):
            # A copy: safetensors refuses tensors that share memory, as model and optimiser views can.
            tensors[key] = node.detach().to("cpu").contiguous().clone()
            return {_TENSOR: key}
        tensors[key] = torch.from_numpy(np.array(node, copy=True, order="C"))
        return {_ARRAY: key}
    if isinstance(node, dict):
        if all(isinstance(k, str) for k in node) and not ({_TENSOR, _ARRAY, _TUPLE, _ITEMS, _FLOAT} & set(node)):
            return {k: _flatten(v, f"{name}.{k}" if name else k, tensors) for k, v in node.items()}
        # Keys that JSON would turn into strings (the optimiser's integer parameter ids) are kept as pairs.
        return {_ITEMS: [[_flatten(k, f"{name}.key", tensors), _flatten(v, f"{name}.{k}", tensors)]
                         for k, v in node.items()]}
    if isinstance(node, tuple):
        return {_TUPLE: [_flatten(v, f"{name}.{i}", tensors) for i, v in enumerate(node)]}
    if isinstance(node, list):
        return [_flatten(v, f"{name}.{i}", tensors) for i, v in enumerate(node)]
    if isinstance(node, (bool, str, int)) or node is None:
        return node
    if isinstance(node, (float, np.floating)):
        value = float(node)
        return value if math.isfinite(value) else {_FLOAT: repr(value)}  # strict JSON has no inf/nan
    if isinstance(node, np.integer):
        return int(node)
    if isinstance(node, np.bool_):
        return bool(node)
    raise TypeError(f"cannot store a {type(node).__name__} in a checkpoint (at '{name}')")


def _unflatten(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_unflatten(v, tensors) for v in node]
    if isinstance(node, dict):
        if _TENSOR in node:
            return tensors[node[_TENSOR]]
        if _ARRAY in node:
            return tensors[node[_ARRAY]].numpy()
        if _TUPLE in node:
            return tuple(_unflatten(v, tensors) for v in node[_TUPLE])
        if _ITEMS in node:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in node[_ITEMS]}
        if _FLOAT in node:
            return float(node[_FLOAT])
        return {k: _unflatten(v, tensors) for k, v in node.items()}
    return node


def encode_state(state: dict[str, Any]) -> bytes:
    """``state`` as the bytes of a safetensors file (see the module docstring)."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, "", tensors)
    metadata = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "tree": json.dumps(tree, allow_nan=False)}
    return save(tensors, metadata=metadata)


def _header_metadata(blob: bytes, source: str) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's JSON header (8-byte length, then the header)."""
    if len(blob) < 8:
        raise NeurodynError(f"{source}: not a neurodyn checkpoint (too short to be a safetensors file)")
    (length,) = struct.unpack("<Q", blob[:8])
    if length > len(blob) - 8 or length > 100_000_000:
        raise NeurodynError(_not_a_checkpoint(source, blob))
    try:
        header = json.loads(blob[8:8 + length])
    except (UnicodeDecodeError, ValueError):
        raise NeurodynError(_not_a_checkpoint(source, blob)) from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise NeurodynError(f"{source}: a safetensors file, but not a neurodyn checkpoint (no '{FORMAT_NAME}' "
                            "metadata)")
    if metadata.get("version") != FORMAT_VERSION:
        raise NeurodynError(f"{source}: neurodyn checkpoint format version {metadata.get('version')!r}; this "
                            f"neurodyn reads version {FORMAT_VERSION}")
    return metadata


def _not_a_checkpoint(source: str, blob: bytes) -> str:
    if blob[:2] == b"PK" or blob[:1] == b"\x80":
        return (f"{source}: refused: a pickled PyTorch file (neurodyn never unpickles a file, as pickle can run "
                "code); neurodyn checkpoints are safetensors files (checkpoint.safetensors)")
    return f"{source}: not a neurodyn checkpoint (not a safetensors file)"


def decode_state(blob: bytes, source: str = "checkpoint") -> dict[str, Any]:
    """Rebuild a state written by ``encode_state``; anything else is refused with one line naming ``source``."""
    from safetensors.torch import load

    metadata = _header_metadata(blob, source)
    try:
        tensors = load(blob)
        return _unflatten(json.loads(metadata["tree"]), tensors)
    except NeurodynError:
        raise
    except Exception as error:  # a damaged file: safetensors and json raise several types
        raise NeurodynError(f"{source}: damaged neurodyn checkpoint ({type(error).__name__}: {error})") from None


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (complete or absent, never half-written)."""
    blob = encode_state(state)
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The state saved at ``path`` (tensors on the CPU); never unpickles anything."""
    path = Path(path)
    if not path.is_file():
        legacy = path.with_name(LEGACY_CHECKPOINT_FILE)
        if legacy.is_file():
            raise NeurodynError(f"{path.parent} holds {legacy.name}, a pickled checkpoint of neurodyn 0.1: refused "
                                "(neurodyn never unpickles a file, as pickle can run code); train the model again "
                                f"with this version, which writes {path.name}")
        raise NeurodynError(f"checkpoint {path} does not exist")
    return decode_state(path.read_bytes(), str(path))


def build_model(trainer_state: dict[str, Any], num_neurons: int, weights: str = "model") -> tuple[LFADS, LfadsConfig]:
    """The LFADS model of a trainer state (``LfadsTrainer.state_dict()``), in eval mode on the CPU.

    ``weights`` names the state's weights to load: ``model`` (the current ones) or
    ``best_model_state`` (the best seen by early stopping, when the state has them).
    """
    config = LfadsConfig(**trainer_state["config"])
    observation = make_observation_model(config.observation, num_neurons,
                                         **trainer_state.get("observation_options", {}))
    model = LFADS(config, num_neurons, observation)
    state = trainer_state.get(weights) or trainer_state["model"]
    model.load_state_dict(state)
    return model.eval(), config
