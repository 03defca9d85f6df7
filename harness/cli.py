"""The ``harness`` command line.

Heavy libraries (torch, diffusers) are imported only inside the commands that
need them, so ``harness list`` and ``harness --help`` answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import textwrap
import warnings
from pathlib import Path

from harness import __version__, failures, integrity
from harness.api import HarnessError
from harness.merge import add_merge_command
from harness.plugins import PluginHost
from harness.registry import KINDS, Registry

MAIN_HELP = """\
Compare concept-erasure methods for text-to-image diffusion models.

examples:
  harness run --methods sd,uce,trce --bench toy             erase red in the toy world and score it
  harness run --model CompVis/stable-diffusion-v1-4 --methods trce,rece --bench i2p,mma
  harness run --model tiny --methods sd --bench csv:path=prompts.csv --limit 8
  harness report --out harness-out                          leaderboard from stored results
  harness list methods                                      what is installed
  harness list --params esd-x                               a plugin's parameters: defaults, bounds, what each does
  harness --plugin my_method.py run --methods mine --bench toy
"""

RUN_HELP = """\
Erase each method's concept set, generate every benchmark prompt with its own
seed and guidance, score the images and store everything under --out.  Re-running
the same command resumes: finished images, scores and edits are never redone.

grammar:
  --methods a,b            methods, compared side by side
  --methods a+b            composition: b is applied on top of a
  --methods uce:lamb=0.1,erase_scale=2,rece
                           parameters follow a colon; "k=v" items continue the previous one
  --bench i2p,mma          benchmarks; a group name (e.g. toy) selects all of its benchmarks
  --bench csv:path=my.csv  a benchmark parameter
  --set trce-t.lamb=0.02   a parameter of a method, benchmark or attack of this run (repeatable); the same
                           as trce-t:lamb=0.02, so one parameter given two values is refused (also a key
                           beside a composition's name, trce:lamb=0.5, that a part's --set gives another value)
  --attack ring-a-bell     also attack each method with prompts found against it: cells
                           "ring-a-bell(BENCH)" scored with BENCH's metrics, cached per prompt

examples:
  harness run --methods sd,uce,trce-t --bench toy
  harness run --model tiny --methods sd --bench csv:path=prompts.csv --limit 4
  harness run --model toy --methods sd,uce,trce-t --bench toy-implicit --limit 32 --attack ring-a-bell
  harness run --model ./sd-v1-4 --methods trce --bench i2p --device cuda
