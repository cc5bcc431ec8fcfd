"""``neurodyn evaluate``: score a trained run against the data file's ground truth.

Reads the run's outputs and the dataset, computes the metrics of ``metrics.py``, ``cobps.py`` and
``nlb.py`` on the valid trials, and on the test trials when the data file names some (the ridge
maps to latents and to behaviour are fit on the train trials), writes ``evaluation.json`` and a
figure, and returns the metrics as a dict. Metrics whose ground truth the data file lacks are
skipped with a note; the Neural Latents Benchmark metrics it cannot give are listed with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
import math
import os
from pathlib import Path

import numpy as np

from neurodyn.data.atomic import write_text_atomic
from neurodyn.data.continuous import is_continuous
from neurodyn.data.event_timing import advance_events
from neurodyn.data.seed_format import read_dataset
from neurodyn.errors import NeurodynError
from neurodyn.evaluate.cobps import co_bps
from neurodyn.evaluate.fpbps import fp_bps
from neurodyn.evaluate.figures import plot_data_summary, plot_inferred_vs_true, save_figure
from neurodyn.runs.tables import find_training_logs
from neurodyn.evaluate.metrics import (bits_per_spike, gaussian_log_likelihood, map_to_latents, observed_r2,
                                      rate_r2)
from neurodyn.evaluate.nlb import NLB_CV_FOLDS, behavior_lag_bins, behavior_pairs, psth_r2, velocity_r2
from neurodyn.runs.layout import (EVALUATION_FIGURE, EVALUATION_JSON, EVALUATION_SUMMARY_FIGURE, find_output_dir,
                                  output_file_name, report_dir)
from neurodyn.runs.outputs import RunOutput, other_data_file_note, rates_in_file_order, read_run_outputs

JSON_NAME = EVALUATION_JSON
FIGURE_NAME = EVALUATION_FIGURE


def check_outputs_match_data(outputs: dict[str, RunOutput], dataset, output_dir: Path, data_path) -> None:
    """Raise if a run's output files do not belong to ``dataset`` (trial indices, neurons, samples)."""
    for split, out in outputs.items():
        where = f"{output_dir / output_file_name(split)}"
        if out.trial_idx.size and (out.trial_idx.min() < 0 or out.trial_idx.max() >= dataset.num_trials):
            raise NeurodynError(f"{where}: 'trial_idx' runs from {out.trial_idx.min()} to {out.trial_idx.max()} "
                                f"but {data_path} has {dataset.num_trials} trials; was it trained on this file?")
        if out.rates.shape[1:] != (dataset.num_samples, dataset.num_neurons):
            raise NeurodynError(f"{where}: 'rates' cover {out.rates.shape[2]} neurons x {out.rates.shape[1]} "
                                f"samples but {data_path} has {dataset.num_neurons} x {dataset.num_samples}")
    if outputs["valid"].trial_idx.size == 0:
        raise NeurodynError(f"{output_dir / output_file_name('valid')}: holds no valid trials to evaluate")


def nlb_not_computed(dataset, forward_bins: int = 0) -> dict[str, str]:
    """The Neural Latents Benchmark metrics this data file (and a run with ``forward_bins``) cannot give:
    metric key -> one-line reason.

    Stored in ``evaluation.json`` as ``nlb_not_computed`` and printed by ``format_metrics``; a new
    NLB metric adds its own check here.
    """
    reasons = {}
    if dataset.heldout_neurons is None or not dataset.heldout_neurons.size:
        reasons["co_bps"] = "co-bps: the data file has no 'heldout_neurons' key (neurons hidden from the encoder)"
    if dataset.behavior is None:
        reasons["vel_r2"] = "vel R^2: the data file has no 'behavior' key (measured behaviour to decode)"
    if dataset.condition is None:
        reasons["psth_r2"] = "psth R^2: the data file has no 'condition' key (trial conditions to average over)"
    if forward_bins == 0:
        reasons["fp_bps"] = ("fp-bps: the run has no forward-prediction window (train it with forward_bins > 0: its "
                             "last bins hidden from the encoders)")
    return reasons


