"""Neural Latents Benchmark (NLB) metrics beyond co-bps: velocity decoding R^2 and PSTH R^2.

Both follow the definitions of the benchmark's reference evaluation (``nlb_tools.evaluation``),
implemented here on plain trials-first NumPy arrays so that the numbers agree with it:

- ``velocity_r2`` ("vel R^2"): how well a linear map from the inferred rates decodes the measured
  behaviour. Ridge regression from rates to behaviour with every trial x bin one row (rows whose
  behaviour was not measured, NaN, are left out, as NLB's decoder does); the
  penalty is picked from a fixed grid by 5-fold cross-validation on the training rows (contiguous
  folds, in row order, no shuffling); the R^2 of the refit map on the evaluation trials, averaged
  uniformly over the behaviour dimensions.
- ``psth_r2`` ("psth R^2"): how well the condition-averaged inferred rates (peri-stimulus time
  histograms, PSTHs) match the condition-averaged reference (true rates, or observed counts); all
  conditions' PSTHs are stacked along time and the R^2 is averaged uniformly over neurons.

The benchmark's raw R^2 is ``sklearn.metrics.r2_score`` with its default
``multioutput='uniform_average'`` (what ``Ridge.score`` uses too): each output's R^2 is computed
on its own and the outputs are averaged with equal weight.

NLB pairs the rates of bin t with the behaviour of bin t + lag (the dataset's lag between neural
activity and movement, ``neurodyn.data.nlb_tensors.NLB_BEHAVIOR_LAG_MS``) and scores the main window only, never the
forward-prediction bins: ``behavior_pairs`` cuts both arrays so.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from neurodyn.errors import NeurodynError

# The ridge penalties NLB's decoder searches (rates are not standardised: penalties in count units).
NLB_ALPHAS = np.logspace(-4, 0, 9)

# Folds of the cross-validation that picks the penalty (scikit-learn's default, as in NLB).
NLB_CV_FOLDS = 5


def behavior_pairs(rates: np.ndarray, behavior: np.ndarray, lag_bins: int,
                   main_bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rates and behaviour that vel R^2 pairs: rates of bin t with behaviour of bin t + ``lag_bins``.

    Parameters
    ----------
    rates : ndarray, shape (trials, samples, neurons)
        Inferred rates, expected counts per bin.
    behavior : ndarray, shape (trials, samples, behavior_dim)
        Measured behaviour of the same trials and bins (NaN = not measured).
    lag_bins : int
        Bins by which the behaviour follows the rates (negative: it leads them).
    main_bins : int, optional
        Only rates of bins t < ``main_bins`` are paired (the main window; the forward-prediction bins
        after it are left out). Default: all bins.

    Returns
    -------
    (ndarray, ndarray)
        ``(trials, pairs, neurons)`` rates and ``(trials, pairs, behavior_dim)`` behaviour, bin for
        bin the pairs (t, t + lag) with both bins inside the trial.
    """
    num_samples = rates.shape[1]
    main_bins = num_samples if main_bins is None else int(main_bins)
    first, stop = max(0, -lag_bins), min(main_bins, num_samples - lag_bins)
    if stop <= first:
        raise NeurodynError(f"vel R^2: a lag of {lag_bins} bins leaves no bin of the {main_bins}-bin main window "
                            "paired with behaviour")
    return rates[:, first:stop], behavior[:, first + lag_bins:stop + lag_bins]


def _trials_first(array, name: str) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 3:
        raise NeurodynError(f"{name} has shape {array.shape}; expected 3 axes (trials, samples, features)")
    return array


def _rows(array: np.ndarray) -> np.ndarray:
    """``(trials, samples, features)`` -> ``(trials * samples, features)``, trial by trial."""
    return array.reshape(-1, array.shape[-1])


def _check_finite(array: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(array)):
        raise NeurodynError(f"{name} holds NaN or infinite values; the NLB metrics need finite values")


