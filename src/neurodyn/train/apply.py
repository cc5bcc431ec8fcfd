"""``neurodyn infer``: apply a trained model to the trials of another data file.

The model (a ``neurodyn train`` folder, a ``pbt_best_model`` folder, or a PBT results folder) is
rebuilt from its checkpoint; the new file must have the same neurons and bin width and suit the
model's observation model, and carry ``ext_input`` when the model was trained with measured inputs.
Every trial of the new file is inferred the way the model's own outputs were (posterior sample and
average, the model's event delay), and written in the output-file layout with ``trial_idx``
indexing the new file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from neurodyn.config import LfadsConfig
from neurodyn.data.event_timing import append_unobserved_bins
from neurodyn.errors import NeurodynError
from neurodyn.observation.registry import read_dataset_for
from neurodyn.runs.checkpoint import build_model, load_checkpoint
from neurodyn.runs.layout import BEST_MODEL_DIR, LEGACY_CHECKPOINT_FILE, TrainLayout, find_model_dir
from neurodyn.runs.outputs import write_split_output
from neurodyn.data.sessions import SessionLayout
from neurodyn.train.inference import select_neurons
from neurodyn.train.run import check_forward_bins, delay_ext_input, infer_outputs, output_attributes


def model_folder(run_dir: str | Path) -> TrainLayout:
    """The folder holding the model's checkpoint: ``run_dir`` or its ``pbt_best_model/``."""
    run_dir = Path(run_dir)
    layout = TrainLayout(find_model_dir(run_dir))
    if not layout.checkpoint.is_file() and (layout.root / LEGACY_CHECKPOINT_FILE).is_file():
        load_checkpoint(layout.checkpoint)  # refuses the pickled checkpoint.pt with its own line
    if not layout.checkpoint.is_file():
        raise NeurodynError(f"{run_dir}: no {layout.checkpoint.name} (expected a 'neurodyn train' folder, a "
                            f"{BEST_MODEL_DIR} folder or a 'neurodyn run' results folder of a finished run)")
    return layout


def pick_session(sessions: SessionLayout, data_path: str | Path, name: str | None) -> int:
    """The session of a stitched model that new data record: ``name``, else the one named like the file's stem."""
    wanted = name if name is not None else Path(data_path).stem
    if wanted in sessions.names:
        return sessions.names.index(wanted)
    listing = ", ".join(sessions.names)
    if name is not None:
        raise NeurodynError(f"--session {name}: the model's sessions are {listing}")
    raise NeurodynError(f"{data_path}: the model stitches several sessions ({listing}) and none is named "
                        f"'{wanted}'; say which one the file records with --session NAME")


def check_new_data(dataset, checkpoint: dict, config: LfadsConfig, source: str, neurons: int | None = None) -> None:
    """One clear line for data that do not fit the model (neurons — ``neurons`` when given, e.g. a
    session's — bin width, measured inputs)."""
    neurons = int(checkpoint["num_neurons"]) if neurons is None else neurons
    if dataset.num_neurons != neurons:
        raise NeurodynError(f"{source}: key 'data' has {dataset.num_neurons} neurons "
                            f"(num_neurons, num_samples, num_trials) but the model was trained on {neurons}")
    trained_bin = checkpoint.get("bin_ms")
    bin_ms = dataset.attrs.get("bin_ms")
    if trained_bin is not None and bin_ms is not None and abs(float(bin_ms) - float(trained_bin)) > 1e-9:
        raise NeurodynError(f"{source}: bins of {float(bin_ms):g} ms (attribute 'bin_ms') but the model was trained "
                            f"on {float(trained_bin):g} ms bins")
    if config.ext_input_dim and dataset.ext_input is None:
        raise NeurodynError(f"{source}: missing key 'ext_input' ({config.ext_input_dim}, num_samples, num_trials): "
                            "the model was trained with measured inputs")
    if dataset.ext_input_dim != config.ext_input_dim:
        raise NeurodynError(f"{source}: key 'ext_input' has {dataset.ext_input_dim} input(s) per bin but the model "
                            f"takes {config.ext_input_dim}")


def infer_new_data(run_dir: str | Path, data_path: str | Path, out_path: str | Path,
                   session: str | None = None) -> dict[str, tuple]:
    """Write the outputs of every trial of ``data_path`` under the model in ``run_dir`` to ``out_path``.

    Parameters
    ----------
    run_dir
        A ``neurodyn train`` folder, a ``pbt_best_model`` folder or a ``neurodyn run`` results folder.
    data_path
        The new data file (same neurons and bin width as the model's training data).
    out_path
        The output h5 file: the layout of ``<split>_output.h5``, ``trial_idx`` indexing ``data_path``.
    session
        A model of several sessions: the session ``data_path`` records (default: the session named
        like its stem); the file must have that session's neurons.

    Returns
    -------
    dict
        Each written array's name and shape (file layout).
    """
    layout = model_folder(run_dir)
    checkpoint = load_checkpoint(layout.checkpoint)
    model, config = build_model(checkpoint["trainer"], int(checkpoint["num_neurons"]))
    dataset = read_dataset_for(data_path, config.observation)
    sessions = SessionLayout.from_dict(checkpoint["sessions"]) if "sessions" in checkpoint else None
    if sessions is None and session is not None:
        raise NeurodynError(f"--session {session}: the model was trained on one data file, so it has no sessions "
                            "to choose from; leave --session out")
    index = None if sessions is None else pick_session(sessions, data_path, session)
    check_new_data(dataset, checkpoint, config, str(data_path),
                   None if sessions is None else sessions.num_neurons[index])
    delay = int(config.event_delay_bins)
    if delay >= dataset.num_samples:
        raise NeurodynError(f"{data_path}: trials of {dataset.num_samples} bins are not longer than the model's "
                            f"event delay ({delay} bins)")
    check_forward_bins(config, dataset)  # the model hides the last forward_bins of every trial here too
    model_data = append_unobserved_bins(dataset.data, delay)
    if sessions is not None:
        model_data = sessions.to_union(model_data, index)
    model_view = dataclasses.replace(dataset, data=model_data, ext_input=delay_ext_input(dataset.ext_input, delay))
    # Empirical Bayes would weigh the new trials against training trials this file does not hold: each
    # new trial gets its own (refined) posterior instead.
    if config.inference == "empirical_bayes":
        config = config.model_copy(update={"inference": "refined"})
    trials = np.arange(dataset.num_trials)
    inferred = infer_outputs(model, model_view, trials, config, session=index)
    attrs = {**output_attributes(config, dataset), "model": str(layout.root)}
    if sessions is not None:
        inferred = select_neurons(inferred, sessions.neurons(index))
        attrs["session"] = sessions.names[index]
    write_split_output(out_path, inferred, trials, attrs=attrs)
    return {name: tuple(reversed(value.shape)) for name, value in inferred.items()}
