"""Intervals on stored results and paired comparisons between methods, computed from the stored per-image values.

Nothing is re-detected: the store keeps each result's per-image values (0/1 for a rate, a number for a per-image
score) next to the result, and everything here is a deterministic function of them (the bootstrap is seeded),
so the same store always prints the same interval and the same p-value.

* A **rate** (a metric of unit ``rate``, 0 or 1 per image) gets the Wilson 95% interval of (value·n, n); with
  several seeds per prompt, n is the effective sample size of the clustered images (``stats.effective_sample_size``).
* A **per-image mean** (CLIP score, contrast) gets a percentile bootstrap that resamples prompts, not images
  (``BOOTSTRAP``), so several seeds of one prompt count once.
* Which of the two, and which paired test (McNemar or Wilcoxon), is ``stats.is_rate``'s answer for the metric's
  stored unit; only a result stored before units were is judged by its values being all 0 or 1.
* A **set-level** metric (FID) or an aggregate (a detection count) has no per-image values, and no interval:
  none is made up.

Pairs are matched on (prompt id, seed): every method sees the same prompts and seeds, so image i of method A and
image i of method B share their initial noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness import stats

BOOTSTRAP = f"bootstrap over prompts, {stats.BOOTSTRAP_RESAMPLES} resamples, seed {stats.BOOTSTRAP_SEED}"
WILSON = "Wilson score interval"
ONE_PROMPT = "none: one prompt (a bootstrap over prompts needs two)"
ALPHA = 0.05

Key = tuple[str, str, str, str]  # (run, method, benchmark, metric)


@dataclass(frozen=True)
class Interval:
    low: float | None
    high: float | None
    method: str  # how it was computed, or why there is none

    @property
    def known(self) -> bool:
        return self.low is not None

    def as_list(self) -> list[float] | None:
        return [self.low, self.high] if self.known else None


def _finite(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def interval(value: float | None, values: list[dict] | None, unit: str | None = None) -> Interval:
    """The 95% interval of one stored result from its per-image values (``None``: the metric has none); ``unit`` is
    the result's stored unit (``stats.is_rate``; None for results stored before units were)."""
    if not values:
        return Interval(None, None, "none: no per-image values (a set-level or aggregate metric)")
    if not _finite(value):
        return Interval(None, None, "none: the value is undefined")
    numbers = [v["value"] for v in values]
    prompts = [v["prompt_id"] for v in values]
    repeated = len(set(prompts)) < len(prompts)  # --seeds-per-prompt K > 1: images of one prompt are not independent
    seeds = f" ({len(prompts) / len(set(prompts)):g} seeds per prompt)" if repeated else ""
    if stats.is_rate(unit, numbers):
        if not repeated:
            low, high = stats.wilson(value * len(numbers), len(numbers))
            return Interval(low, high, WILSON)
        n = stats.effective_sample_size(numbers, prompts)
        low, high = stats.wilson(value * n, n)
        return Interval(low, high, f"{WILSON} on the effective n {n:.0f} of {len(numbers)} images{seeds}")
    if len(set(prompts)) < 2:  # every resample would be the one prompt again: a zero-width interval claiming certainty
        return Interval(None, None, ONE_PROMPT)
    low, high = stats.bootstrap_mean(numbers, groups=prompts)
    return Interval(low, high, BOOTSTRAP + seeds)


def intervals(results: list[dict], stored: dict[Key, list[dict]]) -> dict[Key, Interval]:
    """An interval for every result row (rows of ``Store.results``)."""
    found = {}
    for row in results:
        key = (row["run_id"], row["method"], row["benchmark"], row["metric"])
        found[key] = interval(row["value"], stored.get(key), row.get("unit"))
    return found


def pair_key(value: dict) -> tuple[str, int]:
    return (str(value["prompt_id"]), int(value["seed"]))


def align(a: list[dict], b: list[dict]) -> tuple[list[float], list[float], list[str]]:
    """Matched values of A and B on (prompt id, seed), in A's order, and each pair's prompt (the bootstrap cluster)."""
    keys_a = [pair_key(v) for v in a]
    keys_b = [pair_key(v) for v in b]
    if keys_a == keys_b:  # the usual case: both methods ran the same prompts in the same order
        return [v["value"] for v in a], [v["value"] for v in b], [key[0] for key in keys_a]
    by_key = {key: v["value"] for key, v in zip(keys_b, b)}
    a_values, b_values, prompts = [], [], []
    for key, value in zip(keys_a, a):
        if key in by_key:
            a_values.append(value["value"])
            b_values.append(by_key[key])
            prompts.append(key[0])
    return a_values, b_values, prompts


