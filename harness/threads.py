"""How many threads torch may use for one operator: the CPUs this process may actually run on.

torch's default is every core of the machine.  In a container with a CPU quota,
or a job pinned to a few cores, that oversubscribes: threads wait for each other
at every operator (a 2-core demo ran at 0.7 CPU-s per image that way, against
~0.15 with the right count).  The count here is the smallest of the CPUs in the
process's affinity mask and the CPU quota of its own cgroup or any ancestor
(v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), and ``OMP_NUM_THREADS`` wins when set.  The manifest
records what was chosen and why.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def own_cgroups(proc: Path = PROC_CGROUP) -> dict[str, str]:
    """This process's cgroup paths from ``/proc/self/cgroup``: ``{"v2": "/a/b"}`` and/or ``{"v1": "/a/b"}`` (the v1
    hierarchy holding the cpu controller).  A job scheduler (SLURM, systemd) puts its job's quota on such a nested
    group, not on the root."""
    found = {}
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and controllers == "":
            found["v2"] = path
        elif "cpu" in controllers.split(","):
            found["v1"] = path
    return found


def _along(base: Path, path: str) -> list[Path]:
    """``base/path`` and each of its ancestors up to ``base``: a quota on any of them applies (the smallest wins)."""
    parts = [part for part in path.strip("/").split("/") if part and part != ".."]
    return [base.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _v2_quota(folder: Path) -> float | None:
    try:  # "max 100000" or "150000 100000"
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def cgroup_quota_cpus(root: Path = CGROUP, proc: Path = PROC_CGROUP) -> float | None:
    """CPUs allowed by the tightest CPU quota on this process's cgroup or its ancestors (e.g. 1.5), or None.

    In a container the process's group is its namespace's root (``/``); under a job scheduler on a host it is a
    nested group (``/system.slice/slurmstepd.scope/job_42``), whose quota the root's ``cpu.max`` does not show.
    """
    groups = own_cgroups(proc)
    quotas = [_v2_quota(folder) for folder in _along(root, groups.get("v2", "/"))]
    v1_mounts = [root / name for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu") if (root / name).is_dir()]
    for mount in v1_mounts[:1]:
        quotas += [_v1_quota(folder) for folder in _along(mount, groups.get("v1", "/"))]
    quotas = [quota for quota in quotas if quota is not None]
    return min(quotas) if quotas else None


def choose(environ=os.environ, root: Path = CGROUP, proc: Path = PROC_CGROUP) -> dict:
    """The intra-op thread count and where it came from (without applying it)."""
    cpus = affinity_cpus()
    quota = cgroup_quota_cpus(root, proc)
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
