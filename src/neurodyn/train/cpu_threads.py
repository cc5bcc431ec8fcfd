"""Work split over CPU threads, each on its own core (``sharing_cpu``): the training step's batch shards,
and at inference the sampled passes and the refinement's blocks of trials, whose random draws come
from one stream per piece (``map_seeded``); how many threads to use (``default_threads``)."""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")


def default_threads(device: torch.device) -> int:
    """Threads for independent pieces of work: torch's CPU threads on a CPU, 1 on a GPU (one stream)."""
    return torch.get_num_threads() if device.type == "cpu" else 1


@contextlib.contextmanager
def sharing_cpu(threads: int) -> Iterator[concurrent.futures.ThreadPoolExecutor | None]:
    """A pool of ``threads`` threads (None for one), with torch's own CPU threads set to one meanwhile:
    each thread then runs its piece on its own core instead of all of them fighting over every small
    operation (the compiled kernels release the GIL)."""
    if threads <= 1:
        yield None
        return
    intra_op_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="neurodyn-cpu") as pool:
            yield pool
    finally:
        torch.set_num_threads(intra_op_threads)


def map_in_order(pool: concurrent.futures.ThreadPoolExecutor | None, function: Callable[[int], T],
                 count: int) -> list[T]:
    """``[function(0), ..., function(count - 1)]``, on ``pool``'s threads when there is one."""
    if pool is None or count <= 1:
        return [function(index) for index in range(count)]
    return list(pool.map(function, range(count)))


def map_seeded(function: Callable[[int, torch.Generator], T], count: int, device: torch.device,
               threads: int | None = None) -> list[T]:
    """``[function(0, rng_0), ..., function(count - 1, rng_{count - 1})]`` on ``threads`` threads (default
    ``default_threads(device)``), each piece drawing from its own generator ``rng_i`` on ``device``. The
    pieces' seeds are drawn in order from torch's global generator first, so a seed gives the same
    result whatever the number of threads and their timing. A piece runs in its thread's grad mode
    (enabled): ``function`` sets the one it needs."""
    seeds = torch.randint(0, 2 ** 62, (count,)).tolist()

    def piece(index: int) -> T:
        return function(index, torch.Generator(device=device).manual_seed(seeds[index]))

    with sharing_cpu(default_threads(device) if threads is None else threads) as pool:
        return map_in_order(pool, piece, count)
