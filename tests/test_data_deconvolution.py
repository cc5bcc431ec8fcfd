"""OASIS deconvolution wrapper: recovers spike times on simulated traces, cleans residues, clear errors."""

import numpy as np
import pytest

from neurodyn.data.deconvolution import deconvolve_traces
from neurodyn.errors import NeurodynError

pytest.importorskip("oasis")

FRAME_RATE = 30.0
DECAY_S = 0.4


def _simulated_traces(rng, num_traces, num_frames, rate_hz=2.0, noise=0.15):
    """AR(1) calcium (jump 1 per spike, decay DECAY_S) plus Gaussian noise, at FRAME_RATE; spikes (traces, frames)."""
    spikes = rng.poisson(rate_hz / FRAME_RATE, (num_traces, num_frames)).astype(float)
    decay = np.exp(-1.0 / (DECAY_S * FRAME_RATE))
    calcium = np.zeros_like(spikes)
    for t in range(num_frames):
        calcium[:, t] = (calcium[:, t - 1] * decay if t else 0.0) + spikes[:, t]
    return calcium + noise * rng.standard_normal(spikes.shape), spikes


def _recall_within_one_frame(events, spikes):
    """Fraction of spikes with a non-zero event at most one frame away."""
    event_frames = np.flatnonzero(events > 0)
    spike_frames = np.repeat(np.arange(spikes.size), spikes.astype(int))
    distance = np.abs(spike_frames[:, None] - event_frames[None, :]).min(axis=1)
    return np.mean(distance <= 1)


@pytest.mark.parametrize("decay_s", [DECAY_S, None])  # known decay, or estimated by OASIS
def test_oasis_recovers_spike_times(decay_s):
    traces, spikes = _simulated_traces(np.random.default_rng(0), 3, 900)
    events = deconvolve_traces(traces, FRAME_RATE, decay_s=decay_s)
    assert events.shape == traces.shape and np.all(events >= 0)
    for n in range(3):
        assert spikes[n].sum() > 30
        assert _recall_within_one_frame(events[n], spikes[n]) >= 0.8
        # and most of the event mass sits near real spikes (few false events)
        near_spike = np.convolve(spikes[n], np.ones(3), mode="same") > 0
        assert events[n][near_spike].sum() >= 0.8 * events[n].sum()


def test_shape_is_kept_and_small_events_are_dropped():
    traces, _ = _simulated_traces(np.random.default_rng(1), 6, 300)
    events = deconvolve_traces(traces.reshape(2, 3, 300), FRAME_RATE, decay_s=DECAY_S, min_event_size=0.5)
    assert events.shape == (2, 3, 300)
    nonzero = events[events > 0]
    assert nonzero.size > 0 and nonzero.min() >= 0.5


def test_nan_only_and_partly_nan_traces_are_errors_naming_the_trace():
    traces, _ = _simulated_traces(np.random.default_rng(2), 2, 300)
    traces[1] = np.nan
    with pytest.raises(NeurodynError, match=r"cells\.h5 F\[1\]: the trace is all NaN"):
        deconvolve_traces(traces, FRAME_RATE, decay_s=DECAY_S, source="cells.h5 F")
    traces[1] = 0.5
    traces[1, 10] = np.nan
    with pytest.raises(NeurodynError, match=r"F\[1\]: the trace holds 1 NaN or infinite"):
        deconvolve_traces(traces, FRAME_RATE, decay_s=DECAY_S, source="F")


def test_bad_settings_and_oasis_failures_become_neurodyn_errors(monkeypatch):
    traces, _ = _simulated_traces(np.random.default_rng(3), 1, 50)
    with pytest.raises(NeurodynError, match="frame rate"):
        deconvolve_traces(traces, 0.0, decay_s=DECAY_S)
    with pytest.raises(NeurodynError, match="rise time constant"):
        deconvolve_traces(traces, FRAME_RATE, decay_s=None, rise_s=0.05)
    with pytest.raises(NeurodynError, match="penalty"):
        deconvolve_traces(traces, FRAME_RATE, decay_s=DECAY_S, penalty="l2")

    from oasis import functions

    def failing(*args, **kwargs):
        raise ValueError("g must be positive")

    monkeypatch.setattr(functions, "deconvolve", failing)
    with pytest.raises(NeurodynError, match=r"traces\[0\]: OASIS deconvolution failed: ValueError: g must be positive"):
        deconvolve_traces(traces, FRAME_RATE, decay_s=DECAY_S)


def test_fits_report_the_ar1_model_each_trace_was_deconvolved_with():
    from neurodyn.data.deconvolution import ar1_decay_ms, deconvolve_traces_with_fits

    traces, _ = _simulated_traces(np.random.default_rng(4), 3, 1500)
    given = deconvolve_traces_with_fits(traces, FRAME_RATE, decay_s=DECAY_S)
    assert given.ar_coefficients.shape == (3, 1)
    np.testing.assert_allclose(given.ar_coefficients, np.exp(-1 / (FRAME_RATE * DECAY_S)), rtol=1e-12)
    np.testing.assert_array_equal(given.events, deconvolve_traces(traces, FRAME_RATE, decay_s=DECAY_S))
    many, _ = _simulated_traces(np.random.default_rng(5), 9, 1500)
    fitted = deconvolve_traces_with_fits(many, FRAME_RATE)  # OASIS estimates g per trace (shrunk by 2%)
    decays = ar1_decay_ms(fitted.ar_coefficients[:, 0], FRAME_RATE)
    assert np.median(decays) == pytest.approx(1000 * DECAY_S, rel=0.2)  # noisy per trace, the median is close
    np.testing.assert_allclose(decays, 1000 * DECAY_S, rtol=0.5)
    # closed form: g = exp(-frame / tau) -> tau; no decay (g >= 1) is inf, no fit (g <= 0, NaN) is NaN
    np.testing.assert_allclose(ar1_decay_ms(np.array([np.exp(-0.1), np.exp(-2.0)]), 50.0), [200.0, 10.0], rtol=1e-12)
    edge = ar1_decay_ms(np.array([1.0, 1.5, 0.0, -0.3, np.nan]), 30.0)
    assert np.isinf(edge[:2]).all() and np.isnan(edge[2:]).all()
