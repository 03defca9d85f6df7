"""``harness check``: every file of a store against its record; ``--repair`` regenerates what was damaged.

Damaged: the database itself, when SQLite's quick_check fails (nothing else is checked then, and repair refuses: the
store's cache can rebuild it, see DATABASE_REMEDY); a recorded file that is missing, has another size, or fails its
sha256; or an image, or the delta of a model state that results name, that the database names and that was removed as
damaged and not made again.
Unrecorded: a file the database names (an image or a delta) written before the ``files`` table existed, sound if
it decodes; or an image a kill left renamed into place but not recorded, which decodes and carries its own row
(repair records it when that row hashes to its name, and otherwise leaves it to the run that needs it, which adopts
it).  A re-run would use it, so it is never deleted.
Orphaned: a file under ``cache/`` that nothing records or names; leftover temporary files of killed writes are
orphans too.  A temporary file whose writer may still be writing it (its pid lives on this host, or it is younger
than a claim's lease) is left alone, and so are the image rows a data-parallel rank handed over in
``cache/pending-images/`` (the next data-parallel run takes them in).

Unsafe: a row naming a file that is none of the store's: an absolute path, a path that leads out of ``cache/`` (``..``,
a link), or a model state or image key with a path in it.  Every file the store writes lies under ``cache/``, so such a
row comes from a store copied or merged from somewhere untrusted: it is never opened or deleted, and repair drops
the row only.

Repair removes damaged and orphaned files, records sound unrecorded ones, and
re-runs every stored run that used a damaged image or model delta (from its
stored configuration), which regenerates exactly what is missing.  What no stored run makes again is fixed in
place: a state record is written again from its database row; an image no run used, a delta no run's results name
(a composition's first part) and a method cache are forgotten, so that the next run that needs them makes them.
It refuses to start while a run holds work claims in the store, and it deletes nothing that was recorded again
since it was checked.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from harness import claims as work_claims
from harness import integrity, recover
from harness.api import DTYPES, HarnessError
from harness.distributed import PENDING_DIR
from harness.names import is_safe_name
from harness.store import Store

WRITER_PID = re.compile(r"\.(\d+)-\d+" + re.escape(integrity.TEMP_SUFFIX) + "$")  # integrity.temp_path's name


@dataclass
class Finding:
    path: str  # relative to the store root
    state: str  # "damaged", "unrecorded", "unreadable", "orphaned" or "unsafe"
    detail: str
    kind: str = ""


@dataclass
class Report:
    checked: int = 0
    findings: list[Finding] = field(default_factory=list)
    runs_affected: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)  # temporary files a live write may still own: left alone
    # For repair: what each damaged file's record was when checked (sha256, created), so that a file a run made
    # again since is not deleted; and the unrecorded files to record, with the images row of one found without it.
    records: dict[str, tuple] = field(default_factory=dict)
    adopt: dict[str, tuple[str, tuple | None]] = field(default_factory=dict)  # path -> (kind, images row or None)
    unsafe: list[tuple[str, str]] = field(default_factory=list)  # (table, primary key) of each unsafe row: repair drops it

    def count(self, state: str) -> int:
        return sum(f.state == state for f in self.findings)

    @property
    def failing(self) -> int:
        """Findings that fail a check and count as left after ``--repair``: damaged or unreadable files, unsafe rows."""
        return self.count("damaged") + self.count("unreadable") + self.count(UNSAFE)

    def hint(self, root) -> str:
        """The one line under a failing check: what ``--repair`` does about these findings, or what to do instead."""
        if any(f.kind == DATABASE for f in self.findings):
            return f"harness: {root}/harness.db is damaged and --repair cannot mend it: {DATABASE_REMEDY}"
        parts = [f"{n} {what}" for n, what in ((self.count("damaged") + self.count("unreadable"), "damaged file(s)"),
                                                (self.count(UNSAFE), "row(s) naming a file outside the store")) if n]
        return (f"harness: {' and '.join(parts)}; `harness check --out {root} --repair` regenerates damaged files and drops "
                "unsafe rows (never the files they name)")


UNSAFE = "unsafe"
# What to do about a damaged harness.db: the cache holds each image's and each delta's row (harness/recover.py), so a
# re-run of each command into the store without its database takes them back instead of making them again.
DATABASE_REMEDY = ("restore harness.db from a copy, or move harness.db (with harness.db-wal and harness.db-shm) aside and run each "
                   "run's command again (runs/<id>/manifest.json holds its configuration): the runs take the images and model "
                   "deltas in cache/ back without making them again")
ROW_KEYS = {"files": "path", "images": "key", "model_states": "key"}  # how repair names an unsafe row of each table


def unsafe_path(root: Path, rel: str | Path) -> str | None:
    """Why ``rel``, a path a row of the store at ``root`` names, is none of the store's files (None: it is one).

    Every file the store writes lies under ``cache/`` (integrity.Files.relative records it relative to the root), so an
    absolute path, or one that leads out of ``cache/`` (``..``, a link to elsewhere, ``harness.db`` itself), comes from
    a damaged or crafted store: opening or deleting it would reach a file the store never wrote."""
    if Path(rel).is_absolute():
        return "an absolute path"
    root = Path(root)
    if not (root / rel).resolve().is_relative_to((root / "cache").resolve()):
        return "a path outside the store's cache/ folder"
    return None


def unsafe_row(table: str, row: dict, root: Path) -> str | None:
    """Why a row of ``table`` names a file outside the store at ``root`` (None: it names none, or one of the store's).
    Image and model state keys become file names (Store.image_path, Store.delta_path): one with a path in it is unsafe."""
    if table == "files":
        return unsafe_path(root, row["path"])
    if table == "images":
        return unsafe_path(root, row["path"]) if is_safe_name(str(row["key"])) else "an image key with a path in it"
    if table == "model_states" and not is_safe_name(str(row["key"])):
        return "a model state key with a path in it"
    return None


def _unsafe(report: Report, table: str, key: str, rel: str, why: str, kind: str = "") -> None:
    report.checked += 1
    report.findings.append(Finding(rel, UNSAFE, f"the {table} table names {why}; never opened: --repair drops the row and deletes no file", kind))
    report.unsafe.append((table, key))


DATABASE = "database"  # the kind of the finding that harness.db itself is damaged


def database_problem(store: Store) -> str | None:
    """What SQLite's quick_check finds wrong with the store's database (None: nothing).  check reads only a few tables;
    a damaged page elsewhere (results, scores) would otherwise pass as a clean store and fail the next report or run."""
    try:
        found = [row[0] for row in store.db.execute("PRAGMA quick_check")]
    except sqlite3.OperationalError:
        raise  # locked, or an I/O error: the database may be fine (failures.user_error words it in one line)
    except sqlite3.DatabaseError as err:  # damage bad enough that the check itself stops
        return str(err)
    return None if found == ["ok"] else "; ".join(" ".join(line.split()) for line in found[:3])


def check(store: Store) -> Report:
    report = Report()
    root = store.root
    if problem := database_problem(store):
        # Every record is read from the database, so no file is checked against a damaged one.
        report.findings.append(Finding("harness.db", "damaged", f"SQLite's quick_check fails: {problem}; no file was checked; {DATABASE_REMEDY}", DATABASE))
        return report
    recorded = {row["path"]: row for row in store.db.execute("SELECT * FROM files")}
    for rel, row in recorded.items():
        if why := unsafe_row("files", dict(row), root):
            _unsafe(report, "files", rel, rel, why, row["kind"] or "")
            continue
        report.checked += 1
        record = integrity.Record(rel, row["sha256"], row["size"], row["kind"])
        problem = store.files.problem(root / rel, record)
        if problem:
            report.findings.append(Finding(rel, "damaged", problem, row["kind"] or ""))
            report.records[rel] = (row["sha256"], row["created"])

    named = {}  # files the database refers to by name, with how to check one that has no record
    for row in store.db.execute("SELECT key, path FROM images"):
        rel = Path(row["path"]).as_posix()
        if why := unsafe_row("images", dict(row), root):
            _unsafe(report, "images", row["key"], rel, why, integrity.IMAGE)
            continue
        named[rel] = (integrity.IMAGE, integrity.image_decodes)
    for row in store.db.execute("SELECT key, delta_path FROM model_states"):
        if why := unsafe_row("model_states", dict(row), root):  # its delta and its state record are named by its key
            _unsafe(report, "model_states", row["key"], row["key"], why, integrity.DELTA)
            continue
        if row["delta_path"] is None:  # a sampling-time method's state: no file
            continue
        rel = store.delta_path(row["key"]).relative_to(root).as_posix()
        named[rel] = (integrity.DELTA, integrity.safetensors_loads)
    for rel, (kind, decodes) in named.items():
        if rel in recorded:
            continue
        if not (root / rel).exists():  # removed as damaged, record and all, and not made again since
            missing = Finding(rel, "damaged", "missing: removed as damaged and not made again", kind)
            # A delta is damage when results name its state: re-running their runs erases it again.  One that no results
            # name (a composition's first part) is left to the next run that needs it, as repair leaves a damaged one.
            if kind == integrity.IMAGE or _runs_using(store, missing):
                report.checked += 1
                report.findings.append(missing)
            continue
        report.checked += 1
        sound = integrity._sound(decodes, root / rel)
        report.findings.append(Finding(rel, "unrecorded" if sound else "unreadable",
                                       "written without a record; it decodes" if sound else "written without a record, and it does not decode",
                                       kind))
        if sound:
            report.adopt[rel] = (kind, None)

    cache = root / "cache"
    if cache.exists():
        backbones = [(row["fingerprint"], json.loads(row["scheduler"])) for row in store.db.execute("SELECT * FROM backbone_fingerprints")]
        for path in sorted(p for p in cache.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            if rel in recorded or rel in named:
                continue
            if path.name.startswith(".") and path.name.endswith(integrity.TEMP_SUFFIX):
                if _in_flight(path):
                    report.in_flight.append(rel)
                else:
                    report.findings.append(Finding(rel, "orphaned", "temporary file of an interrupted write"))
            elif path.parent == cache / PENDING_DIR and path.suffix == ".json":
                continue  # image rows a data-parallel rank handed over: the next data-parallel run takes them in
            elif path.parent.parent == cache / "images" and path.suffix == ".png" and (own := _own_row(path)) is not None:
                # Renamed into place, and its row not stored yet (a kill, or a live run about to): a re-run adopts it.
                report.checked += 1
                key = path.stem
                if _addressed(key, own, backbones):
                    report.adopt[rel] = (integrity.IMAGE, (key, own["model_state"], own["spec"], own["unet_evals"]))
                    detail = "renamed into place but not recorded; it decodes and its own row gives its address"
                else:
                    detail = "renamed into place but not recorded; it decodes and carries its own row (the run that needs it adopts it)"
                report.findings.append(Finding(rel, "unrecorded", detail, integrity.IMAGE))
            else:
                report.findings.append(Finding(rel, "orphaned", "nothing records it"))

    runs = set()
    for finding in report.findings:
        if finding.state in ("damaged", "unreadable"):
            using = _runs_using(store, finding)
            runs |= using
            if not using:
                finding.detail += f"; {_instead_of_a_rerun(store, finding)}"
    report.runs_affected = [row["id"] for row in store.db.execute("SELECT id FROM runs ORDER BY created") if row["id"] in runs]
    return report


def _in_flight(path: Path) -> bool:
    """Whether a temporary file's writer may still be writing it: its pid lives on this host, or the file is younger
    than a claim's lease (its writer may be on another host sharing the store)."""
    match = WRITER_PID.search(path.name)
    if match and work_claims._alive(int(match.group(1)), ""):
        return True
    try:
        return time.time() - path.stat().st_mtime < work_claims.LEASE_SECONDS
    except FileNotFoundError:
        return True  # renamed into place just now


def _own_row(path: Path) -> dict | None:
    """The images row a PNG carries (recover.png_info) if the PNG decodes whole, else None."""
    return recover.read_png_record(path) if integrity._sound(integrity.image_decodes, path) else None


def _addressed(key: str, own: dict, backbones: list[tuple[str, dict]]) -> bool:
    """Whether the row a PNG carries hashes to its file name, with a backbone this store has seen (a kill's leftover
    is adopted only then: its bytes are what that row describes)."""
    from harness.engine import image_address

    try:
        return any(image_address(fingerprint, own["model_state"], own["spec"], scheduler, dtype) == key
                   for fingerprint, scheduler in backbones for dtype in DTYPES)
    except (KeyError, TypeError):
        return False


def _runs_using(store: Store, finding: Finding) -> set[str]:
    """Stored runs that make a damaged image or delta again when re-run: those that used the image, or whose results
    name the model state (a composition's results name its last part only)."""
    name = Path(finding.path).name
    if finding.kind == integrity.IMAGE:
        query, key = "SELECT DISTINCT run_id FROM run_images WHERE image_key=?", name.removesuffix(".png")
    elif finding.kind == integrity.DELTA:
        query, key = "SELECT DISTINCT run_id FROM results WHERE model_state=?", name.removesuffix(".safetensors")
    else:
        return set()
    return {row["run_id"] for row in store.db.execute(query, (key,))}


def _state_key(store: Store, rel: str) -> str | None:
    """The model state whose row ``rel`` holds (recover.state_record_path), or None."""
    path = store.root / rel
    return path.stem if path == recover.state_record_path(store, path.stem) else None


def _instead_of_a_rerun(store: Store, finding: Finding) -> str:
    """What --repair does with a damaged file no stored run makes again."""
    key = _state_key(store, finding.path)
    if key is not None:
        if store.model_state(key) is not None:
            return "--repair writes it again from the database"
        return "--repair removes it (the database has no row for its state)"
    if finding.kind == integrity.IMAGE:
        return "no stored run used it: --repair forgets it, and the next run that needs it makes it"
    if finding.kind == integrity.DELTA:
        return ("no stored run's results name this model state (the first part of a composition, say): --repair removes it, "
                "and the next run that needs it erases again")
    return "a cache: --repair removes it, and the next erasure that needs it computes it again"


def repair(store: Store, report: Report, registry, show_progress: bool = False) -> list[str]:
    """Fix what ``report`` found; return one line per action that could not be done."""
    from harness.runner import RunConfig, Runner, plan

    if any(finding.kind == DATABASE for finding in report.findings):
        # Repair works from the database's rows: on a damaged one it could delete what a sound row would keep.
        raise HarnessError(f"{store.root / 'harness.db'} is damaged and --repair cannot mend it: {DATABASE_REMEDY}")
    problems = []
    adopt = {}  # hashed before the store is locked: a large delta takes a while
    for rel, (kind, row) in report.adopt.items():
        path = store.root / rel
        if path.exists():
            adopt[rel] = (integrity.Record(rel, integrity.sha256_file(path), path.stat().st_size, kind), row)
    # Deleting happens inside one write transaction: no run can take a work claim or record a file meanwhile, and a run
    # writes files only while it holds claims, so nothing deleted here can be a write in progress.
    with store.transaction():
        live = [row for row in store.db.execute("SELECT * FROM claims") if store.claims._live(row)]
        if live:
            raise HarnessError(f"a run is writing this store (pid {live[0]['pid']} on {live[0]['host']} holds {len(live)} work claim(s)); "
                               "run `harness check --repair` again when it has finished (`harness check` alone is safe beside it)")
        for finding in report.findings:
            if finding.state not in ("orphaned", "unreadable", "damaged"):
                continue
            path = store.root / finding.path
            now = store.db.execute("SELECT sha256, created FROM files WHERE path=?", (finding.path,)).fetchone()
            if (tuple(now) if now else None) != report.records.get(finding.path):
                continue  # recorded again (or removed) since it was checked: a run has dealt with it
            path.unlink(missing_ok=True)
            if finding.state == "orphaned" or _runs_using(store, finding):
                continue  # the re-run below makes it again; its record stays, so that stale scores are dropped if it differs
            key = _state_key(store, finding.path)
            state = store.model_state(key) if key is not None else None
            if state is not None:
                recover.write_state_record(store, key, backbone=state["backbone"], method=state["method"], params=json.loads(state["params"]),
                                           concepts=state["concepts"], metadata=json.loads(state["metadata"] or "{}"))
            elif finding.kind == integrity.IMAGE:
                store.forget_image(path.stem)
            else:
                store.files.forget(path)
        for table, key in report.unsafe:  # the row only: its path names no file of this store
            store.db.execute(f'DELETE FROM "{table}" WHERE "{ROW_KEYS[table]}"=?', (key,))
            if table == "images":
                store.forget_raw_scores([key])  # as forget_image does: scores of an image the store no longer has
    for rel, (record, row) in adopt.items():
        if store.files.lookup(store.root / rel) is None:
            if row is None:
                store.files.record([record])
            else:  # an image a kill left unrecorded: the row its PNG carries, with its record, as the run would have stored them
                store.add_images([row], files=[record])
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    for run_id in report.runs_affected:
        row = store.db.execute("SELECT config FROM runs WHERE id=?", (run_id,)).fetchone()
        config = {key: value for key, value in json.loads(row["config"] or "{}").items() if key in fields}
        config.update(out=str(store.root), run_name=run_id, show_progress=show_progress)
        try:
            with warnings.catch_warnings():  # each damaged file was listed already: regenerating it needs no second warning
                warnings.simplefilter("ignore", integrity.DamagedFileWarning)
                runner = Runner(plan(RunConfig(**config), registry))
                try:
                    runner.execute()
                finally:
                    runner.store.close()  # its own connection and heartbeat, else kept until the process ends
        except Exception as err:  # noqa: BLE001 - say which run could not be redone, and go on with the next
            problems.append(f"run {run_id} could not be re-run ({err}); its missing files are regenerated by `harness run` with its options")
    return problems


def render(report: Report) -> list[str]:
    lines = [f"{f.state}: {f.path} ({f.detail})" for f in report.findings]
    damaged = sum(f.state in ("damaged", "unreadable") for f in report.findings)  # unsafe rows are counted apart
    summary = (f"checked {report.checked} recorded or named files: {damaged} damaged, {report.count('unrecorded')} unrecorded, "
               f"{report.count('orphaned')} orphaned")
    if report.runs_affected:
        summary += f"; runs that used damaged files: {', '.join(report.runs_affected)}"
    if report.in_flight:
        summary += f"; {len(report.in_flight)} temporary files of writes that may be in progress left alone"
    if unsafe := sum(f.state == UNSAFE for f in report.findings):
        summary += f"; {unsafe} rows name a file outside the store (never opened; --repair drops them)"
    return lines + [summary]
