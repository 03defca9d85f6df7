"""The command line with the test plugins loaded, as the store tests (check, merge) call it."""

from pathlib import Path

from harness.cli import main

PLUGINS = Path(__file__).parent / "plugins"


def plugin_args(*names: str) -> list[str]:
    """``--plugin`` options for the test plugins ``names`` (file names under tests/plugins)."""
    return [arg for name in names for arg in ("--plugin", str(PLUGINS / name))]


def call(plugins: list[str], capsys, *args) -> tuple[int, str, str]:
    """``harness PLUGINS ARGS``: its exit status, stdout and stderr."""
    code = main([*plugins, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err
