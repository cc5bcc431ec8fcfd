"""The population engine: a generation's workers trained together as batched models.

Each job is prepared exactly as the embedded engine prepares it (``engines.prepare_worker``: the
start state, the explored hyperparameters, the worker's random stream for the generation); then
the workers train their epochs as ``PopulationTrainer`` populations and each result carries the
worker's state in ``LfadsTrainer``'s format, so the driver, the store, resume and export see the same
files as with the other engines. Worker k's numbers are those of ``LfadsTrainer`` with one batch
shard (``batch_threads: 1``); every worker of a generation must share ``batch_size`` and the epoch
count.

How the generation is split (``population_layout``): on a CPU one population per core, each in its
own process with one thread (a population runs its time steps one after another, so one process
keeps about one core busy; several processes keep them all busy), the workers dealt out evenly; on
GPUs one process per GPU. One population in this process when there is one share. Memory: on a GPU
a process first measures one worker's training memory (``measure_worker_bytes``), on a CPU the engine
estimates it once (``estimate_worker_bytes_cpu``) against the memory the system has available; a
share of the workers that would not fit trains as several populations one after another
(``workers_that_fit``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from neurodyn.config import SEARCHABLE_HYPERPARAMETERS, LfadsConfig
from neurodyn.device import resolve_device
from neurodyn.errors import NeurodynError
from neurodyn.pbt.engines import (WorkerData, WorkerJob, WorkerResult, assign_devices, cpu_cores, deal_out,
                                  prepare_worker, process_data, start_process_pool, worker_result)
from neurodyn.train.allocator import available_memory_bytes

# Share of a GPU's free memory (or of the system's available memory) a population may plan to use (the
# rest: allocator slack, fragmentation, other programs).
GPU_MEMORY_SHARE = 0.8
# A CPU training step's peak over the activations it saves for the backward pass: the backward pass's
# own buffers (gradients of the activations, the compiled kernels' work space) come on top. Measured
# at bench/population.py's reference workload: 82 MiB saved per worker per step, the process grew by
# 150-160 MiB per worker (1.9x).
CPU_PEAK_PER_SAVED = 2.0


@dataclass(frozen=True)
class PopulationLayout:
    """How a generation's workers are split: ``populations`` batched models, trained in as many processes
    (this process when 1), each with ``threads`` torch threads and its device (None: the config's)."""

    populations: int
    threads: int
    devices: tuple[str | None, ...]

    def describe(self, num_workers: int) -> str:
        """One log line: what runs where, and why."""
        on = sorted({d for d in self.devices if d})
        where = f" on {', '.join(on)}" if on else ""
        if self.populations == 1:
            return (f"engine: population, {num_workers} workers in one batched model in this process "
                    f"({self.threads} thread{'s' if self.threads != 1 else ''}){where}")
        return (f"engine: population, {num_workers} workers as {self.populations} batched models in "
                f"{self.populations} processes x {self.threads} thread{'s' if self.threads != 1 else ''}{where} "
                f"(one per {'GPU' if on else 'CPU core'}; the workers dealt out evenly"
                + ("; a share too large for its GPU's free memory trains as several populations in turn)" if on else ")"))


def population_layout(num_workers: int, cores: int, num_gpus: int, device_setting: str = "auto",
                      max_populations: int | None = None) -> PopulationLayout:
    """The split of ``num_workers`` workers: one population per GPU when there are GPUs the config may
    use, else one per CPU core (the cores shared out as threads), never more populations than workers
    or than ``max_populations`` (the config's ``max_processes``)."""
    limit = min(num_workers, max_populations or num_workers)
    devices = assign_devices(max(1, num_gpus), num_gpus, device_setting)
    if devices[0] is not None:
        populations = max(1, min(num_gpus, limit))
        return PopulationLayout(populations, max(1, cores // populations), tuple(devices[:populations]))
    populations = max(1, min(cores, limit))
    return PopulationLayout(populations, max(1, cores // populations), (None,) * populations)


def workers_that_fit(worker_bytes: int, free_bytes: int, share: float = GPU_MEMORY_SHARE) -> int:
    """How many workers of ``worker_bytes`` each one population may hold in ``free_bytes`` (at least 1)."""
    return max(1, int(share * free_bytes // max(1, worker_bytes)))


def measure_worker_bytes(job: WorkerJob, data: WorkerData, device: str) -> tuple[int, int]:
    """``(bytes one worker needs, bytes free)`` on the CUDA ``device``: a throwaway population of one
    worker trains and validates until every step is replayed from its CUDA graph (the graphs keep
    their steps' memory); its weights, Adam moments, the peak of the memory PyTorch holds (reserved,
    not only in use) and what a larger group's block-diagonal encoder weights add per worker
    (``PopulationLFADS.block_diagonal_bytes_per_worker``) count; the data (which a population holds
    once) does not."""
    from neurodyn.train.population_trainer import PopulationTrainer

    with torch.cuda.device(device):  # empty_cache works on the current device: make it this one
        torch.cuda.synchronize(device)
        member = prepare_worker(job, data, device)
        population = PopulationTrainer([member])
        torch.cuda.empty_cache()  # memory cached earlier would hide the growth
        torch.cuda.reset_peak_memory_stats(device)
        settled = torch.cuda.memory_reserved(device)  # data, weights (the member's and the population's)
        for _ in range(population.captured_step.warmup_steps + 1):
            population.step_epoch()
        torch.cuda.synchronize(device)
        weights = sum(p.numel() * p.element_size() for p in population.parameters)
        needed = (torch.cuda.max_memory_reserved(device) - settled + 3 * weights  # weights and two Adam moments
                  + population.model.block_diagonal_bytes_per_worker())
        population.release_graphs()
        del population, member
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info(device)
    return int(needed), int(free)


def estimate_worker_bytes_cpu(job: WorkerJob, data: WorkerData) -> int:
    """Bytes one worker of ``job``'s settings needs in a CPU population: a throwaway population of one
    takes one training step; the storage of every tensor it keeps for the backward pass, times
    ``CPU_PEAK_PER_SAVED``, plus the weights, their gradients and two Adam moments. The data (held once
    per population) does not count."""
    from neurodyn.train.population_trainer import PopulationTrainer

    population = PopulationTrainer([prepare_worker(job, data, None)])
    storages: dict[int, int] = {}

    def remember(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(remember, lambda tensor: tensor):
        population.train_epoch(max_steps=1)
    weights = sum(p.numel() * p.element_size() for p in population.parameters)
    return int(CPU_PEAK_PER_SAVED * sum(storages.values()) + 4 * weights)


def cpu_workers_per_population(worker_bytes: int, available_bytes: int | None, populations: int) -> int | None:
    """Workers one of ``populations`` CPU populations (trained at once) may hold: an equal part of the
    available memory each; None (no limit) when the available memory is unknown."""
    if available_bytes is None:
        return None
    return workers_that_fit(worker_bytes, available_bytes // max(1, populations))


_FITTING: dict[str, int] = {}


def _fitting_workers(job: WorkerJob, data: WorkerData, device: str | None, cpu_cap: int | None) -> int | None:
    """Workers per population: on a CUDA ``device`` measured (once per process and device), on a CPU
    the engine's plan ``cpu_cap`` (None: no limit)."""
    if device is None or not str(device).startswith("cuda") or not torch.cuda.is_available():
        return cpu_cap
    if device not in _FITTING:
        _FITTING[device] = workers_that_fit(*measure_worker_bytes(job, data, device))
    return _FITTING[device]


def describe_cpu_plan(worker_bytes: int, available_bytes: int | None, cap: int | None, share: int) -> str:
    """One log line: memory per worker, what is available, and whether a population's ``share`` of the
    workers fits (``cap``: the most workers a population may hold)."""
    mib = 2 ** 20
    line = f"population memory: about {worker_bytes / mib:.0f} MiB per worker on the CPU"
    if available_bytes is None:
        return line + " (the system's available memory could not be read: populations are not limited)"
    line += f", {available_bytes / mib:.0f} MiB available"
    if cap is None or cap >= share:
        return line + f": each population's {share} worker{'s' if share != 1 else ''} fit"
    return (line + f" -> at most {cap} worker{'s' if cap != 1 else ''} per population: a share of {share} trains "
            f"as {math.ceil(share / cap)} populations in turn")


def train_population(jobs: list[WorkerJob], data: WorkerData, device: str | None = None,
                     max_workers: int | None = None) -> list[WorkerResult]:
    """Train ``jobs`` (same epoch count) as one ``PopulationTrainer``, or with ``max_workers`` as several
    populations of at most that many, one after another; their results in job order."""
    if max_workers is not None and len(jobs) > max_workers:
        groups = deal_out(jobs, math.ceil(len(jobs) / max_workers))
        return [result for group in groups for result in train_population(group, data, device)]
    from neurodyn.train.population_trainer import PopulationTrainer

    started = time.perf_counter()
    members = [prepare_worker(job, data, device) for job in jobs]
    firsts = [len(member.history) for member in members]
    population = PopulationTrainer(members)
    try:
        for _ in range(jobs[0].epochs):
            population.step_epoch()
        # Each worker's share of the population's time, so the run's log keeps its meaning.
        seconds = (time.perf_counter() - started) / len(jobs)
        return [worker_result(job, member.valid_nll_smoothed, member.state_dict(), member.history[first:], seconds)
                for job, member, first in zip(jobs, members, firsts)]
    finally:
        population.release_graphs()  # the next population (or generation) gets the GPU memory at once


def _train_in_process(share: tuple[list[WorkerJob], int | None]) -> list[WorkerResult]:
    """A population process's share of the generation with the engine's CPU plan (None on a GPU, where
    the process measures its own device)."""
    jobs, cpu_cap = share
    data, device = process_data()
    return train_population(jobs, data, device, _fitting_workers(jobs[0], data, device, cpu_cap))


def train_share_in_task(jobs: list[WorkerJob], data: WorkerData, threads: int) -> list[WorkerResult]:
    """A Ray task's share of a generation (``RayEngine`` with a ``population_task``), trained as batched
    populations on what the task was given: its GPU (Ray shows a task its GPU as ``cuda:0``) when the
    config's device resolves to one, else ``threads`` CPU cores. Memory is planned as the population
    engine plans it: a GPU's measured, on a CPU an equal part of the node's available memory for each
    task of this size the node can hold. Results in job order."""
    torch.set_num_threads(threads)
    device = "cuda:0" if resolve_device(LfadsConfig(**jobs[0].config).device).type == "cuda" else None
    cpu_cap = None
    if device is None:
        cpu_cap = cpu_workers_per_population(_cpu_worker_bytes_once(jobs[0], data), available_memory_bytes(),
                                             max(1, cpu_cores() // threads))
    return train_population(jobs, data, device, _fitting_workers(jobs[0], data, device, cpu_cap))


_CPU_WORKER_BYTES: dict[tuple, int] = {}


def _cpu_worker_bytes_once(job: WorkerJob, data: WorkerData) -> int:
    """``estimate_worker_bytes_cpu`` measured once per process for a run's architecture and data (a Ray
    worker process trains a share every generation; the estimate takes a training step)."""
    key = (data.train.shape, tuple(sorted((name, repr(value)) for name, value in job.config.items()
                                          if name not in SEARCHABLE_HYPERPARAMETERS and name != "seed")))
    if key not in _CPU_WORKER_BYTES:
        _CPU_WORKER_BYTES[key] = estimate_worker_bytes_cpu(job, data)
    return _CPU_WORKER_BYTES[key]


class PopulationEngine:
    """Runs every job of a generation at once as batched populations (see ``population_layout``).

    ``device``: the config's device setting (``auto``/``cpu``/``cuda``; None = auto); ``max_populations``:
    populations trained at once at most (the config's ``max_processes``; default: one per core or GPU);
    ``layout``: the split to use (default: ``population_layout`` for this machine and ``num_workers``);
    ``log``: where the memory plan is stated (once, at the first generation); ``available_memory``:
    reads the system's available bytes (tests hand in a fake)."""

    def __init__(self, data: WorkerData, device: str | None = None, num_workers: int | None = None,
                 layout: PopulationLayout | None = None, max_populations: int | None = None,
                 log: Callable[[str], None] | None = None,
                 available_memory: Callable[[], int | None] = available_memory_bytes):
        self.data = data
        num_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.layout = layout or population_layout(num_workers or 1, cpu_cores(), num_gpus, device or "auto",
                                                  max_populations)
        self.log = log or (lambda line: None)
        self.available_memory = available_memory
        self._cpu_planned, self._cpu_cap = False, None  # workers per CPU population, once planned
        self._pool = None
        if self.layout.populations > 1:
            self._pool = start_process_pool(data, self.layout.threads, list(self.layout.devices))

    def run(self, jobs: list[WorkerJob]) -> Iterator[WorkerResult]:
        """Train all ``jobs`` together; yields their results (in job order) when the generation is done."""
        if not jobs:
            return
        epochs = sorted({job.epochs for job in jobs})
        if len(epochs) > 1:
            raise NeurodynError(f"the population engine trains every worker of a generation for the same number "
                                f"of epochs; got {epochs}")
        groups = deal_out(jobs, self.layout.populations)
        cpu_cap = self._cpu_workers_per_population(jobs[0], max(len(group) for group in groups))
        if self._pool is None or len(groups) == 1:  # one population: here, on all the layout's threads
            previous = torch.get_num_threads()
            torch.set_num_threads(self.layout.threads * self.layout.populations)
            try:
                device = self.layout.devices[0]
                results = train_population(jobs, self.data, device, _fitting_workers(jobs[0], self.data, device,
                                                                                     cpu_cap))
            finally:
                torch.set_num_threads(previous)
            yield from results
            return
        for results in self._pool.map(_train_in_process, [(group, cpu_cap) for group in groups]):
            yield from results

    def _cpu_workers_per_population(self, job: WorkerJob, share: int) -> int | None:
        """On a CPU, the most workers a population may hold (planned once, logged); None on GPUs."""
        if self.layout.devices[0] is not None:
            return None
        if not self._cpu_planned:
            worker_bytes = estimate_worker_bytes_cpu(job, self.data)
            available = self.available_memory()
            self._cpu_cap = cpu_workers_per_population(worker_bytes, available, self.layout.populations)
            self._cpu_planned = True
            self.log(describe_cpu_plan(worker_bytes, available, self._cpu_cap, share))
        return self._cpu_cap

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def terminate(self) -> None:
        """Stop every population process at once (after Ctrl-C)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
