"""Running an attack against one model state: per-prompt caching, cost accounting, export.

An attack's output is a list of adversarial ``PromptSpec``s, one per source prompt, each with the source
prompt's id, seed, guidance and size (only the text changes), plus labels that say where it came from::

    labels = {**source labels, "source_prompt": ..., "attack": "ring-a-bell", "attack_loss": ..., "token_ids": [...],
              "attack_<name>": each number of the attack's ``details`` (e.g. "attack_loss_first")}

Each adversarial prompt is stored (table ``attack_prompts``) as soon as it is found, under a key built from
(model-state key, attack name, attack version, parameters, concept-set hash, what the search reads of the source
spec: ``SEARCH_FIELDS``, not its id or labels), so:

* re-running the same command finds every prompt in the store: zero attack steps, zero model evaluations;
* a killed attack resumes from the prompts already found;
* ``--limit 64`` after ``--limit 32`` attacks only the 32 new prompts;
* ``--seeds-per-prompt 2`` after ``--seeds-per-prompt 1`` searches only the new seeds (seed 0's spec gains a label).

Attacks never see sampling-time erasure (SLD, SAFREE, AdaVD, SPM): see ``blind_spot_notes``.

The model-state key is the state of the components the attack ``reads``: an attack that reads only the text
encoder is keyed by the text encoder's own state, so every UNet-side edit shares one search.

One row per attacked source set (table ``attack_sets``, keyed additionally by the hash of its prompts' keys)
records the set's total cost (attack steps, text-encoder and UNet evaluations, wall time) and the CSV the
prompts were exported to, in the community's layout, so ``--bench csv:path=FILE`` replays them (``export_csv``).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.api import AdversarialPrompt, Attack, ConceptSet, HarnessError, PromptSpec, sha256_json
from harness.failures import naming_the_plugin
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


def plan_attacks(registry, text: str | None, overrides: dict, budget: int | None, backbone, model: str | None = None) -> list[PlannedAttack]:
    """``--attack a,b:k=v`` → attack instances.  Parameters: the backbone's preset, then ``--set``, then the item's own.

    ``--attack-budget N`` holds each attack to at most N iterations (``ctx.step()`` calls) per prompt: by default it
    lowers the attack's iteration parameter (``Attack.budget_param``) to N; an attack whose iterations per prompt
    are not that parameter alone (UnlearnDiffAtk's grid: iterations × grid points) says which parameters to lower
    with a ``within_budget(params, N) -> {name: value}`` static method.

    ``model`` is the backbone's model (``--model``), where the tokenizer's length is read from: an attack with a
    ``check_token_positions(positions)`` method (Ring-A-Bell's K tokens) is checked against it now, before any image.
    """
    if budget is not None and budget < 1:
        raise HarnessError(f"--attack-budget must be a positive number of iterations; got {budget}")
    if not text:
        if budget is not None:
            raise HarnessError("--attack-budget needs --attack NAME (see `harness list attacks`)")
        return []
    planned = []
    positions = None
    for item in parse_selections(text, "--attack"):
        if len(item) > 1:
            raise HarnessError(f"--attack cannot compose attacks with '+' ({'+'.join(s.name for s in item)}); separate them with commas")
        selection = item[0]
        if selection.name not in registry.entries["attacks"]:
            raise HarnessError(f"unknown attack {selection.name!r}{did_you_mean(selection.name, registry.entries['attacks'])} "
                               "(see `harness list attacks`)")
        cls = registry.get("attacks", selection.name)
        reads = set(getattr(cls, "reads", ()))
        if not reads or not reads <= READABLE_COMPONENTS:  # () was cached as text-encoder-only without a word
            raise HarnessError(f"attack {selection.name!r} declares reads={tuple(cls.reads)!r}; it must name the components "
                               f"its search depends on, from {', '.join(sorted(READABLE_COMPONENTS))} (a bug in the attack's plugin)")
        from harness.runner import check_given_once, overrides_for, preset_text

        preset = preset_text(getattr(backbone, "attack_presets", {}).get(selection.name, {}))
        mine = overrides_for(registry, "attacks", selection.name, overrides)  # not the same-named benchmark's keys
        check_given_once(cls, selection.name, mine, selection.params)
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
            changes = budget_changes(cls, params, budget)
            if changes:
                params = dataclasses.replace(params, **changes)
                # In the label (and so the run id and the cell's name): a capped search is another result, and must not
                # replace the full one in the store, nor be read as it.
                labelled.update({name: str(value) for name, value in changes.items()})
        label = Selection(selection.name, labelled).label()
        attack = cls(params)
        if hasattr(attack, "check_token_positions"):
            if positions is None:
                positions = tokenizer_positions(backbone, model) or 0
            if positions:  # 0: not readable without loading the model; the attack's prepare() checks it then
                attack.check_token_positions(positions)
        planned.append(PlannedAttack(label, attack, preset))
    labels = [p.label for p in planned]
    if len(set(labels)) != len(labels):
        raise HarnessError(f"--attack names the same attack twice ({', '.join(labels)})")
    return planned


def budget_changes(cls, params, budget: int) -> dict:
    """The parameter values that hold one prompt's search to at most ``budget`` iterations ({} if it already is)."""
    within_budget = getattr(cls, "within_budget", None)
    if within_budget is not None:
        return dict(within_budget(params, budget))
    return {cls.budget_param: budget} if budget < getattr(params, cls.budget_param) else {}


def check_token_room(attack: str, parameter: str, tokens: int, positions: int) -> None:
    """An attack's ``check_token_positions``: BOS, its ``tokens`` placed tokens and EOS must fit the tokenizer's
    ``positions`` (a longer run would push EOS out, silently); one line naming the parameter and its largest value."""
    if tokens > positions - 2:
        raise HarnessError(f"{attack}: {parameter} K={tokens} leaves no room for BOS and EOS in this tokenizer's {positions} "
                           f"positions; choose {attack}:{parameter} ≤ {positions - 2}")


def tokenizer_positions(backbone, model: str | None) -> int | None:
    """The backbone tokenizer's positions (``model_max_length``: 77 on SD) without loading the model; None if unknown.

    A diffusers folder (a local one, the toy world's, a hub snapshot already downloaded: the folder its
    ``identity`` names) has it in ``tokenizer/tokenizer_config.json``.  The tiny backbone is built in code, with
    ``harness.tiny.TINY_MAX_LENGTH`` positions.
    """
    from harness.backbones import TinyBackbone

    if isinstance(backbone, TinyBackbone):
        from harness.tiny import TINY_MAX_LENGTH

        return TINY_MAX_LENGTH
    try:
        identity = backbone.identity(model, "float32")
    except HarnessError:
        return None  # weights not here yet: the run would fail on them anyway, with its own message
    folder = (identity or {}).get("folder")
    if not folder:
        return None
    try:
        value = json.loads((Path(folder) / "tokenizer" / "tokenizer_config.json").read_text(encoding="utf-8"))["model_max_length"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # transformers writes a huge sentinel (1e30) for a tokenizer without a length: unknown, not a limit.
    return value if isinstance(value, int) and 0 < value < 1_000_000 else None


# What an attack's ``reads`` may name: the components whose weights its search can depend on (attack_state_key).
READABLE_COMPONENTS = {"text_encoder", "unet"}


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


def hook_parts(method) -> list[str]:
    """The labels of ``method``'s parts (a ``PlannedMethod``) that erase at sampling time (their class defines
    ``sampling_hooks``: SLD, SAFREE, AdaVD, SPM's membrane), which no attack sees (see ``blind_spot_notes``)."""
    from harness.api import Method

    return [label for part, label in method.parts if type(part).sampling_hooks is not Method.sampling_hooks]


def blind_spot_notes(methods, attacks) -> list[str]:
    """Plan lines for the attack cells whose method erases at sampling time.

    An attack searches against the pipeline's modules as the method's weights left them (``pipe.unet``,
    ``pipe.text_encoder``); a method's ``SamplingHooks`` are installed only when the cell's images are generated.
    Installing them around the attack's own UNet calls would not be the method either: they are written for the
    engine's sampling batches (SPM's per-sample strength and SAFREE's projection come from ``transform_embeddings`` on
    the batch's encoded prompts, AdaVD's official joint mode needs [uncond; cond] halves, SLD and SAFREE replace the
    guidance rule), while an attack's calls are single-branch, on relaxed token embeddings.  So the search is blind to
    that erasure, and its cell measures prompts found against the rest of the model.
    """
    if not attacks:
        return []
    blind = [f"{m.label} ({', '.join(parts)})" if parts != [m.label] else m.label for m in methods if (parts := hook_parts(m))]
    if not blind:
        return []
    return [f"  note: attacks search without sampling-time erasure: {', '.join(a.label for a in attacks)} cannot see that of "
            f"{', '.join(blind)}; those cells apply it only when generating the found prompts"]


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
              "export": str(result.export_path) if result.export_path else None, "attack_set": result.key,
              # the method's parts the search could not see (sampling-time erasure, see blind_spot_notes)
              "unseen_by_search": hook_parts(method)}
    cell = dataclasses.replace(planned, label=label, benchmark=benchmark, specs=result.specs, attack=attack.label)
    if active["state"] is None and not all(store.image_path(engine.image_key(engine.resolve(s), state.key)).exists() for s in cell.specs):
        activated()  # images to generate: with the method's weights and sampling hooks in place
    return cell, record, active["state"] or state


# --------------------------------------------------------------------------- running


def _dtype_field(dtype: str) -> dict:
    """The dtype for an attack key, only when it is not float32, so the keys of float32 searches stay what they were:
    a half-precision search runs other arithmetic (and a model state of a hook method does not name its dtype)."""
    return {"dtype": dtype} if dtype != "float32" else {}


# What a search reads of its source prompt: the text it rewrites, the seed of its generator (``ctx.generator()``) and,
# for the white-box attacks, the base model's target image (``prompt_tuning.base_target_latents``: seed, guidance,
# steps, size, negative prompt).  Not the id nor the labels: ``--seeds-per-prompt 2`` labels seed 0's spec
# ``seeds_of``, and a label must not make the search of the same prompt and seed run again.
SEARCH_FIELDS = ("prompt", "seed", "guidance", "steps", "height", "width", "negative_prompt")


def search_input(spec: PromptSpec) -> dict:
    return {name: getattr(spec, name) for name in SEARCH_FIELDS}


def prompt_key(*, state_key: str, attack: Attack, concepts: ConceptSet, spec: PromptSpec, dtype: str = "float32") -> str:
    return sha256_json(
        {"state": state_key, "attack": attack.name, "version": attack.version, "params": attack.params_dict(),
         "concepts": concepts.fingerprint(), "search": search_input(spec), **_dtype_field(dtype)}
    )[:32]


def attack_labels(source: PromptSpec, found: AdversarialPrompt, attack_label: str) -> dict:
    """The labels an attack adds to its source prompt's: where the prompt came from and what the search measured."""
    labels = {"source_prompt": source.prompt, "attack": attack_label, "attack_loss": found.loss}
    for name, value in found.details.items():  # numbers only: they become CSV columns of the export
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            labels[f"attack_{name}"] = value
    if found.token_ids is not None:
        labels["token_ids"] = list(found.token_ids)
        labels["retokenizes"] = found.retokenizes
    return labels


def adversarial_spec(source: PromptSpec, text: str, added_labels: dict) -> PromptSpec:
    """The source prompt with its text replaced: same id, seed, guidance, steps, size and labels, plus the attack's."""
    return dataclasses.replace(source, prompt=text, labels={**source.labels, **added_labels})


def from_store(source: PromptSpec, stored: dict, attack_label: str) -> PromptSpec:
    """The adversarial spec of ``source`` from a stored search, which may have been found for a spec with other labels
    or another id (the key holds only ``SEARCH_FIELDS``): the current source's id and labels, the stored text and the
    labels the attack added (its label as this run names it)."""
    added = {**stored["attack_labels"], "attack": attack_label}
    return adversarial_spec(source, stored["prompt"], added)


def run_attack(*, attack: Attack, label: str, get_pipe: Callable, concepts: ConceptSet, specs: list[PromptSpec], store: Store, state_key: str,
               ctx: AttackContext, export_dir: Path | None = None, desc: str = "") -> AttackResult:
    """Adversarial specs for every source spec, from the store where found, else by running the attack now.

    ``get_pipe()`` returns the pipeline with the method's state applied; it is called only if a prompt is missing.
    """
    from harness.progress import bar as progress_bar

    keys = [prompt_key(state_key=state_key, attack=attack, concepts=concepts, spec=spec, dtype=ctx.dtype) for spec in specs]
    known = store.attack_prompts(keys)
    # One search per key: two sources with the same search input (a prompt file that repeats a row) share it.
    todo = list({key: spec for key, spec in zip(keys, specs) if key not in known}.items())
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
            with naming_the_plugin(attack, "attack", attack.name, "prepare"):
                attack.prepare(pipe, concepts, ctx)
            prepare_cost = _difference(_snapshot(ctx, counters), started)
            _add(cost, prepare_cost)
            with progress_bar(total=len(todo), desc=desc or f"attack {label}", unit="prompt", enabled=ctx.show_progress) as bar:
                for key, spec in todo:
                    before = _snapshot(ctx, counters)
                    ctx._spec_seed = int(spec.seed)
                    with naming_the_plugin(attack, "attack", attack.name, "attack"):
                        found = attack.attack(pipe, concepts, spec, ctx)
                    if not isinstance(found, AdversarialPrompt):
                        raise HarnessError(f"attack {attack.name!r} returned {type(found).__name__}, not an AdversarialPrompt")
                    spent = _difference(_snapshot(ctx, counters), before)
                    _add(cost, spent)
                    added = attack_labels(spec, found, label)
                    # The whole adversarial spec, for inspection, and apart the labels the attack added, which a later
                    # run with other source labels (same search input) puts on its own source spec.
                    stored = {**adversarial_spec(spec, found.text, added).as_dict(), "attack_labels": added}
                    token_ids = list(found.token_ids) if found.token_ids is not None else None
                    # Stored at once: a killed attack resumes from here.
                    store.add_attack_prompt(key, attack.name, state_key, spec.id, stored, token_ids, found.loss, spent)
                    known[key] = {"spec": json.loads(json.dumps(stored, default=str)), "token_ids": token_ids, "loss": found.loss,
                                  "cost": spent}
                    bar.update(1)
        finally:
            ctx.base_component = base_component
            for counter in counters.values():
                counter.close()
    adversarial_specs = [from_store(spec, known[key]["spec"], label) for key, spec in zip(keys, specs)]
    # The set's total is the sum of its searches; the shared prepare() step (Ring-A-Bell's concept vector) is in this
    # call's cost only, when it ran.
    total = dict.fromkeys(COST_FIELDS, 0)
    for key in dict.fromkeys(keys):
        _add(total, known[key]["cost"])
    # The set is its searches, in order: the same prompts with other labels (--seeds-per-prompt) are the same set.
    sources_hash = sha256_json(keys)
    set_key = sha256_json({"state": state_key, "attack": attack.name, "version": attack.version, "params": attack.params_dict(),
                           "concepts": concepts.fingerprint(), "sources": sources_hash, **_dtype_field(ctx.dtype)})[:32]
    export_path = None
    if export_dir is not None:
        exported = export_csv(adversarial_specs).encode("utf-8")
        # Named by its content too: the same searches exported with another run's ids or labels (which a metric may
        # read, e.g. I2P's categories) are another file, so each run's record names the file that replays that run.
        digest = hashlib.sha256(exported).hexdigest()[:8]
        export_path = Path(export_dir) / f"{_file_name(label)}-{set_key[:12]}-{digest}.csv"
        atomic_write(export_path, exported)
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


# Columns the csv benchmark (benchmarks/csvbench.py) reads as something other than a label: the per-row seed and
# guidance (ESD's names and the Hugging Face I2P layout's), the size, the case number, and the row position it adds.
# A source label of one of these names (I2P's sd_image_width/height, kept as text while the backbone's size applies)
# is not written: the reader would take it for the real value, or refuse the file for a column given twice.
READER_COLUMNS = frozenset({"prompt", "case_number", "row", "evaluation_seed", "evaluation_guidance", "sd_seed", "sd_guidance_scale",
                            "sd_image_width", "sd_image_height"})
CATEGORIES = "categories"  # the one label the reader parses into a list: split on ",", each item stripped


def export_csv(specs: list[PromptSpec]) -> str:
    """The community's CSV layout (``case_number, prompt, evaluation_seed, evaluation_guidance``, the size columns
    when a prompt sets a size), then the labels.

    ``--bench csv:path=FILE`` replays the prompts with the same ids, seeds, guidance and sizes (an empty size cell:
    the backbone's), hence the same images.  ``categories`` is written as the reader splits it (", " between items);
    every other label comes back as text, a list joined with ``|`` (as the toy scorer reads ``erased``).  Labels of
    the reader's own columns (``READER_COLUMNS``) are left out.  Fields are quoted by the csv module's rules, with
    ``\r\n`` between rows, so any text survives, a "\r" inside a prompt included (CLIP's byte token 'č' decodes to it).

    A prompt's ``steps`` and ``negative_prompt`` are not written: the csv benchmark has no column for either (every
    row gets the backbone's steps and no negative prompt), so a column here would be read as a label and change
    nothing.  The built-in benchmarks set neither; a plugin benchmark's prompts that do replay without them.
    """
    label_names: list[str] = []
    for spec in specs:
        for name in spec.labels:
            if name not in label_names and name not in READER_COLUMNS:
                label_names.append(name)
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # QUOTE_MINIMAL with "\r\n": a field holding "\r", "\n", "," or '"' is quoted
    sizes = any(spec.width or spec.height for spec in specs)
    writer.writerow(["case_number", "prompt", "evaluation_seed", "evaluation_guidance"] + (["sd_image_width", "sd_image_height"] if sizes else [])
                    + label_names)
    for spec in specs:
        row = [spec.id, spec.prompt, spec.seed, repr(float(spec.guidance))]
        if sizes:
            row += [spec.width or "", spec.height or ""]
        row += [_label_cell(spec, name) for name in label_names]
        writer.writerow(row)
    return buffer.getvalue()


def _label_cell(spec: PromptSpec, name: str) -> str:
    value = spec.labels.get(name)
    if value is None:
        return ""
    if name == CATEGORIES:
        if isinstance(value, str):
            return value  # already the file's text (a plugin's label)
        items = [str(item) for item in value]
        for item in items:
            if "," in item or item != item.strip():
                raise HarnessError(f"prompt {spec.id!r}: category {item!r} cannot be exported: the csv benchmark splits categories "
                                   "on ',' and strips each")
        return ", ".join(items)
    if isinstance(value, (list, tuple)):
        return "|".join(str(item) for item in value)
    return str(value)
