"""The command-line grammar for plugin selections and their parameters.

    --methods uce,rece:lamb=0.1,erase_scale=2,trce-t+sld:strength=max
    --bench i2p,csv:path=my.csv,concepts=sexual
    --set trce-t.lamb=0.02 --set csv.path=other.csv

Items are separated by commas; a chunk of the form ``key=value`` that follows
an item continues that item's parameters.  ``a+b`` composes methods in order.
Values are converted to the type declared in the plugin's ``Params`` dataclass; a list or tuple is written with
``|`` between its items (``safree:concepts=nudity|naked person``, ``--set safree.freeu=1|1|0.9|0.2``), since a
comma already ends the item.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field

from harness.api import HarnessError, close_suggestion
from harness.validate import LIST_SEPARATOR, item_types, list_form, validate_params

_PARAM_CHUNK = re.compile(r"^[A-Za-z_][\w.-]*=")
# Where a parameter chunk's value ends and the next composition part begins: "y=2+b" is y=2 then part b, while a value
# such as "1e+3" or "runs/a+b.csv" keeps its "+" (what follows it is not a name ending at ":", "+" or the end).
_NEXT_PART = re.compile(r"\+(?=[A-Za-z][\w-]*(?::|\+|$))")


@dataclass
class Selection:
    """One selected plugin, e.g. ``rece:lamb=0.1`` → name "rece", params {"lamb": "0.1"}."""

    name: str
    params: dict[str, str] = field(default_factory=dict)

    def params_text(self) -> str:
        """The parameters as a label writes them after the colon ("erase_scale=2,lamb=0.1"); "" for none."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))

    def label(self) -> str:
        return f"{self.name}:{self.params_text()}" if self.params else self.name

    @classmethod
    def parse(cls, text: str, option: str = "a selection") -> Selection:
        """One item ``name[:k=v,...]`` (no ``+`` composition, no second item), e.g. a stored label ``uce:lamb=0.1``."""
        items = parse_selections(text, option)
        if len(items) != 1 or len(items[0]) != 1:
            raise HarnessError(f"{option} {text!r} must be one name with its parameters (name:k=v,...)")
        return items[0][0]


def parse_selections(text: str, option: str) -> list[list[Selection]]:
    """Parse a comma list of items, each a ``+``-composition of ``name[:k=v,...]`` parts."""
    if not text or not text.strip():
        raise HarnessError(f"{option} needs at least one name")
    items: list[list[Selection]] = []
    for chunk in text.split(","):
        chunk = chunk.strip()
        if not chunk:
            raise HarnessError(f"{option} {text!r} has an empty item (two commas in a row?)")
        if _PARAM_CHUNK.match(chunk) and ":" not in chunk.split("=", 1)[0]:
            if not items:
                raise HarnessError(f"{option} {text!r} starts with a parameter; write name:{chunk}")
            # "a:x=1,y=2+b": y=2 belongs to a, and b is composed on top of it.
            param, *more_parts = _NEXT_PART.split(chunk, maxsplit=1)
            _add_param(items[-1][-1], param, option)
            if more_parts:
                items[-1].extend(_parse_parts(more_parts[0], chunk, option))
            continue
        items.append(_parse_parts(chunk, chunk, option))
    return items


def _parse_parts(text: str, chunk: str, option: str) -> list[Selection]:
    """``a:k=v+b`` → the selections a (with k=v) and b."""
    parts = []
    for part in _NEXT_PART.split(text):
        name, _, rest = part.partition(":")
        if not name.strip():
            raise HarnessError(f"{option} item {chunk!r} has an empty name")
        if "+" in name:  # "uce++sd", "uce+": the '+' left over where a composition part is missing
            raise HarnessError(f"{option} item {chunk!r} has an empty part (a '+' with no name after it); write a+b")
        selection = Selection(name.strip())
        if rest:
            _add_param(selection, rest, option)
        parts.append(selection)
    return parts


def _add_param(selection: Selection, text: str, option: str) -> None:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise HarnessError(f"{option}: parameter {text!r} of {selection.name!r} must look like key=value")
    key = key.strip()
    if key in selection.params:  # "uce:lamb=0.1,lamb=0.2": which one was meant is not ours to guess
        raise HarnessError(f"{option}: {selection.name}.{key} is given twice ({selection.params[key]!r} and {value.strip()!r}); keep one")
    selection.params[key] = value.strip()


def parse_set_options(values: list[str]) -> dict[str, dict[str, str]]:
    """``--set name.param=value`` (repeatable) → {name: {param: value}}."""
    result: dict[str, dict[str, str]] = {}
    for text in values or []:
        target, sep, value = text.partition("=")
        name, dot, param = target.rpartition(".")
        if not sep or not dot or not name or not param:
            raise HarnessError(f"--set {text!r} must look like NAME.PARAM=VALUE, e.g. --set uce.lamb=0.1")
        given = result.setdefault(name.strip(), {})
        if param.strip() in given:
            raise HarnessError(f"--set {name.strip()}.{param.strip()} is given twice ({given[param.strip()]!r} and {value.strip()!r}); keep one")
        given[param.strip()] = value.strip()
    return result


