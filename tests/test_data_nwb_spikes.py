"""Spiking NWB -> seed h5: binning vs a hand count, alignment, silent units, unequal trials, held-out split."""

from __future__ import annotations

from datetime import datetime, timezone

import h5py
import numpy as np
import pytest

pynwb = pytest.importorskip("pynwb")

from neurodyn.cli.main import main  # noqa: E402
from neurodyn.data.nwb_spikes import (  # noqa: E402
    SpikeBinning,
    choose_heldout_neurons,
    prepare_nwb_spikes,
    read_nwb_spikes,
)
from neurodyn.data.seed_format import read_dataset  # noqa: E402
from neurodyn.errors import NeurodynError  # noqa: E402


def write_nwb(path, spike_times, trials, obs_intervals=None, extra_columns=()):
    """``trials``: list of dicts with start_time, stop_time and any extra columns (declared in extra_columns)."""
    nwbfile = pynwb.NWBFile(session_description="test", identifier=str(path),
                            session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    for name in extra_columns:
        nwbfile.add_trial_column(name=name, description=f"test column {name}")
    for trial in trials:
        nwbfile.add_trial(**trial)
    for index, times in enumerate(spike_times):
        kwargs = {"spike_times": list(times), "id": 100 + index}
        if obs_intervals is not None:
            kwargs["obs_intervals"] = obs_intervals[index]
        nwbfile.add_unit(**kwargs)
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)


def session(seed=0, num_units=5, num_trials=6):
    """Random spikes over 10 s and trials every 1.5 s with a go cue 0.3-0.6 s after the start."""
    rng = np.random.default_rng(seed)
    spikes = [np.sort(rng.uniform(0.0, 10.0, rng.integers(40, 120))) for _ in range(num_units)]
    trials = []
    for k in range(num_trials):
        start = 0.5 + 1.5 * k
        trials.append({"start_time": start, "stop_time": start + 1.2, "go_cue_time": start + rng.uniform(0.3, 0.6),
                       "reach": ["left", "right", "up"][k % 3]})
    return spikes, trials


def hand_count(spikes, align_times, start_ms, bin_ms, num_bins):
    """Loop over every spike: which trial window and bin (half-open) holds it."""
    counts = np.zeros((len(align_times), num_bins, len(spikes)))
    for unit, times in enumerate(spikes):
        for t in times:
            for trial, align in enumerate(align_times):
                for b in range(num_bins):
                    left = align + (start_ms + b * bin_ms) / 1000
                    right = align + (start_ms + (b + 1) * bin_ms) / 1000
                    if left <= t < right:
                        counts[trial, b, unit] += 1
    return counts


def test_binning_matches_a_hand_count(tmp_path):
    spikes, trials = session()
    write_nwb(tmp_path / "s.nwb", spikes, trials, extra_columns=("go_cue_time", "reach"))
    dataset = read_nwb_spikes(tmp_path / "s.nwb", SpikeBinning(bin_ms=20, align="go_cue_time", window_ms=(-250, 450)))
    align = np.array([trial["go_cue_time"] for trial in trials])
    expected = hand_count(spikes, align, -250, 20, 35)
    assert dataset.data.shape == (6, 35, 5)
    np.testing.assert_array_equal(dataset.data, expected)
    np.testing.assert_allclose(dataset.attrs["align_times_s"], align)
    assert dataset.attrs["window_start_ms"] == -250 and dataset.attrs["bin_ms"] == 20
    np.testing.assert_array_equal(dataset.attrs["unit_ids"], [100, 101, 102, 103, 104])


def test_spike_on_a_bin_edge_goes_to_the_later_bin(tmp_path):
    trials = [{"start_time": 1.0, "stop_time": 2.0}]
    write_nwb(tmp_path / "s.nwb", [[1.0, 1.05, 1.0999]], trials)
    dataset = read_nwb_spikes(tmp_path / "s.nwb", SpikeBinning(bin_ms=50, window_ms=(-100, 100)))
    # bins [-100,-50) [-50,0) [0,50) [50,100) ms around 1.0 s
    np.testing.assert_array_equal(dataset.data[0, :, 0], [0, 0, 1, 2])


