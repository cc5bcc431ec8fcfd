"""Baselines that neurodyn's numbers are compared against: Gaussian spike smoothing and NLB's
"spike smoothing" co-smoothing baseline (smoothed held-in spikes -> Poisson GLM -> held-out rates).

Everything works on trials-first arrays ``(trials, bins, neurons)`` of spike counts per bin, NaN
where a count was not observed; rates are expected counts per bin (not Hz). Widths are Gaussian
standard deviations in bins (a width of 60 ms at 5 ms bins is 12 bins: the caller converts).

- ``gaussian_smooth``: NaN-aware Gaussian smoothing along the bins of each trial (normalised
  convolution, so the trial edges and unobserved bins are handled by renormalising the kernel).
- ``smoothing_baseline``: every neuron's rates = its own smoothed counts; the one width shared by
  all neurons is chosen on the training trials alone by predicting each bin from its neighbours
  (leave-centre-out smoothing) and scoring the Poisson log-likelihood. The rate-R^2 baseline of
  synthetic sets: the true rates are used only to score it, never to choose the width.
- ``smoothing_glm_cosmoothing``: NLB's co-smoothing baseline. The held-in spikes are smoothed and
  log-transformed, and one Poisson GLM per held-out neuron maps them to that neuron's counts; the
  width and the GLM's L2 penalty are chosen by K-fold cross-validation over whole training trials.
- ``smoothed_velocity_r2``: NLB's vel R^2 of smoothed spikes (a thin wrapper of
  ``neurodyn.evaluate.nlb.velocity_r2``).

No choice ever looks at the evaluation trials: they are only smoothed and passed through the fitted
map, so changing them cannot change the chosen width or penalty.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.optimize import minimize
from scipy.special import gammaln
from threadpoolctl import threadpool_limits

from neurodyn.errors import NeurodynError
from neurodyn.evaluate.metrics import RATE_FLOOR, bits_per_spike
from neurodyn.evaluate.nlb import velocity_r2

# The Gaussian kernel is cut at this many standard deviations (scipy's default), i.e. it spans
# ``int(TRUNCATE * sigma + 0.5)`` bins either side of the centre.
TRUNCATE = 4.0

# Candidate widths (Gaussian SD, bins) of ``smoothing_baseline`` when the caller gives none.
DEFAULT_SMOOTHING_WIDTHS_BINS = (1.0, 2.0, 4.0, 8.0, 12.0, 16.0)

# Candidate widths of ``smoothing_glm_cosmoothing``: 20 / 40 / 60 / 80 ms at NLB's 5 ms bins.
DEFAULT_COSMOOTHING_WIDTHS_BINS = (4.0, 8.0, 12.0, 16.0)

# Candidate L2 penalties of the GLMs (scikit-learn's PoissonRegressor scale: mean Poisson NLL per row
# + alpha / 2 * ||w||^2, on the unstandardised log-rate inputs, as in nlb_tools' baseline, whose
# MC_Maze scaling sets used 0.1).
DEFAULT_ALPHAS = (0.03, 0.1, 0.3, 1.0)

# Folds of the trial-wise cross-validation of ``smoothing_glm_cosmoothing`` (NLB's sweep used 5).
DEFAULT_CV_FOLDS = 5

# Added to the smoothed held-in counts before the log (nlb_tools' smoothing baseline adds the same).
LOG_OFFSET = 1e-4

# Linear predictors are capped here before exp() so that a wild line-search step cannot overflow
# (exp(50) ~ 5e21 counts per bin: far beyond any real rate, so it never binds at a solution).
MAX_LOG_RATE = 50.0


# --------------------------------------------------------------------------------------------- checks


def _counts_array(counts, name: str) -> np.ndarray:
    """``counts`` as a float64 ``(trials, bins, neurons)`` array of non-negative counts or NaN."""
    array = np.asarray(counts, dtype=np.float64)
    if array.ndim != 3:
        raise NeurodynError(f"{name} has shape {array.shape}; expected 3 axes (trials, bins, neurons)")
    if 0 in array.shape:
        raise NeurodynError(f"{name} has shape {array.shape}; every axis (trials, bins, neurons) must be non-empty")
    if np.isinf(array).any():
        raise NeurodynError(f"{name} holds infinite values; spike counts must be finite (NaN = not observed)")
    if (array < 0).any():
        raise NeurodynError(f"{name} holds negative values; spike counts must be >= 0 (NaN = not observed)")
    return array


def _sigma(sigma_bins, name: str = "sigma_bins") -> float:
    try:
        sigma = float(sigma_bins)
    except (TypeError, ValueError):
        raise NeurodynError(f"{name} must be a number of bins; got {sigma_bins!r}") from None
    if not np.isfinite(sigma) or sigma < 0:
        raise NeurodynError(f"{name} must be a finite width >= 0 bins; got {sigma_bins!r}")
    return sigma


def _grid(values, name: str, positive: bool) -> np.ndarray:
    grid = np.asarray(values, dtype=np.float64).reshape(-1)
    if grid.size == 0:
        raise NeurodynError(f"{name}: no candidate values to choose from")
    bad = ~np.isfinite(grid) | ((grid <= 0) if positive else (grid < 0))
    if bad.any():
        raise NeurodynError(f"{name} must hold finite values {'> 0' if positive else '>= 0'}; got {grid[bad][0]!r}")
    return grid


# ------------------------------------------------------------------------------------------ smoothing


def _smoothing_sums(counts: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The kernel-weighted sums of the observed counts and of the observed mask along the bins axis."""
    observed = ~np.isnan(counts)
    values = np.where(observed, counts, 0.0)
    # mode="constant", cval=0: bins outside the trial contribute to neither sum, so near the edges the
    # ratio is the average over the in-trial part of the kernel (edge correction by renormalising).
    numerator = gaussian_filter1d(values, sigma, axis=1, mode="constant", cval=0.0, truncate=TRUNCATE)
    weight = gaussian_filter1d(observed.astype(np.float64), sigma, axis=1, mode="constant", cval=0.0,
                               truncate=TRUNCATE)
    return numerator, weight


