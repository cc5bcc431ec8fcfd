"""When the spikes behind a deconvolved calcium event happened, and moving events to that time.

A neuron is sampled once per frame (period ``F``). Deconvolution by an AR model with filter
coefficients ``a`` (AR(1): ``[1, -g_d]``; AR(2): ``[1, -(g_d + g_r), g_d g_r]``, ``g = exp(-F /
tau)``) turns the samples ``c_k`` into events ``s_k = sum_j a_j c_{k-j}``. A spike ``u`` seconds
before sample ``k`` therefore adds ``w(u) = sum_j a_j h(u - j F)`` to that event, where ``h`` is
the indicator's response (zero before the spike). With a perfect model of the indicator ``w`` is
non-zero only over the preceding frame(s): an event reports spikes from *before* its sample —
about half a frame for an instantaneous indicator, more with a slow rise the deconvolution
ignores (GCaMP6f sampled at ~30 Hz, AR(1): about one frame).

Placing each event at its scan time (as sub-frame binning does) makes every rate a model fits to
the events trail the spikes, and so the latent states, by that delay. ``event_delay_ms`` is the
median of ``w`` (the time by which half of an event's spike weight lies further back). A model
removes a delay of ``d`` bins by running ``d`` bins past the data (``append_unobserved_bins``) and
reading its rates ``d`` bins later: its rate at bin ``t`` is then fit to the event of bin
``t + d``. ``advance_events`` moves observations the same way for comparison with such rates.

On a real recording the kinetics come from what is known (``EventKinetics``): a decay given by
the user or estimated from the data (the median over ROIs of the decay of OASIS's AR(1) fit to
each trace, the model the events were deconvolved with); a rise given by the user (or the AR(2)
deconvolution's), otherwise assumed (``DEFAULT_INDICATOR_RISE_MS``, GCaMP6f-like, as in the
synthetic set). An AR(1) deconvolution does not see the rise, and a rise much shorter than a frame
cannot be fitted reliably from frame-rate traces whose firing rates vary; the assumption is stated
in the data file (``event_kinetics_source``) rather than hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from neurodyn.errors import NeurodynError


def calcium_kernel_peak(rise_s: float, decay_s: float) -> float:
    """Peak of ``exp(-t / decay) - exp(-t / rise)`` (reached at ``t = ln(decay / rise) rise decay / (decay - rise)``);
    1 for an instantaneous rise (``rise_s`` 0) or no decay (``decay_s`` inf)."""
    if rise_s == 0 or math.isinf(decay_s):
        return 1.0
    peak_time = np.log(decay_s / rise_s) * rise_s * decay_s / (decay_s - rise_s)
    return float(np.exp(-peak_time / decay_s) - np.exp(-peak_time / rise_s))


def calcium_kernel(t_s: np.ndarray, rise_s: float, decay_s: float) -> np.ndarray:
    """The indicator's response ``t_s`` seconds after one spike, peak 1, zero for ``t_s < 0``:
    ``exp(-t / decay) - exp(-t / rise)`` (``exp(-t / decay)`` for ``rise_s`` 0; ``decay_s`` may be inf)."""
    t = np.maximum(np.asarray(t_s, dtype=np.float64), 0.0)
    rise = np.exp(-t / rise_s) if rise_s > 0 else np.zeros_like(t)
    response = (np.exp(-t / decay_s) - rise) / calcium_kernel_peak(rise_s, decay_s)
    return np.where(np.asarray(t_s) >= 0, response, 0.0)


def deconvolution_filter(frame_period_s: float, decay_s: float, rise_s: float = 0.0) -> np.ndarray:
    """AR filter coefficients ``a`` of the deconvolution (``s_k = sum_j a_j c_{k-j}``): AR(1) for
    ``rise_s`` 0, AR(2) otherwise."""
    g_decay = math.exp(-frame_period_s / decay_s)
    if rise_s == 0:
        return np.array([1.0, -g_decay])
    g_rise = math.exp(-frame_period_s / rise_s)
    return np.array([1.0, -(g_decay + g_rise), g_decay * g_rise])


def event_kernel(u_s: np.ndarray, frame_period_s: float, decay_s: float, indicator_rise_s: float,
                 deconvolution_rise_s: float = 0.0) -> np.ndarray:
    """``w(u)``: what one spike ``u_s`` seconds before a sample adds to that sample's event (see the module docstring)."""
    coefficients = deconvolution_filter(frame_period_s, decay_s, deconvolution_rise_s)
    u = np.asarray(u_s, dtype=np.float64)
    return sum(a * calcium_kernel(u - j * frame_period_s, indicator_rise_s, decay_s)
               for j, a in enumerate(coefficients))


