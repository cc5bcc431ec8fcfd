"""Keeping freed memory inside the process, so that large training tensors do not page-fault on every step.

glibc's malloc serves each block above its mmap threshold (which it raises by itself, but never past
32 MiB) with fresh pages from the system and gives them back on free. A PBT population's activations
are tens of MiB per tensor (every worker's trials at once), so without this each training step would
ask the kernel for, and zero, every page of its activations again: a stacked population of 8 reference
models spent about half of each step there on the 2-core CPU (2.4 s per step, 1.2 s with the memory
kept). The price: the process keeps the memory of its largest step until it exits.

``available_memory_bytes`` says how much memory the system can still give (so that the population
engine plans its populations to fit).
"""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# Freed memory above this much at the top of the heap would be returned to the system.
TRIM_THRESHOLD_BYTES = 2 ** 31 - 1


def keep_freed_memory() -> bool:
    """Make this process's malloc serve every block from its heap and keep freed memory for reuse.

    Process-wide and idempotent. Returns True when it took effect (glibc), False elsewhere (other C
    libraries allocate differently; nothing is changed there).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def available_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Memory the system can give to new work without swapping, in bytes; None when it cannot be read.

    Linux: ``MemAvailable`` of ``meminfo`` (free memory plus caches it can drop); elsewhere the free
    physical pages when the C library reports them.
    """
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # reported in kiB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None
