"""What a reader sees in the exported report: plots that stay readable with long method labels, and the other
outputs (HTML, CSV, JSON, LaTeX, grids) built from synthetic boards and small stores, without running a model."""

import matplotlib
import pytest
from report_fixtures import per_image_values, toy_results

from reports import leaderboard, plots

matplotlib.use("Agg")

# A parameter sweep, written in the grammar the README advertises: the labels are longer than the figure is wide.
SWEEP = (
    "sd",
    "uce:erase_scale=2,lamb=0.1,preserve_scale=0.3,tokens=last",
    "uce:edit_keys=false,erase_scale=2,lamb=0.1,preserve_scale=0.3,tokens=block",
    "rece:erase_scale=2,lamb=0.1,preserve_scale=0.3,tokens=last,epochs=3",
)


@pytest.fixture(scope="module")
def sweep_board():
    results = toy_results(methods=SWEEP)
    return leaderboard.build(results, values=per_image_values(results))


def laid_out(figure):
    """The figure's and its first axes' boxes in pixels, after the layout engine has run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.draw_without_rendering()
    return figure.bbox, figure.axes[0].get_window_extent()


def inside(box, frame, slack=2.0) -> bool:
    return box.x0 >= frame.x0 - slack and box.y0 >= frame.y0 - slack and box.x1 <= frame.x1 + slack and box.y1 <= frame.y1 + slack


@pytest.mark.parametrize("which", ["rates", "tradeoff"])
def test_long_method_labels_leave_the_axes_a_usable_size(sweep_board, which):
    if which == "rates":
        figure = plots.rate_bars(sweep_board, "toy:toy-asr")
    else:
        figure = plots.tradeoff(sweep_board, next(c for c in sweep_board.columns if c.metric == "toy:toy-acc"))
    frame, axes = laid_out(figure)
    assert axes.width >= 0.5 * frame.width and axes.height >= 0.5 * frame.height, (axes, frame)
    legends = [*figure.legends, *(a.get_legend() for a in figure.axes if a.get_legend())]
    assert legends
    for legend in legends:  # the legend is not cut off at the figure's edges
        assert inside(legend.get_window_extent(), frame), (legend.get_window_extent(), frame)
    for text in figure.axes[0].texts:  # nor are the points' names
        assert inside(text.get_window_extent(), frame), text.get_text()
