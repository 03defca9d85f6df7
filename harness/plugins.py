"""Loading plugins: entry points of the ``harness`` group, plus single files given with ``--plugin``.

Built-in plugins are listed in ``pyproject.toml`` like any third-party package's,
so they take exactly the path a user's plugin takes.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pluggy

from harness import hookspecs
from harness.api import HarnessError

ENTRY_POINT_GROUP = "harness"
STRICT_ENV = "HARNESS_STRICT_PLUGINS"


class PluginLoadWarning(UserWarning):
    pass


@dataclass
class PluginInfo:
    name: str
    version: str
    source: str  # "entry point <value> (<distribution>)" or a file path
    hooks: list[str] = field(default_factory=list)
    error: str | None = None


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").lower() in ("1", "true", "yes")


def _failed(name: str, source: str, err: BaseException) -> PluginInfo:
    message = f"{type(err).__name__}: {err}"
    if _strict():
        raise HarnessError(f"plugin {name!r} ({source}) failed to load: {message}")
    warnings.warn(f"skipping plugin {name!r} ({source}): {message}", PluginLoadWarning, stacklevel=3)
    return PluginInfo(name=name, version="?", source=source, error=message)


def register_concept_files(register, directory: str | Path) -> None:
    """Register every ``*.json`` concept set in ``directory`` under its file name (for ``register_concept_sets``)."""
    import json

    for path in sorted(Path(directory).glob("*.json")):
        description = json.loads(path.read_text(encoding="utf-8")).get("description", "")
        register(str(path), name=path.stem, description=description)


def load_file_module(path: str | Path):
    """Import one ``.py`` file as a module, under a name derived from its path."""
    path = Path(path).resolve()
    if not path.is_file():
        raise HarnessError(f"plugin file {path} does not exist")
    module_name = f"harness_plugin_{path.stem}_{abs(hash(str(path))) % 10**8}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


class PluginHost:
    """A pluggy ``PluginManager`` that remembers where each plugin came from and which failed."""

    def __init__(self, plugin_files: list[str] | tuple[str, ...] = (), load_entry_points: bool = True):
        self.pm = pluggy.PluginManager("harness")
        self.pm.add_hookspecs(hookspecs)
        self.infos: list[PluginInfo] = []
        if load_entry_points:
            self._load_entry_points()
        for path in plugin_files:
            self.add_file(path)

    def _load_entry_points(self) -> None:
        for entry_point in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = entry_point.dist
            version = dist.version if dist is not None else "?"
            dist_name = dist.metadata["Name"] if dist is not None else "?"
            source = f"entry point {entry_point.value} ({dist_name})"
            if self.pm.has_plugin(entry_point.name):
                continue  # the same distribution installed twice on sys.path
            try:
                module = entry_point.load()
            except Exception as err:  # a broken plugin must not break the CLI
                self.infos.append(_failed(entry_point.name, source, err))
                continue
            self._register(module, entry_point.name, version, source)

    def add_file(self, path: str | Path) -> None:
        name = Path(path).stem
        try:
            module = load_file_module(path)
        except HarnessError:
            raise
        except Exception as err:  # SyntaxError, ImportError, ...
            raise HarnessError(f"plugin file {path} failed to load: {type(err).__name__}: {err}") from None
        self._register(module, name, getattr(module, "__version__", "file"), str(Path(path).resolve()))

    def add_module(self, module, name: str | None = None, version: str = "?", source: str = "in process") -> None:
        """Register an already imported module or object (used by tests and embedding applications)."""
        self._register(module, name or getattr(module, "__name__", repr(module)), version, source)

    def _register(self, module, name: str, version: str, source: str) -> None:
        try:
            self.pm.register(module, name=name)
        except Exception as err:  # e.g. a hookimpl with a misspelt hook name
            self.infos.append(_failed(name, source, err))
            return
        hooks = sorted(impl.name for impl in self.pm.get_hookcallers(module) or [])
        self.infos.append(PluginInfo(name=name, version=str(version), source=source, hooks=hooks))

    @property
    def hook(self):
        return self.pm.hook
