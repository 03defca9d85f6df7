"""A store's rows name its files by path (``files.path``, ``images.path``) and by key (image and model-state keys become
file names).  A store copied or merged from somewhere untrusted can name any file that way: `harness check` must never
open or delete it (``--repair`` drops the row only), and `harness merge` must not copy such a row into another store."""

import shutil
import sqlite3
from functools import partial
from pathlib import Path

import pytest
from plugin_cli import call, plugin_args

from harness.cli import main

PLUGIN_ARGS = plugin_args("brightness.py", "edits.py")


harness = partial(call, PLUGIN_ARGS)  # harness(capsys, *args) -> (exit status, stdout, stderr)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("safety") / "store"
    assert main([*PLUGIN_ARGS, "run", "--model", "tiny", "--methods", "sd", "--bench", "fixed:count=2", "--out", str(out), "--no-progress"]) == 0
    return out


def crafted(made: Path, tmp_path: Path) -> tuple[Path, dict[Path, bytes]]:
    """A copy of ``made`` whose rows name files outside it, each with the record of a damaged file (so that a repair
    that followed them would delete them); and those files with their bytes."""
    store = tmp_path / "store"
    shutil.copytree(made, store)
    victims = {tmp_path / "victim.txt": b"not the store's\n", tmp_path / "absolute.txt": b"nor this\n",
               tmp_path / "victim.png": b"nor this image\n"}
    for path, data in victims.items():
        path.write_bytes(data)
    db = sqlite3.connect(store / "harness.db")
    with db:
        db.execute("INSERT INTO files VALUES ('../victim.txt', '00', 1, 'image', 'x')")
        db.execute("INSERT INTO files VALUES (?, '00', 1, 'delta', 'x')", (str(tmp_path / "absolute.txt"),))
        db.execute("INSERT INTO files VALUES ('cache/../harness.db', '00', 1, 'cache', 'x')")  # inside the store, not its file
        db.execute("INSERT INTO images VALUES (?, '../victim.png', 'state', '{}', 1, 'x')", ("ab" * 32,))
        db.execute("INSERT INTO model_states VALUES ('../../victim', 'tiny', 'm', '{}', 'c', 'p', '{}', 'x')")
    db.close()
    return store, victims


def test_check_and_repair_never_open_or_delete_a_file_a_row_names_outside_the_store(made, tmp_path, capsys, monkeypatch):
    from harness import integrity

    store, victims = crafted(made, tmp_path)
    opened = []
    real_problem, real_sound = integrity.Files.problem, integrity._sound
    monkeypatch.setattr(integrity.Files, "problem", lambda self, path, *a, **k: opened.append(Path(path)) or real_problem(self, path, *a, **k))
    monkeypatch.setattr(integrity, "_sound", lambda adopt, path: opened.append(Path(path)) or real_sound(adopt, path))

    code, stdout, err = harness(capsys, "check", "--out", str(store))
    lines = stdout.strip().splitlines()
    assert code == 1, stdout + err
    assert sorted(line.split(" (")[0] for line in lines[:-1]) == sorted(
        ["unsafe: ../victim.txt", f"unsafe: {tmp_path / 'absolute.txt'}", "unsafe: cache/../harness.db", "unsafe: ../victim.png",
         "unsafe: ../../victim"]), stdout
    assert "0 damaged, 0 unrecorded, 0 orphaned; 5 rows name a file outside the store" in lines[-1], stdout
    assert "harness: 5 row(s) naming a file outside the store;" in err and "drops unsafe rows (never the files" in err, err

    code, stdout, err = harness(capsys, "check", "--out", str(store), "--repair", "--no-progress")
    assert code == 0 and "Traceback" not in err, err
    assert "5 of 5 findings fixed" in err, err
    assert {path: path.read_bytes() for path in victims} == victims  # every file is there, as it was
    assert not [path for path in opened if not path.resolve().is_relative_to((store / "cache").resolve())]
    db = sqlite3.connect(store / "harness.db")  # harness.db, which one row named, is whole
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*) FROM files WHERE path NOT LIKE 'cache/images/%'").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM images WHERE path LIKE '../%'").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM model_states").fetchone()[0] == 0  # sd has none; the crafted one is dropped
    db.close()
    code, stdout, _ = harness(capsys, "check", "--out", str(store))
    assert code == 0 and stdout.strip().endswith("0 damaged, 0 unrecorded, 0 orphaned"), stdout


@pytest.mark.parametrize("row", [
    "INSERT INTO files VALUES ('../victim.txt', '00', 1, 'image', 'x')",
    "INSERT INTO files VALUES ('{outside}/victim.txt', '00', 1, 'image', 'x')",
    "INSERT INTO images VALUES ('" + "ab" * 32 + "', '../../victim.png', 'state', '{}', 1, 'x')",
    "INSERT INTO images VALUES ('../x', 'cache/images/ab/x.png', 'state', '{}', 1, 'x')",
    "INSERT INTO model_states VALUES ('{outside}/victim', 'tiny', 'm', '{{}}', 'c', 'p', '{{}}', 'x')",
], ids=["files-dotdot", "files-absolute", "images-path", "images-key", "model-states-key"])
def test_merge_refuses_a_source_row_that_names_a_file_outside_the_store(made, tmp_path, capsys, row):
    source = tmp_path / "copied"
    shutil.copytree(made, source)
    db = sqlite3.connect(source / "harness.db")
    with db:  # an absolute path names a folder of this test's own, never a real file
        db.execute(row.format(outside=tmp_path / "outside") if "{outside}" in row else row)
    db.close()
    code, stdout, err = harness(capsys, "merge", str(made), str(source), "--into", str(tmp_path / "merged"))
    assert code == 2 and stdout == "" and err.count("\n") == 1, err
    table = row.split()[2]
    assert err.startswith(f"harness: error: {source}: its {table} row (") and "nothing was merged" in err, err
    assert not (tmp_path / "merged").exists()
