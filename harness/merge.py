"""``harness merge SRC… --into DIR``: the union of stores made independently (e.g. a Slurm array, one job per method).

Every table of the store is merged by primary key: an entry only one side has is copied; an entry both sides have
must agree, otherwise nothing is merged and the first disagreement is named in one line.  Two stores that did the
same piece of work (both erased ``trce-t``, both ran a text-encoder attack whose prompts every method shares) agree
on what it made but not on how it went, so these are no conflict and the first store's are kept (the target's, if it
has the entry): timestamps, measured costs (an attack's cost, a model state's erase time, device and evaluation
counts, a method's own ``seconds``) and paths that name the store itself.  A run is compared by the options that define
it (harness.runner.RUN_DEFINING), not by where it was stored or on which device it ran, and a run killed part-way in one
store and finished in another is one run: the finished one's row and manifest are kept.  Files follow their rows: everything
under ``cache/`` (images, model-state deltas, ...) is content-addressed and copied when missing (different bytes under
one address are a conflict too, except for the measured values in a model state's record); run manifests are copied
per run, attack exports per attacked set.  Intermediate method caches (``cache/methods``) are copied when missing and
otherwise kept as they are, with their ``files`` rows: they are inputs to an edit whose product, the delta, is
compared (a GPU seldom recomputes them bit for bit).

The merge is one transaction: conflicts are looked for before anything is written, the rows are inserted in a
single SQLite transaction, and files copied before a failure are removed again.
"""

from __future__ import annotations

import argparse
import dataclasses
import filecmp
import json
import math
import shutil
import sqlite3
from pathlib import Path

from harness.api import HarnessError
from harness.check import unsafe_row
from harness.distributed import PENDING_DIR  # rows a data-parallel rank left for its rank 0: never merged
from harness.integrity import atomic_write
from harness.store import Store

# Columns that say when or where an entry was made, not what it is: never a conflict.
VOLATILE_COLUMNS = {"created", "finished", "status", "delta_path"}
# The same per table: what an attack cost (wall time; its step and evaluation counts with it, as the prompts found are
# compared), which source prompt first asked for a search (its key is the search's input alone: another benchmark's
# id or labels for the same prompt, seed and guidance share it) and where its CSV was exported (into the source store;
# merge() points a copied row at the copied CSV).
MEASURED_COLUMNS = {"attack_prompts": {"cost", "source_id", "spec"}, "attack_sets": {"cost", "export_path"}}
# Keys of a model state's metadata that say how its erasure went (harness/engine.py, and methods' own timers), not
# what it made: two stores that erased the same state differ in them.  What it made is the delta, compared byte by byte.
MEASURED_METADATA = {"erase_seconds", "erase_device", "erase_unet_evals", "erase_text_encoder_evals", "seconds"}
# Files whose `files` row (hash, size) is no conflict: method caches are kept as they are, and a model state's record
# holds its measured metadata (the file itself is compared without it, see _same_file).
KEPT_FILES = ("cache/methods/", "cache/states/")
# Manifest keys that describe how a run went rather than what it is (a re-run loads nothing, overlaps differently), and
# where it ran: the device it was given and what that chose (matmul precision, threads), which --device and the machine
# set, not the run's identity (harness.runner.RUN_DEFINING); images made otherwise are compared byte by byte.
VOLATILE_MANIFEST_KEYS = {"pipeline_loaded", "overlap", "distributed", "device", "matmul_precision", "threads"}
# The same inside the manifest's ``versions``: the operating system and kernel (``platform.platform()``) of the machine
# it ran on; two nodes of one cluster seldom share a kernel build.  Python and package versions stay compared.
VOLATILE_VERSIONS = {"platform"}
# What a manifest's attack cell records of how its search went (harness/attacking.py): the prompts found and the cost of
# this execution, the cost in total and where the prompts were exported (into its own store).  The prompts themselves
# are compared in attack_prompts.
MEASURED_ATTACK_CELL = {"found_now", "cost_now", "cost_total", "export"}


