"""``neurodyn map-to-latents``: how well a run's inferred rates recover the true latent states.

The ``map_to_latents`` analysis of RADICaL's synthetic benchmark: a ridge regression (penalty
chosen by cross-validation on the training trials) from the inferred log-rates to the true ``latents``, fit on the training
trials and scored (R^2 per latent dimension and overall) on the held-out trials, plus a figure of
predicted vs true latents for several example conditions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from neurodyn.data.atomic import write_text_atomic
from neurodyn.data.seed_format import read_dataset
from neurodyn.errors import NeurodynError
from neurodyn.evaluate.figures import plot_latent_predictions, save_figure
from neurodyn.evaluate.metrics import map_to_latents
from neurodyn.evaluate.report import check_outputs_match_data
from neurodyn.runs.layout import LATENTS_FIGURE, LATENTS_JSON, find_output_dir, report_dir
from neurodyn.runs.outputs import held_out_split, other_data_file_note, read_run_outputs

JSON_NAME = LATENTS_JSON
FIGURE_NAME = LATENTS_FIGURE


def map_latents_run(results_dir: str | os.PathLike, data_path: str | os.PathLike,
                    figure_path: str | os.PathLike | None = None, num_conditions: int = 4) -> dict:
    """Fit the ridge map on the run's train trials, score it on its valid (test) trials.

    ``results_dir`` is a PBT results folder (its ``pbt_best_model/`` is used) or a run folder of
    ``neurodyn train``. Writes ``map_to_latents.json`` and ``map_to_latents.png`` into it (atomically)
    and returns the JSON's dict: ``latent_r2``, ``latent_r2_per_dim``, ``ridge_alpha``, trial counts,
    paths.
    """
    results_dir = Path(results_dir)
    output_dir = find_output_dir(results_dir, data_path)
    outputs = read_run_outputs(output_dir, data_path=data_path)
    dataset = read_dataset(data_path)
    if dataset.latents is None:
        raise NeurodynError(f"{data_path}: key 'latents' is missing; map-to-latents needs the true latent states "
                            "(num_latents, num_samples, num_trials)")
    check_outputs_match_data(outputs, dataset, output_dir, data_path)
    notes = [note for note in [other_data_file_note(results_dir, data_path)] if note]
    # Scored on the file's test trials when it names them (never used for any choice), else on the
    # validation trials.
    train = outputs["train"]
    scored_split = held_out_split(outputs)
    test = outputs[scored_split]
    true_latents = dataset.latents[test.trial_idx]
    mapping = map_to_latents(train.rates, dataset.latents[train.trial_idx], test.rates, true_latents)
    results_dir = report_dir(results_dir, output_dir)
    figure_path = Path(figure_path) if figure_path is not None else results_dir / FIGURE_NAME
    condition = dataset.condition[test.trial_idx] if dataset.condition is not None else None
    figure = plot_latent_predictions(
        mapping.test_predictions, true_latents, condition, test.trial_idx, num_conditions,
        title=f"map_to_latents: {Path(data_path).name}, {scored_split} trials (R^2 {mapping.r2:.3f})")
    save_figure(figure, figure_path)
    json_path = results_dir / JSON_NAME
    result = {
        "latent_r2": mapping.r2,
        "latent_r2_per_dim": [float(v) for v in mapping.r2_per_dim],
        "ridge_alpha": mapping.alpha,
        "num_train_trials": int(train.trial_idx.size),
        "num_test_trials": int(test.trial_idx.size),
        "scored_split": scored_split,
        "notes": notes,
        "output_dir": str(output_dir),
        "data_path": str(data_path),
        "json": str(json_path),
        "figure": str(figure_path),
    }
    write_text_atomic(json_path, json.dumps(result, indent=2) + "\n")
    return result


def format_latent_mapping(result: dict) -> str:
    """The printed summary of ``map_latents_run``."""
    per_dim = ", ".join(f"{value:.3f}" for value in result["latent_r2_per_dim"])
    scored = result.get("scored_split", "test")
    return (f"map_to_latents ({result['num_train_trials']} train -> {result['num_test_trials']} {scored} trials, "
            f"ridge alpha {result['ridge_alpha']:g})\n"
            f"  R^2 per latent dimension: {per_dim}\n"
            f"  R^2 overall:              {result['latent_r2']:.4f}\n"
            f"  saved: {result['json']}, {result['figure']}"
            + "".join(f"\n  note: {note}" for note in result.get("notes", [])))
