"""The types a plugin implements: Method, Benchmark, Scorer, Backbone, and what flows between them.

This module must stay importable without torch or diffusers: ``harness list``
imports it to show descriptions.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:  # this module stays importable without torch
    import torch

from harness.validate import param, validate_params

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes any uint64
MAX_GUIDANCE = 1000  # published protocols stay below 30; beyond ~1e29 float32 latents overflow to NaN
MAX_STEPS = 1000  # the SD schedulers' num_train_timesteps: more sampling steps than that do not exist

class HarnessError(Exception):
    """A mistake the user can fix.  The CLI prints the message on one line, without a traceback."""


def close_names(name: str, choices) -> list[str]:
    """The valid names a mistyped ``name`` most likely meant, ignoring case: the same name in other case (``TRCE``),
    else the names it begins (``esd``: esd-u, esd-x; at most 8, more says little), else the closest by spelling."""
    import difflib

    by_lower = {choice.lower(): choice for choice in sorted(choices)}
    key = name.lower()
    if key in by_lower:
        return [by_lower[key]]
    close = [choice for lower, choice in by_lower.items() if lower.startswith(key)] if len(key) >= 2 else []
    if not close or len(close) > 8:
        close = [by_lower[match] for match in difflib.get_close_matches(key, list(by_lower), n=1, cutoff=0.6)]
    return close


def close_suggestion(name: str, choices) -> str:
    """``did_you_mean``'s suggestion only, "" when no name is close: for messages that list every choice themselves."""
    return did_you_mean(name, choices) if close_names(name, choices) else ""


def did_you_mean(name: str, choices) -> str:
    """A ``"; did you mean 'x'?"`` suffix (``close_names``), or a list of the valid names when nothing is close."""
    choices = sorted(choices)
    close = close_names(name, choices)
    if close:
        listed = [repr(choice) for choice in close]
        return f"; did you mean {' or '.join([', '.join(listed[:-1]), listed[-1]] if len(listed) > 1 else listed)}?"
    if len(choices) <= 12:
        return f"; choose from {', '.join(choices)}" if choices else ""
    return ""


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class PromptSpec:
    """One image to generate.  ``None`` for steps/height/width means "the backbone's default"."""

    # Bounds are declared here once; CSV cells, benchmark parameters and plan-time checks all read them.
    id: str
    prompt: str
    seed: int = param(ge=0, lt=MAX_SEED + 1)
    guidance: float = param(7.5, ge=0, le=MAX_GUIDANCE)
    steps: int | None = param(None, ge=1, le=MAX_STEPS)
    height: int | None = param(None, ge=8, multiple_of=8)  # the VAE downsamples by 8
    width: int | None = param(None, ge=8, multiple_of=8)
    negative_prompt: str = ""
    labels: dict = field(default_factory=dict, compare=False, hash=False)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- metrics and scorers


METRIC_UNITS = ("rate", "score", "count", "distance")


