"""Sub-frame binning of 2-photon events (RADICaL's staggered sampling).

A laser scans the field of view line by line, so within each frame every neuron is sampled at
its own time, ``scan_offset`` (a fraction of the frame, in [0, 1)). Splitting each frame into
``K`` sub-frame bins and putting each neuron's event into the sub-bin that holds its scan time
gives a tensor at K x the frame rate in which every neuron is observed once per frame; the other
K - 1 sub-bins are NaN (unobserved), for SBTT.
"""

from __future__ import annotations

import numpy as np

from neurodyn.data.seed_format import NeuralDataset
from neurodyn.errors import NeurodynError


def subframe_bin_of(scan_offsets: np.ndarray, num_subframe_bins: int) -> np.ndarray:
    """Sub-bin index ``(N,)`` (0 .. K - 1) holding each neuron's scan time: ``floor(offset * K)``."""
    offsets = np.asarray(scan_offsets, dtype=np.float64)
    return np.minimum(np.floor(offsets * num_subframe_bins).astype(np.int64), num_subframe_bins - 1)


def bin_subframes(events: np.ndarray, scan_offsets: np.ndarray, num_subframe_bins: int,
                  source: str = "events", signed: bool = False) -> np.ndarray:
    """Spread frame-rate events over sub-frame bins.

    events: ``(trials, frames, N)`` non-negative event sizes, one per neuron and frame (NaN = frame
    not recorded); scan_offsets: ``(N,)`` each neuron's scan time as a fraction of the frame, in
    [0, 1); num_subframe_bins: K >= 1. Returns ``(trials, frames * K, N)``: the event of frame
    ``f`` for neuron ``n`` at sub-bin ``f * K + floor(offset_n * K)``, NaN everywhere else.
    ``source`` names the input in error messages (e.g. a file and key). ``signed``: the values are a
    continuous signal of either sign (dF/F), not event sizes, so negative values are accepted.
    """
    events = np.asarray(events)
    offsets = np.asarray(scan_offsets)
    _check_inputs(events, offsets, num_subframe_bins, source, signed)
    trials, frames, neurons = events.shape
    dtype = np.result_type(events.dtype, np.float32)
    binned = np.full((trials, frames, num_subframe_bins, neurons), np.nan, dtype=dtype)
    binned[:, :, subframe_bin_of(offsets, num_subframe_bins), np.arange(neurons)] = events
    return binned.reshape(trials, frames * num_subframe_bins, neurons)


def _check_inputs(events: np.ndarray, offsets: np.ndarray, num_subframe_bins: int, source: str,
                  signed: bool = False) -> None:
    if events.ndim != 3 or 0 in events.shape:
        raise NeurodynError(f"{source}: events have shape {events.shape}; expected non-empty (trials, frames, neurons)")
    if not np.issubdtype(events.dtype, np.number):
        raise NeurodynError(f"{source}: events must be numeric (dtype {events.dtype})")
    neurons = events.shape[-1]
    if offsets.shape != (neurons,):
        raise NeurodynError(f"{source}: scan_offsets have shape {offsets.shape}; expected ({neurons},), one per neuron")
    if not (np.all(np.isfinite(offsets)) and np.all(offsets >= 0) and np.all(offsets < 1)):
        raise NeurodynError(f"{source}: scan_offsets must be frame fractions in [0, 1); "
                            f"got values from {np.nanmin(offsets):g} to {np.nanmax(offsets):g}")
    if int(num_subframe_bins) != num_subframe_bins or num_subframe_bins < 1:
        raise NeurodynError(f"number of sub-frame bins must be an integer >= 1; got {num_subframe_bins}")
    recorded = events[~np.isnan(events)]
    if recorded.size == 0:
        raise NeurodynError(f"{source}: events are all NaN; expected event sizes (NaN only for frames not recorded)")
    if np.isinf(recorded).any():
        raise NeurodynError(f"{source}: events hold infinite values")
    if not signed and (recorded < 0).any():
        raise NeurodynError(f"{source}: events hold {int((recorded < 0).sum())} negative value(s) "
                            f"(min {recorded.min():g}); expected non-negative event sizes "
                            "(clip deconvolution residues with np.maximum(events, 0))")


def collapse_subframes(data: np.ndarray, num_subframe_bins: int) -> np.ndarray:
    """The frame-rate view of a sub-frame tensor: ``(trials, frames * K, N)`` -> ``(trials, frames, N)``.

    Each frame's value is the one observed sub-bin of that frame (the inverse of ``bin_subframes``);
    a frame with no observed sub-bin stays NaN.
    """
    trials, samples, neurons = data.shape
    if samples % num_subframe_bins:
        raise NeurodynError(f"{samples} samples are not a whole number of frames of {num_subframe_bins} sub-bins")
    frames = data.reshape(trials, samples // num_subframe_bins, num_subframe_bins, neurons)
    observed = ~np.isnan(frames)
    collapsed = np.where(observed, frames, 0.0).sum(axis=2)
    return np.where(observed.any(axis=2), collapsed, np.nan).astype(data.dtype)


def frames_to_subframes(values: np.ndarray, num_subframe_bins: int) -> np.ndarray:
    """Frame-rate values at sub-frame resolution: ``(trials, frames, N)`` -> ``(trials, frames * K, N)``.

    Each frame's value sits at the frame's centre; sub-bins in between are interpolated linearly and
    sub-bins before the first or after the last centre hold the nearest frame's value. This puts a
    frame-rate model's rates on the same time grid as RADICaL's (and the true latents) for scoring.
    """
    trials, frames, neurons = values.shape
    frame_centres = (np.arange(frames) + 0.5) * num_subframe_bins
    subframe_centres = np.arange(frames * num_subframe_bins) + 0.5
    rows = values.transpose(0, 2, 1).reshape(-1, frames)
    out = np.stack([np.interp(subframe_centres, frame_centres, row) for row in rows])
    return out.reshape(trials, neurons, -1).transpose(0, 2, 1)


def frame_rate_dataset(dataset: NeuralDataset) -> NeuralDataset:
    """A sub-frame dataset seen at the frame rate: one value per neuron and frame (``collapse_subframes``),
    ``bin_ms`` one frame, the same ``event_delay_ms`` and conditions. This is what AutoLFADS without
    sub-frame bins (the baseline RADICaL is compared with) trains on."""
    num_subframe_bins = int(dataset.attrs["subframe_bins"])
    return NeuralDataset(data=collapse_subframes(dataset.data, num_subframe_bins), condition=dataset.condition,
                         attrs={"bin_ms": 1000.0 / dataset.attrs["frame_rate_hz"],
                                "event_delay_ms": dataset.attrs["event_delay_ms"]})
