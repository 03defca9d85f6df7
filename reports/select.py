"""Which stored results a report covers: ``--runs``, ``--methods`` and ``--bench`` filters, checked against the store.

A filter item that matches nothing is an error that lists what the store holds: a typo must not produce a
silently smaller report.
"""

from __future__ import annotations

from harness.api import HarnessError, did_you_mean
from harness.results import Result
from harness.spec import Selection, parse_selections
from reports.leaderboard import BASE_PROVENANCE, provenance


def _labels(text: str, option: str) -> list[tuple[str, bool]]:
    """Each item of a filter as (label, has_parameters), in the run grammar (``uce:lamb=0.1,rece``)."""
    items = []
    for parts in parse_selections(text, option):
        label = "+".join(part.label() for part in parts)
        items.append((label, len(parts) > 1 or bool(parts[0].params)))
    return items


def _matches(stored: str, label: str, exact: bool) -> bool:
    """``uce`` matches every variant of uce ("uce", "uce:lamb=0.1"); ``uce:lamb=0.1`` only itself."""
    return stored == label or (not exact and "+" not in stored and Selection.parse(stored, "stored label").name == label)


def _expand_groups(items: list[tuple[str, bool]], stored: set[str], registry) -> list[tuple[str, bool]]:
    """A benchmark group (``--bench toy``) stands for its members."""
    expanded = []
    for label, exact in items:
        if registry is not None and not exact and label not in stored and label in registry.groups("benchmarks"):
            expanded.extend((member, False) for member in registry.group("benchmarks", label))
        else:
            expanded.append((label, exact))
    return expanded


def select(results: list[Result], where: str, runs: str | None = None, methods: str | None = None, bench: str | None = None,
           registry=None) -> list[Result]:
    """The rows of ``results`` that the filters keep; ``where`` names the store in messages.

    The base model's rows stay whatever ``--methods`` says, because a comparison without its baseline is
    where reproducibility disputes start.
    """
    if not results:
        raise HarnessError(f"the store at {where} has no results yet; run `harness run --out {where}` first")
    if runs:
        wanted = [run.strip() for run in runs.split(",") if run.strip()]
        stored_runs = list(dict.fromkeys(row.run_id for row in results))
        for run in wanted:
            if run not in stored_runs:
                raise HarnessError(f"no run {run!r} in the store at {where}{did_you_mean(run, stored_runs)}")
        results = [row for row in results if row.run_id in wanted]
    if methods:
        stored = {row.method for row in results}
        items = _labels(methods, "--methods")
        for label, exact in items:
            if not any(_matches(s, label, exact) for s in stored):
                raise HarnessError(f"no results for method {label!r} in the store at {where}{did_you_mean(label, stored)}")
        results = [
            row for row in results
            if provenance(row) == BASE_PROVENANCE or any(_matches(row.method, label, exact) for label, exact in items)
        ]
    if bench:
        stored = {row.benchmark for row in results}
        items = _labels(bench, "--bench")
        for label, exact in items:
            found = any(_matches(s, label, exact) for s in stored)
            group = registry is not None and not exact and label in registry.groups("benchmarks")
            if not found and not group:
                raise HarnessError(f"no results for benchmark {label!r} in the store at {where}{did_you_mean(label, stored)}")
        items = _expand_groups(items, stored, registry)
        results = [row for row in results if any(_matches(row.benchmark, label, exact) for label, exact in items)]
    if not results:
        raise HarnessError(f"no results in the store at {where} match these filters")
    return results
