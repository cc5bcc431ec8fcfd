"""Deconvolution of calcium fluorescence traces into events with OASIS (PyPI ``oasis-deconv``).

OASIS models a trace as an autoregressive calcium signal driven by non-negative events plus
noise and finds the sparsest events consistent with the noise level (Friedrich, Zhou & Paninski
2017). AR(1) (decay only) is OASIS's fast path; AR(2) adds a rise time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurodyn.errors import NeurodynError

PENALTIES = {"l1": 1, "l0": 0}
# OASIS leaves rounding residues (e.g. 1e-19, -1e-15) around zero; events at or below this
# fraction of the trace's range are set to exactly zero.
RESIDUE_FRACTION = 1e-9


@dataclass(frozen=True)
class Deconvolution:
    """Events and the AR model each trace was deconvolved with."""

    events: np.ndarray  # (..., frames) event sizes >= 0
    ar_coefficients: np.ndarray  # (..., p): OASIS's g per trace (AR(1): [g_decay]; AR(2): [g1, g2]), fitted or given
    frame_rate_hz: float


def deconvolve_traces(traces: np.ndarray, frame_rate_hz: float, decay_s: float | None = None, rise_s: float = 0.0,
                      noise_std: float | None = None, baseline: float | None = None, penalty: str = "l1",
                      min_event_size: float = 0.0, source: str = "traces") -> np.ndarray:
    """Event sizes ``(..., frames)`` (>= 0, same shape) from fluorescence ``traces`` ``(..., frames)``.

    The events of ``deconvolve_traces_with_fits`` (see there for the arguments).
    """
    return deconvolve_traces_with_fits(traces, frame_rate_hz, decay_s, rise_s, noise_std, baseline, penalty,
                                       min_event_size, source).events


def deconvolve_traces_with_fits(traces: np.ndarray, frame_rate_hz: float, decay_s: float | None = None,
                                rise_s: float = 0.0, noise_std: float | None = None, baseline: float | None = None,
                                penalty: str = "l1", min_event_size: float = 0.0,
                                source: str = "traces") -> Deconvolution:
    """Events ``(..., frames)`` from fluorescence ``traces`` ``(..., frames)``, and each trace's AR coefficients.

    Each trace (one per leading index, e.g. per neuron) is deconvolved on its own.
    frame_rate_hz: samples per second; decay_s / rise_s: the indicator's time constants in
    seconds (decay_s None: OASIS estimates an AR(1) model from each trace; rise_s 0: AR(1),
    > 0: AR(2)); noise_std: trace noise std (None: estimated per trace); baseline: fluorescence
    baseline (None: fitted, >= 0); penalty: "l1" or "l0" sparsity; min_event_size: events
    smaller than this are set to zero afterwards (L1 leaves many tiny fragments). Event sizes are
    in the trace's units (the calcium jump an event causes). ``ar_coefficients`` ``(..., 1)`` for
    AR(1) (``[g]``, ``g = exp(-frame period / decay)``), ``(..., 2)`` for AR(2): the model OASIS
    fitted to the trace, or the one the given time constants define.
    """
    functions = _oasis_functions()
    traces = np.asarray(traces, dtype=np.float64)
    _check_settings(traces, frame_rate_hz, decay_s, rise_s, penalty, source)
    if not min_event_size >= 0:
        raise NeurodynError(f"min_event_size must be non-negative; got {min_event_size}")
    events = np.empty_like(traces)
    order = 2 if rise_s else 1
    coefficients = np.full((*traces.shape[:-1], order), np.nan)
    for index in np.ndindex(traces.shape[:-1]):
        trace = traces[index]
        where = f"{source}{list(index) if index else ''}"
        _check_trace(trace, where)
        try:
            result = functions.deconvolve(
                np.ascontiguousarray(trace), tau_d=decay_s, tau_r=rise_s if decay_s is not None else 0,
                framerate=frame_rate_hz if decay_s is not None else None, sn=noise_std, b=baseline,
                penalty=PENALTIES[penalty])
        except Exception as error:  # OASIS raises ValueError, LinAlgError, ZeroDivisionError, ...
            raise NeurodynError(f"{where}: OASIS deconvolution failed: {type(error).__name__}: {error}") from None
        sizes = np.asarray(result.s, dtype=np.float64)
        if not np.all(np.isfinite(sizes)):
            raise NeurodynError(f"{where}: OASIS deconvolution returned non-finite events")
        tolerance = max(RESIDUE_FRACTION * float(np.ptp(trace)), min_event_size)
        events[index] = np.where(sizes > tolerance, sizes, 0.0)
        coefficients[index] = np.ravel(np.asarray(result.g, dtype=np.float64))[:order]
    return Deconvolution(events=events, ar_coefficients=coefficients, frame_rate_hz=float(frame_rate_hz))


def ar1_decay_ms(ar_coefficients: np.ndarray, frame_rate_hz: float) -> np.ndarray:
    """Decay time constant (ms) of each AR(1) coefficient ``g`` ``(...,)``: ``-frame period / ln g``.

    ``g >= 1`` (no decay within the trace) gives inf, ``g <= 0`` or NaN (no fit) gives NaN.
    """
    g = np.asarray(ar_coefficients, dtype=np.float64)
    frame_ms = 1000.0 / frame_rate_hz
    with np.errstate(divide="ignore", invalid="ignore"):
        decay = np.where(g >= 1, np.inf, -frame_ms / np.log(np.where(g > 0, g, np.nan)))
    return np.where(g > 0, decay, np.nan)


def _oasis_functions():
    try:
        from oasis import functions
    except ImportError:
        raise NeurodynError("deconvolution needs the OASIS package: pip install oasis-deconv "
                            "(or pip install 'neurodyn[calcium]')") from None
    return functions


def _check_settings(traces, frame_rate_hz, decay_s, rise_s, penalty, source) -> None:
    if traces.ndim < 1 or traces.shape[-1] < 4:
        raise NeurodynError(f"{source}: traces have shape {traces.shape}; expected (..., frames) with at least 4 frames")
    if not (np.isfinite(frame_rate_hz) and frame_rate_hz > 0):
        raise NeurodynError(f"frame rate must be a positive number of Hz; got {frame_rate_hz}")
    if decay_s is not None and not decay_s > 0:
        raise NeurodynError(f"decay time constant must be positive (seconds); got {decay_s}")
    if rise_s is None or rise_s < 0 or (rise_s > 0 and decay_s is None):
        raise NeurodynError(f"rise time constant must be >= 0 seconds and needs a decay time constant; got {rise_s}")
    if decay_s is not None and rise_s >= decay_s:
        raise NeurodynError(f"rise time constant ({rise_s} s) must be shorter than the decay ({decay_s} s)")
    if penalty not in PENALTIES:
        raise NeurodynError(f"penalty must be one of {sorted(PENALTIES)}; got {penalty!r}")


def _check_trace(trace: np.ndarray, where: str) -> None:
    missing = np.isnan(trace)
    if missing.all():
        raise NeurodynError(f"{where}: the trace is all NaN; expected a fluorescence value per frame")
    if missing.any() or np.isinf(trace).any():
        raise NeurodynError(f"{where}: the trace holds {int(missing.sum() + np.isinf(trace).sum())} NaN or infinite "
                            "frame(s); OASIS needs a finite value in every frame (interpolate gaps first)")
