"""``harness check``: every file of a store against its record; ``--repair`` regenerates what was damaged.

Damaged: a recorded file that is missing, has another size, or fails its sha256.
Unrecorded: a file the database names (an image or a delta) written before the
``files`` table existed, or left unrecorded by a kill; it is sound if it decodes.
Orphaned: a file under ``cache/`` that nothing records or names; leftover
temporary files of killed writes are orphans too.

Repair removes damaged and orphaned files, records sound unrecorded ones, and
re-runs every stored run that used a damaged image or model delta (from its
stored configuration), which regenerates exactly what is missing.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from harness import integrity
from harness.store import Store


@dataclass
class Finding:
    path: str  # relative to the store root
    state: str  # "damaged", "unrecorded", "unreadable" or "orphaned"
    detail: str
    kind: str = ""


@dataclass
class Report:
    checked: int = 0
    findings: list[Finding] = field(default_factory=list)
    runs_affected: list[str] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(f.state == state for f in self.findings)


def check(store: Store) -> Report:
    report = Report()
    root = store.root
    recorded = {row["path"]: row for row in store.db.execute("SELECT * FROM files")}
    for rel, row in recorded.items():
        report.checked += 1
        record = integrity.Record(rel, row["sha256"], row["size"], row["kind"])
        problem = store.files.problem(root / rel, record)
        if problem:
            report.findings.append(Finding(rel, "damaged", problem, row["kind"] or ""))

    named = {}  # files the database refers to by name, with how to check one that has no record
    for row in store.db.execute("SELECT path FROM images"):
        named[Path(row["path"]).as_posix()] = (integrity.IMAGE, integrity.image_decodes)
    for row in store.db.execute("SELECT key FROM model_states WHERE delta_path IS NOT NULL"):
        rel = store.delta_path(row["key"]).relative_to(root).as_posix()
        named[rel] = (integrity.DELTA, integrity.safetensors_loads)
    for rel, (kind, decodes) in named.items():
        if rel in recorded:
            continue
        if not (root / rel).exists():
            if kind == integrity.IMAGE:  # removed as damaged, record and all, and not made again since
                report.checked += 1
                report.findings.append(Finding(rel, "damaged", "missing: removed as damaged and not made again", kind))
            continue
        report.checked += 1
        sound = integrity._sound(decodes, root / rel)
        report.findings.append(Finding(rel, "unrecorded" if sound else "unreadable",
                                       "written without a record; it decodes" if sound else "written without a record, and it does not decode",
                                       kind))

    cache = root / "cache"
    if cache.exists():
        for path in sorted(p for p in cache.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            if rel in recorded or rel in named:
                continue
            leftover = path.name.startswith(".") and path.name.endswith(integrity.TEMP_SUFFIX)
            report.findings.append(Finding(rel, "orphaned", "temporary file of an interrupted write" if leftover else "nothing records it"))

    report.runs_affected = _runs_using(store, [f for f in report.findings if f.state in ("damaged", "unreadable")])
    return report


def _runs_using(store: Store, findings: list[Finding]) -> list[str]:
    """Stored runs that used one of the damaged images or deltas (they regenerate them when re-run)."""
    runs = set()
    for finding in findings:
        name = Path(finding.path).name
        if finding.kind == integrity.IMAGE:
            key = name.removesuffix(".png")
            runs |= {row["run_id"] for row in store.db.execute("SELECT DISTINCT run_id FROM run_images WHERE image_key=?", (key,))}
        elif finding.kind == integrity.DELTA:
            key = name.removesuffix(".safetensors")
            runs |= {row["run_id"] for row in store.db.execute("SELECT DISTINCT run_id FROM results WHERE model_state=?", (key,))}
    order = [row["id"] for row in store.db.execute("SELECT id FROM runs ORDER BY created")]
    return [run for run in order if run in runs]


def repair(store: Store, report: Report, registry, show_progress: bool = False) -> list[str]:
    """Fix what ``report`` found; return one line per action that could not be done."""
    from harness.runner import RunConfig, Runner, plan

    problems = []
    for finding in report.findings:
        path = store.root / finding.path
        if finding.state == "unrecorded":
            store.files.record([integrity.Record(finding.path, integrity.sha256_file(path), path.stat().st_size, finding.kind)])
        elif finding.state in ("orphaned", "unreadable"):
            path.unlink(missing_ok=True)
        elif finding.state == "damaged":
            # Keep the record: regeneration compares the new bytes with it, and drops stale scores if they differ.
            path.unlink(missing_ok=True)
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    for run_id in report.runs_affected:
        row = store.db.execute("SELECT config FROM runs WHERE id=?", (run_id,)).fetchone()
        config = {key: value for key, value in json.loads(row["config"] or "{}").items() if key in fields}
        config.update(out=str(store.root), run_name=run_id, show_progress=show_progress)
        try:
            with warnings.catch_warnings():  # each damaged file was listed already: regenerating it needs no second warning
                warnings.simplefilter("ignore", integrity.DamagedFileWarning)
                Runner(plan(RunConfig(**config), registry)).execute()
        except Exception as err:  # noqa: BLE001 - say which run could not be redone, and go on with the next
            problems.append(f"run {run_id} could not be re-run ({err}); its missing files are regenerated by `harness run` with its options")
    return problems


def render(report: Report) -> list[str]:
    lines = [f"{f.state}: {f.path} ({f.detail})" for f in report.findings]
    damaged = report.count("damaged") + report.count("unreadable")
    summary = (f"checked {report.checked} recorded or named files: {damaged} damaged, {report.count('unrecorded')} unrecorded, "
               f"{report.count('orphaned')} orphaned")
    if report.runs_affected:
        summary += f"; runs that used damaged files: {', '.join(report.runs_affected)}"
    return lines + [summary]
