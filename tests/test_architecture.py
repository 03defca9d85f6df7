"""The layers are one-way: every import (module level or inside a function) of the four packages obeys these rules.

* ``harness/`` (the core) imports none of ``methods/``, ``benchmarks/``, ``reports/``;
* ``methods/`` never imports ``benchmarks/`` or ``reports/``; ``benchmarks/`` never imports ``methods/`` or ``reports/``;
* ``reports/`` imports only ``harness/`` (and itself), and from the core not the plugin loader or registry:
  a report is drawn from the store alone;
* no package imports another package's private (``_name``) helpers.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "methods", "benchmarks", "reports")
FORBIDDEN = {
    "harness": {"methods", "benchmarks", "reports"},
    "methods": {"benchmarks", "reports"},
    "benchmarks": {"methods", "reports"},
    "reports": {"methods", "benchmarks"},
}
# reports/ reads the store; looking plugins up (which imports their classes) is what it must not do.
FORBIDDEN_MODULES = {"reports": {"harness.registry", "harness.plugins", "harness.runner", "harness.engine"}}


def imports_of(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module name, imported names) for every import statement in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            found.append((node.lineno, module, [alias.name for alias in node.names]))
    return found


def source_files():
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_the_parser_sees_every_package_and_resolves_relative_imports(tmp_path):
    assert {path.relative_to(ROOT).parts[0] for path in source_files()} == set(PACKAGES)
    module = ROOT / "benchmarks" / "_probe_for_test.py"
    module.write_text("from . import data\nfrom .toyworld import world\n\ndef f():\n    from reports import leaderboard\n")
    try:
        assert [m for _, m, _ in imports_of(module)] == ["benchmarks", "benchmarks.toyworld", "reports"]
    finally:
        module.unlink()


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layer_rules(path):
    layer = path.relative_to(ROOT).parts[0]
    problems = []
    for line, module, names in imports_of(path):
        top = module.split(".")[0]
        if top in FORBIDDEN[layer]:
            problems.append(f"line {line}: {layer}/ imports {module}")
        for forbidden in FORBIDDEN_MODULES.get(layer, ()):
            if module == forbidden or module.startswith(forbidden + "."):
                problems.append(f"line {line}: {layer}/ imports {module}, which loads plugins; reports read the store only")
        if top in PACKAGES and top != layer:
            private = [name for name in names if name.startswith("_") and not name.startswith("__")]
            if private:
                problems.append(f"line {line}: imports private {', '.join(private)} from {module}")
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)
