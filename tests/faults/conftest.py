"""Helpers shared by the fault-injection suite: the tiny backbone and the test plugins, run in-process or as a CLI."""

from pathlib import Path

import pytest

PLUGINS = Path(__file__).parent.parent / "plugins"
BRIGHTNESS = str(PLUGINS / "brightness.py")
EDITS = str(PLUGINS / "edits.py")


@pytest.fixture
def cli(capsys):
    """``cli(*args) -> (code, stdout, stderr)`` of ``harness --plugin brightness --plugin edits ARGS``."""
    from harness.cli import main

    def run(*args):
        code = main(["--plugin", BRIGHTNESS, "--plugin", EDITS, *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def _files_under(root: Path) -> set[Path]:
    return {path for path in Path(root).rglob("*") if path.is_file()}


@pytest.fixture
def files_under():
    """``files_under(root) -> set[Path]``: every file below ``root``."""
    return _files_under


@pytest.fixture
def plugin_registry():
    """A registry with the test plugins (the fixed benchmark, the brightness scorer, the test edits)."""
    from harness.plugins import PluginHost
    from harness.registry import Registry

    return Registry(PluginHost([BRIGHTNESS, EDITS]))