def event_delay_ms(frame_period_ms: float, decay_ms: float | None, indicator_rise_ms: float = 0.0,
                   deconvolution_rise_ms: float = 0.0) -> float:
    """Median delay (ms) between the spikes an event reports and the event's sample time.

    ``decay_ms`` None (decay unknown, e.g. estimated per trace) is taken as much longer than a
    frame (then an instantaneous indicator gives exactly half a frame). The kernel is integrated on
    a grid of a thousandth of a frame out to where the rise has died away.
    """
    positive = {"frame_period_ms": frame_period_ms, "decay_ms": math.inf if decay_ms is None else decay_ms}
    non_negative = {"indicator_rise_ms": indicator_rise_ms, "deconvolution_rise_ms": deconvolution_rise_ms}
    for name, value in positive.items():
        if not value > 0 or (name == "frame_period_ms" and math.isinf(value)):
            raise NeurodynError(f"event delay: {name} must be a positive number of ms; got {value}")
    for name, value in non_negative.items():
        if not (math.isfinite(value) and value >= 0):
            raise NeurodynError(f"event delay: {name} must be a non-negative number of ms; got {value}")
    frame_s = frame_period_ms / 1000.0
    decay_s = positive["decay_ms"] / 1000.0
    longest_rise_s = max(indicator_rise_ms, deconvolution_rise_ms) / 1000.0
    step_s = frame_s / 1000.0
    u = np.arange(0.0, 3 * frame_s + 30 * longest_rise_s, step_s) + step_s / 2
    weight = event_kernel(u, frame_s, decay_s, indicator_rise_ms / 1000.0, deconvolution_rise_ms / 1000.0)
    cumulative = np.cumsum(weight)
    return float(1000.0 * u[np.searchsorted(cumulative, cumulative[-1] / 2)])


DEFAULT_INDICATOR_RISE_MS = 20.0  # assumed rise when none is given: GCaMP6f-like, as the synthetic 2p set


@dataclass(frozen=True)
class EventKinetics:
    """The indicator kinetics an event delay assumes, and where each number came from.

    ``decay_source``: "given", "estimated" (median over ``decay_rois`` ROIs' fitted decays) or
    "assumed" (no usable fit: much longer than a frame, ``decay_ms`` inf); ``rise_source``:
    "given" or "assumed". ``deconvolution_rise_ms`` is the rise of the deconvolution's own model
    (0 = AR(1)).
    """

    frame_period_ms: float
    decay_ms: float
    rise_ms: float
    deconvolution_rise_ms: float
    decay_source: str
    rise_source: str
    decay_rois: int = 0

    def __post_init__(self):
        self.delay_ms  # noqa: B018 -- computing it checks every value (one clear error naming the bad one)

    @property
    def delay_ms(self) -> float:
        """Median delay (ms) between the spikes an event reports and its sample (``event_delay_ms``)."""
        return event_delay_ms(self.frame_period_ms, None if math.isinf(self.decay_ms) else self.decay_ms,
                              self.rise_ms, self.deconvolution_rise_ms)

    @property
    def source(self) -> str:
        """``"decay <source>, rise <source>"``, e.g. ``"decay estimated, rise assumed"``."""
        return f"decay {self.decay_source}, rise {self.rise_source}"

    def attrs(self) -> dict:
        """The data file's attributes: ``event_delay_ms``, ``indicator_decay_ms``, ``indicator_rise_ms``,
        ``deconvolution_rise_ms``, ``event_kinetics_source``, ``indicator_decay_rois``."""
        return {"event_delay_ms": self.delay_ms, "indicator_decay_ms": float(self.decay_ms),
                "indicator_rise_ms": float(self.rise_ms), "deconvolution_rise_ms": float(self.deconvolution_rise_ms),
                "event_kinetics_source": self.source, "indicator_decay_rois": int(self.decay_rois)}

    def describe(self) -> str:
        """One line: the delay and the kinetics it assumes, with their sources."""
        decay = {"given": "given", "assumed": "assumed much longer than a frame: no usable fit",
                 "estimated": f"estimated: median of {self.decay_rois} ROIs' OASIS AR(1) fits"}[self.decay_source]
        rise = ("given" if self.rise_source == "given" else
                "assumed, GCaMP6f-like: an AR(1) deconvolution cannot estimate it; give the indicator's rise "
                "if it differs")
        return (f"events trail the spikes by ~{self.delay_ms:.0f} ms (event_delay_ms), assuming indicator decay "
                f"{self.decay_ms:.0f} ms ({decay}) and rise {self.rise_ms:.0f} ms ({rise})")


