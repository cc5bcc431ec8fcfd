"""Export: NLB submission accepted by nlb_tools' evaluate; run results inside a copy of the input NWB file."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import h5py
import numpy as np
import pytest

pynwb = pytest.importorskip("pynwb")

from neurodyn.cli.main import main  # noqa: E402
from neurodyn.data.nwb_spikes import SpikeBinning, prepare_nwb_spikes  # noqa: E402
from neurodyn.data.seed_format import read_dataset  # noqa: E402
from neurodyn.errors import NeurodynError  # noqa: E402
from neurodyn.evaluate.cobps import co_bps  # noqa: E402
from neurodyn.evaluate.export import export_run_to_nwb, read_run_arrays, write_nlb_submission  # noqa: E402

NUM_UNITS, NUM_TRIALS, BIN_MS, WINDOW = 8, 10, 20, (-100, 300)
NUM_BINS = (WINDOW[1] - WINDOW[0]) // BIN_MS


def write_session_nwb(path, seed=0):
    rng = np.random.default_rng(seed)
    nwbfile = pynwb.NWBFile(session_description="export test", identifier="export-test",
                            session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    nwbfile.add_trial_column(name="go_cue_time", description="go cue")
    for k in range(NUM_TRIALS):
        start = 1.0 + 1.0 * k
        nwbfile.add_trial(start_time=start, stop_time=start + 0.8, go_cue_time=start + 0.2 + 0.01 * k)
    for _ in range(NUM_UNITS):
        nwbfile.add_unit(spike_times=np.sort(rng.uniform(0.0, NUM_TRIALS + 2.0, 200)))
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)


def write_fake_run(run_dir, num_trials, num_bins, num_neurons, seed=0, valid=(1, 4, 7), extra=True,
                   observation=None):
    """Output files as `neurodyn train` writes them: (dim, samples, n) + trial_idx; valid trials shuffled.
    ``observation`` 'gaussian': also each channel's ``std`` and the attribute naming the model."""
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.05, 1.5, (num_trials, num_bins, num_neurons))
    factors = rng.standard_normal((num_trials, num_bins, 3))
    run_dir.mkdir(parents=True, exist_ok=True)
    valid_idx = np.array(valid[::-1])  # deliberately not sorted
    train_idx = np.setdiff1d(np.arange(num_trials), valid_idx)
    for name, idx in (("train_output.h5", train_idx), ("valid_output.h5", valid_idx)):
        with h5py.File(run_dir / name, "w") as f:
            f["rates"] = np.transpose(rates[idx])
            f["factors"] = np.transpose(factors[idx])
            if extra:
                f["latents"] = np.transpose(factors[idx, :, :2] * 2)
                f["rates_posterior_mean"] = np.transpose(rates[idx] * 0.9)
            f["trial_idx"] = idx.astype(np.int64)
            if observation is not None:
                f.attrs["observation"] = observation
                f["std"] = np.transpose(np.broadcast_to(np.linspace(0.5, 1.0, num_neurons), rates[idx].shape))
    return rates, factors, train_idx, np.sort(valid_idx)


@pytest.fixture
def prepared(tmp_path):
    write_session_nwb(tmp_path / "session.nwb")
    binning = SpikeBinning(bin_ms=BIN_MS, align="go_cue_time", window_ms=WINDOW)
    prepare_nwb_spikes(tmp_path / "session.nwb", tmp_path / "run_data.h5", binning, heldout_neurons=[2, 5, 6])
    return tmp_path


# ---------------------------------------------------------------------------------------------
# NLB


def test_nlb_submission_is_scored_by_nlb_tools(prepared):
    nlb_evaluation = pytest.importorskip("nlb_tools.evaluation", reason="pip install --no-deps nlb-tools")
    dataset = read_dataset(prepared / "run_data.h5")
    rates, _, train_idx, valid_idx = write_fake_run(prepared / "run", NUM_TRIALS, NUM_BINS, NUM_UNITS)
    shapes = write_nlb_submission(prepared / "run", prepared / "run_data.h5", prepared / "submission.h5", "mc_maze_20")
    assert shapes["mc_maze_20/eval_rates_heldout"] == (len(valid_idx), NUM_BINS, 3)
    assert shapes["mc_maze_20/train_rates_heldin"] == (len(train_idx), NUM_BINS, NUM_UNITS - 3)

    heldout, heldin = [2, 5, 6], [0, 1, 3, 4, 7]
    with h5py.File(prepared / "submission.h5", "r") as f:
        np.testing.assert_allclose(f["mc_maze_20/eval_rates_heldout"][()], rates[valid_idx][..., heldout], rtol=1e-6)
        np.testing.assert_allclose(f["mc_maze_20/train_rates_heldin"][()], rates[train_idx][..., heldin], rtol=1e-6)
    rng = np.random.default_rng(1)
    target = {"mc_maze_20": {
        "eval_spikes_heldout": dataset.data[valid_idx][..., heldout],
        "train_behavior": rng.standard_normal((len(train_idx), NUM_BINS, 2)),
        "eval_behavior": rng.standard_normal((len(valid_idx), NUM_BINS, 2)),
    }}
    result = nlb_evaluation.evaluate(target, str(prepared / "submission.h5"))
    scores = result[0]["mc_maze_20_split"]
    expected = co_bps(rates[valid_idx].astype(np.float32).astype(np.float64), dataset.data[valid_idx], heldout)
    assert scores["co-bps"] == pytest.approx(expected, rel=1e-6)
    assert "vel R2" in scores


