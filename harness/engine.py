"""Generation: model states (erasure as cached weight deltas) and batched, seeded, cached sampling.

* A *model state* is the backbone plus the edits of a method (or a composition
  ``a+b``).  Whatever an edit changes is snapshotted into a safetensors delta,
  cached under (backbone fingerprint, method, params, concept-set hash, method
  version).  Switching methods swaps deltas in memory; the originals are kept,
  so removing a delta restores the backbone bit for bit.
* Images are sampled in batches, but every sample has its own seeded
  generator and its own latents, so an image never depends on which prompts
  share its batch.  The batch *size* (like the thread count or the device)
  changes the order in which float kernels sum, which moves a few pixels of
  some images by one 8-bit level (tiny backbone, CPU float32: 3 of 16 images
  between batches of 1 and 8).  The image key does not hold the batch size, so
  a store keeps the first image it made and a re-run at another size reuses
  it; two stores made at different sizes can hold different bytes under one
  key, which ``harness merge`` reports as a conflict.  Each image is stored as
  a PNG under a content address, atomically, and is never generated twice.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import time
from dataclasses import dataclass, field
from itertools import groupby

from harness import claims as work_claims
from harness import integrity, recover
from harness.api import ConceptSet, HarnessError, Method, MethodKind, PromptSpec, SamplingHooks, Target, sha256_json
from harness.context import EditContext
from harness.cost import counted_evaluations
from harness.failures import naming_the_plugin
from harness.lazy import resolve_pipeline
from harness.results import kept_in_half_precision
from harness.store import Store

EDITABLE_COMPONENTS = ("unet", "text_encoder")


def public_config(config) -> dict:
    """A component's config without bookkeeping keys (``_use_default_values`` is a set in random order)."""
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {key: value for key, value in config.items() if not key.startswith("_") and key not in ("transformers_version",)}


def tokenizer_fingerprint(tokenizer) -> str:
    """What the token ids of a prompt depend on: the tokenizer's class, vocabulary, BPE merges and the length it pads
    and truncates to.  Two pipelines with the same weights and another tokenizer draw other images."""
    if hasattr(tokenizer, "backend_tokenizer"):  # a fast tokenizer serialises its whole pipeline
        rules = tokenizer.backend_tokenizer.to_str()
    else:  # CLIP's (slow) BPE: vocabulary and merge ranks; the merge pairs are tuples, so as lists
        rules = {"vocab": sorted(tokenizer.get_vocab().items()),
                 "merges": sorted([*pair, rank] for pair, rank in getattr(tokenizer, "bpe_ranks", {}).items())}
    return sha256_json({"class": type(tokenizer).__name__, "max_length": tokenizer.model_max_length, "rules": rules})


def pipeline_fingerprint(pipe) -> str:
    """sha256 over every weight of the pipeline, its configs, the scheduler's class and the tokenizer: equal iff the
    pipelines draw alike.  (A store keeps the fingerprint it first computed for a backbone identity, so stores made
    before the class and tokenizer were counted keep their keys.)"""
    import torch

    digest = hashlib.sha256()
    for component in ("unet", "text_encoder", "vae"):
        module = getattr(pipe, component)
        digest.update(sha256_json(public_config(module.config)).encode())
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            data = tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
            digest.update(hashlib.sha256(data).digest())
    digest.update(sha256_json(public_config(pipe.scheduler.config)).encode())
    # The class too: the config is compared, and two samplers can share one (a plugin backbone's LMS and Euler).
    digest.update(type(pipe.scheduler).__name__.encode())
    digest.update(tokenizer_fingerprint(pipe.tokenizer).encode())
    return digest.hexdigest()[:32]


@dataclass
class ActiveState:
    key: str
    label: str
    hooks: list[SamplingHooks] = field(default_factory=list)
    metadata: list[dict] = field(default_factory=list)

    @property
    def extra_branches(self) -> int:
        return sum(h.extra_branches for h in self.hooks)


