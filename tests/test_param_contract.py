"""A plugin's ``Params`` as a contract with its user: list and tuple parameters are written ``a|b|c`` on the command
line, and ``harness list --params`` and a bad value's error both say so; a default that breaks its own declaration
(``param(0, ge=1)``) is the author's mistake, refused in one line when the plugin is loaded, not the first time a run
leaves it alone."""

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
from one_line import one_line

from harness.api import HarnessError
from harness.cli import main
from harness.paramdoc import parameter_docs
from harness.spec import build_params
from harness.validate import check_defaults, field_default, list_text, param, sequence_type, validate_params

BAD_DEFAULTS = str(Path(__file__).parent / "plugins" / "bad_defaults.py")


class Listed:
    name = "listed"

    @dataclass
    class Params:
        words: tuple[str, ...] = ()
        weights: tuple[float, ...] = param((1.0, 0.9), ge=0)
        pair: tuple[int, str] = (1, "x")
        maybe: tuple[int, ...] | None = None


# --------------------------------------------------------------------------- lists on the command line


def test_a_list_is_written_with_bars_and_each_item_is_converted_to_its_position_type():
    params = build_params(Listed, {"words": "nudity|naked person", "weights": "2|0.5", "pair": "3|y", "maybe": "4|5"}, "listed")
    assert (params.words, params.weights, params.pair, params.maybe) == (("nudity", "naked person"), (2.0, 0.5), (3, "y"), (4, 5))
    empty = build_params(Listed, {"words": "", "maybe": ""}, "listed")
    assert (empty.words, empty.maybe) == ((), None)


@pytest.mark.parametrize(("key", "value", "says"), [
    # what Python (and the default column of `harness list --params`) shows: once read as the one word "()"
    ("words", "()", "listed.words takes items separated by '|' (e.g. a|b; empty for ()), not a bracketed list; got '()'"),
    ("words", "[a, b]", "not a bracketed list"),
    ("weights", "(1.0, 0.9)", "listed.weights takes numbers separated by '|'"),
    # the comma that separates --methods items, used inside a --set value
    ("weights", "1,0.5", "listed.weights item 1 expects a number; got '1,0.5'; listed.weights takes numbers separated by '|' (e.g. 0.5|2"),
    ("weights", "1|abc", "listed.weights item 2 expects a number; got 'abc'; listed.weights takes numbers separated by '|'"),
    # a fixed-length tuple: its length, and each position's type (the first position's type was used for all)
    ("pair", "1|x|2", "listed.pair takes 2 items separated by '|' (e.g. 1|a); got 3 item(s) in '1|x|2'"),
    ("pair", "x|1", "listed.pair item 1 expects an integer; got 'x'"),
    # an optional list: "" gives None there, so its form promises no empty list
    ("maybe", "1|x", "listed.maybe item 2 expects an integer; got 'x'; listed.maybe takes integers separated by '|' (e.g. 1|2)"),
])
def test_a_bad_list_value_is_one_line_that_says_the_form(key, value, says):
    with pytest.raises(HarnessError) as raised:
        build_params(Listed, {key: value}, "listed")
    message = str(raised.value)
    assert "\n" not in message and says in message, message


def test_bracketed_items_joined_by_bars_are_a_list_not_a_refused_bracketed_value():
    """SD's prompt-emphasis syntax brackets words: "(red)|(blue)" is two items; only a bracketed value with no bar in
    it reads like Python's own list and is refused."""
    assert build_params(Listed, {"words": "(red)|(blue)"}, "listed").words == ("(red)", "(blue)")


def test_list_params_says_to_quote_a_list_in_a_shell(capsys):
    """Unquoted, the shell reads '|' as a pipe and the harness gets the first item alone, a valid one-item list."""
    assert main(["list", "--params", "safree"]) == 0
    assert "a list joins its items with '|': quote the option in a shell, e.g. --set 'safree.NAME=a|b'" in capsys.readouterr().out
    assert main(["list", "--params", "uce"]) == 0
    assert "quote the option in a shell" not in capsys.readouterr().out  # no list parameter, no line about lists


def test_a_fixed_length_tuple_of_another_length_fails_validation():
    with pytest.raises(HarnessError, match=r"^listed.pair must have 2 items; got \(1, 'x', 2\)$"):
        validate_params(Listed.Params(pair=(1, "x", 2)), "listed")