def gaussian_smooth(counts, sigma_bins) -> np.ndarray:
    """Gaussian smoothing along the bins of every trial and neuron, ignoring unobserved (NaN) bins.

    A normalised convolution: the observed counts (NaN read as 0) and the observed mask are each
    filtered with ``scipy.ndimage.gaussian_filter1d`` (``mode="constant"``, ``cval=0``, kernel cut at
    ``TRUNCATE`` = 4 standard deviations) and divided. The result at bin t is so the Gaussian-weighted
    average of the observed counts within the trial; near a trial's edges and around unobserved bins
    the kernel is renormalised over what is there (no zero padding bias, unlike NLB's ``np.convolve``
    with ``'same'``). Trials never mix.

    Parameters
    ----------
    counts : ndarray, shape (trials, bins, neurons)
        Spike counts per bin, NaN where not observed.
    sigma_bins : float
        Standard deviation of the Gaussian kernel in bins (ms / bin width). 0 returns the counts.

    Returns
    -------
    ndarray, shape (trials, bins, neurons)
        Smoothed counts, i.e. expected counts per bin (float64); NaN where no observed bin lies within
        the kernel's reach.

    Raises
    ------
    NeurodynError
        When ``counts`` is not 3-D, holds negative or infinite values, or ``sigma_bins`` is negative.
    """
    counts = _counts_array(counts, "counts")
    sigma = _sigma(sigma_bins)
    if sigma == 0.0:
        return counts.copy()
    numerator, weight = _smoothing_sums(counts, sigma)
    smoothed = np.full(counts.shape, np.nan)
    defined = weight > 0
    smoothed[defined] = numerator[defined] / weight[defined]
    return smoothed


def _centre_weight(sigma: float) -> float:
    """The weight ``gaussian_filter1d`` gives lag 0 (its kernel is normalised to sum to 1)."""
    radius = int(TRUNCATE * sigma + 0.5)
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    return float(gaussian_filter1d(impulse, sigma, mode="constant", cval=0.0, truncate=TRUNCATE)[radius])


