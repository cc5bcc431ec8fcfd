"""suite2p folder -> RADICaL-ready h5: neuropil correction, OASIS events, trial cutting, scan offsets, sub-frames."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("oasis")

from neurodyn.cli.main import main  # noqa: E402
from neurodyn.data.deconvolution import deconvolve_traces  # noqa: E402
from neurodyn.data.prepare_2p import TwoPhotonSettings, prepare_two_photon, scan_offsets  # noqa: E402
from neurodyn.data.seed_format import read_dataset  # noqa: E402
from neurodyn.data.suite2p import read_suite2p_plane  # noqa: E402
from neurodyn.errors import NeurodynError  # noqa: E402

FRAME_RATE, DECAY_S, LINES, K = 30.0, 0.4, 64, 4
ROI_LINES = np.array([5, 20, 40, 63, 30])  # ROI 4 is not a cell
EXPECTED_SUBBIN = [0, 1, 2, 3]  # floor((line + 0.5) / 64 * 4) for the four cells, by hand
TRIAL_STARTS = [1.0, 5.01, 9.02, 13.5]
START_FRAMES = [30, 151, 271, 405]  # first frame at or after each start, by hand (frame f starts at f / 30 s)
TRIAL_FRAMES = 90
NEUROPIL_BUMP_FRAME = 200


def simulate_recording(seed=0, num_frames=600):
    """AR(1) calcium from sparse spikes plus 0.7 x a neuropil signal with a sharp bump, and small noise."""
    rng = np.random.default_rng(seed)
    rois = ROI_LINES.size
    spikes = rng.poisson(1.5 / FRAME_RATE, (rois, num_frames)).astype(float)
    spikes[:, NEUROPIL_BUMP_FRAME - 8: NEUROPIL_BUMP_FRAME + 12] = 0  # no real spike near the neuropil bump
    decay = np.exp(-1.0 / (DECAY_S * FRAME_RATE))
    calcium = np.zeros_like(spikes)
    for t in range(num_frames):
        calcium[:, t] = (calcium[:, t - 1] * decay if t else 0.0) + spikes[:, t]
    frames = np.arange(num_frames)
    neuropil = 1.0 + 0.3 * np.sin(frames / 40.0)[None, :] + rng.uniform(0, 0.2, (rois, 1))
    bump = np.where(frames >= NEUROPIL_BUMP_FRAME, 3.0 * np.exp(-(frames - NEUROPIL_BUMP_FRAME) / 12.0), 0.0)
    neuropil = neuropil + bump[None, :]
    fluorescence = 2.0 + calcium + 0.7 * neuropil + 0.03 * rng.standard_normal(spikes.shape)
    return fluorescence, neuropil, spikes


def write_suite2p_folder(folder, fluorescence, neuropil, fs=FRAME_RATE, ly=LINES):
    folder.mkdir(parents=True)
    rois = fluorescence.shape[0]
    np.save(folder / "F.npy", fluorescence.astype(np.float32))
    np.save(folder / "Fneu.npy", neuropil.astype(np.float32))
    iscell = np.column_stack([np.r_[np.ones(rois - 1), 0.0], np.r_[np.full(rois - 1, 0.9), 0.2]])
    np.save(folder / "iscell.npy", iscell)
    np.save(folder / "ops.npy", {"fs": fs, "Ly": ly, "Lx": 80, "nplanes": 1}, allow_pickle=True)
    stat = [{"med": [int(line), 10 + 5 * index], "ypix": np.array([line]), "xpix": np.array([1])}
            for index, line in enumerate(ROI_LINES[:rois])]
    np.save(folder / "stat.npy", np.array(stat, dtype=object), allow_pickle=True)


# The simulated indicator is instantaneous (AR(1) calcium, a jump per spike): both time constants are known.
SETTINGS = TwoPhotonSettings(trial_frames=TRIAL_FRAMES, subframe_bins=K, decay_s=DECAY_S, min_event_size=0.3,
                             indicator_rise_s=0.0)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    folder = tmp_path_factory.mktemp("s2p") / "suite2p" / "plane0"
    fluorescence, neuropil, spikes = simulate_recording()
    write_suite2p_folder(folder, fluorescence, neuropil)
    traces = read_suite2p_plane(folder)
    return folder, traces, fluorescence.astype(np.float32), neuropil.astype(np.float32), spikes


@pytest.fixture(scope="module")
def prepared(recording):
    _, traces, *_ = recording
    return prepare_two_photon(traces, TRIAL_STARTS, SETTINGS)


def test_reader_keeps_cells_and_their_positions(recording):
    folder, traces, fluorescence, _, _ = recording
    np.testing.assert_array_equal(traces.roi_indices, [0, 1, 2, 3])
    np.testing.assert_array_equal(traces.fluorescence, fluorescence[:4])
    np.testing.assert_array_equal(traces.roi_lines, ROI_LINES[:4])
    assert traces.frame_rate_hz == FRAME_RATE and traces.lines_per_frame == LINES
    assert traces.frame_times_s[30] == pytest.approx(1.0)
    assert read_suite2p_plane(folder.parent).source == str(folder)  # suite2p/ with one plane -> plane0
    assert read_suite2p_plane(folder, cells_only=False).roi_indices.tolist() == [0, 1, 2, 3, 4]


def test_each_roi_is_observed_once_per_frame_in_its_scan_subbin(prepared):
    data = prepared.data
    assert data.shape == (len(TRIAL_STARTS), TRIAL_FRAMES * K, 4)
    observed = ~np.isnan(data).reshape(len(TRIAL_STARTS), TRIAL_FRAMES, K, 4)
    for cell, subbin in enumerate(EXPECTED_SUBBIN):
        assert observed[..., subbin, cell].all()
        assert observed[..., cell].sum() == len(TRIAL_STARTS) * TRIAL_FRAMES
    np.testing.assert_array_equal(np.floor(prepared.attrs["scan_offsets"] * K), EXPECTED_SUBBIN)
    np.testing.assert_array_equal(prepared.attrs["trial_start_frames"], START_FRAMES)
    assert prepared.attrs["bin_ms"] == pytest.approx(1000 / 120)
    # events trail spikes by the median of an instantaneous indicator's AR(1) event kernel: tau ln(2 / (1 + g))
    frame_ms, decay_ms = 1000 / FRAME_RATE, 1000 * DECAY_S
    expected_delay = decay_ms * np.log(2 / (1 + np.exp(-frame_ms / decay_ms)))
    assert prepared.attrs["event_delay_ms"] == pytest.approx(expected_delay, abs=0.1)
    assert prepared.attrs["event_kinetics_source"] == "decay given, rise given"
    assert (prepared.attrs["indicator_decay_ms"], prepared.attrs["indicator_rise_ms"]) == (decay_ms, 0.0)


def test_events_are_the_corrected_traces_deconvolved_and_cut(recording, prepared):
    _, _, fluorescence, neuropil, _ = recording
    reference = deconvolve_traces(fluorescence[:4].astype(np.float64) - 0.7 * neuropil[:4], FRAME_RATE,
                                  decay_s=DECAY_S, min_event_size=0.3)
    for trial, start in enumerate(START_FRAMES):
        for cell, subbin in enumerate(EXPECTED_SUBBIN):
            np.testing.assert_allclose(prepared.data[trial, subbin::K, cell],
                                       reference[cell, start: start + TRIAL_FRAMES], rtol=1e-6, atol=1e-6)


def test_events_sit_on_the_true_spikes(recording, prepared):
    *_, spikes = recording
    hits = total = 0
    for trial, start in enumerate(START_FRAMES):
        for cell, subbin in enumerate(EXPECTED_SUBBIN):
            events = prepared.data[trial, subbin::K, cell]
            true = spikes[cell, start: start + TRIAL_FRAMES]
            near_event = np.convolve(events > 0, np.ones(3), mode="same") > 0
            hits += true[near_event].sum()
            total += true.sum()
    assert total > 20 and hits >= 0.8 * total


def test_neuropil_correction_removes_the_neuropil_transient(recording):
    _, traces, *_ = recording
    bump_trial, bump_frame = 1, NEUROPIL_BUMP_FRAME - START_FRAMES[1]
    window = slice((bump_frame - 1) * K, (bump_frame + 3) * K)
    corrected = prepare_two_photon(traces, TRIAL_STARTS, SETTINGS)
    uncorrected = prepare_two_photon(traces, TRIAL_STARTS, TwoPhotonSettings(
        trial_frames=TRIAL_FRAMES, subframe_bins=K, decay_s=DECAY_S, min_event_size=0.3, neuropil_coefficient=0.0))
    assert np.nansum(corrected.data[bump_trial, window]) == 0
    assert (np.nansum(uncorrected.data[bump_trial, window], axis=0) > 1.0).all()
    assert uncorrected.attrs["neuropil_coefficient"] == 0.0


def test_bad_indicator_rise_is_an_error_before_deconvolving(recording):
    _, traces, *_ = recording
    with pytest.raises(NeurodynError, match=r"indicator rise time constant must be >= 0 seconds; got -0\.01"):
        prepare_two_photon(traces, TRIAL_STARTS, TwoPhotonSettings(trial_frames=TRIAL_FRAMES, indicator_rise_s=-0.01))


def test_scan_offsets_formula_and_range():
    np.testing.assert_allclose(scan_offsets([0, 31, 63], 64), [0.5 / 64, 31.5 / 64, 63.5 / 64])
    with pytest.raises(NeurodynError, match=r"lines must lie in \[0, 63\]"):
        scan_offsets([64], 64)


def test_trial_past_the_recording_is_an_error(recording):
    _, traces, *_ = recording
    with pytest.raises(NeurodynError, match=r"plane0: trial 1 \(start 19 s\) needs frames 570 \.\. 659 but the "
                                            r"recording has 600 frames"):
        prepare_two_photon(traces, [1.0, 19.0], SETTINGS)


@pytest.mark.parametrize("damage, message", [
    ("stat", r"stat\.npy: file not found"),
    ("fneu", r"Fneu\.npy: shape \(5, 599\); expected \(5, 600\) like F\.npy"),
    ("ops", r"ops\.npy: key 'fs' \(frames per second of this plane\) is None"),
    ("iscell", r"iscell\.npy: shape \(4, 2\); expected \(5, 2\)"),
    ("nocells", r"no ROI is marked as a cell \(of 5\)"),
    ("transposed", r"F\.npy: shape \(600, 5\) holds the 5 ROIs of stat\.npy along its second axis; "
                   r"expected \(rois, frames\) = \(5, 600\)"),
    ("crafted ops", r"ops\.npy: expected suite2p's ops dict; got UnreadableObject"),
    ("crafted stat", r"stat\.npy: expected suite2p's array of per-ROI dicts; got UnreadableObject"),
])
def test_broken_folders(tmp_path, damage, message):
    fluorescence, neuropil, _ = simulate_recording(1, num_frames=600)
    folder = tmp_path / "plane0"
    write_suite2p_folder(folder, fluorescence, neuropil)
    if damage == "stat":
        (folder / "stat.npy").unlink()
    elif damage == "fneu":
        np.save(folder / "Fneu.npy", neuropil[:, :-1])
    elif damage == "ops":
        np.save(folder / "ops.npy", {"Ly": LINES}, allow_pickle=True)
    elif damage == "iscell":
        np.save(folder / "iscell.npy", np.ones((4, 2)))
    elif damage == "nocells":
        np.save(folder / "iscell.npy", np.zeros((5, 2)))
    elif damage == "transposed":
        np.save(folder / "F.npy", fluorescence.T.astype(np.float32))
        np.save(folder / "Fneu.npy", neuropil.T.astype(np.float32))
    elif damage == "crafted ops":  # a pickle naming a function to call: read as an inert object, not run
        np.save(folder / "ops.npy", np.array(_CraftedObject(), dtype=object), allow_pickle=True)
    elif damage == "crafted stat":
        np.save(folder / "stat.npy", np.array(_CraftedObject(), dtype=object), allow_pickle=True)
    with pytest.raises(NeurodynError, match=message):
        read_suite2p_plane(folder)


class _CraftedObject:
    def __reduce__(self):
        return (print, ("this would have run",))


def test_a_probability_threshold_that_keeps_no_roi_says_so(tmp_path):
    fluorescence, neuropil, _ = simulate_recording(1, num_frames=100)
    write_suite2p_folder(tmp_path / "plane0", fluorescence, neuropil)  # cells at probability 0.9
    with pytest.raises(NeurodynError, match=r"no ROI has a cell probability of at least 0\.95 \(of 5\)"):
        read_suite2p_plane(tmp_path / "plane0", min_cell_probability=0.95)


def test_multi_plane_folder_asks_for_one_plane(tmp_path):
    fluorescence, neuropil, _ = simulate_recording(2, num_frames=100)
    write_suite2p_folder(tmp_path / "suite2p" / "plane0", fluorescence, neuropil)
    write_suite2p_folder(tmp_path / "suite2p" / "plane1", fluorescence, neuropil)
    with pytest.raises(NeurodynError, match=r"2 planes \(plane0, plane1\); prepare one plane folder at a time"):
        read_suite2p_plane(tmp_path / "suite2p")


def test_cli_prepare_2p_from_suite2p(recording, tmp_path, capsys):
    folder = recording[0]
    (tmp_path / "starts.txt").write_text("\n".join(str(t) for t in TRIAL_STARTS) + "\n")
    code = main(["prepare", "2p", str(folder), str(tmp_path / "run_data.h5"), "--trial-starts",
                 str(tmp_path / "starts.txt"), "--trial-frames", str(TRIAL_FRAMES), "--subframe-bins", str(K),
                 "--decay-s", str(DECAY_S), "--min-event-size", "0.3"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"4 trials x {TRIAL_FRAMES * K} sub-frame bins" in out
    dataset = read_dataset(tmp_path / "run_data.h5")
    assert dataset.attrs["subframe_bins"] == K and len(dataset.attrs["scan_offsets"]) == 4
    # the summary line and the file say which kinetics the event delay assumes, and where they came from
    attrs = dataset.attrs
    assert (attrs["indicator_decay_ms"], attrs["indicator_rise_ms"]) == (1000 * DECAY_S, 20.0)
    assert attrs["event_kinetics_source"] == "decay given, rise assumed"
    assert (f"by ~{attrs['event_delay_ms']:.0f} ms" in out
            and "assuming indicator decay 400 ms and rise 20 ms (decay given, rise assumed;" in out)
    assert main(["prepare", "2p", str(folder), str(tmp_path / "estimated.h5"), "--trial-starts",
                 str(tmp_path / "starts.txt"), "--trial-frames", str(TRIAL_FRAMES), "--min-event-size", "0.3"]) == 0
    estimated = read_dataset(tmp_path / "estimated.h5").attrs
    assert estimated["event_kinetics_source"] == "decay estimated, rise assumed"
    assert estimated["indicator_decay_rois"] == 4 and 200 < estimated["indicator_decay_ms"] < 600
    assert f"decay {estimated['indicator_decay_ms']:.0f} ms" in capsys.readouterr().out
    assert main(["prepare", "2p", str(folder), str(tmp_path / "x.h5"), "--trial-frames", "10"]) == 2
    assert "give --trial-starts" in capsys.readouterr().err


def test_cli_prepare_2p_names_a_missing_source_as_either_kind(tmp_path, capsys):
    code = main(["prepare", "2p", str(tmp_path / "nothere"), str(tmp_path / "out.h5"), "--trial-starts", "0,3",
                 "--trial-frames", "10"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nothere: not found (expected a suite2p plane folder, or an NWB file" in err and err.count("\n") == 1
    assert not (tmp_path / "out.h5").exists()


# ---------------------------------------------------------------------------------------------
# dF/F instead of events (--signal dff)


def test_dff_of_a_constant_baseline_with_brief_transients_is_exact():
    from neurodyn.data.prepare_2p import delta_f_over_f

    frames = np.arange(3000)
    trace = np.full((2, frames.size), 50.0)
    trace[0, 1000:1010] += 25.0  # a 1/3 s transient: shorter than the window, it leaves F0 alone
    trace[1] *= 2.0
    dff = delta_f_over_f(trace, FRAME_RATE, baseline_window_s=20.0)
    expected = np.zeros_like(trace)
    expected[0, 1000:1010] = 0.5
    np.testing.assert_allclose(dff, expected, atol=1e-12)


def test_dff_follows_a_slow_drift_of_the_baseline():
    from neurodyn.data.prepare_2p import delta_f_over_f

    frames = np.arange(6000)
    baseline = 100.0 + 20.0 * np.sin(2 * np.pi * frames / 6000)  # one slow cycle over 200 s
    dff = delta_f_over_f(baseline[None, :], FRAME_RATE, baseline_window_s=5.0)
    assert np.abs(dff).max() < 0.02  # F0 tracks a drift slower than its window


def test_dff_is_refused_where_the_corrected_baseline_is_not_positive():
    from neurodyn.data.prepare_2p import delta_f_over_f

    trace = np.vstack([np.full(300, 10.0), np.full(300, -1.0)])
    with pytest.raises(NeurodynError, match=r"ROI\(s\) 1 .*--neuropil-coefficient"):
        delta_f_over_f(trace, FRAME_RATE, baseline_window_s=2.0)


def test_prepare_2p_signal_dff_writes_signed_dff_in_the_scan_subbins(recording, tmp_path, capsys):
    from neurodyn.data.prepare_2p import delta_f_over_f

    folder, traces, fluorescence, neuropil, _ = recording
    out = tmp_path / "dff_data.h5"
    assert main(["prepare", "2p", str(folder), str(out), "--trial-starts", ",".join(map(str, TRIAL_STARTS)),
                 "--trial-frames", str(TRIAL_FRAMES), "--subframe-bins", str(K), "--signal", "dff",
                 "--baseline-window-s", "5"]) == 0
    assert "observation: gaussian" in capsys.readouterr().out
    dataset = read_dataset(out)
    cells = traces.fluorescence.shape[0]
    corrected = fluorescence[:cells].astype(np.float64) - 0.7 * neuropil[:cells]
    dff = delta_f_over_f(corrected, FRAME_RATE, 5.0)
    for trial, start in enumerate(START_FRAMES):
        for roi, subbin in enumerate(EXPECTED_SUBBIN):
            values = dataset.data[trial, subbin::K, roi]
            np.testing.assert_allclose(values, dff[roi, start:start + TRIAL_FRAMES], rtol=1e-5, atol=1e-6)
    assert (dataset.data < 0).any()  # noise below the baseline: dF/F takes both signs
    assert dataset.attrs["signal"] == "dff" and "event_delay_ms" not in dataset.attrs
