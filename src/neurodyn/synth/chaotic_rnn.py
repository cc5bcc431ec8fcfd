"""Synthetic spiking population driven by a chaotic recurrent network (the LFADS paper's chaotic-RNN data).

The data design of Sussillo et al. 2016 (arXiv:1608.06315) and Pandarinath et al. 2018 (Nature
Methods 15, 805-815): a random continuous-time RNN in its chaotic regime generates the hidden
dynamics; a population of Poisson neurons reads it out. Generative model:

1. Network: ``N = rnn_units`` units,

       tau dx/dt = -x + gamma J tanh(x),        J_ij ~ N(0, 1 / N) i.i.d.,

   with ``tau = tau_ms`` and ``gamma`` the gain. In the limit of many units ``gamma > 1`` is chaotic
   (Sompolinsky, Crisanti and Sommers 1988) and ``gamma < 1`` decays to the origin. A small network is
   not: of 40 random 50-unit networks at gamma = 1.5 (the LFADS paper's value) none had a positive
   largest Lyapunov exponent (each settled on a fixed point or a limit cycle); at 2.5 about one in four
   has, at 100 units most. So ``J`` is redrawn from the seed's stream until a crude estimate of its largest
   Lyapunov exponent exceeds ``min_lyapunov_per_s`` (1/s by default; ``rnn_connectivity``,
   ``largest_lyapunov``), and the default gain is 2.5.
   One ``J`` per dataset.
2. Conditions: each condition ``c`` draws an initial state ``x_c(0) ~ N(0, initial_state_std^2 I)``; its
   trials share it, each trial plus its own ``initial_state_noise * N(0, I)`` (added before the burn-in;
   0 by default: trials of a condition then share their rates and differ only in their spike draws).
   After ``burn_in_ms`` (250 ms = 10 tau by default, so that trials start on the attractor) the state is
   sampled once per bin: bin ``k`` holds the state at time ``k * bin_ms`` after the burn-in.
   Integration: classical fixed-step RK4 with ``ceil(bin_ms / max_step_ms)`` equal steps per bin
   (steps <= 1 ms = tau / 25 by default: within a few 1e-6 of ``scipy.integrate.solve_ivp`` after 50 ms
   at gamma = 2.5, far below the spike noise).
3. Rates: log-linear in ``h = tanh(x)``: ``log r_n(t) = w_n . h(t) + b_n``. Each neuron reads a random
   direction (uniform on the sphere) scaled so that its log-rate has standard deviation ``log_rate_std``
   over the dataset; its bias sets its mean rate over the dataset (all trials and bins) to exactly its
   target. The targets spread log-uniformly over ``mean_rate_hz = (low, high)``: the neurons' mean rates
   are ``exp(linspace(log low, log high, num_neurons))`` in a random order. ``truth`` is the rate as
   expected count per bin, ``r * bin_ms / 1000``.
4. ``data`` ~ Poisson(truth), optionally bandwidth-masked (SBTT): in every trial and bin exactly ``keep``
   neurons, chosen uniformly without replacement among all neurons (held-out ones included), are observed;
   the rest are NaN (``synth.lorenz_spikes.bandwidth_mask``).
5. Optionally ``heldout_fraction``: a seeded random share of the neurons becomes ``heldout_neurons`` (never
   shown to the encoder, reconstructed for co-bps; ``data.nwb_spikes.choose_heldout_neurons``).

``latents`` are the network's rates ``tanh(x)`` at the bin times ``(trials, bins, rnn_units)``, or, with
``latent_pcs = k``, their projections onto the top ``k`` principal axes over the dataset (centred), in
order of variance. ``attrs['latents_meaning']`` says which. There is no ``split`` key: the trainer draws
its seeded, condition-balanced valid split.

Independent random streams (connectivity, initial states, trial noise, readout, spikes, mask) are derived
from ``seed`` (``numpy.random.SeedSequence(seed).spawn``), so the same seed with another ``keep`` masks the
very same spike counts and ``rnn_connectivity(seed, rnn_units, gamma, tau_ms, min_lyapunov_per_s)`` gives
back the network. ``J`` and the readout weights are not stored (they can exceed HDF5's 64 KiB attribute
limit); the readout bias, the mean rates and the network's estimated Lyapunov exponent are.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from neurodyn.data.nwb_spikes import choose_heldout_neurons
from neurodyn.data.seed_format import NeuralDataset
from neurodyn.errors import NeurodynError
from neurodyn.synth.lorenz_spikes import bandwidth_mask

# Stream indices of SeedSequence(seed).spawn: one independent generator per ingredient.
_STREAMS = ("connectivity", "initial", "trial_noise", "readout", "spikes", "mask", "chaos_check")
# The chaos check of a candidate network (``largest_lyapunov``), in units of tau: RK4 steps of tau / 12.5,
# 40 tau to reach the attractor (1 s at tau = 25 ms), then 400 tau of measurement (10 s), renormalised
# every 2 tau, from 2 random starts per network; 8 candidates at a time.
LYAPUNOV_STEP_TAU, LYAPUNOV_TRANSIENT_TAU, LYAPUNOV_DURATION_TAU, LYAPUNOV_RENORMALISE_TAU = 0.08, 40.0, 400.0, 2.0
LYAPUNOV_STARTS = 2
LYAPUNOV_SEPARATION = 1e-8
CANDIDATES_PER_BATCH, MAX_CANDIDATES = 8, 96


def _streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(_STREAMS, children)}


def draw_connectivity(rng: np.random.Generator, rnn_units: int, count: int = 1) -> np.ndarray:
    """``count`` candidate networks ``(count, rnn_units, rnn_units)``, entries i.i.d. N(0, 1 / rnn_units)."""
    return rng.standard_normal((count, rnn_units, rnn_units)) / math.sqrt(rnn_units)


def rnn_derivative(states: np.ndarray, connectivity: np.ndarray, gamma: float, tau: float) -> np.ndarray:
    """``dx/dt = (-x + gamma J tanh(x)) / tau`` for ``states`` ``(..., n, N)``; returns the same shape.

    ``connectivity`` is one network ``(N, N)`` or a batch ``(B, N, N)`` (then ``states`` is ``(B, n, N)``).
    """
    return (-states + gamma * np.tanh(states) @ np.swapaxes(connectivity, -1, -2)) / tau


def rk4_steps(states: np.ndarray, connectivity: np.ndarray, gamma: float, tau: float, dt: float,
              num_steps: int) -> np.ndarray:
    """Advance ``states`` by ``num_steps`` classical RK4 steps of size ``dt`` (shapes as ``rnn_derivative``)."""
    for _ in range(num_steps):
        k1 = rnn_derivative(states, connectivity, gamma, tau)
        k2 = rnn_derivative(states + 0.5 * dt * k1, connectivity, gamma, tau)
        k3 = rnn_derivative(states + 0.5 * dt * k2, connectivity, gamma, tau)
        k4 = rnn_derivative(states + dt * k3, connectivity, gamma, tau)
        states = states + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return states


def integrate_rnn(initial_states: np.ndarray, connectivity: np.ndarray, gamma: float, tau: float, dt: float,
                  num_samples: int, steps_per_sample: int = 1) -> np.ndarray:
    """Integrate many trajectories of one network at once with fixed-step RK4 (step ``dt``).

    Parameters
    ----------
    initial_states : ndarray, shape (n, N)
        States at time 0.
    connectivity : ndarray, shape (N, N)
        ``J``.
    gamma, tau : float
        Gain and time constant (same time unit as ``dt``).
    dt : float
        RK4 step.
    num_samples : int
        States returned per trajectory.
    steps_per_sample : int
        RK4 steps between returned states.

    Returns
    -------
    ndarray, shape (n, num_samples, N)
        Index ``k`` is the state at time ``k * steps_per_sample * dt`` (index 0 the initial state).
    """
    states = np.array(initial_states, dtype=np.float64)
    if states.ndim != 2 or connectivity.shape != (states.shape[1], states.shape[1]):
        raise ValueError(f"initial_states (n, N) and connectivity (N, N) do not fit: {states.shape}, "
                         f"{connectivity.shape}")
    trajectory = np.empty((states.shape[0], num_samples, states.shape[1]))
    trajectory[:, 0] = states
    for sample in range(1, num_samples):
        states = rk4_steps(states, connectivity, gamma, tau, dt, steps_per_sample)
        trajectory[:, sample] = states
    return trajectory


def largest_lyapunov(connectivity: np.ndarray, gamma: float, tau_s: float, rng: np.random.Generator,
                     starts: int = LYAPUNOV_STARTS, transient_tau: float = LYAPUNOV_TRANSIENT_TAU,
                     duration_tau: float = LYAPUNOV_DURATION_TAU) -> np.ndarray:
    """Crude largest Lyapunov exponent (1/s) of each network in ``connectivity`` ``(B, N, N)``: ``(B, starts)``.

    Benettin's method with RK4 steps of ``tau / 12.5``, from each of ``starts`` random states ``N(0, I)``
    per network: run for ``transient_tau`` time constants, then follow a companion trajectory ``1e-8``
    away, rescaling their separation back to ``1e-8`` every 2 tau; the exponent is the mean log growth
    per second over ``duration_tau`` time constants. Positive: chaotic; about 0: a limit cycle or torus;
    negative: a stable fixed point. With the defaults (400 tau) two estimates of one chaotic network
    typically differ by a few tenths of 1/s at tau = 25 ms.
    """
    batch, units = connectivity.shape[0], connectivity.shape[1]
    dt_s = LYAPUNOV_STEP_TAU * tau_s
    steps_per_interval = int(round(LYAPUNOV_RENORMALISE_TAU / LYAPUNOV_STEP_TAU))
    intervals = max(1, int(round(duration_tau / LYAPUNOV_RENORMALISE_TAU)))
    states = rk4_steps(rng.standard_normal((batch, starts, units)), connectivity, gamma, tau_s, dt_s,
                       int(round(transient_tau / LYAPUNOV_STEP_TAU)))
    offset = rng.standard_normal((batch, starts, units))
    offset *= LYAPUNOV_SEPARATION / np.linalg.norm(offset, axis=-1, keepdims=True)
    total = np.zeros((batch, starts))
    for _ in range(intervals):
        pair = rk4_steps(np.concatenate([states, states + offset], axis=1), connectivity, gamma, tau_s, dt_s,
                         steps_per_interval)
        states, offset = pair[:, :starts], pair[:, starts:] - pair[:, :starts]
        distance = np.maximum(np.linalg.norm(offset, axis=-1, keepdims=True), 1e-300)
        total += np.log(distance[..., 0] / LYAPUNOV_SEPARATION)
        offset *= LYAPUNOV_SEPARATION / distance
    return total / (intervals * steps_per_interval * dt_s)


def rnn_connectivity(seed: int, rnn_units: int, gamma: float, tau_ms: float,
                     min_lyapunov_per_s: float | None) -> tuple[np.ndarray, float, int]:
    """The network ``J`` ``(rnn_units, rnn_units)`` that ``make_chaotic_rnn_spikes`` uses with these settings.

    Candidates are drawn from the seed's connectivity stream, ``CANDIDATES_PER_BATCH`` at a time; with
    ``min_lyapunov_per_s`` the first whose ``largest_lyapunov`` exceeds it from both of its starts is taken
    (at most ``MAX_CANDIDATES`` are tried), without it the first candidate. Returns ``(J, its estimated
    largest Lyapunov exponent in 1/s (the smaller of the two; NaN when not checked), candidates drawn)``.
    """
    rng = _streams(seed)["connectivity"]
    if min_lyapunov_per_s is None:
        return draw_connectivity(rng, rnn_units)[0], float("nan"), 1
    check_rng = _streams(seed)["chaos_check"]
    drawn, best = 0, -np.inf
    while drawn < MAX_CANDIDATES:
        candidates = draw_connectivity(rng, rnn_units, CANDIDATES_PER_BATCH)
        exponents = largest_lyapunov(candidates, gamma, tau_ms / 1000.0, check_rng).min(axis=1)
        passing = np.flatnonzero(exponents > min_lyapunov_per_s)
        if passing.size:
            first = int(passing[0])
            return candidates[first], float(exponents[first]), drawn + first + 1
        drawn += CANDIDATES_PER_BATCH
        best = max(best, float(exponents.max()))
    raise NeurodynError(
        f"none of {MAX_CANDIDATES} random networks of {rnn_units} units at gamma={gamma:g} is chaotic with a largest "
        f"Lyapunov exponent above {min_lyapunov_per_s:g}/s (the largest found: {best:.2f}/s); finite networks need "
        f"a gain well above 1 (e.g. gamma 2.5 for 50 units, 2 for 200), or pass min_lyapunov_per_s=None to take "
        f"the first random network as it is")


def spread_mean_rates(rng: np.random.Generator, num_neurons: int, low: float, high: float) -> np.ndarray:
    """Target mean rates ``(num_neurons,)``: ``exp(linspace(log low, log high, num_neurons))`` in random order."""
    return rng.permutation(np.exp(np.linspace(np.log(low), np.log(high), num_neurons)))


def mean_rate_readout(rng: np.random.Generator, features: np.ndarray, mean_rates: np.ndarray,
                      log_rate_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Random log-linear readout ``(weights (neurons, dims), bias (neurons,))`` of ``features`` ``(..., dims)``.

    Neuron ``n`` reads a uniformly random direction, scaled so that its log-rate ``w_n . f + b_n`` has
    standard deviation ``log_rate_std`` over all points of ``features``; ``b_n`` makes the mean of
    ``exp(w_n . f + b_n)`` over those points exactly ``mean_rates[n]`` (in whatever unit ``mean_rates`` is).
    A neuron whose projection does not vary (features constant) gets zero weights.
    """
    flat = features.reshape(-1, features.shape[-1])
    directions = rng.standard_normal((mean_rates.size, flat.shape[1]))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    projection = flat @ directions.T  # (points, neurons)
    spread = projection.std(axis=0)
    gain = np.where(spread > 0, log_rate_std / np.where(spread > 0, spread, 1.0), 0.0)
    log_mean = logsumexp(projection * gain, axis=0) - np.log(flat.shape[0])
    return directions * gain[:, None], np.log(mean_rates) - log_mean