def resolve_event_kinetics(frame_rate_hz: float, deconvolution_rise_ms: float = 0.0,
                           given_decay_ms: float | None = None, given_rise_ms: float | None = None,
                           fitted_decays_ms: np.ndarray | None = None) -> EventKinetics:
    """The kinetics behind an event delay from what is known (see the module docstring).

    ``fitted_decays_ms`` ``(rois,)``: each ROI's decay fitted by the deconvolution (NaN = no fit, inf
    = no decay), used when ``given_decay_ms`` is None. ``given_rise_ms`` None: the deconvolution's
    rise when it is AR(2), else ``DEFAULT_INDICATOR_RISE_MS`` (assumed).
    """
    if not (math.isfinite(frame_rate_hz) and frame_rate_hz > 0):
        raise NeurodynError(f"event delay: frame rate must be a positive number of Hz; got {frame_rate_hz}")
    decay_rois = 0
    if given_decay_ms is not None:
        decay_ms, decay_source = float(given_decay_ms), "given"
    else:
        fitted = np.asarray([] if fitted_decays_ms is None else fitted_decays_ms, dtype=np.float64).reshape(-1)
        usable = fitted[~np.isnan(fitted) & (fitted > 0)]
        if usable.size:
            decay_ms, decay_source, decay_rois = float(np.median(usable)), "estimated", int(usable.size)
        else:
            decay_ms, decay_source = math.inf, "assumed"
    if given_rise_ms is not None:
        rise_ms, rise_source = float(given_rise_ms), "given"
    elif deconvolution_rise_ms > 0:
        rise_ms, rise_source = float(deconvolution_rise_ms), "given"
    else:
        rise_ms, rise_source = DEFAULT_INDICATOR_RISE_MS, "assumed"
    return EventKinetics(1000.0 / frame_rate_hz, decay_ms, rise_ms, float(deconvolution_rise_ms), decay_source,
                         rise_source, decay_rois)


def _check_bins(bins) -> int:
    if int(bins) != bins or bins < 0:
        raise NeurodynError(f"event delay must be a whole number of bins >= 0; got {bins}")
    return int(bins)


def advance_events(data: np.ndarray, bins: int) -> np.ndarray:
    """``data`` ``(trials, samples, N)`` moved ``bins`` samples earlier: ``out[:, t] = data[:, t + bins]``.

    The first ``bins`` samples are dropped and the last ``bins`` become NaN (unobserved).
    """
    data = np.asarray(data)
    bins = _check_bins(bins)
    if bins == 0:
        return data
    if bins >= data.shape[1]:
        raise NeurodynError(f"an event delay of {bins} bins leaves nothing of trials {data.shape[1]} bins long")
    return append_unobserved_bins(data, bins)[:, bins:]


def append_unobserved_bins(data: np.ndarray, bins: int) -> np.ndarray:
    """``data`` ``(trials, samples, N)`` followed by ``bins`` unobserved (NaN) samples ``(trials, samples + bins, N)``."""
    data = np.asarray(data)
    bins = _check_bins(bins)
    if bins == 0:
        return data
    tail = np.full((data.shape[0], bins, *data.shape[2:]), np.nan, dtype=np.result_type(data.dtype, np.float32))
    return np.concatenate([data, tail], axis=1)
