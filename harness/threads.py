"""How many threads torch may use for one operator: the CPUs this process may actually run on.

torch's default is every core of the machine.  In a container with a CPU quota,
or a job pinned to a few cores, that oversubscribes: threads wait for each other
at every operator (a 2-core demo ran at 0.7 CPU-s per image that way, against
~0.15 with the right count).  The count here is the smallest of the CPUs in the
process's affinity mask and the cgroup's CPU quota (v2 ``cpu.max``, v1
``cpu.cfs_quota_us``), and ``OMP_NUM_THREADS`` wins when set.  The manifest
records what was chosen and why.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def cgroup_quota_cpus(root: Path = CGROUP) -> float | None:
    """CPUs allowed by the cgroup's quota (e.g. 1.5), or None when there is no quota."""
    try:  # cgroup v2: "max 100000" or "150000 100000"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def choose(environ=os.environ, root: Path = CGROUP) -> dict:
    """The intra-op thread count and where it came from (without applying it)."""
    cpus = affinity_cpus()
    quota = cgroup_quota_cpus(root)
    available = max(1, min(cpus, math.ceil(quota))) if quota is not None else cpus
    choice = {"cpus_in_affinity": cpus, "cgroup_quota_cpus": quota, "cpus_available": available}
    requested = environ.get("OMP_NUM_THREADS", "").strip()
    if requested.isdigit() and int(requested) > 0:
        return {**choice, "intra_op_threads": int(requested), "source": "OMP_NUM_THREADS"}
    source = "cgroup quota" if quota is not None and available < cpus else "affinity"
    return {**choice, "intra_op_threads": available, "source": source}


def configure() -> dict:
    """Apply ``choose()`` to torch and return it (for the manifest)."""
    import torch

    choice = choose()
    torch.set_num_threads(choice["intra_op_threads"])
    return choice
