"""Name → plugin lookup.

Entries are registered lazily (``"module:Class"`` strings with a name and a
description), so listing them imports nothing heavy.  A class is imported the
first time it is asked for by name.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path

from harness.api import Attack, Backbone, Benchmark, ConceptSet, HarnessError, Method, MethodKind, Scorer, did_you_mean
from harness.plugins import PluginHost, plugin_problem
from harness.validate import check_defaults

KINDS = {
    "methods": ("method", Method, "register_methods"),
    "benchmarks": ("benchmark", Benchmark, "register_benchmarks"),
    "scorers": ("scorer", Scorer, "register_scorers"),
    "backbones": ("backbone", Backbone, "register_backbones"),
    "attacks": ("attack", Attack, "register_attacks"),
    "concepts": ("concept set", None, "register_concept_sets"),
}


@dataclass
class Entry:
    kind: str
    name: str
    target: object  # a class, or a "module:attribute" string (for concept sets: a path)
    description: str
    plugin: str
    groups: tuple[str, ...] = field(default_factory=tuple)

    def load(self):
        if not isinstance(self.target, str) or self.kind == "concepts":
            return self.target
        module_name, _, attribute = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
            loaded = getattr(module, attribute)
        except Exception as err:
            raise HarnessError(
                f"{KINDS[self.kind][0]} {self.name!r} from plugin {self.plugin!r} could not be imported "
                f"({self.target}): {type(err).__name__}: {err}"
            ) from None
        # Model-state keys, manifests and result rows use the class's ``name``: a lazy entry must agree with it.
        class_name = getattr(loaded, "name", None)
        if class_name != self.name:
            raise HarnessError(
                f"plugin {self.plugin!r} registers {KINDS[self.kind][0]} {self.name!r} as {self.target}, whose class is named "
                f"{class_name!r}; make the registration's name= match the class's name"
            )
        self.target = loaded
        return self.target


# What the --methods/--bench grammar reads as structure: "a+b", "name:k=v,k2=v2", "A(B)" cells, "x|y" lists.
GRAMMAR_CHARACTERS = ":,+=()| \t\n"


class Registry:
    def __init__(self, host: PluginHost):
        self.host = host
        host.check_pending()  # every plugin is loaded now: flag hooks that are never called (misspelt names)
        self.entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self._defaults_checked: set[tuple[str, str]] = set()  # (kind, name) whose Params defaults passed check_defaults
        for kind, (_, _, hook_name) in KINDS.items():
            hook = getattr(host.hook, hook_name)
            for impl in hook.get_hookimpls():
                register = self._registrar(kind, impl.plugin_name)
                before = dict(self.entries[kind])
                try:
                    impl.function(register=register)
                except Exception as err:
                    self.entries[kind] = before  # none of a failed hook's registrations: half a plugin is worse than none
                    self._hook_failed(impl.plugin_name, hook_name, err)

    def _hook_failed(self, plugin_name: str, hook_name: str, err: Exception) -> None:
        """A plugin's ``register_*`` hook raised.  A built-in's is a bug of ours, and a ``--plugin`` file's was asked
        for by name: stop.  An installed third-party package's must not take every command down with it (``--help``,
        ``report`` and ``check`` of stores it never touched): its registrations from that hook are dropped with one
        warning naming it and its package, as for a plugin that fails to import (fatal under HARNESS_STRICT_PLUGINS);
        ``harness plugins`` shows the failure."""
        message = str(err) if isinstance(err, HarnessError) else f"{type(err).__name__}: {err}"
        info = self.host.info(plugin_name)
        if info is None or info.builtin or not info.installed:
            raise HarnessError(f"plugin {plugin_name!r} failed in {hook_name}: {message}") from None
        info.failed_hooks[hook_name] = message
        plugin_problem(f"skipping what plugin {plugin_name!r} ({info.source}) registers in {hook_name}, which raised: {message}")

    def _registrar(self, kind: str, plugin_name: str):
        label, base, _ = KINDS[kind]

        def register(target, name: str | None = None, description: str | None = None, groups=()):
            if isinstance(target, str) or kind == "concepts":
                if name is None:
                    raise HarnessError(f"plugin {plugin_name!r}: a lazy {label} registration needs name=")
                if kind == "concepts" and not Path(target).is_file():  # else listed, and failing only when a run asks
                    raise HarnessError(f"plugin {plugin_name!r} registers the concept set {name!r} as {target}, which is not a file")
            else:
                if not (inspect.isclass(target) and issubclass(target, base)):
                    raise HarnessError(f"plugin {plugin_name!r} registered {target!r}, which is not a {base.__name__} subclass")
                if name is not None and name != target.name:
                    raise HarnessError(f"plugin {plugin_name!r} registers {target.__name__} as {name!r}, but the class is named "
                                       f"{target.name!r}; drop name= (a class registration reads it from the class)")
                name = target.name
                description = description if description is not None else target.description
                self._version_by_source(target, plugin_name)
            if not name or any(char in name for char in GRAMMAR_CHARACTERS) or name != name.strip():
                raise HarnessError(f"plugin {plugin_name!r} registers the {label} {name!r}, which the command line could not "
                                   f"select: a name cannot be empty or contain spaces or any of {''.join(sorted(set(GRAMMAR_CHARACTERS) - {' '}))} "
                                   "(use letters, digits, '-', '_' or '.')")
            entry = Entry(kind, name, target, description or "", plugin_name, tuple(groups))
            if name in self.entries[kind] and not self._replaces(self.entries[kind][name], entry):
                return
            self.entries[kind][name] = entry

        return register

    def _version_by_source(self, target, plugin_name: str) -> None:
        """A class from a one-file plugin (``--plugin FILE``) carries the file's content in its ``version``.

        Cached work (an edit, raw scores, attack prompts) is keyed by the plugin's name, parameters and ``version``;
        a plugin file is usually being written, and an author who edits ``edit`` without bumping ``version`` would
        get the old cached results back without a word.  ``"1+3f2a…"``: the declared version, then the file's
        sha256.  Packages (entry points) keep their declared version: bump it when the code changes.
        """
        digest = getattr(self.host.pm.get_plugin(plugin_name), "__harness_source_sha256__", None)
        if digest is None or not isinstance(inspect.getattr_static(target, "version", None), str):
            return  # benchmarks have no version (nothing of theirs is cached); a computed version (a property) is its own
        declared = target.version.split("+")[0]  # registered again (another Registry in this process): the same result
        target.version = f"{declared}+{digest[:12]}"

    def _source(self, plugin_name: str) -> str:
        info = self.host.info(plugin_name)
        return f"plugin {plugin_name!r} ({info.source})" if info else f"plugin {plugin_name!r}"

    def _replaces(self, first: Entry, second: Entry) -> bool:
        """Which of two registrations of one name wins: a built-in over a third-party plugin, else the first.

        The loser is skipped with one warning naming both sources (fatal under strict mode), so one badly packaged
        plugin cannot take the whole CLI down.
        """
        first_info, second_info = self.host.info(first.plugin), self.host.info(second.plugin)
        second_wins = bool(second_info and second_info.builtin) and not (first_info and first_info.builtin)
        winner, loser = (second, first) if second_wins else (first, second)
        plugin_problem(f"{KINDS[first.kind][0]} {first.name!r} is registered twice: skipping the one from {self._source(loser.plugin)}, "
                       f"keeping {self._source(winner.plugin)}")
        return second_wins

    # ------------------------------------------------------------------ lookups

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def entry(self, kind: str, name: str) -> Entry:
        table = self.entries[kind]
        if name not in table:
            raise self.unknown(kind, name, table)
        return table[name]

    def unknown(self, kind: str, name: str, known) -> HarnessError:
        """The error for a name ``known`` lacks: a plugin of another kind by that name (``--methods nudenet``) is
        said to be one, else the closest names."""
        label = KINDS[kind][0]
        other = next((other for other in KINDS if other != kind and name in self.entries[other]), None)
        if other == "scorers":
            hint = f"; {name!r} is a scorer, which a benchmark's metrics choose (e.g. --bench csv:path=F,metrics={name}:METRIC)"
        elif other is not None:
            hint = f"; {name!r} is a {KINDS[other][0]}, not a {label} (see `harness list {other}`)"
        else:
            hint = did_you_mean(name, known) + f" (see `harness list {kind}`)"
        return HarnessError(f"unknown {label} {name!r}{hint}")

    def get(self, kind: str, name: str):
        """The class registered under ``name`` (imported on first use)."""
        entry = self.entry(kind, name)
        cls = entry.load()
        base = KINDS[kind][1]
        if base is not None and not (inspect.isclass(cls) and issubclass(cls, base)):
            raise HarnessError(f"{KINDS[kind][0]} {name!r} ({entry.target}) is not a {base.__name__} subclass")
        if kind == "methods" and cls.kind not in tuple(MethodKind):
            raise HarnessError(f"method {name!r} has kind {cls.kind!r}; use one of {', '.join(k.value for k in MethodKind)} (harness.api.MethodKind)")
        params = getattr(cls, "Params", None)
        if params is not None and not dataclasses.is_dataclass(params):
            raise HarnessError(f"{KINDS[kind][0]} {name!r}: {cls.__name__}.Params must be a dataclass (decorate it with "
                               "@dataclasses.dataclass), so that its fields can be parameters")
        if (kind, name) not in self._defaults_checked:
            # Here, where every use of the class begins (a run, --dry-run, list --params): a default outside its own
            # bounds would otherwise surface only in a run that leaves it alone, worded as if the user had set it.
            check_defaults(params, f"{KINDS[kind][0]} {name!r}")
            self._defaults_checked.add((kind, name))
        return cls

    def concept_set(self, name_or_path: str) -> ConceptSet:
        """A registered concept set by name, or a user's JSON file by path."""
        if name_or_path.endswith(".json") or "/" in name_or_path:
            return ConceptSet.from_file(name_or_path)
        entry = self.entry("concepts", name_or_path)
        concepts = ConceptSet.from_file(entry.target)
        # Registered under the name it is selected by: one file may serve under several names, and a plan, key or
        # report that named the file's own "name" would not be the set the user chose.
        return concepts if concepts.name == entry.name else dataclasses.replace(concepts, name=entry.name)

    def group(self, kind: str, group: str) -> list[str]:
        return sorted(name for name, entry in self.entries[kind].items() if group in entry.groups)

    def groups(self, kind: str) -> set[str]:
        return {g for entry in self.entries[kind].values() for g in entry.groups}
