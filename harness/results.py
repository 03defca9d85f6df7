"""``Result``: one stored number and everything a report needs to show it, with no plugin loaded.

The runner writes, beside each value, what the benchmark and the scorer declare about it (direction, unit, display
name, definition, whether the prompts are adversarial, whether the scorer compares against the base model's images),
so a store copied to a machine without the producing plugins reports exactly as it did where it was made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from harness.api import MetricRef


@dataclass(frozen=True)
class Result:
    """One (run, method, benchmark, metric) value, as ``Store.results`` returns it (oldest run first)."""

    run_id: str
    method: str  # the method label as the user wrote it, e.g. "uce:lamb=0.1" or "uce+sld"
    benchmark: str  # the benchmark label, e.g. "i2p" or "csv:path=my.csv"
    metric: str  # "<scorer>:<metric id>"
    value: float | None  # a metric that could not be computed (NaN) comes back as None: SQLite stores NaN as NULL
    n: int  # images behind the value
    lower_is_better: bool
    name: str  # short display name of the metric
    description: str  # the metric's exact definition
    unit: str | None  # "rate", "score", "count", "distance"; None in results stored before units were
    # The prompts are adversarial: the benchmark declares so, or this is an attack cell (``is_adversarial``).  Only the
    # declared ones make the leaderboard's "Adv" average; attack cells have their "attacked" one.
    adversarial: bool
    needs_reference: bool  # the scorer compares whole sets against the base model's images (FID)
    method_display: str = ""  # the method label as a paper writes it ("TRCE (T+V)", "UCE (lamb=0.1)"); "": the label
    benchmark_display: str = ""  # the benchmark label as a paper writes it ("Ring-A-Bell"); "": the label
    metric_position: int | None = None  # the metric's place in its benchmark's ``metrics`` (0 = primary); None: unknown
    model_state: str | None = None
    unet_evals_per_image: float | None = None
    run_created: str = ""
    attack: str | None = None  # an attack cell "A(B)": the attack's label (its prompts were found against this method)
    state_metadata: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        # Stores written before Store.add_result applied ``is_adversarial`` hold adversarial = 0 for attack cells (the
        # runner clears the source benchmark's flag for them): read back here, old and new stores agree.
        object.__setattr__(self, "adversarial", is_adversarial(self.adversarial, self.attack))

    @property
    def metric_ref(self) -> MetricRef:
        return MetricRef.parse(self.metric, "stored metric")

    # A read-only mapping view (``result["value"]``, ``result.get("n")``) for code written against the row dicts
    # ``Store.results`` returned before this class; new code uses the attributes.
    def __getitem__(self, key: str):
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key) if key in _FIELDS else default

    def keys(self):
        return list(_FIELDS)


_FIELDS = tuple(f.name for f in dataclasses.fields(Result))


def is_adversarial(declared: bool, attack: str | None) -> bool:
    """Whether a result's prompts are adversarial: its benchmark declares so (``Benchmark.adversarial``), or it is an
    attack cell "A(B)", whose prompts attack A optimised against the method by definition, whatever B declares."""
    return bool(declared) or bool(attack)


def common_unit(units) -> str | None:
    """The unit of results compared or averaged together: theirs when they share one; None where they disagree (a
    plugin changed its unit between runs) or are not known, so that only their values decide (``stats.is_rate``)."""
    found = set(units)
    return found.pop() if len(found) == 1 else None


def kept_in_half_precision(metadata: dict) -> dict | None:
    """``{"dtype", "kept", "changes"}`` where a part's changes were partly rounded away by a float16/bfloat16
    pipeline: a fine-tune's ``written_back`` share, or a loaded checkpoint's ``edited_elements_moved_share``; None
    where all were kept."""
    written = metadata.get("written_back") or {}
    if written.get("surviving_share", 1.0) < 1.0:
        return {"dtype": written.get("dtype"), "kept": written["surviving_share"], "changes": "fine-tuned changes"}
    if metadata.get("edited_elements_moved_share", 1.0) < 1.0:
        return {"dtype": metadata.get("cast_to"), "kept": metadata["edited_elements_moved_share"], "changes": "the checkpoint's changes"}
    return None
