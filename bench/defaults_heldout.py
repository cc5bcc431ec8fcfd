"""What a user gets from the defaults on data neurodyn was never tuned on; prints a table.

Held-out synthetic sets (generative families of the benchmarks, parameters the defaults were not
chosen on) are written to a temporary folder and trained through ``neurodyn.train.run.train_model``
exactly as ``neurodyn train CONFIG --data FILE`` would, with a config that names only what the row
says. Each row runs twice: with today's defaults (``batch_size``, ``learning_rate_init`` and
``mask_as_input`` derived from the data, ``auto``) and with the fixed values they replaced
(128 trials per step, learning rate 0.004, no mask input). Scored with each trial's own posterior
(sample-and-average rates, the standard inference) on the validation trials: latent R^2 of
``map_to_latents`` for the 2p set, rate R^2 against the true rates for the spiking set.

Sets (``--sets``):
  2p      60 neurons, 25 Hz frames, 4 sub-frame bins, 600 trials (480 training), data seed 11,
          config ``observation: zig`` (the issue's 2p row, one model instead of a population)
  keep3   35 neurons, 3 observed per bin, 65 conditions x 24 trials, data seed 11, default config
          (the issue's sparse-spikes row; keepK: K observed per bin instead of 3; keep3@HZ: peak rates
          of HZ instead of 75)

    python bench/defaults_heldout.py [--sets 2p keep3] [--epochs 200] [--processes 2]

``--population W G E`` runs each set through ``neurodyn run`` instead (AutoLFADS: W workers, G
generations of E epochs, the embedded engine on ``--processes`` processes), with a config naming
only the row's keys and the population's size and budget (the issue's 2p row is ``--sets 2p
--population 4 8 25``); the best model is scored the same way.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path

import torch

OLD_DEFAULTS = {"batch_size": 128, "learning_rate_init": 0.004, "mask_as_input": False}


def _dataset(name: str):
    from neurodyn.synth.lorenz_2p import make_lorenz_2p
    from neurodyn.synth.lorenz_spikes import make_lorenz_spikes

    if name == "2p":
        return make_lorenz_2p(num_neurons=60, frame_rate_hz=25.0, subframe_bins=4, num_conditions=30,
                              trials_per_condition=20, seed=11), {"observation": "zig"}
    spikes = re.fullmatch(r"keep(\d+)(?:@([\d.]+))?", name)  # e.g. keep3@150: 3 of 35 neurons, up to 150 Hz
    if spikes:
        rate = {} if spikes[2] is None else {"max_rate_hz": float(spikes[2])}
        return make_lorenz_spikes(num_neurons=35, keep=int(spikes[1]), seed=11, **rate), {}
    raise ValueError(name)


def _variant_settings(variant: str) -> dict:
    """``auto`` (today's defaults), ``old`` (the fixed values they replaced), or either followed by
    ``:KEY=VALUE,...`` overrides (e.g. ``auto:mask_as_input=false``) to see which setting matters."""
    import yaml

    base, _, overrides = variant.partition(":")
    settings = dict(OLD_DEFAULTS) if base == "old" else {}
    for item in filter(None, overrides.split(",")):
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    return settings


def run_one(name: str, defaults: str, epochs: int) -> dict:
    """Train one model on set ``name`` with the settings of variant ``defaults``; score it."""
    from neurodyn.config import LfadsConfig
    from neurodyn.data.seed_format import write_dataset
    from neurodyn.runs.outputs import read_run_outputs
    from neurodyn.train.run import train_model

    torch.set_num_threads(1)
    dataset, keys = _dataset(name)
    settings = {**keys, "max_epochs": epochs, "batch_threads": 1, **_variant_settings(defaults)}
    with tempfile.TemporaryDirectory() as folder:
        data_path = Path(folder) / "data.h5"
        write_dataset(data_path, dataset)
        started = time.perf_counter()
        result = train_model(LfadsConfig(**settings), data_path, Path(folder) / "run", progress=False,
                             echo=lambda line: None)
        seconds = time.perf_counter() - started
        outputs = read_run_outputs(Path(folder) / "run")
    return {"set": name, "defaults": defaults, "epochs": result.trainer.epoch, "seconds": seconds,
            "batch_size": result.trainer.config.batch_size,
            "learning_rate_init": result.trainer.config.learning_rate_init,
            "mask_as_input": result.trainer.config.mask_as_input, **_score(name, dataset, outputs)}


def _score(name: str, dataset, outputs) -> dict:
    """The row's metric on the validation trials: latent R^2 for the 2p set, rate R^2 for spikes."""
    from neurodyn.evaluate.metrics import map_to_latents, rate_r2

    train, valid = outputs["train"], outputs["valid"]
    if name == "2p":
        mapping = map_to_latents(train.rates, dataset.latents[train.trial_idx], valid.rates,
                                 dataset.latents[valid.trial_idx])
        return {"metric": "latent R^2", "value": mapping.r2}
    return {"metric": "rate R^2", "value": rate_r2(dataset.truth[valid.trial_idx], valid.rates)}


def run_population(name: str, workers: int, generations: int, epochs_per_generation: int, processes: int) -> dict:
    """``neurodyn run`` (AutoLFADS) on set ``name`` with a config naming only the set's keys and the
    population's size and budget; the exported best model scored like ``run_one``."""
    from neurodyn.config import validate_run_config
    from neurodyn.data.seed_format import write_dataset
    from neurodyn.pbt.run import run_pbt
    from neurodyn.runs.outputs import read_run_outputs

    dataset, keys = _dataset(name)
    config = validate_run_config({**keys, "num_workers": workers, "max_generations": generations,
                                  "epochs_per_generation": epochs_per_generation, "max_processes": processes},
                                 source="bench population config")
    with tempfile.TemporaryDirectory() as folder:
        data_path = Path(folder) / "data.h5"
        write_dataset(data_path, dataset)
        started = time.perf_counter()
        result = run_pbt(config, data_path, Path(folder) / "results", progress=False, echo=lambda line: None)
        seconds = time.perf_counter() - started
        outputs = read_run_outputs(Path(folder) / "results")
        best = yaml_load(Path(folder) / "results" / "pbt_best_model" / "config.yaml")
    return {"set": name, "defaults": f"run {workers}x{generations}x{epochs_per_generation}",
            "epochs": generations * epochs_per_generation, "seconds": seconds, "batch_size": best["batch_size"],
            "learning_rate_init": best["learning_rate_init"], "mask_as_input": best["mask_as_input"],
            "generations": result.generations, **_score(name, dataset, outputs)}


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["2p", "keep3"],
                        help="2p, keep3, keepK (K of 35 neurons observed per bin) or keepK@HZ (peak rates of HZ "
                             "instead of 75 Hz)")
    parser.add_argument("--epochs", type=int, default=200, help="max_epochs of every model")
    parser.add_argument("--processes", type=int, default=2, help="models trained at once (one core each)")
    parser.add_argument("--variants", nargs="+", default=["auto", "old"],
                        help="auto, old, or either with :KEY=VALUE,... overrides (e.g. auto:mask_as_input=false)")
    parser.add_argument("--population", nargs=3, type=int, metavar=("WORKERS", "GENERATIONS", "EPOCHS"),
                        help="run AutoLFADS (neurodyn run) with the defaults instead of single models")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.population:
        scores = [run_population(name, *args.population, args.processes) for name in args.sets]
    else:
        jobs = [(name, defaults) for name in args.sets for defaults in args.variants]
        with concurrent.futures.ProcessPoolExecutor(args.processes) as pool:
            scores = list(pool.map(run_one, *zip(*jobs), [args.epochs] * len(jobs)))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# {datetime.date.today()}, commit {commit}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}; python bench/defaults_heldout.py --sets {' '.join(args.sets)} "
          + (f"--population {' '.join(map(str, args.population))}" if args.population else
             f"--epochs {args.epochs} --variants {' '.join(args.variants)}"))
    print(f"{'set':<6} {'defaults':<28} {'metric':<11} {'value':>6} {'batch':>5} {'lr':>7} {'mask':>5} "
          f"{'epochs':>6} {'seconds':>7}")
    for s in scores:
        print(f"{s['set']:<6} {s['defaults']:<28} {s['metric']:<11} {s['value']:>6.3f} {s['batch_size']:>5} "
              f"{s['learning_rate_init']:>7.4f} {str(s['mask_as_input']):>5} {s['epochs']:>6} {s['seconds']:>7.0f}")
    print(f"({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
