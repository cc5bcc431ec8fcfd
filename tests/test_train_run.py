"""``neurodyn train`` end to end: the files it writes, and a save/load round trip."""

import csv

import h5py
import numpy as np
import pytest
import yaml

from neurodyn.cli.main import main
from neurodyn.runs.outputs import read_run_outputs
from neurodyn.data.event_timing import append_unobserved_bins
from neurodyn.data.seed_format import write_dataset
from neurodyn.synth.lorenz_spikes import make_lorenz_spikes
from neurodyn.train.inference import infer, infer_empirical_bayes
from neurodyn.train.run import TrialSplit, load_trained_model, write_model_outputs

CONFIG = {"run_name": "tiny", "ic_enc_dim": 8, "ci_enc_dim": 6, "con_dim": 6, "co_dim": 1, "ic_dim": 4,
          "gen_dim": 12, "factors_dim": 5, "batch_size": 16, "max_epochs": 3, "kl_increase_epochs": 1,
          "l2_increase_epochs": 1, "posterior_samples": 4, "device": "cpu"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    dataset = make_lorenz_spikes(num_neurons=7, num_samples=15, num_conditions=4, trials_per_condition=5, keep=5)
    data_path = root / "tiny_data.h5"
    write_dataset(data_path, dataset)
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    out = root / "run"
    assert main(["train", str(config_path), "--data", str(data_path), "--out", str(out), "--no-progress"]) == 0
    return dataset, data_path, out


def train_variant(data_path, tmp_path, name, **keys):
    """``neurodyn train`` on the module's data with CONFIG and ``keys``; returns its output folder."""
    config_path = tmp_path / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump({**CONFIG, **keys}))
    out = tmp_path / name
    assert main(["train", str(config_path), "--data", str(data_path), "--out", str(out), "--no-progress"]) == 0
    return out


def log_column(out, column):
    """One column of a run's ``train_log.csv``, as floats."""
    with open(out / "train_log.csv") as f:
        return [float(row[column]) for row in csv.DictReader(f)]


def test_train_writes_outputs_in_the_seed_orientation(trained):
    dataset, _, out = trained
    seen = []
    for split in ("train", "valid"):
        with h5py.File(out / f"{split}_output.h5") as f:
            idx = f["trial_idx"][()]
            assert f["rates"].shape == (7, 15, len(idx))
            assert f["factors"].shape == (5, 15, len(idx))
            assert f["rates_posterior_mean"].shape == (7, 15, len(idx))
            assert np.all(f["rates"][()] > 0) and np.isfinite(f["rates"][()]).all()
            seen.extend(idx.tolist())
    assert sorted(seen) == list(range(dataset.num_trials))


def test_train_writes_checkpoint_config_and_log(trained):
    _, _, out = trained
    assert (out / "checkpoint.safetensors").is_file()
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["gen_dim"] == 12 and resolved["keep_ratio"] == 0.7  # given + default keys
    rows = list(csv.DictReader((out / "train_log.csv").open()))
    assert [int(float(r["epoch"])) for r in rows] == [0, 1, 2]
    assert {"loss", "train_nll", "valid_nll", "valid_nll_smoothed", "kl_ic", "kl_co", "l2", "learning_rate"} <= set(rows[0])
    assert not list(out.glob(".*.tmp")), "no temporary files are left behind"


def test_loaded_model_reproduces_the_written_outputs(trained):
    dataset, _, out = trained
    model, config = load_trained_model(out)
    with h5py.File(out / "valid_output.h5") as f:
        idx, rates, factors = f["trial_idx"][()], f["rates"][()], f["factors"][()]
    again = infer(model, dataset.data[idx], config.posterior_samples, config.valid_batch_size, config.seed)
    np.testing.assert_allclose(np.transpose(again["rates"], (2, 1, 0)), rates, rtol=1e-5)
    np.testing.assert_allclose(np.transpose(again["factors"], (2, 1, 0)), factors, rtol=1e-5, atol=1e-6)


def test_evaluate_command_runs_on_the_training_output(trained, capsys):
    _, data_path, out = trained
    assert main(["evaluate", str(out), "--data", str(data_path)]) == 0
    assert "rate R^2" in capsys.readouterr().out
    assert (out / "evaluation.json").is_file()


