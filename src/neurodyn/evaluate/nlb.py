"""Neural Latents Benchmark (NLB) metrics beyond co-bps: velocity decoding R^2 and PSTH R^2.

Both follow the definitions of the benchmark's reference evaluation (``nlb_tools.evaluation``),
implemented here on plain trials-first NumPy arrays so that the numbers agree with it:

- ``velocity_r2`` ("vel R^2"): how well a linear map from the inferred rates decodes the measured
  behaviour. Ridge regression from rates to behaviour with every trial x bin one row; the
  penalty is picked from a fixed grid by 5-fold cross-validation on the training rows (contiguous
  folds, in row order, no shuffling); the R^2 of the refit map on the evaluation trials, averaged
  uniformly over the behaviour dimensions.
- ``psth_r2`` ("psth R^2"): how well the condition-averaged inferred rates (peri-stimulus time
  histograms, PSTHs) match the condition-averaged reference (true rates, or observed counts); all
  conditions' PSTHs are stacked along time and the R^2 is averaged uniformly over neurons.

The benchmark's raw R^2 is ``sklearn.metrics.r2_score`` with its default
``multioutput='uniform_average'`` (what ``Ridge.score`` uses too): each output's R^2 is computed
on its own and the outputs are averaged with equal weight.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold

from neurodyn.errors import NeurodynError

# The ridge penalties NLB's decoder searches (rates are not standardised: penalties in count units).
NLB_ALPHAS = np.logspace(-4, 0, 9)

# Folds of the cross-validation that picks the penalty (scikit-learn's default, as in NLB).
NLB_CV_FOLDS = 5


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
        The measured behaviour (e.g. hand velocity, any unit) of the same trials and bins.
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
        When there is no behaviour, the shapes disagree, a value is not finite or there are fewer
        training rows than folds.
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
        _check_finite(behavior, f"vel R^2: {split} behavior")
    if train_rates.shape[2] != eval_rates.shape[2] or train_behavior.shape[2] != eval_behavior.shape[2]:
        raise NeurodynError("vel R^2: train and eval must have the same neurons and behaviour dimensions")
    x_train, y_train = _rows(train_rates), _rows(train_behavior)
    if x_train.shape[0] < NLB_CV_FOLDS:
        raise NeurodynError(f"vel R^2 needs at least {NLB_CV_FOLDS} training bins to cross-validate the ridge "
                            f"penalty; got {x_train.shape[0]}")
    alpha = _cross_validated_alpha(x_train, y_train, np.asarray(alphas, dtype=np.float64).reshape(-1))
    decoder = Ridge(alpha=alpha).fit(x_train, y_train)
    return float(r2_score(_rows(eval_behavior), decoder.predict(_rows(eval_rates))))


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