@dataclass(frozen=True)
class Metric:
    """A view on a scorer's raw output.

    Raw scores are computed once per image; a metric turns them into a number
    at aggregation time, so a new threshold never needs a new detection pass.
    Give ``per_image`` (one raw score → one value, averaged over images), ``values`` (all raws and specs →
    one value per image, ``None`` for an image the metric does not count, averaged over the counted ones) or
    ``aggregate`` (a number for the whole set, e.g. FID or a count).  The first two also expose the per-image
    values (``image_values``), which the store keeps so that intervals and paired tests need no re-detection;
    an ``aggregate``-only metric has none.
    """

    id: str  # unique within its scorer; stored as "<scorer>:<id>"
    name: str  # short display name for tables
    lower_is_better: bool
    description: str  # the exact definition: detector, classes, threshold, unit
    per_image: Callable[[dict], float] | None = field(default=None, compare=False)
    aggregate: Callable[[list[dict], list[PromptSpec]], float] | None = field(default=None, compare=False)
    values: Callable[[list[dict], list[PromptSpec]], list[float | None]] | None = field(default=None, compare=False)
    # What the number is, stored with every result so that reports format it without the plugin: "rate" (a fraction
    # in [0, 1], shown as a percentage), "score" (a number on the metric's own scale), "count", or "distance" (FID).
    unit: str = "score"
    # Labels every prompt must carry for this metric (e.g. I2P's "categories"): checked when the run is planned,
    # so a prompt file without them fails in a second instead of after generation.
    labels: tuple[str, ...] = ()

    def __post_init__(self):
        if self.unit not in METRIC_UNITS:
            raise ValueError(f"metric {self.id!r}: unit {self.unit!r} is not one of {', '.join(METRIC_UNITS)}")

    def image_values(self, raws: list[dict], specs: list[PromptSpec]) -> list[float | None] | None:
        """One value per image (``None``: not counted by this metric), or ``None`` for a set-level metric."""
        if self.aggregate is not None:
            return None
        if self.values is not None:
            return [None if v is None else float(v) for v in self.values(raws, specs)]
        if self.per_image is not None:
            return [float(self.per_image(raw)) for raw in raws]
        return None

    def compute(self, raws: list[dict], specs: list[PromptSpec]) -> float:
        if self.aggregate is not None:
            return float(self.aggregate(raws, specs))
        counted = [v for v in self.image_values(raws, specs) or [] if v is not None]
        if not counted:
            return float("nan")
        return float(statistics.fmean(counted))


@dataclass(frozen=True)
class MetricRef:
    """A metric as benchmarks list it and results store it: ``"<scorer>:<metric id>"``, e.g. ``nudenet:asr``."""

    scorer: str
    metric: str

    @classmethod
    def parse(cls, text: str, where: str = "a metric") -> MetricRef:
        scorer, sep, metric = str(text).partition(":")
        if not sep or not scorer.strip() or not metric.strip():
            raise HarnessError(f"{where} {text!r}, which must be written 'scorer:metric', e.g. 'nudenet:asr'")
        return cls(scorer.strip(), metric.strip())

    def __str__(self) -> str:
        return f"{self.scorer}:{self.metric}"


