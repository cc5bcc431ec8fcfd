"""evaluate_run / read_run_outputs / the CLI on hand-built run directories and data files."""

from __future__ import annotations

import argparse
import json
import warnings

import h5py
import numpy as np
import pytest

from neurodyn.cli import evaluate_commands
from neurodyn.errors import NeurodynError
from neurodyn.evaluate.metrics import bits_per_spike, map_to_latents, rate_r2
from neurodyn.evaluate.report import evaluate_run, format_metrics
from neurodyn.runs.outputs import read_run_outputs

NUM_TRIALS, NUM_SAMPLES, NUM_NEURONS, NUM_LATENTS, NUM_FACTORS = 24, 20, 8, 3, 4
EXPECTED_KEYS = {
    "rate_r2", "bits_per_spike", "co_bps", "fp_bps", "latent_r2", "latent_r2_per_dim", "latent_ridge_alpha", "num_train_trials",
    "num_valid_trials", "num_neurons", "num_samples", "run_dir", "output_dir", "data_path", "evaluation_json",
    "figure", "summary_figure", "notes", "vel_r2", "vel_lag_ms", "psth_r2", "psth_reference", "nlb_not_computed",
    "observed_r2", "co_r2", "gaussian_ll",
}


def _to_file_layout(x: np.ndarray) -> np.ndarray:
    """Trials-first ``(trials, samples, dim)`` -> the h5 layout ``(dim, samples, trials)``."""
    return np.ascontiguousarray(np.transpose(x))


def _write_h5(path, **arrays) -> None:
    with h5py.File(path, "w") as f:
        for name, value in arrays.items():
            f.create_dataset(name, data=value)


@pytest.fixture
def synthetic(tmp_path):
    """A data file with truth + latents and a run dir whose rates are a noisy copy of the truth.

    Returns a dict of the trials-first arrays and the paths, so tests can recompute every metric
    directly from the arrays (independently of the readers)."""
    rng = np.random.default_rng(1)
    time = np.linspace(0, 2 * np.pi, NUM_SAMPLES)
    phase = rng.uniform(0, 2 * np.pi, size=(NUM_TRIALS, 1, NUM_LATENTS))
    latents = np.sin(time[None, :, None] * np.arange(1, NUM_LATENTS + 1) + phase)
    truth = np.exp(latents @ rng.normal(0, 0.7, size=(NUM_LATENTS, NUM_NEURONS)) + 0.5)
    data = rng.poisson(truth).astype(float)
    data[rng.random(data.shape) < 0.4] = np.nan  # SBTT-style unobserved entries
    condition = np.arange(NUM_TRIALS) % 6
    # The dataset reader keeps float32; storing float32 here lets the tests use the exact arrays.
    latents, truth = latents.astype(np.float32), truth.astype(np.float32)
    inferred = truth * rng.uniform(0.7, 1.3, size=truth.shape)

    order = rng.permutation(NUM_TRIALS)  # shuffled split: catches trial-index mix-ups
    train_idx, valid_idx = order[:16], order[16:]
    data_path = tmp_path / "data.h5"
    _write_h5(data_path, data=_to_file_layout(data), truth=_to_file_layout(truth),
              latents=_to_file_layout(latents), condition=condition)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for split, idx in (("train", train_idx), ("valid", valid_idx)):
        factors = rng.normal(size=(idx.size, NUM_SAMPLES, NUM_FACTORS))
        _write_h5(run_dir / f"{split}_output.h5", rates=_to_file_layout(inferred[idx]),
                  factors=_to_file_layout(factors), trial_idx=idx, q=np.ones(NUM_NEURONS))
    return dict(data=data, truth=truth, latents=latents, inferred=inferred, train_idx=train_idx,
                valid_idx=valid_idx, data_path=data_path, run_dir=run_dir)


def test_read_run_outputs_transposes_to_trials_first(synthetic):
    outputs = read_run_outputs(synthetic["run_dir"])
    assert set(outputs) == {"train", "valid"}
    np.testing.assert_array_equal(outputs["valid"].trial_idx, synthetic["valid_idx"])
    np.testing.assert_allclose(outputs["valid"].rates, synthetic["inferred"][synthetic["valid_idx"]])
    assert outputs["train"].factors.shape == (synthetic["train_idx"].size, NUM_SAMPLES, NUM_FACTORS)


