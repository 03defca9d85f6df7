"""Name → plugin lookup.

Entries are registered lazily (``"module:Class"`` strings with a name and a
description), so listing them imports nothing heavy.  A class is imported the
first time it is asked for by name.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from dataclasses import dataclass, field

from harness.api import Attack, Backbone, Benchmark, ConceptSet, HarnessError, Method, Scorer
from harness.plugins import PluginHost

KINDS = {
    "methods": ("method", Method, "register_methods"),
    "benchmarks": ("benchmark", Benchmark, "register_benchmarks"),
    "scorers": ("scorer", Scorer, "register_scorers"),
    "backbones": ("backbone", Backbone, "register_backbones"),
    "attacks": ("attack", Attack, "register_attacks"),
    "concepts": ("concept set", None, "register_concept_sets"),
}


def did_you_mean(name: str, choices) -> str:
    """A ``"; did you mean 'x'?"`` suffix, or a list of the valid names when nothing is close."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    if len(choices) <= 12:
        return f"; choose from {', '.join(choices)}" if choices else ""
    return ""


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
            self.target = getattr(module, attribute)
        except Exception as err:
            raise HarnessError(
                f"{KINDS[self.kind][0]} {self.name!r} from plugin {self.plugin!r} could not be imported "
                f"({self.target}): {type(err).__name__}: {err}"
            ) from None
        return self.target


class Registry:
    def __init__(self, host: PluginHost):
        self.host = host
        self.entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        for kind, (_, _, hook_name) in KINDS.items():
            hook = getattr(host.hook, hook_name)
            for impl in hook.get_hookimpls():
                register = self._registrar(kind, impl.plugin_name)
                try:
                    impl.function(register=register)
                except HarnessError:
                    raise
                except Exception as err:
                    raise HarnessError(f"plugin {impl.plugin_name!r} failed in {hook_name}: {type(err).__name__}: {err}") from None

    def _registrar(self, kind: str, plugin_name: str):
        label, base, _ = KINDS[kind]

        def register(target, name: str | None = None, description: str | None = None, groups=()):
            if isinstance(target, str) or kind == "concepts":
                if name is None:
                    raise HarnessError(f"plugin {plugin_name!r}: a lazy {label} registration needs name=")
            else:
                if not (inspect.isclass(target) and issubclass(target, base)):
                    raise HarnessError(f"plugin {plugin_name!r} registered {target!r}, which is not a {base.__name__} subclass")
                name = name or target.name
                description = description if description is not None else target.description
            if name in self.entries[kind]:
                other = self.entries[kind][name].plugin
                raise HarnessError(f"{label} {name!r} is registered twice (plugins {other!r} and {plugin_name!r})")
            self.entries[kind][name] = Entry(kind, name, target, description or "", plugin_name, tuple(groups))

        return register

    # ------------------------------------------------------------------ lookups

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def entry(self, kind: str, name: str) -> Entry:
        table = self.entries[kind]
        if name not in table:
            label = KINDS[kind][0]
            hint = did_you_mean(name, table)
            raise HarnessError(f"unknown {label} {name!r}{hint} (see `harness list {kind}`)")
        return table[name]

    def get(self, kind: str, name: str):
        """The class registered under ``name`` (imported on first use)."""
        entry = self.entry(kind, name)
        cls = entry.load()
        base = KINDS[kind][1]
        if base is not None and not (inspect.isclass(cls) and issubclass(cls, base)):
            raise HarnessError(f"{KINDS[kind][0]} {name!r} ({entry.target}) is not a {base.__name__} subclass")
        return cls

    def concept_set(self, name_or_path: str) -> ConceptSet:
        """A registered concept set by name, or a user's JSON file by path."""
        if name_or_path.endswith(".json") or "/" in name_or_path:
            return ConceptSet.from_file(name_or_path)
        return ConceptSet.from_file(self.entry("concepts", name_or_path).target)

    def group(self, kind: str, group: str) -> list[str]:
        return sorted(name for name, entry in self.entries[kind].items() if group in entry.groups)

    def groups(self, kind: str) -> set[str]:
        return {g for entry in self.entries[kind].values() for g in entry.groups}
