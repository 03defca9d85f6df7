"""A one-file plugin whose methods each have one Params default that breaks its own declaration (tests/test_param_contract.py),
and one method whose defaults are all right."""

from dataclasses import dataclass, field
from typing import Literal

from harness.api import Method
from harness.hookspecs import hookimpl
from harness.validate import param


class Fine(Method):
    name = "fine-defaults"
    description = "every default within its bounds"

    @dataclass
    class Params:
        steps: int = param(1, ge=1)
        mode: Literal["a", "b"] = "a"
        weights: tuple[float, ...] = param((0.5, 1.0), ge=0)
        pair: tuple[int, str] = (1, "x")

    def edit(self, pipe, concepts, ctx):
        return {}


def _method(method_name: str, params_cls):
    return type(method_name.title().replace("-", ""), (Fine,), {"name": method_name, "description": "a bad default", "Params": params_cls})


@dataclass
class BelowBound:
    steps: int = param(0, ge=1)


@dataclass
class NotInLiteral:
    mode: Literal["a", "b"] = "c"


@dataclass
class WrongType:
    steps: int = 0.5


@dataclass
class ItemOutOfBounds:
    weights: tuple[float, ...] = field(default_factory=lambda: (0.5, -1.0), metadata=param(ge=0).metadata)


@dataclass
class WrongLength:
    pair: tuple[int, int] = (1, 2, 3)


@dataclass
class TextBound:
    steps: int = param(1, ge="0")


BAD = {"below-bound": BelowBound, "not-in-literal": NotInLiteral, "wrong-type": WrongType,
       "item-out-of-bounds": ItemOutOfBounds, "wrong-length": WrongLength, "text-bound": TextBound}


@hookimpl
def register_methods(register):
    register(Fine)
    for method_name, params_cls in BAD.items():
        register(_method(method_name, params_cls))
