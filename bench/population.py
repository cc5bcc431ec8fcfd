"""Worker-epochs per second of a PBT generation: the population engine vs the embedded engine vs one model.

Workload: bench/speed.py's reference (29 neurons x 50 bins, 1040 training + 260 validation trials,
batch 128, ic/ci encoders 64, controller 64, co_dim 4, ic_dim 64, generator 100, factors 40, CD on).
Each worker has its own seed, learning rate and keep_ratio. On a GPU the population replays its
training step from a CUDA graph; ``NEURODYN_CUDA_GRAPHS=0`` in the environment times it without. A row times one generation of
``--epochs`` epochs for ``W`` workers through the engine, set-up included (building the trainers;
for the embedded engine also starting its processes), in a fresh process, and reports
worker-epochs per second and that process's peak resident memory (with its children's). ``single``
trains one model for the same epochs in this process (W = 1).

    python bench/population.py [--workers 8 20] [--epochs 2] [--engines population embedded single]
                               [--device cpu|cuda] [--backend library|loop|compiled]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

MODEL = dict(ic_enc_dim=64, ci_enc_dim=64, con_dim=64, co_dim=4, ic_dim=64, gen_dim=100, factors_dim=40,
             batch_size=128, batch_threads=1)


def workload_data():
    """The reference workload's trials: ``(train, valid)`` arrays (1040 and 260 trials x 50 bins x 29 neurons)."""
    from neurodyn.data.seed_format import split_trials
    from neurodyn.synth.lorenz_spikes import make_lorenz_spikes

    dataset = make_lorenz_spikes(num_conditions=65, trials_per_condition=20, seed=0)
    train_idx, valid_idx = split_trials(dataset.num_trials, 0.2, 0, dataset.condition)
    return dataset.data[train_idx], dataset.data[valid_idx]


def worker_config(worker: int, device: str):
    """Worker ``worker``'s settings: the reference model with its own seed, learning rate and keep_ratio."""
    from neurodyn.config import LfadsConfig

    return LfadsConfig(**{**MODEL, "device": device}, seed=worker, learning_rate_init=4e-3 * (1 + 0.1 * worker),
                       keep_ratio=0.6 + 0.02 * (worker % 10))


def _row(engine: str, workers: int, epochs: int, device: str, backend: str | None) -> dict:
    import torch

    from neurodyn.lfads import stacked as population_model
    if backend is not None:  # compare the population's recurrent backends (e.g. the GPU's library vs loop)
        population_model.recurrent_backend = lambda _device: backend

    from neurodyn.pbt.engines import EmbeddedEngine, WorkerData, WorkerJob, cpu_cores, run_worker_generation
    from neurodyn.pbt.population_engine import PopulationEngine

    data = WorkerData(*workload_data())
    jobs = [WorkerJob(w, 0, worker_config(w, device).model_dump(), None, epochs, 0) for w in range(workers)]
    started = time.perf_counter()
    if engine == "population":
        population = PopulationEngine(data, device=device, num_workers=workers)
        try:
            results = list(population.run(jobs))
        finally:
            population.close()
    elif engine == "embedded":
        pool = EmbeddedEngine(data, min(cpu_cores(), workers), device)
        try:
            results = list(pool.run(jobs))
        finally:
            pool.close()
    else:
        torch.set_num_threads(cpu_cores())
        results = [run_worker_generation(jobs[0], data, device)]
    seconds = time.perf_counter() - started
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    gpu_peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda" else 0.0
    from neurodyn.train.cuda_graphs import cuda_graphs_enabled

    notes = [backend] if backend else []
    if device == "cuda" and not cuda_graphs_enabled():
        notes.append("no graphs")
    label = f"{engine} ({', '.join(notes)})" if notes and engine == "population" else engine
    return dict(engine=label, workers=len(results), seconds=seconds, worker_epochs_per_s=len(results) * epochs / seconds,
                peak_mib=peak, gpu_peak_mib=gpu_peak,
                mean_metric=sum(r.metric for r in results) / len(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 20])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--engines", nargs="+", default=["population", "embedded", "single"],
                        choices=["population", "embedded", "single"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--backend", choices=["library", "loop", "compiled"],
                        help="the population's recurrent backend (default: the device's own choice, "
                             "neurodyn.lfads.stacked.recurrent_backend)")
    parser.add_argument("--row", nargs=2, metavar=("ENGINE", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        print(json.dumps(_row(args.row[0], int(args.row[1]), args.epochs, args.device, args.backend)))
        return
    print(f"{'engine':>20} {'workers':>7} {'seconds':>8} {'worker-epochs/s':>16} {'peak MiB':>9} "
          f"{'GPU MiB':>8} {'mean metric':>12}")
    for workers in args.workers:
        for engine in args.engines:
            if engine == "single" and workers != args.workers[0]:
                continue
            command = [sys.executable, __file__, "--row", engine, str(1 if engine == "single" else workers),
                       "--epochs", str(args.epochs), "--device", args.device]
            if args.backend:
                command += ["--backend", args.backend]
            row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            print(f"{row['engine']:>20} {row['workers']:>7} {row['seconds']:>8.1f} {row['worker_epochs_per_s']:>16.3f} "
                  f"{row['peak_mib']:>9.0f} {row['gpu_peak_mib']:>8.0f} {row['mean_metric']:>12.5f}")


if __name__ == "__main__":
    main()
