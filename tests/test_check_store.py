"""`harness check` finds what is wrong with the store beyond its files' bytes: a damaged database, and a model
state's delta that was removed (as damaged) and not made again."""

import shutil
import sqlite3
from functools import partial

import pytest
from plugin_cli import call, plugin_args

from harness.cli import main

PLUGIN_ARGS = plugin_args("brightness.py", "edits.py")


harness = partial(call, PLUGIN_ARGS)  # harness(capsys, *args) -> (exit status, stdout, stderr)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("check") / "store"
    assert main([*PLUGIN_ARGS, "run", "--model", "tiny", "--methods", "scale-keys", "--bench", "fixed:count=2", "--out", str(out),
                 "--no-progress"]) == 0
    return out


def test_a_damaged_database_is_a_finding_with_what_to_do_and_repair_refuses_it(made, tmp_path, capsys):
    """A damaged page in a table check does not read (the per-image result values) passed as a clean store."""
    out = tmp_path / "store"
    shutil.copytree(made, out)
    db = sqlite3.connect(out / "harness.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in harness.db itself
    (page,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name='result_values'").fetchone()
    (size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    with open(out / "harness.db", "r+b") as file:
        file.seek((page - 1) * size)
        file.write(b"\xff" * size)
    damaged = (out / "harness.db").read_bytes()
    files = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}

    code, stdout, err = harness(capsys, "check", "--out", str(out))
    lines = stdout.strip().splitlines()
    assert code == 1 and "Traceback" not in err, stdout + err
    assert len(lines) == 2 and lines[0].startswith("damaged: harness.db (SQLite's quick_check fails: "), stdout
    assert "restore harness.db from a copy" in lines[0] and "run each run's command again" in lines[0], stdout
    assert "1 damaged" in lines[-1]
    assert "harness.db is damaged and --repair cannot mend it: restore harness.db from a copy" in err, err  # not "--repair regenerates"

    code, _, err = harness(capsys, "check", "--out", str(out), "--repair", "--no-progress")
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith(f"harness: error: {out / 'harness.db'} is damaged and --repair cannot mend it: restore"), err
    assert (out / "harness.db").read_bytes() == damaged
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == files  # nothing deleted or written


def test_the_remedy_check_gives_for_a_damaged_database_rebuilds_the_store(made, tmp_path, capsys):
    """What the finding says to do (move harness.db aside, run the command again) takes the cache back: nothing is
    made again and check is clean."""
    out = tmp_path / "store"
    shutil.copytree(made, out)
    made_files = [*(out / "cache" / "images").rglob("*.png"), *(out / "cache" / "deltas").glob("*")]
    cached = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in made_files}
    for path in out.glob("harness.db*"):
        path.unlink()
    code, _, err = harness(capsys, "run", "--model", "tiny", "--methods", "scale-keys", "--bench", "fixed:count=2", "--out", str(out),
                           "--no-progress")
    assert code == 0, err
    assert len(cached) == 3 and {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in made_files} == cached  # none made again
    code, stdout, _ = harness(capsys, "check", "--out", str(out))
    assert code == 0 and "0 damaged, 0 unrecorded, 0 orphaned" in stdout, stdout


def test_a_missing_delta_whose_state_results_name_is_damage_and_repair_erases_it_again(made, tmp_path, capsys):
    """The engine removes a delta it finds damaged, record and all (integrity.Files.verify); until a run erases it
    again, the state's results stand on a delta the store no longer has.  check said the store was clean."""
    out = tmp_path / "store"
    shutil.copytree(made, out)
    (delta,) = (out / "cache" / "deltas").glob("*.safetensors")
    original = delta.read_bytes()
    delta.unlink()
    db = sqlite3.connect(out / "harness.db")
    with db:
        db.execute("DELETE FROM files WHERE path=?", (delta.relative_to(out).as_posix(),))
        (run_id,) = db.execute("SELECT DISTINCT run_id FROM results WHERE model_state=?", (delta.stem,)).fetchone()
    db.close()

    code, stdout, _ = harness(capsys, "check", "--out", str(out))
    lines = stdout.strip().splitlines()
    assert code == 1, stdout
    assert lines[:-1] == [f"damaged: {delta.relative_to(out).as_posix()} (missing: removed as damaged and not made again)"], stdout
    assert "1 damaged" in lines[-1] and f"runs that used damaged files: {run_id}" in lines[-1], stdout

    code, _, err = harness(capsys, "check", "--out", str(out), "--repair", "--no-progress")
    assert code == 0 and "1 of 1 findings fixed" in err, err
    assert delta.read_bytes() == original  # erased again by the run that used it
    code, stdout, _ = harness(capsys, "check", "--out", str(out))
    assert code == 0 and "0 damaged, 0 unrecorded, 0 orphaned" in stdout, stdout