def leave_centre_out_smooth(counts, sigma_bins) -> np.ndarray:
    """Every bin predicted from its neighbours only: Gaussian smoothing with zero weight at lag 0.

    The same normalised convolution as ``gaussian_smooth`` but with the kernel's centre weight
    removed (and the rest renormalised), so the value at bin t does not depend on the count at t.

    Parameters
    ----------
    counts : ndarray, shape (trials, bins, neurons)
        Spike counts per bin, NaN where not observed.
    sigma_bins : float
        Standard deviation of the Gaussian kernel in bins, > 0 and wide enough that the kernel reaches
        a neighbour (``int(4 * sigma_bins + 0.5) >= 1``, i.e. ``sigma_bins >= 0.125``).

    Returns
    -------
    ndarray, shape (trials, bins, neurons)
        Expected counts per bin from the neighbouring bins; NaN where no neighbour within reach is
        observed.
    """
    counts = _counts_array(counts, "counts")
    sigma = _sigma(sigma_bins)
    if int(TRUNCATE * sigma + 0.5) < 1:
        raise NeurodynError(f"a Gaussian of {sigma:g} bins reaches no neighbouring bin (it needs >= 0.125 bins); "
                            "a bin cannot be predicted from its neighbours with it")
    numerator, weight = _smoothing_sums(counts, sigma)
    centre = _centre_weight(sigma)
    observed = ~np.isnan(counts)
    numerator = np.maximum(numerator - centre * np.where(observed, counts, 0.0), 0.0)
    weight = weight - centre * observed
    predicted = np.full(counts.shape, np.nan)
    # What is left after removing the centre is either >= one neighbour's weight (>= exp(-8) of the
    # centre's) or rounding noise around 0.
    defined = weight > 1e-8 * centre
    predicted[defined] = numerator[defined] / weight[defined]
    return predicted


