"""Data-parallel runs under torchrun (harness/distributed.py), on the CPU with gloo."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.api import HarnessError
from harness.distributed import PENDING_DIR, ShardStore, World, ingest_pending_images, launched_world, rank_device
from harness.store import Store

PLUGINS = Path(__file__).parent / "plugins"
PLUGIN_ARGS = ["--plugin", str(PLUGINS / "brightness.py"), "--plugin", str(PLUGINS / "edits.py")]
HARNESS = str(Path(sys.executable).with_name("harness"))


def test_the_world_comes_from_the_launcher_environment():
    assert launched_world({}) is None
    assert launched_world({"RANK": "0", "WORLD_SIZE": "1"}) is None  # one process: the ordinary run
    # torchrun and accelerate both set these three.
    assert launched_world({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(rank=3, size=4, local_rank=1)
    with pytest.raises(HarnessError, match="RANK must be in 0..WORLD_SIZE-1"):
        launched_world({"RANK": "4", "WORLD_SIZE": "4"})
    assert rank_device("cuda", World(3, 4, 1)) == "cuda:1" and rank_device("cpu", World(3, 4, 1)) == "cpu"


def test_every_batch_belongs_to_exactly_one_rank():
    offset = 0
    for count in (1, 5, 2, 7):  # successive generate calls: short ones do not all land on rank 0
        shares = [World(rank, 3, rank).batches(count, offset) for rank in range(3)]
        assert set().union(*shares) == set(range(count)) and sum(map(len, shares)) == count
        offset += count
    assert [len(World(rank, 3, rank).batches(15, 0)) for rank in range(3)] == [5, 5, 5]
    assert World(1, 3, 1).batches(1, 1) == {0}


def test_rows_of_other_ranks_reach_the_database_through_pending_files(tmp_path):
    store = Store(tmp_path)
    shard = ShardStore(tmp_path, image_rows={"a" * 64: 8}, model_states={})
    shard.add_images([("b" * 64, "state", {"prompt": "x"}, 40), ("c" * 64, "state", {"prompt": "y"}, 40)])
    assert shard.image_unet_evals(["a" * 64, "b" * 64, "d" * 64]) == {"a" * 64: 8, "b" * 64: 40}
    assert store.image_unet_evals(["b" * 64]) == {}  # not in the database until rank 0 takes it in
    assert ingest_pending_images(store) == 2
    assert store.image_unet_evals(["b" * 64, "c" * 64]) == {"b" * 64: 40, "c" * 64: 40}
    assert not list((tmp_path / "cache" / PENDING_DIR).glob("*.json"))
    with pytest.raises(RuntimeError, match="rank 0 has not stored model state"):
        shard.add_model_state("k", "tiny", "uce", {}, "colours", None, {})


def torchrun(*args, out, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "--no-python", HARNESS,
               *PLUGIN_ARGS, "run", *args, "--out", str(out), "--no-progress"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def report(out) -> list:
    import contextlib
    import io

    from harness.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main([*PLUGIN_ARGS, "report", "--out", str(out), "--json"]) == 0
    return sorted((r["method"], r["benchmark"], r["metric"], r["value"], r["n"], r["unet_evals_per_image"]) for r in json.loads(buffer.getvalue()))


def image_rows(out) -> tuple[int, int, str]:
    db = sqlite3.connect(Path(out) / "harness.db")
    count, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM images").fetchone()
    return count, distinct, db.execute("PRAGMA integrity_check").fetchone()[0]


@pytest.mark.slow
def test_two_processes_give_the_values_of_one(tmp_path, monkeypatch):
    from harness.cli import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the ranks' thread count: another one changes an edit's last bits

    args = ["--model", "tiny", "--methods", "sd,scale-keys", "--bench", "fixed:count=12", "--batch-size", "2"]
    process = torchrun(*args, out=tmp_path / "A")
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-2000:]
    assert stderr.count("stored in ") == 1  # rank 0 reports, the other rank is quiet
    assert main([*PLUGIN_ARGS, "run", *args, "--out", str(tmp_path / "B"), "--no-progress"]) == 0
    assert report(tmp_path / "A") == report(tmp_path / "B")
    assert image_rows(tmp_path / "A") == (24, 24, "ok")  # 2 model states × 12 prompts, each once
    assert len(list((tmp_path / "A" / "cache" / "images").rglob("*.png"))) == 24
    assert main(["check", "--out", str(tmp_path / "A")]) == 0  # rank 1's files reached the integrity records too
    manifest = json.loads(next((tmp_path / "A" / "runs").glob("*/manifest.json")).read_text())
    assert manifest["distributed"]["world_size"] == 2


def _rank_pids(launcher_pid: int) -> dict[int, int]:
    """{rank: pid} of the launcher's worker processes, from their environment."""
    found = {}
    for child in Path("/proc").iterdir():
        if not child.name.isdigit():
            continue
        try:
            status = (child / "status").read_text()
            parent = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
            environ = dict(item.split("=", 1) for item in (child / "environ").read_bytes().decode(errors="replace").split("\0") if "=" in item)
        except (OSError, StopIteration):
            continue
        if parent == launcher_pid and "RANK" in environ:
            found[int(environ["RANK"])] = int(child.name)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_a_killed_rank_loses_nothing_finished_and_a_rerun_completes(tmp_path):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt,evaluation_seed,evaluation_guidance,case_number\n" + "".join(f"shape {i},{i},7.5,{i}\n" for i in range(400)))
    args = ["--model", "tiny", "--methods", "sd", "--bench", f"csv:path={prompts},metrics=brightness:mean", "--batch-size", "1"]
    out = tmp_path / "A"
    process = torchrun(*args, out=out)
    images = out / "cache" / "images"
    deadline = time.monotonic() + 300
    while len(list(images.rglob("*.png"))) < 40:
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no images after 300 s"
        time.sleep(0.2)
    ranks = _rank_pids(process.pid)
    os.kill(ranks[1], signal.SIGKILL)
    process.communicate(timeout=120)
    assert process.returncode != 0  # the launcher stops the run when a rank dies

    # Finished = a PNG whose row reached the database or a pending file (a PNG written just before the kill
    # whose row never was is unfinished, and is made again).
    store = Store(out)
    ingest_pending_images(store)
    finished = {key for (key,) in store.db.execute("SELECT key FROM images")}
    store.close()
    assert 0 < len(finished) < 400
    before = {path.stem: path.stat().st_mtime_ns for path in images.rglob("*.png") if path.stem in finished}
    assert len(before) == len(finished)

    rerun = torchrun(*args, out=out)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr[-2000:]
    after = {path.stem: path.stat().st_mtime_ns for path in images.rglob("*.png")}
    assert all(after[key] == mtime for key, mtime in before.items())  # nothing finished was made again
    assert len(after) == 400 and image_rows(out) == (400, 400, "ok")


def test_keep_going_is_refused_under_a_distributed_launch(tmp_path, capsys, monkeypatch):
    """Ranks that went on past different failures would wait on each other's collectives."""
    from harness.cli import main

    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    code = main(["run", "--model", "tiny", "--bench", "toy-explicit", "--limit", "1", "--out",
                 str(tmp_path / "out"), "--keep-going"])
    err = capsys.readouterr().err
    assert code == 2 and "--keep-going runs in one process; drop it under torchrun / accelerate launch" in err
