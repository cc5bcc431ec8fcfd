"""What every benchmark prints beside its figures: the machine and the commit."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def machine_line() -> str:
    """Host, CPU model, cores, load average and Python version."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores, load at the end {load}; Python {platform.python_version()}"


def commit_line() -> str:
    """The checked-out commit, marked when tracked files have uncommitted changes."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = " (uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    return commit + dirty