def velocity_r2(
    train_rates: np.ndarray,
    train_behavior: np.ndarray | None,
    eval_rates: np.ndarray,
    eval_behavior: np.ndarray | None,
    alphas: np.ndarray = NLB_ALPHAS,
) -> float:
    """NLB "vel R^2": decode behaviour from rates with cross-validated ridge regression.

    Every trial x bin is one row: the features are the rates as they are (not logged, not
    standardised), the targets the behaviour of the same bin. The penalty is the one of
    ``alphas`` with the best mean R^2 over ``NLB_CV_FOLDS`` contiguous, unshuffled folds of
    the training rows (the first of equals wins); the ridge map (with intercept) is then refit on
    all training rows with it and scored on the evaluation rows.

    Parameters
    ----------
    train_rates : ndarray, shape (train_trials, samples, neurons)
        Inferred rates of the trials the decoder is fit on, expected counts per bin (the
        unit NLB's rates are in; the penalty grid assumes it).
    train_behavior : ndarray, shape (train_trials, samples, behavior_dim)
        The measured behaviour (e.g. hand velocity, any unit) of the same trials and bins; bins
        where it is NaN (not measured) are left out, here and in ``eval_behavior``.
    eval_rates : ndarray, shape (eval_trials, samples, neurons)
        Inferred rates of the trials the decoder is scored on.
    eval_behavior : ndarray, shape (eval_trials, samples, behavior_dim)
        The measured behaviour of the evaluation trials.
    alphas : ndarray, optional
        Candidate ridge penalties (default NLB's nine log-spaced values from 1e-4 to 1).

    Returns
    -------
    float
        R^2 of the decoded behaviour on the evaluation rows, averaged uniformly over the
        behaviour dimensions (1 = perfect, 0 = no better than the evaluation mean, can be < 0).

    Raises
    ------
    NeurodynError
        When there is no behaviour, the shapes disagree, a rate is not finite, the behaviour is
        infinite, no evaluation bin has measured behaviour or there are fewer training rows than folds.
    """
    if train_behavior is None or eval_behavior is None:
        raise NeurodynError("vel R^2 needs measured behaviour (the data file's 'behavior' key) to decode")
    train_rates, eval_rates = _trials_first(train_rates, "train rates"), _trials_first(eval_rates, "eval rates")
    train_behavior = _trials_first(train_behavior, "train behavior")
    eval_behavior = _trials_first(eval_behavior, "eval behavior")
    for rates, behavior, split in ((train_rates, train_behavior, "train"), (eval_rates, eval_behavior, "eval")):
        if rates.shape[:2] != behavior.shape[:2]:
            raise NeurodynError(f"vel R^2: {split} rates {rates.shape} and behavior {behavior.shape} must cover the "
                                "same (trials, samples)")
        _check_finite(rates, f"vel R^2: {split} rates")
        if np.isinf(behavior).any():
            raise NeurodynError(f"vel R^2: {split} behavior holds infinite values")
    if train_rates.shape[2] != eval_rates.shape[2] or train_behavior.shape[2] != eval_behavior.shape[2]:
        raise NeurodynError("vel R^2: train and eval must have the same neurons and behaviour dimensions")
    x_train, y_train = _measured_rows(train_rates, train_behavior)
    x_eval, y_eval = _measured_rows(eval_rates, eval_behavior)
    if x_eval.shape[0] == 0:
        raise NeurodynError("vel R^2: the evaluation trials have no bin with measured behaviour")
    if x_train.shape[0] < NLB_CV_FOLDS:
        raise NeurodynError(f"vel R^2 needs at least {NLB_CV_FOLDS} training bins to cross-validate the ridge "
                            f"penalty; got {x_train.shape[0]}")
    # One BLAS thread: beside torch's threads, more make the ridge fits about 10x slower.
    with threadpool_limits(limits=1):
        alpha = _cross_validated_alpha(x_train, y_train, np.asarray(alphas, dtype=np.float64).reshape(-1))
        decoder = Ridge(alpha=alpha).fit(x_train, y_train)
    return float(r2_score(y_eval, decoder.predict(x_eval)))


