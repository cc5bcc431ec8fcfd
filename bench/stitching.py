"""Stitching: does a session with few trials gain from sessions recorded with other neurons?

Data: ``synth.lorenz_sessions`` (one Lorenz system, 20 conditions, 50 bins of 20 ms): sessions of
Poisson neurons read log-linearly from the same latent trajectories, each with its own neurons
(by default 30, 25 and 35 neurons with 8 trials per condition, and a small session of 20 neurons
with 3 trials per condition = 60 trials). Every file names its trials with a ``split`` key: 20% of
each condition's trials (at least one per condition in the large sessions; seeded) are test
trials, never trained on nor used for any choice; the rest are split by ``valid_ratio``.

Models, each with the ``LfadsConfig`` defaults (``--epochs`` caps ``max_epochs``):

* own: ``neurodyn train`` on one session's file (one model per session);
* stitched: ``neurodyn train`` on every file (per-session read-in and readout, PCR-initialised).

Scores, per session, on its test trials (standard inference: each trial's own posterior): latent
R^2 of ``map-to-latents`` (ridge from the inferred log-rates to the true latents, fit on the
session's training trials) and rate R^2 against the true rates.

Usage::

    PYTHONPATH=src python bench/stitching.py [--epochs N] [--processes 2] [--seed 0]
        [--neurons 30 25 35 20] [--trials-per-condition 8 8 8 3] [--quick]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import commit_line, machine_line

NUM_CONDITIONS, NUM_SAMPLES = 20, 50
TEST_FRACTION = 0.2


def write_sessions(folder: Path, neurons: list[int], trials: list[int], seed: int) -> list[Path]:
    """The sessions' data files, each with a seeded ``split`` (test trials spread over conditions)."""
    from neurodyn.data.seed_format import write_dataset
    from neurodyn.synth.lorenz_sessions import make_lorenz_sessions

    rng = np.random.default_rng(seed + 1000)
    paths = []
    for index, dataset in enumerate(make_lorenz_sessions(neurons, trials, NUM_CONDITIONS, NUM_SAMPLES, seed=seed)):
        split = np.full(dataset.num_trials, "train", dtype=object)
        order = rng.permutation(dataset.num_trials)
        num_test = int(round(TEST_FRACTION * dataset.num_trials))
        split[order[:num_test]] = "test"
        rest = order[num_test:]
        split[rest[:max(1, int(round(0.2 * rest.size)))]] = "valid"
        dataset.split = split.astype(str)
        path = folder / f"session{index}{'_small' if trials[index] == min(trials) else ''}.h5"
        write_dataset(path, dataset)
        paths.append(path)
    return paths


def train_and_score(name: str, paths: list[str], out: str, epochs: int | None, seed: int, quick: bool) -> list[dict]:
    """Train one model (one torch thread) and score every session it was trained on."""
    import torch

    torch.set_num_threads(1)
    from neurodyn.config import LfadsConfig
    from neurodyn.data.seed_format import read_dataset
    from neurodyn.evaluate.latents_report import map_latents_run
    from neurodyn.evaluate.metrics import rate_r2
    from neurodyn.runs.outputs import held_out_split, read_run_outputs
    from neurodyn.train.run import train_model

    started = time.perf_counter()
    settings = {"seed": seed, "device": "cpu"}
    if epochs is not None:
        settings["max_epochs"] = epochs
    if quick:
        settings.update(kl_increase_epochs=1, l2_increase_epochs=1, posterior_samples=5)
    result = train_model(LfadsConfig(**settings), paths if len(paths) > 1 else paths[0], out, progress=False,
                         echo=lambda _: None)
    seconds = time.perf_counter() - started
    rows = []
    for path in paths:
        latents = map_latents_run(out, path, Path(out) / f"{Path(path).stem}_latents.png")
        outputs = read_run_outputs(out, data_path=path)
        scored = outputs[held_out_split(outputs)]
        truth = read_dataset(path).truth[scored.trial_idx]
        rows.append(dict(model=name, session=Path(path).stem, latent_r2=latents["latent_r2"],
                         rate_r2=rate_r2(truth, scored.rates), test_trials=int(scored.trial_idx.size),
                         epochs=result.trainer.epoch, best_epoch=result.trainer.best_epoch, seconds=seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neurons", type=int, nargs="+", default=[30, 25, 35, 20])
    parser.add_argument("--trials-per-condition", type=int, nargs="+", default=[8, 8, 8, 3])
    parser.add_argument("--epochs", type=int, default=None, help="max_epochs (default: the config default)")
    parser.add_argument("--processes", type=int, default=2, help="models trained at once (one thread each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 epochs")
    args = parser.parse_args()
    if args.quick:
        args.epochs = 3
    commit = commit_line()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        paths = [str(p) for p in write_sessions(folder, args.neurons, args.trials_per_condition, args.seed)]
        jobs = [("stitched", paths, str(folder / "stitched"))]
        jobs += [("own", [path], str(folder / f"own_{Path(path).stem}")) for path in paths]
        rows = []
        with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, args.processes)) as pool:
            futures = [pool.submit(train_and_score, name, job_paths, out, args.epochs, args.seed, args.quick)
                       for name, job_paths, out in jobs]
            for future in concurrent.futures.as_completed(futures):
                for row in future.result():
                    rows.append(row)
                    print(f"{row['model']} {row['session']}: latent R^2 {row['latent_r2']:.3f}, rate R^2 "
                          f"{row['rate_r2']:.3f} ({row['epochs']} epochs, best {row['best_epoch']}, "
                          f"{row['seconds']:.0f} s)", flush=True)
    wall = time.perf_counter() - started
    import torch

    print(f"\nStitching: {len(paths)} sessions of one Lorenz system, {NUM_CONDITIONS} conditions x {NUM_SAMPLES} bins; "
          f"neurons {args.neurons}, trials per condition {args.trials_per_condition}; seed {args.seed}")
    print(f"finished: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; commit at the start: {commit}; "
          f"torch {torch.__version__}")
    print(f"machine: {machine_line()}")
    print(f"command: {' '.join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])}")
    header = (f"{'session':<16} | {'neurons':>7} | {'test trials':>11} | {'latent R^2 own':>14} | "
              f"{'latent R^2 stitched':>19} | {'rate R^2 own':>12} | {'rate R^2 stitched':>17}")
    print(header)
    print("-" * len(header))
    by = {(r["model"], r["session"]): r for r in rows}
    for index, path in enumerate(paths):
        session = Path(path).stem
        own, stitched = by[("own", session)], by[("stitched", session)]
        print(f"{session:<16} | {args.neurons[index]:>7} | {own['test_trials']:>11} | {own['latent_r2']:>14.3f} | "
              f"{stitched['latent_r2']:>19.3f} | {own['rate_r2']:>12.3f} | {stitched['rate_r2']:>17.3f}")
    stitched_row = next(r for r in rows if r["model"] == "stitched")
    print(f"wall {wall:.0f} s ({wall / 60:.1f} min); stitched model: {stitched_row['epochs']} epochs (best "
          f"{stitched_row['best_epoch']}), {stitched_row['seconds']:.0f} s")


if __name__ == "__main__":
    main()