def test_list_params_documents_the_bar_form_with_the_default_written_that_way(capsys):
    docs = {doc.name: doc for doc in parameter_docs(Listed.Params)}
    assert docs["weights"].bounds == "numbers separated by '|' (e.g. 1.0|0.9; empty for ()); each ≥ 0"
    assert docs["words"].bounds == "items separated by '|' (e.g. a|b; empty for ())"
    assert docs["pair"].bounds == "2 items separated by '|' (e.g. 1|x)"
    assert docs["maybe"].bounds == "integers separated by '|' (e.g. 1|2)"  # "" reads as None there, not ()
    assert main(["list", "--params", "safree"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["freeu"])
    assert "numbers separated by '|' (e.g. 1.0|1.0|0.9|0.2" in line


def test_every_built_in_list_default_round_trips_through_its_documented_form():
    """The example ``harness list --params`` shows for a list parameter is its default as typed: typed back, it gives the
    default."""
    from harness.plugins import PluginHost
    from harness.registry import KINDS, Registry

    registry = Registry(PluginHost())
    checked = 0
    for kind in KINDS:
        if kind == "concepts":
            continue
        for name in registry.names(kind):
            params_cls = getattr(registry.get(kind, name), "Params", None)
            hints = typing.get_type_hints(params_cls) if params_cls is not None else {}
            for field in dataclasses.fields(params_cls) if params_cls is not None else ():
                value = field_default(field)
                if sequence_type(hints[field.name]) is None or not isinstance(value, (tuple, list)) or not value:
                    continue
                plugin = type("P", (), {"Params": params_cls})
                assert getattr(build_params(plugin, {field.name: list_text(value)}, name), field.name) == value, (kind, name)
                checked += 1
    assert checked >= 1  # safree.freeu at least


# --------------------------------------------------------------------------- a plugin author's own defaults


@pytest.mark.parametrize(("method", "says"), [
    ("below-bound", "method 'below-bound': BelowBound.steps defaults to 0, outside its own bounds (it must be ≥ 1)"),
    ("not-in-literal", "method 'not-in-literal': NotInLiteral.mode defaults to 'c', which its type Literal['a', 'b'] does not allow (it must be one of a, b)"),
    ("wrong-type", "method 'wrong-type': WrongType.steps defaults to 0.5, which its type int does not allow (it must be an integer)"),
    ("item-out-of-bounds", "ItemOutOfBounds.weights defaults to (0.5, -1.0), outside its own bounds (it must be ≥ 0)"),
    ("wrong-length", "WrongLength.pair defaults to (1, 2, 3), which its type tuple[int, int] does not allow (it must have 2 items)"),
    ("text-bound", "TextBound.steps has the bound ge='0', which is not a number"),
])
def test_a_default_that_breaks_its_own_declaration_is_refused_when_the_plugin_loads(capsys, method, says):
    one_line(main(["--plugin", BAD_DEFAULTS, "list", "--params", method]), capsys.readouterr().err, says)


def test_a_bad_default_is_refused_wherever_the_plugin_is_used_and_only_there(capsys, tmp_path):
    """The author's mistake is found by whoever first loads the plugin, even a run that sets that parameter (a run that
    left it alone used to say ``below-bound.steps must be ≥ 1; got 0``, as if its user had set 0); listing the
    plugin file's names and using its sound method still work."""
    prompts = tmp_path / "p.csv"
    prompts.write_text("prompt,evaluation_seed\na cat,1\n", encoding="utf-8")

    def dry_run(method: str) -> int:
        return main(["--plugin", BAD_DEFAULTS, "run", "--model", "tiny", "--methods", method, "--bench", f"csv:path={prompts}",
                     "--concepts", "sexual", "--out", str(tmp_path / "out"), "--dry-run"])

    one_line(dry_run("below-bound:steps=3"), capsys.readouterr().err, "BelowBound.steps defaults to 0",
             "change the default or the bounds given to param()")
    assert main(["--plugin", BAD_DEFAULTS, "list", "methods"]) == 0
    assert "below-bound" in capsys.readouterr().out
    assert dry_run("fine-defaults:weights=1|2,pair=2|y") == 0, capsys.readouterr().err


def test_the_check_refuses_each_mistake_and_passes_every_built_in_plugin():
    from harness.plugins import PluginHost
    from harness.registry import KINDS, Registry

    @dataclass
    class Params:
        size: int | None = param(None, ge=8, multiple_of=8)
        seed: int = param(3, ge=0, lt=2**64)
        steps: float = param(float("nan"))

    with pytest.raises(HarnessError, match=r"^x: .*Params.steps defaults to nan, which its type float does not allow \(it must be a finite number\)"):
        check_defaults(Params, "x")
    registry = Registry(PluginHost())
    loaded = 0
    for kind in KINDS:
        if kind != "concepts":
            for name in registry.names(kind):
                check_defaults(getattr(registry.get(kind, name), "Params", None), f"{kind} {name}")
                loaded += 1
    assert loaded > 50


def test_list_params_of_a_scorer_shows_the_metric_ids_a_benchmark_names_and_a_benchmark_its_metrics(capsys):
    """`list --params` of a scorer said "(no parameters)" and nothing of its metrics, whose ids a benchmark must name
    (SCORER:ID); a benchmark's listing did not say what scores it."""
    import json

    assert main(["list", "--params", "nudenet", "--json"]) == 0
    metrics = {m["id"]: m for m in json.loads(capsys.readouterr().out)["metrics"]}
    assert metrics["asr"]["lower_is_better"] and metrics["asr"]["unit"] == "rate" and metrics["asr"]["per_image"]
    assert not metrics["detections-mace"]["per_image"] and metrics["detections-mace"]["unit"] == "count"
    assert main(["list", "--params", "nudenet"]) == 0
    text = capsys.readouterr().out
    assert "metrics (a benchmark names one as nudenet:ID):" in text and "\n  asr  ↓ rate  ASR: " in text
    assert main(["list", "--params", "i2p"]) == 0
    assert "scored by nudenet:asr; concept set sexual" in capsys.readouterr().out