def test_train_reports_bad_input_as_one_clear_line(tmp_path, capsys):
    data_path = tmp_path / "bad_data.h5"
    with h5py.File(data_path, "w") as f:
        f["data"] = np.full((3, 4, 5), 0.5)  # non-integer counts for a Poisson model
    config_path = tmp_path / "c.yaml"
    config_path.write_text("run_name: bad\n")
    code = main(["train", str(config_path), "--data", str(data_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "bad_data.h5" in err and "non-integer" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "train_output.h5").exists()


def test_unknown_config_key_is_reported_with_suggestion(tmp_path, capsys):
    config_path = tmp_path / "c.yaml"
    config_path.write_text("run_name: x\nkeep_ration: 0.5\n")
    assert main(["train", str(config_path), "--data", str(tmp_path / "d.h5"), "--out", str(tmp_path / "o")]) == 2
    assert "did you mean 'keep_ratio'" in capsys.readouterr().err


def test_empirical_bayes_outputs_weight_the_training_trials(trained, tmp_path):
    dataset, data_path, out = trained
    model, config = load_trained_model(out)
    config = config.model_copy(update={"inference": "empirical_bayes", "empirical_bayes_samples": 2})
    train_idx = np.sort(h5py.File(out / "train_output.h5")["trial_idx"][()])
    valid_idx = np.sort(h5py.File(out / "valid_output.h5")["trial_idx"][()])
    write_model_outputs(tmp_path, model, dataset, TrialSplit(train_idx, valid_idx, np.zeros(0, np.int64)), config)
    for split, idx in (("train", train_idx), ("valid", valid_idx)):
        with h5py.File(tmp_path / f"{split}_output.h5") as f:
            assert f.attrs["inference"] == "empirical_bayes"
            rates, averaged = f["rates"][()], f["rates_sample_average"][()]
        assert rates.shape == averaged.shape == (7, 15, len(idx)) and np.isfinite(rates).all()
        expected = infer_empirical_bayes(model, dataset.data[idx], dataset.data[train_idx], 2, config.seed,
                                         data_ids=idx, reference_ids=train_idx, batch_size=config.valid_batch_size)
        np.testing.assert_allclose(np.transpose(expected["rates"], (2, 1, 0)), rates, rtol=1e-5)
        assert not np.allclose(rates, averaged)
    # The run reader can pick either rates array.
    standard = read_run_outputs(tmp_path, rates_key="rates_sample_average")["valid"]
    with h5py.File(tmp_path / "valid_output.h5") as f:
        np.testing.assert_array_equal(standard.rates, np.transpose(f["rates_sample_average"][()]))


def test_event_delay_runs_the_model_past_the_data_and_writes_rates_later_by_the_delay(trained, tmp_path):
    """event_delay_bins d: the model sees each trial followed by d unobserved bins, and the written rate
    at bin t is the model's rate at bin t + d (fit to the data of bin t + d)."""
    dataset, data_path, _ = trained
    out = train_variant(data_path, tmp_path, "delayed", max_epochs=1, event_delay_bins=3)
    model, config = load_trained_model(out)
    assert config.event_delay_bins == 3
    with h5py.File(out / "valid_output.h5") as f:
        idx, rates, delay_attr = f["trial_idx"][()], f["rates"][()], f.attrs["event_delay_bins"]
    assert delay_attr == 3 and rates.shape == (7, 15, len(idx))
    extended = append_unobserved_bins(dataset.data[idx], 3)
    again = infer(model, extended, config.posterior_samples, config.valid_batch_size, config.seed)
    assert again["rates"].shape[1] == 18
    np.testing.assert_allclose(np.transpose(again["rates"][:, 3:], (2, 1, 0)), rates, rtol=1e-5)


def test_the_log_says_which_event_delay_is_removed_and_when_none_is():
    from neurodyn.config import LfadsConfig
    from neurodyn.train.run import describe_event_delay

    attrs = {"event_delay_ms": 31.7, "indicator_decay_ms": 307.2, "indicator_rise_ms": 20.0,
             "event_kinetics_source": "decay estimated, rise assumed"}
    zig = LfadsConfig(observation="zig", event_delay_bins=4)
    assert describe_event_delay(zig, attrs, "d.h5") == (
        "event delay of 4 bins removed (event_delay_ms 31.7; indicator decay 307 ms, rise 20 ms; "
        "decay estimated, rise assumed)")
    missing = describe_event_delay(LfadsConfig(observation="zig", event_delay_bins=0), {}, "d.h5")
    assert missing.startswith("no event-delay correction: d.h5 has no attribute 'event_delay_ms'")
    assert describe_event_delay(LfadsConfig(event_delay_bins=0), {}, "d.h5") is None


def test_spike_jitter_trains_on_moved_spikes_and_is_refused_for_events(trained, tmp_path, capsys):
    _, data_path, plain = trained
    out = train_variant(data_path, tmp_path, "jitter", spike_jitter_bins=2)
    plain_loss, jitter_loss = log_column(plain, "train_nll"), log_column(out, "train_nll")
    # Same seed, same starting weights: the jitter (its moved spikes and its draws) makes the losses differ.
    assert len(jitter_loss) == len(plain_loss) and jitter_loss != plain_loss
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({**CONFIG, "spike_jitter_bins": 2, "observation": "zig"}))
    assert main(["train", str(config_path), "--data", str(data_path), "--out", str(tmp_path / "zig")]) != 0
    assert "spike_jitter_bins" in capsys.readouterr().err


def test_student_t_controller_prior_trains_and_its_model_reloads(trained, tmp_path):
    _, data_path, plain = trained
    out = train_variant(data_path, tmp_path, "student_t", co_prior="student_t", co_prior_df=3.0)
    plain_kl, student_kl = log_column(plain, "kl_co"), log_column(out, "kl_co")
    assert len(student_kl) == len(plain_kl) and student_kl != plain_kl
    model, _ = load_trained_model(out)
    assert model.co_prior_df == 3.0


def test_sample_validation_trains_without_the_held_out_entries_and_writes_every_trials_outputs(trained, tmp_path):
    dataset, data_path, plain = trained
    out = train_variant(data_path, tmp_path, "sample_validation", sample_validation_fraction=0.2)
    plain_valid, pooled_valid = log_column(plain, "valid_nll"), log_column(out, "valid_nll")
    assert len(pooled_valid) == len(plain_valid) and pooled_valid != plain_valid
    # The outputs come from every observed entry (the held-out ones are data again once trained).
    outputs = read_run_outputs(out, data_path=data_path)
    assert sorted(np.concatenate([o.trial_idx for o in outputs.values()]).tolist()) == list(range(dataset.num_trials))
    assert all(np.isfinite(o.rates).all() for o in outputs.values())


def test_a_learnable_ic_prior_trains_is_saved_and_reloads(trained, tmp_path):
    _, data_path, _ = trained
    out = train_variant(data_path, tmp_path, "learnable", ic_prior="learnable")
    model, _ = load_trained_model(out)
    assert model.ic_prior.mean.abs().max() > 0  # moved from its start at 0
    assert not np.allclose(model.ic_prior.log_var.exp().detach().numpy(), CONFIG.get("ic_prior_var", 0.1))


def test_entry_validation_gives_the_validation_trials_to_training_but_for_their_held_out_entries():
    from neurodyn.config import LfadsConfig
    from neurodyn.train.run import ModelData, describe_validation

    dataset = make_lorenz_spikes(num_neurons=8, num_samples=20, num_conditions=2, trials_per_condition=6)
    dataset.ext_input = np.random.default_rng(0).normal(size=(12, 20, 2)).astype(np.float32)
    split = TrialSplit(np.arange(0, 9), np.arange(9, 12), np.zeros(0, dtype=np.int64))
    config = LfadsConfig(validation="entries", heldout_neurons=[1, 5], forward_bins=4, ext_input_dim=2)
    data = ModelData(dataset, config, split)
    inputs = data.trainer_inputs()
    train, held = inputs["train_data"], inputs["sample_validation_data"]
    assert train.shape == (12, 20, 8) and inputs["valid_data"].shape == (0, 20, 8)
    np.testing.assert_array_equal(inputs["train_ext_input"], dataset.ext_input[:12])
    assert inputs["valid_ext_input"].shape == (0, 20, 2)
    # The validation trials' held-out neurons and forward bins are held out whole, never trained on ...
    assert np.isnan(train[9:, :, [1, 5]]).all() and np.isnan(train[9:, 16:]).all()
    np.testing.assert_array_equal(held[9:, :, [1, 5]], dataset.data[9:, :, [1, 5]])
    np.testing.assert_array_equal(held[9:, 16:], dataset.data[9:, 16:])
    # ... and 10% ('auto') of all the entries besides; together the two are the data.
    np.testing.assert_array_equal(np.where(np.isnan(train), held, train), dataset.data)
    hidden = 3 * 20 * 2 + 3 * 4 * 6  # the validation trials' held-out neurons, then their other forward bins
    sampled = int(np.floor(0.1 * np.isfinite(dataset.data).sum() + 0.5))
    assert hidden <= np.isfinite(held).sum() <= hidden + sampled
    assert abs(np.isfinite(held[:9]).mean() - 0.1) < 0.03  # the training trials lose the 10% only
    assert "the 3 validation trials train too" in describe_validation(data)
    assert describe_validation(ModelData(dataset, LfadsConfig(), split)) is None
    # With validation trials (the default) nothing is held out unless asked for.
    plain = ModelData(dataset, LfadsConfig(ext_input_dim=2), split).trainer_inputs()
    assert plain["sample_validation_data"] is None and plain["valid_data"].shape[0] == 3


def test_entry_validation_trains_and_evaluate_says_which_valid_scores_are_held_out(trained, tmp_path):
    _, data_path, _ = trained
    out = train_variant(data_path, tmp_path, "entries", validation="entries")
    assert all(np.isfinite(value) for value in log_column(out, "valid_nll"))
    outputs = read_run_outputs(out, data_path=data_path)
    assert outputs["valid"].attrs["validation"] == "entries" and outputs["valid"].trial_idx.size > 0
    assert main(["evaluate", str(out), "--data", str(data_path)]) == 0
    import json
    notes = json.loads((out / "evaluation.json").read_text())["notes"]
    assert any("validation: entries" in note for note in notes)
