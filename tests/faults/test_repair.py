"""`harness check --repair` never deletes what a re-run would use: images a kill left renamed but unrecorded, a killed
data-parallel rank's pending rows, a live run's batch or temporary files."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import check
from harness.api import HarnessError
from harness.store import Store

PLUGINS = Path(__file__).parent.parent / "plugins"
KILLER = str(Path(__file__).parent / "killer.py")
RUN = ["run", "--model", "tiny", "--methods", "sd", "--bench", "fixed:count=4", "--no-progress"]
NO_SUCH_PID = 4194304  # above Linux's largest pid_max: never a live process


def image_bytes(out):
    return {p.name: p.read_bytes() for p in (Path(out) / "cache" / "images").glob("*/*.png")}


def killed_run(out, kill_at):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HARNESS_TEST_KILL_AT": kill_at}
    args = [sys.executable, "-m", "harness.cli", "--plugin", str(PLUGINS / "brightness.py"), "--plugin", str(PLUGINS / "edits.py"),
            "--plugin", KILLER, *RUN, "--out", str(out)]
    return subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600)


def test_repair_keeps_images_a_kill_left_unrecorded_and_a_ranks_pending_rows(cli, tmp_path, plugin_registry):
    from harness import recover
    from harness.distributed import PENDING_DIR, ShardStore, ingest_pending_images
    from harness.integrity import IMAGE, Record, sha256_file
    from harness.runner import RunConfig, Runner, plan

    out = tmp_path / "out"
    killed = killed_run(out, "harness.store:Store.add_images:1")  # the batch renamed into place, its rows not stored
    assert killed.returncode == -9, killed.stderr
    made = image_bytes(out)
    assert len(made) == 4
    # A killed data-parallel job leaves the same kind of images, listed in a pending file for rank 0.
    paths = sorted((out / "cache" / "images").glob("*/*.png"))
    rows = [(p.stem, *(lambda r: (r["model_state"], r["spec"], r["unet_evals"]))(recover.read_png_record(p))) for p in paths]
    records = [Record(p.relative_to(out).as_posix(), sha256_file(p), p.stat().st_size, IMAGE) for p in paths]
    ShardStore(out, image_rows={}, model_states={}).add_images(rows, files=records)
    (pending,) = (out / "cache" / PENDING_DIR).glob("*.json")

    code, stdout, _ = cli("check", "--out", str(out))
    lines = stdout.strip().splitlines()
    assert code == 0 and sum(line.startswith("unrecorded:") for line in lines) == 4, stdout
    assert "0 damaged, 4 unrecorded, 0 orphaned" in lines[-1], stdout
    code, _, err = cli("check", "--out", str(out), "--repair", "--no-progress")
    assert code == 0, err
    assert image_bytes(out) == made and pending.exists()
    code, stdout, _ = cli("check", "--out", str(out))
    assert code == 0 and "0 damaged, 0 unrecorded, 0 orphaned" in stdout, stdout

    runner = Runner(plan(RunConfig(methods="sd", bench="fixed:count=4", model="tiny", out=str(out), show_progress=False), plugin_registry))
    runner.execute()
    assert runner.engine.unet_calls == 0 and image_bytes(out) == made  # adopted, not made again
    assert ingest_pending_images(runner.store) == 4 and not pending.exists()


def test_check_and_repair_beside_a_live_run_break_nothing(cli, tmp_path, plugin_registry, monkeypatch):
    """check --repair run by another process in the window between a batch's rename and its record."""
    out = tmp_path / "out"
    seen = {}
    original = Store.add_images

    def in_the_window(self, rows, files=(), **kwargs):
        if files and not seen:  # the first batch: renamed into place and claimed, its rows not stored yet
            other = Store(self.root)  # the other process's connection (and claims)
            report = check.check(other)
            seen["states"] = sorted(f.state for f in report.findings)
            with pytest.raises(HarnessError, match="a run is writing this store"):
                check.repair(other, report, plugin_registry)
            other.close()
        return original(self, rows, files, **kwargs)

    monkeypatch.setattr(Store, "add_images", in_the_window)
    code, _, err = cli(*RUN, "--out", str(out))
    assert code == 0, err
    assert seen["states"] == ["unrecorded"] * 4
    code, stdout, _ = cli("check", "--out", str(out))
    assert code == 0 and "0 damaged, 0 unrecorded, 0 orphaned" in stdout, stdout


