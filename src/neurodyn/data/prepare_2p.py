"""The shared 2-photon pipeline once traces are loaded (suite2p or NWB ophys) -> seed h5 for RADICaL.

1. neuropil correction: ``F - coefficient * Fneu`` (suite2p's convention; 0.7 by default);
2. OASIS deconvolution of each ROI's whole recording (``data.deconvolution``) into event sizes;
3. trial cutting: each trial starts at the first frame that starts at or after its start time and
   lasts ``trial_frames`` frames;
4. scan offsets: a raster scan reaches line ``r`` of ``L`` lines at ``(r + 0.5) / L`` of the frame
   (lines spread evenly over the frame period; fly-back time is ignored), so each ROI's offset
   is its centroid line's;
5. sub-frame binning (``data.subframe``): ``K`` bins per frame, each ROI's event in the bin of its
   scan time, NaN elsewhere -> ``data`` ``(trials, frames * K, rois)``;
6. event timing (``data.event_timing``): how long the events trail the spikes, from the indicator
   kinetics given, estimated from the deconvolution's fits, or assumed (each stated in the file).

With ``signal="dff"`` step 2 is instead dF/F of the corrected trace, ``(F - F0) / F0``, for a model of
continuous signals (``observation: gaussian``); step 6 is skipped (no events, no delay to remove).
The baseline F0 follows slow drift: the trace smoothed by a Gaussian of ``DFF_SMOOTHING_S``, then a
running minimum and a running maximum over ``baseline_window_s`` (a "maximin" filter, as suite2p
uses), so transients shorter than the window do not lift it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from scipy import ndimage

from neurodyn.data.deconvolution import ar1_decay_ms, deconvolve_traces_with_fits
from neurodyn.data.event_timing import EventKinetics, resolve_event_kinetics
from neurodyn.data.seed_format import NeuralDataset
from neurodyn.data.subframe import bin_subframes
from neurodyn.errors import NeurodynError

logger = logging.getLogger(__name__)

# dF/F baseline: the trace is smoothed by a Gaussian of this width (seconds) before the running min/max.
DFF_SMOOTHING_S = 0.3
SIGNALS = ("events", "dff")


@dataclass(frozen=True)
class FluorescenceTraces:
    """One imaging plane's traces as loaded from disk."""

    fluorescence: np.ndarray  # (rois, frames) raw ROI fluorescence
    neuropil: np.ndarray | None  # (rois, frames) surrounding neuropil fluorescence, or None
    frame_times_s: np.ndarray  # (frames,) start time of each frame, seconds
    frame_rate_hz: float  # frames per second (of this plane)
    roi_lines: np.ndarray  # (rois,) centroid scan line of each ROI, 0 = first line of the frame
    lines_per_frame: int  # scan lines per frame
    roi_indices: np.ndarray  # (rois,) each ROI's number in the source (suite2p row, NWB id)
    source: str = "<memory>"


@dataclass(frozen=True)
class TwoPhotonSettings:
    """Trial cutting, deconvolution and binning settings (times in seconds)."""

    trial_frames: int  # frames per trial
    subframe_bins: int = 4  # K sub-frame bins per frame
    neuropil_coefficient: float = 0.7
    decay_s: float | None = None  # None: OASIS estimates each trace's AR(1) decay
    rise_s: float = 0.0
    penalty: str = "l1"
    min_event_size: float = 0.0
    noise_std: float | None = None  # None: OASIS estimates each trace's noise
    # The indicator's rise for the event delay; None: rise_s when > 0 (AR(2) deconvolution), else assumed
    # (data.event_timing.DEFAULT_INDICATOR_RISE_MS): an AR(1) deconvolution cannot see the rise.
    indicator_rise_s: float | None = None
    signal: str = "events"  # "events" (OASIS, for observation: zig) or "dff" (for observation: gaussian)
    baseline_window_s: float = 60.0  # dff: the running window of the baseline F0


def delta_f_over_f(corrected: np.ndarray, frame_rate_hz: float, baseline_window_s: float,
                   source: str = "ROIs") -> np.ndarray:
    """dF/F ``(rois, frames)`` of neuropil-corrected traces: ``(F - F0) / F0`` with F0 the running maximin
    baseline (module docstring). Raises ``NeurodynError`` naming the ROIs whose baseline is not positive."""
    if not (np.isfinite(baseline_window_s) and baseline_window_s > 0):
        raise NeurodynError(f"{source}: the dF/F baseline window must be a positive number of seconds; got "
                            f"{baseline_window_s}")
    window = max(1, int(round(baseline_window_s * frame_rate_hz)))
    smoothed = ndimage.gaussian_filter1d(corrected, DFF_SMOOTHING_S * frame_rate_hz, axis=1, mode="nearest")
    baseline = ndimage.maximum_filter1d(ndimage.minimum_filter1d(smoothed, window, axis=1, mode="nearest"),
                                        window, axis=1, mode="nearest")
    bad = np.flatnonzero((baseline <= 0).any(axis=1))
    if bad.size:
        raise NeurodynError(f"{source}: the fluorescence baseline F0 of ROI(s) {', '.join(map(str, bad[:10]))}"
                            f"{', ...' if bad.size > 10 else ''} falls to zero or below after neuropil correction, "
                            "so dF/F is undefined; lower --neuropil-coefficient or use the events (--signal events)")
    return (corrected - baseline) / baseline


