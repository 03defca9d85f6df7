"""harness.stats against independent references (scipy's own Wilson and binomial tests) and hand-worked cases."""

import numpy as np
import pytest
from scipy.stats import binomtest

from harness import stats


@pytest.mark.parametrize("k,n", [(0, 10), (3, 48), (1, 79), (5, 79), (48, 48), (500, 1000)])
def test_wilson_matches_scipy(k, n):
    reference = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = stats.wilson(k, n)
    assert low == pytest.approx(reference.low, abs=1e-12)
    assert high == pytest.approx(reference.high, abs=1e-12)


def test_wilson_reproduces_the_issue_numbers():
    # toy-synonym ASR of uce: 3 of 48 = 6.25%, Wilson 95% [2.1, 16.8]
    low, high = stats.wilson(3, 48)
    assert (round(100 * low, 1), round(100 * high, 1)) == (2.1, 16.8)


@pytest.mark.parametrize("n", [13, 15, 19, 20, 24, 100])
def test_wilson_ends_at_zero_and_one_exactly(n):
    """centre - half at 0/n came out 1.4e-17 and centre + half at n/n 0.9999999999999999, exported as such."""
    assert stats.wilson(0, n)[0] == 0.0 and stats.wilson(n, n)[1] == 1.0
    assert stats.wilson(0, n)[1] < 1 and stats.wilson(n, n)[0] > 0


def test_wilson_rejects_empty():
    with pytest.raises(ValueError):
        stats.wilson(0, 0)


@pytest.mark.parametrize("b,c", [(0, 0), (1, 0), (3, 9), (10, 10), (2, 15), (40, 61)])
def test_mcnemar_exact_is_the_two_sided_binomial_test_on_discordant_pairs(b, c):
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_discordant_counts_each_kind_of_disagreement():
    a = [1, 1, 0, 0, 1, 0]
    b = [1, 0, 1, 1, 0, 0]
    assert stats.discordant(a, b) == (2, 2)
    assert stats.discordant([1, 1, 1], [0, 0, 1]) == (2, 0)


def test_paired_p_value_chooses_the_test_by_the_values():
    a, b = [1] * 12 + [0] * 8, [0] * 12 + [0] * 8
    assert stats.paired_p_value(a, b) == pytest.approx(binomtest(0, 12, 0.5).pvalue)
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    y = x + 1.0 + rng.normal(scale=0.1, size=30)
    assert stats.paired_p_value(x, y) < 1e-6
    assert stats.paired_p_value(x, x) == 1.0


def test_is_rate_follows_the_declared_unit_and_falls_back_to_the_values_without_one():
    zeros_and_ones = [0, 1, 1, 0]
    assert stats.is_rate("rate", zeros_and_ones) and stats.is_rate("rate", zeros_and_ones, [1, 1, 0, 0])
    assert not stats.is_rate("score", zeros_and_ones) and not stats.is_rate("count", zeros_and_ones)
    assert not stats.is_rate("rate", [0.25, 1.0])  # a rate of per-image fractions: Wilson and McNemar count successes
    assert stats.is_rate(None, zeros_and_ones) and not stats.is_rate(None, [0, 2])  # stored before units were
    assert not stats.is_rate(None, zeros_and_ones, [0.5, 1, 1, 0])


def test_paired_p_value_of_a_score_is_wilcoxon_even_on_zeros_and_ones():
    """On 0/1 values the exact signed-rank test *is* the sign test, i.e. exact McNemar (every non-zero difference is
    ±1, one tied rank); past the exact table (over 200 discordant pairs) the two tests part, which shows the route."""
    a, b = [1] * 12 + [0] * 8, [0] * 12 + [0] * 8
    assert stats.paired_p_value(a, b, "score") == pytest.approx(stats.wilcoxon_signed_rank(a, b), rel=1e-12)
    assert stats.paired_p_value(a, b, "rate") == pytest.approx(binomtest(0, 12, 0.5).pvalue)
    assert stats.paired_p_value(a, b, "score") == pytest.approx(stats.paired_p_value(a, b, "rate"), rel=1e-12)
    a, b = [1] * 130 + [0] * 100, [0] * 130 + [1] * 100
    assert stats.paired_p_value(a, b, "score") == pytest.approx(stats.wilcoxon_signed_rank(a, b), rel=1e-12)
    assert stats.paired_p_value(a, b, "rate") == pytest.approx(binomtest(100, 230, 0.5).pvalue, rel=1e-9)
    assert stats.paired_p_value(a, b, "score") != pytest.approx(stats.paired_p_value(a, b, "rate"), rel=1e-6)