def _holds_counts(data: np.ndarray) -> bool:
    """True if every observed entry is a non-negative integer (bits per spike needs spike counts)."""
    observed = data[~np.isnan(data)]
    return bool(np.all(observed >= 0) and np.all(observed == np.round(observed)))


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN/inf; an undefined score is stored as null."""
    return float(value) if math.isfinite(value) else None


def evaluate_run(
    run_dir: str | os.PathLike, data_path: str | os.PathLike, figure_path: str | os.PathLike | None = None,
    lag_ms: float | None = None,
) -> dict:
    """Evaluate the run in ``run_dir`` (a run directory or a PBT results directory) on ``data_path``.

    Parameters
    ----------
    run_dir : str or PathLike
        A ``neurodyn train`` output folder, or a ``neurodyn run`` results folder (its
        ``pbt_best_model/`` is scored).
    data_path : str or PathLike
        The data file the run was trained on. Metrics whose ground truth it lacks (``truth``,
        ``latents``, spike counts, ``heldout_neurons``, ``behavior``, ``condition``; a run without
        ``forward_bins``) are skipped with a note or a reason in ``nlb_not_computed``.
    figure_path : str or PathLike, optional
        Where to write the example-trial figure (default ``run_dir/evaluation.png``).
    lag_ms : float, optional
        vel R^2 pairs the rates at t with the behaviour at t + this lag (ms); default the data file's
        ``behavior_lag_ms`` (NLB's lag, recorded by ``neurodyn prepare nlb``), else 0. A behaviour the
        file stores already shifted (``behavior_lag_applied_ms``) is not shifted again.

    Returns
    -------
    dict
        The contents of ``evaluation.json`` (below).

    Notes
    -----
    Writes ``run_dir/evaluation.json`` and the figure (``run_dir/evaluation.png`` unless
    ``figure_path`` is given), both atomically. Returns the dict stored in the JSON: ``rate_r2``,
    ``bits_per_spike``, ``co_bps`` (held-out neurons, on the bins the encoders saw), ``fp_bps`` (all
    neurons, on the last ``forward_bins`` bins of a run trained with ``forward_bins`` > 0; see
    ``evaluate.fpbps``), ``vel_r2`` (main window: the bins before the forward bins; the decoder fit
    on the train trials, and for the test trials on the train and valid trials, as NLB fits it on
    every training-phase trial), ``vel_lag_ms``, ``psth_r2`` (main window), ``psth_reference`` (``'truth'`` or ``'data'``: what
    the rate PSTHs were compared with), ``latent_r2``, ``latent_r2_per_dim``, ``latent_ridge_alpha``
    (each None when skipped); for data that are not spike counts (continuous signals), instead of bits
    per spike: ``observed_r2`` (R^2 of the inferred signal against the held-in channels' observed
    entries, main window), ``co_r2`` (the same on the held-out channels, which no encoder saw) and
    ``gaussian_ll`` (nats per observed held-in entry, for a run that wrote a ``std``:
    ``observation: gaussian``); ``nlb_not_computed`` (Neural Latents Benchmark metric -> why it could
    not be computed), ``test`` (the test trials' scores, when the data file names test trials, with
    their own ``not_computed``: e.g. NLB's evaluation trials, whose held-out neurons, forward bins and
    behaviour are withheld, get every other metric),
    ``num_train_trials``, ``num_valid_trials``, ``num_neurons``, ``num_samples``,
    ``run_dir``, ``output_dir``, ``data_path``, ``evaluation_json``, ``figure``, ``summary_figure``
    (``evaluation_summary.png``: condition-averaged data vs model, factor PCs, training curve), ``notes``.
    """
    run_dir = Path(run_dir)
    output_dir = find_output_dir(run_dir, data_path)
    outputs = read_run_outputs(output_dir, data_path=data_path)
    # No observation-model check: evaluate serves every observation model; bits per spike checks for
    # spike counts itself, and the continuous scores stand in for it otherwise.
    dataset = read_dataset(data_path)
    check_outputs_match_data(outputs, dataset, output_dir, data_path)
    train, valid = outputs["train"], outputs["valid"]
    lag_bins, lag = behavior_lag_bins(dataset.attrs, lag_ms) if dataset.behavior is not None else (0, None)
    scored = _split_scores(valid, train, dataset, lag_bins)
    result: dict = {
        "run_dir": str(run_dir),
        "output_dir": str(output_dir),
        "data_path": str(data_path),
        "num_train_trials": int(train.trial_idx.size),
        "num_valid_trials": int(valid.trial_idx.size),
        "num_neurons": int(dataset.num_neurons),
        "num_samples": int(dataset.num_samples),
        **scored.scores,
        "vel_lag_ms": lag,
        "nlb_not_computed": {**nlb_not_computed(dataset, int(valid.attrs.get("forward_bins", 0))),
                             **scored.not_computed},
    }
    notes, counts, true_rates, true_latents, mapping = (scored.notes, scored.counts, scored.true_rates,
                                                       scored.true_latents, scored.mapping)
    if valid.attrs.get("validation") == "entries":
        notes.append("the valid trials' held-in entries trained this model (validation: entries): their co-bps and "
                     "fp-bps score entries it never saw, their other scores do not")
    other_file = other_data_file_note(run_dir, data_path)
    if other_file:
        notes.insert(0, other_file)
    if "test" in outputs:
        # NLB fits the behaviour decoder of its evaluation trials on every training-phase trial.
        test = _split_scores(outputs["test"], train, dataset, lag_bins, decoder_fit=[train, valid])
        result["test"] = {"num_trials": int(outputs["test"].trial_idx.size),
                          **{key: test.scores[key] for key in ("rate_r2", "bits_per_spike", "co_bps", "latent_r2",
                                                                "vel_r2", "psth_r2", "fp_bps", "observed_r2",
                                                                "co_r2", "gaussian_ll")},
                          "not_computed": test.not_computed}

    run_dir = report_dir(run_dir, output_dir)
    figure_path = Path(figure_path) if figure_path is not None else run_dir / FIGURE_NAME
    condition = dataset.condition[valid.trial_idx] if dataset.condition is not None else None
    fig = plot_inferred_vs_true(
        valid.rates, counts, true_rates=true_rates,
        predicted_latents=mapping.test_predictions if mapping is not None else None,
        true_latents=true_latents, condition=condition, trial_ids=valid.trial_idx,
        title=f"{run_dir.name}: example valid trials of {Path(data_path).name} "
        f"(rate R^2 {_fmt(result['rate_r2'], 3)}, latent R^2 {_fmt(result['latent_r2'], 3)})",
    )
    save_figure(fig, figure_path)
    # What a scientist looks at on real data, ground truth or not: PSTHs, factor PCs, training curve.
    summary_path = (run_dir / EVALUATION_SUMMARY_FIGURE if figure_path == run_dir / FIGURE_NAME
                    else figure_path.with_name(f"{figure_path.stem}_summary.png"))
    bin_ms = dataset.attrs.get("bin_ms")
    save_figure(plot_data_summary(valid.rates, counts, valid.factors, condition,
                                  bin_ms=float(bin_ms) if bin_ms is not None else None,
                                  **find_training_logs(output_dir, run_dir if output_dir != run_dir else None),
                                  title=f"{run_dir.name}: valid trials of {Path(data_path).name}"), summary_path)

    if is_continuous(dataset.attrs):  # a continuous session: score its merged series too
        from neurodyn.evaluate.continuous import evaluate_continuous

        result["continuous"] = evaluate_continuous(outputs, dataset)
    json_path = run_dir / JSON_NAME
    result.update(evaluation_json=str(json_path), figure=str(figure_path), summary_figure=str(summary_path), notes=notes)
    write_text_atomic(json_path, json.dumps(result, indent=2, allow_nan=False) + "\n")
    return result


@dataclass
class _SplitScores:
    """One split's scores (the JSON keys) and what the figures reuse."""

    scores: dict
    notes: list[str]
    not_computed: dict  # metric key -> why the data cannot give it for these trials
    counts: np.ndarray
    true_rates: np.ndarray | None
    true_latents: np.ndarray | None
    mapping: object | None


def _split_scores(scored: RunOutput, train: RunOutput, dataset, lag_bins: int = 0,
                  decoder_fit: list[RunOutput] | None = None) -> _SplitScores:
    """Rate R^2, bits per spike, co-bps, vel R^2, psth R^2 and latent R^2 of one split's trials (each None
    when the data lack what it needs, with a note or a ``not_computed`` reason); the latent map is fit on
    the train trials, the behaviour decoder on ``decoder_fit`` (default the train trials), pairing rates
    with the behaviour ``lag_bins`` later."""
    # The observations as the model was fit to them (moved earlier by its event delay, if any).
    counts = advance_events(dataset.data[scored.trial_idx], scored.event_delay_bins)
    forward_bins = int(scored.attrs.get("forward_bins", 0))
    notes: list[str] = []
    not_computed: dict = {}
    scores: dict = {"rate_r2": None, "bits_per_spike": None, "co_bps": None, "vel_r2": None, "psth_r2": None,
                    "psth_reference": None, "latent_r2": None, "latent_r2_per_dim": None, "latent_ridge_alpha": None,
                    "observed_r2": None, "co_r2": None, "gaussian_ll": None}
    true_rates = None
    if dataset.truth is None:
        notes.append("rate R^2 skipped: the data file has no 'truth' (true rates)")
    else:
        true_rates = dataset.truth[scored.trial_idx]
        scores["rate_r2"] = _finite_or_none(rate_r2(true_rates, scored.rates))
    main = slice(0, counts.shape[1] - forward_bins)  # the bins the encoders saw; the forward window is fp-bps's
    if _holds_counts(counts):
        scores["bits_per_spike"] = _finite_or_none(bits_per_spike(scored.rates, counts))
        if dataset.heldout_neurons is not None and dataset.heldout_neurons.size:
            # The model never saw these neurons' activity: their bits per spike measure how well the
            # population dynamics predict unseen neurons (the Neural Latents Benchmark's co-bps).
            if np.isnan(counts[:, main][..., dataset.heldout_neurons]).all():
                not_computed["co_bps"] = ("co-bps: the held-out neurons of these trials were not recorded (NaN; NLB "
                                          "withholds them for its evaluation trials)")
            else:
                scores["co_bps"] = _finite_or_none(co_bps(scored.rates[:, main], counts[:, main],
                                                          dataset.heldout_neurons))
    else:
        notes.append("bits per spike skipped: the observed data are not spike counts (non-integer or negative)")
        _continuous_scores(scores, notes, not_computed, scored, counts[:, main], dataset.heldout_neurons)
    if forward_bins and np.isnan(counts[:, main.stop:]).all():
        scores["fp_bps"] = None
        not_computed["fp_bps"] = ("fp-bps: the forward bins of these trials were not recorded (NaN; NLB withholds "
                                  "them for its evaluation trials)")
    else:
        scores["fp_bps"], fp_note = _forward_prediction(scored, counts, forward_bins)
        if fp_note:
            notes.append(fp_note)
    _nlb_decoding_scores(scores, notes, not_computed, scored, decoder_fit or [train], dataset, main.stop, lag_bins)
    mapping = true_latents = None
    if dataset.latents is None:
        notes.append("latent R^2 skipped: the data file has no 'latents'")
    elif train.trial_idx.size < 2:
        notes.append("latent R^2 skipped: fewer than 2 train trials to fit the ridge map")
    else:
        true_latents = dataset.latents[scored.trial_idx]
        mapping = map_to_latents(train.rates, dataset.latents[train.trial_idx], scored.rates, true_latents)
        scores["latent_r2"] = _finite_or_none(mapping.r2)
        scores["latent_r2_per_dim"] = [_finite_or_none(v) for v in mapping.r2_per_dim]
        scores["latent_ridge_alpha"] = mapping.alpha
    return _SplitScores(scores, notes, not_computed, counts, true_rates, true_latents, mapping)


def _continuous_scores(scores: dict, notes: list[str], not_computed: dict, scored: RunOutput, observed: np.ndarray,
                       heldout: np.ndarray | None) -> None:
    """The continuous-signal counterparts of bits per spike and co-bps, on the main window's bins
    (``observed`` ``(trials, bins, channels)``, NaN = unobserved): R^2 of the inferred signal on the
    held-in channels, R^2 on the held-out channels (which the model never saw), and the Gaussian
    log-likelihood of the held-in channels when the run wrote a ``std`` (observation: gaussian)."""
    inferred = scored.rates[:, :observed.shape[1]]
    heldout = np.zeros(0, dtype=int) if heldout is None else np.asarray(heldout, dtype=int)
    held_in = np.setdiff1d(np.arange(observed.shape[-1]), heldout)
    try:
        scores["observed_r2"] = _finite_or_none(observed_r2(inferred[..., held_in], observed[..., held_in]))
    except NeurodynError as error:
        notes.append(f"R^2 of the observed data skipped: {error}")
    if heldout.size:
        if np.isnan(observed[..., heldout]).all():
            not_computed["co_r2"] = "co-R^2: the held-out channels of these trials were not recorded (NaN)"
        else:
            try:
                scores["co_r2"] = _finite_or_none(observed_r2(inferred[..., heldout], observed[..., heldout]))
            except NeurodynError as error:
                notes.append(f"co-R^2 skipped: {error}")
    std = scored.arrays.get("std")
    if std is not None:
        scores["gaussian_ll"] = _finite_or_none(gaussian_log_likelihood(
            inferred[..., held_in], std[:, :observed.shape[1]][..., held_in], observed[..., held_in]))


def _forward_prediction(scored: RunOutput, counts: np.ndarray, forward_bins: int) -> tuple[float | None, str | None]:
    """fp-bps of a split (the rates of the run's last ``forward_bins`` bins, which no encoder saw), or
    None and why not."""
    if forward_bins == 0:
        return None, None  # reported in nlb_not_computed
    window = counts[:, counts.shape[1] - forward_bins:]
    if not _holds_counts(window):
        return None, "fp-bps skipped: the forward window's data are not spike counts (non-integer or negative)"
    try:
        return _finite_or_none(fp_bps(scored.rates, counts, forward_bins)), None
    except NeurodynError as error:  # e.g. no spike in the window
        return None, f"fp-bps skipped: {error}"


def _nlb_decoding_scores(scores: dict, notes: list[str], not_computed: dict, scored: RunOutput,
                         decoder_fit: list[RunOutput], dataset, main_bins: int, lag_bins: int) -> None:
    """Fill in vel R^2 and psth R^2 (Neural Latents Benchmark) on the main window's bins (the first
    ``main_bins``) when the data file has what they need; the behaviour decoder is fit on ``decoder_fit``'s trials."""
    if dataset.behavior is not None:
        # In data-file order, as NLB's decoder sees its training trials (its cross-validation folds are contiguous).
        fit_rates, fit_idx = rates_in_file_order(decoder_fit)
        fit_rates, fit_behavior = behavior_pairs(fit_rates, dataset.behavior[fit_idx], lag_bins, main_bins)
        rates, behavior = behavior_pairs(scored.rates, dataset.behavior[scored.trial_idx], lag_bins, main_bins)
        if np.isnan(behavior).all():
            not_computed["vel_r2"] = ("vel R^2: these trials have no measured behaviour (NaN; NLB withholds it for "
                                      "its evaluation trials)")
        elif (~np.isnan(fit_behavior).any(axis=2)).sum() < NLB_CV_FOLDS:
            notes.append(f"vel R^2 skipped: fewer than {NLB_CV_FOLDS} bins with measured behaviour to fit the "
                         "behaviour decoder")
        else:
            scores["vel_r2"] = _finite_or_none(velocity_r2(fit_rates, fit_behavior, rates, behavior))
    if dataset.condition is not None:
        # The target PSTH averages all trials of each condition in the file (as NLB's does): the true
        # rates where known, else the observations as the model was fit to them.
        if dataset.truth is not None:
            scores["psth_reference"], reference = "truth", dataset.truth
        else:
            scores["psth_reference"], reference = "data", advance_events(dataset.data, scored.event_delay_bins)
        scores["psth_r2"] = _finite_or_none(psth_r2(scored.rates[:, :main_bins], dataset.condition[scored.trial_idx],
                                                    reference[:, :main_bins], dataset.condition))


# The continuous-signal scores (observations that are not spike counts) and how they are printed.
CONTINUOUS_LABELS = (("observed_r2", "R^2 (valid, observed data):", "R^2 of the data:"),
                     ("co_r2", "co-R^2 (valid, held-out channels):", "co-R^2:"),
                     ("gaussian_ll", "log-likelihood (valid, nats/entry):", "log-lik./entry:"))


def _fmt(value: float | None, digits: int = 4) -> str:
    return "skipped" if value is None else f"{value:.{digits}f}"


def format_metrics(result: dict) -> str:
    """Human-readable summary of an ``evaluate_run`` result, one metric per line."""
    lines = [
        f"Evaluation of {result['output_dir']} on {result['data_path']}",
        f"  trials: {result['num_train_trials']} train, {result['num_valid_trials']} valid; "
        f"{result['num_samples']} bins x {result['num_neurons']} neurons",
        f"  rate R^2 (valid, all entries):         {_fmt(result['rate_r2'])}",
        f"  bits per spike (valid, observed):      {_fmt(result['bits_per_spike'])}",
    ]
    for key, label, _ in CONTINUOUS_LABELS:
        if result.get(key) is not None:
            lines.append(f"  {label:<39}{_fmt(result[key])}")
    if result.get("co_bps") is not None:
        lines.append(f"  co-bps (valid, held-out neurons):      {_fmt(result['co_bps'])}")
    if result.get("fp_bps") is not None:
        lines.append(f"  fp-bps (valid, forward window):        {_fmt(result['fp_bps'])}")
    if result.get("vel_r2") is not None:
        lag = f" (behaviour {result['vel_lag_ms']:g} ms after the rates)" if result.get("vel_lag_ms") else ""
        lines.append(f"  vel R^2 (ridge, train -> valid):       {_fmt(result['vel_r2'])}{lag}")
    if result.get("psth_r2") is not None:
        label = f"psth R^2 (valid, vs {result['psth_reference']} PSTHs):"
        lines.append(f"  {label:<39}{_fmt(result['psth_r2'])}")
    lines += [
        f"  latent R^2 (ridge, train -> valid):    {_fmt(result['latent_r2'])}",
    ]
    if result.get("latent_r2_per_dim") is not None:
        per_dim = ", ".join(_fmt(v, 3) for v in result["latent_r2_per_dim"])
        lines.append(f"    per latent dimension: {per_dim} (ridge alpha {result['latent_ridge_alpha']:.3g})")
    if result.get("test"):
        test = result["test"]
        lines += [f"  test trials ({test['num_trials']}, never used for training or any choice):",
                  f"    rate R^2:       {_fmt(test['rate_r2'])}",
                  f"    bits per spike: {_fmt(test['bits_per_spike'])}"]
        for key, _, label in CONTINUOUS_LABELS:
            if test.get(key) is not None:
                lines.append(f"    {label:<16}{_fmt(test[key])}")
        if test.get("co_bps") is not None:
            lines.append(f"    co-bps:         {_fmt(test['co_bps'])}")
        if test.get("fp_bps") is not None:
            lines.append(f"    fp-bps:         {_fmt(test['fp_bps'])}")
        for key, label in (("vel_r2", "vel R^2: "), ("psth_r2", "psth R^2:")):
            if test.get(key) is not None:
                lines.append(f"    {label}      {_fmt(test[key])}")
        lines.append(f"    latent R^2:     {_fmt(test['latent_r2'])}")
        lines += [f"    not computed: {reason}" for reason in test.get("not_computed", {}).values()]
    if result.get("continuous"):
        from neurodyn.evaluate.continuous import format_continuous

        lines += format_continuous(result["continuous"])
    lines += [f"  not computed (NLB): {reason}" for reason in result.get("nlb_not_computed", {}).values()]
    lines += [f"  note: {note}" for note in result.get("notes", [])]
    if result.get("evaluation_json"):
        saved = [result["evaluation_json"], result["figure"]] + ([result["summary_figure"]]
                                                               if result.get("summary_figure") else [])
        lines.append(f"  saved: {', '.join(saved)}")
    return "\n".join(lines)
