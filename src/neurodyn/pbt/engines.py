"""Where PBT workers train: this machine's cores (embedded) or a Ray cluster.

A job is one worker's generation: build the trainer, load the state it starts from (its own, or
the one it copied), apply its hyperparameters, train ``epochs`` epochs, return the new state and
metric. States travel as bytes, so the Ray engine needs no shared file system; the driver writes
every file.
"""

from __future__ import annotations

import io
import math
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Iterator

import numpy as np
import torch

from neurodyn.config import SEARCHABLE_HYPERPARAMETERS, LfadsConfig
from neurodyn.errors import NeurodynError


@dataclass
class WorkerJob:
    worker: int
    generation: int
    config: dict[str, Any]          # the full LfadsConfig of this worker (its hyperparameters included)
    start_state: bytes | None       # trainer state to continue from; None = a new model
    epochs: int
    seed: int


@dataclass
class WorkerResult:
    worker: int
    generation: int
    metric: float                   # smoothed validation NLL after the generation (NaN if diverged)
    state: bytes
    history: list[dict[str, float]]  # the log rows of this generation's epochs
    seconds: float


def state_to_bytes(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def state_from_bytes(blob: bytes) -> dict[str, Any]:
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)


def run_worker_generation(job: WorkerJob, train_data: np.ndarray, valid_data: np.ndarray,
                          device: str | None = None) -> WorkerResult:
    """Train one worker for one generation (runs in an engine process)."""
    from neurodyn.train.trainer import LfadsTrainer

    started = time.perf_counter()
    config = LfadsConfig(**job.config)
    trainer = LfadsTrainer(config, train_data, valid_data, device=device)
    if job.start_state is not None:
        trainer.load_state_dict(state_from_bytes(job.start_state))
        # Only searched values change; architecture and per-worker keys come with the state it continues.
        hyperparameters = {k: job.config[k] for k in SEARCHABLE_HYPERPARAMETERS
                           if getattr(trainer.config, k) != job.config[k]}
        if hyperparameters:
            trainer.set_hyperparameters(**hyperparameters)
    # Distinct, reproducible dropout and posterior noise per worker and generation.
    torch.manual_seed(job.seed * 1_000_003 + job.worker * 1009 + job.generation)
    first = len(trainer.history)
    for _ in range(job.epochs):
        trainer.step_epoch()
    metric = trainer.valid_nll_smoothed
    metric = float(metric) if metric is not None and math.isfinite(metric) else math.nan
    return WorkerResult(job.worker, job.generation, metric, state_to_bytes(trainer.state_dict()),
                        trainer.history[first:], time.perf_counter() - started)


# -- embedded engine ------------------------------------------------------------------------------

_PROCESS_DATA: dict[str, np.ndarray] = {}


def _init_process(train_data: np.ndarray, valid_data: np.ndarray, threads: int) -> None:
    torch.set_num_threads(threads)
    _PROCESS_DATA["train"], _PROCESS_DATA["valid"] = train_data, valid_data


def _run_in_process(job: WorkerJob) -> WorkerResult:
    return run_worker_generation(job, _PROCESS_DATA["train"], _PROCESS_DATA["valid"])


def cpu_cores() -> int:
    """CPU cores this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def default_max_processes() -> int:
    """One worker per GPU when there are GPUs, else one per CPU core."""
    return torch.cuda.device_count() if torch.cuda.is_available() else cpu_cores()


class EmbeddedEngine:
    """Runs up to ``max_processes`` workers at once in local processes; nothing to start by hand.

    Each process gets an equal share of the CPU cores as torch threads, so the cores stay busy
    without oversubscription. With ``max_processes == 1`` jobs run in this process.
    """

    def __init__(self, train_data: np.ndarray, valid_data: np.ndarray, max_processes: int):
        self.max_processes = max_processes
        self.threads = max(1, cpu_cores() // max_processes)
        self.train_data, self.valid_data = train_data, valid_data
        self._pool = None
        if max_processes > 1:
            # spawn, not fork: torch's thread pools do not survive a fork reliably.
            self._pool = ProcessPoolExecutor(max_processes, mp_context=get_context("spawn"),
                                             initializer=_init_process,
                                             initargs=(train_data, valid_data, self.threads))

    def run(self, jobs: list[WorkerJob]) -> Iterator[WorkerResult]:
        """Yield each job's result as it finishes."""
        if self._pool is None:
            previous = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                for job in jobs:
                    yield run_worker_generation(job, self.train_data, self.valid_data)
            finally:
                torch.set_num_threads(previous)
            return
        futures = [self._pool.submit(_run_in_process, job) for job in jobs]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


# -- Ray engine ---------------------------------------------------------------------------------------

class RayEngine:
    """Runs workers as tasks on an existing Ray cluster (``address``), at most ``max_processes`` at once.

    On a cluster with G GPUs each task asks for G / max_processes of a GPU, so ``max_processes = 2 G``
    puts two workers on each GPU (the seed's "two processes per GPU"). Data go through Ray's object
    store once; states travel as bytes, so no shared file system is needed.
    """

    def __init__(self, train_data: np.ndarray, valid_data: np.ndarray, max_processes: int | None,
                 address: str | None):
        try:
            import ray
        except ImportError:
            raise NeurodynError("the Ray engine needs Ray: pip install 'neurodyn[ray]'") from None
        self.ray = ray
        _check_reachable(address)
        if not ray.is_initialized():
            try:
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                         include_dashboard=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise NeurodynError(f"cannot connect to the Ray cluster at {address!r}: {error}") from None
        resources = ray.cluster_resources()
        gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 1))
        self.max_processes = max_processes or int(gpus or cpus)
        options: dict[str, float] = {"num_cpus": max(cpus / self.max_processes, 0.01) if not gpus else 1}
        if gpus:
            options["num_gpus"] = gpus / self.max_processes
        self.threads = max(1, int(cpus // self.max_processes))
        self._task = ray.remote(_ray_task).options(**options)
        self._train_ref, self._valid_ref = ray.put(train_data), ray.put(valid_data)

    def run(self, jobs: list[WorkerJob]) -> Iterator[WorkerResult]:
        queue, running = list(jobs), []
        while queue or running:
            while queue and len(running) < self.max_processes:
                running.append(self._task.remote(queue.pop(0), self._train_ref, self._valid_ref, self.threads))
            done, running = self.ray.wait(running, num_returns=1)
            yield self.ray.get(done[0])

    def close(self) -> None:
        pass


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (ray.init would retry for minutes)."""
    if not address or address == "auto" or "://" in address or ":" not in address:
        return
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as error:
        raise NeurodynError(f"cannot connect to the Ray cluster at {address!r}: {error}; start one with "
                            "'ray start --head' or leave out --ray-address to use the embedded engine") from None


def _ray_task(job: WorkerJob, train_data: np.ndarray, valid_data: np.ndarray, threads: int) -> WorkerResult:
    torch.set_num_threads(threads)
    return run_worker_generation(job, train_data, valid_data)