def scan_offsets(roi_lines: np.ndarray, lines_per_frame: int, source: str = "ROIs") -> np.ndarray:
    """Scan time of each ROI's centroid line as a fraction of the frame, in [0, 1): ``(line + 0.5) / L``."""
    lines = np.asarray(roi_lines, dtype=np.float64)
    if not (int(lines_per_frame) == lines_per_frame and lines_per_frame >= 1):
        raise NeurodynError(f"{source}: lines per frame must be a positive integer; got {lines_per_frame}")
    if not np.all(np.isfinite(lines)) or (lines < -0.5).any() or (lines > lines_per_frame - 0.5).any():
        raise NeurodynError(f"{source}: ROI centroid lines must lie in [0, {lines_per_frame - 1}] "
                            f"(lines per frame {lines_per_frame}); got {np.nanmin(lines):g} .. {np.nanmax(lines):g}")
    # The largest value stays below 1 because a centroid lies on or above the last line.
    return (lines + 0.5) / lines_per_frame


def trial_start_frames(frame_times_s: np.ndarray, trial_starts_s: np.ndarray, trial_frames: int,
                       source: str) -> np.ndarray:
    """First frame starting at or after each trial start ``(trials,)``; every trial must fit the recording."""
    starts = np.asarray(trial_starts_s, dtype=np.float64).reshape(-1)
    if starts.size == 0 or not np.all(np.isfinite(starts)):
        raise NeurodynError(f"{source}: trial start times must be a non-empty list of finite seconds")
    # A tolerance of a microsecond keeps a start written as k / rate on frame k despite rounding.
    first = np.searchsorted(frame_times_s, starts - 1e-6, side="left")
    beyond = np.flatnonzero(first + trial_frames > frame_times_s.size)
    if beyond.size:
        k = beyond[0]
        raise NeurodynError(f"{source}: trial {k} (start {starts[k]:g} s) needs frames {first[k]} .. "
                            f"{first[k] + trial_frames - 1} but the recording has {frame_times_s.size} frames "
                            f"({frame_times_s[0]:g} .. {frame_times_s[-1]:g} s); {beyond.size} trial(s) do not fit")
    return first.astype(np.int64)


