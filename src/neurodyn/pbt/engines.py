"""Where PBT workers train: this machine's cores (embedded) or a Ray cluster.

A job is one worker's generation: build the trainer, load the state it starts from (its own, or
the one it copied), apply its hyperparameters, start the worker's own random stream for this
generation, train ``epochs`` epochs, return the new state and metric. States travel as the bytes
of a neurodyn checkpoint (safetensors + JSON, never pickle), so the Ray engine needs no shared file
system; the driver writes every file.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Callable, Iterator

import numpy as np
import torch

from neurodyn.config import SEARCHABLE_HYPERPARAMETERS, LfadsConfig
from neurodyn.errors import NeurodynError
from neurodyn.runs.checkpoint import decode_state, encode_state


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


@dataclass
class WorkerData:
    """The trials every worker trains and is scored on, trials-first ``(trials, T, N)`` (NaN = unobserved),
    their measured inputs ``(trials, T, ext_input_dim)`` when the data file has ``ext_input`` and, for
    several sessions, each trial's session ``(trials,)`` and the training trials' conditions (see
    ``LfadsTrainer``)."""

    train: np.ndarray
    valid: np.ndarray
    train_ext_input: np.ndarray | None = None
    valid_ext_input: np.ndarray | None = None
    train_session: np.ndarray | None = None
    valid_session: np.ndarray | None = None
    train_condition: np.ndarray | None = None
    sample_validation: np.ndarray | None = None  # the training trials' held-out entries (sample validation)


def worker_stream_seed(run_seed: int, worker: int, generation: int) -> int:
    """The seed of a worker's random stream in one generation: distinct per worker and generation, so a
    worker that copied another does not replay its source's batch order, masks and noise."""
    sequence = np.random.SeedSequence([int(run_seed) % 2 ** 32, worker, generation])
    return int(sequence.generate_state(1, np.uint64)[0] % (2 ** 63))


def run_worker_generation(job: WorkerJob, data: WorkerData, device: str | None = None) -> WorkerResult:
    """Train one worker for one generation (runs in an engine process)."""
    started = time.perf_counter()
    trainer = prepare_worker(job, data, device)
    first = len(trainer.history)
    for _ in range(job.epochs):
        trainer.step_epoch()
    return worker_result(job, trainer.valid_nll_smoothed, trainer.state_dict(), trainer.history[first:],
                         time.perf_counter() - started)


def prepare_worker(job: WorkerJob, data: WorkerData, device: str | None = None):
    """The ``LfadsTrainer`` a job starts from: built, its start state loaded, its searched values applied
    and its random stream for this generation started."""
    from neurodyn.train.trainer import LfadsTrainer

    trainer = LfadsTrainer(LfadsConfig(**job.config), data.train, data.valid, device=device,
                           train_ext_input=data.train_ext_input, valid_ext_input=data.valid_ext_input,
                           train_session=data.train_session, valid_session=data.valid_session,
                           train_condition=data.train_condition, sample_validation_data=data.sample_validation)
    # The job's values as the trainer resolved them from the data ('auto' keys of a job made by hand
    # included), to compare with the state it continues.
    wanted = trainer.config.model_dump()
    if job.start_state is not None:
        trainer.load_state_dict(decode_state(job.start_state, f"state of worker {job.worker}"))
        # Only searched values change; architecture and per-worker keys come with the state it continues.
        hyperparameters = {k: wanted[k] for k in SEARCHABLE_HYPERPARAMETERS if getattr(trainer.config, k) != wanted[k]}
        if hyperparameters:
            trainer.set_hyperparameters(**hyperparameters)
    trainer.reseed(worker_stream_seed(job.seed, job.worker, job.generation))
    return trainer


def worker_result(job: WorkerJob, smoothed_nll: float | None, state: dict[str, Any], history: list[dict[str, float]],
                  seconds: float) -> WorkerResult:
    """A job's result: the smoothed validation NLL as the metric (NaN when diverged) and the encoded state."""
    metric = float(smoothed_nll) if smoothed_nll is not None and math.isfinite(smoothed_nll) else math.nan
    return WorkerResult(job.worker, job.generation, metric, encode_state(state), history, seconds)


def deal_out(jobs: list[WorkerJob], shares: int) -> list[list[WorkerJob]]:
    """``jobs`` in ``shares`` consecutive groups whose sizes differ by at most one (no empty group)."""
    shares = max(1, min(shares, len(jobs)))
    size, extra = divmod(len(jobs), shares)
    groups, start = [], 0
    for share in range(shares):
        end = start + size + (1 if share < extra else 0)
        groups.append(jobs[start:end])
        start = end
    return groups


# -- embedded engine ------------------------------------------------------------------------------

_PROCESS_DATA: dict[str, Any] = {}


def assign_devices(num_processes: int, num_gpus: int, device_setting: str = "auto") -> list[str | None]:
    """The device of each engine process: the GPUs in turn (``cuda:0``, ``cuda:1``, ..., ``cuda:0``, ...)
    when there are GPUs and the config allows them, else None (the config's device)."""
    if num_gpus <= 0 or device_setting == "cpu":
        return [None] * num_processes
    return [f"cuda:{i % num_gpus}" for i in range(num_processes)]


