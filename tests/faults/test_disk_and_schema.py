"""A full or failing disk stops a run with one line and a consistent store; schema versions: older migrated, newer refused."""

import errno
import os
import sqlite3

import pytest

from harness import check, integrity
from harness.store import MIGRATIONS, Store

RUN = ["run", "--model", "tiny", "--methods", "sd,scale-keys:factor=0.5", "--bench", "fixed:count=4", "--batch-size", "2", "--no-progress"]


def snapshot(out):
    store = Store(out)
    results = sorted((r["method"], r["benchmark"], r["metric"], r["value"], r["n"]) for r in store.results())
    records = {row["path"]: row["sha256"] for row in store.db.execute("SELECT path, sha256 FROM files WHERE kind IN ('image', 'delta')")}
    return results, records


def harness_lines(err):
    """What the harness itself said on stderr (the plan it prints first is not an error)."""
    assert "Traceback" not in err, err
    return [line for line in err.strip().splitlines() if line.startswith("harness:")]


def consistent(out):
    """No damaged, unrecorded or orphaned file: every write either completed and was recorded, or left nothing."""
    found = check.check(Store(out))
    return [f"{f.state} {f.path}" for f in found.findings]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    from harness.cli import main

    from_plugins = os.path.join(os.path.dirname(__file__), "..", "plugins")
    out = tmp_path_factory.mktemp("clean")
    assert main(["--plugin", f"{from_plugins}/brightness.py", "--plugin", f"{from_plugins}/edits.py", *RUN, "--out", str(out)]) == 0
    return snapshot(out)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
@pytest.mark.parametrize("after", [1, 4], ids=["first-write", "mid-run"])
def test_a_failing_file_write_stops_with_one_line_and_the_rerun_completes(cli, tmp_path, monkeypatch, clean, code, after):
    out = tmp_path / "out"
    real_fsync, calls = integrity.os.fsync, [0]

    def failing_fsync(fd):
        calls[0] += 1
        if calls[0] > after:
            raise OSError(code, os.strerror(code))
        return real_fsync(fd)

    monkeypatch.setattr(integrity.os, "fsync", failing_fsync)
    status, _, err = cli(*RUN, "--out", str(out))
    assert status == 2
    lines = harness_lines(err)
    assert len(lines) == 1 and lines[0].startswith("harness: error: cannot write") and os.strerror(code) in lines[0], err
    assert consistent(out) == []
    monkeypatch.setattr(integrity.os, "fsync", real_fsync)  # space freed, disk replaced
    status, _, err = cli(*RUN, "--out", str(out))
    assert status == 0, err
    assert snapshot(out) == clean


def test_a_full_database_stops_with_one_line_and_the_rerun_completes(cli, tmp_path, monkeypatch, clean):
    out = tmp_path / "out"
    real = Store.add_raw_scores

    def full(self, *args, **kwargs):
        with self.transaction():  # a transaction that fails part-way, as SQLite's does on a full disk
            self.db.execute("INSERT INTO raw_scores VALUES ('x', 'y', 'z', '{}')")
            raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "add_raw_scores", full)
    status, _, err = cli(*RUN, "--out", str(out))
    assert status == 2
    lines = harness_lines(err)
    assert len(lines) == 1 and "database or disk is full" in lines[0] and "free some disk space" in lines[0], err
    assert Store(out).db.execute("SELECT COUNT(*) FROM raw_scores").fetchone()[0] == 0  # rolled back whole
    assert consistent(out) == []
    monkeypatch.setattr(Store, "add_raw_scores", real)
    assert cli(*RUN, "--out", str(out))[0] == 0
    assert snapshot(out) == clean


def test_a_store_of_the_first_schema_is_migrated_and_keeps_its_results(tmp_path):
    db_path = tmp_path / "harness.db"
    db = sqlite3.connect(db_path, isolation_level=None)
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (1)")
    db.execute("INSERT INTO runs VALUES ('old-run', '2025-01-01T00:00:00+00:00', NULL, 'finished', '{}')")
    db.execute("INSERT INTO results VALUES ('old-run', 'sd', 'b', 'm:x', 0.25, 4, 1, 'x', 'd', 'state', 8.0)")
    db.close()
    store = Store(tmp_path)
    assert store.db.execute("SELECT version FROM schema_version").fetchone()[0] == len(MIGRATIONS)
    assert [r["value"] for r in store.results()] == [0.25]
    assert store.db.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 0  # the newest table exists


def test_a_store_of_a_newer_schema_is_refused_with_one_line(cli, tmp_path):
    Store(tmp_path).db.execute("UPDATE schema_version SET version=?", (len(MIGRATIONS) + 1,))
    status, _, err = cli("report", "--out", str(tmp_path))
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "written by a newer erasure-harness" in lines[0] and "upgrade" in lines[0], err
    status, _, err = cli(*RUN, "--out", str(tmp_path))
    assert status == 2 and "newer erasure-harness" in err and len(harness_lines(err)) == 1
