"""Docstrings cite sources a user has: the paper and the official repository (commit, file), never our reference notes."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "methods", "benchmarks", "reports")
UNREADABLE = ("methods-notes", "data-sources", "shared/reference")


def test_no_module_cites_the_private_reference_notes():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(word in line for word in UNREADABLE)
    ]
    assert not offenders, f"cite the paper and the official repository instead: {offenders}"
