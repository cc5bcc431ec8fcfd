"""``neurodyn train`` as a run one can trust: interrupt and resume to the same weights, re-runs, refusals."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from neurodyn.cli.main import main
from neurodyn.config import LfadsConfig
from neurodyn.data.seed_format import write_dataset
from neurodyn.errors import NeurodynError, RunInterrupted
from neurodyn.runs.checkpoint import load_checkpoint
from neurodyn.runs.identity import read_run_info
from neurodyn.synth.lorenz_spikes import make_lorenz_spikes
from neurodyn.train.run import train_model

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"run_name": "tiny", "ic_enc_dim": 8, "ci_enc_dim": 6, "con_dim": 6, "co_dim": 1, "ic_dim": 4,
          "gen_dim": 12, "factors_dim": 5, "batch_size": 8, "max_epochs": 6, "kl_increase_epochs": 2,
          "l2_increase_epochs": 2, "posterior_samples": 3, "device": "cpu", "batch_threads": 1}


@pytest.fixture
def data_path(tmp_path):
    dataset = make_lorenz_spikes(num_neurons=6, num_samples=10, num_conditions=3, trials_per_condition=8, keep=4,
                                 seed=3)
    path = tmp_path / "tiny_data.h5"
    write_dataset(path, dataset)
    return path


def _quiet(line):
    pass


def _final_weights(folder):
    return load_checkpoint(folder / "checkpoint.safetensors")["trainer"]["model"]


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, data_path):
    config = LfadsConfig(**CONFIG)
    train_model(config, data_path, tmp_path / "whole", progress=False, echo=_quiet)
    epochs_seen = []

    def stop_after_three():
        epochs_seen.append(1)
        return len(epochs_seen) >= 3

    out = tmp_path / "stopped"
    with pytest.raises(RunInterrupted, match="run the same command again to continue"):
        train_model(config, data_path, out, progress=False, stop_requested=stop_after_three, echo=_quiet)
    assert (out / "resume.safetensors").is_file() and not (out / "checkpoint.safetensors").exists()
    assert read_run_info(out / "run.json")["status"] == "interrupted"
    lines = []
    result = train_model(config, data_path, out, progress=False, echo=lines.append)
    assert any("resuming from epoch 3" in line for line in lines)
    assert result.trainer.epoch == 6 and not (out / "resume.safetensors").exists()
    whole, resumed = _final_weights(tmp_path / "whole"), _final_weights(out)
    for name, tensor in whole.items():
        assert torch.equal(tensor, resumed[name]), name
    assert (out / "train_log.csv").read_text() .count("\n") == 7  # header + 6 epochs, none repeated


def test_a_finished_run_is_reported_and_left_alone(tmp_path, data_path):
    config = LfadsConfig(**CONFIG)
    out = tmp_path / "run"
    train_model(config, data_path, out, progress=False, echo=_quiet)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".neurodyn.lock"}
    lines = []
    result = train_model(config, data_path, out, progress=False, echo=lines.append)
    assert result.trainer is None and any("has finished; nothing to do" in line for line in lines)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".neurodyn.lock"} == before


def test_another_config_or_changed_data_is_refused_and_overwrite_retrains(tmp_path, data_path, capsys):
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    args = ["train", str(config_path), "--data", str(data_path), "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 0
    config_path.write_text(yaml.safe_dump({**CONFIG, "gen_dim": 9}))
    assert main(args) == 2
    assert "another config: gen_dim (12 -> 9)" in capsys.readouterr().err
    config_path.write_text(yaml.safe_dump(CONFIG))
    dataset = make_lorenz_spikes(num_neurons=6, num_samples=10, num_conditions=3, trials_per_condition=8, keep=4,
                                 seed=4)
    write_dataset(data_path, dataset)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "content has changed since" in err and err.count("\n") == 1
    assert main(args + ["--overwrite"]) == 0
    assert read_run_info(tmp_path / "run" / "run.json")["status"] == "finished"


def test_max_epochs_below_the_ramps_keeps_the_last_weights_and_says_so(tmp_path, data_path):
    config = LfadsConfig(**{**CONFIG, "max_epochs": 2, "kl_increase_epochs": 5, "l2_increase_epochs": 5})
    lines = []
    result = train_model(config, data_path, tmp_path / "run", progress=False, echo=lines.append)
    assert result.trainer.best_epoch == 1 and np.isfinite(result.trainer.best_valid_nll)
    assert any("before the KL/L2 ramps were complete" in line and "kept the last epoch's weights" in line
               for line in lines)


def test_output_naming_a_file_and_an_h5_file_as_config_give_one_line(tmp_path, data_path, capsys):
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    (tmp_path / "afile").write_text("x")
    assert main(["train", str(config_path), "--data", str(data_path), "--out", str(tmp_path / "afile")]) == 2
    assert "is a file; the output must be a folder" in capsys.readouterr().err
    assert main(["train", str(data_path), "--data", str(data_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not a YAML config" in err and "--data" in err and err.count("\n") == 1


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_ctrl_c_during_train_saves_and_exits_130_then_the_command_continues(tmp_path, data_path):
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump({**CONFIG, "max_epochs": 400, "early_stopping_patience": 400}))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "neurodyn.cli.main", "train", str(config_path), "--data", str(data_path),
               "--out", str(out), "--no-progress"]
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        log = out / "train_log.csv"
        if log.is_file() and log.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("neurodyn: interrupted after epoch")
    assert (out / "resume.safetensors").is_file()
    epochs = load_checkpoint(out / "resume.safetensors")["trainer"]["epoch"]
    config_path.write_text(yaml.safe_dump({**CONFIG, "max_epochs": 400, "early_stopping_patience": 400}))
    # The same command continues where it stopped (a short run: stop it again right away).
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if (out / "train_log.csv").read_text().count("\n") >= epochs + 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and f"resuming from epoch {epochs}" in stdout + stderr


def test_ctrl_c_while_starting_up_prints_one_line(tmp_path, data_path):
    """Ctrl-C while the command still imports its modules (torch, the data layer) or parses the config."""
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    argv = ["train", str(config_path), "--data", str(data_path), "--out", str(tmp_path / "run"), "--no-progress"]
    # The entry point's own module imports only the standard library; main() imports torch. The process
    # signals itself as soon as torch's import has begun, so the Ctrl-C lands inside it however loaded
    # the machine is (a signal sent from outside could land after a run this small had finished).
    script = textwrap.dedent(f"""
        import os, signal, sys, threading, time

        def interrupt_once_torch_starts_loading():
            while "torch" not in sys.modules:
                time.sleep(0.001)
            os.kill(os.getpid(), signal.SIGINT)

        import neurodyn.cli.main as cli
        assert "torch" not in sys.modules
        threading.Thread(target=interrupt_once_torch_starts_loading, daemon=True).start()
        sys.exit(cli.main({argv!r}))
    """)
    process = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=120)
    stderr = process.stderr
    assert "Traceback" not in stderr
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1].startswith("neurodyn: interrupted")


def _swallowing(function):
    """``function`` preceded by a Ctrl-C that the code around it swallows (as a library importing its
    optional parts inside a bare ``except`` may)."""
    def wrapped(*args, **kwargs):
        try:
            signal.raise_signal(signal.SIGINT)
            for _ in range(1000):  # the handler runs between these bytecodes
                pass
        except BaseException:
            pass
        return function(*args, **kwargs)
    return wrapped


def test_a_ctrl_c_swallowed_during_start_up_still_stops_train_with_130(tmp_path, data_path, monkeypatch, capsys):
    import neurodyn.config

    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    monkeypatch.setattr(neurodyn.config, "load_config", _swallowing(neurodyn.config.load_config))
    previous = signal.getsignal(signal.SIGINT)
    status = main(["train", str(config_path), "--data", str(data_path), "--out", str(tmp_path / "run"),
                   "--no-progress"])
    assert status == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "neurodyn: interrupted"
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()
    assert signal.getsignal(signal.SIGINT) is previous  # main() hands the process its handlers back


def test_a_ctrl_c_while_the_outputs_are_written_completes_them_and_says_so(tmp_path, data_path, monkeypatch,
                                                                            capsys):
    import neurodyn.train.run as run_module

    def interrupting(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # the run's own handler: a stop request, too late to stop
        return real(*args, **kwargs)

    real = run_module.write_model_outputs
    monkeypatch.setattr(run_module, "write_model_outputs", interrupting)
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    status = main(["train", str(config_path), "--data", str(data_path), "--out", str(tmp_path / "run"),
                   "--no-progress"])
    assert status == 0
    assert "Ctrl-C received while the outputs were written; they are complete" in capsys.readouterr().err
    assert (tmp_path / "run" / "train_output.h5").is_file() and (tmp_path / "run" / "valid_output.h5").is_file()


def test_a_ctrl_c_swallowed_by_a_command_without_a_run_is_reported_after_its_outputs(tmp_path, monkeypatch,
                                                                                       capsys):
    import neurodyn.synth.lorenz_spikes as lorenz

    monkeypatch.setattr(lorenz, "make_lorenz_spikes", _swallowing(lorenz.make_lorenz_spikes))
    status = main(["synth", "lorenz-spikes", str(tmp_path / "l.h5"), "--neurons", "5", "--conditions", "2",
                   "--trials-per-condition", "2", "--bins", "10"])
    assert status == 0 and (tmp_path / "l.h5").is_file()
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "neurodyn: Ctrl-C received, but the command had completed its outputs: they are kept")


def test_a_folder_in_use_by_another_run_is_refused(tmp_path, data_path):
    from neurodyn.runs.identity import RunLock

    with RunLock(tmp_path / "run"):
        with pytest.raises(NeurodynError, match=r"in use by another neurodyn run \(pid \d+\)"):
            train_model(LfadsConfig(**CONFIG), data_path, tmp_path / "run", progress=False, echo=_quiet)
    result = train_model(LfadsConfig(**CONFIG), data_path, tmp_path / "run", progress=False, echo=_quiet)
    assert result.trainer is not None  # the lock is released with the run that held it


def test_an_unfinished_run_and_an_old_pickled_checkpoint_get_clear_lines(tmp_path, data_path, capsys):
    import pickle

    from neurodyn.train.run import load_trained_model

    stops = []
    with pytest.raises(RunInterrupted):
        train_model(LfadsConfig(**CONFIG), data_path, tmp_path / "run", progress=False, echo=_quiet,
                    stop_requested=lambda: stops.append(1) or True)
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(data_path)]) == 2
    err = capsys.readouterr().err
    assert "the run is unfinished (status 'interrupted' in run.json)" in err and err.count("\n") == 1
    old = tmp_path / "old"
    old.mkdir()
    (old / "checkpoint.pt").write_bytes(pickle.dumps({"weights": 1}))
    with pytest.raises(NeurodynError, match="holds checkpoint.pt, a pickled checkpoint of neurodyn 0.1: refused"):
        load_trained_model(old)
    assert main(["infer", str(old), "--data", str(data_path), "--out", str(tmp_path / "o.h5")]) == 2
    assert "a pickled checkpoint of neurodyn 0.1: refused" in capsys.readouterr().err


def test_a_run_refused_before_writing_anything_leaves_no_folder(tmp_path, data_path, capsys):
    import shutil

    import h5py

    from neurodyn.runs.identity import RunLock
    from neurodyn.runs.layout import LOCK_FILE

    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    bad = tmp_path / "half_counts.h5"  # not spike counts: refused once the run has its folder locked
    shutil.copy(data_path, bad)
    with h5py.File(bad, "r+") as f:
        f["data"][...] = f["data"][()] + 0.5
    out = tmp_path / "new_run"
    assert main(["train", str(config_path), "--data", str(bad), "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not out.exists()
    # A folder that was there before stays, and so does one the run wrote into.
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(RuntimeError):
        with RunLock(existing):
            raise RuntimeError("refused")
    assert existing.is_dir()
    with RunLock(tmp_path / "written"):
        (tmp_path / "written" / "run.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "written").iterdir()) == [LOCK_FILE, "run.json"]