def _init_process(data: WorkerData, threads: int, devices) -> None:
    # Ctrl-C reaches every process of the terminal's group: the driver alone handles it and stops the
    # workers, so they print no tracebacks of their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # (blocked while it started, see below)
    torch.set_num_threads(threads)
    _PROCESS_DATA["data"] = data
    _PROCESS_DATA["device"] = devices.get()


def process_data() -> tuple[WorkerData, str | None]:
    """In an engine process (see ``start_process_pool``): the data it was started with and its device."""
    return _PROCESS_DATA["data"], _PROCESS_DATA["device"]


def _run_in_process(job: WorkerJob) -> WorkerResult:
    return run_worker_generation(job, *process_data())


def start_process_pool(data: WorkerData, threads: int, devices: list[str | None]):
    """A pool of ``len(devices)`` spawned processes, each holding ``data``, using ``threads`` torch threads
    and its own device from ``devices``; tasks read them with ``process_data()``."""
    # spawn, not fork: torch's thread pools do not survive a fork reliably.
    context = get_context("spawn")
    queue = context.Queue()
    for device in devices:
        queue.put(device)
    # A spawned process takes seconds to import torch before _init_process can ignore Ctrl-C; one that
    # arrived then printed a traceback from the child. The children inherit the signal mask: SIGINT is
    # blocked while they start (pending, not lost, in this process) and they unblock it once ignored.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return context.Pool(len(devices), initializer=_init_process, initargs=(data, threads, queue))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def cpu_cores() -> int:
    """CPU cores this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def default_max_processes() -> int:
    """One worker per GPU when there are GPUs, else one per CPU core."""
    return torch.cuda.device_count() if torch.cuda.is_available() else cpu_cores()


class EmbeddedEngine:
    """Runs up to ``max_processes`` workers at once in local processes; nothing to start by hand.

    Each process gets an equal share of the CPU cores as torch threads, so the cores stay busy
    without oversubscription, and on a machine with GPUs its own GPU (the GPUs in turn, see
    ``assign_devices``). With ``max_processes == 1`` jobs run in this process.
    """

    def __init__(self, data: WorkerData, max_processes: int, device_setting: str = "auto"):
        self.max_processes = max_processes
        self.threads = max(1, cpu_cores() // max_processes)
        self.data = data
        num_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.devices = assign_devices(max_processes, num_gpus, device_setting)
        self._pool = None
        if max_processes > 1:
            self._pool = start_process_pool(data, self.threads, self.devices)

    def run(self, jobs: list[WorkerJob]) -> Iterator[WorkerResult]:
        """Yield each job's result as it finishes."""
        if self._pool is None:
            previous = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                for job in jobs:
                    yield run_worker_generation(job, self.data, self.devices[0])
            finally:
                torch.set_num_threads(previous)
            return
        yield from self._pool.imap_unordered(_run_in_process, jobs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def terminate(self) -> None:
        """Stop every worker process at once (after Ctrl-C)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


# -- Ray engine ---------------------------------------------------------------------------------------

class RayEngine:
    """Runs workers as tasks on an existing Ray cluster (``address``), at most ``max_processes`` at once.

    On a cluster with G GPUs each task asks for G / max_processes of a GPU, so ``max_processes = 2 G``
    puts two workers on each GPU (the seed's "two processes per GPU"). Data go through Ray's object
    store once; states travel as bytes, so no shared file system is needed.

    ``population_task``: when given, a generation's workers are dealt out evenly over
    ``max_processes`` tasks and each task trains its share as batched populations by calling
    ``population_task(jobs, data, threads)`` (``population_engine.train_share_in_task``): one population
    per GPU by default (per CPU core without GPUs; ``max_processes`` = the number of nodes gives one per
    node). Without it, one task per worker.
    """

    def __init__(self, data: WorkerData, max_processes: int | None,
                 address: str | None,
                 population_task: Callable[[list[WorkerJob], WorkerData, int], list[WorkerResult]] | None = None):
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
        self.batched = population_task is not None
        self._task = ray.remote(_ray_task if population_task is None else population_task).options(**options)
        self._data_ref = ray.put(data)

    def run(self, jobs: list[WorkerJob]) -> Iterator[WorkerResult]:
        if self.batched:
            # One task per share of the workers; a task's results come back together, in its jobs' order.
            running = [self._task.remote(share, self._data_ref, self.threads)
                       for share in deal_out(jobs, self.max_processes) if share]
            while running:
                done, running = self.ray.wait(running, num_returns=1)
                yield from self.ray.get(done[0])
            return
        queue, running = list(jobs), []
        while queue or running:
            while queue and len(running) < self.max_processes:
                running.append(self._task.remote(queue.pop(0), self._data_ref, self.threads))
            done, running = self.ray.wait(running, num_returns=1)
            yield self.ray.get(done[0])

    def close(self) -> None:
        pass

    def terminate(self) -> None:
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


def _ray_task(job: WorkerJob, data: WorkerData, threads: int) -> WorkerResult:
    torch.set_num_threads(threads)
    return run_worker_generation(job, data)
