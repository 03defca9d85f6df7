"""Comparison plots (matplotlib, PNG and PDF) drawn from the leaderboard.

* ``rate_bars``: one bar per method for each benchmark that carries an erasure metric (ASR per benchmark);
* ``tradeoff``: erasure (mean over the erasure benchmarks) against one preservation metric, with the
  Pareto front of the methods drawn (the base model is shown as the reference, not part of the front);
* ``category_bars``: one bar per method for each category of a multi-category benchmark (I2P's seven).

Colours are the Okabe–Ito palette (distinguishable with every common colour-vision deficiency); markers and
hatches differ too, so a greyscale print still tells the methods apart.  Figures are built with
``matplotlib.figure.Figure`` (no pyplot), so nothing leaks into a user's interactive session.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from harness import names
from reports.leaderboard import Column, Leaderboard, Row, format_value

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
BASE_COLOUR = "#999999"
# Seven markers against eight colours: (colour, marker) pairs stay distinct for 56 methods.
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
HATCHES = ["", "//", "..", "xx"]
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "pdf.fonttype": 42,  # embed TrueType: text stays editable and searchable in the PDF
}


class Palette:
    """A fixed look per method across every plot: the base model grey, the others in table order."""

    def __init__(self, rows: list[Row]):
        self.looks = {}
        others = [row for row in rows if not row.base]
        for index, row in enumerate(others):
            self.looks[row.method] = (OKABE_ITO[index % len(OKABE_ITO)], MARKERS[index % len(MARKERS)], HATCHES[(index // len(OKABE_ITO)) % len(HATCHES)])
        for row in rows:
            if row.base:
                self.looks[row.method] = (BASE_COLOUR, "*", "")

    def colour(self, method: str) -> str:
        return self.looks[method][0]

    def marker(self, method: str) -> str:
        return self.looks[method][1]

    def hatch(self, method: str) -> str:
        return self.looks[method][2]


def _scale(column: Column) -> float:
    return 100.0 if column.rate else 1.0


def axis_label(name: str, column: Column, what: str = "") -> str:
    unit = " (%)" if column.rate else ""
    direction = "lower is better" if column.lower_is_better else "higher is better"
    return f"{what or name}{unit}, {direction}"


def _new_figure(width: float, height: float):
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(width, height), layout="constrained")
        figure.add_subplot()
    return figure


def _finite(value) -> bool:
    return value is not None and not math.isnan(value)


def wrap_label(label: str, width: int = 32) -> str:
    """A long method label (a sweep's "uce:erase_scale=2,lamb=0.1,preserve_scale=0.3") on lines of at most ``width``
    characters, broken after its commas, spaces and slashes (a CSV benchmark's path); a short label is returned
    unchanged."""
    lines = []
    for text in label.split("\n"):
        line = ""
        for piece in re.split(r"(?<=[, /])", text):
            if line and len(line) + len(piece) > width:
                lines.append(line.rstrip())
                line = ""
            line += piece
        lines.append(line.rstrip())
    return "\n".join(lines)


def _renderer(figure):
    """Lay ``figure`` out (constrained layout included) and return its renderer, so sizes can be measured."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(figure.canvas, FigureCanvasAgg):
        FigureCanvasAgg(figure)
    figure.draw_without_rendering()
    return figure.canvas.get_renderer()


def _keep_axes_size(figure, axes, before) -> None:
    """Grow the figure by what the legend took from the axes (``before``: their size without it, in pixels), so that
    a legend of long labels makes a bigger figure instead of squeezing the plot to a sliver."""
    _renderer(figure)
    after = axes.get_window_extent()
    width, height = figure.get_size_inches()
    figure.set_size_inches(width + max(0.0, before.width - after.width) / figure.dpi,
                           height + max(0.0, before.height - after.height) / figure.dpi)


def _legend(figure, axes, handles: list) -> None:
    """Above the plot, in as many columns as fit the figure's width (measured, not guessed); the figure grows taller
    by the legend's height, so the axes keep their size."""
    before = axes.get_window_extent(_renderer(figure)).frozen()
    for handle in handles:
        handle.set_label(wrap_label(handle.get_label()))
    for columns in range(len(handles), 0, -1):
        legend = figure.legend(handles=handles, ncols=columns, loc="outside upper center", frameon=False)
        if columns == 1 or legend.get_window_extent(_renderer(figure)).width <= 0.98 * figure.bbox.width:
            break
        legend.remove()
    _keep_axes_size(figure, axes, before)


def _grouped_bars(board: Leaderboard, columns: list[Column], labels: list[str], title: str, ylabel: str):
    """Bars grouped by column (benchmark or category), one bar per method that has a value in any of them.

    Every bar carries its value, so a 0 % bar is visibly zero and a missing result reads "n/a" instead
    of looking like a zero.
    """
    import matplotlib
    from matplotlib.patches import Patch

    palette = Palette(board.rows)
    indices = [board.columns.index(c) for c in columns]
    rows = [row for row in board.rows if any(_finite(row.values[i]) for i in indices)]
    group_width = 0.8
    bar_width = group_width / max(len(rows), 1)
    width = min(14.0, max(5.0, 1.4 + len(columns) * (0.3 * len(rows) + 0.35)))
    label_size = 6.5 if len(rows) <= 5 else 5.5
    handles, highest = [], 0.0
    with matplotlib.rc_context(STYLE):
        figure = _new_figure(width, 3.6)
        axes = figure.axes[0]
        for position, row in enumerate(rows):
            offsets = [g - group_width / 2 + bar_width * (position + 0.5) for g in range(len(columns))]
            heights = [row.values[i] * _scale(board.columns[i]) if _finite(row.values[i]) else 0.0 for i in indices]
            highest = max([highest, *heights])
            look = {"facecolor": palette.colour(row.method), "hatch": palette.hatch(row.method), "edgecolor": "#333333", "linewidth": 0.4}
            bars = axes.bar(offsets, heights, bar_width * 0.92, label=row.method, **look)
            spans = []  # the 95% interval of each bar, one line collection per method
            tops = list(heights)  # where each value label sits: above the bar and above its interval, never across it
            for k, (offset, i) in enumerate(zip(offsets, indices)):
                found = row.intervals[i] if row.intervals else None
                if found is not None and found.known and _finite(row.values[i]):
                    scale = _scale(board.columns[i])
                    spans.append((offset, found.low * scale, found.high * scale))
                    highest = max(highest, found.high * scale)
                    tops[k] = max(tops[k], found.high * scale)
            if spans:
                xs, lows, highs = zip(*spans)
                axes.vlines(xs, lows, highs, colors="#222222", linewidth=0.7, zorder=3)
            handles.append(Patch(label=row.method, **look))  # a hidden first bar must not hide the legend swatch
            for bar, i, top in zip(bars, indices, tops):
                if _finite(row.values[i]):
                    text = format_value(row.values[i], board.columns[i], decimals=1, percent_sign="")
                else:
                    bar.set_visible(False)  # no result: no bar, rather than a bar of height 0
                    text = "n/a"
                axes.annotate(text, (bar.get_x() + bar.get_width() / 2, top), xytext=(0, 1.5), textcoords="offset points",
                              ha="center", va="bottom", fontsize=label_size, rotation=90 if len(rows) > 3 else 0,
                              color="#333333")
        # Long group names (a CSV benchmark's path and parameters) on several lines; tilted only when they would
        # still not fit side by side.
        labels = [wrap_label(label, 28) for label in labels]
        inches_per_group = (width - 1.2) / len(columns)
        tilt = max(len(line) for label in labels for line in label.split("\n")) * 0.085 > inches_per_group
        axes.set_xticks(range(len(columns)), labels, rotation=20 if tilt else 0, ha="right" if tilt else "center")
        axes.set_ylabel(ylabel)
        axes.set_title(title)
        # Headroom for the value labels (rotated when there are many bars).
        axes.set_ylim(0, (highest or 1.0) * (1.22 if len(rows) > 3 else 1.1))
        if all(c.rate for c in columns):
            _ticks_inside(axes, "y", 0.0, 100.0)  # the headroom is for labels: a rate has no 120% tick
        _legend(figure, axes, handles)
    return figure


def rate_bars(board: Leaderboard, metric: str):
    """The erasure metric ``metric`` on every benchmark that has it, one bar per method."""
    columns = [c for c in board.erasure_columns() if c.metric == metric]
    first = columns[0]
    return _grouped_bars(board, columns, [c.title for c in columns], f"{first.name} per benchmark", axis_label(first.name, first))


def category_bars(board: Leaderboard, benchmark: str):
    """Every erasure metric of a multi-category benchmark, one bar per method."""
    columns = board.category_columns(benchmark)
    labels = category_labels(columns)
    first = columns[0]
    common = common_prefix([c.name for c in columns]).strip() or "rate"
    return _grouped_bars(board, columns, labels, f"{benchmark}: {common} per category", axis_label(common, first))


def common_prefix(names: list[str]) -> str:
    """The words that every name starts with ("Q16 hate", "Q16 overall" → "Q16 ")."""
    words = [name.split(" ") for name in names]
    shared = []
    for group in zip(*words):
        if len(set(group)) != 1:
            break
        shared.append(group[0])
    if len(shared) == min(len(w) for w in words):  # never strip a whole name
        shared = shared[:-1]
    return " ".join(shared) + (" " if shared else "")


def category_labels(columns: list[Column]) -> list[str]:
    prefix = common_prefix([c.name for c in columns])
    return [c.name[len(prefix):] for c in columns]


# --------------------------------------------------------------------------- erasure vs preservation


def erasure_summary(board: Leaderboard) -> tuple[list[Column], str]:
    """The erasure columns the trade-off averages, and how to name that average on an axis.

    One named metric: the benchmarks' primary erasure metric that most benchmarks share (the first one on a tie),
    never a mix of definitions (ASR and ASR-any).
    """
    candidates = [c for c in board.erasure_columns() if c.primary] or board.erasure_columns()
    candidates = candidates or [c for b in board.category_benchmarks() for c in board.category_columns(b)]
    if not candidates:
        return [], ""
    counts: dict[str, int] = {}
    for column in candidates:
        counts[column.metric] = counts.get(column.metric, 0) + 1
    metric = max(counts, key=lambda m: (counts[m], -list(counts).index(m)))
    columns = [c for c in candidates if c.metric == metric]
    return columns, erasure_what(columns)


def erasure_what(columns: list[Column]) -> str:
    """The x axis's name for the mean of ``columns``: "ASR, mean over 4 benchmarks" or "ASR on Explicit"."""
    if not columns:
        return ""
    benches = [c.title for c in columns]
    return f"{columns[0].name}, mean over {len(benches)} benchmarks" if len(benches) > 1 else f"{columns[0].name} on {benches[0]}"


def tradeoff_columns(board: Leaderboard, preservation: Column) -> tuple[list[Column], dict[str, list[Column]]]:
    """The erasure columns the trade-off against ``preservation`` averages, and the methods it cannot place (with the
    columns each lacks).

    Every point must average the same benchmarks, or the points would not compare.  Of the sets on offer (all the
    erasure columns, those every method has, and each method's own), the one that places the most methods wins, then
    the larger; a method without a value on one of its columns is left out, and named by the caller.
    """
    columns, _ = erasure_summary(board)
    y = board.columns.index(preservation)
    # The base model's FID against its own images is 0 by construction: it is no point, so it decides nothing.
    rows = [row for row in board.rows if _finite(row.values[y]) and not (row.base and preservation.set_level)]

    def has(row: Row, column: Column) -> bool:
        return _finite(row.values[board.columns.index(column)])

    offers = [columns, [c for c in columns if all(has(row, c) for row in rows)], *([c for c in columns if has(row, c)] for row in rows)]
    offers = [offer for offer in offers if offer]
    if not offers:
        return [], {row.method: [] for row in rows}
    chosen = max(offers, key=lambda offer: (sum(all(has(row, c) for c in offer) for row in rows), len(offer)))
    missing = {row.method: [c for c in chosen if not has(row, c)] for row in rows}
    return chosen, {method: lacking for method, lacking in missing.items() if lacking}


def erasure_average(board: Leaderboard, row: Row, columns: list[Column]) -> float | None:
    """The mean of ``columns`` for ``row``, only when all of them were measured."""
    values = [row.values[board.columns.index(c)] for c in columns]
    if not values or not all(_finite(v) for v in values):
        return None
    return sum(values) / len(values)


def erasure_average_interval(board: Leaderboard, row: Row, columns: list[Column]):
    """The interval of ``erasure_average`` (``uncertainty.mean_of_benchmarks_interval`` for several), or None."""
    from reports.uncertainty import interval, mean_of_benchmarks_interval

    if not row.per_image:
        return None
    stored = [row.per_image[board.columns.index(c)] for c in columns]
    if len(columns) == 1:
        found = interval(row.values[board.columns.index(columns[0])], stored[0], columns[0].unit) if stored[0] else None
    else:
        found = mean_of_benchmarks_interval(stored, [c.unit for c in columns])
    return found if found is not None and found.known else None


def pareto_front(points: dict[str, tuple[float, float]], lower_x: bool, lower_y: bool) -> list[str]:
    """The names of the points no other point beats on both axes (ties count as not beaten), sorted by x."""

    def at_least_as_good(a: float, b: float, lower: bool) -> bool:
        return a <= b if lower else a >= b

    front = []
    for name, (x, y) in points.items():
        dominated = any(
            at_least_as_good(ox, x, lower_x) and at_least_as_good(oy, y, lower_y) and (ox, oy) != (x, y)
            for other, (ox, oy) in points.items()
            if other != name
        )
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda name: points[name])


def _zoomed(values: list[float], rate: bool, non_negative: bool) -> tuple[float, float]:
    """Axis limits around ``values`` with a margin, clamped to 0-100 for a rate and to >= 0 for a non-negative score.

    A clamped edge keeps a sliver (2% of the view) beyond it, so that a method at exactly 0 or 100% and its error
    bar sit inside the frame instead of under the axis line; the ticks there still stop at 0 and 100.
    """
    low, high = min(values), max(values)
    pad = max((high - low) * 0.15, 2.0 if rate else max(abs(high), 1e-3) * 0.05)
    low, high = low - pad, high + pad
    floor, ceiling = (0.0, 100.0) if rate else (0.0 if non_negative else None, None)
    if floor is not None and low < floor:
        low = floor
    if ceiling is not None and high > ceiling:
        high = ceiling
    sliver = (high - low) * 0.02
    if floor is not None and low == floor and min(values) - floor < sliver:
        low -= sliver
    if ceiling is not None and high == ceiling and ceiling - max(values) < sliver:
        high += sliver
    return low, high


def _ticks_inside(axes, which: str, low: float | None, high: float | None) -> None:
    """Drop the ticks a sliver beyond a clamped edge would add (a rate never reads -5% or 105%)."""
    get, set_ = (axes.get_xticks, axes.set_xticks) if which == "x" else (axes.get_yticks, axes.set_yticks)
    limits = axes.get_xlim() if which == "x" else axes.get_ylim()
    set_([t for t in get() if limits[0] <= t <= limits[1] and (low is None or t >= low) and (high is None or t <= high)])


def tradeoff(board: Leaderboard, preservation: Column):
    """Erasure (x, one named metric averaged over benchmarks) against ``preservation`` (y): one point per method with
    its 95% intervals as error bars, the Pareto front dashed.  The axes zoom on the methods; the base model is a
    reference, drawn where it falls inside the view and otherwise named in a note on the plot."""
    import matplotlib

    palette = Palette(board.rows)
    erasure_columns, left_out = tradeoff_columns(board, preservation)
    x_rate = bool(erasure_columns) and all(c.rate for c in erasure_columns)
    x_scale = 100.0 if x_rate else 1.0
    y_scale = _scale(preservation)
    y_index = board.columns.index(preservation)
    points, base_points, bars = {}, {}, {}
    for row in board.rows:
        x = erasure_average(board, row, erasure_columns)
        y = row.values[y_index]
        if x is None or not _finite(y) or (row.base and preservation.set_level):
            continue  # the base model's FID against its own images is 0 by construction: not a point to plot
        (base_points if row.base else points)[row.method] = (x * x_scale, y * y_scale)
        x_interval = erasure_average_interval(board, row, erasure_columns)
        y_interval = row.intervals[y_index] if row.intervals and row.intervals[y_index] and row.intervals[y_index].known else None
        bars[row.method] = ((x_interval.low * x_scale, x_interval.high * x_scale) if x_interval else None,
                            (y_interval.low * y_scale, y_interval.high * y_scale) if y_interval else None)
    front = pareto_front(points, lower_x=True, lower_y=preservation.lower_is_better)
    everything = {**base_points, **points}
    with matplotlib.rc_context(STYLE):
        figure = _new_figure(5.6, 3.8)
        axes = figure.axes[0]
        axes.grid(True, axis="both")
        markers = {}
        for method, (x, y) in everything.items():
            xerr, yerr = bars.get(method, (None, None))
            if xerr or yerr:
                # Lengths, never below 0: a mean of intervals can end a rounding error past its point (1e-17 > 0%).
                axes.errorbar([x], [y], xerr=[[max(0.0, x - xerr[0])], [max(0.0, xerr[1] - x)]] if xerr else None,
                              yerr=[[max(0.0, y - yerr[0])], [max(0.0, yerr[1] - y)]] if yerr else None, fmt="none", ecolor=palette.colour(method),
                              elinewidth=0.8, capsize=2, zorder=2.5)
            markers[method] = axes.scatter([x], [y], s=80 if method in base_points else 44, color=palette.colour(method),
                                           marker=palette.marker(method), edgecolors="black", linewidths=0.5, zorder=3,
                                           label=method + (" (base model)" if method in base_points else ""))
        if len(front) > 1:
            xs, ys = zip(*(points[m] for m in front))
            axes.plot(xs, ys, linestyle="--", color="#555555", linewidth=1, zorder=2, label="Pareto front")
        elif front:
            axes.scatter(*points[front[0]], s=170, facecolors="none", edgecolors="#555555", linestyle="--", zorder=2, label="Pareto front")
        unit = " (%)" if x_rate else ""
        axes.set_xlabel(f"{erasure_what(erasure_columns)}{unit}, lower is better")
        axes.set_ylabel(axis_label(f"{preservation.name} on {preservation.title}", preservation))
        axes.set_title(f"Erasure vs. {preservation.name}")
        # Zoom on the methods (with their intervals); the base model only widens the view when no method is plotted.
        focus = points or base_points
        if focus:
            xs = [v for m, (x, _) in focus.items() for v in (x, *(bars.get(m, (None, None))[0] or ()))]
            ys = [v for m, (_, y) in focus.items() for v in (y, *(bars.get(m, (None, None))[1] or ()))]
            non_negative = all(v >= 0 for v in ys)
            axes.set_xlim(*_zoomed(xs, x_rate, True))
            axes.set_ylim(*_zoomed(ys, preservation.rate, non_negative))
            _ticks_inside(axes, "x", 0.0, 100.0 if x_rate else None)
            _ticks_inside(axes, "y", 0.0 if preservation.rate or non_negative else None, 100.0 if preservation.rate else None)
        # A base model outside the view is named in the legend with its values, not in a note on the plot, where it
        # could cover a method's point.
        outside = []
        for method, (x, y) in base_points.items():
            (x_low, x_high), (y_low, y_high) = axes.get_xlim(), axes.get_ylim()
            if not (x_low <= x <= x_high and y_low <= y <= y_high):
                outside.append(method)
                markers[method].set_label(
                    f"{method} (base model,\noff the zoomed axes:\nx = {x:.1f}{'%' if x_rate else ''}, "
                    f"y = {y:.{1 if preservation.rate else preservation.decimals}f}{'%' if preservation.rate else ''})"
                )
        # The legend goes right of the plot, and the figure grows by its width: long labels never squeeze the axes.
        before = axes.get_window_extent(_renderer(figure)).frozen()
        handles, labels = axes.get_legend_handles_labels()
        if handles:  # an empty figure gets no legend (matplotlib would warn that it found nothing to show)
            axes.legend(handles, [wrap_label(label) for label in labels], loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
            _keep_axes_size(figure, axes, before)
        _annotate(figure, axes, {m: xy for m, xy in everything.items() if m not in outside})
    figure.pareto = front  # for tests and captions
    figure.points = {**base_points, **points}
    figure.columns = erasure_columns
    figure.left_out = left_out  # method -> the averaged columns it has no value on ([]: none at all)
    return figure


def left_out_text(figure, preservation: Column) -> str:
    """Why methods with a ``preservation`` value are not on the trade-off plot: one sentence each."""
    sentences = []
    for method, lacking in figure.left_out.items():
        if lacking:
            why = f"it has no {lacking[0].name} on {', '.join(c.title for c in lacking)}, which the x axis averages"
        else:
            why = "it has no value on any erasure benchmark"
        sentences.append(f"{method} is left out of the {preservation.name} trade-off: {why}.")
    return " ".join(sentences)


def _annotate(figure, axes, points: dict[str, tuple[float, float]]) -> None:
    """Name each point where its label overlaps no other label or marker (first free spot of a few around it).

    Methods on the same spot share one label.
    """
    together: dict[tuple[float, float], list[str]] = {}
    for method, xy in points.items():
        together.setdefault(xy, []).append(method)
    renderer = _renderer(figure)  # lay the figure out, so display positions are final
    markers = [axes.transData.transform(xy) for xy in together]
    frame = axes.get_window_extent(renderer)
    taken = []
    spots = [(6, 4, "left", "bottom"), (6, -4, "left", "top"), (-6, 4, "right", "bottom"), (-6, -4, "right", "top"),
             (0, 8, "center", "bottom"), (0, -8, "center", "top")]
    for xy, methods in together.items():
        chosen = None
        text = wrap_label(", ".join(methods))
        # A free spot first; when crowded, any spot inside the axes.  A name that fits nowhere inside (a long sweep
        # label) is left to the legend, which tells the point by its colour and marker.
        for need_clear in (True, False):
            for dx, dy, ha, va in spots:
                label = axes.annotate(text, xy, xytext=(dx, dy), textcoords="offset points", fontsize=7, color="#333333",
                                      ha=ha, va=va)
                box = label.get_window_extent(renderer).expanded(1.05, 1.1)
                inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
                clear = not any(box.overlaps(other) for other in taken) and not any(box.contains(*m) for m in markers)
                if inside and (clear or not need_clear):
                    chosen = box
                    break
                label.remove()
            if chosen is not None:
                taken.append(chosen)
                break


# --------------------------------------------------------------------------- all plots


slug = names.slug

def _sentence(text: str) -> str:
    """A metric's description as a caption sentence: capitalised, ending in a full stop."""
    text = text.strip()
    if not text:
        return ""
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def figures(board: Leaderboard, notes: list[str] | None = None) -> list[tuple[str, str, object]]:
    """(file stem, caption, figure) for every plot the board supports.  ``notes`` collects what a reader must be told
    about plots that leave methods out or are not made at all."""
    made = []
    notes = [] if notes is None else notes
    stem = names.FileNames()  # labels such as csv:path=a/b.csv become safe, distinct file names
    for metric in dict.fromkeys(c.metric for c in board.erasure_columns()):
        first = next(c for c in board.erasure_columns() if c.metric == metric)
        made.append((stem(f"rates-{metric}"), f"{first.name} ({metric}) per benchmark and method. {_sentence(first.description)}", rate_bars(board, metric)))
    erasure_columns, _ = erasure_summary(board)
    if erasure_columns:
        for column in board.preservation_columns():
            figure = tradeoff(board, column)
            left_out = left_out_text(figure, column)
            if figure.points:
                caption = (f"{erasure_what(figure.columns)} against {column.name} on {column.benchmark}; dashed: the Pareto front "
                           f"of the methods ({', '.join(figure.pareto) or 'none'}). {_sentence(column.description)}")
                unused = [c.title for c in erasure_columns if c not in figure.columns]
                if unused:
                    caption += f" The x axis leaves out {', '.join(unused)}: not every plotted method has a value there."
                made.append((stem(f"tradeoff-{column.benchmark}-{column.metric}"), " ".join(filter(None, (caption, left_out))), figure))
                if left_out:
                    notes.append(left_out)
            elif left_out:
                notes.append(f"No {column.name} trade-off plot: no method has both values. {left_out}")
    for benchmark in board.category_benchmarks():
        made.append((stem(f"categories-{benchmark}"), f"Per-category rates on {benchmark}.", category_bars(board, benchmark)))
    return made


def save(figure, directory: Path, stem: str, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Each format written beside and renamed into place (``integrity.atomic_write``): a full disk or a Ctrl-C leaves
    no truncated figure, and the error names the file."""
    import matplotlib

    from harness.integrity import atomic_write

    paths = []
    for fmt in formats:
        path = directory / f"{stem}.{fmt}"
        # No creation date: the same store gives byte-identical PDFs.
        metadata = {"Creator": "erasure-harness", "CreationDate": None} if fmt == "pdf" else {"Software": "erasure-harness"}

        def write(temporary: Path, fmt=fmt, metadata=metadata) -> None:
            with matplotlib.rc_context(STYLE):  # some settings (pdf.fonttype) are read when saving
                figure.savefig(temporary, format=fmt, dpi=200, metadata=metadata)  # the temporary name has no suffix to go by

        atomic_write(path, write=write)
        paths.append(path)
    return paths
