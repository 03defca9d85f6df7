"""The toy benchmarks: fixed prompt files for the erased colour(s), styles and compositions, and for what to keep.

Each file has the community's columns (``case_number, prompt, evaluation_seed,
evaluation_guidance``) plus the labels ``colour, shape, background``; composition
files add ``colour2, shape2`` (the right-hand object), style files ``style, artist``.
The benchmark adds the colours its concept set erases to every prompt's labels
(``labels["erased"]``), which is what the ``toy`` scorer's ``toy-asr`` counts, and
for a concept set that erases styles also those styles (``labels["erased_styles"]``).
``path=FILE`` swaps in another file with the same columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from benchmarks.csvbench import read_prompt_csv
from benchmarks.toyworld import world
from harness.api import Benchmark, PromptSpec, sha256_file

HERE = Path(__file__).parent
PROMPTS_DIR = HERE / "prompts"
CONCEPTS_DIR = HERE / "concepts"
LABEL_COLUMNS = ("colour", "shape", "background")
COMPOSE_COLUMNS = LABEL_COLUMNS + ("colour2", "shape2")
STYLE_COLUMNS = LABEL_COLUMNS + ("style", "artist")
ERASE_METRICS = ("toy:toy-asr", "toy:toy-asr-any")
PRESERVE_METRICS = ("toy:toy-acc", "toy-fid:toy-fid")


def concept_extra(concept_set: str) -> dict:
    return json.loads((CONCEPTS_DIR / f"{concept_set}.json").read_text(encoding="utf-8"))["extra"]


def erased_colours(concept_set: str) -> list[str]:
    return list(concept_extra(concept_set)["colours"])


class ToyBenchmark(Benchmark):
    backbone = "toy"
    concepts = "toy-red"
    metrics = ERASE_METRICS
    prompt_file = ""  # file name under prompts/
    label_columns = LABEL_COLUMNS  # the columns every row must have beyond the community's

    @dataclass
    class Params:
        path: str | None = None  # another prompt CSV with the same columns

    def path(self) -> Path:
        return Path(self.params.path) if self.params.path else PROMPTS_DIR / self.prompt_file

    def prompts(self) -> list[PromptSpec]:
        extra = concept_extra(self.concepts)
        added = {"erased": list(extra["colours"])}
        if "styles" in extra:  # a concept set that erases styles (the v1 sets have none, and their labels stay as they were)
            added["erased_styles"] = list(extra["styles"])
        specs = read_prompt_csv(
            self.path(), required=("case_number", "evaluation_seed", "evaluation_guidance") + self.label_columns
        )
        return [PromptSpec(**{**spec.as_dict(), "labels": {**spec.labels, **added}}) for spec in specs]

    def source(self) -> dict:
        return {"path": str(self.path()), "sha256": sha256_file(self.path())}


# --------------------------------------------------------------------------- toy-red: red is the "unsafe" concept


class ToyExplicit(ToyBenchmark):
    name = "toy-explicit"
    display_name = "Explicit"
    description = "red named directly ('a red circle'); toy-asr = fraction of red images"
    prompt_file = "toy-explicit.csv"


class ToySynonym(ToyBenchmark):
    name = "toy-synonym"
    display_name = "Synonym"
    description = "red named by a synonym ('a crimson square'); toy-asr"
    prompt_file = "toy-synonym.csv"


class ToyImplicit(ToyBenchmark):
    name = "toy-implicit"
    display_name = "Implicit"
    description = "red only implied, phrasings seen in training ('a circle the colour of blood'); toy-asr"
    prompt_file = "toy-implicit.csv"


class ToyImplicitHeldout(ToyBenchmark):
    name = "toy-implicit-heldout"
    display_name = "Held-out implicit"
    description = "red only implied, frame×referent combinations never seen in training; toy-asr"
    prompt_file = "toy-implicit-heldout.csv"


class ToyPreserve(ToyBenchmark):
    name = "toy-preserve"
    display_name = "Preserve"
    description = "the other colours, training-distribution captions; toy-acc (colour and shape right) and toy-fid"
    prompt_file = "toy-preserve.csv"
    metrics = PRESERVE_METRICS


# --------------------------------------------------------------------------- toy-warm: red, orange and yellow together


class ToyWarmExplicit(ToyExplicit):
    name = "toy-warm-explicit"
    display_name = "Warm explicit"
    description = "red, orange or yellow named directly; toy-asr"
    concepts = "toy-warm"
    prompt_file = "toy-warm-explicit.csv"


class ToyWarmSynonym(ToySynonym):
    name = "toy-warm-synonym"
    display_name = "Warm synonym"
    description = "red, orange or yellow named by a synonym; toy-asr"
    concepts = "toy-warm"
    prompt_file = "toy-warm-synonym.csv"


class ToyWarmImplicit(ToyImplicit):
    name = "toy-warm-implicit"
    display_name = "Warm implicit"
    description = "red, orange or yellow only implied (seen phrasings); toy-asr"
    concepts = "toy-warm"
    prompt_file = "toy-warm-implicit.csv"


class ToyWarmImplicitHeldout(ToyImplicitHeldout):
    name = "toy-warm-implicit-heldout"
    display_name = "Warm held-out implicit"
    description = "red, orange or yellow only implied (held-out phrasings); toy-asr"
    concepts = "toy-warm"
    prompt_file = "toy-warm-implicit-heldout.csv"


class ToyWarmPreserve(ToyPreserve):
    name = "toy-warm-preserve"
    display_name = "Warm preserve"
    description = "green, blue, purple and gray; toy-acc and toy-fid"
    concepts = "toy-warm"
    prompt_file = "toy-warm-preserve.csv"


TOY_RED = (ToyExplicit, ToySynonym, ToyImplicit, ToyImplicitHeldout, ToyPreserve)
TOY_WARM = (ToyWarmExplicit, ToyWarmSynonym, ToyWarmImplicit, ToyWarmImplicitHeldout, ToyWarmPreserve)


# --------------------------------------------------------------------------- v2: side effects on nearby colours and compositions


class ToyNearby(ToyBenchmark):
    name = "toy-nearby"
    display_name = "Nearby"
    description = "the colours nearest red (orange, purple), training-mix captions; toy-acc (erasing red should spare them)"
    prompt_file = "toy-nearby.csv"
    metrics = ("toy:toy-acc",)


class ToyCompose(ToyBenchmark):
    name = "toy-compose"
    display_name = "Compose"
    description = "two objects of kept colours side by side ('a blue square left of a green circle'); toy-binding"
    prompt_file = "toy-compose.csv"
    label_columns = COMPOSE_COLUMNS
    metrics = ("toy:toy-binding",)


# --------------------------------------------------------------------------- v2: one artist's style erased (per artist)

STYLE_ERASE_METRICS = ("toy:toy-style-asr",)
STYLE_PRESERVE_METRICS = ("toy:toy-style-acc",)


def _style_benchmarks(entry: dict) -> list[type[ToyBenchmark]]:
    """The four benchmarks of one artist, all testing concept set ``toy-style-<slug>``."""
    slug, name, style = entry["slug"], entry["name"], entry["style"]
    kinds = [
        ("", "", f"{name}'s style named by the artist ('... in the style of {name}'); toy-style-asr", STYLE_ERASE_METRICS),
        (
            "-implicit",
            " implicit",
            f"{name}'s style named only by one of the artist's works, seen phrasings; toy-style-asr",
            STYLE_ERASE_METRICS,
        ),
        (
            "-heldout",
            " held-out",
            f"{name}'s style named only by a work, frame×work combinations never seen in training; toy-style-asr",
            STYLE_ERASE_METRICS,
        ),
        (
            "-preserve",
            " preserve",
            "the other seven artists by name, equally often; toy-style-acc (each in its own style)",
            STYLE_PRESERVE_METRICS,
        ),
    ]
    classes = []
    for suffix, display_suffix, description, metrics in kinds:
        class_name = "ToyStyle" + slug.capitalize() + suffix.title().replace("-", "")
        attributes = {
            "__module__": __name__,
            "__qualname__": class_name,
            "__doc__": f"Benchmark toy-style-{slug}{suffix} (concept set toy-style-{slug}: {style} backgrounds).",
            "name": f"toy-style-{slug}{suffix}",
            "display_name": f"Style {slug}{display_suffix}",
            "description": description,
            "concepts": f"toy-style-{slug}",
            "prompt_file": f"toy-style-{slug}{suffix}.csv",
            "label_columns": STYLE_COLUMNS,
            "metrics": metrics,
        }
        classes.append(type(class_name, (ToyBenchmark,), attributes))
    return classes


TOY_STYLE = {entry["slug"]: _style_benchmarks(entry) for entry in world.artists()}
for _classes in TOY_STYLE.values():
    globals().update({cls.__name__: cls for cls in _classes})  # importable by name, as the plugin registers them


# --------------------------------------------------------------------------- v2: red and two artists erased together


class ToyMultiExplicit(ToyBenchmark):
    name = "toy-multi-explicit"
    display_name = "Multi explicit"
    description = "a third each: red named, ilsa marrow named, bram ottoline named; toy-concept-asr"
    concepts = "toy-multi"
    prompt_file = "toy-multi-explicit.csv"
    label_columns = STYLE_COLUMNS
    metrics = ("toy:toy-concept-asr",)


class ToyMultiHeldout(ToyMultiExplicit):
    name = "toy-multi-heldout"
    display_name = "Multi held-out"
    description = (
        "a third each: red implied (held-out phrasings), a held-out work of ilsa marrow, of bram ottoline; toy-concept-asr"
    )
    prompt_file = "toy-multi-heldout.csv"


class ToyMultiPreserve(ToyMultiExplicit):
    name = "toy-multi-preserve"
    display_name = "Multi preserve"
    description = "kept colours, half plain and half in a kept artist's style (by name); toy-acc and toy-style-acc"
    prompt_file = "toy-multi-preserve.csv"
    metrics = ("toy:toy-acc", "toy:toy-style-acc")


TOY_SIDE_EFFECTS = (ToyNearby, ToyCompose)
TOY_MULTI = (ToyMultiExplicit, ToyMultiHeldout, ToyMultiPreserve)

# Every toy benchmark with its group (what `--bench GROUP` runs), in the order `harness list` shows them.
# An artist's group is "toy-art-<slug>", not its first benchmark's name "toy-style-<slug>":
# a benchmark name wins over a group name, so the group would never be reached.
GROUPS = (
    [(cls, "toy") for cls in TOY_RED + TOY_SIDE_EFFECTS]
    + [(cls, "toy-warm") for cls in TOY_WARM]
    + [(cls, f"toy-art-{slug}") for slug, classes in TOY_STYLE.items() for cls in classes]
    + [(cls, "toy-multi") for cls in TOY_MULTI]
)
