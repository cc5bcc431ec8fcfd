"""Evaluation metrics on plain NumPy arrays, trials-first: ``(trials, samples, neurons)``.

- ``rate_r2``: how well inferred rates match the true rates (synthetic data only).
- ``bits_per_spike``: how much better than a per-neuron constant rate the inferred rates explain
  the observed counts (Neural Latents Benchmark definition).
- ``observed_r2`` and ``gaussian_log_likelihood``: the same questions for continuous signals (dF/F,
  LFP power, EMG envelopes), where bits per spike cannot apply.
- ``map_to_latents``: how linearly decodable the true latent states are from the inferred
  log-rates (ridge regression fit on training trials, scored on held-out trials).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from neurodyn.errors import NeurodynError
from neurodyn.observation.poisson import poisson_nll

# Rates are clipped below at this value (expected counts per bin) before taking logs. A rate of
# exactly 0 makes log r = -inf and the NLL term n * log r undefined (0 * -inf) even when n = 0;
# the floor keeps it finite, costs ~0 NLL where n = 0 (the limit of r - n log r as r -> 0) and a
# large but finite penalty where n > 0. It is far below any rate a model would really predict.
RATE_FLOOR = 1e-9

# Ridge penalties searched by ``map_to_latents`` (features are standardised, so one grid fits all).
DEFAULT_ALPHAS = np.logspace(-3, 4, 15)

# Folds of the trial-wise cross-validation that picks the ridge penalty.
MAX_CV_FOLDS = 5


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise NeurodynError(f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; they must match")


def _flatten_trials(x: np.ndarray) -> np.ndarray:
    """``(..., last)`` -> ``(prod(...), last)``: every trial and time bin becomes one row."""
    return x.reshape(-1, x.shape[-1])


def rate_r2(true_rates: np.ndarray, inferred_rates: np.ndarray) -> float:
    """Coefficient of determination of inferred vs true rates, averaged uniformly over neurons.

    Both arrays are ``(..., neurons)`` (e.g. ``(trials, samples, neurons)``) in the same units;
    every entry counts (there is no mask: the truth is known everywhere). Each neuron's R^2 is
    taken over all its flattened trials x samples, then the neurons are averaged.
    """
    true_rates = np.asarray(true_rates, dtype=np.float64)
    inferred_rates = np.asarray(inferred_rates, dtype=np.float64)
    _check_same_shape(true_rates, inferred_rates, "true rates", "inferred rates")
    if not (np.all(np.isfinite(true_rates)) and np.all(np.isfinite(inferred_rates))):
        raise NeurodynError("rate R^2 needs finite true and inferred rates (found NaN or inf)")
    return float(
        r2_score(_flatten_trials(true_rates), _flatten_trials(inferred_rates), multioutput="uniform_average")
    )


def _total_poisson_nll(rates: np.ndarray, counts: np.ndarray) -> float:
    """Summed full Poisson NLL of ``counts`` (1-D, observed only) under ``rates`` (same shape)."""
    log_rate = torch.as_tensor(np.log(np.maximum(rates, RATE_FLOOR)), dtype=torch.float64)
    return float(poisson_nll(log_rate, torch.as_tensor(counts, dtype=torch.float64)).sum())


def bits_per_spike(rates: np.ndarray, counts: np.ndarray) -> float:
    """Bits per spike of ``rates`` on the observed entries of ``counts``.

    ``rates``: ``(..., neurons)`` expected counts per bin (not Hz). ``counts``: same shape, spike
    counts per bin with NaN where unobserved (those entries are ignored). Returns
    ``(NLL_null - NLL_model) / total observed spikes / ln 2`` with the full Poisson NLL; the null
    model predicts for each neuron its mean count over its observed entries. 0 means no better
    than the null model; higher is better.
    """
    rates = np.asarray(rates, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    _check_same_shape(rates, counts, "rates", "counts")
    observed = ~np.isnan(counts)
    if not np.all(np.isfinite(rates[observed])):
        raise NeurodynError("bits per spike needs finite rates on the observed entries (found NaN or inf)")
    total_spikes = counts[observed].sum()
    if total_spikes <= 0:
        raise NeurodynError("bits per spike is undefined: the observed entries hold no spikes")

    # Per-neuron mean over its observed entries; neurons never observed contribute no entries,
    # so their (undefined) mean is irrelevant and set to 0 to avoid NaN warnings.
    flat_counts = _flatten_trials(counts)
    flat_observed = _flatten_trials(observed)
    num_observed = flat_observed.sum(axis=0)
    neuron_means = np.where(flat_observed, flat_counts, 0.0).sum(axis=0) / np.maximum(num_observed, 1)
    null_rates = np.broadcast_to(neuron_means, counts.shape)

    nll_model = _total_poisson_nll(rates[observed], counts[observed])
    nll_null = _total_poisson_nll(null_rates[observed], counts[observed])
    return float((nll_null - nll_model) / total_spikes / np.log(2.0))


def observed_r2(inferred: np.ndarray, observed: np.ndarray) -> float:
    """R^2 of an inferred continuous signal against the observed data, averaged uniformly over channels.

    ``inferred``: ``(..., channels)`` the model's expected value per bin; ``observed``: the same shape,
    NaN where unobserved. Each channel's R^2 is ``1 - SSE / SST`` over its observed entries (SST about
    that channel's mean of them); channels with fewer than two observed entries or no spread are left
    out of the average. Raises ``NeurodynError`` when no channel qualifies.
    """
    inferred = np.asarray(inferred, dtype=np.float64)
    observed = np.asarray(observed, dtype=np.float64)
    _check_same_shape(inferred, observed, "inferred signal", "observed data")
    flat_inferred, flat_observed = _flatten_trials(inferred), _flatten_trials(observed)
    seen = ~np.isnan(flat_observed)
    if not np.all(np.isfinite(flat_inferred[seen])):
        raise NeurodynError("R^2 needs a finite inferred signal on the observed entries (found NaN or inf)")
    values = []
    for channel in range(flat_observed.shape[1]):
        target = flat_observed[seen[:, channel], channel]
        total = np.sum((target - target.mean()) ** 2) if target.size >= 2 else 0.0
        if total > 0:
            values.append(1.0 - np.sum((target - flat_inferred[seen[:, channel], channel]) ** 2) / total)
    if not values:
        raise NeurodynError("R^2 is undefined: no channel has two or more observed entries that differ")
    return float(np.mean(values))


def gaussian_log_likelihood(mean: np.ndarray, std: np.ndarray, observed: np.ndarray) -> float:
    """Mean Gaussian log-likelihood (nats per observed entry) of ``observed`` under ``Normal(mean, std^2)``.

    All three arrays are ``(..., channels)`` of one shape; ``observed`` is NaN where unobserved (those
    entries are ignored); ``std`` must be positive on the observed entries.
    """
    mean, std, observed = (np.asarray(a, dtype=np.float64) for a in (mean, std, observed))
    _check_same_shape(mean, observed, "inferred mean", "observed data")
    _check_same_shape(std, observed, "inferred std", "observed data")
    seen = ~np.isnan(observed)
    if not seen.any():
        raise NeurodynError("the Gaussian log-likelihood is undefined: no entry is observed")
    if not (np.all(np.isfinite(mean[seen])) and np.all(std[seen] > 0) and np.all(np.isfinite(std[seen]))):
        raise NeurodynError("the Gaussian log-likelihood needs a finite mean and a positive, finite std on the "
                            "observed entries")
    return float(np.mean(stats.norm.logpdf(observed[seen], loc=mean[seen], scale=std[seen])))


@dataclass(frozen=True)
class LatentMapping:
    """Result of ``map_to_latents``.

    ``r2``: R^2 on the test trials, uniform average over latent dimensions; ``r2_per_dim``:
    ``(latents,)``; ``test_predictions``: ``(trials, samples, latents)`` predicted latents of the
    test trials; ``alpha``: the ridge penalty chosen by cross-validation on the training trials.
    """

    r2: float
    r2_per_dim: np.ndarray
    test_predictions: np.ndarray
    alpha: float


def _log_rate_features(rates: np.ndarray) -> np.ndarray:
    """``(trials, samples, neurons)`` rates -> ``(trials * samples, neurons)`` log-rates."""
    return _flatten_trials(np.log(np.maximum(np.asarray(rates, dtype=np.float64), RATE_FLOOR)))


def map_to_latents(
    train_rates: np.ndarray,
    train_latents: np.ndarray,
    test_rates: np.ndarray,
    test_latents: np.ndarray,
    alphas: np.ndarray | None = None,
) -> LatentMapping:
    """Ridge regression from inferred log-rates to the true latent states.

    Rates are ``(trials, samples, neurons)``, latents ``(trials, samples, latents)``. Features are
    the log of the rates (clipped at ``RATE_FLOOR``), standardised with the training trials' mean
    and std; every trial x sample is one row. The penalty is chosen from ``alphas`` by K-fold
    cross-validation that keeps each training trial's samples in one fold (neighbouring samples
    are strongly correlated, so splitting within trials would favour too little regularisation).

    Parameters
    ----------
    train_rates, test_rates : ndarray, shape (trials, samples, neurons)
        Inferred rates (expected counts or event sizes per bin) of the training and test trials.
    train_latents, test_latents : ndarray, shape (trials, samples, latents)
        True latent states of the same trials.
    alphas : ndarray, optional
        Candidate ridge penalties (default: 15 values from 1e-3 to 1e4, log-spaced).

    Returns
    -------
    LatentMapping
        ``r2`` (test R^2, uniform average over latent dimensions), ``r2_per_dim``, ``alpha`` and
        ``test_predictions`` ``(trials, samples, latents)``.
    """
    train_rates, test_rates = np.asarray(train_rates), np.asarray(test_rates)
    train_latents = np.asarray(train_latents, dtype=np.float64)
    test_latents = np.asarray(test_latents, dtype=np.float64)
    for rates, latents, split in ((train_rates, train_latents, "train"), (test_rates, test_latents, "test")):
        if rates.ndim != 3 or latents.ndim != 3 or rates.shape[:2] != latents.shape[:2]:
            raise NeurodynError(
                f"map_to_latents: {split} rates {rates.shape} and latents {latents.shape} must both be "
                "(trials, samples, ...) with the same trials and samples"
            )
    if train_latents.shape[2] != test_latents.shape[2] or train_rates.shape[2] != test_rates.shape[2]:
        raise NeurodynError("map_to_latents: train and test must have the same neurons and latent dimensions")
    num_train_trials = train_rates.shape[0]
    if num_train_trials < 2:
        raise NeurodynError("map_to_latents needs at least 2 training trials to cross-validate the ridge penalty")

    scaler = StandardScaler().fit(_log_rate_features(train_rates))
    x_train = scaler.transform(_log_rate_features(train_rates))
    x_test = scaler.transform(_log_rate_features(test_rates))
    y_train = _flatten_trials(train_latents)

    trial_of_row = np.repeat(np.arange(num_train_trials), train_rates.shape[1])
    folds = list(GroupKFold(n_splits=min(MAX_CV_FOLDS, num_train_trials)).split(x_train, groups=trial_of_row))
    alphas = DEFAULT_ALPHAS if alphas is None else np.asarray(alphas, dtype=np.float64)
    # One BLAS thread: once torch has run in the process, its threads and BLAS's compete and the fits
    # run about 10x slower (172 s vs 15 s measured on 1280 x 50 x 100 rates).
    with threadpool_limits(limits=1):
        ridge = RidgeCV(alphas=alphas, cv=folds).fit(x_train, y_train)

    predictions = ridge.predict(x_test).reshape(test_latents.shape)
    y_test = _flatten_trials(test_latents)
    y_pred = _flatten_trials(predictions)
    return LatentMapping(
        r2=float(r2_score(y_test, y_pred, multioutput="uniform_average")),
        r2_per_dim=np.asarray(r2_score(y_test, y_pred, multioutput="raw_values"), dtype=np.float64),
        test_predictions=predictions,
        alpha=float(ridge.alpha_),
    )