def test_nlb_submission_of_a_forward_prediction_run_is_scored_by_nlb_tools(prepared):
    """A run with forward_bins 5: its last 5 bins are NLB's *_forward arrays, scored as fp-bps."""
    nlb_evaluation = pytest.importorskip("nlb_tools.evaluation", reason="pip install --no-deps nlb-tools")
    from neurodyn.evaluate.fpbps import fp_bps

    dataset = read_dataset(prepared / "run_data.h5")
    rates, _, train_idx, valid_idx = write_fake_run(prepared / "run", NUM_TRIALS, NUM_BINS, NUM_UNITS)
    for name in ("train_output.h5", "valid_output.h5"):
        with h5py.File(prepared / "run" / name, "a") as f:
            f.attrs["forward_bins"] = 5
    shapes = write_nlb_submission(prepared / "run", prepared / "run_data.h5", prepared / "submission.h5", "mc_maze_20")
    seen = NUM_BINS - 5
    assert shapes["mc_maze_20/eval_rates_heldout"] == (len(valid_idx), seen, 3)
    assert shapes["mc_maze_20/train_rates_heldin"] == (len(train_idx), seen, NUM_UNITS - 3)
    assert shapes["mc_maze_20/eval_rates_heldin_forward"] == (len(valid_idx), 5, NUM_UNITS - 3)
    assert shapes["mc_maze_20/eval_rates_heldout_forward"] == (len(valid_idx), 5, 3)
    assert not any(key.startswith("mc_maze_20/train") and key.endswith("_forward") for key in shapes)

    heldout, heldin = [2, 5, 6], [0, 1, 3, 4, 7]
    spikes = dataset.data[valid_idx]
    rng = np.random.default_rng(1)
    target = {"mc_maze_20": {
        "eval_spikes_heldout": spikes[:, :seen][..., heldout],
        "eval_spikes_heldin_forward": spikes[:, seen:][..., heldin],
        "eval_spikes_heldout_forward": spikes[:, seen:][..., heldout],
        "train_behavior": rng.standard_normal((len(train_idx), seen, 2)),
        "eval_behavior": rng.standard_normal((len(valid_idx), seen, 2)),
    }}
    scores = nlb_evaluation.evaluate(target, str(prepared / "submission.h5"))[0]["mc_maze_20_split"]
    submitted = rates[valid_idx].astype(np.float32).astype(np.float64)
    assert scores["fp-bps"] == pytest.approx(fp_bps(submitted, spikes, 5), rel=1e-6)
    assert scores["co-bps"] == pytest.approx(co_bps(submitted[:, :seen], spikes[:, :seen], heldout), rel=1e-6)


def test_nlb_needs_heldout_neurons_and_matching_bins(tmp_path, prepared):
    write_fake_run(prepared / "run", NUM_TRIALS, NUM_BINS, NUM_UNITS)
    with pytest.raises(NeurodynError, match=r"bins of 20 ms, but NLB's 'mc_maze' is scored at 5 ms"):
        write_nlb_submission(prepared / "run", prepared / "run_data.h5", prepared / "sub.h5", "mc_maze")
    binning = SpikeBinning(bin_ms=BIN_MS, align="go_cue_time", window_ms=WINDOW)
    prepare_nwb_spikes(prepared / "session.nwb", prepared / "plain_data.h5", binning)
    with pytest.raises(NeurodynError, match=r"plain_data\.h5: no key 'heldout_neurons'"):
        write_nlb_submission(prepared / "run", prepared / "plain_data.h5", prepared / "sub.h5", "my_set")
    assert not (prepared / "sub.h5").exists()


def test_cli_export_nlb(prepared, capsys):
    write_fake_run(prepared / "run", NUM_TRIALS, NUM_BINS, NUM_UNITS)
    code = main(["export", "nlb", str(prepared / "run"), "--data", str(prepared / "run_data.h5"),
                 str(prepared / "sub.h5"), "--dataset", "mc_maze_20"])
    assert code == 0
    out = capsys.readouterr().out
    assert "mc_maze_20/eval_rates_heldout (3, 20, 3)" in out and "note:" not in out
    # A run that records another data file than --data: the export says so.
    (prepared / "run" / "run.json").write_text(json.dumps(
        {"kind": "train", "status": "finished", "data_path": "other.h5", "data_sha256": "0" * 64}))
    assert main(["export", "nlb", str(prepared / "run"), "--data", str(prepared / "run_data.h5"),
                 str(prepared / "sub2.h5"), "--dataset", "mc_maze_20"]) == 0
    assert "note: " in (out := capsys.readouterr().out) and "is not the file this run was trained on (other.h5" in out


# ---------------------------------------------------------------------------------------------
# NWB


