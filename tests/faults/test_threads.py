"""Intra-op threads: the CPUs the process may use (affinity, cgroup quota), OMP_NUM_THREADS first, recorded in the manifest."""

import json
import os

import pytest

from harness import threads


def cgroup(tmp_path, v2=None, v1=None):
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{v1[0]}\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{v1[1]}\n")
    return tmp_path


def test_omp_num_threads_wins(tmp_path):
    choice = threads.choose({"OMP_NUM_THREADS": "3"}, cgroup(tmp_path, v2="100000 100000"))
    assert choice["intra_op_threads"] == 3 and choice["source"] == "OMP_NUM_THREADS"


@pytest.mark.parametrize("quota, expected", [("150000 100000", 2), ("50000 100000", 1), ("100000 100000", 1)])
def test_a_cgroup_v2_quota_caps_the_count(tmp_path, quota, expected):
    choice = threads.choose({}, cgroup(tmp_path, v2=quota))
    assert choice["intra_op_threads"] == min(threads.affinity_cpus(), expected)
    assert choice["cgroup_quota_cpus"] == pytest.approx(int(quota.split()[0]) / int(quota.split()[1]))


def test_no_quota_means_the_affinity_mask(tmp_path):
    choice = threads.choose({}, cgroup(tmp_path, v2="max 100000"))
    assert choice["intra_op_threads"] == len(os.sched_getaffinity(0)) and choice["source"] == "affinity"
    assert threads.choose({"OMP_NUM_THREADS": "junk"}, tmp_path)["source"] == "affinity"


def test_a_cgroup_v1_quota_is_read_too(tmp_path):
    assert threads.cgroup_quota_cpus(cgroup(tmp_path, v1=(200000, 100000))) == 2.0
    unlimited = tmp_path / "unlimited"
    unlimited.mkdir()
    assert threads.cgroup_quota_cpus(cgroup(unlimited, v1=(-1, 100000))) is None


def proc_cgroup(tmp_path, text):
    path = tmp_path / "proc-self-cgroup"
    path.write_text(text)
    return path


def test_a_quota_on_the_processs_own_nested_cgroup_v2_is_found(tmp_path):
    """A scheduler's job group (SLURM, systemd) holds the quota; the root's cpu.max says "max"."""
    cgroup(tmp_path, v2="max 100000")
    job = tmp_path / "system.slice" / "slurmstepd.scope" / "job_42"
    job.mkdir(parents=True)
    (job / "cpu.max").write_text("300000 100000\n")
    (tmp_path / "system.slice" / "cpu.max").write_text("max 100000\n")
    proc = proc_cgroup(tmp_path, "0::/system.slice/slurmstepd.scope/job_42\n")
    assert threads.cgroup_quota_cpus(tmp_path, proc) == 3.0
    assert threads.choose({}, tmp_path, proc)["cpus_available"] == min(threads.affinity_cpus(), 3)


def test_the_tightest_quota_among_the_ancestors_wins(tmp_path):
    (tmp_path / "user.slice" / "session").mkdir(parents=True)
    (tmp_path / "user.slice" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "user.slice" / "session" / "cpu.max").write_text("400000 100000\n")
    assert threads.cgroup_quota_cpus(tmp_path, proc_cgroup(tmp_path, "0::/user.slice/session\n")) == 1.5


def test_a_cgroup_v1_job_group_under_the_cpu_mount_is_found(tmp_path):
    job = tmp_path / "cpu,cpuacct" / "slurm" / "job_7"
    job.mkdir(parents=True)
    (job / "cpu.cfs_quota_us").write_text("200000\n")
    (job / "cpu.cfs_period_us").write_text("100000\n")
    proc = proc_cgroup(tmp_path, "4:memory:/slurm/job_7\n3:cpu,cpuacct:/slurm/job_7\n1:name=systemd:/\n")
    assert threads.cgroup_quota_cpus(tmp_path, proc) == 2.0


def test_a_group_missing_from_this_mount_falls_back_to_the_root(tmp_path):
    """Inside a container the host's path may not exist under the namespace's mount: the root's quota still counts."""
    cgroup(tmp_path, v2="200000 100000")
    assert threads.cgroup_quota_cpus(tmp_path, proc_cgroup(tmp_path, "0::/not/here\n")) == 2.0
    assert threads.cgroup_quota_cpus(tmp_path, tmp_path / "no-proc-file") == 2.0


def test_the_manifest_records_the_choice(tmp_path, plugin_registry, monkeypatch):
    import torch

    from harness.runner import RunConfig, Runner, plan

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    try:
        runner = Runner(plan(RunConfig(bench="fixed:count=1", model="tiny", out=str(tmp_path), show_progress=False), plugin_registry))
        runner.execute()
        manifest = json.loads((runner.store.run_dir(runner.plan.run_id) / "manifest.json").read_text())
        assert manifest["threads"]["intra_op_threads"] == 1 == torch.get_num_threads()
        assert manifest["threads"]["source"] == "OMP_NUM_THREADS" and manifest["threads"]["cpus_available"] >= 1
    finally:
        torch.set_num_threads(before)