# --------------------------------------------------------------------------- typed parameters

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(value: str, annotation, where: str):
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value.lower() in ("none", "null", "") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                if typing.get_origin(arg) in (tuple, list):  # its errors describe the optional list as a whole
                    return _convert_list(value, arg, where, shown_as=annotation)
                return _convert(value, arg, where)
            except HarnessError as err:
                errors.append(str(err))
        raise HarnessError(errors[0] if errors else f"{where}: cannot parse {value!r}")
    if origin is typing.Literal:
        choices = [str(a) for a in args]
        if value not in choices:
            raise HarnessError(f"{where} must be one of {', '.join(choices)}; got {value!r}{close_suggestion(value, choices)}")
        return args[choices.index(value)]
    if origin in (tuple, list):
        return _convert_list(value, annotation, where)
    if annotation is bool:
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise HarnessError(f"{where} expects true or false; got {value!r}")
    if annotation is int:
        try:
            return int(value)
        except ValueError:
            raise HarnessError(f"{where} expects an integer; got {value!r}") from None
    if annotation is float:
        try:
            return float(value)
        except ValueError:
            raise HarnessError(f"{where} expects a number; got {value!r}") from None
    if annotation is str or annotation is typing.Any:
        return value
    raise HarnessError(f"{where} has a type ({annotation}) that cannot be set from the command line")


def _convert_list(value: str, annotation, where: str, shown_as=None):
    """``a|b|c`` → a tuple or list, each item converted to its declared type; "" → empty.

    A bracketed value with no ``|`` in it (``[1, 2]``, ``()``: what Python or ``harness list --params`` shows as a
    default) is refused rather than read as one item: for a list of texts it would silently become the item "()" or
    "[a, b]".  With a ``|`` it is a list whose items happen to be bracketed (``(red)|(blue)``, prompt emphasis).
    ``shown_as``: the annotation the error describes (an optional list's, where ``""`` means None, not empty).
    """
    form = list_form(shown_as or annotation)
    text = value.strip()
    if LIST_SEPARATOR not in text and len(text) >= 2 and text[0] + text[-1] in ("[]", "()"):
        raise HarnessError(f"{where} takes {form}, not a bracketed list; got {value!r}")
    items = [item for item in text.split(LIST_SEPARATOR) if item != ""] if text else []
    types_, fixed = item_types(annotation)
    if fixed and len(items) != len(types_):
        raise HarnessError(f"{where} takes {form}; got {len(items)} item(s) in {value!r}")
    converted = []
    for index, item in enumerate(items):
        try:
            converted.append(_convert(item, types_[index] if fixed else types_[0], f"{where} item {index + 1}"))
        except HarnessError as err:
            raise HarnessError(f"{err}; {where} takes {form}") from None
    return tuple(converted) if typing.get_origin(annotation) is tuple else converted


def same_setting(plugin_cls, key: str, first: str, second: str) -> bool:
    """Whether two written values of one parameter are the same setting (``0.5`` and ``0.50``, ``true`` and ``yes``):
    compared as the parameter's type converts them, so that only a real conflict is refused.  A value the type
    refuses is compared as written (``build_params`` then reports it)."""
    if first == second:
        return True
    annotation = typing.get_type_hints(plugin_cls.Params).get(key)
    if annotation is None:
        return False
    try:
        return _convert(first, annotation, key) == _convert(second, annotation, key)
    except HarnessError:
        return False


def build_params(plugin_cls, raw: dict[str, str], label: str):
    """Instantiate ``plugin_cls.Params`` from string values, with clear errors for unknown or bad values."""
    params_cls = plugin_cls.Params
    hints = typing.get_type_hints(params_cls)
    fields = {f.name for f in dataclasses.fields(params_cls)}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise HarnessError(f"{label} has no parameter {key!r}{close_suggestion(key, fields)} (parameters: {known})")
        values[key] = _convert(value, hints[key], f"{label}.{key}")
    required = [f.name for f in dataclasses.fields(params_cls) if f.init and f.name not in values
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        name = label.split(":", 1)[0]
        raise HarnessError(f"{label} needs {', '.join(required)} (no default): give "
                           f"{','.join(f'{field}=VALUE' for field in required)} beside its name ({name}:{required[0]}=VALUE) "
                           f"or with --set {name}.{required[0]}=VALUE")
    try:
        params = params_cls(**values)
    except (TypeError, ValueError) as err:  # __post_init__ validation
        raise HarnessError(f"{label}: {err}") from None
    validate_params(params, label)  # declared bounds, finite numbers: before any work
    return params