def compare(a: list[dict], b: list[dict], unit: str | None = None) -> dict:
    """B − A on matched pairs: the difference of means, its paired bootstrap interval, the paired test's p-value
    (``unit``: the metric's stored unit, which picks the test; see ``stats.is_rate``)."""
    a_values, b_values, prompts = align(a, b)
    record: dict = {"n_pairs": len(a_values), "n_prompts": len(set(prompts))}
    if not a_values:
        return {**record, "delta": None, "ci95": None, "p_value": None, "test": "none: no matched (prompt id, seed) pairs"}
    mean_a, mean_b = sum(a_values) / len(a_values), sum(b_values) / len(b_values)
    # The means over the pairs, which the difference is: a cell may hold more images than the other shares.
    record.update(paired_a=mean_a, paired_b=mean_b, delta=mean_b - mean_a)
    if len(set(prompts)) < 2:
        record.update(ci95=None, interval=ONE_PROMPT)
    else:
        low, high = stats.paired_bootstrap_delta(a_values, b_values, groups=prompts)
        record.update(ci95=[low, high], interval=f"paired {BOOTSTRAP}")
    p_value, test, counts, direction = _paired_test(a_values, b_values, prompts, unit)
    record.update(p_value=p_value, test=test, test_favours={1: "B", -1: "A"}.get(direction, "neither"))
    if counts is not None:
        record["discordant"] = counts
    return record


def per_prompt_means(values: list[float], prompts: list[str]) -> list[float]:
    sums: dict[str, list[float]] = {}
    for value, prompt in zip(values, prompts):
        sums.setdefault(prompt, []).append(value)
    return [sum(group) / len(group) for group in sums.values()]


def _paired_test(a_values: list[float], b_values: list[float], prompts: list[str],
                 unit: str | None = None) -> tuple[float, str, list[int] | None, int]:
    """(p-value, the test's name, discordant counts or None, direction): exact McNemar for a rate (``stats.is_rate``)
    with one image per prompt; otherwise Wilcoxon signed-rank, on per-prompt means when a prompt has several seeds
    (the prompts, not the images, are the independent units).  Direction: +1 where the test finds B's values higher,
    −1 where A's, 0 where neither (``stats.signed_rank_test``)."""
    if len(set(prompts)) < len(prompts):
        a_means, b_means = per_prompt_means(a_values, prompts), per_prompt_means(b_values, prompts)
        p_value, direction = stats.signed_rank_test(a_means, b_means)
        return p_value, "Wilcoxon signed-rank on per-prompt means (several seeds per prompt)", None, direction
    if stats.is_rate(unit, a_values, b_values):
        a_only, b_only = stats.discordant(a_values, b_values)
        return stats.mcnemar_exact(a_only, b_only), "exact McNemar", [a_only, b_only], (b_only > a_only) - (b_only < a_only)
    p_value, direction = stats.signed_rank_test(a_values, b_values)
    return p_value, "Wilcoxon signed-rank", None, direction


def lead_p(leader: list[dict], other: list[dict], unit: str | None, lower_is_better: bool) -> float | None:
    """The paired test's p-value for ``leader`` doing better than ``other`` (None: no matched pairs), 1.0 where the
    test does not point that way.  A rank test and a mean can disagree: many small wins and one large loss give a
    small p for the many wins, while the mean, which orders the table, favours the other method; a lead is only
    marked where both agree."""
    a_values, b_values, prompts = align(leader, other)
    if not a_values:
        return None
    p_value, _, _, direction = _paired_test(a_values, b_values, prompts, unit)
    mean_gap = sum(b_values) / len(b_values) - sum(a_values) / len(a_values)  # other − leader
    ahead = 1 if lower_is_better else -1  # the sign of other − leader when the leader is better
    if direction != ahead or mean_gap * ahead <= 0:
        return 1.0
    return p_value


def mean_of_benchmarks_interval(per_benchmark: list[list[dict]], units: list[str | None] | None = None) -> Interval:
    """The 95% interval of the mean of several benchmarks' means (the trade-off plot's x), each benchmark weighted
    equally whatever its size; ``units`` are the benchmarks' stored units (``stats.is_rate``; None: unknown).

    Rates: Wilson's interval with Kish's effective n of an equally weighted mean of strata, B² / Σ_b 1/n_b (each n_b
    itself the effective n of its prompts and seeds, ``stats.effective_sample_size``).  Treating the strata as one
    proportion adds their between-benchmark spread to the variance, so the interval errs wide, and a method at 0% on
    every benchmark still gets an upper bound.  Other per-image means: a stratified bootstrap that resamples prompts
    within each benchmark (each benchmark its own seeded draws), so each keeps its size and seeds stay together.
    """
    import numpy as np

    if not per_benchmark or not all(per_benchmark):
        return Interval(None, None, "none: a benchmark has no per-image values")
    numbers = [np.asarray([v["value"] for v in values], dtype=float) for values in per_benchmark]
    prompts = [[v["prompt_id"] for v in values] for values in per_benchmark]
    mean = float(np.mean([array.mean() for array in numbers]))
    if all(stats.is_rate(unit, array) for unit, array in zip(units or [None] * len(numbers), numbers, strict=True)):
        sizes = [stats.effective_sample_size(array, groups) for array, groups in zip(numbers, prompts)]
        n = len(sizes) ** 2 / sum(1 / size for size in sizes)
        low, high = stats.wilson(mean * n, n)
        return Interval(low, high, f"{WILSON} on the effective n {n:.0f} of the equally weighted benchmarks")
    if all(len(set(sample_prompts)) < 2 for sample_prompts in prompts):  # every resample would be the same prompts
        return Interval(None, None, ONE_PROMPT)
    low, high = stats.stratified_bootstrap_mean(numbers, prompts)
    return Interval(low, high, f"stratified {BOOTSTRAP}")
