"""A cached file that is truncated, bit-flipped or missing is noticed, regenerated, and never scored or loaded."""

import os

import pytest

from harness import integrity
from harness.api import HarnessError
from harness.store import Store

RUN = ["run", "--model", "tiny", "--methods", "sd,scale-keys:factor=0.5", "--bench", "fixed:count=4", "--no-progress"]


def values(out):
    return sorted((r["method"], r["benchmark"], r["metric"], r["value"], r["n"]) for r in Store(out).results())


def image_bytes(out):
    return {p.name: p.read_bytes() for p in (out / "cache" / "images").glob("*/*.png")}


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def flip_bit(path, position=None):
    data = bytearray(path.read_bytes())
    position = len(data) // 2 if position is None else position
    data[position] ^= 0x10
    path.write_bytes(bytes(data))


def warning_lines(err):
    return [line for line in err.splitlines() if line.startswith("harness: warning:") and "is damaged" in line]


@pytest.fixture
def store_of(cli, tmp_path):
    def make(name="out"):
        out = tmp_path / name
        code, _, err = cli(*RUN, "--out", str(out))
        assert code == 0, err
        return out

    return make


@pytest.mark.parametrize("damage", [truncate, flip_bit, os.remove], ids=["truncated", "bit-flipped", "deleted"])
def test_a_damaged_image_is_regenerated_with_one_warning(cli, store_of, damage):
    out = store_of()
    reference_values, reference_images = values(out), image_bytes(out)
    victim = sorted((out / "cache" / "images").glob("*/*.png"))[1]
    damage(victim)
    code, _, err = cli(*RUN, "--out", str(out))
    assert code == 0, err
    lines = warning_lines(err)
    assert len(lines) == 1 and victim.name in lines[0], err
    assert "Traceback" not in err
    assert image_bytes(out) == reference_images  # regenerated bit for bit
    assert values(out) == reference_values


def test_a_damaged_image_is_never_scored_by_a_new_scorer(store_of, plugin_registry):
    """The issue's crash: a truncated PNG scored by a scorer that had not seen it. Now it is regenerated first."""
    from harness.runner import RunConfig, Runner, plan

    out = store_of()
    Store(out).db.execute("DELETE FROM raw_scores")  # as if the scorer were new
    victim = sorted((out / "cache" / "images").glob("*/*.png"))[0]
    truncate(victim)
    runner = Runner(plan(RunConfig(methods="sd,scale-keys:factor=0.5", bench="fixed:count=4", model="tiny", out=str(out),
                                   show_progress=False), plugin_registry))
    with pytest.warns(integrity.DamagedFileWarning, match=victim.name):
        runner.execute()
    assert runner.engine.unet_calls == 4  # one image regenerated: one batch of 4 steps
    assert len(runner.store.results([runner.plan.run_id])) == 4


@pytest.mark.parametrize("damage", [truncate, flip_bit], ids=["truncated", "bit-flipped"])
def test_a_damaged_delta_is_recomputed_with_one_warning(cli, store_of, damage):
    out = store_of()
    reference = values(out)
    (delta,) = (out / "cache" / "deltas").glob("*.safetensors")
    original = delta.read_bytes()
    damage(delta)
    code, _, err = cli(*RUN, "--out", str(out))
    assert code == 0, err
    lines = warning_lines(err)
    assert len(lines) == 1 and "model delta" in lines[0] and delta.name in lines[0], err
    assert delta.read_bytes() == original
    assert values(out) == reference


def test_a_damaged_method_cache_is_recomputed(tmp_path):
    import torch

    from harness.context import EditContext

    store = Store(tmp_path / "out")
    ctx = EditContext(cache_dir=store.cache / "methods", files=store.files, show_progress=False)
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(1000, dtype=torch.float32)}

    first = ctx.cached_tensors("stats", {"k": 1}, compute)
    (path,) = (store.cache / "methods" / "stats").glob("*.safetensors")
    flip_bit(path, position=path.stat().st_size - 8)  # inside the tensor data: safetensors itself would load it silently
    with pytest.warns(integrity.DamagedFileWarning, match="cached stats tensors"):
        second = ctx.cached_tensors("stats", {"k": 1}, compute)
    assert len(calls) == 2 and torch.equal(first["x"], second["x"])
    assert torch.equal(ctx.cached_tensors("stats", {"k": 1}, compute)["x"], first["x"]) and len(calls) == 2