def principal_components(features: np.ndarray, num_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projections of ``features`` ``(..., dims)`` (centred over all points) onto their top principal axes.

    Returns ``(scores (..., num_components), axes (num_components, dims), mean (dims,))`` with
    ``scores = (features - mean) @ axes.T``; axes in order of variance, each signed so that its largest
    loading is positive.
    """
    flat = features.reshape(-1, features.shape[-1])
    mean = flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    axes = vt[:num_components]
    signs = np.sign(axes[np.arange(axes.shape[0]), np.abs(axes).argmax(axis=1)])
    axes = axes * np.where(signs == 0, 1.0, signs)[:, None]
    return (features - mean) @ axes.T, axes, mean


def make_chaotic_rnn_spikes(
    num_neurons: int = 50,
    num_conditions: int = 20,
    trials_per_condition: int = 10,
    num_bins: int = 100,
    bin_ms: float = 10.0,
    rnn_units: int = 50,
    gamma: float = 2.5,
    tau_ms: float = 25.0,
    min_lyapunov_per_s: float | None = 1.0,
    mean_rate_hz: tuple[float, float] = (1.0, 50.0),
    log_rate_std: float = 0.6,
    keep: int | None = None,
    heldout_fraction: float | None = None,
    initial_state_std: float = 1.0,
    initial_state_noise: float = 0.0,
    burn_in_ms: float = 250.0,
    max_step_ms: float = 1.0,
    latent_pcs: int | None = None,
    seed: int = 0,
) -> NeuralDataset:
    """Generate the chaotic-RNN spiking dataset (see the module docstring for the model).

    Parameters
    ----------
    num_neurons, num_conditions, trials_per_condition, num_bins : int
        Population size; conditions (initial states) and trials of each; bins per trial.
    bin_ms : float
        Bin width (ms).
    rnn_units, gamma, tau_ms : int, float, float
        The network: units, gain and time constant (ms). Above 1 the large-network limit is chaotic, below
        1 it decays to the origin; a network of 50 units needs more: at gamma 1.5 (the LFADS paper's value)
        nearly all random networks of 50 units settle on a fixed point or a limit cycle, at 2.5 about one
        in four is chaotic (``min_lyapunov_per_s`` picks one), at 100 units and 2.5 most.
    min_lyapunov_per_s : float or None
        Keep redrawing ``J`` until its estimated largest Lyapunov exponent (1/s) exceeds this
        (``rnn_connectivity``): a chaotic network. None takes the first draw, chaotic or not (e.g. gamma < 1).
    mean_rate_hz : (float, float)
        The neurons' mean rates over the dataset spread log-uniformly over this range (spikes/s).
    log_rate_std : float
        Standard deviation of every neuron's log-rate over the dataset (natural log units): the depth
        of its modulation. With the defaults (0.6) a neuron's peak rate is typically 3-4 times its mean,
        at most 10-15 times.
    keep : int or None
        Observe exactly ``keep`` neurons per trial and bin (NaN elsewhere); None = all.
    heldout_fraction : float or None
        Share of the neurons written as ``heldout_neurons`` (co-bps); None = none.
    initial_state_std, initial_state_noise : float
        Spread of the conditions' initial states, and of each trial's around its condition's.
    burn_in_ms : float
        Network time run before the first bin (250 ms = 10 tau by default: the trials start on the
        attractor; 0 keeps the relaxation from the random initial state, with rarer, higher rate peaks).
    max_step_ms : float
        Largest RK4 step; each bin takes ``ceil(bin_ms / max_step_ms)`` equal steps.
    latent_pcs : int or None
        None: ``latents`` = ``tanh(x)`` ``(rnn_units)``; k: its top k principal components.
    seed : int
        Seed of the independent random streams.

    Returns
    -------
    NeuralDataset
        ``data`` (spike counts, NaN = not observed) and ``truth`` (expected counts per bin)
        ``(trials, bins, neurons)``, ``latents``, ``condition`` (``k // trials_per_condition``: trials
        ordered condition by condition), ``heldout_neurons`` (or None) and ``attrs`` (``bin_ms``, the
        generator's name and settings, ``mean_rate_hz_per_neuron``, ``readout_bias``, ``latents_meaning``).
    """
    _check_settings(num_neurons, num_conditions, trials_per_condition, num_bins, bin_ms, rnn_units, gamma, tau_ms,
                    min_lyapunov_per_s, mean_rate_hz, log_rate_std, keep, heldout_fraction, initial_state_std,
                    initial_state_noise, burn_in_ms, max_step_ms, latent_pcs)
    low_hz, high_hz = (float(rate) for rate in mean_rate_hz)
    streams = _streams(seed)
    connectivity, lyapunov, candidates = rnn_connectivity(seed, rnn_units, gamma, tau_ms, min_lyapunov_per_s)
    steps_per_bin = max(1, math.ceil(bin_ms / max_step_ms - 1e-9))
    dt_s = bin_ms / 1000.0 / steps_per_bin
    tau_s = tau_ms / 1000.0

    condition = np.repeat(np.arange(num_conditions, dtype=np.int64), trials_per_condition)
    initial = initial_state_std * streams["initial"].standard_normal((num_conditions, rnn_units))
    if initial_state_noise > 0:  # every trial its own trajectory
        initial = initial[condition] + initial_state_noise * streams["trial_noise"].standard_normal(
            (condition.size, rnn_units))
    burn_in_steps = int(round(burn_in_ms / 1000.0 / dt_s))
    if burn_in_steps:
        initial = integrate_rnn(initial, connectivity, gamma, tau_s, dt_s, 2, burn_in_steps)[:, -1]
    states = integrate_rnn(initial, connectivity, gamma, tau_s, dt_s, num_bins, steps_per_bin)
    unit_rates = np.tanh(states)  # (conditions or trials, bins, rnn_units)

    bin_s = bin_ms / 1000.0
    target_hz = spread_mean_rates(streams["readout"], num_neurons, low_hz, high_hz)
    weights, bias = mean_rate_readout(streams["readout"], unit_rates, target_hz * bin_s, log_rate_std)
    rates = np.exp(unit_rates @ weights.T + bias)  # expected count per bin

    if latent_pcs is None:
        latents, meaning = unit_rates, "tanh(x): the RNN units' rates at the bin times (rnn_units dims)"
    else:
        latents, _, _ = principal_components(unit_rates, latent_pcs)
        meaning = f"top {latent_pcs} principal components of tanh(x) over the dataset (centred), by variance"
    if initial_state_noise == 0:  # per condition -> per trial
        rates, latents = rates[condition], latents[condition]
    data = streams["spikes"].poisson(rates).astype(np.float32)
    if keep is not None:
        data[~bandwidth_mask(streams["mask"], data.shape, keep)] = np.nan
    heldout = None if heldout_fraction is None else choose_heldout_neurons(num_neurons, heldout_fraction, seed)

    attrs = {
        "generator": "neurodyn chaotic-rnn-spikes",
        "bin_ms": float(bin_ms),
        "seed": int(seed),
        "num_conditions": int(num_conditions),
        "trials_per_condition": int(trials_per_condition),
        "keep": int(num_neurons if keep is None else keep),
        "heldout_fraction": float(0.0 if heldout_fraction is None else heldout_fraction),
        "rnn_units": int(rnn_units),
        "gamma": float(gamma),
        "tau_ms": float(tau_ms),
        "min_lyapunov_per_s": float("nan") if min_lyapunov_per_s is None else float(min_lyapunov_per_s),
        "lyapunov_per_s": lyapunov,  # the network's estimated largest Lyapunov exponent (NaN: not checked)
        "connectivity_candidates": int(candidates),  # networks drawn to find it
        "mean_rate_hz": np.array([low_hz, high_hz]),
        "log_rate_std": float(log_rate_std),
        "initial_state_std": float(initial_state_std),
        "initial_state_noise": float(initial_state_noise),
        "burn_in_ms": float(burn_in_ms),
        "integration": "fixed-step RK4",
        "integration_steps_per_bin": int(steps_per_bin),
        "latent_pcs": int(0 if latent_pcs is None else latent_pcs),
        "latents_meaning": meaning,
        "mean_rate_hz_per_neuron": (target_hz).astype(np.float64),  # (neurons,) exact means over the dataset
        "readout_bias": bias,  # (neurons,), log(expected count per bin) at tanh(x) = 0
    }
    return NeuralDataset(data=data, truth=rates, latents=latents, condition=condition, heldout_neurons=heldout,
                         attrs=attrs, source="<chaotic-rnn-spikes>")


def _check_settings(num_neurons, num_conditions, trials_per_condition, num_bins, bin_ms, rnn_units, gamma, tau_ms,
                    min_lyapunov_per_s, mean_rate_hz, log_rate_std, keep, heldout_fraction, initial_state_std,
                    initial_state_noise, burn_in_ms, max_step_ms, latent_pcs):
    check_whole_numbers([("num_neurons", num_neurons, 1), ("num_conditions", num_conditions, 1),
                         ("trials_per_condition", trials_per_condition, 1), ("num_bins", num_bins, 2),
                         ("rnn_units", rnn_units, 1)])
    check_finite([("bin_ms", bin_ms), ("tau_ms", tau_ms), ("max_step_ms", max_step_ms)], positive=True)
    if min_lyapunov_per_s is not None and not np.isfinite(min_lyapunov_per_s):
        raise NeurodynError(f"min_lyapunov_per_s must be a finite number (1/s) or None; got {min_lyapunov_per_s}")
    check_finite([("gamma", gamma), ("log_rate_std", log_rate_std), ("initial_state_std", initial_state_std),
                  ("initial_state_noise", initial_state_noise), ("burn_in_ms", burn_in_ms)], positive=False)
    check_rate_range(mean_rate_hz)
    check_keep_and_heldout(num_neurons, keep, heldout_fraction)
    if latent_pcs is not None and (int(latent_pcs) != latent_pcs or not 1 <= latent_pcs <= rnn_units):
        raise NeurodynError(f"latent_pcs must be None or an integer from 1 to rnn_units ({rnn_units}); "
                            f"got {latent_pcs}")


def check_whole_numbers(values: list[tuple[str, float, int]]) -> None:
    """Refuse any ``(name, value, smallest)`` whose value is not a whole number of at least ``smallest``."""
    for name, value, smallest in values:
        if int(value) != value or value < smallest:
            raise NeurodynError(f"{name} must be an integer of at least {smallest}; got {value}")


def check_finite(values: list[tuple[str, float]], positive: bool) -> None:
    """Refuse any ``(name, value)`` that is not finite and positive (``positive``) or non-negative."""
    for name, value in values:
        if not (np.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise NeurodynError(f"{name} must be {'positive' if positive else 'finite and non-negative'}; got {value}")


def check_rate_range(mean_rate_hz) -> None:
    """``mean_rate_hz`` must be ``(low, high)`` with ``0 < low <= high``, both finite."""
    try:
        low, high = (float(rate) for rate in mean_rate_hz)
    except (TypeError, ValueError):
        raise NeurodynError(f"mean_rate_hz must be a pair (low, high) in spikes/s; got {mean_rate_hz!r}") from None
    if not (np.isfinite(high) and 0 < low <= high):
        raise NeurodynError(f"mean_rate_hz must satisfy 0 < low <= high (spikes/s); got ({low:g}, {high:g})")


def check_keep_and_heldout(num_neurons: int, keep, heldout_fraction) -> None:
    """``keep`` in 1..num_neurons (or None); ``heldout_fraction`` in (0, 1) holding out 1..num_neurons-1 (or None)."""
    if keep is not None and (int(keep) != keep or not 1 <= keep <= num_neurons):
        raise NeurodynError(f"keep must be between 1 and the number of neurons ({num_neurons}); got {keep}")
    if heldout_fraction is not None:
        choose_heldout_neurons(num_neurons, heldout_fraction, 0)  # raises on an impossible fraction
