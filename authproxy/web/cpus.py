"""How many workers ``workers: auto`` means on this machine, read when the proxy starts
(never while the configuration is parsed: ``check-config`` elsewhere means nothing here)."""

from __future__ import annotations

import os

from authproxy.config.schema import Config

CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"
MAX_WORKERS = 256


def worker_count(config: Config) -> int:
    """``workers`` resolved: "auto" is the number of CPUs this process may use."""
    return usable_cpus() if config.workers == "auto" else int(config.workers)


def usable_cpus(cpu_max: str = CGROUP_CPU_MAX) -> int:
    """CPUs available to this process: its affinity, capped by a cgroup v2 CPU quota
    (a container limited to 2 CPUs on a 64-core node gets 2), at most 256."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        with open(cpu_max, encoding="ascii") as file:  # "max 100000" or "<quota> <period>"
            quota, period = file.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, min(count, MAX_WORKERS))