def test_temporary_files_of_writes_that_may_be_in_progress_are_left_alone(cli, tmp_path):
    out = tmp_path / "out"
    code, _, err = cli(*RUN, "--out", str(out))
    assert code == 0, err
    folder = next((out / "cache" / "images").iterdir())
    live = folder / f".a.png.{os.getpid()}-1.tmp"  # its writer lives
    young = folder / f".b.png.{NO_SUCH_PID}-1.tmp"  # its writer may be on another host
    left = folder / f".c.png.{NO_SUCH_PID}-1.tmp"  # an interrupted write's leftover
    for path in (live, young, left):
        path.write_bytes(b"half")
    hour_ago = time.time() - 3600
    os.utime(left, (hour_ago, hour_ago))
    os.utime(live, (hour_ago, hour_ago))

    code, stdout, _ = cli("check", "--out", str(out))
    lines = stdout.strip().splitlines()
    assert [line for line in lines[:-1]] == [f"orphaned: {left.relative_to(out).as_posix()} (temporary file of an interrupted write)"], stdout
    assert "2 temporary files of writes that may be in progress left alone" in lines[-1]
    code, _, err = cli("check", "--out", str(out), "--repair", "--no-progress")
    assert code == 0, err
    assert live.exists() and young.exists() and not left.exists()


def test_repair_fixes_damage_no_stored_run_makes_again(cli, tmp_path, monkeypatch):
    """A composition's first delta, a state record, a method cache and an image no run links: each was removed and its
    record kept, so the store stayed damaged for good ("repaired: 0 of 4"); now each is rewritten or forgotten."""
    import torch

    from harness import recover
    from harness.context import EditContext
    from harness.store import Store as _Store

    out = tmp_path / "out"
    composed = ["run", "--model", "tiny", "--methods", "sd,both", "--bench", "fixed:count=4", "--no-progress", "--out", str(out)]
    code, _, err = cli(*composed)
    assert code == 0, err
    store = Store(out)
    inner = store.db.execute("SELECT key FROM model_states WHERE method='scale-keys'").fetchone()["key"]
    inner_delta = store.delta_path(inner)
    inner_bytes = inner_delta.read_bytes()
    outer = store.db.execute("SELECT * FROM model_states WHERE method='shift-keys'").fetchone()
    state_record = recover.state_record_path(store, outer["key"])
    ctx = EditContext(cache_dir=store.cache / "methods", files=store.files, show_progress=False)
    ctx.cached_tensors("stats", {"k": 1}, lambda: {"x": torch.arange(100, dtype=torch.float32)})
    (method_cache,) = (store.cache / "methods" / "stats").glob("*.safetensors")
    # Images a run made but never linked: it stopped before its cell's results (here: at the link).
    more = ["run", "--model", "tiny", "--methods", "sd", "--bench", "fixed:count=6", "--no-progress", "--out", str(out)]
    with monkeypatch.context() as patch:
        patch.setattr(_Store, "link_run_images", lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt))
        assert cli(*more)[0] == 130
    linked = {row["image_key"] for row in store.db.execute("SELECT image_key FROM run_images")}
    unlinked = sorted(p for p in (out / "cache" / "images").glob("*/*.png") if p.stem not in linked)
    assert len(unlinked) == 2
    unlinked_bytes = unlinked[0].read_bytes()

    inner_delta.write_bytes(inner_bytes[:100])
    for path in (state_record, method_cache, unlinked[0]):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))
    code, stdout, _ = cli("check", "--out", str(out))
    lines = stdout.strip().splitlines()
    assert code == 1 and "4 damaged" in lines[-1] and "runs that used" not in lines[-1], stdout
    assert all("--repair" in line for line in lines[:-1]), stdout
    code, _, err = cli("check", "--out", str(out), "--repair", "--no-progress")
    assert code == 0 and "4 of 4 findings fixed" in err, err
    code, stdout, _ = cli("check", "--out", str(out))
    assert code == 0 and "0 damaged, 0 unrecorded, 0 orphaned" in stdout, stdout

    # The state record was written again: a lost database still gets the state's row back from it.
    store.db.execute("DELETE FROM model_states WHERE key=?", (outer["key"],))
    assert recover.restore_model_state(store, outer["key"])
    assert store.model_state(outer["key"])["metadata"] == outer["metadata"]
    # The next runs that need them make the delta and the image again, as they were.
    code, _, err = cli(*composed)
    assert code == 0, err
    assert inner_delta.read_bytes() == inner_bytes
    code, _, err = cli(*more)
    assert code == 0, err
    assert unlinked[0].read_bytes() == unlinked_bytes
    code, stdout, _ = cli("check", "--out", str(out))
    assert code == 0 and "0 damaged, 0 unrecorded, 0 orphaned" in stdout, stdout
