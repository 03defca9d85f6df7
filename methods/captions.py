"""Preservation captions, shared by the methods that preserve a caption set (TRCE-T and MACE), and the content
hashes of the files such methods read through a parameter.

Both keep the model's behaviour on ordinary prompts by adding each caption's keys to the closed-form solve (TRCE
§4.1, the prior-preservation term of Eq. 4; MACE's closed-form refinement, (CFR) in ``methods/mace.py``): COCO
captions in both official codes.  Where the captions come from is one rule for both: a file given as a parameter (``captions=PATH``), the
concept set's own ``captions``, or the pinned upstream file its ``extra.captions_data`` names (COCO-30k for the SD
concept sets), downloaded and sha256-checked by the core's data layer.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

from harness.api import ConceptSet, HarnessError, sha256_file, sha256_json

CAPTION_COLUMNS = ("prompt", "caption", "text")  # a CSV's caption column: COCO-30k's is "prompt"


def file_sha256(path: str) -> str:
    """The content hash of a file a method reads through a parameter (``captions=PATH``), for its model-state key: the
    key holds the parameter's text, so a file edited in place would hand back the edit made from the old one.
    "missing" where there is no file (the plan-time check names it)."""
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        return "missing"
    stat = resolved.stat()
    return _file_sha256(str(resolved.resolve()), stat.st_mtime_ns, stat.st_size)


def folder_sha256(path: str) -> str:
    """``file_sha256`` for a folder of files (MACE's ``masks=files:DIR``): each file's relative name and content hash."""
    root = Path(path).expanduser()
    if not root.is_dir():
        return "missing"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return sha256_json([[str(p.relative_to(root)), file_sha256(str(p))] for p in files])


@functools.lru_cache(maxsize=4096)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:  # the key asks often; a changed file has a new mtime
    return sha256_file(path)


def check_captions_available(concepts: ConceptSet, path: str, method: str) -> None:
    """At plan time: where the captions come from a pinned upstream file (COCO-30k), it must be cached or
    downloadable now, or the run would fail after the model loaded (``load_captions`` downloads it); a captions
    file given as a parameter must exist."""
    if path:
        if not Path(path).expanduser().is_file():
            raise HarnessError(f"{method}: captions file {path!r} does not exist (a .txt with one caption per line, "
                               "or a .csv with a 'prompt' column)")
        return
    if concepts.captions or not concepts.extra.get("captions_data"):
        return
    from harness import data

    item = data.Upstream.from_dict(concepts.extra["captions_data"], origin=f"concept set {concepts.name!r}")
    data.check_obtainable(item, f"{method} preserves the captions of {item.key!r}", f"pass --set {method}.captions=PATH")


def load_captions(concepts: ConceptSet, path: str, limit: int, *, method: str = "trce-t",
                  without: str = "preserve_scale=0") -> tuple[list[str], dict]:
    """Preservation captions from ``path`` (param) or the concept set, with a one-line error when there are none.

    ``method`` and ``without`` (the setting that turns preservation off) name the caller in that error.
    """
    if path:
        captions, source = read_caption_file(Path(path).expanduser(), method), str(path)
    elif concepts.captions:
        captions, source = list(concepts.captions), f"concept set {concepts.name!r}"
    elif concepts.extra.get("captions_data"):
        # A pinned upstream file (COCO-30k for the SD concept sets), downloaded and sha256-checked by the data layer.
        from harness import data

        try:
            resolved = data.resolve(data.Upstream.from_dict(concepts.extra["captions_data"], origin=f"concept set {concepts.name!r}"))
        except HarnessError as err:  # its by-hand hint in the form this method takes
            raise data.reworded(err, f"--set {method}.captions=PATH") from None
        captions, source = read_caption_file(resolved.path, method), f"{resolved.key} ({resolved.sha256[:12]})"
    else:
        raise HarnessError(
            f"{method}: concept set {concepts.name!r} has no preservation captions (the paper preserves COCO captions): "
            f"pass --set {method}.captions=PATH (a .txt with one caption per line, or a .csv with a 'prompt' column such "
            "as COCO-30k), add 'captions'/'captions_file' to the concept set, "
            f"or run without preservation with {method}:{without}"
        )
    captions = captions[:limit] if limit > 0 else captions
    if not captions:
        raise HarnessError(f"{method}: the preservation caption set ({source}) is empty")
    return captions, {"source": source, "count": len(captions), "sha256": sha256_json(captions)}


def read_caption_file(path: Path, method: str = "trce-t") -> list[str]:
    if not path.is_file():
        raise HarnessError(f"{method}: caption file {path} does not exist: give an existing .txt or .csv with --set {method}.captions=PATH")
    if path.suffix.lower() != ".csv":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        column = next((c for c in CAPTION_COLUMNS if c in (reader.fieldnames or [])), None)
        if column is None:
            raise HarnessError(
                f"{method}: caption file {path} has none of the columns {list(CAPTION_COLUMNS)}; found {reader.fieldnames}"
            )
        return [row[column].strip() for row in reader if row[column] and row[column].strip()]
