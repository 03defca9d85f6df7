"""One validation path for every parameter: bounds declared once, on the dataclass, as data.

A plugin declares a field's bounds where it declares the field::

    @dataclass
    class Params:
        guidance: float = param(7.5, ge=0)
        seed: int | None = param(None, ge=0, lt=2**64)
        size: int | None = param(None, ge=8, multiple_of=8)

and ``validate_params`` enforces them, with the field's declared type, on every
instance, wherever its values came from: a benchmark parameter, ``--set``, a
preset, the plugin's own defaults (``Configurable.__init__`` calls it) or a CSV
cell (``check_field`` with ``PromptSpec``'s bounds).  Independently of bounds,
every ``float`` must be finite: a NaN guidance turns every image black, and a
black image scores as perfect erasure.

Errors are ``HarnessError``s of one line: what is wrong and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import MISSING, dataclass

BOUNDS_KEY = "harness.bounds"


def _error(message: str) -> Exception:
    from harness.api import HarnessError  # harness.api imports this module, so not at import time

    return HarnessError(message)


@dataclass(frozen=True)
class Bounds:
    """Inclusive (``ge``/``le``) and exclusive (``gt``/``lt``) limits, and a step (``multiple_of``), for numbers."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    multiple_of: int | None = None

    def describe(self) -> str:
        parts = []
        for bound, symbol in ((self.ge, "≥"), (self.gt, ">"), (self.le, "≤"), (self.lt, "<")):
            if bound is not None:
                parts.append(f"{symbol} {_show(bound)}")
        if self.multiple_of is not None:
            parts.append(f"a multiple of {self.multiple_of}")
        return " and ".join(parts)

    def violated(self, value) -> bool:
        return (
            (self.ge is not None and not value >= self.ge)
            or (self.gt is not None and not value > self.gt)
            or (self.le is not None and not value <= self.le)
            or (self.lt is not None and not value < self.lt)
            or (self.multiple_of is not None and value % self.multiple_of != 0)
        )


def _show(bound) -> str:
    """``2**64`` reads better than 18446744073709551616 in a message."""
    if isinstance(bound, int) and bound >= 2**32 and (bound & (bound - 1)) == 0:
        return f"2**{bound.bit_length() - 1}"
    return repr(bound)


def param(default=MISSING, *, ge=None, gt=None, le=None, lt=None, multiple_of=None, default_factory=MISSING, **field_options):
    """A dataclass ``field`` that carries its bounds (like pydantic's ``Field(ge=...)``)."""
    bounds = Bounds(ge=ge, gt=gt, le=le, lt=lt, multiple_of=multiple_of)
    metadata = {**field_options.pop("metadata", {}), BOUNDS_KEY: bounds}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata, **field_options)


def bounds_of(field: dataclasses.Field) -> Bounds | None:
    return field.metadata.get(BOUNDS_KEY)


# --------------------------------------------------------------------------- type checks


def _type_problem(value, annotation) -> str | None:
    """Why ``value`` does not fit ``annotation``, or None.  Types the command line cannot express are not checked."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None if type(None) in args else "must not be empty (None)"
        problems = [_type_problem(value, arg) for arg in args if arg is not type(None)]
        return None if any(problem is None for problem in problems) else problems[0]
    if origin is typing.Literal:
        return None if value in args else f"must be one of {', '.join(map(str, args))}"
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return "must be a list"
        types_, fixed = item_types(annotation)
        if fixed and len(value) != len(types_):
            return f"must have {len(types_)} items"
        return next((p for p in (_type_problem(v, types_[i] if fixed else types_[0]) for i, v in enumerate(value)) if p), None)
    if annotation is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if annotation is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        return None if math.isfinite(value) else "must be a finite number"
    if annotation is str:
        return None if isinstance(value, str) else "must be text"
    return None


def _bounds_problem(value, bounds: Bounds | None) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"  # whatever the declared type: NaN passes every comparison-free check
    if bounds is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, (tuple, list)):
            return next((p for p in (_bounds_problem(v, bounds) for v in value) if p), None)
        return None
    return f"must be {bounds.describe()}" if bounds.violated(value) else None


def check_value(value, annotation, bounds: Bounds | None, where: str) -> None:
    """Raise a one-line ``HarnessError`` naming ``where`` if ``value`` has the wrong type or breaks its bounds."""
    problem = _type_problem(value, annotation) or _bounds_problem(value, bounds)
    if problem:
        expected = bounds.describe() if bounds is not None and "finite" in problem and bounds.describe() else ""
        suffix = f" ({expected})" if expected else ""
        raise _error(f"{where} {problem}{suffix}; got {value!r}")


def _hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: check bounds and finiteness only
        return {}


def field_bounds(cls, name: str) -> Bounds | None:
    return next((bounds_of(f) for f in dataclasses.fields(cls) if f.name == name), None)


def check_field(cls, name: str, value, where: str) -> None:
    """Check one value against the declared type and bounds of field ``name`` of dataclass ``cls``."""
    check_value(value, _hints(cls).get(name, typing.Any), field_bounds(cls, name), where)


def validate_params(params, label: str, separator: str = ".") -> None:
    """Check every field of a Params instance; ``label`` names the plugin in the message (``csv.guidance ...``)."""
    if not dataclasses.is_dataclass(params):
        return
    hints = _hints(type(params))
    for field in dataclasses.fields(params):
        check_value(getattr(params, field.name), hints.get(field.name, typing.Any), bounds_of(field), f"{label}{separator}{field.name}")


# --------------------------------------------------------------------------- lists on the command line

LIST_SEPARATOR = "|"  # not ",": a comma separates the items of --methods/--bench (registry.GRAMMAR_CHARACTERS)


def sequence_type(annotation):
    """The list or tuple annotation in ``annotation`` (``tuple[str, ...] | None`` → ``tuple[str, ...]``), or None."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return next((found for found in map(sequence_type, typing.get_args(annotation)) if found is not None), None)
    return annotation if origin in (tuple, list) else None