class ModelStates:
    """Applies and removes method edits on one loaded pipeline."""

    def __init__(self, pipe, store: Store, backbone_fingerprint: str, target: Target, show_progress: bool = True):
        self._pipe = pipe  # a pipeline, or a harness.lazy.PipelineSource loaded on first use
        self.store = store
        self.backbone_fingerprint = backbone_fingerprint
        self.target = target
        self.show_progress = show_progress
        self._parameters: dict | None = None
        self.originals: dict = {}
        self.applied: set[str] = set()  # parameter names that currently differ from the originals
        self.exact: dict = {}  # float32 values of the applied delta (finer than half-precision weights hold)
        self.edits_run = 0  # how many times a method's edit() actually ran (cache misses)
        self.last_activated = None  # the ActiveState the pipeline holds now (None after reset); attacks check it

    @property
    def pipe(self):
        return resolve_pipeline(self._pipe)

    @property
    def parameters(self) -> dict:
        if self._parameters is None:
            self._parameters = {
                f"{component}.{name}": param
                for component in EDITABLE_COMPONENTS
                for name, param in getattr(self.pipe, component).named_parameters()
            }
            # Originals are kept on the model's own device: restoring is a copy, not a reload.
            self.originals = {name: param.detach().clone() for name, param in self._parameters.items()}
        return self._parameters

    # ------------------------------------------------------------------ weights

    def reset(self) -> None:
        self.last_activated = None
        if not self.applied:
            self.exact = {}
            return  # nothing to undo (and nothing to load: importing torch alone costs seconds)
        import torch

        with torch.no_grad():
            for name in self.applied:
                self.parameters[name].copy_(self.originals[name])
        self.applied = set()
        self.exact = {}

    def _restore_every_weight(self) -> None:
        """After an edit that raised half-way: every weight back to the original, not only those ``applied`` lists
        (the failing edit changed weights it never got to report), so a caller that goes on (a library user, the
        next cell) does not sample from a half-edited model."""
        if self._parameters is not None:
            self.applied = set(self._parameters)
            self.reset()

    def changed_parameters(self) -> dict:
        import torch

        with torch.no_grad():
            return {
                name: param.detach().clone()
                for name, param in self.parameters.items()
                if not torch.equal(param, self.originals[name])
            }

    def float32_delta(self, exact: dict) -> dict:
        """Every changed parameter in float32: the edit's own float32 value where it left one and the weight still
        holds it (``exact``: this activation's ``ctx.exact_weights``, or a loaded delta), else the weight upcast.

        A float32 value whose cast to the weights' dtype rounds back to the original is kept too: the delta holds
        what the method learned, and a float16 pipeline rounds it only when it applies it.
        """
        import torch

        precise = {**self.exact, **exact}
        delta = {name: value.float() for name, value in self.changed_parameters().items()}
        with torch.no_grad():
            for name, value in precise.items():
                param = self.parameters[name]
                if not torch.equal(value.to(param.device, param.dtype), param):
                    continue  # a later edit changed this parameter again
                if name in delta or not torch.equal(value.to(param.device), self.originals[name].float()):
                    delta[name] = value.detach().float()
        return delta

    def apply_delta(self, delta: dict) -> None:
        import torch

        self.reset()
        self.exact = {name: tensor for name, tensor in delta.items() if tensor.dtype == torch.float32}
        with torch.no_grad():
            for name, tensor in delta.items():
                if name not in self.parameters:
                    raise KeyError(f"delta names unknown parameter {name}")
                self.parameters[name].copy_(tensor.to(self.parameters[name].device, self.parameters[name].dtype))
        self.applied = set(delta)

    def original_unet(self):
        """A frozen copy of the unedited UNet (reference model for fine-tuning methods)."""
        import copy

        self.parameters  # noqa: B018 -- makes sure the originals were taken
        unet = copy.deepcopy(self.pipe.unet)
        state = {name[len("unet.") :]: tensor for name, tensor in self.originals.items() if name.startswith("unet.")}
        unet.load_state_dict(state, strict=False)
        unet.requires_grad_(False).eval()
        return unet

    def context(self) -> EditContext:
        return EditContext(
            device=self.target.device,
            dtype=self.target.dtype,
            cache_dir=self.store.cache / "methods",
            files=self.store.files,
            backbone_fingerprint=self.backbone_fingerprint,
            show_progress=self.show_progress,
            original_unet=self.original_unet,
        )

    # ------------------------------------------------------------------ states

    def chain_keys(self, parts: list[tuple[Method, str]], concepts: ConceptSet) -> list[str | None]:
        """The model-state key after each part (``None`` for the base model, which changes nothing)."""
        key, keys = self.backbone_fingerprint, []
        for method, _ in parts:
            if method.kind == MethodKind.NONE:
                keys.append(None)
                continue
            identity = {"parent": key, "method": method.name, "version": method.version, "params": method.params_dict(), "concepts": concepts.fingerprint()}
            if method.kind == MethodKind.EDIT:  # an edit computed on float16 weights is not the float32 one
                identity["dtype"] = self.target.dtype
            if self.target.dtype in ("float16", "bfloat16"):
                # The text states a method decides on (closed-form statistics, fine-tuning conditions, SAFREE's
                # triggers) are computed in float32 in a float16 or bfloat16 run (harness.text.float32_text_encoder),
                # and SLD's rule runs in float32; before they were not, so a state or image made then is not reused.
                identity["text_rows"] = "float32"
            if method.presets_applied:  # same values, other origin: the provenance column must say which
                identity["presets"] = method.presets_applied
            key = sha256_json(identity)[:32]
            keys.append(key)
        return keys

    def _state_row(self, key: str):
        """The state's database row; after a lost database, restored from the record beside its delta."""
        row = self.store.model_state(key)
        if row is None and recover.restore_model_state(self.store, key):
            row = self.store.model_state(key)
        return row

    def _claim_erasure(self, key: str, delta_path) -> bool:
        """Claim the erasure of state ``key``: True once this process may compute it, False once another process has
        stored it meanwhile (waiting while another live process computes it)."""
        if self.store.db is None:  # a data-parallel rank other than 0: rank 0 erases
            return True

        # Stored: the state row (written last) and the delta's record.  Never both before this: a damaged delta's record
        # was forgotten when it was removed, and a kill between a delta's record and its row leaves no row.  (Whether the
        # record changed says nothing: a deterministic edit writes the same bytes again.)
        def stored(keys):
            return set(keys) if self.store.model_state(key) is not None and self.store.files.lookup(delta_path) is not None else set()

        while True:
            claimed, held = self.store.claims.take([f"state:{key}"], done=stored)
            if claimed:
                return True
            if not held:
                return False
            time.sleep(work_claims.POLL_SECONDS)

    def stored_state(self, parts: list[tuple[Method, str]], concepts: ConceptSet, label: str) -> ActiveState | None:
        """The state's key and stored metadata, read from the store without touching the pipeline.

        ``None`` when some part was never made here.  It carries no sampling hooks: use it only when every
        image of the state already exists.
        """
        state = ActiveState(key=self.backbone_fingerprint, label=label)
        for (_method, part_label), key in zip(parts, self.chain_keys(parts, concepts)):
            if key is None:
                state.metadata.append({"method": part_label, "kind": "none"})
                continue
            row = self._state_row(key)
            if row is None:
                return None
            state.metadata.append({"method": part_label, **_json(row["metadata"])})
            state.key = key
        return state

    def activate(self, parts: list[tuple[Method, str]], concepts: ConceptSet, label: str) -> ActiveState:
        """Bring the pipeline into the state of ``parts`` (method instances with their labels), applied in order."""
        try:
            return self._activate(parts, concepts, label)
        except BaseException:  # a failed erasure frees its claim, so another process (or a re-run) may try it
            self.store.claims.release([key for key in self.store.claims.held if key.startswith("state:")])
            self._restore_every_weight()
            raise

    def _activate(self, parts: list[tuple[Method, str]], concepts: ConceptSet, label: str) -> ActiveState:
        from safetensors.torch import load_file, save_file

        self.parameters  # noqa: B018 -- the originals must be taken before any edit runs
        self.reset()
        key = self.backbone_fingerprint
        state = ActiveState(key=key, label=label)
        ctx = self.context()
        erase_seconds = 0.0  # cumulative over the parts, so a composition's state carries its whole cost
        erase_evals = {"unet": 0, "text_encoder": 0}
        kept: dict = {}  # every part's ctx.state_tensors so far, stored as "state.<part>.<name>" with each later delta
        for index, ((method, part_label), key_after) in enumerate(zip(parts, self.chain_keys(parts, concepts))):
            if key_after is None:  # the base model: same state, same images
                state.metadata.append({"method": part_label, "kind": "none"})
                continue
            key = key_after
            row = self._state_row(key)
            ctx.state_tensors = {}
            if method.kind == MethodKind.EDIT:
                delta_path = self.store.delta_path(key)
                intact = row is not None and self.store.files.verify(delta_path, "cached model delta", adopt=integrity.safetensors_loads,
                                                                         kind=integrity.DELTA, remedy="the erasure is recomputed")
                if not intact and not self._claim_erasure(key, delta_path):  # another process erased it meanwhile
                    row = self._state_row(key)
                    intact = row is not None and self.store.files.verify(delta_path, "cached model delta", adopt=integrity.safetensors_loads,
                                                                             kind=integrity.DELTA, remedy="the erasure is recomputed")
                if intact:
                    weights, kept = split_state_tensors(load_file(str(delta_path)))
                    self.apply_delta(weights)
                    ctx.state_tensors = part_state_tensors(kept, index)
                    metadata = _json(row["metadata"])
                else:
                    started = time.perf_counter()
                    with counted_evaluations() as evaluations, naming_the_plugin(method, "method", part_label, "edit"):
                        metadata = method.edit(self.pipe, concepts, ctx) or {}
                    # Recorded once, when computed: a cached delta later reports the cost it had then.
                    metadata = {**metadata, "erase_seconds": round(erase_seconds + time.perf_counter() - started, 3), "erase_device": self.target.device,
                                "erase_unet_evals": erase_evals["unet"] + evaluations["unet"],
                                "erase_text_encoder_evals": erase_evals["text_encoder"] + evaluations["text_encoder"]}
                    self.edits_run += 1
                    delta = self.float32_delta(ctx.exact_weights)  # cumulative: relative to the original backbone
                    # A method may name where its weights came from (a loaded checkpoint); otherwise they were erased here.
                    metadata = {**inherited_metadata(state.metadata), "provenance": "erased here", **metadata, **method.presets_applied,
                                "parameters_changed": len(delta)}
                    kept.update({f"{STATE_TENSOR_PREFIX}{index}.{name}": tensor.detach().float() for name, tensor in ctx.state_tensors.items()})
                    tensors = {k: v.contiguous().cpu() for k, v in {**delta, **kept}.items()}
                    self.store.files.write(delta_path, kind=integrity.DELTA,
                                           write=lambda tmp, tensors=tensors, label=part_label: save_file(tensors, str(tmp), metadata={"method": label}))
                    recover.write_state_record(self.store, key, backbone=self.target.backbone_name, method=part_label, params=method.params_dict(),
                                               concepts=concepts.name, metadata=metadata)  # the row survives a lost database
                    self.exact = delta
                    self.applied = set(delta)
                    self.store.add_model_state(key, self.target.backbone_name, part_label, method.params_dict(), concepts.name, str(delta_path), metadata)
                    self.store.claims.release([f"state:{key}"])
            else:
                metadata = row and _json(row["metadata"]) or {}
                if row is None:
                    metadata = {**inherited_metadata(state.metadata), "kind": MethodKind(method.kind).value, **method.presets_applied}
                    self.store.add_model_state(key, self.target.backbone_name, part_label, method.params_dict(), concepts.name, None, metadata)
            with naming_the_plugin(method, "method", part_label, "sampling_hooks"):
                hooks = method.sampling_hooks(self.pipe, concepts, ctx)
            if hooks is not None:
                state.hooks.append(hooks)
            erase_seconds = float(metadata.get("erase_seconds", erase_seconds))
            erase_evals = {kind: int(metadata.get(f"erase_{kind}_evals", count)) for kind, count in erase_evals.items()}
            state.metadata.append({"method": part_label, **metadata})
        state.key = key
        self.last_activated = state
        return state