def _tables(db: sqlite3.Connection) -> dict[str, tuple[list[str], list[str]]]:
    """{table: (columns, primary-key columns)} for every table but the migration counter."""
    tables = {}
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"):
        if name in ("schema_version", "claims"):  # the migration counter; work in flight in the source's own processes
            continue
        info = db.execute(f'PRAGMA table_info("{name}")').fetchall()
        columns = [row[1] for row in info]
        primary = [row[1] for row in sorted(info, key=lambda row: row[5]) if row[5] > 0] or columns
        tables[name] = (columns, primary)
    return tables


def _normalised(value):
    """A cell as compared: JSON text by its meaning (key order aside), NaN equal to NaN."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.dumps(json.loads(value), sort_keys=True)
        except ValueError:
            return value
    return value


def _as_dict(value) -> dict | None:
    """A JSON object stored as text (or already a dict) as a dict; None for anything else, compared as it is."""
    try:
        data = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _without_measured(metadata):
    """A model state's metadata (JSON text or a dict) as compared: what the erasure made, not what it took."""
    if (data := _as_dict(metadata)) is None:
        return metadata
    return json.dumps({key: value for key, value in data.items() if key not in MEASURED_METADATA}, sort_keys=True, default=str)


def _run_identity(config):
    """A run's configuration (JSON text or a dict) as compared: the keys that define the run, not the ones that say
    where its store was or how it ran (--out, --device, --batch-size, progress bars)."""
    from harness.runner import RUN_DEFINING, RunConfig

    if (data := _as_dict(config)) is None:
        return config
    defaults = dataclasses.asdict(RunConfig())  # a run stored before a key existed ran with its default
    return json.dumps({key: data.get(key, defaults[key]) for key in RUN_DEFINING}, sort_keys=True, default=str)


def _comparable(table: str, row: dict) -> dict:
    ignored = VOLATILE_COLUMNS | MEASURED_COLUMNS.get(table, set())
    if table == "files" and str(row.get("path")).startswith(KEPT_FILES):
        ignored = ignored | {"sha256", "size"}
    comparable = {key: _normalised(value) for key, value in row.items() if key not in ignored}
    if table == "model_states" and "metadata" in comparable:
        comparable["metadata"] = _without_measured(row["metadata"])
    if table == "runs" and "config" in comparable:
        comparable["config"] = _run_identity(row["config"])
    return comparable


