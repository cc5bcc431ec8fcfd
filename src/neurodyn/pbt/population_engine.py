"""The population engine: a generation's workers trained together as one batched model, in this process.

Each job is prepared exactly as the embedded engine prepares it (``engines.prepare_worker``: the
start state, the explored hyperparameters, the worker's random stream for the generation); then
all workers train their epochs as one ``PopulationTrainer`` and each result carries the worker's
state in ``LfadsTrainer``'s format, so the driver, the store, resume and export see the same files
as with the other engines. Worker k's numbers are those of ``LfadsTrainer`` with one batch shard
(``batch_threads: 1``); every worker of a generation must share ``batch_size`` and the epoch count.
"""

from __future__ import annotations

import time
from typing import Iterator

import torch

from neurodyn.errors import NeurodynError
from neurodyn.pbt.engines import WorkerData, WorkerJob, WorkerResult, prepare_worker, worker_result
from neurodyn.train.allocator import keep_freed_memory


class PopulationEngine:
    """Runs every job of a generation at once as one batched population on ``device`` (None: the config's).

    ``threads``: torch's CPU threads while it trains (default: all this process may use)."""

    def __init__(self, data: WorkerData, device: str | None = None, threads: int | None = None):
        self.data = data
        self.device = device
        self.threads = threads

    def run(self, jobs: list[WorkerJob]) -> Iterator[WorkerResult]:
        """Train all ``jobs`` together; yields their results (in job order) when the generation is done."""
        from neurodyn.train.population_trainer import PopulationTrainer

        if not jobs:
            return
        epochs = sorted({job.epochs for job in jobs})
        if len(epochs) > 1:
            raise NeurodynError(f"the population engine trains every worker of a generation for the same number "
                                f"of epochs; got {epochs}")
        keep_freed_memory()  # a population's activations would otherwise page-fault at every step
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            started = time.perf_counter()
            members = [prepare_worker(job, self.data, self.device) for job in jobs]
            firsts = [len(member.history) for member in members]
            population = PopulationTrainer(members)
            for _ in range(epochs[0]):
                population.step_epoch()
            # Each worker's share of the generation's time, so the run's log keeps its meaning.
            seconds = (time.perf_counter() - started) / len(jobs)
            results = [worker_result(job, member.valid_nll_smoothed, population.state_dict_of(k),
                                     member.history[first:], seconds)
                       for k, (job, member, first) in enumerate(zip(jobs, members, firsts))]
        finally:
            torch.set_num_threads(previous)
        yield from results

    def close(self) -> None:
        pass

    def terminate(self) -> None:
        pass