def inherited_metadata(earlier: list[dict]) -> dict:
    """What a composition's part records of the parts before it.

    A result joins only its last part's model state, so without this ``safegen+sld`` would read as "sampling-time,
    weights unchanged" and lose SafeGen's toy preset.  ``weights_from`` names the parts whose edits made the weights
    this part starts from; ``backbone_preset`` is the earlier parts' (the part's own, if it has one, wins).
    """
    inherited: dict = {}
    editors = [m["method"] for m in earlier if m.get("provenance")]  # edits record a provenance; sampling parts do not
    if editors:
        inherited["weights_from"] = "+".join(editors)
    presets = sorted({m["backbone_preset"] for m in earlier if m.get("backbone_preset")})
    if presets:
        inherited["backbone_preset"] = "+".join(presets)
    # A half-precision run that rounded away an earlier part's changes (esd-x in esd-x+sld) must still say so.
    rounded = [{"method": m["method"], **loss} for m in earlier for loss in [kept_in_half_precision(m)] if loss]
    if rounded:
        inherited["rounded_earlier"] = rounded
    return inherited


STATE_TENSOR_PREFIX = "state."  # delta keys that are not weights: a part's ctx.state_tensors ("state.<part index>.<name>")


def split_state_tensors(delta: dict) -> tuple[dict, dict]:
    """A stored delta's (weights, state tensors): parameter names are "unet.…" or "text_encoder.…", never "state.…"."""
    weights = {name: tensor for name, tensor in delta.items() if not name.startswith(STATE_TENSOR_PREFIX)}
    return weights, {name: tensor for name, tensor in delta.items() if name.startswith(STATE_TENSOR_PREFIX)}