def test_run_arrays_merge_splits_in_data_file_order(prepared):
    rates, factors, _, valid_idx = write_fake_run(prepared / "run", NUM_TRIALS, NUM_BINS, NUM_UNITS)
    run = read_run_arrays(prepared / "run")
    np.testing.assert_array_equal(run.trial_idx, np.arange(NUM_TRIALS))
    np.testing.assert_allclose(run.arrays["rates"], rates)
    np.testing.assert_allclose(run.arrays["latents"], factors[..., :2] * 2)
    assert [k for k in range(NUM_TRIALS) if run.split[k] == "valid"] == valid_idx.tolist()


def test_nwb_export_adds_a_processing_module_to_a_copy(prepared):
    rates, factors, _, _ = write_fake_run(prepared / "run", NUM_TRIALS, NUM_BINS, NUM_UNITS)
    original = (prepared / "session.nwb").read_bytes()
    written = export_run_to_nwb(prepared / "run", prepared / "run_data.h5", prepared / "session.nwb",
                                prepared / "results.nwb")
    assert sorted(written) == ["factors", "latents", "rates", "rates_posterior_mean"]
    assert (prepared / "session.nwb").read_bytes() == original  # the input is never modified

    with pynwb.NWBHDF5IO(str(prepared / "results.nwb"), "r") as io:
        nwbfile = io.read()
        module = nwbfile.processing["neurodyn"]
        series = module["rates"]
        np.testing.assert_allclose(series.data[:], rates.reshape(-1, NUM_UNITS))
        np.testing.assert_allclose(module["factors"].data[:], factors.reshape(-1, 3))
        assert module["latents"].data.shape == (NUM_TRIALS * NUM_BINS, 2)
        # bin centres: go cue + window start + (k + 1/2) bins, from the NWB trials table itself
        go_cue = nwbfile.trials["go_cue_time"].data[:]
        expected = go_cue[:, None] + (WINDOW[0] + BIN_MS * (np.arange(NUM_BINS) + 0.5))[None, :] / 1000
        np.testing.assert_allclose(series.timestamps[:], expected.reshape(-1), atol=1e-9)
        np.testing.assert_array_equal(series.control[:], np.repeat(np.arange(NUM_TRIALS), NUM_BINS))
        assert series.unit == "expected count per bin"
        assert module["rates_posterior_mean"].unit == "expected count per bin"
        assert module["factors"].unit == "a.u."
        assert len(nwbfile.units) == NUM_UNITS  # the original content is still there


def test_nwb_export_of_a_continuous_signal_model_names_the_datas_units(prepared):
    write_fake_run(prepared / "run", NUM_TRIALS, NUM_BINS, NUM_UNITS, observation="gaussian")
    written = export_run_to_nwb(prepared / "run", prepared / "run_data.h5", prepared / "session.nwb",
                                prepared / "results.nwb")
    assert "std" in written
    with pynwb.NWBHDF5IO(str(prepared / "results.nwb"), "r") as io:
        module = io.read().processing["neurodyn"]
        assert module["rates"].unit == module["std"].unit == "units of the data"
        assert module["factors"].unit == "a.u."


def test_nwb_export_refuses_existing_module_and_missing_timing(prepared, tmp_path):
    write_fake_run(prepared / "run", NUM_TRIALS, NUM_BINS, NUM_UNITS, extra=False)
    export_run_to_nwb(prepared / "run", prepared / "run_data.h5", prepared / "session.nwb", prepared / "once.nwb")
    with pytest.raises(NeurodynError, match=r"once\.nwb: already has a processing module 'neurodyn'"):
        export_run_to_nwb(prepared / "run", prepared / "run_data.h5", prepared / "once.nwb", prepared / "twice.nwb")
    assert not (prepared / "twice.nwb").exists()
    with h5py.File(prepared / "bare_data.h5", "w") as f:
        f["data"] = np.zeros((NUM_UNITS, NUM_BINS, NUM_TRIALS))
    with pytest.raises(NeurodynError, match=r"bare_data\.h5: missing attribute\(s\) align_times_s, window_start_ms, bin_ms"):
        export_run_to_nwb(prepared / "run", prepared / "bare_data.h5", prepared / "session.nwb", prepared / "x.nwb")
    with pytest.raises(NeurodynError, match="choose an output path other than the input"):
        export_run_to_nwb(prepared / "run", prepared / "run_data.h5", prepared / "session.nwb", prepared / "session.nwb")


def test_cli_export_nwb(prepared, capsys):
    write_fake_run(prepared / "run", NUM_TRIALS, NUM_BINS, NUM_UNITS)
    code = main(["export", "nwb", str(prepared / "run"), "--data", str(prepared / "run_data.h5"),
                 "--nwb", str(prepared / "session.nwb"), str(prepared / "out.nwb")])
    assert code == 0
    assert "processing module 'neurodyn'" in capsys.readouterr().out
    assert main(["export", "nwb", str(prepared / "missing_run"), "--data", str(prepared / "run_data.h5"),
                 "--nwb", str(prepared / "session.nwb"), str(prepared / "out2.nwb")]) == 2
