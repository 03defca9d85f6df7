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
    assert 0 <= x_low and x_high <= 100 and 0 <= y_low and y_high <= 100
    methods = {m: xy for m, xy in figure.points.items() if m != "sd"}
    # the base model (ASR ~ 89%) would squeeze the methods into a corner: the view holds the methods only
    assert x_low <= min(x for x, _ in methods.values()) and max(x for x, _ in methods.values()) <= x_high < figure.points["sd"][0]
    notes = [t.get_text() for t in axes.texts if "base model" in t.get_text()]
    assert len(notes) == 1 and notes[0].startswith("sd (base model, off the zoomed axes)")
    # one error bar per axis per method that has per-image values (x: stratified bootstrap; y: Wilson)
    error_lines = [c for c in axes.collections if isinstance(c, matplotlib.collections.LineCollection)]
    assert len(error_lines) == 2 * len(figure.points)
    assert axes.get_xlabel() == "ASR, mean over 4 benchmarks (%), lower is better"


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
