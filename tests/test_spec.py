"""The --methods/--bench/--set grammar and typed parameters."""

from dataclasses import dataclass
from typing import Literal

import pytest

from harness.api import HarnessError, Method
from harness.spec import build_params, parse_selections, parse_set_options


def test_items_compositions_and_continued_parameters():
    items = parse_selections("uce,rece:lamb=0.1,erase_scale=2,trce-t+sld:strength=max", "--methods")
    assert [[s.name for s in item] for item in items] == [["uce"], ["rece"], ["trce-t", "sld"]]
    assert items[1][0].params == {"lamb": "0.1", "erase_scale": "2"}
    assert items[2][1].params == {"strength": "max"}
    assert items[1][0].label() == "rece:erase_scale=2,lamb=0.1"


def test_paths_with_colons_and_slashes_survive():
    (item,) = parse_selections("csv:path=/data/my prompts/i2p.csv,concepts=sexual", "--bench")
    assert item[0].params == {"path": "/data/my prompts/i2p.csv", "concepts": "sexual"}


@pytest.mark.parametrize("text", ["", "uce,,rece", "lamb=0.1", "uce:lamb"])
def test_malformed_selections(text):
    with pytest.raises(HarnessError):
        parse_selections(text, "--methods")


def test_set_options():
    assert parse_set_options(["trce-t.lamb=0.02", "csv.path=a.csv"]) == {"trce-t": {"lamb": "0.02"}, "csv": {"path": "a.csv"}}
    with pytest.raises(HarnessError, match="NAME.PARAM=VALUE"):
        parse_set_options(["lamb=0.02"])
    with pytest.raises(HarnessError, match="NAME.PARAM=VALUE"):
        parse_set_options(["uce.lamb"])


class Typed(Method):
    name = "typed"

    @dataclass
    class Params:
        lamb: float = 0.5
        epochs: int = 3
        quirk: bool = False
        tokens: Literal["eot", "key", "eot+key"] = "eot"
        path: str | None = None
        weights: tuple[float, ...] = (1.0,)


def test_values_are_converted_by_declared_type():
    params = build_params(Typed, {"lamb": "1e-2", "epochs": "5", "quirk": "yes", "tokens": "eot+key", "path": "none", "weights": "1|0.5"}, "typed")
    assert params == Typed.Params(lamb=0.01, epochs=5, quirk=True, tokens="eot+key", path=None, weights=(1.0, 0.5))


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"lam": "1"}, "did you mean 'lamb'"),
        ({"lamb": "abc"}, "typed.lamb expects a number"),
        ({"epochs": "2.5"}, "typed.epochs expects an integer"),
        ({"quirk": "maybe"}, "expects true or false"),
        ({"tokens": "eos"}, "must be one of eot, key, eot\\+key"),
    ],
)
def test_bad_parameters_get_clear_errors(raw, message):
    with pytest.raises(HarnessError, match=message):
        build_params(Typed, raw, "typed")


def test_a_later_parameter_of_a_part_can_be_followed_by_the_next_part_of_its_composition():
    (item,) = parse_selections("safegen:lr=1e-3,steps=20+sld:safety_config=strong", "--methods")
    assert [(s.name, s.params) for s in item] == [("safegen", {"lr": "1e-3", "steps": "20"}), ("sld", {"safety_config": "strong"})]
    # A "+" inside a value stays there: an exponent, or a path whose next segment is not a bare name.
    (item,) = parse_selections("uce:lamb=1e+3,path=runs/a+b.csv", "--methods")
    assert [(s.name, s.params) for s in item] == [("uce", {"lamb": "1e+3", "path": "runs/a+b.csv"})]
    first, second = parse_selections("uce:a=1,b=2+rece,sd", "--methods")
    assert [s.name for s in first] == ["uce", "rece"] and first[0].params == {"a": "1", "b": "2"} and second[0].name == "sd"
