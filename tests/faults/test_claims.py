"""Work claims (harness/claims.py): a live owner's claim holds, a dead, reused-pid or expired owner's claim frees."""

import subprocess
import sys
import time

import pytest

from harness import claims as work_claims
from harness.store import Store


def none_done(keys):
    return set()


def test_a_live_owner_holds_its_claim_and_a_finished_one_does_not(tmp_path):
    mine, theirs = Store(tmp_path), Store(tmp_path)
    claimed, held = theirs.claims.take(["a", "b"], done=none_done)
    assert claimed == ["a", "b"] and held == []
    theirs.claims.pid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]).pid  # a live other process
    theirs.claims.started = work_claims._process_start(theirs.claims.pid)
    mine.db.execute("UPDATE claims SET pid=?, started=?", (theirs.claims.pid, theirs.claims.started))
    try:
        assert mine.claims.take(["a", "b", "c"], done=none_done) == (["c"], ["a", "b"])
        assert mine.claims.take(["a"], done=lambda keys: {"a"}) == ([], [])  # done meanwhile: neither made nor waited on
    finally:
        subprocess.run(["kill", "-9", str(theirs.claims.pid)], check=True)
        time.sleep(0.2)
    # Reaped or a zombie, a killed owner frees its claims at once, though they have not expired.
    assert mine.claims.take(["a", "b"], done=none_done) == (["a", "b"], [])
    mine.claims.release(["a", "b", "c"])
    assert mine.db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0


def test_a_reused_pid_and_an_expired_lease_free_a_claim(tmp_path):
    mine, theirs = Store(tmp_path), Store(tmp_path)
    theirs.claims.take(["reused", "remote"], done=none_done)
    # The pid is alive (this very process) but started at another time: a new process under a dead owner's pid.
    mine.db.execute("UPDATE claims SET token='other', started='1' WHERE key='reused'")
    # Another host's owner cannot be asked: its claim holds until its lease lapses.
    mine.db.execute("UPDATE claims SET token='other', host='elsewhere' WHERE key='remote'")
    assert mine.claims.take(["reused", "remote"], done=none_done) == (["reused"], ["remote"])
    mine.db.execute("UPDATE claims SET expires=? WHERE key='remote'", (time.time() - 1,))
    assert mine.claims.take(["remote"], done=none_done) == (["remote"], [])


def test_a_waiter_reuses_an_erasure_that_wrote_the_same_delta_again(tmp_path):
    """A kill between a delta's record and its state row, then two re-runs: the second waits for the first and reuses
    its erasure, though a deterministic edit writes the same bytes (the same record) again."""
    import threading

    from harness.engine import ModelStates
    from harness.integrity import DELTA

    first, key = Store(tmp_path), "k" * 32
    delta = first.delta_path(key)
    first.files.write(delta, b"delta bytes", kind=DELTA)  # the killed run's: written and recorded, no state row
    assert first.claims.take([f"state:{key}"], done=none_done) == ([f"state:{key}"], [])  # the first re-run erases
    outcome = []

    def second_rerun():  # its own connection, made in its own thread (SQLite's rule)
        outcome.append(ModelStates(None, Store(tmp_path), "fingerprint", target=None)._claim_erasure(key, delta))

    waiter = threading.Thread(target=second_rerun)
    waiter.start()
    time.sleep(2 * work_claims.POLL_SECONDS)
    first.files.write(delta, b"delta bytes", kind=DELTA)
    first.add_model_state(key, "tiny", "scale-keys", {}, "colours", str(delta), {})
    first.claims.release([f"state:{key}"])
    waiter.join(timeout=30)
    assert outcome == [False]  # it waited and found the state stored: it does not erase it a second time


def test_closing_a_store_stops_its_heartbeat_and_a_later_claim_starts_it_again(tmp_path, monkeypatch):
    monkeypatch.setattr(work_claims, "HEARTBEAT_SECONDS", 0.05)
    store = Store(tmp_path)
    store.claims.take(["a"], done=none_done)
    beating = store.claims._heartbeat
    assert beating is not None and beating.is_alive()
    time.sleep(0.2)  # a few beats
    store.close()
    assert not beating.is_alive()  # (other tests' stores, never closed, may still beat: only this one is checked)
    again = Store(tmp_path)
    again.claims.take(["b"], done=none_done)
    assert again.claims._heartbeat.is_alive()
    again.close()


def test_a_store_used_as_a_context_manager_closes_on_an_error_too(tmp_path):
    """`with Store(out) as store:` is how a command holds a store: leaving the block, normally or by an exception,
    stops the heartbeat and closes the database, its write-ahead log copied into harness.db and removed."""
    import sqlite3

    with pytest.raises(KeyError):
        with Store(tmp_path) as store:
            store.claims.take(["a"], done=none_done)
            beating = store.claims._heartbeat
            store.start_run("run-1", {"methods": "sd"})
            assert (tmp_path / "harness.db-wal").exists()
            raise KeyError("a failing command")
    assert not beating.is_alive()
    with pytest.raises(sqlite3.ProgrammingError):
        store.db.execute("SELECT 1")
    assert not (tmp_path / "harness.db-wal").exists()
    with Store(tmp_path, create=False) as reopened:
        assert [row["id"] for row in reopened.db.execute("SELECT id FROM runs")] == ["run-1"]
