"""``harness list --params NAME``: every parameter with its default, type, bounds and the comment beside it in the
source, so the documentation is the code's and cannot drift from it."""

import json
from dataclasses import dataclass, field
from typing import Literal

from harness.cli import main
from harness.paramdoc import field_comments, parameter_docs
from harness.validate import param


@dataclass
class Example:
    # two lines above
    # the field
    lr: float = param(1e-5, gt=0)  # and the end of its line
    mode: Literal["a", "b"] = "a"
    plain: int = 3
    spread: tuple[int, ...] = field(
        default_factory=lambda: (1, 2),  # inside a multi-line field
    )


def test_comments_above_and_beside_a_field_are_its_documentation():
    comments = field_comments(Example)
    assert comments == {"lr": "two lines above the field and the end of its line", "mode": "", "plain": "",
                         "spread": "inside a multi-line field"}
    docs = {doc.name: doc for doc in parameter_docs(Example)}
    assert (docs["lr"].default, docs["lr"].bounds, docs["lr"].type) == ("1e-05", "> 0", "float")
    assert docs["spread"].default == "(1, 2)" and docs["mode"].type == "Literal['a', 'b']"


def test_a_field_declared_in_a_base_class_keeps_its_comment(capsys):
    """coco's data, size, metrics ... are the paper benchmarks' shared Params: they were listed bare."""
    assert main(["list", "--params", "coco"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert "local copy of the upstream file" in lines["data"] and "RandomState(42)" in lines["subset"]
    assert "override the metrics" in lines["metrics"]


def test_a_class_without_readable_source_still_lists_its_fields():
    made = dataclass(type("Made", (), {"__annotations__": {"x": int}, "x": 1}))
    assert [(d.name, d.default, d.comment) for d in parameter_docs(made)] == [("x", "1", "")]


def test_list_params_of_a_method_shows_defaults_bounds_comments_and_presets(capsys):
    assert main(["list", "--params", "esd-x"]) == 0
    text = capsys.readouterr().out
    line = next(line for line in text.splitlines() if line.strip().startswith("parameters "))
    assert "'paper'" in line and '"strict"' in line  # the comment names the choices
    assert any(line.split()[:3] == ["lr", "1e-05", "float"] and "> 0" in line for line in text.splitlines())
    assert "preset esd-x:preset=official: sample_with_trainable=True" in text
    assert "on backbone toy (applied automatically): lr=0.001" in text


def test_list_params_of_a_composition_lists_each_part(capsys):
    assert main(["list", "--params", "trce", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert list(record["parameters"]) == ["trce-t", "trce-v"]
    names = {section: {p["name"] for p in params} for section, params in record["parameters"].items()}
    assert "preserve_scale" in names["trce-t"] and "guidance_enhancement" in names["trce-v"]
    assert record["presets"]["official"]["trce-t.word_count_positions"] is True
    # its trce-v part runs at trce-v's toy preset (the runner routes it there), so the listing says so
    assert record["backbone_presets"]["toy"] == {"trce-v.lr": 3e-4, "trce-v.regularizer_samples": 300}


def test_list_params_of_an_attack_shows_the_backbone_preset_it_runs_at(capsys):
    assert main(["list", "--params", "ring-a-bell"]) == 0
    text = capsys.readouterr().out
    assert "on backbone toy (applied automatically): population=64, generations=100" in text


def test_list_params_of_a_benchmark_and_an_unknown_name(capsys):
    assert main(["list", "--params", "csv"]) == 0
    assert "path" in capsys.readouterr().out
    assert main(["list", "--params", "esd-xx"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'esd-x'" in err


def test_a_name_two_kinds_share_lists_both(capsys):
    assert main(["list", "--params", "toy", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["kind"] for r in records] == ["scorers", "backbones"]
    assert main(["list", "backbones", "--params", "toy"]) == 0
    assert capsys.readouterr().out.startswith("toy (backbone): ")
