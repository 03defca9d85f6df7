"""The erasure-vs-preservation plot: one named metric per axis, clamped ranges, a zoom on the methods with the base
model as a named reference, and 95% intervals as error bars."""

import matplotlib
import pytest
from report_fixtures import per_image_values, toy_results

from reports import leaderboard, plots

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def board():
    results = toy_results(methods=("sd", "uce", "rece", "trce-t", "speed"))
    return leaderboard.build(results, values=per_image_values(results))


def test_x_axis_is_one_named_metric_never_a_mix(board):
    columns, what = plots.erasure_summary(board)
    assert {c.metric for c in columns} == {"toy:toy-asr"} and len(columns) == 4  # not toy-asr-any as well
    assert what == "ASR, mean over 4 benchmarks"


def test_tradeoff_zooms_on_the_methods_clamps_rates_and_draws_intervals(board):
    accuracy = next(c for c in board.columns if c.metric == "toy:toy-acc")
    figure = plots.tradeoff(board, accuracy)
    axes = figure.axes[0]
    x_low, x_high = axes.get_xlim()
    y_low, y_high = axes.get_ylim()
    # clamped to what a rate can be (but for a sliver beyond 0 or 100 when a method sits there; see the next test)
    assert -0.03 * (x_high - x_low) <= x_low and y_high <= 100 + 0.03 * (y_high - y_low) and 0 <= y_low
    assert all(0 <= t <= 100 for t in (*axes.get_xticks(), *axes.get_yticks()))
    methods = {m: xy for m, xy in figure.points.items() if m != "sd"}
    # the base model (ASR ~ 89%) would squeeze the methods into a corner: the view holds the methods only
    assert x_low <= min(x for x, _ in methods.values()) and max(x for x, _ in methods.values()) <= x_high < figure.points["sd"][0]
    # named with its values in the legend, not in a note that could cover a method's point
    notes = [t.get_text() for t in axes.get_legend().get_texts() if "base model" in t.get_text()]
    assert len(notes) == 1 and notes[0].startswith("sd (base model,\noff the zoomed axes:\nx = ")
    assert not [t for t in axes.texts if "base model" in t.get_text()]
    # one error bar per axis per method that has per-image values (x: stratified bootstrap; y: Wilson)
    error_lines = [c for c in axes.collections if isinstance(c, matplotlib.collections.LineCollection)]
    assert len(error_lines) == 2 * len(figure.points)
    assert axes.get_xlabel() == "ASR, mean over 4 benchmarks (%), lower is better"


def test_a_rate_at_exactly_0_or_100_stays_inside_the_frame():
    low, high = plots._zoomed([0.0, 12.0], rate=True, non_negative=True)
    assert -0.03 * (high - low) <= low < 0  # a sliver, so the marker and its error bar clear the axis line
    low, high = plots._zoomed([70.0, 100.0], rate=True, non_negative=True)
    assert 100 < high <= 100 + 0.03 * (high - low)
    low, high = plots._zoomed([2.0, 30.0], rate=True, non_negative=True)
    assert low == 0  # clamped, and nothing sits on the edge: no sliver
    assert plots._zoomed([0.0, 12.0], rate=False, non_negative=False)[0] < -1  # an unclamped score just gets its margin


def test_fid_axis_never_goes_below_zero_and_the_base_model_is_not_a_point(board):
    fid = next(c for c in board.columns if c.metric == "toy-fid:toy-fid")
    figure = plots.tradeoff(board, fid)
    assert "sd" not in figure.points and figure.axes[0].get_ylim()[0] >= 0


def test_rate_bars_carry_error_bars(board):
    figure = plots.rate_bars(board, "toy:toy-asr")
    axes = figure.axes[0]
    error_lines = [c for c in axes.collections if isinstance(c, matplotlib.collections.LineCollection)]
    assert len(error_lines) == 5 and all(len(lines.get_segments()) == 4 for lines in error_lines)  # a line per method and benchmark
    assert [t.get_text() for t in axes.get_xticklabels()] == ["Explicit", "Synonym", "Implicit", "Held-out implicit"]


def test_rate_bar_labels_sit_above_their_interval_and_ticks_stop_at_100(board):
    figure = plots.rate_bars(board, "toy:toy-asr")
    axes = figure.axes[0]
    tops = {}  # bar centre -> top of its error bar
    for lines in axes.collections:
        for (x, low), (_, high) in lines.get_segments():
            tops[round(x, 6)] = max(low, high)
    labels = [t for t in axes.texts if t.get_text() not in ("", "n/a")]
    assert len(labels) == len(tops) == 20
    for label in labels:
        x, y = label.xy
        assert y >= tops[round(x, 6)]  # anchored at the interval's top, so no label is crossed by an error bar
    assert max(axes.get_yticks()) <= 100 < axes.get_ylim()[1]  # headroom for the labels, but no 120% tick