def item_types(annotation) -> tuple[list, bool]:
    """A list or tuple annotation's item types and whether its length is fixed: ``tuple[int, str]`` → ([int, str],
    True); ``tuple[float, ...]`` → ([float], False); a bare ``tuple`` or ``list`` → ([Any], False)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple and args and args[-1] is not Ellipsis and args != ((),):
        return list(args), True
    return [args[0] if args and args != ((),) else typing.Any], False


def _item_kind(annotation) -> tuple[str, list[str]]:
    """What one item is, in the plural, and two examples of it."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _item_kind(args[0])
    if typing.get_origin(annotation) is typing.Literal:
        choices = [str(arg) for arg in typing.get_args(annotation)]
        return f"values out of {', '.join(choices)}", (choices * 2)[:2]
    if annotation is bool:
        return "true/false values", ["true", "false"]
    if annotation is int:
        return "integers", ["1", "2"]
    if annotation is float:
        return "numbers", ["0.5", "2"]
    return "items", ["a", "b"]


def list_text(value) -> str:
    """A list default as the command line writes it: (1.0, 0.9) → "1.0|0.9"."""
    def text(item) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        return "none" if item is None else str(item)

    return LIST_SEPARATOR.join(text(item) for item in value)


def list_form(annotation, example=None) -> str:
    """How the command line writes a list or tuple parameter, for ``harness list --params`` and for the error a bad
    value gets: "numbers separated by '|' (e.g. 0.5|2; empty for ())".  ``example``: the default, shown when it has
    items (what the user sees is then what they would type to get it back)."""
    sequence = sequence_type(annotation) or annotation
    types_, fixed = item_types(sequence)
    if fixed:
        kinds = {_item_kind(t)[0] for t in types_}
        kind = f"{len(types_)} {kinds.pop() if len(kinds) == 1 else 'items'}"
        sample = [_item_kind(t)[1][0] for t in types_]
    else:
        kind, sample = _item_kind(types_[0])
    shown = list_text(example) if isinstance(example, (tuple, list)) and example else LIST_SEPARATOR.join(sample)
    optional = sequence is not annotation and type(None) in typing.get_args(annotation)
    # Optional lists read "" as None (spec._convert), so the empty value is only promised where it gives an empty list.
    empty = "" if fixed or optional else f"; empty for {'()' if typing.get_origin(sequence) is tuple else '[]'}"
    return f"{kind} separated by '{LIST_SEPARATOR}' (e.g. {shown}{empty})"


# --------------------------------------------------------------------------- a plugin's own defaults


def field_default(field: dataclasses.Field):
    """A field's default, or MISSING: none, or a ``default_factory`` that fails (it may need the run's context, and
    fails loudly when it is used)."""
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        try:
            return field.default_factory()
        except Exception:
            return MISSING
    return MISSING


