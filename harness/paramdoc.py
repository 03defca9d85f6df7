"""A plugin's parameters as a user reads them: name, type, default, bounds, and the comment written beside the field.

The comments in a ``Params`` dataclass are its documentation (``lr: float = param(1e-5, gt=0)  # Adam``), so
``harness list --params NAME`` reads them from the source instead of keeping a second copy that would drift: the
comment on a field's own line, after any full-line comments directly above it.  A plugin whose source cannot be
read (a class made at run time) still lists its fields, without comments.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing
from dataclasses import dataclass

from harness.validate import bounds_of, field_default, list_form, sequence_type


@dataclass(frozen=True)
class ParamDoc:
    name: str
    type: str
    default: str
    bounds: str  # what a value must be beyond its type: "≥ 0 and a multiple of 8"; for a list its form too; or ""
    comment: str  # the field's comment in the source, or ""


def field_comments(params_cls) -> dict[str, str]:
    """Field name → its comment: full-line comments directly above the field, then the one at the end of its line;
    a field declared in a base class (a paper benchmark's ``data``, ``size``) takes its comment from there."""
    found: dict[str, str] = {}
    for cls in reversed(params_cls.__mro__[:-1]):  # the base classes first, so a subclass's comment wins
        if dataclasses.is_dataclass(cls):
            found.update({name: text for name, text in _own_field_comments(cls).items() if text or name not in found})
    return found


def _own_field_comments(params_cls) -> dict[str, str]:
    """The comments of the fields ``params_cls``'s own source declares."""
    try:
        source = textwrap.dedent(inspect.getsource(params_cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}  # line → comment text
    full_line: set[int] = set()  # lines that hold only a comment
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                comments[token.start[0]] = token.string.lstrip("#").strip()
                if not token.line[: token.start[1]].strip():
                    full_line.add(token.start[0])
        tree = ast.parse(source)
    except (SyntaxError, tokenize.TokenError):
        return {}
    found = {}
    for node in tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, line = [], node.lineno - 1
        while line in full_line:
            above.insert(0, comments[line])
            line -= 1
        trailing = [comments[n] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1) if n in comments and n not in full_line]
        found[node.target.id] = " ".join(above + trailing)
    return found


def _default(field: dataclasses.Field, default) -> str:
    """``default``: ``field_default(field)``."""
    if default is not dataclasses.MISSING:
        return repr(default)
    # A factory that fails needs the run's context: say so rather than guess.
    return "(computed)" if field.default_factory is not dataclasses.MISSING else "(required)"


def _allowed(field: dataclasses.Field, annotation, default) -> str:
    """The bounds column: a list parameter's command-line form (nothing else says that its items are separated by
    '|', and its default reads as Python's "(1.0, 0.9)"), then its bounds, which hold for each item."""
    bounds = bounds_of(field)
    limits = bounds.describe() if bounds else ""
    if sequence_type(annotation) is None:
        return limits
    form = list_form(annotation, default)
    return f"{form}; each {limits}" if limits else form


def parameter_docs(params_cls) -> list[ParamDoc]:
    """Every field of ``params_cls`` (a ``Params`` dataclass), in declaration order."""
    if params_cls is None or not dataclasses.is_dataclass(params_cls):
        return []
    comments = field_comments(params_cls)
    try:
        hints = typing.get_type_hints(params_cls)
    except Exception:  # an annotation that does not resolve: listed as written, without a list form
        hints = {}
    docs = []
    for field in dataclasses.fields(params_cls):
        annotation = field.type if isinstance(field.type, str) else inspect.formatannotation(field.type)
        default = field_default(field)  # a default_factory runs once
        allowed = _allowed(field, hints.get(field.name), default)
        docs.append(ParamDoc(field.name, annotation, _default(field, default), allowed, comments.get(field.name, "")))
    return docs
