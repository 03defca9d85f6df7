"""SIGKILL at chosen points of a run (erase, generation, image record, scoring, result, manifest), then a re-run:
the store ends equal to an uninterrupted run's, and nothing finished before the kill is redone or lost."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import check
from harness.runner import RunConfig, Runner, plan
from harness.store import Store

KILLER = str(Path(__file__).parent / "killer.py")
METHODS, BENCH, BATCH = "sd,scale-keys:factor=0.5", "fixed:count=6", 2

# (where, module:function:call number). Each is a point at which a real node can die.
POINTS = [
    ("erase, before the delta is written", "harness.engine:ModelStates.float32_delta:1"),
    ("generation, in the second batch", "harness.engine:Engine.sample:2"),
    ("an image batch renamed into place but not recorded", "harness.store:Store.add_images:2"),
    ("a temporary file written, not renamed", "harness.integrity:os.replace:3"),
    ("scoring, before the first scores are stored", "harness.store:Store.add_raw_scores:1"),
    ("between two result writes", "harness.store:Store.add_result:3"),
    ("the final manifest write", "harness.store:Store.write_manifest:2"),
    ("marking the run finished", "harness.store:Store.finish_run:1"),
]
FAST = {POINTS[2][1], POINTS[5][1]}


def config(out):
    return RunConfig(methods=METHODS, bench=BENCH, model="tiny", out=str(out), batch_size=BATCH, show_progress=False)


def snapshot(out):
    """What a store holds, for comparison: results, image bytes, image and delta records (path → sha256).

    (Other records, e.g. a state's JSON with its erase time in seconds, legitimately differ between two runs.)
    """
    store = Store(out)
    results = sorted((r["method"], r["benchmark"], r["metric"], r["value"], r["n"]) for r in store.results())
    images = {p.name: p.read_bytes() for p in (Path(out) / "cache" / "images").glob("*/*.png")}
    records = {row["path"]: row["sha256"] for row in store.db.execute("SELECT path, sha256 FROM files WHERE kind IN ('image', 'delta')")}
    store.close()
    return results, images, records


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    from harness.plugins import PluginHost
    from harness.registry import Registry

    from_plugins = Path(__file__).parent.parent / "plugins"
    registry = Registry(PluginHost([str(from_plugins / "brightness.py"), str(from_plugins / "edits.py")]))
    out = tmp_path_factory.mktemp("clean")
    Runner(plan(config(out), registry)).execute()
    return snapshot(out), registry


def killed_run(out, kill_at=None, kill_after_s=None):
    from_plugins = Path(__file__).parent.parent / "plugins"
    import torch

    # The killed run uses the threads of the in-process runs it is compared with: with another thread count an
    # edit's matmuls (and so its images) differ in their last bits.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    if kill_at:
        env["HARNESS_TEST_KILL_AT"] = kill_at
    args = [sys.executable, "-m", "harness.cli", "--plugin", str(from_plugins / "brightness.py"), "--plugin", str(from_plugins / "edits.py"),
            "--plugin", KILLER, "run", "--model", "tiny", "--methods", METHODS, "--bench", BENCH, "--batch-size", str(BATCH),
            "--out", str(out), "--no-progress"]
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after_s is not None:
        time.sleep(kill_after_s)
        process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=600)
    return process.returncode, err


def resume_and_compare(out, clean_snapshot, registry):
    images = Path(out) / "cache" / "images"
    before = {p: p.stat().st_mtime_ns for p in images.glob("*/*.png")} if images.exists() else {}
    recorded_before = set()
    if (Path(out) / "harness.db").exists():
        store = Store(out)
        recorded_before = {row["path"] for row in store.db.execute("SELECT path FROM files WHERE kind='image'")}
        store.close()
    Runner(plan(config(out), registry)).execute()
    assert snapshot(out) == clean_snapshot
    # Nothing finished is redone: every image recorded before the kill is the same file, untouched.
    for path, mtime in before.items():
        if path.relative_to(out).as_posix() in recorded_before:
            assert path.stat().st_mtime_ns == mtime, path
    store = Store(out)
    found = check.check(store)
    leftovers = [f for f in found.findings if not (f.state == "orphaned" and f.detail.startswith("temporary"))]
    assert leftovers == [], leftovers
    assert store.db.execute("SELECT status FROM runs").fetchone()["status"] == "finished"
    return found


@pytest.mark.parametrize("where, kill_at", [pytest.param(w, k, marks=() if k in FAST else pytest.mark.slow, id=k.split(":", 1)[1])
                                            for w, k in POINTS])
def test_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path, clean, where, kill_at):
    clean_snapshot, registry = clean
    code, err = killed_run(tmp_path / "out", kill_at=kill_at)
    assert code == -signal.SIGKILL, f"the run was not killed at {where}: {err}"
    resume_and_compare(tmp_path / "out", clean_snapshot, registry)


@pytest.mark.slow
def test_sigkill_at_random_moments_of_one_store(tmp_path, clean):
    """Five kills at random moments into the same store (seeded), each followed by the next attempt; then it finishes."""
    clean_snapshot, registry = clean
    out = tmp_path / "out"
    # Kill moments are fractions of an uninterrupted run's duration on this machine (fixed seconds were either all too
    # late on a quiet machine or all too early on a loaded one).
    started = time.monotonic()
    code, err = killed_run(tmp_path / "timing")
    assert code == 0, err
    duration = time.monotonic() - started
    rng = random.Random(19)
    kills = 0
    for _ in range(5):
        code, _ = killed_run(out, kill_after_s=rng.uniform(0.3, 0.8) * duration)
        kills += code == -signal.SIGKILL
        if code == 0:  # finished: the later attempts would have nothing left to interrupt
            break
    assert kills >= 2, "attempts must be killed mid-run for this test to mean anything"
    resume_and_compare(out, clean_snapshot, registry)


@pytest.mark.parametrize("kill_at", ["harness.store:Store.add_images:2", "harness.engine:ModelStates.float32_delta:1"],
                         ids=["image-batch", "erasure"])
def test_a_killed_runs_claims_do_not_block_the_rerun(tmp_path, clean, kill_at):
    """Killed while it holds a claim (on a batch of images, on an erasure): the re-run takes the claim over at once."""
    clean_snapshot, registry = clean
    code, err = killed_run(tmp_path / "out", kill_at=kill_at)
    assert code == -signal.SIGKILL, err
    store = Store(tmp_path / "out")
    left = store.db.execute("SELECT key, pid, expires FROM claims").fetchall()
    store.close()
    assert left and all(row["pid"] != os.getpid() and row["expires"] > time.time() for row in left), "the kill must leave live-looking claims"
    resume_and_compare(tmp_path / "out", clean_snapshot, registry)
    store = Store(tmp_path / "out")
    assert store.db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0  # taken over and released, none left behind
