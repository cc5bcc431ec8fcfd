"""AutoLFADS vs a single LFADS with default hyperparameters vs random search; prints tables.

The AutoLFADS paper's comparison, on a small synthetic Lorenz set (about 100 training trials, where
hand-set hyperparameters overfit): every method gets the same architecture, the same number of
workers and the same epochs per worker; each picks its model by the smoothed validation NLL only
(never by the true rates). Reported: that validation NLL, the rate R^2 of the picked model on the
validation trials (posterior sample-and-average rates vs the true rates) and wall time.

Engine overhead: worker-epochs per second of the PBT population on the embedded engine vs epochs
per second of one model trained alone with all cores (target >= 0.9).

``--user-defaults`` gives every method the config a user would write (only the population's size and
budget; ``batch_size``, learning rate, ramps and the rest at their defaults) instead of the shared
short-ramp settings; with ``--keep``, ``--neurons`` and ``--trials-per-condition`` it runs the larger,
sparser sets of issue #16 (e.g. 5 of 35 neurons observed, 65 conditions x 24 trials).

    python bench/pbt_vs_single.py [--workers 8] [--generations 12] [--epochs-per-generation 10]
        [--conditions 13] [--trials-per-condition 10] [--neurons 29] [--keep K] [--user-defaults]
        [--no-random-search]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neurodyn.config import LfadsConfig, validate_run_config
from neurodyn.data.seed_format import split_trials, write_dataset
from neurodyn.evaluate.metrics import rate_r2
from neurodyn.runs.layout import find_output_dir
from neurodyn.runs.outputs import read_run_outputs
from neurodyn.pbt.engines import EmbeddedEngine, WorkerData, WorkerJob, default_max_processes
from neurodyn.runs.checkpoint import build_model, decode_state
from neurodyn.pbt.run import run_pbt
from neurodyn.pbt.search_space import as_config_value, initial_values, is_log_scaled
from neurodyn.synth.lorenz_spikes import make_lorenz_spikes
from neurodyn.train.inference import infer
from neurodyn.train.trainer import LfadsTrainer

# Settings shared by every method (short ramps for the short budget).
FIXED = {"run_name": "pbt_bench", "kl_increase_epochs": 20, "l2_increase_epochs": 20, "batch_size": 32,
         "device": "cpu", "posterior_samples": 20}


def _selected_nll(state_or_trainer) -> float:
    """The smoothed validation NLL a model was picked by: the best after the ramps, else the last."""
    get = state_or_trainer.get if isinstance(state_or_trainer, dict) else lambda k: getattr(state_or_trainer, k)
    best = get("best_valid_nll")
    return best if math.isfinite(best) else get("valid_nll_smoothed")


def single_default(train, valid, truth, epochs: int) -> dict:
    """One LFADS, default hyperparameters, early stopping on the smoothed validation NLL."""
    torch.set_num_threads(default_max_processes())
    started = time.perf_counter()
    trainer = LfadsTrainer(LfadsConfig(**FIXED, max_epochs=epochs), train, valid)
    for note in trainer.resolved_notes:
        print(f"  single model: {note}")
    trainer.fit(progress=False)
    seconds = time.perf_counter() - started
    rates = infer(trainer.model, valid, FIXED["posterior_samples"])["rates"]
    return {"valid_nll": _selected_nll(trainer), "rate_r2": rate_r2(truth, rates), "seconds": seconds,
            "epochs_per_second": trainer.epoch / seconds}


def random_search(train, valid, truth, workers: int, epochs: int, search_space, seed: int) -> dict:
    """``workers`` independent models with hyperparameters drawn at random from the same space."""
    rng = np.random.default_rng(seed)
    draws = {}
    for key, spec in search_space.items():
        mode = "logrand" if is_log_scaled(spec) else "rand"
        draws[key] = initial_values(spec.model_copy(update={"init_sample_mode": mode}), workers, rng)
    started = time.perf_counter()
    engine = EmbeddedEngine(WorkerData(train, valid), min(workers, default_max_processes()))
    jobs = []
    for w in range(workers):
        values = {**FIXED, **{k: as_config_value(k, draws[k][w]) for k in draws}, "seed": seed + w}
        jobs.append(WorkerJob(w, 0, LfadsConfig(**values).model_dump(), None, epochs, seed))
    try:
        states = [decode_state(result.state) for result in engine.run(jobs)]
    finally:
        engine.close()
    seconds = time.perf_counter() - started
    best = min(states, key=lambda s: _selected_nll(s) if math.isfinite(_selected_nll(s)) else math.inf)
    model, _ = build_model(best, train.shape[-1], weights="best_model_state")
    rates = infer(model, valid, FIXED["posterior_samples"])["rates"]
    return {"valid_nll": _selected_nll(best), "rate_r2": rate_r2(truth, rates), "seconds": seconds}


def autolfads(data_path: Path, truth, workers: int, generations: int, epochs_per_generation: int,
              seed: int, out: Path) -> dict:
    config = validate_run_config({**FIXED, "num_workers": workers, "max_generations": generations,
                                  "epochs_per_generation": epochs_per_generation,
                                  "num_no_best_to_stop": generations, "seed": seed})
    started = time.perf_counter()
    result = run_pbt(config, data_path, out, progress=False, echo=lambda line: None)
    seconds = time.perf_counter() - started
    rates = read_run_outputs(find_output_dir(out))["valid"].rates
    return {"valid_nll": result.best_metric, "rate_r2": rate_r2(truth, rates), "seconds": seconds,
            "worker_epochs_per_second": workers * result.generations * epochs_per_generation / seconds,
            "search_space": config.search_space}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--generations", type=int, default=12)
    parser.add_argument("--epochs-per-generation", type=int, default=10)
    parser.add_argument("--conditions", type=int, default=13, help="conditions (x --trials-per-condition); 80%% train")
    parser.add_argument("--trials-per-condition", type=int, default=10)
    parser.add_argument("--neurons", type=int, default=29)
    parser.add_argument("--keep", type=int, default=None, help="neurons observed per bin (default: all)")
    parser.add_argument("--user-defaults", action="store_true",
                        help="every method with the defaults (no shared batch size or short ramps)")
    parser.add_argument("--no-random-search", action="store_true", help="skip the random-search row")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    epochs = args.generations * args.epochs_per_generation
    if args.user_defaults:
        for key in ("kl_increase_epochs", "l2_increase_epochs", "batch_size"):
            FIXED.pop(key)
    print(f"settings every method shares: {FIXED}")

    dataset = make_lorenz_spikes(num_neurons=args.neurons, num_conditions=args.conditions,
                                 trials_per_condition=args.trials_per_condition, keep=args.keep, seed=args.seed)
    train_idx, valid_idx = split_trials(dataset.num_trials, 0.2, args.seed, dataset.condition)
    train, valid, truth = dataset.data[train_idx], dataset.data[valid_idx], dataset.truth[valid_idx]
    with tempfile.TemporaryDirectory() as folder:
        data_path = Path(folder) / "pbt_bench_data.h5"
        write_dataset(data_path, dataset)
        print(f"data: {len(train_idx)} train / {len(valid_idx)} valid trials, {dataset.num_neurons} neurons x "
              f"{dataset.num_samples} bins ({dataset.attrs['keep']} observed per bin); {args.workers} workers x "
              f"{epochs} epochs each")
        pbt = autolfads(data_path, truth, args.workers, args.generations, args.epochs_per_generation, args.seed,
                        Path(folder) / "pbt")
        single = single_default(train, valid, truth, epochs)
        search = None if args.no_random_search else random_search(train, valid, truth, args.workers, epochs,
                                                                   pbt["search_space"], args.seed)

    print(f"\n{'method':<26} {'valid NLL':>10} {'rate R^2':>9} {'wall s':>8}")
    rows = [("LFADS, default HPs", single), (f"random search ({args.workers})", search),
            (f"AutoLFADS ({args.workers} workers)", pbt)]
    for name, row in rows:
        if row is not None:
            print(f"{name:<26} {row['valid_nll']:>10.5f} {row['rate_r2']:>9.4f} {row['seconds']:>8.1f}")
    others = [row for _, row in rows[:2] if row is not None]
    wins = pbt["valid_nll"] < min(r["valid_nll"] for r in others) and \
        pbt["rate_r2"] > max(r["rate_r2"] for r in others)
    print(f"AutoLFADS best on both metrics: {'yes' if wins else 'NO'}; at least as good as the default model on "
          f"the metric it selects by (smoothed validation NLL): "
          f"{'yes' if pbt['valid_nll'] <= single['valid_nll'] else 'NO'}")
    ratio = pbt["worker_epochs_per_second"] / single["epochs_per_second"]
    print(f"\nengine overhead: population {pbt['worker_epochs_per_second']:.2f} worker-epochs/s vs single model "
          f"{single['epochs_per_second']:.2f} epochs/s -> ratio {ratio:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
