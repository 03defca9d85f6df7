"""Uncertainty and paired tests for stored per-image values: every function is deterministic for its inputs.

Why paired: every method sees exactly the same prompts and seeds (same initial noise), so two methods' values on
one benchmark are matched image by image.  A paired test uses that matching and is far more powerful than
comparing two independent proportions.

* ``wilson``: the Wilson score interval of a binomial proportion (Wilson 1927, JASA 22:209), the interval every
  rate cell carries.
* ``effective_sample_size``: the n that a rate with several seeds per prompt is worth (n over Kish's design effect),
  so its Wilson interval neither treats the seeds of one prompt as independent nor collapses to a point at 0%.
* ``bootstrap_mean``: a percentile bootstrap of a mean that resamples *prompts* (clusters), not images, so
  several seeds of one prompt are never treated as independent.
* ``paired_bootstrap_delta``: the same for the mean difference B − A of matched values.
* ``mcnemar_exact``: McNemar's test for paired 0/1 values, exact: a two-sided binomial test on the discordant
  pairs (McNemar 1947, Psychometrika 12:153).
* ``wilcoxon_signed_rank``: the paired test for continuous values (Wilcoxon signed-rank, zero differences
  dropped, exact with tied ranks up to 200 non-zero pairs; ``signed_rank_test`` also gives its direction).
* ``holm``: Holm's step-down adjustment of a family of p-values (Holm 1979, Scand. J. Statist. 6:65).
* ``is_rate``: which of the two families above a metric's values get (Wilson and McNemar, or bootstrap and
  Wilcoxon): the one place that choice is made.

The bootstrap draws from ``numpy.random.default_rng(seed)``: the same store always prints the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from statistics import NormalDist

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: float, n: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` out of ``n`` (``successes`` may be ``value * n`` with round-off; ``n``
    may be an effective sample size, see ``effective_sample_size``)."""
    if n <= 0:
        raise ValueError(f"a Wilson interval needs n >= 1; got n={n}")
    z = _z(confidence)
    p = min(max(successes / n, 0.0), 1.0)
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At p = 0 (p = 1) the lower (upper) end is 0 (1) exactly; centre ∓ half leaves round-off there (1.4e-17,
    # 0.9999999999999999), which the exports would carry.
    low = 0.0 if p == 0 else max(0.0, float(centre - half))
    high = 1.0 if p == 1 else min(1.0, float(centre + half))
    return low, high


def effective_sample_size(values: Sequence[float], groups: Sequence | None) -> float:
    """The effective n of a mean of 0/1 values clustered by ``groups`` (prompts with several seeds): n / deff.

    Kish's design effect (Kish 1965, *Survey Sampling*, §5.4) is the variance of the mean under clustering over its
    variance if the n images were independent.  The clustered variance is the usual between-cluster estimate of a
    ratio mean, k/(k−1) · Σ_c (s_c − p·m_c)² / n² (s_c: cluster c's sum, m_c its size, k clusters).  deff is kept
    between 1 (seeds as good as new prompts) and Σ m_c² / n (every seed of a prompt identical; with K seeds each,
    K), the value a cell at 0% or 100% gets, where nothing is left to estimate it from: such a cell then counts each
    prompt once, so 0 of 100 prompts × 4 seeds gets Wilson's [0, 3.7%] for 100 images, not the bootstrap's [0, 0].
    Wilson's interval with this n is the effective-sample-size interval of Korn & Graubard (1998, *Survey
    Methodology* 24:193) for proportions from clustered samples.
    """
    array = np.asarray(values, dtype=float)
    n = array.size
    cluster, k = _cluster_index(groups, n)
    if k == n:
        return float(n)
    sizes = np.bincount(cluster, minlength=k).astype(float)
    most = float(np.sum(sizes**2) / n)  # deff when every cluster is uniform
    p = float(array.mean())
    if p <= 0.0 or p >= 1.0 or k < 2:
        return n / most
    sums = np.bincount(cluster, weights=array, minlength=k)
    clustered = k / (k - 1) * float(np.sum((sums - p * sizes) ** 2)) / n**2
    deff = min(max(clustered / (p * (1 - p) / n), 1.0), most)
    return n / deff


def _cluster_index(groups: Sequence | None, n: int) -> tuple[np.ndarray, int]:
    """Each item's cluster number (0..k-1) and k; without ``groups`` every item is its own cluster."""
    if groups is None:
        return np.arange(n), n
    _, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    return inverse, int(inverse.max()) + 1 if n else 0


def _resampled_means(values: np.ndarray, groups: Sequence | None, resamples: int, seed: int) -> np.ndarray:
    """Means of ``resamples`` bootstrap samples that draw whole clusters with replacement."""
    cluster, k = _cluster_index(groups, len(values))
    sums = np.bincount(cluster, weights=values, minlength=k)
    counts = np.bincount(cluster, minlength=k).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(resamples, k), dtype=np.int32)
    if np.all(counts == 1):  # one image per prompt: every resample has k images
        return sums[draws].sum(axis=1) / k
    return sums[draws].sum(axis=1) / counts[draws].sum(axis=1)