def part_state_tensors(kept: dict, index: int) -> dict:
    """Part ``index``'s own state tensors, under the names its ``edit`` gave them."""
    prefix = f"{STATE_TENSOR_PREFIX}{index}."
    return {name[len(prefix) :]: tensor for name, tensor in kept.items() if name.startswith(prefix)}


def _json(text):
    import json

    return json.loads(text) if text else {}


# --------------------------------------------------------------------------- sampling


def _whole_images(bar):
    """A denoising-step callback that moves ``bar`` in whole images: each step adds a fraction of a batch, and a
    fractional count would print as "12.799999999999999/32"."""
    start, steps = bar.n, 0.0

    def on_step(images: float) -> None:
        nonlocal steps
        steps += images
        bar.update(int(start + steps + 1e-9) - bar.n)

    return on_step


def image_address(backbone: str, state_key: str, spec: dict, scheduler: dict, dtype: str) -> str:
    """An image's key: everything its pixels depend on.  ``spec``: a resolved spec's fields, or the spec an image's
    PNG row holds (``harness check`` recomputes the address of an image found without its database row)."""
    return sha256_json({
        "backbone": backbone,
        "state": state_key,
        "prompt": spec["prompt"],
        "negative": spec["negative_prompt"],
        "seed": spec["seed"],
        "guidance": spec["guidance"],
        "steps": spec["steps"],
        "height": spec["height"],
        "width": spec["width"],
        "scheduler": scheduler,
        "dtype": dtype,
    })