def brute_force_signed_rank_p(differences) -> float:
    """Every sign assignment of the non-zero differences' mean ranks, counted: the exact two-sided p by definition."""
    import itertools

    nonzero = np.asarray([d for d in differences if d != 0], dtype=float)
    magnitudes = np.abs(nonzero)
    ranks = np.array([np.mean([1 + j for j, other in enumerate(sorted(magnitudes)) if other == m]) for m in magnitudes])
    observed = ranks[nonzero > 0].sum()
    sums = np.array([sum(r for r, plus in zip(ranks, signs) if plus) for signs in itertools.product([0, 1], repeat=len(ranks))])
    return min(1.0, 2 * min(np.mean(sums <= observed + 1e-9), np.mean(sums >= observed - 1e-9)))


def test_signed_rank_is_exact_with_zero_and_tied_differences():
    """Several seeds per prompt make most per-prompt differences 0 and the rest tied: 5 prompts of 30, all one way,
    is 2 / 2⁵ (scipy's automatic choice gave 0.025 here: a normal approximation picked on n = 30 before the zeros
    were dropped), and 11 up, 3 down, all of one size, is the exact sign test."""
    assert stats.wilcoxon_signed_rank([0] * 30, [0] * 25 + [1] * 5) == pytest.approx(2 / 2**5, rel=1e-12)
    assert stats.wilcoxon_signed_rank([0] * 14, [1] * 11 + [-1] * 3) == pytest.approx(binomtest(11, 14).pvalue, rel=1e-12)
    rng = np.random.default_rng(3)
    for _ in range(25):
        differences = rng.integers(-3, 4, size=int(rng.integers(2, 12))).astype(float) / 2
        if not np.any(differences):
            continue
        assert stats.wilcoxon_signed_rank(np.zeros_like(differences), differences) == pytest.approx(
            brute_force_signed_rank_p(differences), rel=1e-9), differences


def test_signed_rank_matches_scipy_where_scipy_is_exact_or_uses_the_continuity_correction():
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(4)
    for n in (5, 13, 30, 50):
        differences = rng.normal(0.3, 1, n)  # no ties, no zeros: scipy's exact distribution applies
        assert stats.wilcoxon_signed_rank(np.zeros(n), differences) == pytest.approx(wilcoxon(differences, method="exact").pvalue, rel=1e-9)
    differences = np.round(rng.normal(0.1, 1, 400), 1)  # past the exact table: the tie-corrected normal approximation
    assert stats.wilcoxon_signed_rank(np.zeros(400), differences) == pytest.approx(
        wilcoxon(differences, method="approx", correction=True).pvalue, rel=1e-9)


def test_signed_rank_direction_is_what_the_ranks_favour_not_the_mean():
    """Many small wins and one large loss: the ranks favour B while B's mean is lower."""
    a, b = [30.0] * 20, [30.3] * 18 + [26.0] * 2
    p_value, direction = stats.signed_rank_test(a, b)
    assert direction == 1 and p_value < 0.05 and np.mean(b) < np.mean(a)
    assert stats.signed_rank_test(b, a)[1] == -1
    assert stats.signed_rank_test([1, 2], [2, 1]) == (1.0, 0)  # the rank sums balance


def test_holm_hand_worked():
    # sorted p: 0.01 (×3 = 0.03), 0.02 (×2 = 0.04), 0.04 (×1 = 0.04); back in input order
    assert stats.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    # monotone: a larger raw p never gets a smaller adjusted p
    assert stats.holm([0.03, 0.001, 0.5, 0.02]) == pytest.approx([0.06, 0.004, 0.5, 0.06])
    assert stats.holm([0.9, 0.8]) == [1.0, 1.0]  # 0.8 × 2 caps at 1; 0.9 cannot fall below it