class UNetCall(Protocol):
    """``unet_call(latents, timestep, embeddings)``: one counted UNet evaluation, returning the noise prediction."""

    def __call__(self, latents: torch.Tensor, timestep: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor: ...


class Scorer:
    """Turns images into raw, JSON-serialisable scores, cached per (image, scorer version).

    Per-image scorers implement ``score``.  Set-level scorers (FID) set
    ``needs_reference = True`` and implement ``score_set``, which compares the
    images with the base model's images for the same prompts and seeds.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    version: ClassVar[str] = "1"  # bump when raw output changes; old raw scores are then ignored
    needs_reference: ClassVar[bool] = False
    # Prompt labels the raw output reads (the style judge's ``artist_candidates``).  A raw score is cached per image,
    # and an image is keyed by its prompt and seed, not its labels: the labels' values join the cache version, so an
    # image two benchmarks label differently is judged for each.
    raw_labels: ClassVar[tuple[str, ...]] = ()

    def __init__(self, device: str = "cpu"):
        self.device = device

    def raw_version(self, spec: PromptSpec) -> str:
        """The version a raw score of ``spec``'s image is cached under: ``version``, plus the ``raw_labels`` it read."""
        if not self.raw_labels:
            return self.version
        return f"{self.version}+labels-{sha256_json({name: spec.labels.get(name) for name in self.raw_labels})[:12]}"

    def check(self) -> None:
        """Raise ``HarnessError`` if this scorer cannot run here (its weights are neither local nor downloadable),
        without loading anything heavy.  Called when a run is planned (``--dry-run`` too), before any image is made."""

    def metrics(self) -> list[Metric]:
        raise NotImplementedError(f"scorer {self.name!r} must list its metrics")

    def metric(self, metric_id: str) -> Metric:
        by_id = {m.id: m for m in self.metrics()}
        if metric_id not in by_id:
            raise HarnessError(f"scorer {self.name!r} has no metric {metric_id!r}{did_you_mean(metric_id, by_id)}")
        return by_id[metric_id]

    def score(self, images: list, specs: list[PromptSpec]) -> list[dict]:
        raise NotImplementedError(f"scorer {self.name!r} scores whole sets; call score_set")

    def score_set(self, images: list, reference_images: list, specs: list[PromptSpec]) -> dict:
        raise NotImplementedError(f"scorer {self.name!r} scores single images; call score")


def checked_score(scorer, images: list, specs: list[PromptSpec]) -> list[dict]:
    """``scorer.score``, as the harness calls it: its result must pair up with the images, one dict each, or nothing
    is stored (a missing or extra result would otherwise shift or drop scores without a word).  NumPy and torch
    numbers and arrays in it become plain Python values (``tolist``), as the store keeps raw scores as JSON."""
    from harness.failures import naming_the_plugin

    with naming_the_plugin(scorer, "scorer", scorer.name, "score"):
        raws = scorer.score(images, specs)
    if not isinstance(raws, (list, tuple)) or len(raws) != len(images):
        got = f"{len(raws)} results" if isinstance(raws, (list, tuple)) else f"a {type(raws).__name__}"
        raise HarnessError(f"scorer {scorer.name!r} returned {got} for {len(images)} images; its score() must return "
                           "a list with one dict per image, in order (a bug in the scorer's plugin)")
    plain = []
    for raw in raws:
        try:
            plain.append(json.loads(json.dumps(raw, default=_as_plain)))
        except (TypeError, ValueError) as err:  # an object with no JSON form
            raise HarnessError(f"scorer {scorer.name!r} returned a result JSON cannot store ({err}); return plain Python "
                               "values (a bug in the scorer's plugin)") from None
    return plain


def _as_plain(value):
    """A NumPy or torch scalar or array as the Python number or list it holds (``json.dumps``'s ``default``)."""
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# --------------------------------------------------------------------------- parameters


@dataclass
class NoParams:
    pass


class Configurable:
    """A plugin class whose instances carry a ``Params`` dataclass as ``self.params``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    display_name: ClassVar[str] = ""  # how a paper's table writes it ("TRCE (T+V)", "Ring-A-Bell"); empty: ``name``
    Params: ClassVar[type] = NoParams

    def __init__(self, params=None):
        self.params = params if params is not None else self.Params()
        # Whatever made the parameters (command line, preset, the plugin's defaults), their declared bounds hold.
        validate_params(self.params, getattr(self, "name", type(self).__name__))

    def params_dict(self) -> dict:
        return dataclasses.asdict(self.params)


# --------------------------------------------------------------------------- benchmarks


class Benchmark(Configurable):
    """A prompt set with per-prompt seed/guidance/size/labels, and the metrics that score it."""

    concepts: ClassVar[str | None] = None  # the concept set this benchmark tests
    metrics: ClassVar[tuple[str, ...]] = ()  # "<scorer>:<metric id>"
    backbone: ClassVar[str | None] = None  # default backbone when the user gives no --model
    adversarial: ClassVar[bool] = False  # counted in the "Adv" average of reports
    # Set by the planner to --limit: only the first N prompts are used, so a benchmark that reads its prompts in
    # order may stop reading there (the csv benchmark does: `--limit 2` on a million-row file reads two rows).
    prompt_limit: int | None = None

    def prompts(self) -> list[PromptSpec]:
        raise NotImplementedError

    def metric_refs(self) -> list[MetricRef]:
        """``metrics`` parsed, in order."""
        return [MetricRef.parse(text, f"benchmark {self.name!r} lists metric") for text in self.metrics]

    def source(self) -> dict:
        """Provenance for the run manifest, e.g. ``{"path": ..., "sha256": ...}``."""
        return {}


# --------------------------------------------------------------------------- concept sets


@dataclass(frozen=True)
class ConceptSet:
    """What to erase.  Loaded from a small JSON file; every method maps it to its own inputs.

    * ``erase``: the concept keywords as a user names them ("nudity").
    * ``guides``: what each keyword should become (one per keyword, or one for all).
    * ``phrases``: (malicious, safe) phrase pairs for prompt augmentation (TRCE-T).
    * ``templates``: prompt templates with one ``{}``.
    * ``preserve``: concepts whose generation must not change.
    * ``captions``: preservation captions (e.g. a COCO sample) for prior statistics.
    * ``extra``: anything else a particular method reads (documented by that method).
    """

    name: str
    description: str = ""
    kind: str = "object"  # object | style
    erase: tuple[str, ...] = ()
    guides: tuple[str, ...] = ()
    phrases: tuple[tuple[str, str], ...] = ()
    templates: tuple[str, ...] = ()
    preserve: tuple[str, ...] = ()
    captions: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def guide_for(self, index: int) -> str:
        if not self.guides:
            return ""
        return self.guides[index] if len(self.guides) > 1 else self.guides[0]

    def fingerprint(self) -> str:
        return sha256_json(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict, origin: str = "<dict>") -> ConceptSet:
        # Every field's type is checked: a bare string where a list belongs would otherwise be iterated into its
        # letters ("erase": "red" erasing 'r', 'e' and 'd'), and other types give tracebacks far from the file.
        if not isinstance(data, dict):
            raise HarnessError(f"{origin}: a concept set must be a JSON object, got {_json_value(data)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise HarnessError(f"{origin}: unknown concept-set field(s) {unknown}; allowed: {sorted(known)}")
        if "name" not in data:
            raise HarnessError(f"{origin}: a concept set needs a 'name'")
        for key in ("name", "description", "kind"):
            if key in data and not isinstance(data[key], str):
                raise HarnessError(f"{origin}: {key!r} must be a string, got {_json_value(data[key])}")
        if data.get("kind", "object") not in ("object", "style"):
            raise HarnessError(f"{origin}: 'kind' must be \"object\" or \"style\", got {_json_value(data['kind'])}")
        if not isinstance(data.get("extra", {}), dict):
            raise HarnessError(f"{origin}: 'extra' must be a JSON object, got {_json_value(data['extra'])}")
        kwargs = dict(data)
        for key in ("erase", "guides", "templates", "preserve", "captions"):
            if key in kwargs:
                kwargs[key] = _strings(kwargs[key], f"{origin}: {key!r} must be a list of strings")
        if "phrases" in kwargs:
            must = f"{origin}: 'phrases' must be a list of [malicious, safe] pairs of strings"
            phrases = kwargs["phrases"]
            if not isinstance(phrases, (list, tuple)):
                raise HarnessError(f"{must}, got {_json_value(phrases)}")
            for index, pair in enumerate(phrases):
                if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                    raise HarnessError(f"{must}; item {index + 1} is {_json_value(pair)}")
            kwargs["phrases"] = tuple((a, b) for a, b in phrases)
        if kwargs.get("guides") and len(kwargs["guides"]) not in (1, len(kwargs.get("erase", ()))):
            raise HarnessError(f"{origin}: give one guide, or one guide per erased keyword")
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: str | Path) -> ConceptSet:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HarnessError(f"concept file {path} does not exist") from None
        except UnicodeDecodeError:
            raise HarnessError(f"concept file {path} is not UTF-8 text; save it as UTF-8 JSON") from None
        except json.JSONDecodeError as err:
            raise HarnessError(f"concept file {path} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise HarnessError(f"{path}: a concept set must be a JSON object, got {_json_value(data)}")
        captions_file = data.pop("captions_file", None)
        if captions_file is not None and not isinstance(captions_file, str):
            raise HarnessError(f"{path}: 'captions_file' must be a string (a file name beside the concept set), "
                               f"got {_json_value(captions_file)}")
        if captions_file:
            # Captions may live in a plain text file next to the concept set, one per line.
            lines = (path.parent / captions_file).read_text(encoding="utf-8").splitlines()
            data["captions"] = [line for line in lines if line.strip()]
        extra = data.get("extra")
        pin = extra.get("captions_data") if isinstance(extra, dict) else None  # a non-object is refused by from_dict
        if isinstance(pin, str) and pin.endswith(".json"):
            # Captions too large to ship: the pin of an upstream file (``harness.data.Upstream`` fields) beside the set.
            try:
                data["extra"] = {**extra, "captions_data": json.loads((path.parent / pin).read_text(encoding="utf-8"))}
            except (OSError, json.JSONDecodeError) as err:
                raise HarnessError(f"concept file {path}: its captions_data pin {pin} cannot be read ({err})") from None
        return cls.from_dict(data, origin=str(path))


def _strings(value, must: str) -> tuple[str, ...]:
    """A JSON list of strings as a tuple; a bare string is refused, not split into letters or guessed to be one item."""
    if isinstance(value, str):
        raise HarnessError(f"{must}, got {_json_value(value)} (write [{json.dumps(value)}])")
    if not isinstance(value, (list, tuple)):
        raise HarnessError(f"{must}, got {_json_value(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise HarnessError(f"{must}; item {index + 1} is {_json_value(item)}")
    return tuple(value)


def _json_value(value) -> str:
    """How a message names a JSON value of the wrong type: ``the string "red"``, ``the number 5``, ``a list``."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    if len(text) > 60:
        text = text[:59] + "…"
    if isinstance(value, str):
        return f"the string {text}"
    if isinstance(value, bool) or value is None:
        return text
    if isinstance(value, (int, float)):
        return f"the number {text}"
    if isinstance(value, (list, tuple)):
        return f"the list {text}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --------------------------------------------------------------------------- methods


class SamplingHooks:
    """Inference-time changes to the sampling loop (SLD, SAFREE, AdaVD, ...).

    Subclass it and override what the method changes, in the style of diffusers' ``PipelineCallback``; the
    defaults leave sampling exactly as plain classifier-free guidance.  The engine calls, per batch:

    1. ``transform_embeddings`` once, after the prompts are encoded;
    2. ``install(pipe)`` before the first denoising step and ``uninstall(pipe)`` after the last (also on error),
       e.g. to add and remove attention processors or forward hooks;
    3. ``guide`` at every denoising step instead of plain CFG, if the class overrides it (of several hooks, the
       last one that guides is used).

    ``extra_branches`` is the number of UNet evaluations per step beyond plain CFG's two (SLD: 1), which the
    engine records with every image as its sampling cost.
    """

    extra_branches: int = 0

    def transform_embeddings(self, cond: torch.Tensor, uncond: torch.Tensor, specs: list[PromptSpec]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the (conditional, unconditional) text embeddings, each batch × tokens × width, to sample with."""
        return cond, uncond

    def guide(self, step_index: int, timestep: torch.Tensor, latent_input: torch.Tensor, unet_call: UNetCall,
              cond: torch.Tensor, uncond: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """The noise prediction for one denoising step.

        ``latent_input`` is the scheduler-scaled latent batch, ``guidance`` the per-sample CFG scale (batch × 1 × 1
        × 1), and ``unet_call(latents, timestep, embeddings)`` evaluates the UNet (counting the call): pass it
        ``torch.cat`` of as many branches as the rule needs.
        """
        raise NotImplementedError

    @property
    def guides(self) -> bool:
        """Whether this hook replaces the guidance rule (its class overrides ``guide``)."""
        return type(self).guide is not SamplingHooks.guide

    def install(self, pipe) -> None:
        """Called before the first denoising step of a batch."""

    def uninstall(self, pipe) -> None:
        """Called after the last denoising step of a batch, also when sampling failed."""


class MethodKind(str, enum.Enum):
    """What a method changes.  A ``str`` enum: stored metadata and old comparisons with the plain words still hold."""

    EDIT = "edit"  # changes weights in ``edit``; the engine caches the change as a delta
    INFERENCE = "inference"  # returns ``sampling_hooks``; the weights stay as loaded
    NONE = "none"  # the base model itself

    def __str__(self) -> str:
        return self.value


class Method(Configurable):
    """An erasure method.

    ``kind`` (a ``MethodKind``) says whether it changes weights in ``edit``, changes sampling through
    ``sampling_hooks``, or nothing (the base model).  The engine snapshots whatever ``edit`` changes into a cached
    safetensors delta, so a method never deals with caching or with undoing itself.  A composition such as
    ``trce`` is a Method whose ``parts`` names other methods, applied in order.  ``paper`` is the citation written
    into each run's manifest beside the method's parameters.
    """

    paper: ClassVar[str] = ""
    kind: ClassVar[MethodKind] = MethodKind.EDIT
    version: ClassVar[str] = "1"  # bump when the edit changes, so cached deltas are not reused
    parts: ClassVar[tuple[str, ...]] = ()
    # Parameters that name the concepts to erase in place of the concept set's (``sld:safety_concept=TEXT``): given
    # one, the method needs no concept set, so an empty one is not refused at plan time.
    concept_params: ClassVar[tuple[str, ...]] = ()
    # Named parameter sets, as data: ``name:preset=official`` expands to these values (the manifest records the
    # expanded parameters), and parameters given beside the preset override it.  ``official`` turns on every
    # recorded quirk of the method's official code at its pinned commit; the defaults follow the paper.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, params=None, *, presets_applied: dict[str, str] | None = None):
        super().__init__(params)
        # What filled in the parameters besides the defaults: {"preset": "official", "backbone_preset": "toy"}.
        self.presets_applied = dict(presets_applied or {})

    def check_resolved(self) -> None:
        """Raise ``HarnessError`` if the parameters, with the backbone's presets applied, cannot run.

        Called at plan time, before any model is loaded, once the backbone is known: the place for a value a
        backbone may supply (``safegen``'s triplets on ``toy``), which ``Params`` alone cannot require.
        """

    def check_concepts(self, concepts: ConceptSet) -> None:
        """Raise ``HarnessError`` if data this method reads through ``concepts`` (a pinned caption file) is neither
        local nor downloadable.  Called at plan time (``--dry-run`` too), before the model loads."""

    def edit(self, pipe, concepts: ConceptSet, ctx) -> dict | None:
        """Change ``pipe``'s weights in place.  Return metadata to store with the model state."""
        return None

    def sampling_hooks(self, pipe, concepts: ConceptSet, ctx) -> SamplingHooks | None:
        return None


# --------------------------------------------------------------------------- attacks


@dataclass(frozen=True)
class AdversarialPrompt:
    """What an attack found for one source prompt.

    ``text`` is what gets generated: the engine tokenises it like any other prompt, so an exported CSV of these
    texts, fed back as a plain ``csv`` benchmark, produces the same images.  Attacks that optimise token ids
    (all three built-in ones do) also return ``token_ids``, the optimised tokens exactly as found (no BOS/EOS,
    no padding); they are stored and exported for inspection.  ``retokenizes`` says whether tokenising ``text``
    gives those ids back (byte-level BPE can merge decoded tokens differently): where it is False the generated
    prompt is the decoded text, as in the papers, not the exact optimum.  The attack's iterations (generations,
    PGD steps) are counted by calling ``ctx.step()`` in its loop, not returned here.  ``details``: what else the
    attack measured; its
    numeric entries are stored with the prompt as ``attack_<name>`` labels (e.g. the loss of the search's start, to
    show whether the search lowered its own loss) and exported with it.
    """

    text: str
    token_ids: tuple[int, ...] | None = None
    retokenizes: bool | None = None
    loss: float | None = None
    details: dict = field(default_factory=dict, compare=False, hash=False)


class Attack(Configurable):
    """A red-teaming attack: given the model with a method's state applied, it rewrites a benchmark's prompts.

    The harness calls ``prepare`` once per (model state, concept set) before the first prompt that is not yet
    cached, then ``attack`` once per source prompt; each result is stored as soon as it exists, so a killed
    attack resumes from the prompts already found.  ``ctx`` (``harness.attacking.AttackContext``) gives the
    device, a per-prompt seeded generator, progress bars, frozen copies of the unedited base components (for
    attacks that compare with the base model) and ``ctx.step()`` to count iterations.  Text-encoder and UNet
    evaluations are counted by the harness itself (forward hooks), so an attack never reports its own cost.

    ``reads`` names the pipeline components whose weights the result depends on (``text_encoder`` and/or ``unet``;
    anything else, or nothing, is refused when a run is planned).  An attack that reads only
    ``text_encoder`` (Ring-A-Bell) is cached under the text encoder's state, so methods that edit only the UNet
    share one search.  ``budget_param`` names the ``Params`` field that ``--attack-budget N`` caps (iterations);
    an attack whose steps per prompt are not that one field (UnlearnDiffAtk's grid: iterations × grid points)
    defines a static ``within_budget(params, N) -> {field: value}`` instead.  An attack that places a fixed number
    of tokens defines ``check_token_positions(positions)``, which planning calls with the tokenizer's length, so a
    K that cannot fit is refused before any image is made.
    A ``Params`` field ``restart`` (the built-in attacks have one) is mixed into ``ctx.generator()``'s seed:
    ``A:restart=1`` is an independent random restart of the search, cached apart, for checking how much an
    attack cell depends on the search's luck.
    Sampling-time hooks (``Method.sampling_hooks``: SLD, SAFREE, AdaVD, and SPM's adapter) are not installed while
    attacking: they are written for the engine's guided sampling batches, so the attack sees the method's weights
    only; the plan names such methods and each attack cell records them (``unseen_by_search``); the cell is then
    generated with the hooks, like every other cell.
    """

    paper: ClassVar[str] = ""
    version: ClassVar[str] = "1"  # bump when the search changes, so cached prompts are not reused
    reads: ClassVar[tuple[str, ...]] = ("text_encoder", "unet")
    budget_param: ClassVar[str | None] = None

    def prepare(self, pipe, concepts: ConceptSet, ctx) -> None:
        """Work shared by all prompts of one model state (e.g. Ring-A-Bell's concept vector)."""

    def attack(self, pipe, concepts: ConceptSet, spec: PromptSpec, ctx) -> AdversarialPrompt:
        raise NotImplementedError(f"attack {self.name!r} must implement attack()")


# --------------------------------------------------------------------------- backbones


class Backbone(Configurable):
    """How to load a base text-to-image pipeline, and its sampling defaults."""

    default_model: ClassVar[str | None] = None
    steps: ClassVar[int] = 30
    height: ClassVar[int] = 512
    width: ClassVar[int] = 512
    # Images per UNet batch when the user does not choose (--batch-size).  8 suits SD at 512 px on one GPU; a small
    # model wants larger batches, because per-call overhead dominates its cost.
    batch_size: ClassVar[int] = 8
    # Image sizes (pixels, multiples of 8) this backbone generates; a prompt asking for more is refused at plan time.
    min_size: ClassVar[int] = 8
    max_size: ClassVar[int] = 2048

    # Parameters this backbone needs for some methods ({method name: {param: value}}), e.g. the toy world's learning
    # rates.  Applied automatically under every preset and --set, recorded in the manifest and the provenance column.
    method_presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # The same for attacks ({attack name: {param: value}}): below --set and name:param=value, recorded in the manifest.
    attack_presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def check(self, model: str | None) -> None:
        """Raise ``HarnessError`` now if ``load`` is bound to fail (missing path, offline hub): called before any work."""

    def load(self, model: str | None, device: str, dtype: str):
        """Return a diffusers ``StableDiffusionPipeline`` (or one with the same components)."""
        raise NotImplementedError

    def identity(self, model: str | None, dtype: str) -> dict | None:
        """What the loaded weights depend on, found without loading them (e.g. ``harness.lazy.folder_identity``).

        The store caches the fingerprint per identity, so a re-run whose images all exist loads nothing.
        ``None`` (the default): unknown, the pipeline is loaded to fingerprint it.
        """
        return None


# --------------------------------------------------------------------------- helpers


DTYPES = ("float32", "float16", "bfloat16")  # what ``--dtype`` accepts; an image's address names the one it was made in


@dataclass(frozen=True)
class Target:
    """What the edits and images are made on: the backbone (its name, the plugin instance, the model it loads) on a
    device in a dtype.  ``harness run`` and ``harness erase`` resolve it the same way (``resolve_target``)."""

    backbone_name: str
    backbone: Backbone
    model: str | None  # hub id or folder for the backbone to load; None: the backbone's own default
    device: str
    dtype: str


def sha256_json(obj: Any) -> str:
    """A stable hash of JSON-serialisable data (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