def prepare_two_photon(traces: FluorescenceTraces, trial_starts_s, settings: TwoPhotonSettings) -> NeuralDataset:
    """Events (or dF/F, ``settings.signal == "dff"``) in sub-frame bins: ``data`` ``(trials, trial_frames * K,
    rois)``, NaN where unsampled.

    Attributes: ``frame_rate_hz``, ``subframe_bins``, ``bin_ms`` (sub-frame bin width),
    ``scan_offsets`` ``(rois,)``, ``roi_indices``, ``trial_start_frames``, ``align_times_s``
    (start of each trial's first frame), ``window_start_ms`` (0), ``neuropil_coefficient``,
    ``event_delay_ms`` (how long events trail the spikes: ``data.event_timing``) and the kinetics it
    assumes: ``indicator_decay_ms``, ``indicator_rise_ms``, ``deconvolution_rise_ms``,
    ``event_kinetics_source`` (e.g. "decay estimated, rise assumed"), ``indicator_decay_rois``; ``signal``
    ("events" or "dff"), and for dF/F ``baseline_window_s`` instead of the event timing.
    """
    source = traces.source
    _check_traces(traces)
    if not (int(settings.trial_frames) == settings.trial_frames and settings.trial_frames >= 1):
        raise NeurodynError(f"frames per trial must be a positive integer; got {settings.trial_frames}")
    if not settings.neuropil_coefficient >= 0:
        raise NeurodynError(f"neuropil coefficient must be >= 0; got {settings.neuropil_coefficient}")
    if settings.signal not in SIGNALS:
        raise NeurodynError(f"signal must be one of {', '.join(SIGNALS)}; got {settings.signal!r}")
    rise = settings.indicator_rise_s
    if rise is not None and not (np.isfinite(rise) and rise >= 0):
        raise NeurodynError(f"indicator rise time constant must be >= 0 seconds; got {rise}")
    corrected = traces.fluorescence.astype(np.float64)
    if traces.neuropil is not None and settings.neuropil_coefficient > 0:
        corrected = corrected - settings.neuropil_coefficient * traces.neuropil
    kinetics = None
    if settings.signal == "dff":
        events = delta_f_over_f(corrected, traces.frame_rate_hz, settings.baseline_window_s, source)
    else:
        deconvolution = deconvolve_traces_with_fits(
            corrected, traces.frame_rate_hz, decay_s=settings.decay_s, rise_s=settings.rise_s,
            penalty=settings.penalty, min_event_size=settings.min_event_size, noise_std=settings.noise_std,
            source=f"{source} ROI")
        events = deconvolution.events
        kinetics = event_kinetics(deconvolution.ar_coefficients, traces.frame_rate_hz, settings)
        logger.info("%s: %s", source, kinetics.describe())
    offsets = scan_offsets(traces.roi_lines, traces.lines_per_frame, source)
    first = trial_start_frames(traces.frame_times_s, trial_starts_s, settings.trial_frames, source)
    frame_index = first[:, None] + np.arange(settings.trial_frames)[None, :]  # (trials, frames)
    per_trial = np.transpose(events[:, frame_index], (1, 2, 0))  # (rois, trials, frames) -> (trials, frames, rois)
    data = bin_subframes(per_trial, offsets, settings.subframe_bins, source=f"{source} {settings.signal}",
                         signed=settings.signal == "dff")
    attrs = {
        "frame_rate_hz": float(traces.frame_rate_hz),
        "subframe_bins": int(settings.subframe_bins),
        "bin_ms": 1000.0 / (traces.frame_rate_hz * settings.subframe_bins),
        "scan_offsets": offsets,
        "lines_per_frame": int(traces.lines_per_frame),
        "roi_indices": np.asarray(traces.roi_indices, dtype=np.int64),
        "trial_start_frames": first,
        "align_times_s": traces.frame_times_s[first],
        "window_start_ms": 0.0,
        "neuropil_coefficient": float(settings.neuropil_coefficient if traces.neuropil is not None else 0.0),
        "signal": settings.signal,
    }
    if kinetics is None:
        attrs["baseline_window_s"] = float(settings.baseline_window_s)
        return NeuralDataset(data=data, attrs=attrs, source=source)
    if settings.decay_s is not None:
        attrs["decay_s"] = float(settings.decay_s)
    attrs.update(kinetics.attrs())
    return NeuralDataset(data=data, attrs=attrs, source=source)


def event_kinetics(ar_coefficients: np.ndarray, frame_rate_hz: float, settings: TwoPhotonSettings) -> EventKinetics:
    """The kinetics behind the event delay: the settings' where given, else the decay of each ROI's
    fitted AR(1) model ``ar_coefficients`` ``(rois, 1)`` (median over ROIs) and an assumed rise."""
    fitted = None
    if settings.decay_s is None:  # OASIS fitted an AR(1) model to each trace (a rise needs a given decay)
        fitted = ar1_decay_ms(np.asarray(ar_coefficients)[..., 0], frame_rate_hz)
    return resolve_event_kinetics(
        frame_rate_hz, deconvolution_rise_ms=1000.0 * settings.rise_s,
        given_decay_ms=None if settings.decay_s is None else 1000.0 * settings.decay_s,
        given_rise_ms=None if settings.indicator_rise_s is None else 1000.0 * settings.indicator_rise_s,
        fitted_decays_ms=fitted)


def _check_traces(traces: FluorescenceTraces) -> None:
    source = traces.source
    fluorescence = np.asarray(traces.fluorescence)
    if fluorescence.ndim != 2 or 0 in fluorescence.shape:
        raise NeurodynError(f"{source}: fluorescence has shape {fluorescence.shape}; expected non-empty (rois, frames)")
    rois, frames = fluorescence.shape
    if traces.neuropil is not None and np.shape(traces.neuropil) != (rois, frames):
        raise NeurodynError(f"{source}: neuropil has shape {np.shape(traces.neuropil)}; expected ({rois}, {frames}) "
                            "like the fluorescence (rois, frames)")
    for name, value in (("frame times", traces.frame_times_s), ("ROI lines", traces.roi_lines),
                        ("ROI indices", traces.roi_indices)):
        expected = (frames,) if name == "frame times" else (rois,)
        if np.shape(value) != expected:
            raise NeurodynError(f"{source}: {name} have shape {np.shape(value)}; expected {expected}")
    if not (np.isfinite(traces.frame_rate_hz) and traces.frame_rate_hz > 0):
        raise NeurodynError(f"{source}: frame rate must be a positive number of Hz; got {traces.frame_rate_hz}")
    if frames > 1 and not np.all(np.diff(traces.frame_times_s) > 0):
        raise NeurodynError(f"{source}: frame times must increase")
