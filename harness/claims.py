"""Work claims: concurrent ``harness run`` processes on one ``--out`` do not make the same thing twice.

Before a process makes a batch of images (or erases a model state) it claims the keys in the store's ``claims``
table, inside one short write transaction that also checks whether the work is already done.  A key another live
process holds is skipped for now and looked at again later, when it is either done (nothing to make) or free.

A claim never outlives its owner: on the owner's host, a dead pid (or a pid reused by a newer process, told apart by
its start time) frees it at once, so a SIGKILLed run never blocks its re-run; from another host the claim lapses at
``expires``, which a heartbeat thread pushes forward while the owner lives.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable

LEASE_SECONDS = 600.0  # how long a claim lives without a heartbeat (matters only across hosts)
HEARTBEAT_SECONDS = 60.0
POLL_SECONDS = 0.5  # how often a process waiting on another's claim looks again

HOST = socket.gethostname()


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``None``: no such process, or a zombie), or "" without /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    return None if fields[0] in ("Z", "X") else fields[19]


def _alive(pid: int, started: str) -> bool:
    if os.path.isdir("/proc"):
        now = _process_start(pid)
        return now is not None and (not started or not now or now == started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Claims:
    """This process's claims in one store (``store.claims``)."""

    def __init__(self, store):
        self.store = store
        self.token = uuid.uuid4().hex
        self.pid = os.getpid()
        self.started = _process_start(self.pid) or ""
        self.held: set[str] = set()
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()

    def _live(self, row) -> bool:
        if row["token"] == self.token:
            return False  # ours: as good as free
        if row["expires"] < time.time():
            return False
        return row["host"] != HOST or _alive(row["pid"], row["started"])

    def take(self, keys: Iterable[str], *, done: Callable[[list[str]], set[str]]) -> tuple[list[str], list[str]]:
        """Claim every key that is neither done nor held by a live process: (claimed, held elsewhere).

        ``done(keys)`` runs inside the transaction, so work finished by another process just before is seen.
        """
        keys = list(dict.fromkeys(keys))
        if self.store.db is None:  # a data-parallel rank other than 0: its share was dealt out, nothing to claim
            return keys, []
        with self.store.transaction():
            finished = done(keys)
            # The table holds only work in flight: a few rows per process, so it is read whole, and the claims of
            # dead owners are dropped (some on work a re-run found finished after all and so never claims again).
            rows = {row["key"]: row for row in self.store.db.execute("SELECT * FROM claims")}
            stale = [key for key, row in rows.items() if row["token"] != self.token and not self._live(row)]
            self.store.db.executemany("DELETE FROM claims WHERE key=?", [(key,) for key in stale])
            claimed = [key for key in keys if key not in finished and not (key in rows and self._live(rows[key]))]
            held = [key for key in keys if key not in finished and key in rows and self._live(rows[key])]
            expires = time.time() + LEASE_SECONDS
            self.store.db.executemany("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?)",
                                      [(key, HOST, self.pid, self.started, self.token, expires) for key in claimed])
        self.held.update(claimed)
        if claimed:
            self._start_heartbeat()
        return claimed, held

    def release(self, keys: Iterable[str]) -> None:
        keys = [key for key in keys if key in self.held]
        if not keys or self.store.db is None:
            return
        with self.store.transaction():
            self.store.db.executemany("DELETE FROM claims WHERE key=? AND token=?", [(key, self.token) for key in keys])
        self.held.difference_update(keys)

    def _start_heartbeat(self) -> None:
        if self._heartbeat is not None:
            return
        path = self.store.root / "harness.db"
        stop = self._stop = threading.Event()

        def beat():
            db = sqlite3.connect(path, timeout=60, isolation_level=None)
            try:
                while not stop.wait(HEARTBEAT_SECONDS):
                    try:
                        db.execute("UPDATE claims SET expires=? WHERE token=?", (time.time() + LEASE_SECONDS, self.token))
                    except sqlite3.Error:
                        pass  # a busy store: the next beat tries again; the lease is ten beats long
            finally:
                db.close()

        self._heartbeat = threading.Thread(target=beat, name="harness-claims-heartbeat", daemon=True)
        self._heartbeat.start()

    def stop(self) -> None:
        """Stop the heartbeat and close its connection (``Store.close``): each ``Store`` opened in a long-lived process
        (``check --repair`` makes one per run it re-runs; API users make their own) kept a thread and a database
        handle for the life of the process.  Claims still held then expire with their lease."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
            self._heartbeat = None