def test_report_grid_says_so_when_a_scored_image_is_damaged(cli, store_of):
    out = store_of()
    victim = sorted((out / "cache" / "images").glob("*/*.png"))[2]
    flip_bit(victim)
    code, _, err = cli("report", "--out", str(out), "--format", "png")
    assert code == 0, err
    lines = warning_lines(err)
    assert len(lines) == 1 and victim.name in lines[0] and "grid cell says so" in lines[0], err

    from reports import grids
    from reports.leaderboard import build

    store = Store(out)
    results = store.results()
    with pytest.warns(integrity.DamagedFileWarning):
        cells = [c for g in grids.collect(store, build(results), results, None) for c in g.cells]
    damaged = [c for c in cells if c.damaged]
    assert len(damaged) == 1 and damaged[0].path == victim and "sha256" in damaged[0].damaged


def test_check_lists_damage_and_orphans_and_repair_restores_a_clean_store(cli, store_of):
    out = store_of()
    reference_values, reference_images = values(out), image_bytes(out)
    images = sorted((out / "cache" / "images").glob("*/*.png"))
    truncate(images[0])
    flip_bit(images[3])
    (delta,) = (out / "cache" / "deltas").glob("*.safetensors")
    truncate(delta)
    leftover = images[1].with_name(f".{images[1].name}.4194304-1.tmp")  # no such pid: its writer is gone
    leftover.write_bytes(b"half")
    os.utime(leftover, (leftover.stat().st_mtime - 3600,) * 2)  # and it is older than a claim's lease
    stray = out / "cache" / "methods" / "stray.bin"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"?")

    code, stdout, _ = cli("check", "--out", str(out))
    assert code == 1
    lines = stdout.strip().splitlines()
    assert sum(line.startswith("damaged:") for line in lines) == 3
    assert sum(line.startswith("orphaned:") for line in lines) == 2
    assert "3 damaged" in lines[-1] and "2 orphaned" in lines[-1]

    code, _, err = cli("check", "--out", str(out), "--repair", "--no-progress")
    assert code == 0, err
    assert "3 damaged" not in err and warning_lines(err) == []
    assert image_bytes(out) == reference_images and values(out) == reference_values
    assert not leftover.exists() and not stray.exists()
    code, stdout, _ = cli("check", "--out", str(out))
    assert code == 0 and "0 damaged, 0 unrecorded, 0 orphaned" in stdout


def test_files_of_an_older_store_without_records_are_adopted_not_regenerated(store_of, plugin_registry):
    from harness.runner import RunConfig, Runner, plan

    out = store_of()
    store = Store(out)
    store.db.execute("DELETE FROM files")  # as written before the files table existed
    runner = Runner(plan(RunConfig(methods="sd,scale-keys:factor=0.5", bench="fixed:count=4", model="tiny", out=str(out),
                                   show_progress=False), plugin_registry))
    runner.execute()
    assert runner.engine.unet_calls == 0 and runner.states.edits_run == 0
    assert store.db.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 9  # 2 methods × 4 images + 1 delta, recorded now


def test_a_full_disk_stops_a_write_with_one_line_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    import errno

    target = tmp_path / "cache" / "x.png"

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(integrity.os, "fsync", no_space)
    with pytest.raises(HarnessError) as caught:
        integrity.atomic_write(target, b"data")
    message = str(caught.value)
    assert "\n" not in message and "No space left on device" in message and "run the same command again" in message
    assert list(tmp_path.rglob("*.*")) == []