@dataclass
class Defaults:
    steps: int
    height: int
    width: int


class Engine:
    """Batched, seeded, cached generation for one loaded pipeline."""

    def __init__(self, pipe, store: Store, backbone_fingerprint: str, defaults: Defaults, device: str, dtype: str,
                 batch_size: int = 8, show_progress: bool = True, scheduler_config: dict | None = None):
        self._pipe = pipe  # a pipeline, or a harness.lazy.PipelineSource loaded on first use
        self.store = store
        self.backbone_fingerprint = backbone_fingerprint
        self.defaults = defaults
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.unet_calls = 0  # forward passes of the UNet, for tests and cost accounting
        # Text-encoder outputs (on the device) by prompt, for one model state at a time: a run works through its states
        # one after another, and keeping every state's would hold methods × prompts embeddings (gigabytes on SD) to the end.
        self._embeddings: dict[str, object] = {}
        self._embeddings_state: str | None = None  # the state key of the embeddings held
        self.on_step = None  # called with a fraction of an image after each denoising step (the progress bar)
        self.prompt_tokens: dict[str, int] = {}  # prompt -> its length in tokens, uncut ([SoT] and [EoT] included)
        self.token_limit: int | None = None  # the text encoder's context (77 for SD's CLIP)
        self.scheduler_config = scheduler_config if scheduler_config is not None else public_config(self.pipe.scheduler.config)

    @property
    def pipe(self):
        return resolve_pipeline(self._pipe)

    def resolve(self, spec: PromptSpec) -> PromptSpec:
        """Fill the backbone's defaults into a spec, so the image key names every setting."""
        from dataclasses import replace

        return replace(
            spec,
            steps=spec.steps or self.defaults.steps,
            height=spec.height or self.defaults.height,
            width=spec.width or self.defaults.width,
        )

    def image_key(self, spec: PromptSpec, state_key: str) -> str:
        return image_address(self.backbone_fingerprint, state_key, spec.__dict__, self.scheduler_config, self.dtype)

    def generate(self, specs: list[PromptSpec], state: ActiveState, desc: str = "generating", on_batch=None) -> list[str]:
        """Make sure an image exists for every spec; return the image keys in spec order.

        ``on_batch``, if given, receives each stored batch as (key, spec) pairs (the overlapped scorer's queue).
        """
        from harness.progress import bar as progress_bar

        resolved = [self.resolve(spec) for spec in specs]
        keys = [self.image_key(spec, state.key) for spec in resolved]
        evals_per_image = lambda spec: spec.steps * (2 + state.extra_branches)  # noqa: E731
        todo, damaged, adopted = self._missing_images(keys, resolved)
        if adopted:  # intact images whose record a kill or a lost database left out; each PNG carries its own row
            self.store.add_images(recover.adopted_image_rows(self.store, state.key, adopted, evals_per_image))

        def group_of(item):
            spec = item[1]
            return (spec.steps, spec.height, spec.width)

        # Batches are formed over every image of the cell, made or not, exactly as an uninterrupted run forms them:
        # with several CPU threads an image's last bits depend on the batch it is sampled in, so a re-run after a
        # kill samples a partly finished batch whole and keeps only its missing images (bytes equal to a clean run).
        everything = dict(zip(keys, resolved))
        batches = []
        for _, group in groupby(sorted(everything.items(), key=group_of), key=group_of):
            group = list(group)
            batches.extend(group[start : start + self.batch_size] for start in range(0, len(group), self.batch_size))
        # Dealt even when nothing is missing here: data-parallel ranks count the batches dealt so far, and one rank may
        # find a cell finished (another rank's image already on disk) where the others do not.
        mine = self.my_batches(batches)
        if not todo:
            return keys
        # Data-parallel runs (harness/distributed.py) share the batches out; the other processes make the rest.
        others = [key for index, batch in enumerate(batches) if index not in mine for key, _ in batch if key in todo]
        made = 0
        claims = self.store.claims
        pending = [(batches[index], [key for key, _ in batches[index] if key in todo]) for index in sorted(mine)]
        pending = [(whole, wanted) for whole, wanted in pending if wanted]
        with progress_bar(total=len(todo), desc=desc, unit="img", enabled=self.show_progress) as bar:
            while pending:
                # Claimed in the store before it is made: a batch another live process is making is skipped for now
                # and looked at again after this process's other batches (done by then, or freed by a dead owner).
                whole, wanted = pending.pop(0)
                claimed, held = claims.take(wanted, done=self._recorded_since)
                if held:
                    if not pending:
                        time.sleep(work_claims.POLL_SECONDS)
                    pending.append((whole, held))
                made += len(wanted) - len(claimed) - len(held)  # made by another process meanwhile
                if not claimed:
                    continue
                self.on_step = _whole_images(bar) if self.show_progress else None
                try:
                    images = self.sample([spec for _, spec in whole], state)
                except BaseException as err:
                    claims.release(claimed)
                    if isinstance(err, KeyboardInterrupt):
                        # The bar counted this batch step by step, but only whole batches are saved: the interrupt
                        # message says how many images a re-run makes again (harness.cli).
                        err.unsaved_images = len(claimed)
                    raise
                finally:
                    self.on_step = None
                keep = set(claimed)
                batch, images = map(list, zip(*[(item, image) for item, image in zip(whole, images) if item[0] in keep]))
                rows, files = [], []
                try:
                    for (key, spec), image in zip(batch, images):
                        buffer = io.BytesIO()
                        tokens = {"prompt_tokens": self.prompt_tokens.get(spec.prompt), "token_limit": self.token_limit}
                        row = (key, state.key, {**spec.as_dict(), **tokens}, evals_per_image(spec))
                        image.save(buffer, format="PNG", pnginfo=recover.png_info(*row[1:]))  # the row survives a lost database
                        files.append(self.store.files.write(self.store.image_path(key), buffer.getvalue(), kind=integrity.IMAGE, record=False))
                        rows.append(row)
                finally:  # a write that fails mid-batch (full disk) keeps the images written before it
                    if rows:
                        # Regenerated, but not bit for bit (e.g. another GPU): their old scores no longer apply.  Dropped
                        # in the transaction that records the new bytes, so no kill can leave old scores on new images.
                        changed = [key for (key, _), entry in zip(batch, files) if damaged.get(key, entry.sha256) != entry.sha256]
                        self.store.add_images(rows, files=files, stale_scores=changed)
                    claims.release(claimed)
                if on_batch is not None:
                    on_batch(batch)
                made += len(batch)
                # One bar for all processes: the others' images count once their files exist.
                done_elsewhere = sum(self.store.image_path(key).exists() for key in others) if others and self.show_progress else 0
                bar.update(made + done_elsewhere - bar.n)
            while others and self.show_progress and bar.n < len(todo):  # the global count, to the end
                time.sleep(0.5)
                bar.update(made + sum(self.store.image_path(key).exists() for key in others) - bar.n)
        return keys

    def _recorded_since(self, keys: list[str]) -> set[str]:
        """The keys whose image is made by now: its row, its file and the file's record.

        A row alone is not enough: an image removed as damaged keeps its row (the results that used it name it), and
        its record too when ``harness check --repair`` removed it; both are written again when it is regenerated.
        """
        files = self.store.files
        return {key for key in self.store.image_unet_evals(keys)
                if files.lookup(self.store.image_path(key)) is not None and self.store.image_path(key).exists()}

    def my_batches(self, batches: list[list]) -> set[int]:
        """The indices of the batches this process makes: all of them, unless a data-parallel run shares them out."""
        return set(range(len(batches)))

    def _missing_images(self, keys: list[str], specs: list[PromptSpec]):
        """(to generate: key → spec, damaged: key → recorded sha256 or None, adopted: key → spec) for the images of ``keys``.

        Each cached image is checked against its record (size and sha256) before it
        counts as done; a damaged one is removed with one warning and generated again.
        """
        files = self.store.files
        todo, damaged, adopted = {}, {}, {}
        recorded_images = set(self.store.image_unet_evals(keys))
        for key, spec in zip(keys, specs):
            if key in todo or key in adopted:
                continue
            path = self.store.image_path(key)
            record = files.lookup(path)
            if files.verify(path, "cached image", adopt=integrity.image_decodes, kind=integrity.IMAGE):
                if record is None or key not in recorded_images:
                    adopted[key] = spec
                continue
            todo[key] = spec
            if record is not None:
                damaged[key] = record.sha256
            elif key in recorded_images:  # removed as damaged earlier, record and all: the bytes it was scored by are unknown
                damaged[key] = None
        return todo, damaged, adopted

    # ------------------------------------------------------------------ the sampling loop

    def embed(self, prompts: list[str], state_key: str):
        """Text-encoder output for each prompt, computed once per unique prompt while the model state stays the same."""
        import torch

        from harness.text import encode_prompts

        if state_key != self._embeddings_state:  # another state's embeddings are dropped, not kept for a return
            self._embeddings, self._embeddings_state = {}, state_key
        missing = sorted({p for p in prompts if p not in self._embeddings})
        if missing:
            tokenizer = self.pipe.tokenizer
            # Counted before the cut below, so that the report can say how many prompts lost words.
            for prompt, ids in zip(missing, tokenizer(missing, truncation=False, verbose=False).input_ids):
                self.prompt_tokens[prompt] = len(ids)
            self.token_limit = tokenizer.model_max_length
            hidden = encode_prompts(self.pipe, missing, batch_size=None, dtype=None).embeddings  # in the pipeline's dtype
            self._embeddings.update(zip(missing, hidden))
        return torch.stack([self._embeddings[p] for p in prompts])

    def initial_latents(self, specs: list[PromptSpec], generators: list | None = None):
        """One latent per sample from its own CPU generator, as diffusers does for a list of generators.

        CPU generators make the same seed give the same image on any device.  ``generators``: each sample's, seeded
        here when not given (``sample`` keeps drawing from them for a sampler that adds noise at each step).
        """
        import torch

        unet = self.pipe.unet
        factor = 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)
        generators = generators or self.generators(specs)
        latents = []
        for spec, generator in zip(specs, generators, strict=True):
            shape = (1, unet.config.in_channels, spec.height // factor, spec.width // factor)
            latents.append(torch.randn(shape, generator=generator, dtype=torch.float32))
        return torch.cat(latents).to(unet.device, unet.dtype)

    @staticmethod
    def generators(specs: list[PromptSpec]) -> list:
        import torch

        return [torch.Generator(device="cpu").manual_seed(int(spec.seed) % (2**64)) for spec in specs]

    def sample(self, specs: list[PromptSpec], state: ActiveState) -> list:
        import numpy as np
        import torch
        from PIL import Image

        pipe = self.pipe
        # A private scheduler per batch: set_timesteps mutates it.
        scheduler = type(pipe.scheduler).from_config(self.scheduler_config)
        steps = specs[0].steps
        cond = self.embed([s.prompt for s in specs], state.key)
        uncond = self.embed([s.negative_prompt for s in specs], state.key)
        for hooks in state.hooks:
            cond, uncond = hooks.transform_embeddings(cond, uncond, specs)
        # float32 whatever the UNet's dtype: in bfloat16, guidance 7.3 would be 7.3125 (diffusers keeps the Python
        # float); the guided prediction is cast back to the latents' dtype below.
        guidance = torch.tensor([s.guidance for s in specs], device=pipe.unet.device, dtype=torch.float32).view(-1, 1, 1, 1)
        generators = self.generators(specs)
        latents = self.initial_latents(specs, generators) * scheduler.init_noise_sigma
        scheduler.set_timesteps(steps, device=pipe.unet.device)
        # A sampler that adds noise at each step (ancestral, DDPM, DDIM with eta > 0) draws it from each sample's own
        # generator, after its initial latent, as diffusers does; without it the global RNG decided the image, so one
        # seed gave other images in other runs and batches.  DDIM at eta 0 draws nothing: its images are unchanged.
        step_options = {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
        guide = next((h.guide for h in reversed(state.hooks) if h.guides), None)

        def unet_call(latent_input, timestep, embeddings):
            self.unet_calls += 1
            return pipe.unet(latent_input, timestep, encoder_hidden_states=embeddings).sample

        for hooks in state.hooks:
            hooks.install(pipe)
        try:
            with torch.no_grad():
                for index, timestep in enumerate(scheduler.timesteps):
                    latent_input = scheduler.scale_model_input(latents, timestep)
                    if guide is not None:
                        noise = guide(index, timestep, latent_input, unet_call, cond, uncond, guidance)
                    else:
                        both = unet_call(torch.cat([latent_input, latent_input]), timestep, torch.cat([uncond, cond]))
                        noise_uncond, noise_cond = both.chunk(2)
                        noise = noise_uncond + guidance * (noise_cond - noise_uncond)
                    latents = scheduler.step(noise.to(latents.dtype), timestep, latents, **step_options).prev_sample
                    if self.on_step is not None:  # the bar moves per denoising step, not once per (long) batch
                        self.on_step(len(specs) / len(scheduler.timesteps))
                decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        finally:
            for hooks in state.hooks:
                hooks.uninstall(pipe)
        if not torch.isfinite(decoded).all():
            # NaN becomes black after the uint8 cast, and a black image scores as perfect erasure: never store one.
            bad = [spec.id for spec, image in zip(specs, decoded) if not torch.isfinite(image).all()]
            raise HarnessError(f"{state.label}: sampling produced non-finite pixels for prompt(s) {', '.join(bad[:5])} "
                               f"(guidance {specs[0].guidance}, dtype {self.dtype}); lower the guidance"
                               + ("" if self.dtype == "float32" else " or use --dtype float32"))
        pixels = ((decoded.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(np.ascontiguousarray(array)) for array in pixels]


def authors_style_loop(pipe, specs: list[PromptSpec], steps: int, height: int, width: int) -> list:
    """The reference implementations' generation loop: one pipeline call per prompt, reseeding each time.

    Kept only as the baseline for the throughput benchmark.
    """
    import torch

    images = []
    for spec in specs:
        generator = torch.Generator(device="cpu").manual_seed(spec.seed)
        out = pipe(spec.prompt, guidance_scale=spec.guidance, num_inference_steps=steps, height=height, width=width, generator=generator)
        images.append(out.images[0])
    return images