def test_bootstrap_is_deterministic_and_covers_the_mean():
    rng = np.random.default_rng(7)
    values = rng.normal(loc=3.0, scale=1.0, size=400)
    first = stats.bootstrap_mean(values)
    assert first == stats.bootstrap_mean(values)
    low, high = first
    assert low < values.mean() < high
    # half-width close to the normal-theory 1.96·sd/sqrt(n)
    assert (high - low) / 2 == pytest.approx(1.96 * values.std(ddof=1) / np.sqrt(400), rel=0.15)


def test_bootstrap_resamples_prompts_not_images():
    # 50 prompts, each seen with 4 seeds that agree: the images are not independent, the prompts are.
    rng = np.random.default_rng(3)
    per_prompt = rng.integers(0, 2, size=50).astype(float)
    values = np.repeat(per_prompt, 4)
    prompts = np.repeat(np.arange(50), 4)
    by_prompt = stats.bootstrap_mean(values, groups=prompts)
    by_image = stats.bootstrap_mean(values)
    one_seed = stats.bootstrap_mean(per_prompt)
    assert by_prompt[1] - by_prompt[0] > 1.5 * (by_image[1] - by_image[0])
    assert by_prompt[1] - by_prompt[0] == pytest.approx(one_seed[1] - one_seed[0], rel=0.2)


def test_paired_delta_interval_excludes_zero_for_a_real_shift_and_not_for_noise():
    rng = np.random.default_rng(5)
    a = rng.normal(size=200)
    low, high = stats.paired_bootstrap_delta(a, a + 0.5 + rng.normal(scale=0.2, size=200))
    assert 0.4 < low < 0.5 < high < 0.6
    low, high = stats.paired_bootstrap_delta(a, a + rng.normal(scale=0.2, size=200))
    assert low < 0 < high


def test_a_stratified_interval_weights_each_sample_equally_and_resamples_within_it():
    from harness.stats import bootstrap_mean, stratified_bootstrap_mean

    # 10 ones and 1000 zeros: pooled, the mean is 0.01; the mean of the two samples' means is 0.5, and neither
    # sample varies within itself, so no resample can move it.
    assert stratified_bootstrap_mean([[1.0] * 10, [0.0] * 1000], [None, None]) == (0.5, 0.5)
    # One sample: the plain bootstrap interval, same draws.
    values = [0.1, 0.9, 0.4, 0.7, 0.2, 0.3]
    assert stratified_bootstrap_mean([values], [None]) == bootstrap_mean(values)
    # Clusters drawn whole: two prompts with three identical seeds each behave as two values, not six.
    low, high = stratified_bootstrap_mean([[0.0] * 3 + [1.0] * 3], [["a"] * 3 + ["b"] * 3])
    assert (low, high) == (0.0, 1.0)
    with pytest.raises(ValueError, match="every sample"):
        stratified_bootstrap_mean([[1.0], []], [None, None])


def test_printed_numbers_round_halves_away_from_zero_in_every_table():
    """81.25% printed 81.2 and 93.75% printed 93.8 in one LaTeX table (Python rounds an exact half to the even digit)."""
    from reports.leaderboard import Column, fixed, format_interval, format_value, shown_number
    from reports.uncertainty import Interval

    rate = Column("b", "s:m", "ASR", True, rate=True)
    assert [format_value(v, rate, decimals=1) for v in (0.8125, 0.9375, 0.03125)] == ["81.3%", "93.8%", "3.1%"]
    assert format_value(23 / 80, rate, decimals=1) == "28.8%"  # 100 × 0.2875 is 28.749999999999996 in binary
    assert format_value(1 / 32, rate) == "3.13%" and shown_number(1 / 32, rate) == 3.13
    score = Column("b", "s:x", "FID", True, decimals=2)
    assert [format_value(v, score) for v in (0.125, 0.145, -0.125, 2.675)] == ["0.13", "0.15", "-0.13", "2.68"]
    assert fixed(float("inf"), 2) == "inf" and fixed(1e30, 2).endswith("000.00") and fixed(np.float64(0.125), 2) == "0.13"
    # a zero-width interval of a score prints as its value does
    assert format_interval(Interval(0.125, 0.125, "bootstrap"), score) == "[0.13, 0.13]"