def test_units_without_spikes_are_dropped_and_listed(tmp_path, capsys):
    spikes, trials = session(1, num_units=3)
    spikes.insert(1, [])          # never fires
    spikes.append([9.99])         # fires, but outside every window
    write_nwb(tmp_path / "s.nwb", spikes, trials, extra_columns=("go_cue_time", "reach"))
    dataset = read_nwb_spikes(tmp_path / "s.nwb", SpikeBinning(bin_ms=20, window_ms=(0, 400)))
    assert dataset.num_neurons == 3
    np.testing.assert_array_equal(dataset.attrs["unit_ids"], [100, 102, 103])
    np.testing.assert_array_equal(dataset.attrs["dropped_unit_ids"], [101, 104])
    code = main(["prepare", "nwb", str(tmp_path / "s.nwb"), str(tmp_path / "out.h5"), "--bin-ms", "20",
                 "--window", "0", "400"])
    assert code == 0
    assert "dropped units without spikes in any window (ids): 101, 104" in capsys.readouterr().out


def test_all_units_silent_is_an_error(tmp_path):
    write_nwb(tmp_path / "s.nwb", [[], [50.0]], [{"start_time": 0.0, "stop_time": 1.0}])
    with pytest.raises(NeurodynError, match=r"s\.nwb: none of the 2 units has a spike inside the trial windows"):
        read_nwb_spikes(tmp_path / "s.nwb", SpikeBinning(bin_ms=10))


def test_unequal_trials_without_window_are_nan_padded(tmp_path):
    trials = [{"start_time": 0.0, "stop_time": 0.1}, {"start_time": 1.0, "stop_time": 1.055},
              {"start_time": 2.0, "stop_time": 2.075}]
    spikes = [[0.005, 0.095, 1.001, 1.049, 1.052, 2.07]]
    write_nwb(tmp_path / "s.nwb", spikes, trials)
    dataset = read_nwb_spikes(tmp_path / "s.nwb", SpikeBinning(bin_ms=20))
    np.testing.assert_array_equal(dataset.attrs["trial_num_samples"], [5, 2, 3])  # whole 20 ms bins only
    expected = np.full((3, 5), np.nan)
    expected[0] = [1, 0, 0, 0, 1]
    expected[1, :2] = [1, 0]  # 1.049 and 1.052 lie past the last whole bin (1.04 s)
    expected[2, :3] = [0, 0, 0]  # 2.07 lies in the partial bin 2.06-2.075
    np.testing.assert_array_equal(dataset.data[..., 0], expected)


def test_trial_shorter_than_one_bin_is_an_error(tmp_path):
    write_nwb(tmp_path / "s.nwb", [[0.01]], [{"start_time": 0.0, "stop_time": 0.5},
                                             {"start_time": 1.0, "stop_time": 1.01}])
    with pytest.raises(NeurodynError, match=r"trial id 1 lasts 10 ms .* less than one 20 ms bin"):
        read_nwb_spikes(tmp_path / "s.nwb", SpikeBinning(bin_ms=20))


def test_nan_alignment_trials_are_skipped(tmp_path):
    spikes, trials = session(2)
    trials[2]["go_cue_time"] = np.nan  # e.g. a trial the animal aborted
    write_nwb(tmp_path / "s.nwb", spikes, trials, extra_columns=("go_cue_time", "reach"))
    dataset = read_nwb_spikes(tmp_path / "s.nwb", SpikeBinning(bin_ms=25, align="go_cue_time", window_ms=(-100, 200)))
    assert dataset.num_trials == 5
    np.testing.assert_array_equal(dataset.attrs["trial_ids"], [0, 1, 3, 4, 5])
    np.testing.assert_array_equal(dataset.attrs["skipped_trial_ids"], [2])


def test_string_condition_column_is_numbered(tmp_path):
    spikes, trials = session(3)
    write_nwb(tmp_path / "s.nwb", spikes, trials, extra_columns=("go_cue_time", "reach"))
    dataset = read_nwb_spikes(tmp_path / "s.nwb", SpikeBinning(bin_ms=20, window_ms=(0, 200), condition_column="reach"))
    assert dataset.attrs["condition_names"] == ["left", "right", "up"]
    np.testing.assert_array_equal(dataset.condition, [0, 1, 2, 0, 1, 2])


def test_obs_intervals_mark_unrecorded_bins_nan(tmp_path):
    trials = [{"start_time": 0.0, "stop_time": 1.0}, {"start_time": 2.0, "stop_time": 3.0}]
    spikes = [[0.01, 2.01], [0.02, 2.5]]
    # unit 1 was only recorded until 2.1 s
    write_nwb(tmp_path / "s.nwb", spikes, trials, obs_intervals=[[[0.0, 10.0]], [[0.0, 2.1]]])
    dataset = read_nwb_spikes(tmp_path / "s.nwb", SpikeBinning(bin_ms=100, window_ms=(0, 1000)))
    assert not np.isnan(dataset.data[..., 0]).any()
    assert not np.isnan(dataset.data[0, :, 1]).any()
    assert not np.isnan(dataset.data[1, 0, 1]) and np.isnan(dataset.data[1, 1:, 1]).all()