def test_evaluate_run_writes_json_and_png_with_metric_values(synthetic):
    s = synthetic
    result = evaluate_run(s["run_dir"], s["data_path"])

    assert set(result) == EXPECTED_KEYS
    json_path = s["run_dir"] / "evaluation.json"
    assert json.loads(json_path.read_text()) == result
    png = s["run_dir"] / "evaluation.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in s["run_dir"].iterdir()) == [  # no temp files left behind
        "evaluation.json", "evaluation.png", "evaluation_summary.png", "train_output.h5", "valid_output.h5"]
    assert (s["run_dir"] / "evaluation_summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    valid, train = s["valid_idx"], s["train_idx"]
    assert result["num_valid_trials"] == valid.size and result["num_train_trials"] == train.size
    assert result["rate_r2"] == pytest.approx(rate_r2(s["truth"][valid], s["inferred"][valid]), rel=1e-12)
    assert result["bits_per_spike"] == pytest.approx(
        bits_per_spike(s["inferred"][valid], s["data"][valid]), rel=1e-12)
    mapping = map_to_latents(s["inferred"][train], s["latents"][train], s["inferred"][valid], s["latents"][valid])
    assert result["latent_r2"] == pytest.approx(mapping.r2, rel=1e-12)
    np.testing.assert_allclose(result["latent_r2_per_dim"], mapping.r2_per_dim, rtol=1e-12)
    assert result["latent_ridge_alpha"] == mapping.alpha
    assert result["fp_bps"] is None
    assert result["notes"] == []
    # The fixture has condition labels and true rates but neither behaviour nor held-out neurons, and the
    # run has no forward window.
    assert result["psth_reference"] == "truth" and result["psth_r2"] is not None and result["vel_r2"] is None
    assert set(result["nlb_not_computed"]) == {"co_bps", "vel_r2", "fp_bps"}

    text = format_metrics(result)
    assert f"{result['rate_r2']:.4f}" in text and f"{result['bits_per_spike']:.4f}" in text


def test_evaluate_run_compares_rates_with_the_data_moved_by_the_runs_event_delay(synthetic):
    s = synthetic
    valid = s["valid_idx"]
    with h5py.File(s["run_dir"] / "valid_output.h5", "a") as f:
        f.attrs["event_delay_bins"] = 3  # the model's rates at bin t were fit to the data of bin t + 3
    result = evaluate_run(s["run_dir"], s["data_path"])
    moved = np.full_like(s["data"][valid], np.nan)
    moved[:, :-3] = s["data"][valid][:, 3:]
    assert result["bits_per_spike"] == pytest.approx(bits_per_spike(s["inferred"][valid], moved), rel=1e-12)
    assert result["bits_per_spike"] != pytest.approx(bits_per_spike(s["inferred"][valid], s["data"][valid]), rel=1e-6)


def test_evaluate_run_accepts_pbt_results_dir_and_figure_path(synthetic, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    synthetic["run_dir"].rename(results / "pbt_best_model")
    figure = tmp_path / "figs" / "example.png"
    result = evaluate_run(results, synthetic["data_path"], figure_path=figure)
    assert result["output_dir"] == str(results / "pbt_best_model")
    assert figure.read_bytes()[:4] == b"\x89PNG"
    assert (results / "evaluation.json").is_file()
    valid = synthetic["valid_idx"]
    assert result["rate_r2"] == pytest.approx(rate_r2(synthetic["truth"][valid], synthetic["inferred"][valid]))


def test_metrics_without_ground_truth_are_skipped_with_notes(synthetic, tmp_path):
    bare = tmp_path / "bare.h5"
    _write_h5(bare, data=_to_file_layout(synthetic["data"]))
    result = evaluate_run(synthetic["run_dir"], bare)
    assert result["rate_r2"] is None and result["latent_r2"] is None and result["latent_r2_per_dim"] is None
    assert result["bits_per_spike"] is not None
    assert any("truth" in note for note in result["notes"])
    assert any("latents" in note for note in result["notes"])
    assert json.loads((synthetic["run_dir"] / "evaluation.json").read_text())["rate_r2"] is None
    assert "skipped" in format_metrics(result)


def test_bits_per_spike_skipped_for_non_count_data(synthetic, tmp_path):
    events = synthetic["data"] * 0.37  # continuous event sizes (calcium), not spike counts
    path = tmp_path / "events.h5"
    _write_h5(path, data=_to_file_layout(events), truth=_to_file_layout(synthetic["truth"]))
    result = evaluate_run(synthetic["run_dir"], path)
    assert result["bits_per_spike"] is None
    assert any("bits per spike" in note for note in result["notes"])
    assert result["rate_r2"] is not None


def test_missing_output_file_names_the_file(synthetic):
    (synthetic["run_dir"] / "valid_output.h5").unlink()
    with pytest.raises(NeurodynError, match="valid_output.h5"):
        evaluate_run(synthetic["run_dir"], synthetic["data_path"])


def test_missing_key_names_the_file_and_key(synthetic):
    path = synthetic["run_dir"] / "train_output.h5"
    with h5py.File(path, "a") as f:
        del f["rates"]
    with pytest.raises(NeurodynError, match=r"train_output\.h5.*'rates'"):
        read_run_outputs(synthetic["run_dir"])


def test_trial_indices_outside_the_data_file_are_an_error(synthetic, tmp_path):
    small = tmp_path / "small.h5"
    _write_h5(small, data=_to_file_layout(synthetic["data"][:10]))
    with pytest.raises(NeurodynError, match="trial_idx"):
        evaluate_run(synthetic["run_dir"], small)


def test_cli_evaluate_prints_metrics(synthetic, capsys):
    parser = argparse.ArgumentParser()
    evaluate_commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", str(synthetic["run_dir"]), "--data", str(synthetic["data_path"])])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    saved = json.loads((synthetic["run_dir"] / "evaluation.json").read_text())
    assert f"{saved['latent_r2']:.4f}" in printed and "bits per spike" in printed


def test_figure_shows_one_trial_per_condition_labelled_by_data_file_row(synthetic):
    from neurodyn.evaluate.figures import pick_example_neurons, plot_inferred_vs_true

    s = synthetic
    rows = np.array([3, 4, 5, 6, 7])
    condition = np.array([0, 0, 1, 1, 2])  # the first trial of each condition: positions 0, 2, 4
    counts = s["data"][rows]
    fig = plot_inferred_vs_true(s["inferred"][rows], counts, true_rates=s["truth"][rows],
                                predicted_latents=s["latents"][rows], true_latents=s["latents"][rows],
                                condition=condition, trial_ids=rows, num_trials=3, num_neurons=2)
    assert len(fig.axes) == (2 + NUM_LATENTS) * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == [
        "trial 3 (condition 0)", "trial 5 (condition 1)", "trial 7 (condition 2)"]
    # The grey dots of the first panel are exactly the observed counts of that trial and neuron.
    neuron = pick_example_neurons(s["truth"][rows], 2)[0]
    dots = fig.axes[0].lines[0]
    observed = ~np.isnan(counts[0, :, neuron])
    np.testing.assert_array_equal(dots.get_xdata(), np.flatnonzero(observed))
    np.testing.assert_array_equal(dots.get_ydata(), counts[0, observed, neuron])


def test_map_to_latents_command_scores_test_trials_and_writes_json_and_figure(synthetic, capsys):
    from neurodyn.cli.main import main
    from neurodyn.evaluate.metrics import map_to_latents

    run_dir, data_path = synthetic["run_dir"], synthetic["data_path"]
    assert main(["map-to-latents", str(run_dir), "--data", str(data_path)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((run_dir / "map_to_latents.json").read_text())
    expected = map_to_latents(synthetic["inferred"][synthetic["train_idx"]], synthetic["latents"][synthetic["train_idx"]],
                              synthetic["inferred"][synthetic["valid_idx"]], synthetic["latents"][synthetic["valid_idx"]])
    assert saved["latent_r2"] == pytest.approx(expected.r2)
    np.testing.assert_allclose(saved["latent_r2_per_dim"], expected.r2_per_dim)
    assert saved["num_test_trials"] == len(synthetic["valid_idx"])
    assert f"{expected.r2:.4f}" in printed
    # No test split in this file: the printed line names the trials it scored as validation trials.
    assert saved["scored_split"] == "valid"
    assert f"train -> {len(synthetic['valid_idx'])} valid trials" in printed
    assert (run_dir / "map_to_latents.png").read_bytes()[:4] == b"\x89PNG"


def test_map_to_latents_without_latents_names_the_key(synthetic, tmp_path, capsys):
    from neurodyn.cli.main import main

    no_latents = tmp_path / "no_latents.h5"
    _write_h5(no_latents, data=_to_file_layout(synthetic["data"]))
    assert main(["map-to-latents", str(synthetic["run_dir"]), "--data", str(no_latents)]) == 2
    assert "'latents' is missing" in capsys.readouterr().err


# --- Neural Latents Benchmark: vel R^2, psth R^2 and the metrics a data file cannot give ---------------


def _with_behavior(synthetic, tmp_path, **extra):
    """The fixture's data file plus a behaviour that is a noisy linear readout of the true rates."""
    rng = np.random.default_rng(11)
    behavior = (synthetic["truth"] @ rng.normal(0, 1, (NUM_NEURONS, 2))
                + 0.3 * rng.standard_normal((NUM_TRIALS, NUM_SAMPLES, 2))).astype(np.float32)
    path = tmp_path / "with_behavior.h5"
    arrays = dict(data=_to_file_layout(synthetic["data"]), truth=_to_file_layout(synthetic["truth"]),
                  condition=np.arange(NUM_TRIALS) % 6, behavior=_to_file_layout(behavior))
    _write_h5(path, **{**arrays, **extra})
    return path, behavior


def _nlb_psth_r2(reference, condition, eval_rates, eval_condition):
    """nlb_tools' eval_psth, one neuron at a time (so each neuron leaves out the bins where its own target
    PSTH is undefined), averaged over neurons."""
    nlb_evaluation = pytest.importorskip("nlb_tools.evaluation")
    labels = np.unique(condition)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN entries of the target PSTH stay NaN
        psth = np.stack([np.nanmean(reference[condition == label].astype(np.float64), axis=0) for label in labels])
    eval_cond_idx = [np.flatnonzero(eval_condition == label) for label in labels]
    return np.mean([nlb_evaluation.eval_psth(psth[..., [n]], eval_rates[..., [n]], eval_cond_idx)
                    for n in range(psth.shape[-1])])


def test_vel_r2_and_psth_r2_match_nlb_tools_on_the_run_outputs(synthetic, tmp_path):
    nlb_evaluation = pytest.importorskip("nlb_tools.evaluation")
    s = synthetic
    path, behavior = _with_behavior(s, tmp_path)
    result = evaluate_run(s["run_dir"], path)
    train, valid = s["train_idx"], s["valid_idx"]  # the output files' trial order
    flat = lambda x: x.reshape(-1, x.shape[-1])  # noqa: E731
    expected_vel = nlb_evaluation.fit_and_eval_decoder(flat(s["inferred"][train]), flat(behavior[train]),
                                                       flat(s["inferred"][valid]), flat(behavior[valid]))
    assert result["vel_r2"] == pytest.approx(expected_vel, rel=1e-9)
    condition = np.arange(NUM_TRIALS) % 6
    # The target PSTHs average every trial of the file (NLB's PSTHs do); the rates only the valid ones.
    expected_psth = _nlb_psth_r2(s["truth"], condition, s["inferred"][valid], condition[valid])
    assert result["psth_r2"] == pytest.approx(expected_psth, rel=1e-9)
    assert result["psth_reference"] == "truth"
    assert set(result["nlb_not_computed"]) == {"co_bps", "fp_bps"}
    assert result["nlb_not_computed"]["co_bps"] == ("co-bps: the data file has no 'heldout_neurons' key (neurons "
                                                    "hidden from the encoder)")
    assert json.loads((s["run_dir"] / "evaluation.json").read_text())["vel_r2"] == result["vel_r2"]
    text = format_metrics(result)
    assert f"vel R^2 (ridge, train -> valid):       {result['vel_r2']:.4f}" in text
    assert f"psth R^2 (valid, vs truth PSTHs):      {result['psth_r2']:.4f}" in text
    assert "not computed (NLB): co-bps: the data file has no 'heldout_neurons' key" in text


def test_psth_r2_without_truth_compares_with_the_observed_counts(synthetic, tmp_path):
    s = synthetic
    path = tmp_path / "counts_only.h5"
    condition = np.arange(NUM_TRIALS) % 6
    _write_h5(path, data=_to_file_layout(s["data"]), condition=condition)
    result = evaluate_run(s["run_dir"], path)
    valid = s["valid_idx"]
    assert result["psth_reference"] == "data"
    # The data hold NaN (unobserved entries): each PSTH entry averages the trials that observed it, and
    # a few (condition, bin, neuron) entries were never observed.
    labels = np.unique(condition)
    never = np.stack([np.isnan(s["data"][condition == label]).all(axis=0) for label in labels])
    assert never.any() and not never.all(axis=-1).any()  # some neurons' bins, never a whole bin
    assert result["psth_r2"] == pytest.approx(_nlb_psth_r2(s["data"], condition, s["inferred"][valid],
                                                           condition[valid]), rel=1e-9)
    assert "psth R^2 (valid, vs data PSTHs):" in format_metrics(result)


def test_test_split_gets_vel_r2_fit_on_every_training_phase_trial_and_psth_r2(synthetic, tmp_path):
    nlb_evaluation = pytest.importorskip("nlb_tools.evaluation")
    from neurodyn.runs.outputs import write_split_output

    s = synthetic
    path, behavior = _with_behavior(s, tmp_path)
    test_idx = s["valid_idx"][:4]
    write_split_output(s["run_dir"] / "test_output.h5",
                       {"rates": s["inferred"][test_idx], "factors": np.zeros((4, NUM_SAMPLES, NUM_FACTORS))}, test_idx)
    result = evaluate_run(s["run_dir"], path)
    # As NLB: the decoder of the evaluation (test) trials is fit on the train and the valid trials.
    train = np.sort(np.concatenate([s["train_idx"], s["valid_idx"]]))  # in data-file order, as NLB's
    flat = lambda x: x.reshape(-1, x.shape[-1])  # noqa: E731
    expected_vel = nlb_evaluation.fit_and_eval_decoder(flat(s["inferred"][train]), flat(behavior[train]),
                                                       flat(s["inferred"][test_idx]), flat(behavior[test_idx]))
    assert result["test"]["vel_r2"] == pytest.approx(expected_vel, rel=1e-9)
    condition = np.arange(NUM_TRIALS) % 6
    assert result["test"]["psth_r2"] == pytest.approx(
        _nlb_psth_r2(s["truth"], condition, s["inferred"][test_idx], condition[test_idx]), rel=1e-9)
    text = format_metrics(result)
    assert f"vel R^2:       {result['test']['vel_r2']:.4f}" in text
    assert f"psth R^2:      {result['test']['psth_r2']:.4f}" in text


def test_nlb_metrics_the_data_file_cannot_give_are_listed_with_their_reason(synthetic, tmp_path):
    bare = tmp_path / "bare.h5"
    _write_h5(bare, data=_to_file_layout(synthetic["data"]))
    result = evaluate_run(synthetic["run_dir"], bare)
    assert result["vel_r2"] is None and result["psth_r2"] is None and result["psth_reference"] is None
    reasons = result["nlb_not_computed"]
    assert set(reasons) == {"co_bps", "vel_r2", "psth_r2", "fp_bps"}
    assert json.loads((synthetic["run_dir"] / "evaluation.json").read_text())["nlb_not_computed"] == reasons
    text = format_metrics(result)
    for line in ("not computed (NLB): co-bps: the data file has no 'heldout_neurons' key",
                 "not computed (NLB): vel R^2: the data file has no 'behavior' key",
                 "not computed (NLB): psth R^2: the data file has no 'condition' key",
                 "not computed (NLB): fp-bps: the run has no forward-prediction window"):
        assert line in text


def test_co_bps_is_not_listed_as_missing_when_the_file_holds_out_neurons(synthetic, tmp_path):
    path, _ = _with_behavior(synthetic, tmp_path, heldout_neurons=np.array([1, 5]))
    result = evaluate_run(synthetic["run_dir"], path)
    assert result["co_bps"] is not None and set(result["nlb_not_computed"]) == {"fp_bps"}


def test_scoring_another_file_than_the_runs_own_is_noted(synthetic, tmp_path, capsys):
    from neurodyn.cli.main import main
    from neurodyn.runs.identity import file_sha256

    run_dir, data_path = synthetic["run_dir"], synthetic["data_path"]
    (run_dir / "run.json").write_text(json.dumps(
        {"kind": "train", "status": "finished", "data_path": str(data_path), "data_sha256": file_sha256(data_path)}))
    assert not any("not the file" in note for note in evaluate_run(run_dir, data_path)["notes"])
    other = tmp_path / "other.h5"  # the same trials re-saved without their truth: another file
    _write_h5(other, data=_to_file_layout(synthetic["data"]), latents=_to_file_layout(synthetic["latents"]))
    result = evaluate_run(run_dir, other)
    assert f"{other} is not the file this run was trained on ({data_path};" in result["notes"][0]
    assert "not the file this run was trained on" in format_metrics(result)
    assert json.loads((run_dir / "evaluation.json").read_text())["notes"][0] == result["notes"][0]
    assert main(["map-to-latents", str(run_dir), "--data", str(other)]) == 0
    assert "note: " in capsys.readouterr().out
    assert main(["map-to-latents", str(run_dir), "--data", str(data_path)]) == 0
    assert "note: " not in capsys.readouterr().out
    (run_dir / "run.json").write_text("{damaged")  # nothing to compare with; scoring goes on
    assert not any("not the file" in note for note in evaluate_run(run_dir, other)["notes"])
    # A run of several sessions records one hash for all its files: nothing to compare a file with.
    (run_dir / "run.json").write_text(json.dumps(
        {"kind": "train", "status": "finished", "data_path": f"{data_path} + {other}", "data_sha256": "0" * 64}))
    assert not any("not the file" in note for note in evaluate_run(run_dir, other)["notes"])
