"""Loading plugins: entry points of the ``harness`` group, plus single files given with ``--plugin``.

Built-in plugins are listed in ``pyproject.toml`` like any third-party package's,
so they take exactly the path a user's plugin takes.
"""

from __future__ import annotations

import hashlib
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
from harness.api import HarnessError, did_you_mean

ENTRY_POINT_GROUP = "harness"
STRICT_ENV = "HARNESS_STRICT_PLUGINS"
BUILTIN_DISTRIBUTION = "erasure-harness"


class PluginLoadWarning(UserWarning):
    pass


@dataclass
class PluginInfo:
    name: str
    version: str
    source: str  # "entry point <value> (<distribution>)" or a file path
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    builtin: bool = False  # shipped with erasure-harness: wins over a third-party plugin that reuses a name
    installed: bool = False  # an entry point of an installed package (loaded by every command), not a --plugin file
    unknown_hooks: list[str] = field(default_factory=list)  # hook implementations no hookspec declares (misspelt)
    failed_hooks: dict[str, str] = field(default_factory=dict)  # hook -> the error it raised (what it registered is dropped)


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").lower() in ("1", "true", "yes")


def plugin_problem(message: str) -> None:
    """A plugin mistake that need not stop the CLI: one warning line, or a ``HarnessError`` under strict mode."""
    if _strict():
        raise HarnessError(f"{message} ({STRICT_ENV} is set)")
    warnings.warn(message, PluginLoadWarning, stacklevel=3)


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
    # The bytes read here are the ones run and hashed (see Registry: versions): no __pycache__, whose mtime check
    # (whole seconds) can run the old code of a file rewritten within the same second at the same size.
    source = path.read_bytes()
    module.__harness_source_sha256__ = hashlib.sha256(source).hexdigest()
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)
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
        def dist_name(entry_point) -> str:
            return entry_point.dist.metadata["Name"] if entry_point.dist is not None else "?"

        # Built-ins first, so that a third-party plugin reusing a built-in's name is the one skipped.
        entry_points = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                              key=lambda e: (dist_name(e) != BUILTIN_DISTRIBUTION, e.name))
        for entry_point in entry_points:
            dist = entry_point.dist
            version = dist.version if dist is not None else "?"
            source = f"entry point {entry_point.value} ({dist_name(entry_point)})"
            if self.pm.has_plugin(entry_point.name):
                first = self.info(entry_point.name)
                if first is None or first.source != source:  # the same distribution twice on sys.path is no conflict
                    plugin_problem(f"skipping plugin {entry_point.name!r} ({source}): the name is taken by "
                                   f"{first.source if first else 'another plugin'}")
                continue
            try:
                module = entry_point.load()
            except Exception as err:  # a broken plugin must not break the CLI
                self.infos.append(_failed(entry_point.name, source, err))
                continue
            self._register(module, entry_point.name, version, source, builtin=dist_name(entry_point) == BUILTIN_DISTRIBUTION,
                           installed=True)

    def add_file(self, path: str | Path) -> None:
        name, source = Path(path).stem, str(Path(path).resolve())
        if any(info.source == source for info in self.infos):
            return  # the same file named twice (--plugin a.py --plugin a.py, or in a script and by hand): loaded once
        taken = self.info(name)
        if taken is not None:
            name = source  # a file named like another plugin (attacks.py, methods.py): its path tells them apart
        try:
            module = load_file_module(path)
        except HarnessError:
            raise
        except Exception as err:  # SyntaxError, ImportError, ...
            raise HarnessError(f"plugin file {path} failed to load: {type(err).__name__}: {err}") from None
        self._register(module, name, getattr(module, "__version__", "file"), source)

    def add_module(self, module, name: str | None = None, version: str = "?", source: str = "in process") -> None:
        """Register an already imported module or object (used by tests and embedding applications)."""
        self._register(module, name or getattr(module, "__name__", repr(module)), version, source)

    def _register(self, module, name: str, version: str, source: str, builtin: bool = False, installed: bool = False) -> None:
        if self.pm.has_plugin(name):
            first = self.info(name)
            plugin_problem(f"skipping plugin {name!r} ({source}): the name is taken by {first.source if first else 'another plugin'}")
            return
        try:
            self.pm.register(module, name=name)
        except Exception as err:  # e.g. a hookimpl whose arguments do not match its hookspec
            self.infos.append(_failed(name, source, err))
            return
        hooks = sorted(impl.name for impl in self.pm.get_hookcallers(module) or [])
        self.infos.append(PluginInfo(name=name, version=str(version), source=source, hooks=hooks, builtin=builtin, installed=installed))
        # A hook function without @hookimpl is never called, and the plugin would register nothing without a word.
        known = {hook for hook in dir(hookspecs) if hook.startswith("register_")}
        for hook in sorted(known - set(hooks)):
            if callable(getattr(module, hook, None)):
                plugin_problem(f"plugin {name!r} ({source}) defines {hook} without @hookimpl, so it is never called; "
                               "decorate it with @harness.hookspecs.hookimpl")

    def info(self, name: str) -> PluginInfo | None:
        """The record of the loaded plugin called ``name`` (None if no plugin of that name loaded)."""
        return next((info for info in self.infos if info.name == name and info.error is None), None)

    def check_pending(self) -> None:
        """Flag hook implementations that no hookspec declares, e.g. ``register_method`` for ``register_methods``.

        pluggy accepts such an implementation at registration and never calls it, so the plugin would look healthy
        and register nothing.  Each one gives a warning line naming the hook and the plugin (fatal under strict mode);
        called once all plugins are loaded, since a later plugin could in principle add the hookspec.
        """
        try:
            self.pm.check_pending()
            return
        except pluggy.PluginValidationError:
            pass
        for info in self.infos:
            plugin = self.pm.get_plugin(info.name) if info.error is None else None
            if plugin is None:
                continue
            for caller in self.pm.get_hookcallers(plugin) or []:
                if caller.has_spec() or caller.name in info.unknown_hooks:
                    continue
                if not any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls()):
                    continue
                info.unknown_hooks.append(caller.name)
                known = [name for name in dir(hookspecs) if name.startswith("register_")]
                plugin_problem(f"plugin {info.name!r} ({info.source}) implements unknown hook {caller.name!r}, which is never "
                               f"called{did_you_mean(caller.name, known)}")

    @property
    def hook(self):
        return self.pm.hook