def _poisson_log_likelihood(rates: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Elementwise full Poisson log-likelihood (nats), rates floored at ``RATE_FLOOR``."""
    rates = np.maximum(rates, RATE_FLOOR)
    return counts * np.log(rates) - rates - gammaln(counts + 1.0)


@dataclass(frozen=True)
class SmoothingBaseline:
    """Result of ``smoothing_baseline``.

    ``width_bins``: the chosen Gaussian SD (bins); ``eval_rates``: ``(eval_trials, bins, neurons)``
    smoothed evaluation counts at that width (expected counts per bin); ``widths_bins``: the candidates;
    ``scores``: ``(widths,)`` mean leave-centre-out Poisson log-likelihood per scored training entry
    (nats); ``num_scored``: how many training (trial, bin, neuron) entries were scored.
    """

    width_bins: float
    eval_rates: np.ndarray
    widths_bins: np.ndarray
    scores: np.ndarray
    num_scored: int


def smoothing_baseline(train_counts, eval_counts, widths_bins=DEFAULT_SMOOTHING_WIDTHS_BINS) -> SmoothingBaseline:
    """Spike smoothing as a rate estimate, its width chosen on the training trials only.

    Rule: for every candidate width, each observed training entry (trial, bin, neuron) is predicted
    from the same neuron's neighbouring bins in the same trial (``leave_centre_out_smooth``: the
    Gaussian with zero weight at lag 0, renormalised) and scored by its Poisson log-likelihood
    (rates floored at ``RATE_FLOOR``). Only entries whose prediction is defined at every candidate
    width are scored, so all widths are scored on the same entries. The width with the highest
    summed log-likelihood wins (the first in the given order among equals); it is shared by all
    neurons. The evaluation rates are then ``gaussian_smooth(eval_counts, width)`` (full kernel).
    The evaluation counts are never looked at before the width is fixed.

    Parameters
    ----------
    train_counts : ndarray, shape (train_trials, bins, neurons)
        Spike counts per bin of the trials the width is chosen on (NaN = not observed).
    eval_counts : ndarray, shape (eval_trials, eval_bins, neurons)
        Spike counts per bin of the trials to estimate rates for (same neurons; bins may differ).
    widths_bins : sequence of float
        Candidate Gaussian SDs in bins, each >= 0.125 (the kernel must reach a neighbour).

    Returns
    -------
    SmoothingBaseline
        The chosen width, the evaluation rates (expected counts per bin) and every width's score.

    Raises
    ------
    NeurodynError
        On arrays that are not 3-D count arrays, different neurons in train and eval, invalid widths,
        or no training entry that can be scored.
    """
    train_counts = _counts_array(train_counts, "train counts")
    eval_counts = _counts_array(eval_counts, "eval counts")
    if train_counts.shape[2] != eval_counts.shape[2]:
        raise NeurodynError(f"train counts {train_counts.shape} and eval counts {eval_counts.shape} must have the "
                            "same neurons (last axis)")
    widths = _grid(widths_bins, "widths_bins", positive=True)
    observed = ~np.isnan(train_counts)
    predictions = [leave_centre_out_smooth(train_counts, width) for width in widths]
    scored = observed.copy()
    for predicted in predictions:
        scored &= ~np.isnan(predicted)
    num_scored = int(scored.sum())
    if num_scored == 0:
        raise NeurodynError("smoothing baseline: no observed training bin has an observed neighbour to be "
                            "predicted from; cannot choose a width")
    counts = train_counts[scored]
    scores = np.array([_poisson_log_likelihood(predicted[scored], counts).sum() / num_scored
                       for predicted in predictions])
    best = int(np.argmax(scores))
    return SmoothingBaseline(width_bins=float(widths[best]), eval_rates=gaussian_smooth(eval_counts, widths[best]),
                             widths_bins=widths, scores=scores, num_scored=num_scored)


# -------------------------------------------------------------------------------------- Poisson GLMs


class PoissonGlmProblem:
    """Poisson GLMs (log link), one per output column, on one shared design; fit for any penalty.

    Each column j minimises scikit-learn's ``PoissonRegressor`` objective: the mean over its observed
    rows of the Poisson NLL ``exp(eta) - y * eta`` (= half the mean deviance up to a constant) plus
    ``alpha / 2 * ||w_j||^2`` (the intercept is not penalised), with ``eta = inputs @ w_j + b_j``.

    Why not ``PoissonRegressor`` per neuron: the columns share the design, so one L-BFGS run on the
    sum of their objectives costs one ``(rows, inputs) @ (inputs, neurons)`` product per step for
    all neurons instead of one fit (with its own overhead) per neuron; the sum is separable, so its
    minimum is every column's own minimum (the tests check the coefficients against
    ``PoissonRegressor``). Smoothed spikes of many neurons are strongly correlated inputs, which
    makes plain gradient methods crawl at small penalties, so the problem is solved in whitened
    coordinates: the centred inputs' principal components scaled to unit variance, each
    coefficient further scaled by the square root of its approximate curvature
    (``mean count_j + alpha / variance_i``: the Hessian's diagonal if the rates were constant).
    There L-BFGS needs tens of steps rather than hundreds or thousands (MC_Maze_Small, 60 ms,
    35 held-out neurons: 9-40 steps for alpha 1-0.03, against 250-4400 on the raw log-rate inputs).
    The minimiser is unchanged: with
    ``alpha > 0`` the optimal weights lie in the span of the inputs' rows, which the principal
    components with non-zero variance span (with ``alpha = 0`` and collinear inputs this picks the
    minimum-norm solution). Building the problem once (one SVD) lets a penalty path warm-start.

    Parameters
    ----------
    inputs : ndarray, shape (rows, inputs)
        The design, finite.
    counts : ndarray, shape (rows, neurons)
        Spike counts per row, NaN where not observed (those rows are left out of that column's fit).
    """

    def __init__(self, inputs, counts):
        x = np.asarray(inputs, dtype=np.float64)
        y = np.asarray(counts, dtype=np.float64)
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise NeurodynError(f"Poisson GLM: inputs {x.shape} and counts {y.shape} must be (rows, inputs) and "
                                "(rows, neurons) with the same, non-zero number of rows")
        if not np.all(np.isfinite(x)):
            raise NeurodynError("Poisson GLM: the inputs hold NaN or infinite values")
        if np.isinf(y).any() or (y < 0).any():
            raise NeurodynError("Poisson GLM: counts must be >= 0 and finite (NaN = not observed)")
        observed = ~np.isnan(y)
        rows_per_neuron = observed.sum(axis=0).astype(np.float64)
        if (rows_per_neuron == 0).any():
            raise NeurodynError(f"Poisson GLM: neuron {int(np.argmin(rows_per_neuron))} has no observed row to fit")
        self.num_inputs, self.num_neurons = x.shape[1], y.shape[1]
        y = np.where(observed, y, 0.0)
        # Each row's weight in each column's mean NLL (0 where unobserved), and that times the count.
        self._row_weight = observed / rows_per_neuron
        self._weighted_counts = self._row_weight * y
        self.mean_counts = y.sum(axis=0) / rows_per_neuron
        self._input_mean = x.mean(axis=0)
        _, singular, right = np.linalg.svd(x - self._input_mean, full_matrices=False)
        variance = singular ** 2 / x.shape[0]
        keep = variance > 1e-12 * max(variance.max(initial=0.0), 1e-300)
        self._variance = variance[keep]
        self._components = right[keep]
        # whitened = (x - mean) @ _to_whitened: uncorrelated columns of unit variance.
        self._to_whitened = self._components.T / np.sqrt(self._variance)
        self._whitened = (x - self._input_mean) @ self._to_whitened
        # Both layouts kept contiguous: the two products per step each read theirs row by row.
        self._whitened_t = np.ascontiguousarray(self._whitened.T)
        # Curvature scale of the intercept (a silent column gets a small positive one).
        self._intercept_curvature = np.maximum(self.mean_counts, 1e-6)

    def _curvature(self, alpha: float) -> np.ndarray:
        """``(components, neurons)`` approximate Hessian diagonal in whitened coordinates."""
        return self._intercept_curvature[None, :] + alpha / self._variance[:, None]

    def _objective(self, params: np.ndarray, alpha: float, scale: np.ndarray,
                   intercept_scale: np.ndarray) -> tuple[float, np.ndarray]:
        """Summed objective and gradient in the preconditioned whitened coordinates."""
        params = params.reshape(-1, self.num_neurons)
        u = params[:-1] * scale
        c = params[-1] * intercept_scale
        eta = np.minimum(self._whitened @ u + c, MAX_LOG_RATE)
        weighted_rates = self._row_weight * np.exp(eta)
        value = float(weighted_rates.sum() - np.vdot(self._weighted_counts, eta)
                      + 0.5 * alpha * np.sum(u * u / self._variance[:, None]))
        residual = weighted_rates - self._weighted_counts
        gradient = np.empty_like(params)
        gradient[:-1] = (self._whitened_t @ residual + alpha * u / self._variance[:, None]) * scale
        gradient[-1] = residual.sum(axis=0) * intercept_scale
        return value, gradient.reshape(-1)

    def fit(self, alpha: float, initial: tuple[np.ndarray, np.ndarray] | None = None,
            max_iter: int = 2000, tol: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
        """The minimiser for penalty ``alpha`` (>= 0): ``coef`` ``(inputs, neurons)``, ``intercept`` ``(neurons,)``.

        ``initial``: a starting ``(coef, intercept)`` (e.g. the fit at a nearby penalty); default
        zero weights and each column's log mean count. ``max_iter``, ``tol``: L-BFGS's iteration cap
        and gradient tolerance (``gtol``; ``ftol`` is ``tol`` * 1e-4) in the preconditioned coordinates.
        Rates are ``exp(inputs @ coef + intercept)``.
        """
        alpha = float(alpha)
        if not np.isfinite(alpha) or alpha < 0:
            raise NeurodynError(f"Poisson GLM: the penalty alpha must be finite and >= 0; got {alpha!r}")
        scale = 1.0 / np.sqrt(self._curvature(alpha))
        intercept_scale = 1.0 / np.sqrt(self._intercept_curvature)
        if initial is None:
            u = np.zeros((self._variance.size, self.num_neurons))
            c = np.log(np.maximum(self.mean_counts, RATE_FLOOR))
        else:
            coef = np.asarray(initial[0], dtype=np.float64).reshape(self.num_inputs, self.num_neurons)
            intercept = np.asarray(initial[1], dtype=np.float64).reshape(self.num_neurons)
            u = (self._components @ coef) * np.sqrt(self._variance)[:, None]  # its part in the inputs' span
            c = intercept + self._input_mean @ coef
        start = np.vstack([u / scale, (c / intercept_scale)[None]])
        result = minimize(self._objective, start.reshape(-1), jac=True, method="L-BFGS-B",
                          args=(alpha, scale, intercept_scale),
                          options={"maxiter": int(max_iter), "gtol": tol, "ftol": tol * 1e-4, "maxcor": 20})
        if result.status == 1:
            warnings.warn(f"Poisson GLM (alpha={alpha:g}) stopped after {int(max_iter)} L-BFGS iterations before "
                          "converging", RuntimeWarning, stacklevel=2)
        params = result.x.reshape(-1, self.num_neurons)
        coef = self._to_whitened @ (params[:-1] * scale)
        intercept = params[-1] * intercept_scale - self._input_mean @ coef
        return coef, intercept


def fit_poisson_glm(inputs, counts, alpha: float,
                    initial: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One Poisson GLM per column of ``counts`` on the shared design ``inputs`` (``PoissonGlmProblem``).

    Parameters
    ----------
    inputs : ndarray, shape (rows, inputs)
        The design, finite.
    counts : ndarray, shape (rows, neurons)
        Spike counts per row, NaN where not observed.
    alpha : float
        L2 penalty on the weights (scikit-learn's ``PoissonRegressor`` scale), >= 0.
    initial : (ndarray, ndarray), optional
        Starting ``(coef, intercept)``.

    Returns
    -------
    (ndarray, ndarray)
        ``coef`` ``(inputs, neurons)`` and ``intercept`` ``(neurons,)``; rates = ``exp(inputs @ coef + intercept)``.
    """
    return PoissonGlmProblem(inputs, counts).fit(alpha, initial)


def _glm_rates(x: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    return np.exp(np.minimum(x @ coef + intercept, MAX_LOG_RATE))


def _rows(array: np.ndarray) -> np.ndarray:
    """``(trials, bins, features)`` -> ``(trials * bins, features)``, trial by trial."""
    return array.reshape(-1, array.shape[-1])


def glm_inputs(heldin_counts, sigma_bins, log_inputs: bool = True) -> np.ndarray:
    """The co-smoothing GLM's inputs: ``(trials * bins, heldin)`` smoothed held-in counts, logged.

    ``log(gaussian_smooth(heldin_counts, sigma_bins) + LOG_OFFSET)`` (or the smoothed counts when
    ``log_inputs`` is false), one row per (trial, bin), trial by trial. Raises ``NeurodynError``
    where a bin has no observed held-in count within the kernel's reach (the input would be NaN).
    """
    heldin = _counts_array(heldin_counts, "held-in counts")
    smoothed = gaussian_smooth(heldin, sigma_bins)
    if np.isnan(smoothed).any():
        raise NeurodynError(f"held-in counts: some bins have no observed count within a {float(sigma_bins):g}-bin "
                            "Gaussian's reach, so the GLM has no input there; give fully observed held-in spikes")
    return _rows(np.log(smoothed + LOG_OFFSET) if log_inputs else smoothed)


@dataclass(frozen=True)
class CoSmoothingBaseline:
    """Result of ``smoothing_glm_cosmoothing``: the fitted spike-smoothing co-smoothing model.

    ``width_bins``, ``alpha``: the chosen Gaussian SD (bins) and L2 penalty. ``eval_rates_heldout``:
    ``(eval_trials, bins, heldout)`` predicted held-out rates of the evaluation trials;
    ``eval_rates_heldin``: ``(eval_trials, bins, heldin)`` their smoothed held-in counts (NLB's
    held-in rates of this baseline); both expected counts per bin. ``widths_bins``, ``alphas``: the
    grids; ``cv_cobps``: ``(widths, alphas)`` cross-validated co-bps of every pair on the training
    trials (out-of-fold predictions of all folds pooled). ``coef`` ``(heldin, heldout)``,
    ``intercept`` ``(heldout,)``, ``log_inputs``: the final GLMs, fit on all training trials with the
    chosen pair; ``predict_heldout`` applies them to any trials.
    """

    width_bins: float
    alpha: float
    eval_rates_heldout: np.ndarray
    eval_rates_heldin: np.ndarray
    widths_bins: np.ndarray
    alphas: np.ndarray
    cv_cobps: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    log_inputs: bool

    def predict_heldout(self, heldin_counts) -> np.ndarray:
        """Held-out rates ``(trials, bins, heldout)``, expected counts per bin, of any trials' held-in
        counts ``(trials, bins, heldin)``, with the chosen width and the fitted GLMs."""
        heldin = _counts_array(heldin_counts, "held-in counts")
        if heldin.shape[2] != self.coef.shape[0]:
            raise NeurodynError(f"held-in counts have {heldin.shape[2]} neurons; the GLMs were fit on "
                                f"{self.coef.shape[0]}")
        inputs = glm_inputs(heldin, self.width_bins, self.log_inputs)
        return _glm_rates(inputs, self.coef, self.intercept).reshape(*heldin.shape[:2], -1)


def trial_folds(num_trials: int, num_folds: int) -> list[np.ndarray]:
    """``num_folds`` contiguous blocks of trial indices (in order, no shuffling; sizes differ by <= 1)."""
    return list(np.array_split(np.arange(num_trials), num_folds))


def smoothing_glm_cosmoothing(train_heldin, train_heldout, eval_heldin,
                              widths_bins=DEFAULT_COSMOOTHING_WIDTHS_BINS, alphas=DEFAULT_ALPHAS,
                              num_folds: int = DEFAULT_CV_FOLDS, log_inputs: bool = True) -> CoSmoothingBaseline:
    """NLB's spike-smoothing co-smoothing baseline: smoothed held-in spikes -> Poisson GLMs -> held-out rates.

    Model (as nlb_tools' smoothing baseline): the held-in counts are smoothed (``gaussian_smooth``,
    SD = the width) and turned into ``log(smoothed + LOG_OFFSET)`` (``glm_inputs``; with
    ``log_inputs=False`` the smoothed counts themselves), not standardised, so ``alpha`` means what
    it means there; one Poisson GLM per held-out neuron (``PoissonGlmProblem``: scikit-learn's
    ``PoissonRegressor`` objective, L2 penalty ``alpha`` on the weights, free intercept) maps them to
    that neuron's count in the same bin; every (trial, bin) is one row. Unlike nlb_tools, the
    smoothing renormalises the kernel at the trial edges instead of padding with zeros.

    Choice: for every (width, alpha), ``num_folds``-fold cross-validation over the training trials
    (``trial_folds``: contiguous blocks of whole trials, in the given order, no shuffling; a fold's
    trials are predicted by the GLMs fit on the other folds' trials). The out-of-fold predictions of
    all folds are pooled and scored with ``bits_per_spike`` against the training held-out counts;
    the best pair wins (the first in grid order, widths outer, among equals). The summed
    out-of-fold Poisson log-likelihood ranks the pairs the same way (bits per spike is an
    increasing affine function of it here). The GLMs are then refit on all training trials with that
    pair and applied to the evaluation trials, which take no part in any choice.

    Parameters
    ----------
    train_heldin : ndarray, shape (train_trials, bins, heldin)
        Held-in spike counts of the training trials (fully observed within the kernel's reach).
    train_heldout : ndarray, shape (train_trials, bins, heldout)
        Held-out spike counts of the same trials and bins (NaN = not observed, left out).
    eval_heldin : ndarray, shape (eval_trials, eval_bins, heldin)
        Held-in spike counts of the trials to predict (bins may differ from training).
    widths_bins : sequence of float
        Candidate Gaussian SDs in bins (default 4, 8, 12, 16: 20-80 ms at 5 ms bins).
    alphas : sequence of float
        Candidate L2 penalties, >= 0 (default 0.03, 0.1, 0.3, 1).
    num_folds : int
        Cross-validation folds, >= 2 and at most the number of training trials (default 5).
    log_inputs : bool
        Whether the GLM inputs are the log of the smoothed held-in counts (default, as NLB) or the
        smoothed counts themselves.

    Returns
    -------
    CoSmoothingBaseline
        The chosen width and alpha, the evaluation held-out and held-in rates (expected counts per
        bin), the cross-validated co-bps grid and the final GLMs.

    Raises
    ------
    NeurodynError
        On arrays of the wrong shape or content, disagreeing trials, bins or neurons, invalid grids,
        too few training trials for the folds, or a held-out neuron with no training spike.
    """
    train_heldin = _counts_array(train_heldin, "train held-in counts")
    train_heldout = _counts_array(train_heldout, "train held-out counts")
    eval_heldin = _counts_array(eval_heldin, "eval held-in counts")
    if train_heldin.shape[:2] != train_heldout.shape[:2]:
        raise NeurodynError(f"train held-in {train_heldin.shape} and held-out {train_heldout.shape} counts must "
                            "cover the same (trials, bins)")
    if eval_heldin.shape[2] != train_heldin.shape[2]:
        raise NeurodynError(f"eval held-in counts {eval_heldin.shape} and train held-in counts {train_heldin.shape} "
                            "must have the same held-in neurons (last axis)")
    widths = _grid(widths_bins, "widths_bins", positive=True)
    alpha_grid = _grid(alphas, "alphas", positive=False)
    num_trials = train_heldin.shape[0]
    if isinstance(num_folds, bool) or not float(num_folds).is_integer() or num_folds < 2:
        raise NeurodynError(f"num_folds must be a whole number >= 2; got {num_folds!r}")
    if num_trials < num_folds:
        raise NeurodynError(f"{num_trials} training trials cannot make {int(num_folds)} cross-validation folds of "
                            "whole trials")
    spikes = np.nansum(train_heldout, axis=(0, 1))
    if (spikes <= 0).any():
        raise NeurodynError(f"held-out neuron {int(np.argmin(spikes))} has no spike in the training trials; "
                            "its GLM cannot be fit")
    num_bins = train_heldin.shape[1]
    targets = _rows(train_heldout)
    # Larger penalties first: each fit warm-starts the next, less penalised one (a penalty path).
    alpha_order = np.argsort(-alpha_grid, kind="stable")

    # The per-step products are small ((rows, ~100) x (~100, neurons)): one BLAS thread does them
    # faster than two that must synchronise (measured 2-4x on 2 cores), and leaves a core free.
    with threadpool_limits(limits=1, user_api="blas"):
        cv_cobps = np.empty((widths.size, alpha_grid.size))
        for width_index, width in enumerate(widths):
            inputs = glm_inputs(train_heldin, width, log_inputs)
            out_of_fold = np.empty((alpha_grid.size, *targets.shape))
            for fold in trial_folds(num_trials, int(num_folds)):
                held_rows = np.zeros((num_trials, num_bins), dtype=bool)
                held_rows[fold] = True
                held_rows = held_rows.reshape(-1)
                problem, params = PoissonGlmProblem(inputs[~held_rows], targets[~held_rows]), None
                for alpha_index in alpha_order:
                    params = problem.fit(alpha_grid[alpha_index], initial=params)
                    out_of_fold[alpha_index, held_rows] = _glm_rates(inputs[held_rows], *params)
            for alpha_index in range(alpha_grid.size):
                cv_cobps[width_index, alpha_index] = bits_per_spike(out_of_fold[alpha_index], targets)

        best_width, best_alpha = np.unravel_index(int(np.argmax(cv_cobps)), cv_cobps.shape)
        width, alpha = float(widths[best_width]), float(alpha_grid[best_alpha])
        coef, intercept = PoissonGlmProblem(glm_inputs(train_heldin, width, log_inputs), targets).fit(alpha)
    model = CoSmoothingBaseline(width_bins=width, alpha=alpha, eval_rates_heldout=np.empty(0),
                                eval_rates_heldin=gaussian_smooth(eval_heldin, width), widths_bins=widths,
                                alphas=alpha_grid, cv_cobps=cv_cobps, coef=coef, intercept=intercept,
                                log_inputs=bool(log_inputs))
    return replace(model, eval_rates_heldout=model.predict_heldout(eval_heldin))


# ---------------------------------------------------------------------------------------------- vel R^2


def smoothed_velocity_r2(train_counts, train_behavior, eval_counts, eval_behavior, sigma_bins) -> float:
    """NLB vel R^2 of spike smoothing: ``velocity_r2`` on ``gaussian_smooth``-ed counts.

    Parameters
    ----------
    train_counts, eval_counts : ndarray, shape (trials, bins, neurons)
        Spike counts of the decoder's training trials and of the scored trials (fully observed).
    train_behavior, eval_behavior : ndarray, shape (trials, bins, behavior_dim)
        The behaviour paired bin for bin with the counts (already lagged as wanted; NaN = not measured).
    sigma_bins : float
        Gaussian SD in bins (e.g. a co-smoothing baseline's ``width_bins``).

    Returns
    -------
    float
        R^2 of the decoded behaviour on the evaluation trials (``neurodyn.evaluate.nlb.velocity_r2``).
    """
    return velocity_r2(gaussian_smooth(train_counts, sigma_bins), train_behavior,
                       gaussian_smooth(eval_counts, sigma_bins), eval_behavior)
