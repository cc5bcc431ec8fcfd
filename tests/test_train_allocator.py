"""keep_freed_memory: large blocks freed by one training step are reused by the next without page faults."""

import platform
import subprocess
import sys

import pytest

from neurodyn.train.allocator import keep_freed_memory

# A child process allocates, touches and frees a 64 MiB block five times and prints the minor page faults
# of the last four rounds (the first round faults its pages in either way).
CHILD = """
import resource, sys
import numpy as np
from neurodyn.train.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(16 * 2 ** 20, dtype=np.float32)  # 64 MiB: above glibc's largest mmap threshold
    del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[1:]))
"""


def _faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return int(result.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_freed_large_blocks_are_reused_without_page_faults():
    default, kept = _faults("default"), _faults("keep")
    # Without it every round faults the block's pages in again (fewer faults than 4 KiB pages where the
    # system backs the block with transparent huge pages, but at least one per 2 MiB); with it, none.
    assert default >= 4 * 64 // 2
    assert kept * 20 < default


def test_reports_whether_it_applies():
    assert keep_freed_memory() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
