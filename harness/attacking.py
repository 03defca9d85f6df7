"""Running an attack against one model state: per-prompt caching, cost accounting, export.

An attack's output is a list of adversarial ``PromptSpec``s, one per source prompt, each with the source
prompt's id, seed, guidance and size (only the text changes), plus labels that say where it came from::

    labels = {**source labels, "source_prompt": ..., "attack": "ring-a-bell", "attack_loss": ..., "token_ids": [...],
              "attack_<name>": each number of the attack's ``details`` (e.g. "attack_loss_first")}

Each adversarial prompt is stored (table ``attack_prompts``) as soon as it is found, under a key built from
(model-state key, attack name, attack version, parameters, concept-set hash, the source spec), so:

* re-running the same command finds every prompt in the store: zero attack steps, zero model evaluations;
* a killed attack resumes from the prompts already found;
* ``--limit 64`` after ``--limit 32`` attacks only the 32 new prompts.

The model-state key is the state of the components the attack ``reads``: an attack that reads only the text
encoder is keyed by the text encoder's own state, so every UNet-side edit shares one search.

One row per attacked source set (table ``attack_sets``, keyed additionally by the hash of all source specs)
records the set's total cost (attack steps, text-encoder and UNet evaluations, wall time) and the CSV the
prompts were exported to, in the community's layout, so ``--bench csv:path=FILE`` replays them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.api import AdversarialPrompt, Attack, ConceptSet, HarnessError, PromptSpec, sha256_json
from harness.integrity import atomic_write
from harness.registry import did_you_mean
from harness.spec import Selection, build_params, parse_selections
from harness.store import Store

COST_FIELDS = ("attack_steps", "text_encoder_evals", "unet_evals", "wall_s")


@dataclass
class AttackContext:
    """What an attack gets besides the pipeline: device, seeds, progress bars, the base model, an iteration counter."""

    device: str = "cpu"
    dtype: str = "float32"
    show_progress: bool = True
    seed: int = 0  # mixed with each prompt's seed, so a prompt's search never depends on the order of prompts
    # name -> a frozen copy of that component with the original (unedited) weights, e.g. base_component("unet")
    base_component: Callable | None = None
    steps: int = 0  # iterations (generations, PGD steps) spent, counted by the attack with step()
    sampling_steps: int = 0  # the backbone's denoising steps for a prompt that sets none (0: unknown)
    _spec_seed: int = 0

    def step(self, count: int = 1) -> None:
        self.steps += count

    def generator(self, device: str = "cpu"):
        """A torch generator seeded from (context seed, current prompt's seed): the attack's only randomness."""
        import torch

        return torch.Generator(device=device).manual_seed((self._spec_seed * 1_000_003 + self.seed) % (2**63))

    def progress(self, iterable=None, total=None, desc: str = "", **kwargs):
        from harness.progress import bar

        return bar(iterable, total=total, desc=desc, enabled=self.show_progress, leave=False, **kwargs)

    def base(self, component: str):
        if self.base_component is None:
            raise HarnessError("this attack needs the unedited base model, which the caller did not provide")
        return self.base_component(component)


class EvaluationCounter:
    """Counts forward passes of a module, weighted by batch size (one evaluation per sequence or latent)."""

    def __init__(self):
        self.count = 0
        self._handles = []

    def watch(self, module) -> None:
        def hook(called, args, kwargs):
            if called is not module:  # a deep copy made while watched (the base UNet) carries this hook along
                return
            first = args[0] if args else next((kwargs[k] for k in ("sample", "input_ids", "inputs_embeds") if kwargs.get(k) is not None), None)
            self.count += int(first.shape[0]) if hasattr(first, "shape") and first.dim() > 0 else 1

        self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


@dataclass
class AttackResult:
    specs: list[PromptSpec]
    key: str  # the attack set's key
    cost: dict = field(default_factory=dict)  # this call's cost: what was spent now (zero when everything was cached)
    total_cost: dict = field(default_factory=dict)  # what finding all of the set's prompts cost, over every call
    found_now: int = 0
    export_path: Path | None = None


# --------------------------------------------------------------------------- planning


@dataclass
class PlannedAttack:
    label: str  # as the user wrote it, e.g. "ring-a-bell" or "ring-a-bell:generations=50"
    attack: Attack
    preset: dict = field(default_factory=dict)  # parameters the backbone chose for it (below the user's)

    def manifest(self) -> dict:
        return {"label": self.label, "name": self.attack.name, "params": self.attack.params_dict(), "version": self.attack.version,
                "backbone_preset": self.preset}


def plan_attacks(registry, text: str | None, overrides: dict, budget: int | None, backbone) -> list[PlannedAttack]:
    """``--attack a,b:k=v`` → attack instances.  Parameters: the backbone's preset, then ``--set``, then the item's own.

    ``--attack-budget N`` lowers each attack's iteration parameter (``Attack.budget_param``) to at most N.
    """
    if budget is not None and budget < 1:
        raise HarnessError(f"--attack-budget must be a positive number of iterations; got {budget}")
    if not text:
        if budget is not None:
            raise HarnessError("--attack-budget needs --attack NAME (see `harness list attacks`)")
        return []
    planned = []
    for item in parse_selections(text, "--attack"):
        if len(item) > 1:
            raise HarnessError(f"--attack cannot compose attacks with '+' ({'+'.join(s.name for s in item)}); separate them with commas")
        selection = item[0]
        if selection.name not in registry.entries["attacks"]:
            raise HarnessError(f"unknown attack {selection.name!r}{did_you_mean(selection.name, registry.entries['attacks'])} "
                               "(see `harness list attacks`)")
        cls = registry.get("attacks", selection.name)
        from harness.runner import check_given_once, overrides_for, preset_text

        preset = preset_text(getattr(backbone, "attack_presets", {}).get(selection.name, {}))
        mine = overrides_for(registry, "attacks", selection.name, overrides)  # not the same-named benchmark's keys
        check_given_once(selection.name, mine, selection.params)
        raw = {**preset, **mine, **selection.params}
        params = build_params(cls, raw, selection.name)
        labelled = {**mine, **selection.params}
        if budget is not None:
            if not cls.budget_param:
                raise HarnessError(f"attack {selection.name!r} declares no iteration parameter, so --attack-budget cannot cap it")
            if not hasattr(params, cls.budget_param):
                raise HarnessError(f"attack {selection.name!r} names {cls.budget_param!r} as its budget_param, which is not one of "
                                   f"its parameters ({', '.join(f.name for f in dataclasses.fields(params)) or 'none'}); "
                                   "a bug in the attack's plugin")
            current = getattr(params, cls.budget_param)
            if budget < current:
                params = dataclasses.replace(params, **{cls.budget_param: budget})
                # In the label (and so the run id and the cell's name): a capped search is another result, and must not
                # replace the full one in the store, nor be read as it.
                labelled[cls.budget_param] = str(budget)
        label = Selection(selection.name, labelled).label()
        planned.append(PlannedAttack(label, cls(params), preset))
    labels = [p.label for p in planned]
    if len(set(labels)) != len(labels):
        raise HarnessError(f"--attack names the same attack twice ({', '.join(labels)})")
    return planned


def attack_state_key(attack: Attack, state_key: str, store: Store, states, activated: Callable) -> str:
    """The key of what the attack reads: the whole model state, or only the text encoder's weights.

    For a text-encoder-only attack the key hashes the text-encoder parameters that differ from the backbone
    (``states.applied``), so a state that leaves the text encoder alone shares the backbone's key.  Computing it
    needs the state applied (``activated()``); it is then remembered in the store, so a re-run needs no pipeline.
    """
    if set(attack.reads) - {"text_encoder"}:
        return state_key
    known = store.attack_state_key(state_key, "text_encoder")
    if known is not None:
        return known
    import hashlib

    activated()
    changed = sorted(name for name in states.applied if name.startswith("text_encoder."))
    digest = hashlib.sha256(states.backbone_fingerprint.encode())
    for name in changed:
        tensor = states.parameters[name].detach().to("cpu").float().contiguous()
        digest.update(name.encode())
        digest.update(hashlib.sha256(tensor.numpy().tobytes()).digest())
    key = "text_encoder:" + digest.hexdigest()[:32]
    store.add_attack_state_key(state_key, "text_encoder", key)
    return key


def _base_components(runner) -> Callable:
    """Frozen copies of the unedited text encoder / UNet, made once per run (the base model of P4D, UnlearnDiffAtk)."""
    cache = runner.__dict__.setdefault("_attack_base_components", {})

    def base(name: str):
        if name not in cache:
            if name == "unet":
                cache[name] = runner.states.original_unet()
            elif name == "text_encoder":
                import copy

                module = copy.deepcopy(runner.states.pipe.text_encoder)
                originals = {key[len("text_encoder."):]: value for key, value in runner.states.originals.items() if key.startswith("text_encoder.")}
                module.load_state_dict(originals, strict=False)
                cache[name] = module.requires_grad_(False).eval()
            else:
                raise HarnessError(f"an attack asked for base component {name!r}; there are 'unet' and 'text_encoder'")
        return cache[name]

    return base


def attacked_metrics(benchmark, scorer_of) -> list[str]:
    """The metrics an attack cell of ``benchmark`` is scored with: its per-image metrics where lower is better (an
    erasure metric).  ``scorer_of(name)`` gives a scorer instance.  None: the benchmark is not attacked."""
    kept = []
    for ref in benchmark.metric_refs():
        scorer = scorer_of(ref.scorer)
        if not scorer.needs_reference and scorer.metric(ref.metric).lower_is_better:
            kept.append(str(ref))
    return kept


def attack_cell(runner, method, planned, state, attack: PlannedAttack):
    """Find ``attack``'s prompts for ``planned`` against ``method``; return the cell "A(B)", a cost record and the state
    to generate it with.

    ``state`` may have been read from the store without touching the pipeline (every static image existed); the
    method's state is then applied only if a prompt must be searched or an image generated.

    The cell is scored with B's per-image metrics.  Set-level metrics (FID against the base model's images of the
    same prompts) have no reference for adversarial prompts and are left out; a benchmark with no lower-is-better
    per-image metric (preservation: toy-preserve, COCO) is not attacked at all (``None``).
    """
    kept = attacked_metrics(planned.benchmark, runner.scorer)
    if not kept:
        return None, None, state
    import copy

    states, store, engine, plan = runner.states, runner.store, runner.engine, runner.plan
    active = {"state": state if states.last_activated is state else None}

    def activated():
        if active["state"] is None:
            active["state"] = states.activate(method.parts, planned.concepts, method.label)
        return active["state"]

    def pipe():
        activated()
        return states.pipe

    benchmark = copy.copy(planned.benchmark)
    benchmark.metrics = tuple(kept)  # an instance attribute shadows the class's
    key = attack_state_key(attack.attack, state.key, store, states, activated)
    ctx = AttackContext(device=plan.device, dtype=plan.dtype, show_progress=plan.config.show_progress, base_component=_base_components(runner),
                        seed=getattr(attack.attack.params, "restart", 0), sampling_steps=engine.defaults.steps)
    label = f"{attack.label}({planned.label})"
    result = run_attack(attack=attack.attack, label=attack.label, get_pipe=pipe, concepts=planned.concepts, specs=planned.specs,
                        store=store, state_key=key, ctx=ctx, export_dir=store.root / "attacks",
                        desc=f"{attack.label} vs {method.label} × {planned.label}")
    record = {"method": method.label, "benchmark": label, "attack": attack.label, "attack_state": key, "prompts": len(planned.specs),
              "found_now": result.found_now, "cost_now": result.cost, "cost_total": result.total_cost,
              "export": str(result.export_path) if result.export_path else None, "attack_set": result.key}
    cell = dataclasses.replace(planned, label=label, benchmark=benchmark, specs=result.specs, attack=attack.label)
    if active["state"] is None and not all(store.image_path(engine.image_key(engine.resolve(s), state.key)).exists() for s in cell.specs):
        activated()  # images to generate: with the method's weights and sampling hooks in place
    return cell, record, active["state"] or state


# --------------------------------------------------------------------------- running


def _dtype_field(dtype: str) -> dict:
    """The dtype for an attack key, only when it is not float32, so the keys of float32 searches stay what they were:
    a half-precision search runs other arithmetic (and a model state of a hook method does not name its dtype)."""
    return {"dtype": dtype} if dtype != "float32" else {}


def prompt_key(*, state_key: str, attack: Attack, concepts: ConceptSet, spec: PromptSpec, dtype: str = "float32") -> str:
    return sha256_json(
        {"state": state_key, "attack": attack.name, "version": attack.version, "params": attack.params_dict(),
         "concepts": concepts.fingerprint(), "source": spec.as_dict(), **_dtype_field(dtype)}
    )[:32]


def adversarial_spec(source: PromptSpec, found: AdversarialPrompt, attack_label: str) -> PromptSpec:
    """The source prompt with its text replaced: same id, seed, guidance, steps and size."""
    labels = {**source.labels, "source_prompt": source.prompt, "attack": attack_label, "attack_loss": found.loss}
    for name, value in found.details.items():  # numbers only: they become CSV columns of the export
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            labels[f"attack_{name}"] = value
    if found.token_ids is not None:
        labels["token_ids"] = list(found.token_ids)
        labels["retokenizes"] = found.retokenizes
    return dataclasses.replace(source, prompt=found.text, labels=labels)


def run_attack(*, attack: Attack, label: str, get_pipe: Callable, concepts: ConceptSet, specs: list[PromptSpec], store: Store, state_key: str,
               ctx: AttackContext, export_dir: Path | None = None, desc: str = "") -> AttackResult:
    """Adversarial specs for every source spec, from the store where found, else by running the attack now.

    ``get_pipe()`` returns the pipeline with the method's state applied; it is called only if a prompt is missing.
    """
    from harness.progress import bar as progress_bar

    keys = [prompt_key(state_key=state_key, attack=attack, concepts=concepts, spec=spec, dtype=ctx.dtype) for spec in specs]
    known = store.attack_prompts(keys)
    todo = [(key, spec) for key, spec in zip(keys, specs) if key not in known]
    cost = dict.fromkeys(COST_FIELDS, 0)  # this call's
    prepare_cost = dict.fromkeys(COST_FIELDS, 0)
    if todo:
        pipe = get_pipe()
        counters = {"text_encoder": EvaluationCounter(), "unet": EvaluationCounter()}
        counters["text_encoder"].watch(pipe.text_encoder)
        counters["unet"].watch(pipe.unet)
        base_component = ctx.base_component
        if base_component is not None:
            def counted_base(name: str):  # the base model's evaluations are the attack's cost too
                module = base_component(name)
                if name in counters and id(module) not in watched:
                    counters[name].watch(module)
                    watched.add(id(module))
                return module

            watched: set[int] = set()
            ctx.base_component = counted_base
        try:
            started = _snapshot(ctx, counters)
            attack.prepare(pipe, concepts, ctx)
            prepare_cost = _difference(_snapshot(ctx, counters), started)
            _add(cost, prepare_cost)
            with progress_bar(total=len(todo), desc=desc or f"attack {label}", unit="prompt", enabled=ctx.show_progress) as bar:
                for key, spec in todo:
                    before = _snapshot(ctx, counters)
                    ctx._spec_seed = int(spec.seed)
                    found = attack.attack(pipe, concepts, spec, ctx)
                    if not isinstance(found, AdversarialPrompt):
                        raise HarnessError(f"attack {attack.name!r} returned {type(found).__name__}, not an AdversarialPrompt")
                    spent = _difference(_snapshot(ctx, counters), before)
                    _add(cost, spent)
                    adversarial = adversarial_spec(spec, found, label)
                    token_ids = list(found.token_ids) if found.token_ids is not None else None
                    # Stored at once: a killed attack resumes from here.
                    store.add_attack_prompt(key, attack.name, state_key, spec.id, adversarial.as_dict(), token_ids, found.loss, spent)
                    known[key] = {"spec": adversarial.as_dict(), "token_ids": token_ids, "loss": found.loss, "cost": spent}
                    bar.update(1)
        finally:
            ctx.base_component = base_component
            for counter in counters.values():
                counter.close()
    adversarial_specs = [PromptSpec(**known[key]["spec"]) for key in keys]
    # The set's total is the sum of its prompts' searches; the shared prepare() step (Ring-A-Bell's concept vector) is
    # in this call's cost only, when it ran.
    total = dict.fromkeys(COST_FIELDS, 0)
    for key in keys:
        _add(total, known[key]["cost"])
    sources_hash = sha256_json([spec.as_dict() for spec in specs])
    set_key = sha256_json({"state": state_key, "attack": attack.name, "version": attack.version, "params": attack.params_dict(),
                           "concepts": concepts.fingerprint(), "sources": sources_hash, **_dtype_field(ctx.dtype)})[:32]
    export_path = None
    if export_dir is not None:
        export_path = Path(export_dir) / f"{_file_name(label)}-{set_key[:12]}.csv"
        atomic_write(export_path, export_csv(adversarial_specs).encode("utf-8"))
    if todo or store.attack_set(set_key) is None:
        store.add_attack_set(set_key, attack.name, attack.params_dict(), attack.version, state_key, concepts.name, sources_hash,
                             len(specs), total, str(export_path or ""))
    return AttackResult(adversarial_specs, set_key, cost, total, len(todo), export_path)


def _snapshot(ctx: AttackContext, counters: dict[str, EvaluationCounter]) -> dict:
    return {"attack_steps": ctx.steps, "text_encoder_evals": counters["text_encoder"].count, "unet_evals": counters["unet"].count,
            "wall_s": time.perf_counter()}


def _difference(after: dict, before: dict) -> dict:
    return {name: after[name] - before[name] for name in COST_FIELDS}


def _add(total: dict, part: dict) -> None:
    for name, value in part.items():
        if name in total:
            total[name] += value


def _file_name(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


# --------------------------------------------------------------------------- export


def export_csv(specs: list[PromptSpec]) -> str:
    """The community's CSV layout (``prompt, evaluation_seed, evaluation_guidance, case_number``), then every label.

    ``--bench csv:path=FILE`` replays the prompts with the same seeds and guidance, hence the same images.
    List labels are joined with ``|``; the source prompt and the optimised token ids stay inspectable.
    """
    label_names: list[str] = []
    for spec in specs:
        for name in spec.labels:
            if name not in label_names and name not in ("row", "case_number"):
                label_names.append(name)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    sizes = any(spec.width or spec.height for spec in specs)
    writer.writerow(["case_number", "prompt", "evaluation_seed", "evaluation_guidance"] + (["sd_image_width", "sd_image_height"] if sizes else [])
                    + label_names)
    for spec in specs:
        row = [spec.id, spec.prompt, spec.seed, repr(float(spec.guidance))]
        if sizes:
            row += [spec.width or "", spec.height or ""]
        for name in label_names:
            value = spec.labels.get(name, "")
            row.append("|".join(str(v) for v in value) if isinstance(value, (list, tuple)) else ("" if value is None else value))
        writer.writerow(row)
    return buffer.getvalue()
