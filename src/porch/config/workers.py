"""How many worker processes `workers = "auto"` means here."""

from __future__ import annotations

import os


def worker_count(workers: int | str) -> int:
    """`workers` as a number: "auto" is one per CPU this process may run on (the
    affinity mask, so `taskset` and cpusets count, as nginx's `worker_processes auto`
    does), at least 1."""
    if workers != "auto":
        return int(workers)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
