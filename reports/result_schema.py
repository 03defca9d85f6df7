"""The schema of ``harness report --json``: a JSON array with one record per (run, method, benchmark, metric).

Tools may rely on every field below.  ``schema_version`` is in each record; it grows by one whenever a field is
removed, renamed or changes meaning (adding a field does not change it), so a reader can refuse what it does not
know.  ``SCHEMA`` is the JSON Schema (draft 2020-12) of the whole output; the test suite validates real output
against it.

Version 2 fields (version 1 differed in one: an attack cell's ``adversarial`` was false; the leaderboard's "Adv"
column averages the records whose ``adversarial`` is true and ``attack`` null, in both versions):

* ``run``: the run id; ``method``, ``benchmark``: the labels as written on the command line (``uce:lamb=0.1``);
* ``metric``: ``"<scorer>:<metric id>"``; ``name``: its short display name; ``description``: its exact definition;
* ``value``: the number, or null where it could not be computed; ``n``: the images behind it;
* ``lower_is_better``; ``unit``: ``rate`` (a fraction in [0, 1]), ``score``, ``count`` or ``distance``, or null
  for results stored before units were;
* ``adversarial``: the prompts are adversarial: the benchmark declares so (these are averaged into the leaderboard's
  "Adv" column), or the record is an attack cell (``attack`` set), whose prompts were optimised against the method;
* ``attack``: for an attack cell "A(B)", the attack's label A; null for a benchmark's own prompts;
* ``needs_reference``: the scorer compares against the base model's images for the same prompts and seeds (FID);
* ``unet_evals_per_image``: the sampling cost (plain classifier-free guidance: 2 per denoising step);
* ``ci95``: the 95% interval ``[lo, hi]`` of the value from its per-image values, or null (set-level metrics);
  ``interval``: how it was computed (``reports.uncertainty``), ``"none"`` without one.
"""

from __future__ import annotations

import math

from harness.results import Result
from reports.leaderboard import to_records

SCHEMA_VERSION = 2

RECORD = {
    "type": "object",
    "required": ["schema_version", "run", "method", "benchmark", "metric", "name", "value", "n", "lower_is_better", "description",
                 "unit", "adversarial", "attack", "needs_reference", "unet_evals_per_image", "ci95", "interval"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "run": {"type": "string"},
        "method": {"type": "string"},
        "benchmark": {"type": "string"},
        "metric": {"type": "string", "pattern": "^[^:]+:.+$"},
        "name": {"type": "string"},
        "value": {"type": ["number", "null"]},
        "n": {"type": "integer", "minimum": 0},
        "lower_is_better": {"type": "boolean"},
        "description": {"type": "string"},
        "unit": {"enum": ["rate", "score", "count", "distance", None]},
        "adversarial": {"type": "boolean"},
        "attack": {"type": ["string", "null"]},
        "needs_reference": {"type": "boolean"},
        "unet_evals_per_image": {"type": ["number", "null"]},
        "ci95": {"oneOf": [{"type": "null"}, {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}]},
        "interval": {"type": "string"},
    },
}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "harness report --json",
    "type": "array",
    "items": RECORD,
}


def records_document(results: list[Result], intervals: dict) -> list[dict]:
    """The ``--json`` output of ``results`` with their ``intervals`` (``reports.uncertainty.intervals``).

    JSON has no NaN, so a value that could not be computed is null.
    """
    return [
        {"schema_version": SCHEMA_VERSION, **record,
         "value": None if record["value"] is None or math.isnan(record["value"]) else record["value"]}
        for record in to_records(results, intervals)
    ]
