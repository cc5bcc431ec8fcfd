"""Continuous sessions: windows that cover every bin, cross-fade weights, exact merging, the prepared file."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest
import scipy.io

from neurodyn.cli.main import main
from neurodyn.data.continuous import (ContinuousLayout, SessionVariables, Windowing, continuous_layout,
                                      crossfade_weights, cut_windows, dataset_layout, merge_dataset_windows,
                                      merge_windows, prepare_continuous, window_starts)
from neurodyn.data.nwb_spikes import choose_heldout_neurons
from neurodyn.data.seed_format import read_dataset
from neurodyn.errors import NeurodynError
from test_data_matlab import save_mat_v73

# (num_bins, window_bins, overlap_bins): exact tilings, an end-aligned last window, overlaps over half
# the window (three windows on a bin), a single window and no overlap.
CASES = [(10, 4, 1), (11, 4, 1), (10, 3, 0), (4, 4, 0), (37, 8, 3), (50, 10, 7), (23, 5, 4), (101, 20, 5)]


def covering(starts, window_bins, num_bins):
    """For each bin, the (window, position) pairs that cover it, by brute force."""
    cover = [[] for _ in range(num_bins)]
    for k, start in enumerate(starts):
        for j in range(window_bins):
            cover[start + j].append((k, j))
    return cover


def test_window_starts_by_hand():
    assert window_starts(10, 4, 1).tolist() == [0, 3, 6]  # steps of 3 end exactly at bin 10
    assert window_starts(11, 4, 1).tolist() == [0, 3, 6, 7]  # the last window aligned to the end
    assert window_starts(10, 3, 0).tolist() == [0, 3, 6, 7]
    assert window_starts(4, 4, 0).tolist() == [0]
    assert window_starts(101, 20, 5).tolist() == [0, 15, 30, 45, 60, 75, 81]


@pytest.mark.parametrize("num_bins, window_bins, overlap_bins", CASES)
def test_windows_cover_every_bin_in_order_and_step_by_window_minus_overlap(num_bins, window_bins, overlap_bins):
    starts = window_starts(num_bins, window_bins, overlap_bins)
    cover = covering(starts, window_bins, num_bins)
    assert all(cover), "every bin lies in a window"
    assert starts[0] == 0 and starts[-1] + window_bins == num_bins
    steps = np.diff(starts)
    assert np.all(steps[:-1] == window_bins - overlap_bins) and np.all(steps > 0)
    if steps.size:
        assert 0 < steps[-1] <= window_bins - overlap_bins


@pytest.mark.parametrize("num_bins, window_bins, overlap_bins", CASES)
def test_crossfade_weights_sum_to_one_and_are_positive(num_bins, window_bins, overlap_bins):
    starts = window_starts(num_bins, window_bins, overlap_bins)
    weights = crossfade_weights(starts, window_bins, num_bins)
    assert weights.shape == (starts.size, window_bins) and np.all(weights > 0)
    for pairs in covering(starts, window_bins, num_bins):
        assert sum(weights[k, j] for k, j in pairs) == pytest.approx(1.0, abs=1e-12)


def test_crossfade_weights_are_linear_ramps_over_the_overlap():
    # one overlap per pair: the plain ramps j / (L + 1), which already sum to 1
    starts = window_starts(12, 5, 2)[:3]  # 0, 3, 6: an exact tiling of 11 bins
    weights = crossfade_weights(starts, 5, 11)
    np.testing.assert_allclose(weights[0], [1, 1, 1, 2 / 3, 1 / 3])
    np.testing.assert_allclose(weights[1], [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])
    np.testing.assert_allclose(weights[2], [1 / 3, 2 / 3, 1, 1, 1])
    # the end-aligned last window overlaps window 2 on 4 bins (6 + 5 - 7), so three windows share
    # bin 7: each window's ramps multiplied, then divided by the bin's total
    starts = window_starts(12, 5, 2)
    assert starts.tolist() == [0, 3, 6, 7]
    raw = np.array([[1, 1, 1, 2 / 3, 1 / 3],
                    [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3],
                    np.array([1 / 3, 2 / 3, 1, 1, 1]) * np.array([1, 4 / 5, 3 / 5, 2 / 5, 1 / 5]),
                    [1 / 5, 2 / 5, 3 / 5, 4 / 5, 1]])
    total = np.zeros(12)
    for k, start in enumerate(starts):
        total[start:start + 5] += raw[k]
    expected = np.stack([raw[k] / total[start:start + 5] for k, start in enumerate(starts)])
    np.testing.assert_allclose(crossfade_weights(starts, 5, 12), expected)
    assert total[7] == pytest.approx(1 / 3 + 8 / 15 + 1 / 5)


@pytest.mark.parametrize("num_bins, window_bins, overlap_bins", CASES)
def test_constant_and_linear_series_merge_back_exactly(num_bins, window_bins, overlap_bins):
    starts = window_starts(num_bins, window_bins, overlap_bins)
    t = np.arange(num_bins, dtype=np.float64)
    series = np.stack([np.full(num_bins, 3.5), 2.0 * t - 7.0, -0.25 * t], axis=1)
    windows = cut_windows(series, starts, window_bins)
    for k, start in enumerate(starts):
        np.testing.assert_array_equal(windows[k], series[start:start + window_bins])
    np.testing.assert_allclose(merge_windows(windows, starts, num_bins), series, rtol=1e-12, atol=1e-12)


def test_merge_is_the_weighted_sum_of_the_covering_windows():
    num_bins, window_bins, overlap_bins = 37, 8, 3
    starts = window_starts(num_bins, window_bins, overlap_bins)
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(starts.size, window_bins, 2))  # windows that disagree
    weights = crossfade_weights(starts, window_bins, num_bins)
    merged = merge_windows(windows, starts, num_bins)
    for t, pairs in enumerate(covering(starts, window_bins, num_bins)):
        expected = sum(weights[k, j] * windows[k, j] for k, j in pairs)
        np.testing.assert_allclose(merged[t], expected, rtol=1e-12)


def test_bad_windows_are_one_line_errors():
    with pytest.raises(NeurodynError, match="overlap .* shorter than the window"):
        window_starts(10, 4, 4)
    with pytest.raises(NeurodynError, match="longer than the session"):
        window_starts(3, 4, 0)
    with pytest.raises(NeurodynError, match="uncovered"):
        crossfade_weights(np.array([0, 5]), 4, 9)  # bin 4 is in no window
    with pytest.raises(NeurodynError, match="strictly increasing"):
        crossfade_weights(np.array([0, 3, 3, 5]), 4, 9)
    with pytest.raises(NeurodynError, match="2 window starts"):
        merge_windows(np.zeros((3, 4, 1)), np.array([0, 5]), 9)


# ---------------------------------------------------------------------------------------------
# The prepared data file


def session_arrays(num_neurons=6, num_bins=130, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {"spikes": rng.poisson(1.5, size=(num_neurons, num_bins)).astype(np.uint8),
            "handVel": rng.normal(size=(2, num_bins)),
            "time": 4.0 + 0.02 * np.arange(num_bins)}  # bins of 20 ms


@pytest.mark.parametrize("version", ["v5", "v73", "h5"])
def test_prepare_writes_windows_behaviour_heldout_and_the_merge_attributes(tmp_path, version):
    arrays = session_arrays()
    path = tmp_path / f"session.{'h5' if version == 'h5' else 'mat'}"
    if version == "v5":
        scipy.io.savemat(path, arrays)
    elif version == "v73":
        save_mat_v73(path, arrays)
    else:
        with h5py.File(path, "w") as f:  # as h5py reads it: neurons x bins, like MATLAB's order
            group = f.create_group("session")
            for name, value in arrays.items():
                group[name] = value
    prefix = "session." if version == "h5" else ""
    dataset, layout = prepare_continuous(
        path, tmp_path / "out.h5", Windowing(window_ms=200, overlap_ms=60),
        SessionVariables(data=f"{prefix}spikes", behavior=f"{prefix}handVel", time=f"{prefix}time"),
        heldout_fraction=0.34, seed=3)
    written = read_dataset(tmp_path / "out.h5")
    starts = window_starts(130, 10, 3)
    assert written.data.shape == (starts.size, 10, 6) and written.behavior.shape == (starts.size, 10, 2)
    for k, start in enumerate(starts):
        np.testing.assert_array_equal(written.data[k], arrays["spikes"].T[start:start + 10])
        np.testing.assert_allclose(written.behavior[k], arrays["handVel"].T[start:start + 10], rtol=1e-6)
    np.testing.assert_array_equal(written.heldout_neurons, choose_heldout_neurons(6, 0.34, 3))
    attrs = written.attrs
    assert attrs["continuous_window_starts"] == starts.tolist()
    assert attrs["continuous_num_bins"] == 130
    assert (attrs["continuous_window_bins"], attrs["continuous_overlap_bins"]) == (10, 3)
    assert attrs["bin_ms"] == 20.0 and attrs["continuous_first_bin_time_s"] == pytest.approx(4.0)
    assert attrs["source_file"] == path.name and attrs["source_variable"] == f"{prefix}spikes"
    assert attrs["behavior_variable"] == f"{prefix}handVel" and attrs["time_variable"] == f"{prefix}time"
    read_layout = dataset_layout(written)
    np.testing.assert_array_equal(read_layout.starts, layout.starts)
    np.testing.assert_array_equal(merge_dataset_windows(written.data, read_layout), arrays["spikes"].T)


def test_cli_prepares_with_bin_ms_and_the_default_variable(tmp_path, capsys):
    arrays = session_arrays()
    scipy.io.savemat(tmp_path / "s.mat", arrays)
    out = tmp_path / "s_data.h5"
    assert main(["prepare", "continuous", str(tmp_path / "s.mat"), str(out), "--window-ms", "200",
                 "--bin-ms", "20"]) == 0
    printed = capsys.readouterr().out
    assert "130 bins of 20 ms" in printed and "windows of 10 bins" in printed
    written = read_dataset(out)
    assert written.behavior is None and written.heldout_neurons is None
    assert written.attrs["continuous_window_starts"] == window_starts(130, 10, 0).tolist()
    assert main(["prepare", "continuous", str(tmp_path / "s.mat"), str(out), "--window-ms", "200",
                 "--bin-ms", "20"]) == 2
    assert "exists; use --overwrite" in capsys.readouterr().err
    assert main(["prepare", "continuous", str(tmp_path / "s.mat"), str(out), "--window-ms", "100",
                 "--bin-ms", "20", "--overwrite"]) == 0
    assert read_dataset(out).num_samples == 5


@pytest.mark.parametrize("extra, message", [
    (["--var", "spikes", "--behavior", "wrongLength", "--bin-ms", "20"],
     "s.mat: variable 'wrongLength' has size 2 x 129; expected behavior_dims x 130"),
    (["--behavior", "transposed", "--bin-ms", "20"],
     "s.mat: variable 'transposed' has size 130 x 2; expected behavior_dims x 130 .*dimensions swapped"),
    (["--var", "nothere", "--bin-ms", "20"], "s.mat: variable 'nothere' not found; variables present:"),
    ([], "s.mat: give the bin width with --bin-ms, or a vector of bin times"),
    (["--time", "gappy"], "s.mat: variable 'gappy' is not evenly binned: the step from bin 59 to 60"),
    (["--time", "handVel"], "s.mat: variable 'handVel' has size 2 x 130; expected a vector of 130 bin times"),
    (["--time", "time", "--bin-ms", "50"], "s.mat: --bin-ms 50 but variable 'time' steps by 20 ms"),
    (["--bin-ms", "30"], "s.mat: the window of 200 ms is not a whole number of 30 ms bins"),
    (["--bin-ms", "20", "--window-ms", "4000"], r"s.mat: the window \(200 bins\) is longer than the session \(130"),
    (["--bin-ms", "20", "--overlap-ms", "200"], "s.mat: the overlap .* shorter than the window"),
    (["--var", "label", "--bin-ms", "20"], "s.mat: variable 'label' is not a real numeric array"),
])
def test_bad_input_is_one_line_naming_file_variable_and_shape(tmp_path, capsys, extra, message):
    arrays = session_arrays()
    times = arrays["time"].copy()
    times[60:] += 0.5  # a gap of 25 bins
    scipy.io.savemat(tmp_path / "s.mat", {**arrays, "wrongLength": arrays["handVel"][:, :-1],
                                          "transposed": arrays["handVel"].T, "gappy": times, "label": "abc"})
    window = [] if "--window-ms" in extra else ["--window-ms", "200"]
    assert main(["prepare", "continuous", str(tmp_path / "s.mat"), str(tmp_path / "out.h5"), *window, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("neurodyn: error: ") and "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "out.h5").exists() and not list(tmp_path.glob(".*.tmp"))


def test_no_default_variable_and_unreadable_files(tmp_path, capsys):
    scipy.io.savemat(tmp_path / "two.mat", {"a": np.ones((3, 50)), "b": np.ones((4, 50))})
    (tmp_path / "bad.mat").write_text("not a mat file")
    for name, message in (("two.mat", "no variable 'spikes' and 2 2-D matrices"), ("bad.mat", "not a MATLAB .mat"),
                          ("missing.mat", "session file not found")):
        assert main(["prepare", "continuous", str(tmp_path / name), str(tmp_path / "o.h5"), "--window-ms", "100",
                     "--bin-ms", "10"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and name in err


def test_layout_attributes_are_checked_when_read():
    good = ContinuousLayout(starts=window_starts(30, 10, 2), num_bins=30, window_bins=10, overlap_bins=2,
                            bin_ms=5.0).to_attrs()
    assert continuous_layout({"bin_ms": 5.0}, 4, 10) is None
    assert continuous_layout(good, 4, 10).num_windows == 4
    with pytest.raises(NeurodynError, match="4 window starts; expected \\(5,\\)"):
        continuous_layout(good, 5, 10, "f.h5")
    with pytest.raises(NeurodynError, match="'continuous_window_bins' is 10 but the trials hold 12"):
        continuous_layout(good, 4, 12, "f.h5")
    with pytest.raises(NeurodynError, match="uncovered"):
        continuous_layout({**good, "continuous_num_bins": 40}, 4, 10, "f.h5")