def test_an_image_damaged_while_the_run_used_it_is_regenerated_by_the_rerun(cli, store_of, tmp_path, monkeypatch):
    """Files.read removes a file that rots between generation and scoring and says to run again: the re-run must
    regenerate it (its `images` row stayed, and used to count as made, so every re-run failed the same way)."""
    from harness.overlap import Overlap
    from harness.runner import Runner

    reference = store_of("clean")
    out = tmp_path / "out"
    monkeypatch.setattr(Overlap, "submit", lambda self, batch: None)  # every image is read by the scoring pass
    original = Runner._load_images

    def rotting(self, keys):
        monkeypatch.setattr(Runner, "_load_images", original)  # once
        flip_bit(self.store.image_path(keys[0]))
        return original(self, keys)

    monkeypatch.setattr(Runner, "_load_images", rotting)
    code, _, err = cli(*RUN, "--out", str(out))
    assert code == 2 and "damaged while this run used it" in err and "run the same command again" in err, err
    code, _, err = cli(*RUN, "--out", str(out))
    assert code == 0, err
    assert image_bytes(out) == image_bytes(reference) and values(out) == values(reference)
    code, stdout, _ = cli("check", "--out", str(out))
    assert code == 0 and "0 damaged, 0 unrecorded, 0 orphaned" in stdout, stdout


def test_an_image_removed_as_damaged_by_an_interrupted_run_is_reported_and_regenerated(cli, store_of, monkeypatch):
    """The run that finds the damage removes the file, then stops before regenerating it (Ctrl-C, a kill, a full
    disk): `check` reports it, `check --repair` regenerates it, and so does a plain re-run."""
    from harness.engine import Engine

    out = store_of()
    reference_values, reference_images = values(out), image_bytes(out)
    victim = sorted((out / "cache" / "images").glob("*/*.png"))[1]
    flip_bit(victim)

    def interrupted(self, specs, state):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Engine, "sample", interrupted)
        assert cli(*RUN, "--out", str(out))[0] == 130
    assert not victim.exists()
    code, stdout, _ = cli("check", "--out", str(out))
    lines = stdout.strip().splitlines()
    assert code == 1 and lines[0].startswith("damaged:") and victim.name in lines[0] and "1 damaged" in lines[-1], stdout
    assert "runs that used damaged files" in lines[-1]

    code, _, err = cli("check", "--out", str(out), "--repair", "--no-progress")
    assert code == 0, err
    assert image_bytes(out) == reference_images and values(out) == reference_values
    code, stdout, _ = cli("check", "--out", str(out))
    assert code == 0 and "0 damaged, 0 unrecorded, 0 orphaned" in stdout, stdout

    flip_bit(victim)  # once more, and this time a plain re-run after the interruption
    with monkeypatch.context() as patch:
        patch.setattr(Engine, "sample", interrupted)
        assert cli(*RUN, "--out", str(out))[0] == 130
    code, _, err = cli(*RUN, "--out", str(out))
    assert code == 0, err
    assert image_bytes(out) == reference_images and values(out) == reference_values


def test_a_kill_right_after_a_regenerated_image_is_recorded_leaves_none_of_its_old_scores(cli, store_of, monkeypatch):
    """An image regenerated with other bytes (another GPU) loses its old scores in the transaction that records the new
    bytes: a kill between the two used to leave scores of the old image standing for the new one."""
    from PIL import ImageOps

    from harness.engine import Engine

    out = store_of()
    victim = sorted((out / "cache" / "images").glob("*/*.png"))[1]
    key = victim.stem
    assert Store(out).db.execute("SELECT COUNT(*) FROM raw_scores WHERE image_key=?", (key,)).fetchone()[0] > 0
    flip_bit(victim)
    original_sample, original_add = Engine.sample, Store.add_images

    def other_bytes(self, specs, state):
        return [ImageOps.invert(image.convert("RGB")) for image in original_sample(self, specs, state)]

    def killed_after_recording(self, rows, files=(), **kwargs):
        original_add(self, rows, files, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "sample", other_bytes)
    monkeypatch.setattr(Store, "add_images", killed_after_recording)
    assert cli(*RUN, "--out", str(out))[0] == 130
    store = Store(out)
    assert store.db.execute("SELECT COUNT(*) FROM images WHERE key=?", (key,)).fetchone()[0] == 1
    assert store.db.execute("SELECT COUNT(*) FROM raw_scores WHERE image_key=?", (key,)).fetchone()[0] == 0
