"""Two and four `harness run` processes on one --out at once, with overlapping methods: all finish, no
"database is locked", every result equal to a run alone, no image made twice and no model state erased twice."""

import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness import check
from harness.store import Store, enable_wal

PLUGINS = Path(__file__).parent.parent / "plugins"
WITNESS = str(Path(__file__).parent / "witness.py")
BENCH = "fixed:count=8"
METHOD_SETS = ["sd,scale-keys:factor=0.5", "scale-keys:factor=0.5,shift-keys", "sd,shift-keys", "sd,scale-keys:factor=0.5,shift-keys"]


def command(out, methods):
    return [sys.executable, "-m", "harness.cli", "--plugin", str(PLUGINS / "brightness.py"), "--plugin", str(PLUGINS / "edits.py"),
            "--plugin", WITNESS, "run", "--model", "tiny", "--methods", methods, "--bench", BENCH, "--batch-size", "2",
            "--out", str(out), "--no-progress"]


def by_cell(out):
    return {(r["method"], r["benchmark"], r["metric"]): r["value"] for r in Store(out).results()}


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """Every method set run one after another into one store: the values a concurrent store must hold."""
    out = tmp_path_factory.mktemp("alone")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run(command(out, ",".join(dict.fromkeys(",".join(METHOD_SETS).split(",")))), env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return by_cell(out)


@pytest.mark.parametrize("processes", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_concurrent_runs_on_one_store_all_finish_with_the_same_results(tmp_path, alone, processes):
    out = tmp_path / "out"
    log = tmp_path / "writes.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HARNESS_TEST_WRITE_LOG": str(log)}
    running = [subprocess.Popen(command(out, methods), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for methods in METHOD_SETS[:processes]]
    errors = [process.communicate(timeout=900)[1] for process in running]
    for process, err in zip(running, errors):
        assert process.returncode == 0, err
        assert "database is locked" not in err and "Traceback" not in err, err
    methods_run = set(",".join(METHOD_SETS[:processes]).split(","))
    assert by_cell(out) == {cell: value for cell, value in alone.items() if cell[0] in methods_run}
    found = check.check(Store(out))
    assert [f for f in found.findings if f.state != "orphaned"] == [] and found.count("orphaned") == 0
    lines = [line.split() for line in log.read_text().splitlines()]
    writes = Counter(path for _, path in lines if path.startswith("cache/images/"))
    erasures = Counter(path for _, path in lines if path.startswith("cache/deltas/"))
    store = Store(out)
    images = store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    duplicates = sum(count - 1 for count in writes.values())
    print(f"{processes} processes: {images} images, {sum(writes.values())} image writes, {duplicates} duplicates; "
          f"{len(erasures)} model deltas, {sum(erasures.values())} erasures; "
          f"{len({pid for pid, path in lines if path.startswith('cache/images/')})} processes made images")
    assert set(writes) and len(writes) == images
    # Each batch is claimed in the store (harness/claims.py) inside the transaction that also sees whether its images
    # are recorded, so no image is made twice and no state erased twice: not even by processes that reach the same
    # method at the same moment.
    assert duplicates == 0, writes.most_common(3)
    assert set(erasures) and all(count == 1 for count in erasures.values()), erasures
    assert store.db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0  # every claim released at the end


class LockedAtFirst:
    """A connection whose first ``failures`` statements fail as SQLite fails a WAL switch that lost a lock race."""

    def __init__(self, failures: int, message: str = "database is locked"):
        self.failures, self.message, self.statements = failures, message, []

    def execute(self, sql):
        self.statements.append(sql)
        if len(self.statements) <= self.failures:
            raise sqlite3.OperationalError(self.message)


def test_switching_a_fresh_store_to_wal_waits_out_a_lost_lock_race():
    """Seen in CI: two processes opening one fresh store, one was told "database is locked" at once (SQLite gives
    up without the busy handler where waiting could deadlock), and that run died with a traceback."""
    connection = LockedAtFirst(failures=3)
    enable_wal(connection)
    assert connection.statements == ["PRAGMA journal_mode=WAL"] * 4
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):  # any other error is not waited out
        enable_wal(LockedAtFirst(failures=1, message="disk I/O error"))
    with pytest.raises(sqlite3.OperationalError, match="locked"):  # nor is a lock that outlasts the patience
        enable_wal(LockedAtFirst(failures=10**6), patience=0.05)