def _measured_rows(rates: np.ndarray, behavior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``(rows, neurons)`` rates and ``(rows, behavior_dim)`` behaviour of the bins whose behaviour was measured."""
    x, y = _rows(rates), _rows(behavior)
    measured = ~np.isnan(y).any(axis=1)
    return x[measured], y[measured]


def _cross_validated_alpha(x: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> float:
    """The penalty of ``alphas`` with the highest mean validation R^2 over the contiguous folds."""
    if alphas.size == 0:
        raise NeurodynError("vel R^2: no ridge penalties to choose from")
    folds = list(KFold(n_splits=NLB_CV_FOLDS).split(x))
    mean_r2 = np.empty(alphas.size)
    for index, alpha in enumerate(alphas):
        fold_r2 = [r2_score(y[held], Ridge(alpha=alpha).fit(x[fit], y[fit]).predict(x[held])) for fit, held in folds]
        mean_r2[index] = np.mean(fold_r2)
    return float(alphas[int(np.argmax(mean_r2))])


def condition_average(values: np.ndarray, condition: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean over the trials of each condition, ignoring NaN: ``(conditions, samples, features)``.

    ``values`` ``(trials, samples, features)``, ``condition`` ``(trials,)``, ``labels`` the
    conditions in the order wanted. A (condition, bin, feature) with no finite value is NaN.
    """
    averages = np.full((len(labels), *values.shape[1:]), np.nan)
    for index, label in enumerate(labels):
        members = values[condition == label]
        with warnings.catch_warnings():  # all-NaN slices stay NaN, silently
            warnings.simplefilter("ignore", category=RuntimeWarning)
            averages[index] = np.nanmean(members, axis=0) if members.shape[0] else np.nan
    return averages


def psth_r2(
    rates: np.ndarray,
    condition: np.ndarray | None,
    reference: np.ndarray,
    reference_condition: np.ndarray | None = None,
) -> float:
    """NLB "psth R^2": condition-averaged rates against the condition-averaged reference.

    For each condition among the scored trials, the PSTH of the rates (their mean over that
    condition's scored trials) is compared with the PSTH of ``reference`` (its mean over that
    condition's reference trials, NaN ignored). The PSTHs of all conditions are stacked along
    time and the R^2 is taken per neuron, over the bins where that neuron's reference PSTH is
    defined (NLB leaves out the bins where its PSTH is undefined, which there are the same for
    all neurons), then averaged uniformly over neurons. Neurons whose reference PSTH is defined at
    fewer than two bins are left out.

    Parameters
    ----------
    rates : ndarray, shape (trials, samples, neurons)
        Inferred rates of the scored trials, expected counts per bin.
    condition : ndarray, shape (trials,)
        Integer condition label of each scored trial.
    reference : ndarray, shape (reference_trials, samples, neurons)
        The per-trial target in the same unit as ``rates``: true rates where known, else the
        observed counts (NaN = unobserved). NLB's target PSTH averages all trials of a condition.
    reference_condition : ndarray, shape (reference_trials,), optional
        Condition label of each reference trial; default ``condition`` (the reference trials
        are the scored trials).

    Returns
    -------
    float
        R^2 of the rate PSTHs to the reference PSTHs, averaged uniformly over neurons.

    Raises
    ------
    NeurodynError
        When there are no condition labels, the shapes disagree, a scored condition has no
        reference trial, the rates are not finite or no bin has a defined reference PSTH.
    """
    if condition is None:
        raise NeurodynError("psth R^2 needs condition labels (the data file's 'condition' key) to average over")
    rates = _trials_first(rates, "psth R^2: rates")
    reference = _trials_first(reference, "psth R^2: reference")
    condition = np.asarray(condition).reshape(-1)
    reference_condition = condition if reference_condition is None else np.asarray(reference_condition).reshape(-1)
    if condition.shape != (rates.shape[0],) or reference_condition.shape != (reference.shape[0],):
        raise NeurodynError(f"psth R^2: {condition.size} condition labels for {rates.shape[0]} trials of rates and "
                            f"{reference_condition.size} for {reference.shape[0]} reference trials; one label per trial")
    if rates.shape[1:] != reference.shape[1:]:
        raise NeurodynError(f"psth R^2: rates {rates.shape} and reference {reference.shape} must have the same "
                            "(samples, neurons)")
    _check_finite(rates, "psth R^2: rates")
    labels = np.unique(condition)
    unknown = np.setdiff1d(labels, reference_condition)
    if unknown.size:
        raise NeurodynError(f"psth R^2: condition(s) {', '.join(str(c) for c in unknown[:5])} of the scored trials "
                            "have no reference trial")
    predicted = _rows(condition_average(rates, condition, labels))
    target = _rows(condition_average(reference, reference_condition, labels))
    neuron_r2 = []
    for neuron in range(target.shape[1]):
        defined = np.isfinite(target[:, neuron])
        if defined.sum() >= 2:
            neuron_r2.append(r2_score(target[defined, neuron], predicted[defined, neuron]))
    if not neuron_r2:
        raise NeurodynError("psth R^2: the reference PSTH is undefined (never observed) at all but at most one bin "
                            "of every neuron")
    return float(np.mean(neuron_r2))


def behavior_lag_bins(attrs: dict, lag_ms: float | None = None) -> tuple[int, float]:
    """The shift (bins) that pairs a data file's rates at t with its behaviour at t + lag, and the lag (ms).

    The lag wanted is ``lag_ms`` when given, else the file's attribute ``behavior_lag_ms`` (else 0);
    the file's ``behavior_lag_applied_ms`` says how far its stored behaviour is shifted already
    (``neurodyn prepare nlb`` stores nlb_tools' shifted behaviour), so only the difference is applied:
    a behaviour is never shifted twice.

    Parameters
    ----------
    attrs : dict
        The data file's attributes (``bin_ms``, ``behavior_lag_ms``, ``behavior_lag_applied_ms``).
    lag_ms : float, optional
        The lag wanted, ms (e.g. NLB's 100 for MC_Maze, 120 for its scaling sets).

    Returns
    -------
    (int, float)
        The bins to shift the stored behaviour by (``behavior_pairs``' ``lag_bins``) and the lag in ms.
    """
    wanted = float(lag_ms) if lag_ms is not None else float(attrs.get("behavior_lag_ms", 0.0))
    applied = float(attrs.get("behavior_lag_applied_ms", 0.0))
    if wanted == applied:
        return 0, wanted
    if "bin_ms" not in attrs or not float(attrs["bin_ms"]) > 0:
        raise NeurodynError(f"vel R^2 at a lag of {wanted:g} ms needs the data file's bin width (attribute 'bin_ms')")
    bins = (wanted - applied) / float(attrs["bin_ms"])
    if abs(bins - round(bins)) > 1e-6:
        raise NeurodynError(f"a vel R^2 lag of {wanted:g} ms is not a whole number of {float(attrs['bin_ms']):g} ms "
                            f"bins from the {applied:g} ms the behaviour is already shifted by")
    return int(round(bins)), wanted