def _manifest(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    manifest = {key: value for key, value in data.items() if key not in VOLATILE_MANIFEST_KEYS}
    if "config" in manifest:
        manifest["config"] = _run_identity(manifest["config"])
    if isinstance(manifest.get("versions"), dict):
        manifest["versions"] = {key: value for key, value in manifest["versions"].items() if key not in VOLATILE_VERSIONS}
    if isinstance(manifest.get("model_states"), dict):  # {"method / concepts": [each part's metadata]}
        manifest["model_states"] = {label: [_without_measured(part) for part in parts] if isinstance(parts, list) else parts
                                    for label, parts in manifest["model_states"].items()}
    if isinstance(manifest.get("attack_cells"), list):
        manifest["attack_cells"] = [{key: value for key, value in cell.items() if key not in MEASURED_ATTACK_CELL}
                                    if isinstance(cell, dict) else cell for cell in manifest["attack_cells"]]
    return manifest


def _same_manifest(a: Path, b: Path) -> bool:
    """Whether two manifests describe the same run.  A run killed part-way wrote its manifest without what the finish
    adds (its model states, attack cells, ...): a key only one of them has is no conflict."""
    mine, theirs = _manifest(a), _manifest(b)
    return all(mine[key] == theirs[key] for key in mine.keys() & theirs.keys())


def _finished_later(a: Path, b: Path) -> bool:
    """Whether manifest ``a`` holds more than manifest ``b`` (it is the finished run's, ``b`` a killed one's)."""
    if a.name != "manifest.json" or b.name != "manifest.json":
        return False
    try:
        return json.loads(a.read_text(encoding="utf-8")).keys() > json.loads(b.read_text(encoding="utf-8")).keys()
    except (OSError, ValueError, AttributeError):
        return False


class _Plan:
    """What merging the sources adds to the target: rows per table and files to copy."""

    def __init__(self, target: Store):
        self.target = target
        self.tables = _tables(target.db)
        self.rows: dict[str, dict[tuple, dict]] = {name: {} for name in self.tables}
        self.row_source: dict[tuple[str, tuple], Path] = {}
        self.files: dict[Path, Path] = {}  # target path -> source path
        self.run_status: dict[str, str | None] = {}  # run id -> when it finished, for a run some source finished

    def add_store(self, source: Store) -> None:
        source_tables = _tables(source.db)
        for name, (_columns, primary) in self.tables.items():
            if name not in source_tables:
                continue
            for row in source.db.execute(f'SELECT * FROM "{name}"'):
                row = dict(row)
                key = tuple(row[column] for column in primary)
                # A store copied from elsewhere may name a file outside itself: copied, the row would lead the merged
                # store's readers (and `harness check --repair`, which deletes what it finds damaged) to that file.
                if why := unsafe_row(name, row, source.root):
                    entry = ", ".join(f"{column}={value!r}" for column, value in zip(primary, key))
                    raise HarnessError(f"{source.root}: its {name} row ({entry}) names {why}; nothing was merged "
                                       "(`harness check --repair` on a copy of that store drops such rows)")
                self._add_row(name, primary, key, row, source.root)
        for folder in ("cache", "runs", "attacks"):
            for path in sorted((source.root / folder).rglob("*")):
                relative = path.relative_to(source.root)
                # A link is never followed: a store copied from elsewhere could link a key's file to any file here.
                if path.is_symlink() or not path.is_file() or path.name.startswith(".") or relative.parts[:2] == ("cache", PENDING_DIR):
                    continue
                self._add_file(self.target.root / relative, path, keep_existing=relative.parts[:2] == ("cache", "methods"))

    def _add_row(self, table: str, primary: list[str], key: tuple, row: dict, origin: Path) -> None:
        if table == "runs" and row.get("status") == "finished":
            self.run_status[row["id"]] = row.get("finished")
        known = self.rows[table].get(key)
        if known is None:
            placeholders = " AND ".join(f'"{column}" IS ?' for column in primary)
            existing = self.target.db.execute(f'SELECT * FROM "{table}" WHERE {placeholders}', key).fetchone()
            if existing is not None:
                if _comparable(table, dict(existing)) != _comparable(table, row):
                    raise self._conflict(table, primary, key, row, dict(existing), origin, self.target.root)
                return
            self.rows[table][key] = row
            self.row_source[(table, key)] = origin
        elif _comparable(table, known) != _comparable(table, row):
            raise self._conflict(table, primary, key, row, known, origin, self.row_source[(table, key)])
        elif table == "runs" and row.get("status") == "finished" and known.get("status") != "finished":
            # One store's run was killed part-way: the finished one's row (its finish time), as its manifest is kept.
            self.rows[table][key] = row
            self.row_source[(table, key)] = origin

    @staticmethod
    def _conflict(table, primary, key, row, other, origin: Path, other_origin: Path) -> HarnessError:
        mine, theirs = _comparable(table, row), _comparable(table, other)
        differing = sorted(column for column in mine if mine.get(column) != theirs.get(column))
        entry = ", ".join(f"{column}={value}" for column, value in zip(primary, key))
        return HarnessError(
            f"conflict in {table} ({entry}): {origin} and {other_origin} differ in {', '.join(differing)}; "
            "nothing was merged (merge without one of them, or re-run it into a fresh --out)"
        )

    def _add_file(self, destination: Path, source: Path, keep_existing: bool) -> None:
        planned = self.files.get(destination)
        other = planned or (destination if destination.exists() else None)
        if other is None:
            self.files[destination] = source
            return
        if keep_existing or _same_file(source, other):
            if _finished_later(source, other):  # the finished run's manifest, not a killed one's (the target's too)
                self.files[destination] = source
            return
        raise HarnessError(
            f"conflict in files: {source} and {other} differ under the same address; "
            "nothing was merged (merge without one of them, or re-run it into a fresh --out)"
        )


def _same_file(a: Path, b: Path) -> bool:
    if a.name == "manifest.json" and b.name == "manifest.json":
        return _same_manifest(a, b)
    if a.parent.name == "states" and a.parent.parent.name == "cache" and a.suffix == ".json":
        return _state_record(a) == _state_record(b)
    return filecmp.cmp(a, b, shallow=False)


def _state_record(path: Path):
    """A model state's record (harness/recover.py) as compared: its row, measured metadata aside."""
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return path.read_bytes()
    if not isinstance(row, dict):
        return row
    return {**row, "metadata": _without_measured(row.get("metadata"))}


def merge(sources: list[str | Path], into: str | Path) -> dict[str, int]:
    """Merge every source store into ``into`` (created if new); return how many rows each table gained."""
    into_path = Path(into).expanduser().resolve()
    if not sources:
        raise HarnessError("harness merge needs at least one source store: harness merge SRC... --into DIR")
    source_paths = []
    for source in sources:
        path = Path(source).expanduser().resolve()
        if path == into_path:
            raise HarnessError(f"{source} is the target itself; name each source store once and --into a different one")
        if not (path / "harness.db").exists():
            raise HarnessError(f"no results store at {source} (expected {path / 'harness.db'})")
        if path in source_paths:
            raise HarnessError(f"{source} is named twice; name each source store once")
        source_paths.append(path)

    target_is_new = not into_path.exists()
    target = Store(into_path, option="--into")
    copied: list[Path] = []
    replaced: dict[Path, bytes] = {}  # a target's manifest of a killed run, replaced by the finished one: put back on failure
    try:
        plan = _Plan(target)
        for path in source_paths:
            source = Store(path, read_only=True)  # an archived copy on a read-only mount merges too
            try:
                plan.add_store(source)
            finally:
                source.close()
        for destination, source_file in plan.files.items():
            if destination.exists():
                replaced[destination] = destination.read_bytes()
            atomic_write(destination, write=lambda tmp, source_file=source_file: shutil.copyfile(source_file, tmp))
            copied.append(destination)
        with target.transaction():
            for table, rows in plan.rows.items():
                if not rows:
                    continue
                columns = plan.tables[table][0]
                names = ", ".join(f'"{column}"' for column in columns)
                marks = ", ".join("?" * len(columns))
                values = []
                for row in rows.values():
                    if table == "model_states" and row.get("delta_path"):
                        row = {**row, "delta_path": str(target.delta_path(row["key"]))}
                    if table == "attack_sets" and row.get("export_path"):  # the export was copied with attacks/
                        row = {**row, "export_path": str(target.root / "attacks" / Path(row["export_path"]).name)}
                    values.append([row.get(column) for column in columns])
                target.db.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', values)
            for run_id, finished in plan.run_status.items():
                target.db.execute("UPDATE runs SET status='finished', finished=COALESCE(finished, ?) WHERE id=?", (finished, run_id))
    except BaseException:
        for path in copied:
            if path in replaced:
                atomic_write(path, replaced[path])
            else:
                path.unlink(missing_ok=True)
        target.close()
        if target_is_new:  # it did not exist before this command: leave no empty store behind
            shutil.rmtree(into_path, ignore_errors=True)
        raise
    target.close()
    return {table: len(rows) for table, rows in plan.rows.items()}


def cmd_merge(args, registry) -> int:
    added = merge(args.sources, args.into)
    summary = ", ".join(f"{count} {table}" for table, count in added.items() if count) or "nothing new"
    print(f"merged {len(args.sources)} store{'s' if len(args.sources) != 1 else ''} into {args.into}: {summary}")
    return 0


def add_merge_command(sub) -> None:
    p = sub.add_parser("merge", help="merge stores made by separate runs into one",
                       description="Merge result stores (images, raw scores, model states, results, manifests) into one store. "
                                   "Entries both sides have must agree; on a conflict nothing is merged. Shared work that differs only in how "
                                   "it went (timestamps, measured costs and erase times, paths into the source store, intermediate "
                                   "method caches) is no conflict: the first store's is kept. The same run in two stores (one "
                                   "perhaps killed part-way) merges: its options must agree only where they define the run, not in "
                                   "--out, --device or --batch-size (the images made are still compared byte by byte).\n\n"
                                   "example:\n  harness merge out-sd out-uce --into out-all && harness report --out out-all",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="SRC", help="stores written by harness run --out")
    p.add_argument("--into", required=True, metavar="DIR", help="the store to merge into (created if new)")
    p.set_defaults(handler=cmd_merge)
