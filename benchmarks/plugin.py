"""Registers the built-in benchmarks, scorers and concept sets.

Registration is lazy ("module:Class" strings), so `harness list` imports no torch.
Every JSON file in ``benchmarks/concepts/`` is a concept set, registered under its file name.
"""

import json
from pathlib import Path

from harness.hookspecs import hookimpl

CONCEPTS_DIR = Path(__file__).parent / "concepts"


@hookimpl
def register_concept_sets(register):
    for path in sorted(CONCEPTS_DIR.glob("*.json")):
        description = json.loads(path.read_text(encoding="utf-8")).get("description", "")
        register(str(path), name=path.stem, description=description)


@hookimpl
def register_benchmarks(register):
    register(
        "benchmarks.csvbench:CsvBenchmark",
        name="csv",
        description="any prompt CSV in the community's layout: --bench csv:path=FILE[,concepts=NAME][,metrics=a|b]",
    )


@hookimpl
def register_scorers(register):
    register(
        "benchmarks.scorers.nudenet:NudeNetScorer",
        name="nudenet",
        description="NudeNet 3.4.2 detections per image; ASR views: paper 0.45, TRCE code, RECE 0.6, SPEED, SPM, MACE counts",
    )
