"""Event timing: the delay between spikes and the deconvolved event that reports them, and moving events earlier."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import lfilter

from neurodyn.config import LfadsConfig, validate_config
from neurodyn.data.event_timing import (advance_events, append_unobserved_bins, calcium_kernel, event_delay_ms,
                                        event_kernel)
from neurodyn.data.seed_format import NeuralDataset, write_dataset
from neurodyn.errors import NeurodynError
from neurodyn.synth.lorenz_2p import calcium_trace, make_lorenz_2p
from neurodyn.train.run import read_model_dataset, resolve_event_delay

FRAME_S, RISE_S, DECAY_S = 0.032, 0.020, 0.300


def test_event_kernel_matches_a_simulated_spike_sampled_and_filtered():
    """Independent route: one spike through the synthetic set's calcium simulation, sampled once per frame,
    AR(1)-filtered like OASIS's model; each sample's event is w(time since the spike)."""
    step_s, frame_steps = 0.0005, 64  # 0.5 ms steps, 32 ms frames
    for spike_step in (3, 20, 41, 63):  # spike at several phases within the frame
        spikes = np.zeros(frame_steps * 12)
        spikes[frame_steps * 2 + spike_step] = 1.0
        samples = calcium_trace(spikes, step_s, RISE_S, DECAY_S)[frame_steps - 1::frame_steps]  # end of each frame
        events = lfilter([1.0, -math.exp(-FRAME_S / DECAY_S)], [1.0], samples)
        sample_times = (np.arange(samples.size) + 1) * frame_steps - 1
        since_spike = (sample_times - (frame_steps * 2 + spike_step)) * step_s
        np.testing.assert_allclose(events, event_kernel(since_spike, FRAME_S, DECAY_S, RISE_S), atol=1e-9)


def test_instantaneous_indicator_kernel_is_the_decay_within_one_frame_and_zero_after():
    u = np.linspace(-0.01, 0.1, 221)
    w = event_kernel(u, FRAME_S, DECAY_S, indicator_rise_s=0.0)
    inside = (u >= 0) & (u < FRAME_S - 1e-12)
    np.testing.assert_allclose(w[inside], np.exp(-u[inside] / DECAY_S), rtol=1e-12)
    np.testing.assert_allclose(w[~inside & (u != FRAME_S)], 0.0, atol=1e-12)


def test_matching_ar2_deconvolution_confines_the_kernel_to_two_frames():
    u = np.linspace(0, 0.2, 401)
    w = event_kernel(u, FRAME_S, DECAY_S, RISE_S, deconvolution_rise_s=RISE_S)
    np.testing.assert_allclose(w[u > 2 * FRAME_S + 1e-9], 0.0, atol=1e-12)
    assert w[(u > 0) & (u < 2 * FRAME_S)].max() > 0.5


@pytest.mark.parametrize("decay_ms", [None, 300.0, 50.0])
def test_delay_of_an_instantaneous_indicator_has_the_closed_form(decay_ms):
    frame_ms = 32.0
    # median of exp(-u / tau) on [0, F): tau ln(2 / (1 + exp(-F / tau))); F / 2 without decay
    expected = frame_ms / 2 if decay_ms is None else decay_ms * math.log(2 / (1 + math.exp(-frame_ms / decay_ms)))
    assert event_delay_ms(frame_ms, decay_ms) == pytest.approx(expected, abs=frame_ms / 500)


def test_a_slow_rise_lengthens_the_delay_and_ar2_deconvolution_shortens_it_again():
    ar1 = event_delay_ms(32.0, 300.0, indicator_rise_ms=20.0)
    ar2 = event_delay_ms(32.0, 300.0, indicator_rise_ms=20.0, deconvolution_rise_ms=20.0)
    instantaneous = event_delay_ms(32.0, 300.0)
    assert instantaneous < ar2 < ar1
    assert 28.0 < ar1 < 36.0  # about a frame with the synthetic set's defaults (4 sub-bins of 8 ms)


def test_synthetic_events_trail_the_truth_by_the_computed_delay():
    """The lag that best lines up OASIS events with the true rates is the computed delay (in 4 ms sub-bins)."""
    pytest.importorskip("oasis")
    dataset = make_lorenz_2p(num_neurons=60, num_frames=24, subframe_bins=8, num_conditions=6,
                             trials_per_condition=6, lorenz_speed=6.0, seed=3)
    expected = dataset.attrs["event_delay_ms"] / dataset.attrs["bin_ms"]
    observed = ~np.isnan(dataset.data)

    def correlation(lag: int) -> float:
        events = dataset.data[:, lag:][observed[:, lag:]]
        truth = dataset.truth[:, :dataset.num_samples - lag][observed[:, lag:]]
        return float(np.corrcoef(events, truth)[0, 1])

    best = max(range(0, 17), key=correlation)
    assert abs(best - expected) <= 1.5, (best, expected)


def test_calcium_kernel_is_zero_before_the_spike_and_peaks_at_one():
    t = np.linspace(-0.05, 1.0, 20001)
    h = calcium_kernel(t, RISE_S, DECAY_S)
    assert (h[t < 0] == 0).all() and h.max() == pytest.approx(1.0, abs=1e-6)
    assert calcium_kernel(np.array([0.0, 0.1]), 0.0, DECAY_S) == pytest.approx([1.0, math.exp(-0.1 / DECAY_S)])


def test_bad_kinetics_are_errors_naming_the_setting():
    with pytest.raises(NeurodynError, match="frame_period_ms"):
        event_delay_ms(0.0, 300.0)
    with pytest.raises(NeurodynError, match="indicator_rise_ms"):
        event_delay_ms(32.0, 300.0, indicator_rise_ms=-1.0)
    with pytest.raises(NeurodynError, match="decay_ms"):
        event_delay_ms(32.0, float("nan"))


def test_advance_events_moves_data_earlier_and_leaves_the_end_unobserved():
    data = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    data[0, 3, 1] = np.nan
    moved = advance_events(data, 2)
    np.testing.assert_array_equal(moved[:, :3], data[:, 2:])
    assert np.isnan(moved[:, 3:]).all() and np.isnan(moved[0, 1, 1])
    assert advance_events(data, 0) is data
    with pytest.raises(NeurodynError, match="whole number of bins"):
        advance_events(data, -1)
    with pytest.raises(NeurodynError, match="leaves nothing"):
        advance_events(data, 5)


def _events_file(tmp_path, attrs):
    rng = np.random.default_rng(0)
    data = np.where(rng.random((6, 10, 4)) < 0.5, rng.gamma(2.0, 1.0, (6, 10, 4)) + 0.2, 0.0)
    dataset = NeuralDataset(data=data, attrs=attrs)
    write_dataset(tmp_path / "events.h5", dataset)
    return tmp_path / "events.h5", dataset.data


def test_append_unobserved_bins_extends_trials_with_nan():
    data = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    extended = append_unobserved_bins(data, 2)
    assert extended.shape == (2, 5, 2)
    np.testing.assert_array_equal(extended[:, :3], data)
    assert np.isnan(extended[:, 3:]).all() and append_unobserved_bins(data, 0) is data


def test_auto_delay_comes_from_the_file_and_extends_the_trials(tmp_path):
    path, data = _events_file(tmp_path, {"event_delay_ms": 15.6, "bin_ms": 8.0})
    dataset, config = read_model_dataset(path, LfadsConfig(observation="zig"))
    assert config.event_delay_bins == 2
    np.testing.assert_array_equal(dataset.data, append_unobserved_bins(data, 2))
    dataset, config = read_model_dataset(path, LfadsConfig(observation="zig", event_delay_bins=0))
    assert config.event_delay_bins == 0
    np.testing.assert_array_equal(dataset.data, data)


def test_files_without_a_delay_are_not_moved_and_a_delay_without_bin_width_is_an_error(tmp_path):
    path, data = _events_file(tmp_path, {})
    dataset, config = read_model_dataset(path, LfadsConfig(observation="zig"))
    assert config.event_delay_bins == 0
    np.testing.assert_array_equal(dataset.data, data)
    broken = NeuralDataset(data=data, attrs={"event_delay_ms": 30.0}, source="x.h5")
    with pytest.raises(NeurodynError, match="x.h5.*'event_delay_ms' but no 'bin_ms'"):
        resolve_event_delay(LfadsConfig(), broken)
    path, _ = _events_file(tmp_path, {"event_delay_ms": 300.0, "bin_ms": 8.0})
    with pytest.raises(NeurodynError, match="not shorter than the trials"):
        read_model_dataset(path, LfadsConfig(observation="zig"))


def test_config_rejects_a_negative_delay():
    with pytest.raises(NeurodynError, match="event_delay_bins.*'auto' or an integer >= 0"):
        validate_config({"event_delay_bins": -1})


# -- the kinetics a real recording's delay assumes (prepare 2p) -------------------------------------------------

DEFAULT_RISE_MS = 20.0  # the synthetic set's default indicator rise
SYNTHETIC = dict(num_neurons=60, num_frames=24, subframe_bins=8, num_conditions=6, trials_per_condition=6,
                 lorenz_speed=6.0, seed=3)


def _best_lag(events: np.ndarray, truth: np.ndarray, max_lag: int = 16) -> int:
    """The lag (bins) that best lines up events with the true rates (correlation over observed entries)."""
    observed = ~np.isnan(events)

    def correlation(lag: int) -> float:
        return float(np.corrcoef(events[:, lag:][observed[:, lag:]],
                                 truth[:, :events.shape[1] - lag][observed[:, lag:]])[0, 1])

    return max(range(max_lag + 1), key=correlation)


def _prepare_synthetic(**settings):
    pytest.importorskip("oasis")
    from neurodyn.data.prepare_2p import TwoPhotonSettings, prepare_two_photon
    from neurodyn.synth.lorenz_2p import make_lorenz_2p_recording

    kinetics = {k: settings.pop(k) for k in ("rise_ms", "decay_ms") if k in settings}
    synthetic = make_lorenz_2p(**SYNTHETIC, **kinetics)
    recording, starts = make_lorenz_2p_recording(**SYNTHETIC, **kinetics)
    prepared = prepare_two_photon(recording, starts, TwoPhotonSettings(
        trial_frames=SYNTHETIC["num_frames"], subframe_bins=SYNTHETIC["subframe_bins"], min_event_size=0.1,
        **settings))
    return synthetic, prepared


def test_prepare_2p_on_a_synthetic_recording_estimates_the_decay_and_removes_the_true_delay():
    """The synthetic set's own fluorescence through prepare 2p with no kinetics given: the decay is estimated from
    the deconvolution's AR(1) fits, the rise assumed; the delay written is the lag that lines the prepared events up
    with the true rates, and the old default (an instantaneous indicator: about half a frame) is not."""
    synthetic, prepared = _prepare_synthetic()
    attrs = prepared.attrs
    assert np.array_equal(np.isnan(prepared.data), np.isnan(synthetic.data))  # same trials, same sub-bins
    assert attrs["event_kinetics_source"] == "decay estimated, rise assumed"
    assert attrs["indicator_decay_rois"] == SYNTHETIC["num_neurons"]
    assert attrs["indicator_decay_ms"] == pytest.approx(300.0, rel=0.15)  # the generator's decay
    assert (attrs["indicator_rise_ms"], attrs["deconvolution_rise_ms"]) == (20.0, 0.0)
    assert attrs["event_delay_ms"] == pytest.approx(synthetic.attrs["event_delay_ms"], abs=1.0)
    best = _best_lag(prepared.data, synthetic.truth)
    assert abs(best - attrs["event_delay_ms"] / attrs["bin_ms"]) <= 1.5, (best, attrs["event_delay_ms"])
    half_frame_bins = SYNTHETIC["subframe_bins"] / 2
    assert abs(best - half_frame_bins) > 2


def test_given_kinetics_are_used_and_labelled_given():
    """A slower indicator (rise 50 ms): with its kinetics given, the delay is the synthetic pipeline's, and the
    prepared events trail the true rates as the synthetic set's events do (a slow rise skews the event kernel, so
    the correlation peak sits before its median: compare like with like)."""
    synthetic, prepared = _prepare_synthetic(rise_ms=50.0, decay_s=0.3, indicator_rise_s=0.05)
    attrs = prepared.attrs
    assert attrs["event_kinetics_source"] == "decay given, rise given"
    assert (attrs["indicator_decay_ms"], attrs["indicator_rise_ms"], attrs["indicator_decay_rois"]) == (300.0, 50.0, 0)
    assert attrs["event_delay_ms"] == pytest.approx(synthetic.attrs["event_delay_ms"], abs=0.01)
    assert attrs["event_delay_ms"] > 1.5 * event_delay_ms(32.0, 300.0, DEFAULT_RISE_MS)  # the rise matters
    assert abs(_best_lag(prepared.data, synthetic.truth) - _best_lag(synthetic.data, synthetic.truth)) <= 1


def test_resolved_kinetics_sources_and_fallbacks():
    from neurodyn.data.event_timing import DEFAULT_INDICATOR_RISE_MS, resolve_event_kinetics

    fitted = np.array([250.0, np.nan, 310.0, np.inf, 280.0, -1.0])  # NaN / negative: no fit; inf: no decay
    kinetics = resolve_event_kinetics(30.0, fitted_decays_ms=fitted)
    assert (kinetics.decay_ms, kinetics.decay_rois, kinetics.source) == (295.0, 4, "decay estimated, rise assumed")
    assert kinetics.rise_ms == DEFAULT_INDICATOR_RISE_MS
    assert kinetics.delay_ms == event_delay_ms(1000 / 30, 295.0, DEFAULT_INDICATOR_RISE_MS)
    assert "median of 4 ROIs' OASIS AR(1) fits" in kinetics.describe()
    # No usable fit: decay taken as much longer than a frame; an instantaneous rise given gives half a frame.
    nothing = resolve_event_kinetics(30.0, given_rise_ms=0.0, fitted_decays_ms=np.array([np.nan]))
    assert nothing.source == "decay assumed, rise given" and math.isinf(nothing.decay_ms)
    assert nothing.delay_ms == pytest.approx(1000 / 30 / 2, abs=0.05)
    # An AR(2) deconvolution's rise is the indicator's unless another is given.
    ar2 = resolve_event_kinetics(30.0, deconvolution_rise_ms=40.0, given_decay_ms=400.0)
    assert (ar2.rise_ms, ar2.source) == (40.0, "decay given, rise given")
    assert ar2.delay_ms == event_delay_ms(1000 / 30, 400.0, 40.0, 40.0)
    assert set(ar2.attrs()) == {"event_delay_ms", "indicator_decay_ms", "indicator_rise_ms", "deconvolution_rise_ms",
                                "event_kinetics_source", "indicator_decay_rois"}
    with pytest.raises(NeurodynError, match="indicator_rise_ms"):
        resolve_event_kinetics(30.0, given_rise_ms=-5.0)
    with pytest.raises(NeurodynError, match="frame rate"):
        resolve_event_kinetics(0.0)