@pytest.mark.parametrize("binning, message", [
    (SpikeBinning(bin_ms=20, align="move_onset_time"), r"s\.nwb: trials table has no column 'move_onset_time'"),
    (SpikeBinning(bin_ms=20, align="reach"), r"trials column 'reach' is not numeric"),
    (SpikeBinning(bin_ms=30, window_ms=(-250, 450)), r"not a whole number of 30 ms bins"),
    (SpikeBinning(bin_ms=0), r"positive number of ms"),
])
def test_bad_settings(tmp_path, binning, message):
    spikes, trials = session()
    write_nwb(tmp_path / "s.nwb", spikes, trials, extra_columns=("go_cue_time", "reach"))
    with pytest.raises(NeurodynError, match=message):
        read_nwb_spikes(tmp_path / "s.nwb", binning)


def test_missing_tables_and_not_nwb(tmp_path):
    write_nwb(tmp_path / "no_trials.nwb", [[0.1]], [])
    with pytest.raises(NeurodynError, match=r"no_trials\.nwb: no trials table"):
        read_nwb_spikes(tmp_path / "no_trials.nwb", SpikeBinning(bin_ms=20))
    write_nwb(tmp_path / "no_units.nwb", [], [{"start_time": 0.0, "stop_time": 1.0}])
    with pytest.raises(NeurodynError, match=r"no_units\.nwb: no Units table"):
        read_nwb_spikes(tmp_path / "no_units.nwb", SpikeBinning(bin_ms=20))
    (tmp_path / "text.nwb").write_text("hello")
    with pytest.raises(NeurodynError, match=r"text\.nwb: cannot read as an NWB file"):
        read_nwb_spikes(tmp_path / "text.nwb", SpikeBinning(bin_ms=20))


def test_heldout_split_is_written_and_read_back(tmp_path):
    spikes, trials = session(4, num_units=10)
    write_nwb(tmp_path / "s.nwb", spikes, trials, extra_columns=("go_cue_time", "reach"))
    binning = SpikeBinning(bin_ms=20, window_ms=(0, 600))
    dataset, heldout = prepare_nwb_spikes(tmp_path / "s.nwb", tmp_path / "a.h5", binning, heldout_fraction=0.3, seed=7)
    assert heldout.size == 3 and np.all(np.diff(heldout) > 0)
    np.testing.assert_array_equal(read_dataset(tmp_path / "a.h5").heldout_neurons, heldout)
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert f["heldout_neurons"].dtype == np.int64 and f["heldout_neurons"].shape == (3,)
    np.testing.assert_array_equal(read_dataset(tmp_path / "a.h5").data, dataset.data)  # old reader unaffected
    # same seed -> same split; given indices are written as given
    np.testing.assert_array_equal(choose_heldout_neurons(10, 0.3, 7), heldout)
    prepare_nwb_spikes(tmp_path / "s.nwb", tmp_path / "b.h5", binning, heldout_neurons=[0, 9])
    np.testing.assert_array_equal(read_dataset(tmp_path / "b.h5").heldout_neurons, [0, 9])
    prepare_nwb_spikes(tmp_path / "s.nwb", tmp_path / "c.h5", binning)
    assert read_dataset(tmp_path / "c.h5").heldout_neurons is None


def test_bad_heldout_indices_write_nothing(tmp_path):
    spikes, trials = session(5)
    write_nwb(tmp_path / "s.nwb", spikes, trials, extra_columns=("go_cue_time", "reach"))
    with pytest.raises(NeurodynError, match=r"'heldout_neurons' holds indices outside 0\.\.4"):
        prepare_nwb_spikes(tmp_path / "s.nwb", tmp_path / "out.h5", SpikeBinning(bin_ms=20), heldout_neurons=[1, 5])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.nwb"]
    with pytest.raises(NeurodynError, match=r"held-out fraction 0.05 of 5 neurons holds out 0"):
        choose_heldout_neurons(5, 0.05, 0)


