"""Where a population's training step spends its time: seconds per step and the operations that take it.

Workload: bench/population.py's (the reference model of bench/speed.py, batch 128, CD on), ``W``
workers in one ``PopulationTrainer``. Prints, per variant (recurrent backend, with or without the
CUDA graph), the mean milliseconds of a training step (after three warm-up steps, which include the
graph's capture; the GPU synchronised) and the number of operator calls per step, then
the profiler's table of the operators with the most host (CPU) time, which on a GPU shows whether
the step waits on launching kernels (many calls of a few microseconds each) or on arithmetic.

    python bench/population_profile.py [--device cuda] [--workers 8] [--variants library+graph library loop]
                                       [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from population import worker_config, workload_data  # bench/population.py: the same workload

from neurodyn.lfads import stacked as population_model
from neurodyn.train.cuda_graphs import CapturedStep
from neurodyn.train.population_trainer import PopulationTrainer


def _population(workers: int, device: str) -> PopulationTrainer:
    return PopulationTrainer.from_configs([worker_config(w, device) for w in range(workers)], *workload_data())


def _synchronise(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--variants", nargs="+", default=["library+graph", "library", "loop"],
                        help="recurrent backends (library, loop, compiled), '+graph': the step replayed from a "
                             "CUDA graph")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=15, help="operators listed per backend")
    args = parser.parse_args()
    original = population_model.recurrent_backend
    population = _population(args.workers, args.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    for variant in args.variants:
        backend, graph = variant.removesuffix("+graph"), variant.endswith("+graph")
        population_model.recurrent_backend = lambda _device, backend=backend: backend
        population.captured_step = CapturedStep(population._step, enabled=graph and args.device == "cuda")
        population.train_epoch(max_steps=3)  # warm-up (allocator, cuDNN plans) and the graph's capture
        _synchronise(args.device)
        started = time.perf_counter()
        population.train_epoch(max_steps=args.steps)
        _synchronise(args.device)
        seconds = (time.perf_counter() - started) / args.steps
        with profile(activities=activities) as profiler:
            population.train_epoch(max_steps=1)
            _synchronise(args.device)
        events = profiler.key_averages()
        calls = sum(event.count for event in events if event.key.startswith("aten::"))
        graph_note = (f"graph replays {population.captured_step.replays}, capture failure: "
                      f"{population.captured_step.failure}") if graph else "no graph"
        print(f"\n== {variant}: {seconds * 1e3:.1f} ms per training step of {args.workers} workers "
              f"({args.device}), {calls} aten operator calls per step; {graph_note}")
        print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=40))
    population_model.recurrent_backend = original


if __name__ == "__main__":
    main()