"""

def _extract_plugin_files(argv: list[str]) -> tuple[list[str], list[str]]:
    """Pull ``--plugin PATH`` out of argv wherever it appears: plugins must load before commands are built."""
    files, rest, index = [], [], 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--plugin":
            if index + 1 >= len(argv):
                raise HarnessError("--plugin needs a path to a .py file")
            files.append(argv[index + 1])
            index += 2
            continue
        if arg.startswith("--plugin="):
            files.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        index += 1
    return files, rest


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings are for users here (a skipped plugin, an empty prompt): one line each, no source code."""
    print(f"harness: warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- commands


def cmd_list(args, registry: Registry) -> int:
    if args.params:
        return list_params(args, registry)
    if args.presets:
        return list_presets(args, registry)
    kinds = [args.kind] if args.kind else list(KINDS)
    records = {
        kind: [
            {"name": e.name, "description": e.description, "plugin": e.plugin, **({"groups": list(e.groups)} if e.groups else {})}
            for e in sorted(registry.entries[kind].values(), key=lambda e: e.name)
        ]
        for kind in kinds
    }
    if args.json:
        print(json.dumps(records if not args.kind else records[args.kind], indent=2))
        return 0
    for kind in kinds:
        print(f"{kind}:")
        if not records[kind]:
            print("  (none installed)")
        width = max((len(r["name"]) for r in records[kind]), default=0)
        for record in records[kind]:
            groups = f" [groups: {', '.join(record['groups'])}]" if record.get("groups") else ""
            print(f"  {record['name']:<{width}}  {record['description']}{groups}  ({record['plugin']})")
    return 0


PARAM_KINDS = ("methods", "benchmarks", "attacks", "scorers", "backbones")


def list_params(args, registry: Registry) -> int:
    """``harness list --params NAME``: a plugin's parameters with their types, defaults, bounds and comments (every
    kind that has a plugin of that name: ``toy`` is a backbone and a scorer)."""
    from harness.api import did_you_mean

    name = args.params
    if args.kind == "concepts":
        raise HarnessError("concept sets have no parameters; `harness list concepts` lists them")
    kinds = [args.kind] if args.kind else list(PARAM_KINDS)
    found = [k for k in kinds if name in registry.entries[k]]
    if not found:
        known = {n for k in kinds for n in registry.entries[k]}
        where = KINDS[args.kind][0] if args.kind else "method, benchmark, attack, scorer or backbone"
        raise HarnessError(f"no {where} named {name!r}{did_you_mean(name, known)} (see `harness list`)")
    records = [_param_record(registry, kind, name) for kind in found]
    if args.json:
        print(json.dumps(records if len(records) > 1 else records[0], indent=2, default=str))
        return 0
    print("\n\n".join(_param_text(record) for record in records))
    return 0


def _param_record(registry: Registry, kind: str, name: str) -> dict:
    from harness.paramdoc import parameter_docs

    cls = registry.get(kind, name)
    parts = list(getattr(cls, "parts", ()) or ())
    sections = [(part, registry.get("methods", part).Params) for part in parts] or [(name, getattr(cls, "Params", None))]
    on_backbones = {}
    if kind in ("methods", "attacks"):
        table = "method_presets" if kind == "methods" else "attack_presets"
        for backbone in sorted(registry.entries["backbones"]):
            presets = getattr(registry.get("backbones", backbone), table, {})
            values = dict(presets.get(name, {}))
            for part in parts:  # a composition's part runs at its own preset (trce's trce-v at trce-v's)
                values.update({f"{part}.{key}": value for key, value in presets.get(part, {}).items()})
            if values:
                on_backbones[backbone] = values
    record = {
        "name": name, "kind": kind, "description": registry.entries[kind][name].description, "parts": parts,
        "parameters": {section: [doc.__dict__ for doc in parameter_docs(params)] for section, params in sections},
        "presets": method_presets(registry, name) if kind == "methods" else {}, "backbone_presets": on_backbones,
    }
    if kind == "scorers":  # what a benchmark's metrics= may name (SCORER:ID): a plugin author needs the ids
        record["metrics"] = [{"id": m.id, "name": m.name, "lower_is_better": m.lower_is_better, "unit": m.unit,
                              "per_image": m.aggregate is None, "description": m.description} for m in cls().metrics()]
    if kind == "benchmarks":
        record["metrics"], record["concepts"] = list(cls.metrics), cls.concepts
    return record


def _param_text(record: dict) -> str:
    name, kind, parts = record["name"], record["kind"], record["parts"]
    lines = [f"{name} ({KINDS[kind][0]}): {record['description']}"]
    option = {"methods": "--methods", "benchmarks": "--bench", "attacks": "--attack"}.get(kind)
    if option and any(record["parameters"].values()):
        lines.append(f"set one with {option} {name}:NAME=VALUE or --set {name}.NAME=VALUE")
        if any("separated by '|'" in doc["bounds"] for docs in record["parameters"].values() for doc in docs):
            # Unquoted, a shell reads '|' as a pipe: the harness would get the first item alone, and accept it.
            lines.append(f"a list joins its items with '|': quote the option in a shell, e.g. --set '{name}.NAME=a|b'")
    if parts:
        lines.append(f"a composition of {', '.join(parts)}: {name}:NAME=VALUE goes to the part that declares NAME")
    for section, docs in record["parameters"].items():
        if parts:
            lines.append(f"{section}:")
        if not docs:
            lines.append("  (no parameters)")
            continue
        name_width = max(len(d["name"]) for d in docs)
        default_width = min(max(len(d["default"]) for d in docs), 24)
        for doc in docs:
            notes = "; ".join(part for part in (doc["bounds"], doc["comment"]) if part)
            lines.append(f"  {doc['name']:<{name_width}}  {doc['default']:<{default_width}}  {doc['type']}" + (f"  {notes}" if notes else ""))
    if kind == "scorers":
        lines.append(f"metrics (a benchmark names one as {name}:ID):")
        for metric in record["metrics"]:
            arrow = "↓" if metric["lower_is_better"] else "↑"
            scope = "" if metric["per_image"] else ", whole set"
            lines.append(f"  {metric['id']}  {arrow} {metric['unit']}{scope}  {metric['name']}: {metric['description']}")
    if kind == "benchmarks":
        lines.append(f"scored by {', '.join(record['metrics']) or 'no metrics'}; concept set {record['concepts'] or 'none (give --concepts)'}")
    for preset, values in record["presets"].items():
        lines.append(f"preset {name}:preset={preset}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    for backbone, values in record["backbone_presets"].items():
        lines.append(f"on backbone {backbone} (applied automatically): " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return "\n".join(lines)


def method_presets(registry: Registry, name: str) -> dict[str, dict]:
    """A method's named presets; a composition (trce) hands each preset to every part that has it."""
    cls = registry.get("methods", name)
    presets = {preset: dict(values) for preset, values in cls.presets.items()}
    for part in cls.parts:
        for preset, values in registry.get("methods", part).presets.items():
            presets.setdefault(preset, {}).update({f"{part}.{key}": value for key, value in values.items()})
    return presets


def list_presets(args, registry: Registry) -> int:
    """``harness list methods --presets``: every method's named presets and the backbones' presets, with their values."""
    if args.kind not in (None, "methods"):
        raise HarnessError("--presets lists method presets: use `harness list methods --presets`")
    records = {"methods": {}, "backbones": {}, "backbone_attacks": {}}
    for name in sorted(registry.entries["methods"]):
        presets = method_presets(registry, name)
        if presets:
            records["methods"][name] = presets
    for name in sorted(registry.entries["backbones"]):
        backbone = registry.get("backbones", name)
        if backbone.method_presets:
            records["backbones"][name] = backbone.method_presets
        if getattr(backbone, "attack_presets", None):
            records["backbone_attacks"][name] = backbone.attack_presets
    if args.json:
        print(json.dumps(records, indent=2, default=str))
        return 0
    print("method presets (name:preset=NAME; parameters written beside it override it):")
    for name, presets in records["methods"].items():
        for preset, values in presets.items():
            print(f"  {name}:preset={preset}  " + ", ".join(f"{k}={v}" for k, v in values.items()))
    print("backbone presets (applied automatically on that backbone; --set overrides them):")
    for backbone, by_method in records["backbones"].items():
        for method, values in by_method.items():
            print(f"  {backbone}: {method}  " + ", ".join(f"{k}={v}" for k, v in values.items()))
    for backbone, by_attack in records["backbone_attacks"].items():
        for attack, values in by_attack.items():
            print(f"  {backbone}: {attack} (attack)  " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return 0


def cmd_plugins(args, registry: Registry) -> int:
    infos = registry.host.infos
    if args.json:
        print(json.dumps([info.__dict__ for info in infos], indent=2))
        return 0
    for info in infos:
        status = f"FAILED: {info.error}" if info.error else ", ".join(info.hooks)
        if info.unknown_hooks:
            status += f"  (never called, no such hook: {', '.join(info.unknown_hooks)})"
        for hook, error in info.failed_hooks.items():
            status += f"\n    FAILED in {hook} (nothing it registers is used): {error}"
        print(f"{info.name} {info.version}  {info.source}\n    {status}")
    return 0


def _run_config(args):
    from harness.runner import RunConfig

    return RunConfig(
        methods=args.methods,
        bench=args.bench,
        model=args.model,
        sets=args.set,
        concepts=args.concepts,
        limit=args.limit,
        seeds_per_prompt=args.seeds_per_prompt,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        out=args.out,
        run_name=args.run_name,
        show_progress=not args.no_progress,
        attacks=args.attack,
        attack_budget=args.attack_budget,
        keep_going=args.keep_going,
    )


def cmd_run(args, registry: Registry) -> int:
    from harness import distributed, runner
    from harness.store import Store

    planned = runner.plan(_run_config(args), registry)
    if args.dry_run:
        print(runner.describe_plan(planned))
        print("\n".join(runner.describe_stored_work(planned)))
        return 0
    world = distributed.launched_world()  # under torchrun / accelerate launch: one of N data-parallel processes
    if world is not None and args.keep_going:  # ranks that went on past different failures would wait on each other
        raise HarnessError("--keep-going runs in one process; drop it under torchrun / accelerate launch")
    store = None
    try:
        if world is not None:
            done = distributed.run_data_parallel(planned, world)
            if done is None:
                return 0  # a rank other than 0: its images are made, rank 0 reports
            finished, active = done
            store = active.store
        else:
            store = Store(planned.config.out)  # an unwritable --out fails here, before any output
            print(runner.describe_plan(planned), file=sys.stderr)
            active = runner.Runner(planned, store=store)  # the plan shows before a first run loads the pipeline for its fingerprint
            finished = active.execute()
        summary = registry.host.hook.summarize_run(store=store, run_id=finished)  # the reports plugin prints the leaderboard
        print(summary if summary is not None else _plain_summary(store.results(runs=[finished])))
        print(f"\nstored in {store.root / 'harness.db'} (run {finished}); `harness report --out {store.root}` prints it again", file=sys.stderr)
        return 0
    finally:
        if store is not None:  # also after an error or Ctrl-C: every transaction has ended by now
            store.close()  # checkpoints the write-ahead log: harness.db alone then holds the results


def _results_so_far(out: str | None) -> str:
    """After an interrupted run: a hint to report what has finished, if the store holds any result to report."""
    from harness.store import Store

    if out is None:
        return ""
    try:
        with Store(out, create=False) as store:
            if store.has_results():
                return f"; `harness report --out {shlex.quote(str(out))}` shows the results so far"
    except Exception:  # no store yet, or one that cannot be read now: no hint rather than a second error
        pass
    return ""


def _kind(text: str) -> str:
    """``harness list KIND``: a kind of plugin, with a did-you-mean for a typo (``methdos``) as every other name has."""
    if text in KINDS:
        return text
    from harness.api import did_you_mean

    raise argparse.ArgumentTypeError(f"no kind {text!r} of plugin{did_you_mean(text, KINDS)}")


def _plain_summary(results) -> str:
    """What `harness run` prints when no plugin summarises runs: one line per stored value."""
    return "\n".join(f"{r.method}  {r.benchmark}  {r.name} ({r.metric}) = {r.value}" for r in results)


def cmd_erase(args, registry: Registry) -> int:
    """Erase once and export the edited pipeline as a diffusers folder."""
    from harness import runner
    from harness.engine import ModelStates, pipeline_fingerprint
    from harness.store import Store

    planned, target = runner.plan_erase(registry, method=args.method, sets=args.set, model=args.model, device=args.device, dtype=args.dtype)
    concepts = registry.concept_set(args.concepts)
    for part, part_label in planned.parts:
        runner.check_erases_something(part, part_label, concepts)
        part.check_concepts(concepts)
    save = Path(args.save).expanduser().resolve()  # the folder checked here is the one written below ("~", ".")
    if save.exists() and (not save.is_dir() or any(save.iterdir())):
        raise HarnessError(f"--save {args.save} exists and is not empty; choose a new folder")
    runner.matmul_precision(target.device, target.dtype)
    pipe = target.backbone.load(target.model, target.device, target.dtype)
    with Store(args.out) as store:  # the edit is cached in the store; the export below needs no database
        fingerprint = pipeline_fingerprint(pipe)
        states = ModelStates(pipe, store, fingerprint, target)
        state = states.activate(planned.parts, concepts, planned.label)
    record = {"method": args.method, "concepts": concepts.name, "backbone": target.backbone_name, "model": target.model,
              "model_state": state.key, "backbone_fingerprint": fingerprint, "metadata": state.metadata}
    _save_whole(pipe, record, save, args.save)
    print(f"saved the {args.method}-erased pipeline to {args.save} (load it with StableDiffusionPipeline.from_pretrained)")
    return 0


def _save_whole(pipe, record: dict, target: Path, folder: str) -> None:
    """Write the pipeline and its ``erasure.json`` into a hidden staging folder and move it into ``target`` (``folder``
    as the user wrote it), so that ``--save`` names a whole pipeline or nothing: a full disk or Ctrl-C half-way
    removes the partial folder (which would otherwise load as a broken pipeline, and block the re-run as "not
    empty").  A new target is the staging folder renamed; an existing empty one (``.``, a mounted volume, a folder
    made in a shared root) stays where it is and receives the staged entries, the staging folder being inside it."""
    import shutil

    existing = target.is_dir()
    staging = target / f".partial-{os.getpid()}" if existing else target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _save_quietly(pipe, str(staging))
        with open(staging / "erasure.json", "w", encoding="utf-8") as handle:
            # backbone_fingerprint lets `--methods checkpoint:path=DIR` refuse this folder on another base model.
            json.dump(record, handle, indent=2, default=str)
        if existing:
            for entry in sorted(staging.iterdir()):
                os.replace(entry, target / entry.name)
            staging.rmdir()
        else:
            os.replace(staging, target)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        reason = integrity.os_error_inside(err) if isinstance(err, Exception) else None  # safetensors' own error type too
        if reason:
            raise HarnessError(f"--save {folder}: {reason[:1].lower() + reason[1:]} while writing the pipeline; free some disk "
                               "space or choose another folder, and run the same command again (the erasure is cached; "
                               "nothing was left under --save)") from None
        raise


def _save_quietly(pipe, folder: str) -> None:
    """``save_pretrained`` without transformers' "Writing model shards" bar (the text encoder's, a transformers
    model) for a file write that takes seconds; the line printed after it says where the pipeline went."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        pipe.save_pretrained(folder, safe_serialization=True)
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def cmd_check(args, registry: Registry) -> int:
    from harness.store import Store

    # --repair writes (closing checkpoints its log into harness.db); a plain check only reads, a read-only copy too
    with Store(args.out, create=False, read_only=not args.repair) as store:
        return _check(args, registry, store)


def _check(args, registry, store) -> int:
    from harness import check

    found = check.check(store)
    if args.json:
        print(json.dumps({"checked": found.checked, "findings": [f.__dict__ for f in found.findings], "runs_affected": found.runs_affected}, indent=2))
    else:
        print("\n".join(check.render(found)))
    if not args.repair:
        if found.failing:
            print(found.hint(store.root), file=sys.stderr)
        return 1 if found.failing else 0
    problems = check.repair(store, found, registry, show_progress=not args.no_progress)
    for line in problems:
        print(f"harness: warning: {line}", file=sys.stderr)
    after = check.check(store)
    left = after.failing + after.count("orphaned")
    print(f"repaired: {len(found.findings) - left} of {len(found.findings)} findings fixed" + (f"; {left} left" if left else ""), file=sys.stderr)
    return 1 if left or problems else 0


# --------------------------------------------------------------------------- parser


def build_parser(registry: Registry) -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = failures.OneLineParser(prog="harness", description=MAIN_HELP, formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"erasure-harness {__version__}")
    parser.add_argument("--plugin", metavar="PATH", help="load a one-file plugin (repeatable; may appear anywhere)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="erase, generate, score and store", description=RUN_HELP, formatter_class=formatter)
    p.add_argument("--methods", default="sd", action=failures.Once, help="comma list of methods (default: sd, no erasure)")
    p.add_argument("--bench", default="", action=failures.Once, help="comma list of benchmarks or groups (required)")
    p.add_argument("--model", help="backbone name (tiny, toy, sd14), hub id or local diffusers folder (default: what the benchmarks expect)")
    p.add_argument("--set", action="append", default=[], metavar="NAME.PARAM=VALUE", help="set a parameter of a method, benchmark or attack of this run (repeatable)")
    p.add_argument("--concepts", help="concept set name or JSON file, instead of each benchmark's own")
    p.add_argument("--limit", type=int, help="only the first N prompts of each benchmark (and of each attack's source prompts)")
    p.add_argument("--attack", metavar="A[,B]", action=failures.Once, help="red-team every method: attack cells A(bench) from prompts found against it (see `harness list attacks`)")
    p.add_argument("--attack-budget", type=int, metavar="N", help="at most N iterations per prompt for every attack (default: each attack's own)")
    p.add_argument("--seeds-per-prompt", type=int, default=1, metavar="K",
                   help="K images per prompt, seeds derived from the benchmark's (default 1); intervals then resample prompts")
    p.add_argument("--batch-size", type=int, help="images per UNet batch (default: the backbone's; 8 for SD, 32 for the toy)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", help="float32 (default; TF32 matmuls on CUDA), float16 or bfloat16 (faster; fine-tuned updates may round away, recorded per model state)")
    p.add_argument("--out", default="harness-out", help="results store and cache directory (default: harness-out)")
    p.add_argument("--run-name", help="name of the run (default: derived from the configuration, so a re-run resumes it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--keep-going", action="store_true",
                   help="a method that fails (a bug, out of memory) is reported and the run goes on with the next; the run "
                        "then ends with an error naming them, stays unfinished, and the same command retries only those")
    p.add_argument("--dry-run", action="store_true", help="resolve and print the plan and how much of it the store already holds (images, erasures; no weights are loaded), then stop")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("check", help="check every stored file against its size and sha256; --repair regenerates", formatter_class=formatter,
                       description=textwrap.dedent("""\
                           Check every file the store references (images, model deltas, method caches) against the
                           size and sha256 recorded when it was written, and list orphaned files under cache/.
                           Exit status 1 if anything is damaged.  --repair removes damaged and orphaned files,
                           records sound images a killed run left unrecorded, and re-runs every stored run that used
                           a damaged file, which regenerates exactly those; what no stored run makes again (a state
                           record, an unused image or delta, a method cache) is rewritten or left for the next run
                           that needs it.  It refuses while a run is working in the store.

                           example:
                             harness check --out harness-out --repair
                           """))
    p.add_argument("--out", default="harness-out", help="the store to check (default: harness-out)")
    p.add_argument("--repair", action="store_true", help="remove what is damaged or orphaned and regenerate it")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars while regenerating")
    p.set_defaults(handler=cmd_check)

    p = sub.add_parser("list", help="installed methods, benchmarks, scorers, backbones, concept sets",
                       description="List what the installed plugins provide (imports no torch).")
    p.add_argument("kind", nargs="?", type=_kind, metavar="KIND", help=f"only this kind: {', '.join(KINDS)}")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.add_argument("--presets", action="store_true", help="the methods' named presets and the backbones' presets (imports the method modules)")
    p.add_argument("--params", metavar="NAME", help="one method's, benchmark's, attack's, scorer's or backbone's parameters: "
                   "default, type, bounds and what each does (e.g. harness list --params esd-x)")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("plugins", help="loaded plugins with version, source and hooks", description="List loaded plugins.")
    p.add_argument("--json", action="store_true", help="print the plugins as JSON")
    p.set_defaults(handler=cmd_plugins)

    p = sub.add_parser("erase", help="erase once and export a diffusers checkpoint", formatter_class=formatter,
                       description=textwrap.dedent("""\
                           Apply one method (or composition) and save the edited pipeline as a diffusers folder
                           that StableDiffusionPipeline.from_pretrained loads.

                           example:
                             harness erase --model tiny --method uce --concepts sexual --save erased-uce
                           """))
    p.add_argument("--model", default="sd14", help="backbone name, hub id or local diffusers folder (default: sd14)")
    p.add_argument("--method", required=True, help="method or composition, with parameters (e.g. trce or uce:lamb=0.1)")
    p.add_argument("--concepts", required=True, help="concept set name or JSON file")
    p.add_argument("--save", required=True, help="output folder (must be new or empty)")
    p.add_argument("--set", action="append", default=[], metavar="NAME.PARAM=VALUE",
                   help="set a parameter of the method or of a part of it (repeatable), as in harness run")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", help="default float32 (the exported weights keep this dtype)")
    p.add_argument("--out", default="harness-out", help="store whose cache keeps the edit (default: harness-out)")
    p.set_defaults(handler=cmd_erase)

    add_merge_command(sub)
    registry.host.hook.register_commands(subparsers=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.showwarning = _show_warning
    # transformers chatters about optional backends (torchvision) on import; its errors still show.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    as_json = "--json" in argv  # machine output stays machine-readable even when the command fails
    previous_sigterm = failures.handle_sigterm()
    run_out = None  # the store of a run, for the hint after an interrupt
    try:
        plugin_files, argv = _extract_plugin_files(argv)
        registry = Registry(PluginHost(plugin_files))
        parser = build_parser(registry)
        args = parser.parse_args(argv)
        if args.command == "run" and not args.dry_run:
            run_out = args.out
        if not getattr(args, "handler", None):
            # `harness`, `harness toy`: no command chosen is a usage error (exit 2, as `harness data`); the help of
            # the command typed so far says what to choose.
            prog = getattr(args, "_command_prog", parser.prog)
            chosen = next((p for p in failures.all_parsers(parser) if p.prog == prog), parser)
            chosen.print_help(sys.stderr)
            return failures.USAGE_EXIT
        return args.handler(args, registry) or 0
    except KeyboardInterrupt as err:
        unsaved = getattr(err, "unsaved_images", 0)  # set by the engine when a batch was being sampled
        lost = f" except the batch in progress ({unsaved} image{'s' * (unsaved != 1)}, made again)" if unsaved else ""
        what, code = ("terminated", 143) if isinstance(err, failures.Terminated) else ("interrupted", 130)  # 128 + the signal
        print(f"harness: {what}; finished work is stored{lost}, run the same command again to resume{_results_so_far(run_out)}", file=sys.stderr)
        return code
    except BrokenPipeError:
        return failures.closed_pipe()
    except Exception as err:
        message = failures.user_error(err)
        if message is None:
            raise  # a bug: keep the traceback
        return failures.fail(message, as_json=as_json)
    finally:
        if previous_sigterm is not None:  # main() called from Python (tests, a notebook): leave its handler as it was
            import signal

            signal.signal(signal.SIGTERM, previous_sigterm)


if __name__ == "__main__":
    sys.exit(main())