def test_cli_prepare_nwb(tmp_path, capsys):
    spikes, trials = session(6)
    write_nwb(tmp_path / "s.nwb", spikes, trials, extra_columns=("go_cue_time", "reach"))
    code = main(["prepare", "nwb", str(tmp_path / "s.nwb"), str(tmp_path / "run_data.h5"), "--bin-ms", "20",
                 "--align", "go_cue_time", "--window", "-250", "450", "--condition", "reach",
                 "--heldout-neurons", "1,3"])
    assert code == 0
    out = capsys.readouterr().out
    assert "6 trials x 35 bins of 20 ms x 5 units" in out and "held-out neurons (2): 1, 3" in out
    dataset = read_dataset(tmp_path / "run_data.h5")
    assert dataset.attrs["align"] == "go_cue_time" and dataset.condition.tolist() == [0, 1, 2, 0, 1, 2]
    assert main(["prepare", "nwb", str(tmp_path / "s.nwb"), str(tmp_path / "x.h5"), "--bin-ms", "20",
                 "--heldout-neurons", "a,b"]) == 2
    assert "--heldout-neurons expects comma-separated integers" in capsys.readouterr().err


def test_a_missing_trials_column_lists_each_column_once(tmp_path):
    spikes, trials = session()
    write_nwb(tmp_path / "s.nwb", spikes, trials, extra_columns=("go_cue_time", "reach"))
    with pytest.raises(NeurodynError) as error:
        read_nwb_spikes(tmp_path / "s.nwb", SpikeBinning(bin_ms=20, align="move_onset_time"))
    listed = str(error.value).split("columns: ")[1]
    assert listed.count("'start_time'") == 1 and listed.count("'stop_time'") == 1 and "'go_cue_time'" in listed


# --- NLB's layout: held-out flag and trial roles ---------------------------------------------------


def test_nlb_layout_keeps_the_heldout_flag_and_trial_roles_and_withholds_test_heldout_counts(tmp_path, capsys):
    spikes, trials = session(num_units=4, num_trials=6)
    for trial, role in zip(trials, ["train", "val", "test", "none", "train", "test"]):
        trial["split"] = role
    path = tmp_path / "nlb.nwb"
    nwbfile = pynwb.NWBFile(session_description="test", identifier="nlb",
                            session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    for name in ("go_cue_time", "reach", "split"):
        nwbfile.add_trial_column(name=name, description=name)
    for trial in trials:
        nwbfile.add_trial(**trial)
    nwbfile.add_unit_column(name="heldout", description="NLB held-out flag")
    for index, times in enumerate(spikes):
        nwbfile.add_unit(spike_times=list(times), id=100 + index, heldout=index in (1, 3))
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    out = tmp_path / "nlb_data.h5"
    assert main(["prepare", "nwb", str(path), str(out), "--bin-ms", "20", "--align", "go_cue_time",
                 "--window", "-100", "300"]) == 0
    printed = capsys.readouterr().out
    assert "held-out neurons (2) (the Units table's 'heldout' column, NLB's): 1, 3" in printed
    assert "2 train, 1 valid, 2 test" in printed
    dataset = read_dataset(out)
    kept = [0, 1, 2, 4, 5]  # trial 3 is NLB's 'none'
    assert dataset.split.tolist() == ["train", "valid", "test", "train", "test"]
    assert dataset.heldout_neurons.tolist() == [1, 3]
    align = np.array([trials[k]["go_cue_time"] for k in kept])
    expected = hand_count(spikes, align, -100, 20, 20)
    test = dataset.split == "test"
    assert np.isnan(dataset.data[test][..., [1, 3]]).all()
    np.testing.assert_array_equal(dataset.data[test][..., [0, 2]], expected[test][..., [0, 2]])
    np.testing.assert_array_equal(dataset.data[~test], expected[~test])
    assert dataset.attrs["skipped_trial_ids"] == [3]
    # A held-out choice of the user's own wins over NLB's flag.
    assert main(["prepare", "nwb", str(path), str(tmp_path / "own.h5"), "--bin-ms", "20", "--align", "go_cue_time",
                 "--window", "-100", "300", "--heldout-neurons", "0"]) == 0
    assert read_dataset(tmp_path / "own.h5").heldout_neurons.tolist() == [0]


def test_the_published_nlb_test_phase_file_keeps_its_trial_roles(shared_data, tmp_path, capsys):
    nwb = shared_data / "nlb_mc_maze_small" / "sub-Jenkins_ses-small_desc-test_ecephys.nwb"
    out = tmp_path / "test_phase.h5"
    assert main(["prepare", "nwb", str(nwb), str(out), "--bin-ms", "5", "--align", "move_onset_time",
                 "--window", "-250", "450"]) == 0
    assert "0 train, 0 valid, 100 test" in capsys.readouterr().out
    dataset = read_dataset(out)
    assert dataset.data.shape == (100, 140, 107) and dataset.heldout_neurons is None
    assert (dataset.split == "test").all() and not np.isnan(dataset.data).any()
    assert dataset.attrs["window_start_ms"] == -250 and dataset.attrs["align"] == "move_onset_time"
