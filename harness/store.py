"""The store: ``<out>/harness.db`` (SQLite, WAL) plus content-addressed files under ``<out>/cache``.

Everything a run produces is written here as soon as it exists (one image, one
batch of raw scores, one model-state delta), so a killed run loses at most the
batch in flight and a re-run picks up where it stopped.  ``harness report``
reads only this.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from harness.api import HarnessError
from harness.claims import Claims
from harness.integrity import Files, atomic_write
from harness.names import check_name, is_safe_name
from harness.results import Result, is_adversarial

# Ordered migrations: the database records how many have been applied.  Append, never edit.
MIGRATIONS = [
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY, created TEXT, finished TEXT, status TEXT, config TEXT
    );
    CREATE TABLE model_states (
        key TEXT PRIMARY KEY, backbone TEXT, method TEXT, params TEXT, concepts TEXT,
        delta_path TEXT, metadata TEXT, created TEXT
    );
    CREATE TABLE images (
        key TEXT PRIMARY KEY, path TEXT, model_state TEXT, spec TEXT, unet_evals INTEGER, created TEXT
    );
    CREATE TABLE run_images (
        run_id TEXT, method TEXT, benchmark TEXT, spec_id TEXT, image_key TEXT,
        PRIMARY KEY (run_id, method, benchmark, spec_id)
    );
    CREATE TABLE raw_scores (
        image_key TEXT, scorer TEXT, version TEXT, raw TEXT, PRIMARY KEY (image_key, scorer, version)
    );
    CREATE TABLE set_scores (
        key TEXT, scorer TEXT, version TEXT, raw TEXT, PRIMARY KEY (key, scorer, version)
    );
    CREATE TABLE results (
        run_id TEXT, method TEXT, benchmark TEXT, metric TEXT, value REAL, n INTEGER,
        lower_is_better INTEGER, name TEXT, description TEXT, model_state TEXT, unet_evals_per_image REAL,
        PRIMARY KEY (run_id, method, benchmark, metric)
    );
    """,
    # A backbone's fingerprint by the identity of its weight files (harness/lazy.py): a re-run needs no loading.
    """
    CREATE TABLE backbone_fingerprints (
        identity TEXT PRIMARY KEY, fingerprint TEXT, scheduler TEXT, created TEXT
    );
    """,
    # Per-image values of each result (0/1 for a rate, a number for a per-image score), so that intervals and paired
    # tests are computed from the store alone.  A set-level metric (FID) has no rows here.
    """
    CREATE TABLE result_values (
        run_id TEXT, method TEXT, benchmark TEXT, metric TEXT, spec_id TEXT, prompt_id TEXT, seed INTEGER,
        image_key TEXT, value REAL,
        PRIMARY KEY (run_id, method, benchmark, metric, spec_id)
    );
    """,
    # Every file the store references, with what it must be (harness/integrity.py).
    """
    CREATE TABLE files (path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL, kind TEXT, created TEXT);
    """,
    # What reports need to show a result without its plugins (harness.results.Result); NULL in older rows.
    """
    ALTER TABLE results ADD COLUMN unit TEXT;
    ALTER TABLE results ADD COLUMN adversarial INTEGER;
    ALTER TABLE results ADD COLUMN needs_reference INTEGER;
    ALTER TABLE results ADD COLUMN method_display TEXT;
    ALTER TABLE results ADD COLUMN benchmark_display TEXT;
    ALTER TABLE results ADD COLUMN metric_position INTEGER;
    """,
    # Attacks (issue 16): adversarial prompts cached one per source prompt, so a killed attack resumes; one row per
    # attacked source set with its total cost; results of an attack cell "A(B)" name their attack.
    """
    CREATE TABLE attack_prompts (
        key TEXT PRIMARY KEY, attack TEXT, model_state TEXT, source_id TEXT, spec TEXT, token_ids TEXT,
        loss REAL, cost TEXT, created TEXT
    );
    CREATE TABLE attack_sets (
        key TEXT PRIMARY KEY, attack TEXT, params TEXT, version TEXT, model_state TEXT, concepts TEXT,
        source_hash TEXT, prompts INTEGER, cost TEXT, export_path TEXT, created TEXT
    );
    CREATE TABLE attack_state_keys (
        model_state TEXT, reads TEXT, key TEXT, PRIMARY KEY (model_state, reads)
    );
    ALTER TABLE results ADD COLUMN attack TEXT
    """,
    # Work claims (harness/claims.py): who is making which batch of images or model state right now.
    """
    CREATE TABLE claims (key TEXT PRIMARY KEY, host TEXT, pid INTEGER, started TEXT, token TEXT, expires REAL);
    """,
]


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def enable_wal(db: sqlite3.Connection, *, patience: float = 60.0) -> None:
    """Switch ``db`` to write-ahead logging, waiting out other processes that open the same store at the same moment.

    Switching needs an exclusive lock.  When two processes open a fresh store together, each holds a shared lock and
    asks for the exclusive one; SQLite then answers "database is locked" at once to one of them without calling the
    busy handler (waiting could deadlock), so the connect timeout does not help and the retry is ours.
    """
    deadline = time.monotonic() + patience
    delay = 0.01
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot be made or written (the OS's words), or None: a probe file is written and removed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        return str(err.strerror or err)
    return None


class Store:
    def __init__(self, out: str | Path, create: bool = True, *, read_only: bool = False, option: str = "--out"):
        """Open (``create``: or make) the store at ``out``.  ``read_only``: for commands that only read (report,
        compare, export, check): a store on a read-only mount or in a folder this user cannot write (an archived or
        shared copy) is then read as it is (``_connect_read_only``) instead of refused; a writable store opens as
        usual, so a run writing beside the reader is seen.  ``option`` names the command-line option that chose ``out``
        in messages (``harness merge`` takes ``--into``)."""
        self.root = Path(out)
        self.option = option
        if (not create or read_only) and not (self.root / "harness.db").exists():
            raise HarnessError(f"no results store at {self.root} (expected {self.root / 'harness.db'}); run `harness run --out {self.root}` first")
        problem = unwritable(self.root)
        if problem and not read_only:
            raise HarnessError(f"cannot write to output directory {self.root}: {problem}; choose another {option}")
        self.read_only = problem is not None
        self.cache = self.root / "cache"
        path = self.root / "harness.db"
        self._snapshot: Path | None = None
        if self.read_only:
            self.db = self._connect_read_only(path)
        else:
            self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        try:
            if self.read_only:
                self._check_schema_readable()
            else:
                enable_wal(self.db)
                self.db.execute("PRAGMA synchronous=NORMAL")
                self._migrate()
        except sqlite3.OperationalError:
            raise  # locked, disk full, I/O error: a store that may be fine (failures.user_error words the last two)
        except sqlite3.DatabaseError as err:
            # Not SQLite at all, or a damaged one (a truncated copy): SQLite refuses it before anything is written.
            self.db.close()
            raise HarnessError(f"{path} is not a readable results database ({err}); "
                               f"restore it from a copy or choose another {option}") from None
        self.files = Files(self)
        self.claims = Claims(self)

    def _connect_read_only(self, path: Path) -> sqlite3.Connection:
        """A connection to a database in a folder this process cannot write.

        Without a write-ahead log beside it (a store closed cleanly checkpoints it away), the file alone holds every
        result and "immutable" lets SQLite read it without making the -shm file a read-only folder cannot hold.
        With one, immutable would ignore the log's committed transactions (the newest results, or even the schema);
        the database and its log are then copied to a private temporary folder and read there, as one snapshot.
        """
        wal = path.with_name(path.name + "-wal")
        if not (wal.exists() and wal.stat().st_size > 0):
            return sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True, isolation_level=None)
        import shutil
        import tempfile

        self._snapshot = Path(tempfile.mkdtemp(prefix="harness-read-only-"))
        # A run writing the store at this very moment can tear the copy; the next command reads it whole again.
        shutil.copyfile(path, self._snapshot / path.name)
        shutil.copyfile(wal, self._snapshot / wal.name)
        return sqlite3.connect(self._snapshot / path.name, isolation_level=None)

    def _check_schema_readable(self) -> None:
        """A store opened read-only is read as it is: it must already have this version's schema."""
        try:
            row = self.db.execute("SELECT version FROM schema_version").fetchone()
        except sqlite3.OperationalError:
            row = None
        applied = row["version"] if row else 0
        if applied != len(MIGRATIONS):
            newer = applied > len(MIGRATIONS)
            raise HarnessError(f"{self.root / 'harness.db'} (read-only here) was written by {'a newer' if newer else 'an older'} "
                               f"erasure-harness (schema {applied}, this one knows {len(MIGRATIONS)}); "
                               + ("upgrade erasure-harness" if newer else "copy the store somewhere writable and open it there once to upgrade it"))

    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        while True:
            with self.transaction():
                # The version is read inside the write lock: two processes opening a fresh store migrate it once.
                row = self.db.execute("SELECT version FROM schema_version").fetchone()
                applied = row["version"] if row else 0
                if applied > len(MIGRATIONS):
                    raise HarnessError(f"{self.root / 'harness.db'} was written by a newer erasure-harness (schema {applied}, this one "
                                       f"knows {len(MIGRATIONS)}); upgrade erasure-harness or choose another {self.option}")
                if applied == len(MIGRATIONS):
                    return
                # Statement by statement: executescript() would commit in the middle of this transaction.
                for statement in MIGRATIONS[applied].split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute("DELETE FROM schema_version")
                self.db.execute("INSERT INTO schema_version VALUES (?)", (applied + 1,))

    def transaction(self):
        store = self

        class _Transaction:
            def __enter__(self):
                store.db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, exc, tb):
                store.db.execute("ROLLBACK" if exc_type else "COMMIT")
                return False

        return _Transaction()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()  # on every path: an error or Ctrl-C leaves no open connection, and its log checkpointed

    def close(self) -> None:
        """Stop the claims heartbeat and close the database, its write-ahead log copied into ``harness.db`` first, so
        that the file alone holds every result (a user copies or attaches it without ``harness.db-wal``).  Passive:
        a run working beside this one in the same store is never waited for; the last connection to close finishes."""
        self.claims.stop()
        try:
            if not self.read_only:
                self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass  # busy or a full disk: what is committed stays in the log, which SQLite reads with the database
        self.db.close()
        if self._snapshot is not None:  # a read-only store's private copy (``_connect_read_only``)
            import shutil

            shutil.rmtree(self._snapshot, ignore_errors=True)

    # ------------------------------------------------------------------ runs

    def start_run(self, run_id: str, config: dict) -> None:
        self.db.execute(
            "INSERT INTO runs (id, created, status, config) VALUES (?, ?, 'running', ?) "
            "ON CONFLICT(id) DO UPDATE SET status='running', config=excluded.config",
            (run_id, now(), json.dumps(config, sort_keys=True)),
        )

    def finish_run(self, run_id: str) -> None:
        self.db.execute("UPDATE runs SET status='finished', finished=? WHERE id=?", (now(), run_id))

    def run_config(self, run_id: str) -> dict | None:
        """The configuration a run was started with (``start_run``), or None for a run the store does not hold."""
        row = self.db.execute("SELECT config FROM runs WHERE id=?", (run_id,)).fetchone()
        return json.loads(row["config"]) if row and row["config"] else None

    def run_status(self) -> dict[str, str]:
        """Run id → "running" or "finished" (a killed run stays "running")."""
        return {row["id"]: row["status"] for row in self.db.execute("SELECT id, status FROM runs")}

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / check_name(run_id, "run id")

    def read_manifest(self, run_id: str) -> dict | None:
        """The run's manifest (``write_manifest``), None if it has none; a file that is not JSON raises ValueError."""
        path = self.run_dir(run_id) / "manifest.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def write_manifest(self, run_id: str, manifest: dict) -> Path:
        path = self.run_dir(run_id) / "manifest.json"
        atomic_write(path, json.dumps(manifest, indent=2, sort_keys=True, default=str).encode("utf-8"))
        return path

    # ------------------------------------------------------------------ backbones

    def backbone_fingerprint(self, identity: str) -> tuple[str, dict] | None:
        row = self.db.execute("SELECT fingerprint, scheduler FROM backbone_fingerprints WHERE identity=?", (identity,)).fetchone()
        return (row["fingerprint"], json.loads(row["scheduler"])) if row else None

    def add_backbone_fingerprint(self, identity: str, fingerprint: str, scheduler: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO backbone_fingerprints VALUES (?, ?, ?, ?)",
                        (identity, fingerprint, json.dumps(scheduler, sort_keys=True), now()))

    # ------------------------------------------------------------------ model states

    def delta_path(self, key: str) -> Path:
        return self.cache / "deltas" / f"{key}.safetensors"

    def model_state(self, key: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM model_states WHERE key=?", (key,)).fetchone()

    def add_model_state(self, key: str, backbone: str, method: str, params: dict, concepts: str, delta_path: str | None, metadata: dict) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO model_states VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, backbone, method, json.dumps(params, sort_keys=True, default=str), concepts, delta_path, json.dumps(metadata, default=str), now()),
        )

    # ------------------------------------------------------------------ images

    def image_path(self, key: str) -> Path:
        if not is_safe_name(key):  # a key is a sha256; one with a path in it (a damaged or crafted store) names no file here
            raise HarnessError(f"{key!r} is not an image key; the store {self.root} is damaged: run `harness check`")
        return self.cache / "images" / key[:2] / f"{key}.png"

    def add_images(self, rows: Iterable[tuple[str, str, dict, int]], files=(), stale_scores=()) -> None:
        """Record generated images; ``files`` (their integrity records) are committed in the same transaction, and the
        scores of ``stale_scores`` (images regenerated with other bytes) are dropped in it."""
        with self.transaction():
            self.forget_raw_scores(list(stale_scores))
            self.db.executemany(
                "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?)",
                [(key, str(self.image_path(key).relative_to(self.root)), state, json.dumps(spec, default=str), evals, now()) for key, state, spec, evals in rows],
            )
            self.files.record(list(files))

    def forget_image(self, key: str) -> None:
        """Drop an image no run uses (its file removed as damaged): its row, its file's record and its scores.  It is
        then not made, and the next run that needs it makes it."""
        self.db.execute("DELETE FROM images WHERE key=?", (key,))
        self.forget_raw_scores([key])
        self.files.forget(self.image_path(key))

    def forget_raw_scores(self, keys: list[str]) -> None:
        """Drop the stored scores of images that were regenerated with different bytes."""
        for chunk in _chunks(keys, 500):
            self.db.execute(f"DELETE FROM raw_scores WHERE image_key IN ({','.join('?' * len(chunk))})", chunk)

    def image_unet_evals(self, keys: list[str]) -> dict[str, int]:
        found = {}
        for chunk in _chunks(keys, 500):
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(f"SELECT key, unet_evals FROM images WHERE key IN ({marks})", chunk):
                found[row["key"]] = row["unet_evals"]
        return found

    def image_specs(self, keys: list[str]) -> dict[str, dict]:
        """Image key → the spec stored with it (as generated: defaults filled in, prompt length in tokens)."""
        found = {}
        for chunk in _chunks(keys, 500):
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(f"SELECT key, spec FROM images WHERE key IN ({marks})", chunk):
                found[row["key"]] = json.loads(row["spec"]) if row["spec"] else {}
        return found

    def link_run_images(self, run_id: str, method: str, benchmark: str, pairs: list[tuple[str, str]]) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO run_images VALUES (?, ?, ?, ?, ?)",
                [(run_id, method, benchmark, spec_id, key) for spec_id, key in pairs],
            )

    # ------------------------------------------------------------------ scores

    def raw_scores(self, keys: list[str], scorer: str, version: str) -> dict[str, dict]:
        found = {}
        for chunk in _chunks(keys, 500):
            marks = ",".join("?" * len(chunk))
            query = f"SELECT image_key, raw FROM raw_scores WHERE scorer=? AND version=? AND image_key IN ({marks})"
            for row in self.db.execute(query, (scorer, version, *chunk)):
                found[row["image_key"]] = json.loads(row["raw"])
        return found

    def raw_scores_per_version(self, scorer: str, versions: dict[str, str]) -> dict[str, dict]:
        """``raw_scores`` with each image key's own version (``Scorer.raw_version``: one per label value)."""
        found = {}
        for version in dict.fromkeys(versions.values()):
            found.update(self.raw_scores([key for key, v in versions.items() if v == version], scorer, version))
        return found

    def add_raw_scores_per_version(self, scorer: str, versions: dict[str, str], raws: dict[str, dict]) -> None:
        for version in dict.fromkeys(versions[key] for key in raws):
            self.add_raw_scores(scorer, version, {key: raw for key, raw in raws.items() if versions[key] == version})

    def add_raw_scores(self, scorer: str, version: str, raws: dict[str, dict]) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO raw_scores VALUES (?, ?, ?, ?)",
                [(key, scorer, version, json.dumps(raw)) for key, raw in raws.items()],
            )

    def set_score(self, key: str, scorer: str, version: str) -> dict | None:
        row = self.db.execute("SELECT raw FROM set_scores WHERE key=? AND scorer=? AND version=?", (key, scorer, version)).fetchone()
        return json.loads(row["raw"]) if row else None

    def add_set_score(self, key: str, scorer: str, version: str, raw: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO set_scores VALUES (?, ?, ?, ?)", (key, scorer, version, json.dumps(raw)))

    # ------------------------------------------------------------------ results

    def add_result(self, *, run_id: str, method: str, benchmark: str, metric: str, value: float, n: int,
                   lower_is_better: bool, name: str, description: str, unit: str, adversarial: bool, needs_reference: bool,
                   method_display: str = "", benchmark_display: str = "", metric_position: int | None = None,
                   model_state: str, unet_evals_per_image: float, attack: str | None = None,
                   values: list[tuple[str, str, int, str, float]] | None = None) -> None:
        """``attack``: the attack's label for an attack cell "A(B)" (its prompts were found against this method); such a
        result is stored as adversarial whatever ``adversarial`` says (``results.is_adversarial``).
        ``values``: its per-image values (as ``set_result_values``), written in the same transaction, so that a
        failure between the two never leaves a result whose values are missing or belong to an earlier run."""
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO results (run_id, method, benchmark, metric, value, n, lower_is_better, name, description, "
                "model_state, unet_evals_per_image, unit, adversarial, needs_reference, method_display, benchmark_display, metric_position, "
                "attack) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, method, benchmark, metric, value, n, int(lower_is_better), name, description, model_state, unet_evals_per_image,
                 unit, int(is_adversarial(adversarial, attack)), int(needs_reference), method_display, benchmark_display, metric_position, attack),
            )
            if values is not None:
                self._replace_result_values(run_id, method, benchmark, metric, values)

    def has_results(self) -> bool:
        return self.db.execute("SELECT 1 FROM results LIMIT 1").fetchone() is not None

    def results(self, runs: list[str] | None = None) -> list[Result]:
        """Every stored result (of ``runs``, if given), oldest run first, each with its model state's metadata."""
        query = (
            "SELECT results.*, runs.created AS run_created, model_states.metadata AS state_metadata FROM results "
            "JOIN runs ON runs.id = results.run_id LEFT JOIN model_states ON model_states.key = results.model_state"
        )
        rows = [dict(row) for row in self.db.execute(query + " ORDER BY runs.created, results.rowid")]
        return [
            Result(
                run_id=row["run_id"], method=row["method"], benchmark=row["benchmark"], metric=row["metric"],
                value=row["value"], n=row["n"],
                lower_is_better=bool(row["lower_is_better"]), name=row["name"], description=row["description"] or "",
                unit=row["unit"], adversarial=bool(row["adversarial"]), needs_reference=bool(row["needs_reference"]),
                method_display=row["method_display"] or "", benchmark_display=row["benchmark_display"] or "",
                metric_position=row["metric_position"],
                model_state=row["model_state"], unet_evals_per_image=row["unet_evals_per_image"], run_created=row["run_created"] or "",
                attack=row["attack"],
                state_metadata=json.loads(row["state_metadata"]) if row["state_metadata"] else {},
            )
            for row in rows
            if not runs or row["run_id"] in runs
        ]

    def set_result_values(self, run_id: str, method: str, benchmark: str, metric: str,
                          rows: list[tuple[str, str, int, str, float]]) -> None:
        """Replace the per-image values of one result: rows of (spec id, prompt id, seed, image key, value)."""
        with self.transaction():
            self._replace_result_values(run_id, method, benchmark, metric, rows)

    def _replace_result_values(self, run_id: str, method: str, benchmark: str, metric: str, rows) -> None:
        self.db.execute("DELETE FROM result_values WHERE run_id=? AND method=? AND benchmark=? AND metric=?", (run_id, method, benchmark, metric))
        self.db.executemany(
            "INSERT INTO result_values VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(run_id, method, benchmark, metric, spec_id, prompt_id, seed, key, value) for spec_id, prompt_id, seed, key, value in rows],
        )

    def result_values(self, runs: list[str] | None = None) -> dict[tuple[str, str, str, str], list[dict]]:
        """(run, method, benchmark, metric) → its per-image values, each ``{spec_id, prompt_id, seed, image_key, value}``."""
        found: dict[tuple[str, str, str, str], list[dict]] = {}
        cursor = self.db.cursor()
        cursor.row_factory = None  # plain tuples: a large store has hundreds of thousands of rows
        query = "SELECT run_id, method, benchmark, metric, spec_id, prompt_id, seed, image_key, value FROM result_values ORDER BY rowid"
        wanted = set(runs) if runs else None
        for run, method, benchmark, metric, spec_id, prompt_id, seed, image_key, value in cursor.execute(query):
            if wanted is not None and run not in wanted:
                continue
            found.setdefault((run, method, benchmark, metric), []).append(
                {"spec_id": spec_id, "prompt_id": prompt_id, "seed": seed, "image_key": image_key, "value": value}
            )
        return found

    # ------------------------------------------------------------------ attacks

    def attack_prompts(self, keys: list[str]) -> dict[str, dict]:
        """Stored adversarial prompts by key: ``{"spec": dict, "token_ids": list | None, "loss": float, "cost": dict}``."""
        found = {}
        for chunk in _chunks(keys, 500):
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(f"SELECT * FROM attack_prompts WHERE key IN ({marks})", chunk):
                found[row["key"]] = {
                    "spec": json.loads(row["spec"]),
                    "token_ids": json.loads(row["token_ids"]) if row["token_ids"] else None,
                    "loss": row["loss"],
                    "cost": json.loads(row["cost"]) if row["cost"] else {},
                }
        return found

    def add_attack_prompt(self, key: str, attack: str, model_state: str, source_id: str, spec: dict, token_ids: list | None,
                          loss: float | None, cost: dict) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO attack_prompts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, attack, model_state, source_id, json.dumps(spec, default=str), json.dumps(token_ids) if token_ids is not None else None,
             loss, json.dumps(cost), now()),
        )

    def add_attack_set(self, key: str, attack: str, params: dict, version: str, model_state: str, concepts: str, source_hash: str,
                       prompts: int, cost: dict, export_path: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO attack_sets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, attack, json.dumps(params, sort_keys=True, default=str), version, model_state, concepts, source_hash, prompts,
             json.dumps(cost), export_path, now()),
        )

    def attack_state_key(self, model_state: str, reads: str) -> str | None:
        """The key of the components an attack reads (e.g. "text_encoder") in a model state, once computed."""
        row = self.db.execute("SELECT key FROM attack_state_keys WHERE model_state=? AND reads=?", (model_state, reads)).fetchone()
        return row["key"] if row else None

    def add_attack_state_key(self, model_state: str, reads: str, key: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO attack_state_keys VALUES (?, ?, ?)", (model_state, reads, key))

    def attack_set(self, key: str) -> dict | None:
        row = self.db.execute("SELECT * FROM attack_sets WHERE key=?", (key,)).fetchone()
        return dict(row) if row else None

    def attack_sets(self) -> list[dict]:
        rows = [dict(row) for row in self.db.execute("SELECT * FROM attack_sets ORDER BY created")]
        for row in rows:
            row["params"] = json.loads(row["params"])
            row["cost"] = json.loads(row["cost"])
        return rows

    def run_images(self, run_id: str | None = None) -> list[dict]:
        query = "SELECT run_images.*, images.path, images.spec FROM run_images JOIN images ON images.key = run_images.image_key"
        rows = [dict(row) for row in self.db.execute(query)]
        return [row for row in rows if run_id is None or row["run_id"] == run_id]


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
