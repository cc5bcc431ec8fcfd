"""Single-trial experiments through the commands: measured inputs, a test split, richer outputs, `infer`."""

import dataclasses

import h5py
import numpy as np
import pytest
import yaml

from neurodyn.cli.main import main
from neurodyn.config import load_run_config
from neurodyn.data.seed_format import write_dataset
from neurodyn.pbt.run import run_pbt
from neurodyn.synth.lorenz_spikes import make_lorenz_spikes

CONFIG = {"run_name": "tiny", "ic_enc_dim": 8, "ci_enc_dim": 6, "con_dim": 6, "co_dim": 2, "ic_dim": 4,
          "gen_dim": 12, "factors_dim": 5, "batch_size": 8, "max_epochs": 2, "kl_increase_epochs": 1,
          "l2_increase_epochs": 1, "posterior_samples": 3, "device": "cpu", "write_generator_states": True}
SPLIT = np.array(["train"] * 14 + ["valid"] * 5 + ["test"] * 5)


def _dataset(seed=0, neurons=6, with_inputs=True, bin_ms=20.0):
    dataset = make_lorenz_spikes(num_neurons=neurons, num_samples=10, num_conditions=3, trials_per_condition=8,
                                 seed=seed, bin_ms=bin_ms)
    rng = np.random.default_rng(seed)
    ext = rng.normal(size=(dataset.num_trials, 10, 2)).astype(np.float32) if with_inputs else None
    return dataclasses.replace(dataset, ext_input=ext, split=SPLIT)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    data_path = root / "tiny_data.h5"
    write_dataset(data_path, _dataset())
    config_path = root / "c.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    out = root / "run"
    assert main(["train", str(config_path), "--data", str(data_path), "--out", str(out), "--no-progress"]) == 0
    return root, data_path, out


def test_outputs_hold_inputs_posteriors_and_states_with_the_test_split(trained):
    _, _, out = trained
    seen = {}
    for split in ("train", "valid", "test"):
        with h5py.File(out / f"{split}_output.h5") as f:
            n = f["trial_idx"].shape[0]
            seen[split] = f["trial_idx"][()]
            assert f["inferred_inputs"].shape == f["inferred_inputs_std"].shape == (2, 10, n)
            assert f["ic_mean"].shape == f["ic_std"].shape == (4, n)
            assert f["generator_states"].shape == (12, 10, n)
            assert f.attrs["bin_ms"] == 20.0
            assert np.all(f["ic_std"][()] > 0)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(seen[split], np.flatnonzero(SPLIT == split))
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["ext_input_dim"] == 2


def test_test_trials_are_never_seen_by_training(trained, monkeypatch, tmp_path):
    from neurodyn.train import run as train_run

    _, data_path, _ = trained
    sizes = []
    real = train_run.LfadsTrainer

    def recording(config, train_data, valid_data, **kwargs):
        sizes.append((len(train_data), len(valid_data), len(kwargs["train_ext_input"])))
        return real(config, train_data, valid_data, **kwargs)

    monkeypatch.setattr(train_run, "LfadsTrainer", recording)
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump({**CONFIG, "max_epochs": 1}))
    assert main(["train", str(config_path), "--data", str(data_path), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    assert sizes == [(14, 5, 14)]


def test_evaluate_reports_the_test_trials(trained, capsys):
    _, data_path, out = trained
    assert main(["evaluate", str(out), "--data", str(data_path)]) == 0
    text = capsys.readouterr().out
    assert "test trials (5, never used for training or any choice)" in text


def test_infer_applies_the_model_to_a_new_file(trained, capsys):
    root, _, out = trained
    new = root / "new_data.h5"
    write_dataset(new, dataclasses.replace(_dataset(seed=7), split=None))
    target = root / "new_output.h5"
    assert main(["infer", str(out), "--data", str(new), "--out", str(target)]) == 0
    with h5py.File(target) as f:
        np.testing.assert_array_equal(f["trial_idx"][()], np.arange(24))
        assert f["rates"].shape == (6, 10, 24) and f["inferred_inputs"].shape == (2, 10, 24)
        assert f["ic_mean"].shape == (4, 24)
    assert main(["infer", str(out), "--data", str(new), "--out", str(target)]) == 2
    assert "exists; use --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"neurons": 5}, "has 5 neurons (num_neurons, num_samples, num_trials) but the model was trained on 6"),
    ({"bin_ms": 10.0}, "bins of 10 ms (attribute 'bin_ms') but the model was trained on 20 ms bins"),
    ({"with_inputs": False}, "missing key 'ext_input' (2, num_samples, num_trials)"),
])
def test_infer_refuses_data_that_do_not_fit_the_model(trained, capsys, change, message):
    root, _, out = trained
    bad = root / "bad_data.h5"
    write_dataset(bad, dataclasses.replace(_dataset(seed=8, **change), split=None))
    assert main(["infer", str(out), "--data", str(bad), "--out", str(root / "bad_out.h5"), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (root / "bad_out.h5").exists()


def test_infer_refuses_a_session_name_for_a_model_of_one_file(trained, capsys):
    root, _, out = trained
    new = root / "session_data.h5"
    write_dataset(new, dataclasses.replace(_dataset(seed=9), split=None))
    target = root / "session_out.h5"
    assert main(["infer", str(out), "--data", str(new), "--out", str(target), "--session", "day2"]) == 2
    err = capsys.readouterr().err
    assert "--session day2: the model was trained on one data file" in err and err.count("\n") == 1
    assert not target.exists()


def test_pbt_workers_never_get_the_test_trials(trained, tmp_path):
    _, data_path, _ = trained
    seen = {}

    class Stop(Exception):
        pass

    def factory(data, log):
        seen.update(train=len(data.train), valid=len(data.valid), ext=data.train_ext_input.shape)
        raise Stop

    config = {k: v for k, v in CONFIG.items() if k not in ("max_epochs",)}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**config, "num_workers": 2, "max_generations": 1, "epochs_per_generation": 1}))
    with pytest.raises(Stop):
        run_pbt(load_run_config(path), data_path, tmp_path / "res", progress=False, echo=lambda line: None,
                engine_factory=factory)
    assert seen == {"train": 14, "valid": 5, "ext": (14, 10, 2)}
