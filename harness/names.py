"""User-given names that become paths: checked, or mapped to safe file names, so nothing escapes the store.

Two policies, one per kind of name:

* a name the user chooses for a path of its own (``--run-name``) must already be a
  safe file name — letters, digits, ``.``, ``_`` and ``-``, starting with a letter
  or digit, no ``..`` — or it is refused with one line (:func:`check_name`);
* a label that merely appears in a file name (a benchmark label such as
  ``csv:path=prompts/x.csv``, a metric id) is mapped to a readable slug, and
  :class:`FileNames` keeps the slugs of one folder collision-free.

A relative ``--dest`` of ``harness report`` is taken inside the store (:func:`inside`).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from harness.api import HarnessError

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_safe_name(text: str) -> bool:
    return bool(SAFE_NAME.fullmatch(text)) and ".." not in text


def check_name(text: str, option: str) -> str:
    """``text`` if it is a safe file name; otherwise a one-line HarnessError naming ``option``."""
    if not is_safe_name(text):
        raise HarnessError(
            f"{option} {text!r} is not a safe name: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..' or path separators"
        )
    return text


def slug(text: str) -> str:
    """A readable file-name stem for ``text``: unsafe characters become '-', never empty, never leading '.' or '-'."""
    mapped = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "-" for ch in text)
    while ".." in mapped:
        mapped = mapped.replace("..", "-")
    return mapped.strip("-.")[:100] or "x"


class FileNames:
    """Stems for the files of one folder: each distinct text gets its slug, or the slug plus a hash if that is taken."""

    def __init__(self):
        self._by_stem: dict[str, str] = {}
        self._by_text: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        if text in self._by_text:
            return self._by_text[text]
        stem = slug(text)
        if self._by_stem.get(stem, text) != text:
            stem = f"{stem}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:10]}"
        self._by_stem[stem] = text
        self._by_text[text] = stem
        return stem


def inside(root: Path, relative: str | Path, option: str) -> Path:
    """``root / relative``, refused with one line if it would lead outside ``root`` (an absolute path is the user's own)."""
    candidate = Path(relative).expanduser()
    if candidate.is_absolute():
        return candidate
    root = Path(root)
    resolved = (root / candidate).resolve()
    if resolved != root.resolve() and root.resolve() not in resolved.parents:
        raise HarnessError(f"{option} {str(relative)!r} leads outside {root}; give a path inside it, or an absolute path")
    return root / candidate
