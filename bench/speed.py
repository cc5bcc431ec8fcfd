"""Seconds per LFADS training epoch on the issue's reference workload; prints a table.

Workload: 29 neurons x 50 bins, 1040 training + 260 validation trials (synthetic Lorenz), batch 128,
ic_enc_dim 64, ci_enc_dim 64, con_dim 64, co_dim 4, ic_dim 64, gen_dim 100, factors_dim 40,
coordinated dropout on. An epoch = one pass over the training trials plus the validation pass.
Reference on this 2-core machine: lfads-torch 2.42 s/epoch (median of 150 epochs), 877 MiB peak.

    python bench/speed.py [--epochs 150] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from neurodyn.config import LfadsConfig
from neurodyn.data.seed_format import split_trials
from neurodyn.synth.lorenz_spikes import make_lorenz_spikes
from neurodyn.train.trainer import LfadsTrainer

LFADS_TORCH_SECONDS = 2.42
LFADS_TORCH_PEAK_MIB = 877
MODEL = dict(ic_enc_dim=64, ci_enc_dim=64, con_dim=64, co_dim=4, ic_dim=64, gen_dim=100, factors_dim=40,
             batch_size=128, keep_ratio=0.7, device="cpu")


def epoch_seconds(threads: int, epochs: int) -> list[float]:
    torch.set_num_threads(threads)
    dataset = make_lorenz_spikes(num_conditions=65, trials_per_condition=20, seed=0)
    train_idx, valid_idx = split_trials(dataset.num_trials, 0.2, 0, dataset.condition)
    assert len(train_idx) == 1040
    trainer = LfadsTrainer(LfadsConfig(**MODEL), dataset.data[train_idx], dataset.data[valid_idx])
    trainer.step_epoch()  # warm-up: allocator and kernel selection
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        trainer.step_epoch()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    print(f"{'threads':>7} {'median s/epoch':>15} {'min':>7} {'max':>7} {'vs lfads-torch':>15} {'peak MiB':>9}")
    for threads in args.threads:
        times = epoch_seconds(threads, args.epochs)
        median = statistics.median(times)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{threads:>7} {median:>15.3f} {min(times):>7.3f} {max(times):>7.3f} "
              f"{LFADS_TORCH_SECONDS / median:>14.2f}x {peak:>9.0f}")
    print(f"reference: lfads-torch {LFADS_TORCH_SECONDS} s/epoch, {LFADS_TORCH_PEAK_MIB} MiB; target <= "
          f"{LFADS_TORCH_SECONDS / 2:.2f} s/epoch (peak memory is the process maximum over all rows)")


if __name__ == "__main__":
    main()
