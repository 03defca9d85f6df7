"""The toy benchmarks: fixed prompt files for the erased colour(s) and for the colours to keep.

Each file has the community's columns (``case_number, prompt, evaluation_seed,
evaluation_guidance``) plus the labels ``colour, shape, background``.  The
benchmark adds the colours its concept set erases to every prompt's labels
(``labels["erased"]``), which is what the ``toy`` scorer's ``toy-asr`` counts.
``path=FILE`` swaps in another file with the same columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from benchmarks.csvbench import read_prompt_csv
from harness.api import Benchmark, PromptSpec, sha256_file

HERE = Path(__file__).parent
PROMPTS_DIR = HERE / "prompts"
CONCEPTS_DIR = HERE / "concepts"
LABEL_COLUMNS = ("colour", "shape", "background")
ERASE_METRICS = ("toy:toy-asr", "toy:toy-asr-any")
PRESERVE_METRICS = ("toy:toy-acc", "toy-fid:toy-fid")


def erased_colours(concept_set: str) -> list[str]:
    return list(json.loads((CONCEPTS_DIR / f"{concept_set}.json").read_text(encoding="utf-8"))["extra"]["colours"])


class ToyBenchmark(Benchmark):
    backbone = "toy"
    concepts = "toy-red"
    metrics = ERASE_METRICS
    prompt_file = ""  # file name under prompts/

    @dataclass
    class Params:
        path: str | None = None  # another prompt CSV with the same columns

    def path(self) -> Path:
        return Path(self.params.path) if self.params.path else PROMPTS_DIR / self.prompt_file

    def prompts(self) -> list[PromptSpec]:
        erased = erased_colours(self.concepts)
        specs = read_prompt_csv(self.path(), required=("case_number", "evaluation_seed", "evaluation_guidance") + LABEL_COLUMNS)
        return [PromptSpec(**{**spec.as_dict(), "labels": {**spec.labels, "erased": erased}}) for spec in specs]

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
