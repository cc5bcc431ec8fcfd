"""Shared set-up for the PBT tests: a tiny dataset and a tiny, fast config."""

from pathlib import Path

import h5py
import yaml

from neurodyn.data.seed_format import write_dataset
from neurodyn.runs.checkpoint import load_checkpoint
from neurodyn.synth.lorenz_spikes import make_lorenz_spikes

TINY_RUN = {"run_name": "tiny", "num_workers": 3, "epochs_per_generation": 2, "max_generations": 2,
            "max_processes": 1, "ic_enc_dim": 8, "gen_dim": 10, "ic_dim": 4, "factors_dim": 4, "batch_size": 16,
            "posterior_samples": 3, "device": "cpu", "kl_increase_epochs": 2, "l2_increase_epochs": 2}


def write_tiny_dataset(folder: Path, name: str = "tiny_data.h5") -> Path:
    dataset = make_lorenz_spikes(num_neurons=8, num_samples=12, num_conditions=4, trials_per_condition=8, seed=1)
    path = folder / name
    write_dataset(path, dataset)
    return path


def write_config(folder: Path, **overrides) -> Path:
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump({**TINY_RUN, **overrides}))
    return path


def check_results(results: Path, run_name: str, num_workers: int, generations: int, num_neurons: int = 8,
                  num_samples: int = 12, num_trials: int = 32) -> None:
    """Every output file a finished run must have, with the right shapes."""
    best = results / "pbt_best_model"
    seen = []
    for split in ("train", "valid"):
        with h5py.File(best / f"{split}_output.h5") as f:
            idx = f["trial_idx"][()]
            assert f["rates"].shape == (num_neurons, num_samples, len(idx))
            assert f["factors"].shape[1:] == (num_samples, len(idx))
            seen += idx.tolist()
    assert sorted(seen) == list(range(num_trials))
    assert (best / "checkpoint.safetensors").is_file() and (best / "config.yaml").is_file()
    hyperparameters = yaml.safe_load((best / "hyperparameters.yaml").read_text())
    assert {"best_smoothed_valid_nll", "generation", "worker", "hyperparameters", "config"} <= set(hyperparameters)
    run_dir = results / run_name
    for w in range(num_workers):
        folder = run_dir / f"worker_{w:02d}"
        assert {"train_log.csv", "hp_history.csv", "checkpoint.safetensors"} <= {p.name for p in folder.iterdir()}
        assert len((folder / "hp_history.csv").read_text().strip().splitlines()) == 1 + generations
        # the training log is the lineage of the worker's saved state, epoch by epoch
        state = load_checkpoint(folder / "checkpoint.safetensors")
        log_rows = (folder / "train_log.csv").read_text().strip().splitlines()[1:]
        assert [int(float(r.split(",")[0])) for r in log_rows] == [row["epoch"] for row in state["history"]]
    log_lines = (run_dir / "pbt_log.csv").read_text().strip().splitlines()
    assert len(log_lines) == 1 + num_workers * generations
    assert (run_dir / "pbt_progress.png").stat().st_size > 0
    assert (run_dir / "run.log").read_text().strip().splitlines()[-1].endswith("Done.")
    assert not list(results.rglob(".*.tmp")), "temporary files left behind"


def replay_by_running(step, static_inputs, stream):
    """A stand-in for recording a CUDA graph (``cuda_graphs.capture_cuda_graph``) on the CPU: a "replay"
    runs the step on the static inputs and leaves its results in the returned outputs dict."""
    outputs = {}
    return (lambda: outputs.update(step(static_inputs))), outputs
