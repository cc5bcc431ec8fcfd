"""How fast does one RADICaL model train at different batch sizes? Prints latent R^2 every 50 epochs.

Fixed hyperparameters, no PBT: one model per (trials per step, learning rate) pair on the
benchmark's fast synthetic 2p set (8 Lorenz units/s, ~2.9 frames per cycle, data seed 0), with
the seed config's sizes (generator 100, factors 20, IC 64) and the events' delay removed
(``event_delay_bins: auto``). Every 50 epochs the rates at the posterior means are mapped to the
true latents (``map_to_latents``, validation trials) and the epoch's wall time is reported.

On a CPU an epoch costs about the same at 16 trials per step as at 64 (the sequence loop, not the
batch, sets the cost), so smaller batches give more optimiser steps for the same time; this script
measures what that buys RADICaL's long, 75%-unobserved sequences. ``--frame-rate`` trains the
benchmark's baseline instead (the same events one value per frame, no sub-frame bins; its
rates are interpolated to sub-frame resolution for scoring), to check that baseline's own best
batch size and learning rate.

    python bench/radical_batch_size.py [--runs 64:0.005 16:0.0025 8:0.002] [--epochs 300]
        [--frame-rate] [--seed 0]
        (~5 min per run on one core; the runs share the machine's cores one each)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import time

import numpy as np
import torch

from neurodyn.config import LfadsConfig
from neurodyn.data.event_timing import append_unobserved_bins
from neurodyn.data.subframe import frame_rate_dataset, frames_to_subframes
from neurodyn.evaluate.metrics import map_to_latents
from neurodyn.synth.lorenz_2p import make_lorenz_2p
from neurodyn.train.inference import infer
from neurodyn.train.run import resolve_event_delay, split_dataset
from neurodyn.train.trainer import LfadsTrainer

FIXED = {"observation": "zig", "mask_as_input": True, "ic_enc_dim": 64, "ic_dim": 64, "gen_dim": 100,
         "factors_dim": 20, "co_dim": 0, "batch_threads": 1, "keep_ratio": 0.7, "keep_prob": 0.95,
         "kl_ic_weight": 1e-5, "l2_gen_scale": 1e-4, "kl_increase_epochs": 10, "l2_increase_epochs": 10,
         "learning_rate_patience": 10 ** 6, "early_stopping_patience": 10 ** 6}


def train_and_score(batch_size: int, learning_rate: float, epochs: int, every: int = 50, frame_rate: bool = False,
                    data_seed: int = 0) -> tuple[int, list[tuple[int, float, float]]]:
    """Train one model (RADICaL, or the frame-rate baseline with ``frame_rate``); its optimiser steps
    per epoch and ``(epoch, latent R^2, mean seconds per epoch)`` every ``every`` epochs."""
    torch.set_num_threads(1)
    subframe_dataset = make_lorenz_2p(num_neurons=100, num_conditions=20, trials_per_condition=20,
                                      lorenz_speed=8.0, seed=data_seed)
    k = int(subframe_dataset.attrs["subframe_bins"])
    dataset = frame_rate_dataset(subframe_dataset) if frame_rate else subframe_dataset
    config = LfadsConfig(**FIXED, batch_size=batch_size, learning_rate_init=learning_rate)
    delay = resolve_event_delay(config, dataset)
    data = append_unobserved_bins(dataset.data, delay)
    split = split_dataset(dataset, config)  # the split training uses
    train_idx, valid_idx = split.train, split.valid
    trainer = LfadsTrainer(config, data[train_idx], data[valid_idx])
    latents = subframe_dataset.latents
    rows, seconds = [], 0.0
    for epoch in range(1, epochs + 1):
        seconds += trainer.step_epoch()["seconds"]
        if epoch % every == 0:
            rates = infer(trainer.model, data, num_samples=1)["rates_posterior_mean"][:, delay:]
            if frame_rate:
                rates = frames_to_subframes(rates, k)
            mapping = map_to_latents(rates[train_idx], latents[train_idx], rates[valid_idx], latents[valid_idx])
            rows.append((epoch, mapping.r2, seconds / epoch))
    return int(np.ceil(train_idx.size / batch_size)), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=["64:0.005", "16:0.0025", "8:0.002"],
                        help="BATCH:LEARNING_RATE pairs, one model each")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--processes", type=int, default=2, help="models trained at once (one core each)")
    parser.add_argument("--frame-rate", action="store_true",
                        help="train the frame-rate baseline (events one value per frame) instead of RADICaL")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    args = parser.parse_args()
    runs = [(int(batch), float(rate)) for batch, rate in (run.split(":") for run in args.runs)]
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(args.processes) as pool:
        results = list(pool.map(train_and_score, *zip(*runs), [args.epochs] * len(runs),
                                [min(50, args.epochs)] * len(runs), [args.frame_rate] * len(runs),
                                [args.seed] * len(runs)))
    print(f"{'trials/step':>11} {'lr':>8} {'steps/epoch':>11} "
          + " ".join(f"{'ep ' + str(e):>7}" for e, _, _ in results[0][1]) + f" {'s/epoch':>8}")
    for (batch, rate), (steps, rows) in zip(runs, results):
        print(f"{batch:>11} {rate:>8.4f} {steps:>11} " + " ".join(f"{r2:>7.3f}" for _, r2, _ in rows)
              + f" {rows[-1][2]:>8.2f}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