def check_defaults(params_cls, label: str) -> None:
    """A ``Params`` dataclass whose own default breaks its declared bounds, type or Literal (``param(0, ge=1)``) is the
    plugin author's mistake: refused in one line when the plugin is loaded, instead of surfacing as the user's error
    (``x must be ≥ 1; got 0``) in whichever run first leaves the parameter alone."""
    if not dataclasses.is_dataclass(params_cls):
        return
    hints = _hints(params_cls)
    owner = f"{label}: {params_cls.__qualname__}"
    for field in dataclasses.fields(params_cls):
        bounds = bounds_of(field)
        for key in ("ge", "gt", "le", "lt", "multiple_of"):
            bound = getattr(bounds, key, None)
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))):
                # Comparing with it would raise a TypeError on the first value checked, deep inside a run.
                raise _error(f"{owner}.{field.name} has the bound {key}={bound!r}, which is not a number; give param() "
                             f"a number ({key}=1, not {key}='1')")
        default = field_default(field)
        if default is MISSING:
            continue
        annotation = hints.get(field.name, typing.Any)
        problem = _type_problem(default, annotation)
        if problem:
            raise _error(f"{owner}.{field.name} defaults to {default!r}, which its type {_type_name(annotation)} does not "
                         f"allow (it {problem}); change the default or the annotation")
        problem = _bounds_problem(default, bounds)
        if problem:
            raise _error(f"{owner}.{field.name} defaults to {default!r}, outside its own bounds (it {problem}); change the "
                         "default or the bounds given to param()")


def _type_name(annotation) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


# --------------------------------------------------------------------------- prompt specs


def validate_spec(spec, where: str, *, min_size: int | None = None, max_size: int | None = None) -> None:
    """A ``PromptSpec``'s seed, guidance, steps and size against its declared bounds and the backbone's size range."""
    validate_params(spec, where, separator=" ")
    for name in ("height", "width"):
        size = getattr(spec, name)
        if size is None:
            continue
        if (min_size is not None and size < min_size) or (max_size is not None and size > max_size):
            raise _error(f"{where} {name} must be within the backbone's range {min_size}..{max_size}; got {size}")


def validate_specs(label: str, specs, backbone) -> None:
    """Every prompt of a benchmark, before any work: a bad seed, guidance or size names its prompt, and no two prompts
    share an id (results, images and per-image values are keyed by it; two would collide after generating)."""
    from harness.api import PromptSpec

    seen: set[str] = set()
    for index, spec in enumerate(specs):
        if not isinstance(spec, PromptSpec):
            raise _error(f"benchmark {label!r}: prompts() must return harness.api.PromptSpec objects; item {index} is a "
                         f"{type(spec).__name__}")
        if spec.id in seen:
            raise _error(f"benchmark {label!r}: two prompts have the id {spec.id!r}; each PromptSpec its benchmark "
                         "returns needs its own id (images and per-image results are keyed by it)")
        seen.add(spec.id)
        validate_spec(spec, f"benchmark {label!r}, prompt {spec.id}:", min_size=backbone.min_size, max_size=backbone.max_size)


def check_device(device: str) -> None:
    """Refuse, before any work, a device this torch cannot use (``--device cuda`` on a CPU-only build)."""
    if device == "cpu":
        return  # always there; importing torch to confirm it would cost seconds before the plan prints
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise _error(f"--device {device!r} is not a device; use cpu, cuda, cuda:1 or mps") from None
    if parsed.type == "cuda":
        if torch.version.cuda is None:
            raise _error(f"--device {device}: this torch ({torch.__version__}) was built without CUDA; use --device cpu, "
                         "or install a CUDA build of torch")
        if not torch.cuda.is_available():
            raise _error(f"--device {device}: no CUDA GPU is visible (driver missing or CUDA_VISIBLE_DEVICES empty); use --device cpu")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise _error(f"--device {device}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    elif parsed.type == "mps":
        backend = getattr(torch.backends, "mps", None)
        if backend is None or not backend.is_available():
            raise _error(f"--device {device}: Apple's MPS backend is not available here; use --device cpu")
    elif parsed.type != "cpu":
        raise _error(f"--device {device}: the harness runs on cpu, cuda or mps")


def check_metric_labels(registry, label: str, benchmark, specs, scorer_of=None) -> None:
    """Every scorer a benchmark's metrics name must exist, and every label they read must be on every prompt: found
    now, not after generation.  ``scorer_of(name)``: the plan's scorer instances (one per scorer for all its checks);
    without it each metric's scorer is made here."""
    if not benchmark.metric_refs():
        raise _error(f"benchmark {label!r} lists no metrics; give its class a metrics tuple such as "
                     "('nudenet:asr',) (see `harness list scorers`)")
    for ref in benchmark.metric_refs():
        # An unknown scorer is refused here, with a did-you-mean: the run resolves scorers only after the model loads.
        registry.entry("scorers", ref.scorer)
        scorer = scorer_of(ref.scorer) if scorer_of else registry.get("scorers", ref.scorer)(device="cpu")
        metric = scorer.metric(ref.metric)
        for name in getattr(metric, "labels", ()):
            missing = [spec.id for spec in specs if name not in spec.labels]
            if missing:
                raise _error(f"metric {ref} needs the label {name!r} on every prompt; benchmark {label!r} has none on "
                             f"{len(missing)} of {len(specs)} prompts (first: {missing[0]}); add a {name!r} column to the prompt file "
                             "or choose another metric")
