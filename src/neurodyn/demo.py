"""The demo behind the README's main command: synthetic Lorenz spikes -> LFADS -> evaluation."""

from __future__ import annotations

import time
from pathlib import Path

from neurodyn.config import LfadsConfig
from neurodyn.data.seed_format import write_dataset
from neurodyn.evaluate.report import evaluate_run, format_metrics
from neurodyn.synth.lorenz_spikes import make_lorenz_spikes
from neurodyn.train.run import train_model

# Embedded demo settings: the default model, trained long enough to recover the Lorenz rates
# on this 2-core machine in a few minutes.
DEMO_CONFIG = {"run_name": "lorenz_demo", "max_epochs": 150, "kl_increase_epochs": 30, "l2_increase_epochs": 30,
               "early_stopping_patience": 25}


def run_demo(out_dir: str | Path, max_epochs: int | None = None, progress: bool = True) -> dict:
    """Synthesize the Lorenz spiking set in ``out_dir``, train LFADS on it, evaluate; returns the metrics."""
    out_dir = Path(out_dir)
    started = time.perf_counter()
    config = LfadsConfig(**{**DEMO_CONFIG, **({"max_epochs": max_epochs} if max_epochs else {})})
    data_path = out_dir / f"{config.run_name}_data.h5"
    dataset = make_lorenz_spikes(seed=config.seed)
    write_dataset(data_path, dataset)
    print(f"wrote {data_path}: {dataset.num_neurons} neurons x {dataset.num_samples} bins x {dataset.num_trials} trials")
    run_dir = out_dir / config.run_name
    train_model(config, data_path, run_dir, progress=progress)
    metrics = evaluate_run(run_dir, data_path)
    print(format_metrics(metrics))
    print(f"figure: {metrics['figure']}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return metrics
