"""The demos behind the README's main command.

* ``radical`` (the default): synthesize the 2-photon Lorenz set, run RADICaL (AutoLFADS with the
  zero-inflated gamma model and sub-frame SBTT) with a small population, map the inferred rates
  to the true Lorenz states, print R^2 and where the figure is.
* ``spikes``: synthesize the Lorenz spiking set, train one LFADS model, evaluate.
* ``nlb``: a real recording: the shipped MC_Maze_Small tensors (NLB'21; monkey M1/PMd during reaching)
  with 15 of the 75 training-phase trials set aside as local test trials, one LFADS model trained
  with the defaults, co-bps of the held-out neurons and vel R^2 on the local test trials.

Settings are embedded so the demo needs no files; they are sized for a few minutes on 2 cores.
"""

from __future__ import annotations

import time
from pathlib import Path

from neurodyn.config import LfadsConfig, validate_run_config
from neurodyn.data.nlb_tensors import NlbSplit, nlb_dataset
from neurodyn.data.seed_format import count_trial_roles, write_dataset
from neurodyn.datasets import mc_maze_small_files
from neurodyn.evaluate.latents_report import format_latent_mapping, map_latents_run
from neurodyn.evaluate.report import evaluate_run, format_metrics
from neurodyn.pbt.run import run_pbt
from neurodyn.synth.lorenz_2p import make_lorenz_2p
from neurodyn.synth.lorenz_spikes import make_lorenz_spikes
from neurodyn.train.run import train_model

RADICAL_DATA = {"num_neurons": 100, "num_conditions": 20, "trials_per_condition": 20, "seed": 0}
RADICAL_RUN = {
    "run_name": "radical_demo", "observation": "zig", "num_workers": 4, "max_processes": 2,
    "epochs_per_generation": 15, "max_generations": 10, "num_no_best_to_stop": 10, "Duration": 8.0,
    "ic_enc_dim": 64, "ic_dim": 32, "gen_dim": 64, "factors_dim": 10, "batch_size": 64,
    "kl_increase_epochs": 10, "l2_increase_epochs": 10, "posterior_samples": 20,
    "learning_rate_init": {"explore_range": [0.002, 0.02], "init_sample_mode": 0.01},
    "keep_ratio": {"explore_range": [0.5, 0.9], "init_sample_mode": "rand"},
    "kl_ic_weight": {"explore_range": [1e-6, 1e-3], "init_sample_mode": "logrand"},
    "l2_gen_scale": {"explore_range": [1e-5, 1e-1], "init_sample_mode": "logrand"},
}
# The real-data demo sets aside this many of MC_Maze_Small's 75 training-phase trials as local test trials
# (NLB's own evaluation trials come without their held-out neurons); the seed fixes which.
NLB_LOCAL_TEST_TRIALS = 15
NLB_SPLIT_SEED = 0
SPIKES_RUN = {"run_name": "lorenz_demo", "max_epochs": 150, "kl_increase_epochs": 30, "l2_increase_epochs": 30,
              "early_stopping_patience": 25}


def run_radical_demo(out_dir: str | Path, progress: bool = True) -> dict:
    """The RADICaL demo in ``out_dir``; returns the map_to_latents result."""
    out_dir = Path(out_dir)
    started = time.perf_counter()
    run_config = validate_run_config(RADICAL_RUN, source="embedded demo config")
    data_path = out_dir / f"{run_config.model.run_name}_data.h5"
    print("synthesizing 2-photon Lorenz data (spikes -> GCaMP fluorescence -> OASIS events -> sub-frame bins) ...")
    dataset = make_lorenz_2p(**RADICAL_DATA)
    write_dataset(data_path, dataset)
    print(f"wrote {data_path}: {dataset.num_trials} trials x {dataset.num_samples} sub-frame bins "
          f"({dataset.attrs.get('subframe_bins')} per frame) x {dataset.num_neurons} neurons; events trail the "
          f"spikes by ~{dataset.attrs['event_delay_ms']:.0f} ms, which training removes (event_delay_bins: auto)")
    results = out_dir / "results"
    data_seconds = time.perf_counter() - started
    # The demo makes its data anew each time, so it replaces the results of an earlier demo run.
    run = run_pbt(run_config, data_path, results, progress=progress, overwrite=True)
    clock = time.perf_counter()
    result = map_latents_run(results, data_path)
    mapping_seconds = time.perf_counter() - clock
    print(format_latent_mapping(result))
    print(f"figure: {result['figure']}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s: data {data_seconds:.0f} s, training "
          f"{run.training_seconds:.0f} s, outputs {run.output_seconds:.0f} s, map to latents {mapping_seconds:.0f} s")
    return result


def run_spikes_demo(out_dir: str | Path, max_epochs: int | None = None, progress: bool = True) -> dict:
    """The spiking LFADS demo in ``out_dir``; returns the evaluation metrics."""
    out_dir = Path(out_dir)
    started = time.perf_counter()
    config = LfadsConfig(**{**SPIKES_RUN, **({"max_epochs": max_epochs} if max_epochs else {})})
    data_path = out_dir / f"{config.run_name}_data.h5"
    dataset = make_lorenz_spikes(seed=config.seed)
    write_dataset(data_path, dataset)
    print(f"wrote {data_path}: {dataset.num_trials} trials x {dataset.num_samples} bins x {dataset.num_neurons} neurons")
    run_dir = out_dir / config.run_name
    run = train_model(config, data_path, run_dir, progress=progress, overwrite=True)
    metrics = evaluate_run(run_dir, data_path)
    print(format_metrics(metrics))
    print(f"figure: {metrics['figure']}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s: training {run.training_seconds:.0f} s, outputs "
          f"{run.output_seconds:.0f} s")
    return metrics


def run_nlb_demo(out_dir: str | Path, max_epochs: int | None = None, progress: bool = True) -> dict:
    """The real-data demo in ``out_dir`` (MC_Maze_Small, default settings; ``max_epochs`` for a quick look);
    returns the evaluation metrics."""
    out_dir = Path(out_dir)
    started = time.perf_counter()
    train_path, _ = mc_maze_small_files()
    data_path = out_dir / "mc_maze_small_data.h5"
    dataset = nlb_dataset(train_path, split=NlbSplit(local_test_trials=NLB_LOCAL_TEST_TRIALS, seed=NLB_SPLIT_SEED))
    write_dataset(data_path, dataset)
    roles = count_trial_roles(dataset.split)
    print(f"wrote {data_path}: MC_Maze_Small (NLB'21, CC-BY-4.0), {dataset.num_trials} trials x "
          f"{dataset.num_samples} bins of 5 ms ({dataset.attrs['forward_bins']} of them forward bins) x "
          f"{dataset.num_neurons} neurons ({dataset.heldout_neurons.size} held out); {roles['train']} train, "
          f"{roles['valid']} valid and {roles['test']} local test trials")
    run_dir = out_dir / "mc_maze_small"
    config = LfadsConfig(run_name="mc_maze_small", **({"max_epochs": max_epochs} if max_epochs else {}))
    run = train_model(config, data_path, run_dir, progress=progress, overwrite=True)
    metrics = evaluate_run(run_dir, data_path)
    print(format_metrics(metrics))
    test = metrics["test"]
    print(f"local test trials ({test['num_trials']}, never trained on): co-bps {test['co_bps']:.3f}, "
          f"vel R^2 {test['vel_r2']:.3f}, fp-bps {test['fp_bps']:.3f}")
    print(f"figures: {metrics['figure']}, {metrics['summary_figure']}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s: training {run.training_seconds:.0f} s, outputs "
          f"{run.output_seconds:.0f} s")
    return metrics
