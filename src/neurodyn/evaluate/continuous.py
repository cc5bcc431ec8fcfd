"""Scores of a continuous session's merged series (data files made by ``neurodyn prepare continuous``).

The run's per-window rates are merged into one ``(num_bins, neurons)`` series exactly as
``continuous_output.h5`` holds it (``runs.continuous_output.merge_run_outputs``); the session's
counts and behaviour are the data file's windows put back in place (``merge_dataset_windows``: the
windows agree on every bin they share, so this gives the recording back). On that series:

- ``vel_r2``: behaviour decoded from the merged rates by ridge regression, scored by contiguous
  K-fold cross-validation over time (``continuous_velocity_r2``; ``K`` = ``NLB_CV_FOLDS``, the
  penalty from NLB's grid ``NLB_ALPHAS`` chosen on the fit folds only). For spike counts the
  decoder reads the square roots of the rates: the square root evens out Poisson variance, so a
  neuron that bursts far beyond its usual rate in one stretch of a long session no longer
  dominates the linear map fit on the rest of it;
- ``co_bps``: bits per spike of the held-out neurons (never shown to the encoder) over every bin
  of the session (``cobps.co_bps``), and ``co_bps_valid_bins`` over the bins that only windows of
  the valid (and test) split cover, whose rates no training window contributed to;
- ``bits_per_spike``: all neurons, every bin.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from neurodyn.data.continuous import dataset_layout, merge_dataset_windows
from neurodyn.data.event_timing import advance_events
from neurodyn.data.seed_format import NeuralDataset
from neurodyn.errors import NeurodynError
from neurodyn.evaluate.cobps import co_bps
from neurodyn.evaluate.metrics import bits_per_spike
from neurodyn.evaluate.nlb import NLB_ALPHAS, NLB_CV_FOLDS
from neurodyn.runs.continuous_output import merge_run_outputs
from neurodyn.runs.outputs import RunOutput


def continuous_velocity_r2(rates: np.ndarray, behavior: np.ndarray, folds: int = NLB_CV_FOLDS,
                           alphas: np.ndarray = NLB_ALPHAS, square_root: bool = True) -> dict:
    """Cross-validated R^2 of behaviour decoded linearly from a continuous series of rates.

    With ``square_root`` the decoder's features are ``sqrt(rates)`` (spike counts, see the module
    docstring), otherwise the rates themselves (signals that are not counts). The bins whose
    behaviour was measured (no NaN in any dimension) are kept in time order and split into ``folds`` contiguous blocks (``KFold`` without shuffling). For each block in turn,
    the other blocks are the fit bins: the ridge penalty is the one of ``alphas`` with the best
    mean R^2 over an inner ``folds``-fold contiguous split of the fit bins alone (the first of
    equals wins), a ridge map with intercept is refit on all fit bins with it and predicts the
    held-out block. ``r2`` is the R^2 of these out-of-block predictions over all kept bins,
    averaged uniformly over the behaviour dimensions (``sklearn.metrics.r2_score``); the held-out
    block's bins never choose the penalty nor fit the map. Dimensions that are constant over the
    kept bins (nothing to decode) are left out.

    Parameters
    ----------
    rates : ndarray, shape (num_bins, neurons)
        The merged rates, expected counts per bin (not logged, not standardised, as in NLB).
    behavior : ndarray, shape (num_bins, behavior_dim)
        The measured behaviour of the same bins (NaN = not measured).
    folds : int
        Number of contiguous blocks (default 5, NLB's).
    alphas : ndarray
        Candidate ridge penalties (default NLB's nine from 1e-4 to 1).
    square_root : bool
        Decode the square roots of the rates (default; the rates must then be non-negative).

    Returns
    -------
    dict
        ``r2`` (float), ``r2_per_fold`` (list), ``alpha_per_fold`` (list), ``dims`` (indices of the
        scored behaviour dimensions), ``num_bins`` (bins scored).

    Raises
    ------
    NeurodynError
        When the shapes disagree, a rate is not finite (or negative, with ``square_root``), fewer
        than ``folds * folds`` bins are measured or every behaviour dimension is constant.
    """
    rates, behavior = np.asarray(rates, dtype=np.float64), np.asarray(behavior, dtype=np.float64)
    if rates.ndim != 2 or behavior.ndim != 2 or rates.shape[0] != behavior.shape[0]:
        raise NeurodynError(f"vel R^2: rates {rates.shape} and behaviour {behavior.shape} must be (num_bins, "
                            "features) over the same bins")
    if not np.isfinite(rates).all():
        raise NeurodynError("vel R^2: the merged rates hold NaN or infinite values")
    if square_root:
        if (rates < 0).any():
            raise NeurodynError("vel R^2 decodes square-root rates: the merged rates must be expected counts "
                                f"(non-negative); the smallest is {rates.min():.3g}")
        rates = np.sqrt(rates)
    measured = ~np.isnan(behavior).any(axis=1)
    x, y = rates[measured], behavior[measured]
    if x.shape[0] < folds * folds:
        raise NeurodynError(f"vel R^2: {x.shape[0]} bins with measured behaviour; {folds} x {folds} nested "
                            "contiguous folds need more")
    dims = np.flatnonzero(np.ptp(y, axis=0) > 0)
    if dims.size == 0:
        raise NeurodynError("vel R^2: every behaviour dimension is constant; nothing to decode")
    y = y[:, dims]
    alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if alphas.size == 0:
        raise NeurodynError("vel R^2: no ridge penalties to choose from")
    predicted = np.empty_like(y)
    fold_r2, fold_alpha = [], []
    # One BLAS thread: beside torch's OpenMP threads (loaded by evaluate) several make these small
    # products ~10x slower on a 2-core machine.
    with threadpool_limits(1, user_api="blas"):
        for fit, held in KFold(n_splits=folds).split(x):
            alpha = _inner_alpha(x[fit], y[fit], alphas, folds)
            coef, intercept = ridge_fits(x[fit], y[fit], np.array([alpha]))[0]
            predicted[held] = x[held] @ coef + intercept
            fold_r2.append(float(r2_score(y[held], predicted[held])))
            fold_alpha.append(alpha)
    return {"r2": float(r2_score(y, predicted)), "r2_per_fold": fold_r2, "alpha_per_fold": fold_alpha,
            "dims": dims.tolist(), "num_bins": int(x.shape[0])}


def ridge_fits(x: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ridge regression with intercept for each penalty: ``[(coef (features, targets), intercept (targets,))]``.

    The same estimate as ``sklearn.linear_model.Ridge(alpha).fit(x, y)`` (centred ``x`` and ``y``, the
    intercept unpenalised), from one eigendecomposition of the centred Gram matrix for all penalties
    (nine penalties for the price of one fit).
    """
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc = x - x_mean
    eigenvalues, vectors = np.linalg.eigh(xc.T @ xc)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    projected = vectors.T @ (xc.T @ (y - y_mean))
    fits = []
    for alpha in alphas:
        coef = vectors @ (projected / (eigenvalues + alpha)[:, None])
        fits.append((coef, y_mean - x_mean @ coef))
    return fits


def _inner_alpha(x: np.ndarray, y: np.ndarray, alphas: np.ndarray, folds: int) -> float:
    """The penalty with the best mean R^2 over ``folds`` contiguous folds of the fit bins."""
    scores = np.zeros(alphas.size)
    for fit, held in KFold(n_splits=folds).split(x):
        for index, (coef, intercept) in enumerate(ridge_fits(x[fit], y[fit], alphas)):
            scores[index] += r2_score(y[held], x[held] @ coef + intercept) / folds
    return float(alphas[int(np.argmax(scores))])


def evaluate_continuous(outputs: dict[str, RunOutput], dataset: NeuralDataset) -> dict:
    """Score the merged series of a run on a continuous session.

    Parameters
    ----------
    outputs : dict
        The run's outputs per split (``runs.outputs.read_run_outputs``), covering every window.
    dataset : NeuralDataset
        The data file made by ``neurodyn prepare continuous`` (windows as trials).

    Returns
    -------
    dict
        JSON-ready: ``num_bins``, ``bin_ms``, ``num_windows``, ``window_bins``, ``overlap_bins``,
        ``vel_r2`` (``continuous_velocity_r2``'s ``r2``; square-root rates when the data are spike
        counts, ``vel_features`` says which), ``vel_r2_per_fold``,
        ``vel_ridge_alpha_per_fold``, ``vel_dims``, ``vel_folds``, ``co_bps`` (held-out neurons,
        every bin), ``co_bps_valid_bins`` and ``num_valid_only_bins`` (bins covered by valid/test
        windows only), ``bits_per_spike`` (all neurons, every bin), ``notes``. A score the data
        cannot give is None with a note.
    """
    layout = dataset_layout(dataset)
    if layout is None:
        raise NeurodynError(f"{dataset.source}: not a continuous session (no attribute 'continuous_window_starts'; "
                            "made by 'neurodyn prepare continuous')")
    merged = merge_run_outputs(outputs, layout, f"the outputs of {dataset.source}")
    # The observations as the model was fit to them (moved earlier by its event delay, if any).
    counts = advance_events(merge_dataset_windows(dataset.data, layout)[None],
                            outputs["valid"].event_delay_bins)[0]
    valid_only = merged.bins_only_in(("valid", "test"))
    observed = counts[~np.isnan(counts)]
    spike_counts = bool(np.all(observed >= 0) and np.all(observed == np.round(observed)))
    result: dict = {"num_bins": layout.num_bins, "bin_ms": layout.bin_ms, "num_windows": layout.num_windows,
                    "window_bins": layout.window_bins, "overlap_bins": layout.overlap_bins, "vel_r2": None,
                    "vel_r2_per_fold": None, "vel_ridge_alpha_per_fold": None, "vel_dims": None,
                    "vel_features": "sqrt(rates)" if spike_counts else "rates",
                    "vel_folds": NLB_CV_FOLDS, "co_bps": None, "co_bps_valid_bins": None,
                    "num_valid_only_bins": int(valid_only.sum()), "bits_per_spike": None}
    notes: list[str] = []
    if dataset.behavior is None:
        notes.append("continuous vel R^2 skipped: the data file has no 'behavior' (prepare with --behavior)")
    else:
        try:
            scores = continuous_velocity_r2(merged.rates, merge_dataset_windows(dataset.behavior, layout),
                                            square_root=spike_counts)
            result.update(vel_r2=_finite_or_none(scores["r2"]), vel_dims=scores["dims"],
                          vel_r2_per_fold=[_finite_or_none(v) for v in scores["r2_per_fold"]],
                          vel_ridge_alpha_per_fold=scores["alpha_per_fold"])
            left_out = sorted(set(range(dataset.behavior.shape[2])) - set(scores["dims"]))
            if left_out:
                notes.append(f"continuous vel R^2: behaviour dimension(s) {', '.join(map(str, left_out))} constant "
                             "over the session, left out")
        except NeurodynError as error:
            notes.append(f"continuous vel R^2 skipped: {error}")
    if not spike_counts:
        notes.append("continuous bits per spike skipped: the observed data are not spike counts")
    else:
        result["bits_per_spike"] = _score(notes, "bits per spike", bits_per_spike, merged.rates, counts)
        heldout = dataset.heldout_neurons
        if heldout is None or not heldout.size:
            notes.append("continuous co-bps skipped: the data file has no 'heldout_neurons' (prepare with "
                         "--heldout-fraction)")
        else:
            result["co_bps"] = _score(notes, "co-bps", co_bps, merged.rates[None], counts[None], heldout)
            if valid_only.any():
                result["co_bps_valid_bins"] = _score(notes, "co-bps on valid-only bins", co_bps,
                                                     merged.rates[None, valid_only], counts[None, valid_only],
                                                     heldout)
    result["notes"] = notes
    return result


def _score(notes: list[str], name: str, function, *args) -> float | None:
    try:
        return _finite_or_none(function(*args))
    except NeurodynError as error:
        notes.append(f"continuous {name} skipped: {error}")
        return None


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def format_continuous(scores: dict) -> list[str]:
    """Lines for ``evaluate``'s summary (``report.format_metrics``) of ``evaluate_continuous``'s dict."""
    def shown(value):
        return "skipped" if value is None else f"{value:.4f}"

    bin_ms = scores.get("bin_ms")
    length = f", {scores['num_bins'] * bin_ms / 1000:.1f} s" if bin_ms else ""
    lines = [f"  continuous session (merged series, {scores['num_bins']} bins{length}, {scores['num_windows']} "
             f"windows): vel R^2 {shown(scores['vel_r2'])} ({scores['vel_folds']}-fold over time, from "
             f"{scores.get('vel_features', 'rates')}), "
             f"co-bps {shown(scores['co_bps'])}, bits per spike {shown(scores['bits_per_spike'])}"]
    if scores.get("vel_r2_per_fold"):
        lines.append("    vel R^2 per block of time (each predicted by a decoder fit on the others): "
                     + ", ".join(f"{v:.3f}" if v is not None else "undefined" for v in scores["vel_r2_per_fold"]))
    if scores.get("co_bps_valid_bins") is not None:
        lines.append(f"    co-bps on the {scores['num_valid_only_bins']} bins only valid windows cover: "
                     f"{shown(scores['co_bps_valid_bins'])}")
    lines += [f"    note: {note}" for note in scores.get("notes", [])]
    return lines