def bootstrap_mean(values: Sequence[float], groups: Sequence | None = None, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``, resampling the clusters named by ``groups`` (prompts)."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise ValueError("a bootstrap interval needs at least one value")
    means = _resampled_means(array, groups, resamples, seed)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def stratified_bootstrap_mean(samples: Sequence[Sequence[float]], groups: Sequence[Sequence | None],
                              resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                              confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the unweighted mean of several samples' means (benchmarks weighted equally):
    each sample is resampled on its own, its clusters (``groups``, prompts) drawn with replacement, sample ``i`` with
    seed ``seed + i``."""
    if not samples or any(len(sample) == 0 for sample in samples):
        raise ValueError("a stratified bootstrap interval needs at least one value in every sample")
    total = np.zeros(resamples)
    for index, (sample, sample_groups) in enumerate(zip(samples, groups)):
        total += _resampled_means(np.asarray(sample, dtype=float), sample_groups, resamples, seed + index)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(total / len(samples), [alpha, 1 - alpha])
    return float(low), float(high)


def paired_bootstrap_delta(a: Sequence[float], b: Sequence[float], groups: Sequence | None = None,
                           resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                           confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Interval of mean(b − a) over matched pairs, resampling prompts (``groups``) with their pairs intact."""
    a_array, b_array = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_array.shape != b_array.shape:
        raise ValueError(f"paired values need equal lengths; got {a_array.size} and {b_array.size}")
    return bootstrap_mean(b_array - a_array, groups, resamples, seed, confidence)


def discordant(a: Sequence[float], b: Sequence[float]) -> tuple[int, int]:
    """(pairs where only A is 1, pairs where only B is 1) of matched 0/1 values."""
    a_array, b_array = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    return int(np.sum(a_array & ~b_array)), int(np.sum(~a_array & b_array))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: P(X <= min) doubled, X ~ Binomial(a_only + b_only, 1/2), capped at 1.

    Computed in exact integer arithmetic (a sum of binomial coefficients over 2**n), so no rounding creeps in and
    no statistics library is imported for it.
    """
    total = a_only + b_only
    if total == 0:
        return 1.0
    tail = sum(math.comb(total, k) for k in range(min(a_only, b_only) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**total)))


EXACT_SIGNED_RANK_MAX = 200  # non-zero pairs up to which the signed-rank null distribution is enumerated exactly


def signed_rank_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, int]:
    """Wilcoxon's signed-rank test of matched values: (two-sided p-value, direction), direction +1 when the ranks
    favour B > A, −1 when they favour A > B, 0 when the two rank sums are equal (p is then 1).

    Zero differences are dropped before ranking (Wilcoxon's own rule) and tied differences share their mean rank.
    Up to ``EXACT_SIGNED_RANK_MAX`` non-zero pairs the p-value is exact: under the null hypothesis each rank's sign
    is a fair coin, so the distribution of T⁺ (the sum of the positive differences' ranks) is the convolution of
    one two-point distribution {0, r_i} per pair; doubled mean ranks are whole numbers, so it is a table over
    0 … n(n + 1).  Beyond that, the normal approximation with the tie-corrected variance
    n(n + 1)(2n + 1)/24 − Σ(t³ − t)/48 and a continuity correction of ½.

    Exactness matters here: with several seeds per prompt most per-prompt differences are 0 and the rest are tied
    (±½, ±1), and scipy (1.17) picks its normal approximation without continuity correction from the number of
    pairs *before* dropping zeros, so 5 prompts out of 30, all one way, got p = 0.025 where the exact p is 2/2⁵.
    The direction is what the test supports, which can differ from the sign of the mean difference when values
    are skewed (many small wins, one large loss); the leaderboard's marks and ``harness compare`` need both to agree.
    """
    differences = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    differences = differences[differences != 0]
    n = differences.size
    if n == 0:
        return 1.0, 0
    from scipy.stats import rankdata

    ranks = rankdata(np.abs(differences), method="average")  # ties share the mean of the ranks they span
    positive = float(ranks[differences > 0].sum())
    negative = float(ranks[differences < 0].sum())
    direction = (positive > negative) - (positive < negative)
    if direction == 0:
        return 1.0, 0
    if n <= EXACT_SIGNED_RANK_MAX:
        doubled = np.rint(2 * ranks).astype(np.int64)
        pmf = np.zeros(int(doubled.sum()) + 1)
        pmf[0] = 1.0
        for rank in doubled:  # each pair's rank counts towards T⁺ with probability ½
            pmf[rank:] = 0.5 * pmf[rank:] + 0.5 * pmf[: pmf.size - rank].copy()
            pmf[:rank] *= 0.5
        observed = int(np.rint(2 * positive))
        tail = min(pmf[: observed + 1].sum(), pmf[observed:].sum())
        return float(min(1.0, 2 * tail)), direction
    _, counts = np.unique(np.abs(differences), return_counts=True)
    variance = n * (n + 1) * (2 * n + 1) / 24 - float(np.sum(counts.astype(float) ** 3 - counts)) / 48
    z = (abs(positive - n * (n + 1) / 4) - 0.5) / math.sqrt(variance)
    return float(min(1.0, 2 * (1 - NormalDist().cdf(max(z, 0.0))))), direction


def wilcoxon_signed_rank(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of matched values (``signed_rank_test``); 1.0 when all are equal."""
    return signed_rank_test(a, b)[0]


def is_binary(values: Sequence[float]) -> bool:
    array = np.asarray(values, dtype=float)
    return bool(np.all((array == 0) | (array == 1)))


def is_rate(unit: str | None, *samples: Sequence[float]) -> bool:
    """Whether per-image values are analysed as a rate (Wilson interval, exact McNemar) rather than as a score
    (bootstrap interval, Wilcoxon signed-rank).  Every interval and paired test asks this, so a cell's interval and
    the test behind its mark never disagree about what the values are.

    The metric's declared unit (``Metric.unit``, stored with each result) decides, not the values: a score or a count
    whose per-image values happen to be all 0 or 1 (a small sample, a clipped score) is not a success/failure per
    image, its mean may lie outside [0, 1], and Wilson's interval would clamp it there and claim a binomial variance.
    A declared rate is a rate only while every value is 0 or 1: Wilson and McNemar count successes, and a rate that
    averages per-image fractions (none in this code base) gets the bootstrap, which assumes nothing about the values.
    ``unit`` None is a result stored before units were: only its values are left to decide by.
    """
    if unit is not None and unit != "rate":
        return False
    return all(is_binary(sample) for sample in samples)


def paired_p_value(a: Sequence[float], b: Sequence[float], unit: str | None = None) -> float:
    """Exact McNemar for a rate, Wilcoxon signed-rank otherwise (``is_rate``; ``unit`` None: decided by the values)."""
    if is_rate(unit, a, b):
        return mcnemar_exact(*discordant(a, b))
    return wilcoxon_signed_rank(a, b)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order: the i-th smallest is multiplied by (m − i), made monotone, capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted
