"""``harness run``: resolve every name first, then erase, generate, score and store.

All validation happens in ``plan`` before any model is loaded, so a typo costs
a second, not an erasure.  ``execute`` writes each piece of work to the store
as soon as it is done; re-running the same command resumes.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from harness import integrity, threads
from harness.api import (
    DTYPES,
    Backbone,
    Benchmark,
    ConceptSet,
    HarnessError,
    Method,
    MethodKind,
    MetricRef,
    PromptSpec,
    Target,
    checked_score,
    close_names,
    close_suggestion,
    sha256_json,
)
from harness.failures import naming_the_plugin, user_error
from harness.names import check_name
from harness.registry import Registry, did_you_mean
from harness.seeds import SEEDS_OF, repeat_seeds
from harness.spec import Selection, build_params, parse_selections, parse_set_options, same_setting
from harness.store import Store
from harness.validate import check_device, check_metric_labels, validate_specs
from harness.versions import environment_versions

SCORE_CHUNK = 32


@dataclass
class RunConfig:
    methods: str = "sd"
    bench: str = ""
    model: str | None = None
    sets: list[str] = field(default_factory=list)
    concepts: str | None = None
    limit: int | None = None
    seeds_per_prompt: int = 1  # K images per prompt, seeds derived from the benchmark's (harness/seeds.py)
    batch_size: int | None = None  # None: the backbone's own batch_size
    device: str | None = None
    dtype: str | None = None
    out: str = "harness-out"
    run_name: str | None = None
    show_progress: bool = True
    attacks: str | None = None  # --attack A[,B]: attack cells "A(B)" for every method and attacked benchmark
    attack_budget: int | None = None  # --attack-budget N: at most N iterations per prompt for every attack
    keep_going: bool = False  # --keep-going: a method that fails is reported and the run goes on with the next one


@dataclass
class PlannedMethod:
    label: str  # as the user wrote it, e.g. "rece:lamb=0.1" or "uce+sld"
    parts: list[tuple[Method, str]]  # instances in application order, with their own labels


@dataclass
class PlannedBenchmark:
    label: str
    benchmark: Benchmark
    concepts: ConceptSet
    specs: list[PromptSpec]
    attack: str | None = None  # set for an attack cell: the attack's label


@dataclass
class Plan:
    config: RunConfig
    registry: Registry
    target: Target
    methods: list[PlannedMethod]
    benchmarks: list[PlannedBenchmark]
    run_id: str
    attacks: list = field(default_factory=list)  # harness.attacking.PlannedAttack

    # The target's fields, read where a plan is at hand.
    @property
    def backbone_name(self) -> str:
        return self.target.backbone_name

    @property
    def backbone(self) -> Backbone:
        return self.target.backbone

    @property
    def model(self) -> str | None:
        return self.target.model

    @property
    def device(self) -> str:
        return self.target.device

    @property
    def dtype(self) -> str:
        return self.target.dtype


# --------------------------------------------------------------------------- planning


def expand_method(registry: Registry, selection: Selection, overrides: dict, label: str, *, backbone: Backbone | None = None) -> list[tuple[Method, str]]:
    """Instantiate a selected method (a registered composition gives one instance per part) with its parameters.

    Parameters are layered (``resolve_presets``): the backbone's preset for the method, a named ``preset=``, --set,
    then the parameters written beside the name.
    """
    cls = registry.get("methods", selection.name)
    check_given_once(cls, selection.name, overrides.get(selection.name, {}), selection.params)
    raw = {**overrides.get(selection.name, {}), **selection.params}
    if not cls.parts:
        values, applied = resolve_presets(cls, selection.name, raw, backbone)
        method = cls(build_params(cls, values, selection.name), presets_applied=applied)
        return [(method, Selection(selection.name, raw).label())]
    # A registered composition (e.g. trce = trce-t+trce-v): route each parameter to the part that declares it.
    part_classes = [registry.get("methods", name) for name in cls.parts]
    class_of = dict(zip(cls.parts, part_classes))
    routed: dict[str, dict[str, str]] = {name: dict(overrides.get(name, {})) for name in cls.parts}
    # "PART.key" (how a label writes a part's --set value) reaches that part only; routed first, so that a key written
    # for every part beside the name (trce:lamb=0.5) that gives one of them another value is refused: one of the two
    # would be dropped, and the label would still name it.
    for key in sorted(raw, key=lambda key: "." not in key):
        value = raw[key]
        part_name, dot, part_key = key.partition(".")
        if dot:
            if part_name not in cls.parts:
                raise HarnessError(f"{selection.name} (= {'+'.join(cls.parts)}) has no part {part_name!r} for {key!r}"
                                   f"{did_you_mean(part_name, cls.parts)}")
            check_given_once(class_of[part_name], part_name, overrides.get(part_name, {}), {part_key: value}, written=f"{selection.name}:{part_name}.")
            routed[part_name][part_key] = value
            continue
        if key == "preset":  # each part that has a preset of that name takes it
            owners = [name for name, part in zip(cls.parts, part_classes) if value in part.presets]
            if not owners:
                known = sorted({preset for part in part_classes for preset in part.presets})
                raise HarnessError(f"{selection.name} (= {'+'.join(cls.parts)}) has no preset {value!r}{close_suggestion(value, known)} (presets: {', '.join(known) or 'none'})")
        else:
            owners = [name for name, part in zip(cls.parts, part_classes) if key in {f.name for f in dataclasses.fields(part.Params)}]
        if not owners:
            known = sorted({f.name for part in part_classes for f in dataclasses.fields(part.Params)})
            raise HarnessError(f"{selection.name} (= {'+'.join(cls.parts)}) has no parameter {key!r}{did_you_mean(key, known)}")
        for owner in owners:
            given = routed[owner].get(key)
            if given is not None and not same_setting(class_of[owner], key, given, value):
                raise HarnessError(f"{owner}.{key} is given twice, {selection.name}:{key}={value} (for every part) and {owner}.{key}={given} "
                                   f"(--set or {selection.name}:{owner}.{key}); keep one")
            routed[owner][key] = value
    parts = []
    for name in cls.parts:
        parts.extend(expand_method(registry, Selection(name, routed[name]), {}, label, backbone=backbone))
    return parts


def check_given_once(plugin_cls, name: str, from_set: dict[str, str], inline: dict[str, str], *, written: str | None = None) -> None:
    """A parameter given two values, with ``--set NAME.KEY=V`` and beside the name (``NAME:KEY=W``): one would be
    dropped silently, so neither is guessed.  The same value twice drops nothing, however it is written (``0.5`` and
    ``0.50``: ``same_setting``).  ``written``: what precedes the key where it was written inline (``NAME:``; a
    composition's part ``trce:trce-t.``)."""
    written = f"{name}:" if written is None else written
    twice = sorted(key for key in set(from_set) & set(inline) if not same_setting(plugin_cls, key, from_set[key], inline[key]))
    if twice:
        key = twice[0]
        raise HarnessError(f"{name}.{key} is given twice, {written}{key}={inline[key]} and --set {name}.{key}={from_set[key]}; keep one")


def check_sets_used(registry: Registry, overrides: dict, used: dict[str, set[str]], options: dict[str, str]) -> None:
    """A ``--set`` for a plugin the command does not use would change nothing: refused rather than ignored.

    ``used``: the names in use by kind (a composition and its parts both count); ``options``: the option that selects
    each kind (``--methods``), for the hint.  ``check_overrides`` has already refused names no plugin has.
    """
    for name, values in overrides.items():
        kinds = [kind for kind in options if name in registry.entries[kind]]
        if not kinds or any(name in used.get(kind, ()) for kind in kinds):
            continue
        key, value = next(iter(values.items()))
        kinds = [kind for kind in kinds if key in _declared(registry, kind, name)] or kinds  # ring-a-bell: the attack's key
        option = options[kinds[0]]
        names = ", ".join(sorted(used.get(kinds[0], ())))
        in_run = f"{option} names {names}, not {name}" if names else f"the command has no {option}"
        raise HarnessError(f"--set {name}.{key}={value} changes nothing: {in_run}; add {name} to {option} or drop the --set")


def resolve_presets(cls, name: str, raw: dict[str, str], backbone: Backbone | None) -> tuple[dict[str, str], dict[str, str]]:
    """The parameter values of one method, layered: backbone preset < ``preset=NAME`` < what the user set.

    Returns the values (strings, converted by ``build_params``) and which presets were applied.
    """
    values: dict[str, str] = {}
    applied: dict[str, str] = {}
    from_backbone = backbone.method_presets.get(name) if backbone is not None else None
    if from_backbone:
        values.update(preset_text(from_backbone))
        applied["backbone_preset"] = backbone.name
    raw = dict(raw)
    preset = raw.pop("preset", None)
    if preset is not None:
        if preset not in cls.presets:
            known = sorted(cls.presets)
            raise HarnessError(
                f"{name} has no preset {preset!r}{close_suggestion(preset, known)} (presets: {', '.join(known) or 'none'}; "
                "see `harness list methods --presets`)"
            )
        values.update(preset_text(cls.presets[preset]))
        applied["preset"] = preset
    values.update(raw)
    return values, applied


def preset_text(values: dict) -> dict[str, str]:
    """A preset's typed values in the command-line form ``build_params`` converts (``a|b`` for tuples)."""

    def text(value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (tuple, list)):
            return "|".join(text(v) for v in value)
        return "none" if value is None else str(value)

    return {key: text(value) for key, value in values.items()}


def _expand_benchmarks(registry: Registry, items: list[list[Selection]]) -> list[Selection]:
    selections = []
    for item in items:
        if len(item) > 1:
            raise HarnessError(f"--bench cannot compose benchmarks with '+' ({'+'.join(s.name for s in item)}); separate them with commas")
        selection = item[0]
        if selection.name not in registry.entries["benchmarks"] and selection.name in registry.groups("benchmarks"):
            if selection.params:
                raise HarnessError(f"--bench group {selection.name!r} takes no parameters; set them per benchmark with --set")
            selections.extend(Selection(name) for name in registry.group("benchmarks", selection.name))
        else:
            if selection.name not in registry.entries["benchmarks"]:
                raise registry.unknown("benchmarks", selection.name, set(registry.entries["benchmarks"]) | registry.groups("benchmarks"))
            selections.append(selection)
    return selections


def _default_device() -> str:
    # Importing torch costs seconds, most of a finished re-run: on Linux, no GPU driver means no GPU.
    if sys.platform.startswith("linux") and not any(os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/kfd")):
        return "cpu"
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def plan(config: RunConfig, registry: Registry) -> Plan:
    """Resolve and check everything ``harness run`` will do, before any model is loaded; one step per concern."""
    _check_config(config)
    overrides = parse_set_options(config.sets)
    method_items = parse_selections(config.methods, "--methods")
    check_methods(registry, method_items, overrides)  # names and parameters first; expanded again once the backbone is known
    check_overrides(registry, overrides)
    benchmarks = share_concepts(resolve_benchmarks(registry, config, overrides))
    target = resolve_target(registry, model=config.model, device=config.device, dtype=config.dtype,
                            expected={planned.benchmark.backbone or DEFAULT_BACKBONE for planned in benchmarks})
    scorer_of = planning_scorers(registry)
    for planned in benchmarks:
        validate_specs(planned.label, planned.specs, target.backbone)
        check_metric_labels(registry, planned.label, planned.benchmark, planned.specs, scorer_of)
    for scorer_name in dict.fromkeys(ref.scorer for planned in benchmarks for ref in planned.benchmark.metric_refs()):
        scorer_of(scorer_name).check()  # weights local or downloadable: before any image
    methods = resolve_methods(registry, method_items, overrides, target.backbone)
    check_concepts_named(methods, benchmarks)
    from harness.attacking import attacked_metrics, plan_attacks

    attacks = plan_attacks(registry, config.attacks, overrides, config.attack_budget, target.backbone, model=target.model)
    if attacks and not any(attacked_metrics(planned.benchmark, scorer_of) for planned in benchmarks):
        raise HarnessError(f"--attack has nothing to attack: no benchmark of this run ({', '.join(b.label for b in benchmarks)}) has a "
                           "per-image erasure metric (lower is better, e.g. nudenet:asr); attacks rewrite the prompts of such "
                           "benchmarks, not of preservation ones")
    used = {"methods": methods_in(method_items, methods), "benchmarks": {planned.benchmark.name for planned in benchmarks},
            "attacks": {planned.attack.name for planned in attacks}}
    check_sets_used(registry, overrides, used, {"methods": "--methods", "benchmarks": "--bench", "attacks": "--attack"})
    return Plan(config, registry, target, methods, benchmarks, derive_run_id(config, target, methods, benchmarks, attacks), attacks)


def planning_scorers(registry: Registry):
    """``scorer_of(name)``: one CPU instance of each scorer for every check of the plan (metric labels, weights,
    what an attack scores).  Scorers load their models lazily, but a plugin's constructor may not: one instance per
    scorer keeps planning as cheap as its cheapest scorer allows.  The run makes its own on the run's device."""
    return functools.cache(lambda name: registry.get("scorers", name)(device="cpu"))


def methods_in(method_items: list[list[Selection]], methods: list[PlannedMethod]) -> set[str]:
    """Every method name a command uses: as written (a composition, ``trce``) and each part it runs (``trce-t``)."""
    return {selection.name for item in method_items for selection in item} | {part.name for m in methods for part, _ in m.parts}


DEFAULT_BACKBONE = "sd14"  # any SD-1.x hub id or diffusers folder given to --model is loaded by it


def _check_config(config: RunConfig) -> None:
    if config.limit is not None and config.limit < 1:
        raise HarnessError(f"--limit must be a positive number of prompts per benchmark; got {config.limit}")
    if config.batch_size is not None and config.batch_size < 1:
        raise HarnessError(f"--batch-size must be at least 1; got {config.batch_size}")
    if not config.bench:
        raise HarnessError("choose at least one benchmark with --bench (see `harness list benchmarks`)")
    if os.path.exists(config.out) and not os.path.isdir(config.out):  # found by --dry-run too, not when storing
        raise HarnessError(f"--out {config.out} is a file; the results store is a folder: choose a new or existing folder")


def check_methods(registry: Registry, method_items: list[list[Selection]], overrides: dict) -> None:
    """Every method name and parameter of ``--methods``, checked without a backbone (whose presets come later)."""
    for item in method_items:
        for selection in item:
            expand_method(registry, selection, overrides, selection.name)


def check_overrides(registry: Registry, overrides: dict) -> None:
    """Every ``--set``, even for a plugin not selected in this run: a typo must not pass silently."""
    known_targets = set(registry.entries["methods"]) | set(registry.entries["benchmarks"]) | set(registry.entries["attacks"])
    for name, values in overrides.items():
        if name not in known_targets:
            raise HarnessError(f"--set names {name!r}, which is neither a method nor a benchmark (nor an attack){did_you_mean(name, known_targets)}")
        if name in registry.entries["methods"]:
            expand_method(registry, Selection(name, values), {}, name)
            continue
        kinds = [kind for kind in ("attacks", "benchmarks") if name in registry.entries[kind]]
        if len(kinds) == 2:  # ring-a-bell, p4d: each key must belong to the benchmark or the attack
            declared = set().union(*(_declared(registry, kind, name) for kind in kinds))
            unknown = [key for key in values if key not in declared]
            if unknown:
                raise HarnessError(f"--set {name}.{unknown[0]}: neither the {name} benchmark nor the {name} attack has that "
                                   f"parameter{close_suggestion(unknown[0], declared)} (parameters: {', '.join(sorted(declared))})")
        for kind in kinds:
            build_params(registry.get(kind, name), overrides_for(registry, kind, name, overrides), name)


def _declared(registry: Registry, kind: str, name: str) -> set[str]:
    return {f.name for f in dataclasses.fields(registry.get(kind, name).Params)}


def overrides_for(registry: Registry, kind: str, name: str, overrides: dict) -> dict:
    """``--set NAME.key=value`` items for the ``kind`` plugin called NAME.  Where a benchmark and an attack share the
    name (ring-a-bell, p4d), each gets the keys its own ``Params`` declares (``check_overrides`` placed every key)."""
    values = overrides.get(name, {})
    other = {"benchmarks": "attacks", "attacks": "benchmarks"}.get(kind)
    if not values or other is None or name not in registry.entries[other]:
        return values
    declared = _declared(registry, kind, name)
    return {key: value for key, value in values.items() if key in declared}


def resolve_benchmarks(registry: Registry, config: RunConfig, overrides: dict) -> list[PlannedBenchmark]:
    """Each benchmark of ``--bench`` (groups expanded) with its parameters, concept set and prompts (``--limit`` applied)."""
    benchmarks = []
    replaced: dict[str, str] = {}  # benchmark → the concept set it names, where --concepts gives another
    for selection in _expand_benchmarks(registry, parse_selections(config.bench, "--bench")):
        cls = registry.get("benchmarks", selection.name)
        check_given_once(cls, selection.name, overrides_for(registry, "benchmarks", selection.name, overrides), selection.params)
        raw = {**overrides_for(registry, "benchmarks", selection.name, overrides), **selection.params}
        label = Selection(selection.name, raw).label()
        if any(planned.label == label for planned in benchmarks):
            continue  # named twice, or in two groups (--bench toy,toy-explicit): run and count it once
        bench = cls(build_params(cls, raw, selection.name))
        own_concepts = getattr(bench.params, "concepts", None) or bench.concepts
        if config.concepts and own_concepts and own_concepts != config.concepts:
            replaced[label] = own_concepts
        concept_name = config.concepts or own_concepts
        concepts = registry.concept_set(concept_name) if concept_name else ConceptSet(name="none")
        bench.prompt_limit = config.limit
        try:
            with naming_the_plugin(bench, "benchmark", selection.name, "prompts"):
                specs = bench.prompts()
        except HarnessError as err:
            if not hasattr(bench.params, "data"):
                raise
            from harness.data import reworded  # a missing file's hint, in the form `harness run` accepts

            raise reworded(err, f"--bench {selection.name}:data=PATH") from None
        if config.limit is not None:
            specs = specs[: config.limit]
        specs = repeat_seeds(specs, config.seeds_per_prompt)
        if not specs:
            source = getattr(bench.params, "path", None) or getattr(bench.params, "data", None)  # the file to look at
            raise HarnessError(f"benchmark {selection.name!r} has no prompts" + (f" ({source} has none)" if source else ""))
        benchmarks.append(PlannedBenchmark(label, bench, concepts, specs))
    if replaced:
        # Allowed (a nudity erasure measured on I2P's other categories is a fair question), but easy to do by accident:
        # "pass --concepts NAME" for a group that spans several concept sets measures every table on NAME's erasure.
        named = ", ".join(f"{bench} ({own})" for bench, own in replaced.items())
        warnings.warn(f"--concepts {config.concepts} replaces the concept set these benchmarks name: {named}; their metrics "
                      f"measure a {config.concepts} erasure (run each concept set's benchmarks on their own to measure their own)",
                      stacklevel=2)
    return benchmarks


def share_concepts(benchmarks: list[PlannedBenchmark]) -> list[PlannedBenchmark]:
    """A benchmark that names no concept set (COCO: preservation) measures whatever the run erases."""
    named = {planned.concepts.name: planned.concepts for planned in benchmarks if planned.concepts.name != "none"}
    if len(named) != 1:
        return benchmarks
    (only,) = named.values()
    return [dataclasses.replace(planned, concepts=only) if planned.concepts.name == "none" else planned for planned in benchmarks]


def resolve_target(registry: Registry, *, model: str | None, device: str | None, dtype: str | None,
                   expected: set[str] | None = None) -> Target:
    """The backbone, device and dtype: ``--model`` names a backbone or a model for ``sd14``; without it, the backbone
    the benchmarks expect (``expected``).  Checked now (offline hub, missing folder, device), so nothing fails later."""
    if model in registry.entries["backbones"]:
        backbone_name, model = model, None
    elif model:
        # A bare word that is no folder is no hub id (owner/name) either: most likely a misspelt backbone name.
        if "/" not in model and not os.path.exists(model) and close_names(model, registry.entries["backbones"]):
            raise HarnessError(f"--model {model!r} is neither a backbone nor a folder"
                               f"{did_you_mean(model, registry.entries['backbones'])} (see `harness list backbones`)")
        backbone_name = DEFAULT_BACKBONE
    else:
        wanted = set(expected or {DEFAULT_BACKBONE})
        if len(wanted) > 1:
            raise HarnessError(f"these benchmarks expect different backbones ({', '.join(sorted(wanted))}); run them separately or pass --model")
        backbone_name = wanted.pop()
    # The device and dtype first: they cost nothing to check, and a wrong one is wrong whatever the weights.
    device = device or _default_device()
    check_device(device)
    # float32 everywhere by default (TF32 matmuls on CUDA, see ``matmul_precision``): a fine-tuned update of ~1e-6
    # survives it, while float16 rounds most of them away.  --dtype float16 remains a deliberate speed choice.
    dtype = dtype or "float32"
    if dtype not in DTYPES:
        raise HarnessError(f"--dtype must be float32, float16 or bfloat16; got {dtype!r}")
    if dtype == "float16" and device == "cpu":
        warnings.warn("--dtype float16 on the CPU is slower than float32 here (few CPU kernels are fast in half precision) "
                      "and still rounds fine-tuned updates away; on the CPU use float32", UserWarning, stacklevel=2)
    backbone = registry.get("backbones", backbone_name)()
    backbone.check(model)
    return Target(backbone_name, backbone, model, device, dtype)


def resolve_methods(registry: Registry, method_items: list[list[Selection]], overrides: dict, backbone: Backbone) -> list[PlannedMethod]:
    """Each item of ``--methods`` as instances in application order; after the backbone, which may preset parameters
    (the toy world's learning rates)."""
    methods = []
    for item in method_items:
        label = "+".join(labelled_selection(registry, selection, overrides).label() for selection in item)
        parts = []
        for selection in item:
            parts.extend(expand_method(registry, selection, overrides, label, backbone=backbone))
        for part, _ in parts:
            part.check_resolved()
        if any(planned.label == label for planned in methods):
            raise HarnessError(f"--methods names the same method twice ({label!r}, --set values included); drop one")
        methods.append(PlannedMethod(label=label, parts=parts))
    return methods


def labelled_selection(registry: Registry, selection: Selection, overrides: dict) -> Selection:
    """The selection with the ``--set`` values it runs with, for its label (results, the run id, the leaderboard):
    ``--methods uce --set uce.lamb=0.1`` is stored as ``uce:lamb=0.1``, as if written so, and never under the plain
    name of another run's defaults.  A registered composition's ``--set PART.key`` appears as ``PART.key``, which
    ``--methods`` also accepts (``trce:trce-t.lamb=0.02``)."""
    cls = registry.get("methods", selection.name)
    params = dict(overrides.get(selection.name, {}))
    for part in cls.parts:
        params.update({f"{part}.{key}": value for key, value in overrides.get(part, {}).items()})
    return Selection(selection.name, {**params, **selection.params})


def check_concepts_named(methods: list[PlannedMethod], benchmarks: list[PlannedBenchmark]) -> None:
    """A method that erases needs a concept set on every benchmark it runs on, and one that names something."""
    named = sorted({planned.concepts.name for planned in benchmarks} - {"none"})
    for method in methods:
        for part, part_label in method.parts:
            if part.kind == MethodKind.NONE:
                continue
            for planned in benchmarks:
                if planned.concepts.name == "none":
                    if len(named) > 1:  # --concepts NAME would erase NAME for every benchmark, the others' tables included
                        raise HarnessError(
                            f"method {part_label!r} needs a concept set to erase, and benchmark {planned.label!r} names none, "
                            f"while this run's other benchmarks name {len(named)} ({', '.join(named)}); run each concept "
                            f"set's benchmarks with {planned.label} in a run of their own (--concepts NAME would erase NAME "
                            "on every one)"
                        )
                    raise HarnessError(
                        f"method {part_label!r} needs a concept set to erase, and benchmark {planned.label!r} names none; "
                        "pass --concepts NAME (or run it together with the benchmarks of one concept set)"
                    )
                check_erases_something(part, part_label, planned.concepts)
                part.check_concepts(planned.concepts)  # data it reads through the concept set: local or downloadable


def check_erases_something(part: Method, part_label: str, concepts: ConceptSet) -> None:
    """Refuse a concept set that names nothing for a method that erases: each method would say so itself, but only
    in its edit, after the model has loaded."""
    if part.kind != MethodKind.NONE and names_nothing(concepts) and not _names_own_concepts(part):
        raise HarnessError(f"method {part_label!r}: concept set {concepts.name!r} has nothing to erase (its 'erase', "
                           "'phrases' and 'extra' are empty); add an \"erase\" list to it or choose another --concepts")


def names_nothing(concepts: ConceptSet) -> bool:
    """No field any method reads its concepts from (``erase``, ``phrases``, a method's ``extra`` entry) holds anything."""
    return not (concepts.erase or concepts.phrases or concepts.extra)


def _names_own_concepts(part: Method) -> bool:
    """A method given its concepts as a parameter it declares in ``concept_params`` (``safree:concepts=a|b``,
    ``sld:safety_concept=TEXT``) needs none from the concept set."""
    return any(getattr(part.params, name, None) for name in part.concept_params)


def derive_run_id(config: RunConfig, target: Target, methods: list[PlannedMethod], benchmarks: list[PlannedBenchmark], attacks=()) -> str:
    """``--run-name``, else derived from the configuration, so the same command resumes the same run."""
    if config.run_name is not None:
        return check_name(config.run_name, "--run-name")
    identity = {
        "model": config.model,
        "backbone": target.backbone_name,
        "methods": [m.label for m in methods],
        "benchmarks": [b.label for b in benchmarks],
        "concepts": [b.concepts.fingerprint() for b in benchmarks],
        "limit": config.limit,
        "dtype": target.dtype,
    }
    if config.seeds_per_prompt != 1:  # only then: a K = 1 run keeps the id it always had
        identity["seeds_per_prompt"] = config.seeds_per_prompt
    if attacks:  # only then, so the ids of runs without attacks stay what they were
        identity["attacks"] = [a.label for a in attacks]
    return f"run-{sha256_json(identity)[:12]}"


def plan_erase(registry: Registry, *, method: str, sets: list[str], model: str | None, device: str | None,
               dtype: str | None) -> tuple[PlannedMethod, Target]:
    """``harness erase``: the same resolution as ``plan`` for one method (or composition) on one target."""
    overrides = parse_set_options(sets)
    items = parse_selections(method, "--method")
    if len(items) != 1:
        raise HarnessError("harness erase takes one method (a composition a+b is fine)")
    check_methods(registry, items, overrides)
    check_overrides(registry, overrides)
    target = resolve_target(registry, model=model, device=device, dtype=dtype)
    (planned,) = resolve_methods(registry, items, overrides, target.backbone)
    check_sets_used(registry, overrides, {"methods": methods_in(items, [planned])}, {"methods": "--method"})
    # A part with sampling hooks (sld, safree, adavd; spm's prompt-dependent adapter) changes more than the weights.
    if any(part.kind == MethodKind.INFERENCE or type(part).sampling_hooks is not Method.sampling_hooks for part, _ in planned.parts):
        raise HarnessError(f"{method} changes sampling, not only weights; there is no checkpoint to export")
    return planned, target


# --------------------------------------------------------------------------- execution


def matmul_precision(device: str, dtype: str) -> str:
    """Allow TF32 matmuls and convolutions for float32 on CUDA (what the manifest records as ``matmul_precision``).

    TF32 keeps float32's range and storage, so weights and fine-tuned updates keep every bit; only the products
    round to a 10-bit mantissa, as in the PyTorch default for convolutions.  Elsewhere nothing changes.
    """
    if not (device.startswith("cuda") and dtype == "float32"):
        return dtype
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return "tf32"


def _manifest(plan: Plan, backbone_fingerprint: str) -> dict:
    return {
        "run_id": plan.run_id,
        "versions": environment_versions(),
        "config": dataclasses.asdict(plan.config),
        "backbone": {"name": plan.backbone_name, "model": plan.model or plan.backbone.default_model, "fingerprint": backbone_fingerprint},
        "device": plan.device,
        "dtype": plan.dtype,
        "methods": [
            {
                "label": m.label,
                "parts": [
                    {"label": label, "params": p.params_dict(), "presets": p.presets_applied, "version": p.version, "paper": p.paper}
                    for p, label in m.parts
                ],
            }
            for m in plan.methods
        ],
        "benchmarks": [
            {
                "label": b.label,
                "params": b.benchmark.params_dict(),
                "source": b.benchmark.source(),
                "concepts": {"name": b.concepts.name, "sha256": b.concepts.fingerprint()},
                "metrics": list(b.benchmark.metrics),
                "prompts": len(b.specs),
                "seeds": [s.seed for s in b.specs],
            }
            for b in plan.benchmarks
        ],
        "plugins": [dataclasses.asdict(info) for info in plan.registry.host.infos],
        **({"attacks": [a.manifest() for a in plan.attacks]} if plan.attacks else {}),
    }


def concept_groups(benchmarks: list[PlannedBenchmark]) -> list[list[PlannedBenchmark]]:
    """The benchmarks grouped by concept set, in plan order: each group shares one model state per method."""
    groups: dict[str, list[PlannedBenchmark]] = {}
    for planned in benchmarks:
        groups.setdefault(planned.concepts.fingerprint(), []).append(planned)
    return list(groups.values())


class Runner:
    """Executes a plan.  Everything it works with exists from construction on: the store, the (lazily loaded)
    pipeline, the model states and the engine; the weights load only when something must be generated or erased."""

    def __init__(self, plan: Plan, store: Store | None = None, source=None):
        from harness.engine import Defaults, Engine, ModelStates
        from harness.lazy import PipelineSource
        from harness.overlap import OverlapStats

        self.plan = plan
        self.store = store = store if store is not None else Store(plan.config.out)
        self.scorers: dict[str, object] = {}
        self.attack_log: list[dict] = []  # one record per attack cell: prompts found now, cost now and in total
        self.truncated: dict[str, dict] = {}  # benchmark label -> {"count", "of", "limit"}: prompts cut by the text encoder
        target, show = plan.target, plan.config.show_progress
        self.matmul_precision = matmul_precision(target.device, target.dtype)
        self.threads = threads.configure()  # before any torch work, fingerprinting included
        # ``source``: a harness.lazy.PipelineSource already made (the data-parallel pass), so nothing loads twice.
        self.source = source or PipelineSource(target=target, store=store)
        # The fingerprint comes from the store when this backbone was seen before; otherwise this loads the pipeline.
        self.backbone_fingerprint, scheduler_config = self.source.fingerprint()
        self.states = ModelStates(self.source, store, self.backbone_fingerprint, target,
                                  show_progress=show)
        backbone = target.backbone
        self.engine = Engine(self.source, store, self.backbone_fingerprint, Defaults(backbone.steps, backbone.height, backbone.width),
                             target.device, target.dtype, batch_size=plan.config.batch_size or backbone.batch_size, show_progress=show,
                             scheduler_config=scheduler_config)
        self.overlap = OverlapStats()  # scoring hidden behind generation, summed over the run's cells

    def scorer(self, name: str):
        if name not in self.scorers:
            self.scorers[name] = self.plan.registry.get("scorers", name)(device=self.plan.device)
        return self.scorers[name]

    def execute(self):
        plan, store = self.plan, self.store
        _note_a_renamed_run_reused(store, plan)
        store.start_run(plan.run_id, dataclasses.asdict(plan.config))
        manifest = _manifest(plan, self.backbone_fingerprint)
        _note_changed_sources(store, plan.run_id, manifest)
        manifest["matmul_precision"] = self.matmul_precision
        manifest["threads"] = self.threads
        store.write_manifest(plan.run_id, manifest)
        states_metadata = {}
        groups = concept_groups(plan.benchmarks)
        failed = []
        for method in plan.methods:
            try:
                for group in groups:
                    self._generate_references(group)
                    state = self._state_for(method, group)
                    states_metadata[f"{method.label} / {group[0].concepts.name}"] = state.metadata
                    for planned in group:
                        self._run_cell(method.label, planned, state)
                    for attack in plan.attacks:
                        for planned in group:
                            self._run_attack_cell(method, planned, state, attack)
            except Exception as err:  # not KeyboardInterrupt: Ctrl-C still stops the run
                if not plan.config.keep_going:
                    raise
                failed.append(self._failed_method(method.label, err))
        manifest["model_states"] = states_metadata
        if plan.attacks:
            manifest["attack_cells"] = self.attack_log
        manifest["truncated_prompts"] = self.truncated
        manifest["pipeline_loaded"] = self.source.loads > 0
        manifest["overlap"] = self.overlap.as_dict()
        self.states.reset()
        if failed:
            # Unfinished, as a killed run is: its manifest keeps no finishing keys (reports name the run unfinished,
            # merge takes a finished copy's over it), and the same command retries what failed, nothing else.
            names = ", ".join(f"{f['method']} ({f['error']})" for f in failed)
            raise HarnessError(f"{len(failed)} of {len(plan.methods)} method(s) failed: {names}; the other methods' results "
                               f"are stored; fix the cause and run the same command again to retry only what failed")
        store.write_manifest(plan.run_id, manifest)
        store.finish_run(plan.run_id)
        return plan.run_id

    def _failed_method(self, label: str, err: Exception) -> dict:
        """--keep-going: say what failed now, in full where it is a bug (a traceback), and put the weights back."""
        import traceback

        message = user_error(err)
        if message is None:  # a bug in someone's code: its traceback, with the plugin named (failures.naming_the_plugin)
            traceback.print_exception(err, file=sys.stderr)
            message = f"{type(err).__name__}: {err}"
        print(f"harness: method {label} failed: {message}; going on with the next method (--keep-going)", file=sys.stderr)
        self.states.reset()
        return {"method": label, "error": message}

    def _state_for(self, method: PlannedMethod, group: list[PlannedBenchmark]):
        """The method's model state: read from the store when every image of the group exists, else activated."""
        stored = self.states.stored_state(method.parts, group[0].concepts, method.label)
        if stored is not None:
            engine = self.engine
            specs = [engine.resolve(spec) for planned in group for spec in planned.specs]
            files = self.store.files  # intact, not merely present: a damaged image must be regenerated in the real state
            if all(files.inspect(self.store.image_path(engine.image_key(spec, stored.key)), adopt=integrity.image_decodes) is None
                   for spec in specs) and self._deltas_intact(method, group[0].concepts):
                return stored
        return self.states.activate(method.parts, group[0].concepts, method.label)

    def _deltas_intact(self, method: PlannedMethod, concepts: ConceptSet) -> bool:
        """Check the stored deltas of the method's chain even when no image needs them: damage is reported when found."""
        store = self.store
        for key in self.states.chain_keys(method.parts, concepts):
            row = store.model_state(key) if key is not None else None
            if row is not None and row["delta_path"] and not store.files.verify(
                store.delta_path(key), "cached model delta", adopt=integrity.safetensors_loads, kind=integrity.DELTA,
                remedy="the erasure is recomputed",
            ):
                return False
        return True

    def _run_cell(self, method_label: str, planned: PlannedBenchmark, state) -> None:
        from harness.overlap import Overlap

        plan, store, engine = self.plan, self.store, self.engine
        # Per-image scorers score each batch while the next one is generated; what is left is scored below.
        scorer_names = dict.fromkeys(ref.scorer for ref in planned.benchmark.metric_refs())
        with Overlap(store.root, [self.scorer(name) for name in scorer_names if not self.scorer(name).needs_reference]) as overlap:
            keys = engine.generate(planned.specs, state, desc=f"{method_label} × {planned.label}", on_batch=overlap.submit)
        self.overlap.add(overlap.stats)
        store.link_run_images(plan.run_id, method_label, planned.label, [(s.id, k) for s, k in zip(planned.specs, keys)])
        self._count_truncated(planned, keys)
        evals = store.image_unet_evals(keys)
        # Unknown (None), never 0, when some image's cost is not on record (an image cached before costs were recorded).
        known = [evals.get(key) for key in dict.fromkeys(keys)]
        evals_per_image = None if None in known or not known else sum(known) / len(known)
        by_scorer: dict[str, list[str]] = {}
        refs = planned.benchmark.metric_refs()
        for ref in refs:
            by_scorer.setdefault(ref.scorer, []).append(ref.metric)
        # Stored with every result, so that reports show it without loading a plugin.
        method_display = display_label(plan.registry, "methods", method_label)
        if planned.attack:  # an attack cell "A(B)": B as a paper writes it
            source = planned.label[len(planned.attack) + 1 : -1]
            benchmark_display = f"{planned.attack}({display_label(plan.registry, 'benchmarks', source)})"
        else:
            benchmark_display = display_label(plan.registry, "benchmarks", planned.label)
        for scorer_name, metric_ids in by_scorer.items():
            scorer = self.scorer(scorer_name)
            if scorer.needs_reference:
                raws = [self._set_raw(scorer, planned, keys, state)]
            else:
                raws = self._image_raws(scorer, planned, keys)
            for metric_id in metric_ids:
                metric = scorer.metric(metric_id)
                with naming_the_plugin(scorer, "scorer", scorer_name, f"metric {metric_id!r}"):
                    value = metric.compute(raws, planned.specs)
                    per_image = None if scorer.needs_reference else metric.image_values(raws, planned.specs)
                counted = [(spec, key, v) for spec, key, v in zip(planned.specs, keys, per_image or []) if v is not None]
                # n is what the value averages over: the counted images (a category rate counts only its prompts).
                n = len(counted) if per_image is not None else len(keys)
                metric_ref = str(MetricRef(scorer_name, metric_id))
                store.add_result(run_id=plan.run_id, method=method_label, benchmark=planned.label, metric=metric_ref,
                                 value=value, n=n, lower_is_better=metric.lower_is_better, name=metric.name,
                                 description=metric.description, unit=metric.unit, adversarial=planned.benchmark.adversarial,
                                 needs_reference=scorer.needs_reference, method_display=method_display,
                                 benchmark_display=benchmark_display, metric_position=refs.index(MetricRef(scorer_name, metric_id)),
                                 model_state=state.key, unet_evals_per_image=evals_per_image, attack=planned.attack,
                                 values=[(spec.id, spec.labels.get(SEEDS_OF, spec.id), spec.seed, key, v) for spec, key, v in counted])

    def _run_attack_cell(self, method: PlannedMethod, planned: PlannedBenchmark, state, attack) -> None:
        """Attack ``planned``'s prompts against ``method``'s model state, then generate and score them as cell "A(B)"."""
        from harness.attacking import attack_cell

        cell, record, state = attack_cell(self, method, planned, state, attack)
        if cell is None:
            return
        self.attack_log.append(record)
        self._run_cell(method.label, cell, state)

    def _count_truncated(self, planned: PlannedBenchmark, keys: list[str]) -> None:
        """Prompts longer than the text encoder's context are cut (as in every reference implementation): count them,
        say so once per benchmark, and record it in the manifest for the report."""
        if planned.label in self.truncated:
            return
        stored = self.store.image_specs(keys)
        records = [stored.get(key, {}) for key in keys]
        limit = next((r["token_limit"] for r in records if r.get("token_limit")), None)
        if limit is None:
            return  # cached by an older version: lengths not on record
        count = sum(1 for r in records if (r.get("prompt_tokens") or 0) > limit)
        self.truncated[planned.label] = {"count": count, "of": len(keys), "limit": limit}
        if count:
            warnings.warn(f"benchmark {planned.label!r}: {count} of {len(keys)} prompts are longer than the text encoder's {limit} tokens "
                          f"and were cut to {limit}, as the reference implementations do", stacklevel=2)

    def _load_images(self, keys: list[str]) -> list:
        from PIL import Image

        images = []
        for key in keys:
            data = self.store.files.read(self.store.image_path(key), "cached image")  # never score a damaged file
            with Image.open(io.BytesIO(data)) as image:
                images.append(image.convert("RGB"))
        return images

    def _image_raws(self, scorer, planned: PlannedBenchmark, keys: list[str]) -> list[dict]:
        from harness.progress import bar as progress_bar

        store = self.store
        spec_of = dict(zip(keys, planned.specs))
        versions = {key: scorer.raw_version(spec) for key, spec in spec_of.items()}
        known = store.raw_scores_per_version(scorer.name, versions)
        todo = list(dict.fromkeys(key for key in keys if key not in known))  # each distinct image once
        with progress_bar(total=len(todo), desc=f"scoring {scorer.name}", unit="img", enabled=self.plan.config.show_progress and bool(todo)) as bar:
            for start in range(0, len(todo), SCORE_CHUNK):
                chunk = todo[start : start + SCORE_CHUNK]
                raws = checked_score(scorer, self._load_images(chunk), [spec_of[key] for key in chunk])
                fresh = dict(zip(chunk, raws))
                store.add_raw_scores_per_version(scorer.name, versions, fresh)
                known.update(fresh)
                bar.update(len(chunk))
        return [known[key] for key in keys]

    def _needs_reference(self, planned: PlannedBenchmark) -> bool:
        return any(self.scorer(ref.scorer).needs_reference for ref in planned.benchmark.metric_refs())

    def _generate_references(self, group: list[PlannedBenchmark]) -> None:
        """The base model's own images for the same prompts and seeds (the paper's FID reference).

        Generated while no edit is applied, before a method's state is activated.
        """
        self.states.reset()
        for planned in group:
            if self._needs_reference(planned):
                self.engine.generate(planned.specs, self.base_state(), desc=f"reference (sd) × {planned.label}")

    def base_state(self):
        from harness.engine import ActiveState

        return ActiveState(key=self.states.backbone_fingerprint, label="sd")

    def _set_raw(self, scorer, planned: PlannedBenchmark, keys: list[str], state) -> dict:
        reference_keys = [self.engine.image_key(self.engine.resolve(spec), self.base_state().key) for spec in planned.specs]
        # The images' recorded contents are part of the key: an image generated again with other bytes (another GPU,
        # after `harness check --repair` of a damaged file) must not keep the score computed from the old ones.
        files = self.store.files
        contents = [getattr(files.lookup(self.store.image_path(key)), "sha256", None) for key in [*keys, *reference_keys]]
        set_key = sha256_json({"images": keys, "reference": reference_keys, "contents": contents})
        raw = self.store.set_score(set_key, scorer.name, scorer.version)
        if raw is None:
            with naming_the_plugin(scorer, "scorer", scorer.name, "score_set"):
                raw = scorer.score_set(self._load_images(keys), self._load_images(reference_keys), planned.specs)
            self.store.add_set_score(set_key, scorer.name, scorer.version, raw)
        return raw


# What makes two runs different experiments (the rest, such as --batch-size or --device, only changes how it runs).
RUN_DEFINING = ("methods", "bench", "model", "sets", "concepts", "limit", "seeds_per_prompt", "attacks", "attack_budget", "dtype")


def _note_a_renamed_run_reused(store: Store, plan: Plan) -> None:
    """A derived run id names one configuration, but ``--run-name`` can be reused for another: say so, because the
    run's manifest then describes only the newest command while the cells of both stay under the one name."""
    if plan.config.run_name is None:
        return
    before = store.run_config(plan.run_id)
    if before is None:
        return
    now = dataclasses.asdict(plan.config)
    defaults = dataclasses.asdict(RunConfig())  # a run stored before a field existed ran with its default
    changed = [key for key in RUN_DEFINING if before.get(key, defaults[key]) != now[key]]
    if changed:
        differences = "; ".join(f"--{key.replace('_', '-')} {before.get(key, defaults[key])!r} → {now[key]!r}" for key in changed)
        warnings.warn(f"run {plan.run_id!r} was started before with another configuration ({differences}); its cells stay "
                      "beside this run's under the same name and its manifest now describes this command only; give a new "
                      "--run-name to keep them apart", stacklevel=2)


def _note_changed_sources(store: Store, run_id: str, manifest: dict) -> None:
    """A run's id comes from its command, not from its files' contents: a prompt file edited between two runs of the
    same command gives the same run, whose cells for that benchmark are then replaced.  Say so, with both sha256s."""
    try:
        before = store.read_manifest(run_id) or {}
    except (OSError, ValueError):
        return
    earlier = {b.get("label"): (b.get("source") or {}).get("sha256") for b in before.get("benchmarks", [])}
    for benchmark in manifest["benchmarks"]:
        old, new = earlier.get(benchmark["label"]), (benchmark.get("source") or {}).get("sha256")
        if old and new and old != new:
            warnings.warn(f"the prompt file of {benchmark['label']} changed since run {run_id!r} last used it (sha256 {old[:12]} → "
                          f"{new[:12]}); this run's cells of it are replaced by the new file's; give --run-name to keep both",
                          stacklevel=2)


def display_label(registry: Registry, kind: str, label: str) -> str:
    """A stored label as a paper writes it: "TRCE (T+V)", "UCE (lamb=0.1)", "UCE + SLD".

    Each part takes its class's ``display_name`` (its name if it has none or names no plugin), then its parameters.
    """
    (parts,) = parse_selections(label, f"{kind} label")
    shown = []
    for part in parts:
        if part.params.get("label"):  # a plugin's `label=` parameter (checkpoint) is the name the user gave the row
            shown.append(part.params["label"])
            continue
        # A label that names no plugin is shown as written.
        known = part.name in registry.entries[kind]
        title = (getattr(registry.get(kind, part.name), "display_name", "") if known else "") or part.name
        rest = dict(part.params)
        if rest.get("path"):  # a file's folders make a column header of a whole line: its name says which file
            title = f"{title} {Path(rest.pop('path')).name}"
        params = Selection(part.name, rest).params_text()
        shown.append(f"{title} ({params})" if params else title)
    return " + ".join(shown)


def describe_stored_work(planned: Plan) -> list[str]:
    """For ``--dry-run``: how much of the plan the store already holds, read without loading any weights.

    Image and model-state keys are the ones a run computes (``Engine.image_key``, ``ModelStates.chain_keys``), from
    the backbone fingerprint the store recorded for these weights; a store that never saw them holds nothing of
    the plan.  Attack cells are not counted: their prompts are searched per method first.
    """
    from harness.lazy import PipelineSource

    prompts = sum(len(b.specs) for b in planned.benchmarks)
    total = prompts * len(planned.methods)
    head = f"  images: {total} ({len(planned.methods)} method{'s' * (len(planned.methods) > 1)} × {prompts} each)"
    out = Path(planned.config.out)
    if not (out / "harness.db").exists():
        return [f"{head}; no store at {out} yet, so every image and erasure is new", *_attack_note(planned)]
    store = Store(out, read_only=True)
    target = planned.target
    source = PipelineSource(target=target, store=store)
    identity = source.identity_key()
    cached = store.backbone_fingerprint(identity) if identity else None
    if cached is None:
        return [f"{head}; the store at {out} never saw these weights, so every image and erasure is new", *_attack_note(planned)]
    runner = Runner(planned, store=store, source=source)  # the fingerprint is the store's: nothing loads
    states, engine, fingerprint = runner.states, runner.engine, runner.backbone_fingerprint
    stored_images, erasures = 0, []
    for method in planned.methods:
        for group in concept_groups(planned.benchmarks):
            concepts = group[0].concepts
            keys = states.chain_keys(method.parts, concepts)
            state_key = next((key for key in reversed(keys) if key is not None), fingerprint)
            for planned_benchmark in group:
                stored_images += sum(store.image_path(engine.image_key(engine.resolve(spec), state_key)).exists()
                                     for spec in planned_benchmark.specs)
            to_make = [label for (_, label), key in zip(method.parts, keys) if key is not None and store.model_state(key) is None]
            if any(key is not None for key in keys):
                erasures.append(f"{method.label} ({concepts.name}): " + (f"to compute ({', '.join(to_make)})" if to_make else "stored"))
    lines = [f"{head}; {stored_images} already in the store at {out}, {total - stored_images} to generate"]
    if erasures:
        lines.append("  erasures: " + "; ".join(erasures))
    return lines + _attack_note(planned)


def _attack_note(planned: Plan) -> list[str]:
    if not planned.attacks:
        return []
    return ["  attack cells: not counted above (each attack first searches its prompts against each method; "
            "prompts already found are reused)"]


def describe_plan(planned: Plan) -> str:
    lines = [f"run {planned.run_id}: backbone {planned.backbone_name} ({planned.model or planned.backbone.default_model or 'built in'}) on {planned.device}/{planned.dtype}"]
    lines.append("  methods: " + ", ".join(m.label for m in planned.methods))
    seeds = planned.config.seeds_per_prompt
    for b in planned.benchmarks:
        prompts = len(b.specs) // seeds
        count = f"{prompts} prompt{'s' * (prompts != 1)}" + ("" if seeds == 1 else f" × {seeds} seeds")
        lines.append(f"  {b.label}: {count}, concepts {b.concepts.name}, metrics {', '.join(b.benchmark.metrics)}")
    for a in planned.attacks:
        lines.append(f"  attack {a.label}: {a.attack.paper or a.attack.description}")
    from harness.attacking import blind_spot_notes

    lines += blind_spot_notes(planned.methods, planned.attacks)
    return "\n".join(lines)

