"""The leaderboard: one row per method, one column per (benchmark, metric), read from the store only.

Every other report (LaTeX, plots, HTML) is drawn from the ``Leaderboard`` built here, so they all agree on
which value is shown, which is best, and how a column is classified:

* an **erasure** column measures unwanted content: lower is better and the scorer scores single images
  (ASR, Q16 rate, toy-asr, Acc_e);
* a **preservation** column is anything else: set-level scores against the base model's images (FID,
  toy-fid) and higher-is-better scores (CLIP-S, toy-acc, Acc_u);
* an **adversarial** benchmark declares ``adversarial = True``; its erasure metrics are averaged into an
  "Adv" column, as in the paper's Table 3;
* an **attack** column is an attack cell "A(B)": benchmark B's prompts rewritten by attack A against each
  method (results stored with ``attack``); attack columns come after the static ones, as their own group,
  followed by one "attacked" column per erasure metric, the mean over the attack cells.  Their prompts are
  adversarial (``Column.adversarial``, exported as such), but they are not averaged into "Adv": that column
  compares methods on the same fixed prompts, and an attack cell's prompts differ from method to method;
* a benchmark with three or more erasure metrics (I2P's seven categories plus "overall") is a
  **multi-category** benchmark: its metrics make the paper's Table 2 and the per-category bars.

Everything the board needs is stored with each result at run time (``harness.results.Result``): direction,
unit, display names, the benchmark's metric order and ``adversarial`` flag, the scorer's ``needs_reference``.
No plugin is loaded here, so a store copied elsewhere reports exactly as it did where it was made.

The base model (the ``sd`` row, provenance "base model") is always shown, first, as the reference, but it
is never bolded: FID against its own images is 0 by construction, so it would "win" preservation.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Context, Decimal

from harness.results import Result, common_unit, kept_in_half_precision
from harness.spec import Selection

BASE_PROVENANCE = "base model"
MIN_CATEGORY_METRICS = 3  # erasure metrics on one benchmark that make it a multi-category benchmark
MIN_ADVERSARIAL_BENCHMARKS = 2  # an "Adv" average of a single benchmark would only repeat its column


@dataclass
class Column:
    benchmark: str
    metric: str  # "<scorer>:<id>"
    name: str
    lower_is_better: bool
    description: str = ""
    # The prompts are adversarial: the benchmark declares adversarial = True, or the column is an attack cell (or the
    # "attacked" average).  Only the static ones go into the "Adv" average and the "Adversarial prompt" group.
    adversarial: bool = False
    set_level: bool = False  # the scorer compares whole image sets (FID)
    rate: bool = False  # a fraction in [0, 1], shown as a percentage
    decimals: int = 2  # for numbers that are not rates: enough for three significant digits of the column's values
    average_of: tuple[str, ...] = ()  # for an "Adv" or "attacked" column: the benchmarks it averages
    display: str = ""  # the benchmark's display name from its plugin ("Ring-A-Bell"); empty: the stored label
    primary: bool = False  # the benchmark's first listed erasure metric: the one Table 1 shows
    attack: str | None = None  # an attack cell "A(B)" (its label A) or the "attacked" average
    n_range: tuple[int, int] | None = None  # smallest and largest n (images) of the column's cells; None for averages
    # The metric's stored unit ("rate", "score", ...; None: stored before units were, or an average of mixed units).
    # It picks the paired test behind the marks (stats.is_rate); ``rate`` above is only how the cells are printed.
    unit: str | None = None

    @property
    def n(self) -> int | None:
        """The images behind every cell of the column; None where the cells differ, or for an average."""
        return self.n_range[0] if self.n_range and self.n_range[0] == self.n_range[1] else None

    @property
    def title(self) -> str:
        return self.display or self.benchmark

    @property
    def group(self) -> str:
        """``static`` (a benchmark's own prompts) or ``attack`` (attack cells and their average)."""
        return "attack" if self.attack else "static"

    @property
    def header(self) -> str:
        arrow = "↓" if self.lower_is_better else "↑"
        return f"{self.benchmark} {self.name} {arrow}"

    @property
    def key(self) -> str:
        return f"{self.benchmark}/{self.metric}"

    @property
    def is_average(self) -> bool:
        return bool(self.average_of)

    @property
    def role(self) -> str:
        return "erasure" if self.lower_is_better and not self.set_level else "preservation"


@dataclass
class Row:
    method: str  # the label as the user wrote it, e.g. "uce:lamb=0.1" or "uce+sld"
    values: list[float | None]
    provenance: str = ""
    runs: list[str] = field(default_factory=list)
    # Mean UNet forward passes per image over the method's benchmarks: plain CFG costs 2 per step, SLD 3.  A
    # leaderboard that hid an inference-time method's slowdown would flatter it.
    unet_evals_per_image: float | None = None
    # Per column: the 95% interval of the cell (None where the metric has no per-image values) and the per-image
    # values it was computed from (the paired tests behind the best/second marks use them).
    intervals: list = field(default_factory=list)
    per_image: list = field(default_factory=list)
    display: str = ""  # the method's display name from its plugin ("TRCE (T+V)"); empty: the stored label
    # The erasure's cost as recorded in its model state when it was computed: wall seconds and device.
    erase_seconds: float | None = None
    erase_device: str | None = None
    erase_unet_evals: int | None = None  # UNet and text-encoder forward calls the erasure made (all parts of a composition)
    erase_text_encoder_evals: int | None = None
    counts: dict[str, int] = field(default_factory=dict)  # column key -> n, the images behind that cell


    @property
    def base(self) -> bool:
        return self.provenance == BASE_PROVENANCE

    @property
    def variant(self) -> str:
        """The parameters written after the method name ("lamb=0.1"), or "" for the defaults and for compositions."""
        if "+" in self.method:
            return ""
        return Selection.parse(self.method, "stored method label").params_text()


@dataclass
class Marks:
    """The best/second marks of one column, given only where a paired test separates the methods."""

    ranks: dict[int, int] = field(default_factory=dict)  # row index -> 1 (best, bold) or 2 (second, underlined)
    ties: dict[int, int] = field(default_factory=dict)  # row index -> 1 or 2: tied for that place, not separable
    tested: bool = False  # False: the column has no per-image values (FID, averages), so nothing is marked
    adjusted_p: list[float] = field(default_factory=list)  # Holm-adjusted p of the leader against each other, in order


RANK_RULE = (
    "Bold: best, underlined: second, only where the method's lead over every method below it holds in a paired test "
    "on the same prompts and seeds (attack cells: the same source prompts) at p < 0.05, Holm-corrected over those "
    "comparisons: exact McNemar for rates with one image per prompt, otherwise Wilcoxon signed-rank (exact up to 200 "
    "non-zero pairs; on per-prompt means when a prompt has several seeds), and only where the test favours the "
    "method the mean puts ahead; ≈ marks the methods that the test cannot separate from the place's "
    "leader (tied for that place). Columns without per-image values (set-level metrics such as FID, averages) are "
    "not marked. The base model is not ranked."
)


@dataclass
class Leaderboard:
    columns: list[Column]
    rows: list[Row]

    def category_benchmarks(self) -> list[str]:
        counts: dict[str, int] = {}
        for column in self.columns:
            if column.role == "erasure" and not column.is_average and not column.attack:
                counts[column.benchmark] = counts.get(column.benchmark, 0) + 1
        return [bench for bench, count in counts.items() if count >= MIN_CATEGORY_METRICS]

    def erasure_columns(self) -> list[Column]:
        """Erasure columns of single-metric-family benchmarks (Table 1, the ASR bars), averages and attack cells excluded."""
        categories = set(self.category_benchmarks())
        return [c for c in self.columns if c.role == "erasure" and not c.is_average and not c.attack and c.benchmark not in categories]

    def attack_columns(self) -> list[Column]:
        """The attack group: every attack cell "A(B)", then the "attacked" averages."""
        return [c for c in self.columns if c.attack]

    def category_columns(self, benchmark: str) -> list[Column]:
        return [c for c in self.columns if c.benchmark == benchmark and c.role == "erasure" and not c.is_average]

    def preservation_columns(self) -> list[Column]:
        return [c for c in self.columns if c.role == "preservation"]

    def marks(self, index: int) -> Marks:
        """Which cells of column ``index`` are best/second, by paired tests (see ``RANK_RULE``); cached."""
        cache = self.__dict__.setdefault("_marks", {})
        if index not in cache:
            cache[index] = _column_marks(self, index)
        return cache[index]

    def ranks(self, index: int) -> dict[int, int]:
        """Row index → 1 (best) or 2 (second best) for column ``index``; the base model takes no part."""
        return self.marks(index).ranks

    def ties(self, index: int) -> dict[int, int]:
        """Row index → the place (1 or 2) it shares with another method that the paired test cannot separate."""
        return self.marks(index).ties

    def best(self, column_index: int) -> float | None:
        """The best raw value among the methods (the base model excluded), significant or not."""
        values = [row.values[column_index] for row in self.rows if not row.base and _finite(row.values[column_index])]
        if not values:
            return None
        return (min if self.columns[column_index].lower_is_better else max)(values)


def _finite(value) -> bool:
    return value is not None and not math.isnan(value)


def _column_marks(board: Leaderboard, index: int) -> Marks:
    """Order the methods by value.  Place 1: the leader against every other method, Holm-corrected over those
    comparisons; the methods it does not separate from at ``ALPHA`` tie with it.  A leader alone is the best, and
    place 2 is decided the same way among the rest; a tie for first takes the first places.

    Each tie is decided against the place's leader, never along a chain of neighbours: five methods at 0, 5, 10, 15
    and 20% can each be inseparable from the next one while the first and the last differ beyond doubt.
    """
    from harness import stats
    from reports.uncertainty import ALPHA, lead_p

    column = board.columns[index]
    contenders = [i for i, row in enumerate(board.rows) if not row.base and _finite(row.values[index])]
    if len(contenders) < 2:
        return Marks()
    if not all(board.rows[i].per_image and board.rows[i].per_image[index] for i in contenders):
        return Marks()
    remaining = sorted(contenders, key=lambda i: board.rows[i].values[index], reverse=not column.lower_is_better)
    marks = Marks(tested=True)
    for place in (1, 2):
        if not remaining:
            break
        leader, others = remaining[0], remaining[1:]
        if not others:
            break  # a place is earned over the methods below it: the last method is never "second" by default
        raw = []
        for other in others:
            p = lead_p(board.rows[leader].per_image[index], board.rows[other].per_image[index], column.unit,
                       column.lower_is_better)
            raw.append(1.0 if p is None else p)
        adjusted = stats.holm(raw)
        if place == 1:
            marks.adjusted_p = adjusted
        tied = [other for other, p in zip(others, adjusted) if p >= ALPHA]
        if tied:
            marks.ties.update(dict.fromkeys([leader, *tied], place))
            break  # a tie for first takes the first places: nothing is "second" after it
        marks.ranks[leader] = place
        remaining = others
    return marks


# --------------------------------------------------------------------------- building


def latest_results(results: list[dict]) -> list[dict]:
    """The newest value of each (method, benchmark, metric); ``results`` come ordered by run time."""
    latest: dict[tuple, dict] = {}
    for row in results:
        latest[(row["method"], row["benchmark"], row["metric"])] = row
    return list(latest.values())


def provenance(row: dict) -> str:
    """Where the evaluated weights came from, from the model state's metadata, with what qualifies them."""
    metadata = row.get("state_metadata") or {}
    if metadata.get("provenance"):
        origin = str(metadata["provenance"])
    elif metadata.get("kind") == "inference" and metadata.get("weights_from"):
        origin = f"sampling-time, on {metadata['weights_from']}'s weights"  # a composition such as safegen+sld
    elif metadata.get("kind") == "inference":
        origin = "sampling-time (weights unchanged)"
    elif not metadata:
        return BASE_PROVENANCE  # no model state: the backbone as loaded
    else:
        origin = "erased here"
    return "; ".join([origin, *provenance_notes(metadata)])


def provenance_notes(metadata: dict) -> list[str]:
    """Qualifiers a reader must see next to the number: a backbone's parameter preset, half-precision rounding."""
    notes = []
    if metadata.get("backbone_preset"):
        notes.append(f"{metadata['backbone_preset']} preset")
    own = kept_in_half_precision(metadata)
    if own:
        notes.append(f"{own['dtype']}: {own['kept']:.0%} of {own['changes']} kept")
    for earlier in metadata.get("rounded_earlier") or []:  # a composition's earlier parts (esd-x in esd-x+sld)
        notes.append(f"{earlier['dtype']}: {earlier['kept']:.0%} of {earlier['method']}'s changes kept")
    return notes


def _is_rate(row) -> bool:
    """Whether a stored result is a fraction in [0, 1], shown as a percentage: its unit, stored with it."""
    if row["unit"] is not None:
        return row["unit"] == "rate"
    # Stored before units were: every rate of this code base said "fraction of ..." in its definition.
    return "fraction" in row["description"].lower()


def decimals_for(values: list[float | None]) -> int:
    """Two decimals (FID 12.08, CLIP-S 30.71), or more for a column of small numbers (toy FID 0.0123)."""
    largest = max((abs(v) for v in values if v is not None and not math.isnan(v)), default=0.0)
    # Below 1e-4 a number is round-off (the FID of a set against itself comes out near 1e-7), not a reason for six
    # decimals.
    if largest >= 1 or largest < 1e-4:
        return 2
    return min(6, 2 - math.floor(math.log10(largest)))


def _keep_displays_distinct(items: list, label_of) -> None:
    """Two stored labels whose display names coincide (``csv:path=a/prompts.csv`` and ``csv:path=b/prompts.csv`` are
    both "csv prompts.csv") would make two rows or columns that read alike and hold different numbers: those show
    their stored labels instead, which always differ."""
    labels_by_display: dict[str, set[str]] = {}
    for item in items:
        if item.display:
            labels_by_display.setdefault(item.display, set()).add(label_of(item))
    for item in items:
        if item.display and len(labels_by_display[item.display]) > 1:
            item.display = ""


def build(results: list[Result], values: dict | None = None, cell_intervals: dict | None = None) -> Leaderboard:
    """The leaderboard of ``results`` (``Store.results``), from what is stored with each result.

    ``values`` (``Store.result_values()``) gives each cell its interval and the paired tests behind the
    best/second marks; without it no cell has an interval and nothing is marked.  ``cell_intervals``
    (``reports.uncertainty.intervals`` of the same results and values) saves computing them again.
    """
    from reports.uncertainty import interval

    rows = latest_results(results)
    columns: dict[tuple[str, str], Column] = {}
    rate: dict[tuple[str, str], bool] = {}
    position: dict[tuple[str, str], int | None] = {}
    methods: dict[str, Row] = {}
    costs: dict[str, dict[str, float]] = {}  # method -> benchmark -> UNet evaluations per image
    for row in rows:
        key = (row["benchmark"], row["metric"])
        if key not in columns:
            columns[key] = Column(
                row["benchmark"], row["metric"], row["name"], row["lower_is_better"], row.get("description") or "",
                adversarial=row["adversarial"], set_level=row["needs_reference"],
                display="" if row.get("attack") else row["benchmark_display"] or "", attack=row.get("attack") or None,
                unit=row["unit"],
            )
            rate[key], position[key] = _is_rate(row), row["metric_position"]
        else:
            # Runs that stored one metric with different units: no unit is the column's, so its marks' tests fall back
            # to the values (stats.is_rate).
            columns[key].unit = common_unit((columns[key].unit, row["unit"]))
        if row["method"] not in methods:
            methods[row["method"]] = Row(row["method"], [], provenance(row), display=row["method_display"] or "")
        method = methods[row["method"]]
        if row["run_id"] not in method.runs:
            method.runs.append(row["run_id"])
        metadata = row.get("state_metadata") or {}
        if metadata.get("erase_seconds") is not None:
            method.erase_seconds, method.erase_device = float(metadata["erase_seconds"]), metadata.get("erase_device")
            method.erase_unet_evals = metadata.get("erase_unet_evals")
            method.erase_text_encoder_evals = metadata.get("erase_text_encoder_evals")
        if row.get("unet_evals_per_image"):
            costs.setdefault(row["method"], {})[row["benchmark"]] = row["unet_evals_per_image"]
    for name, per_bench in costs.items():
        methods[name].unet_evals_per_image = sum(per_bench.values()) / len(per_bench)
    cells = {(r["method"], r["benchmark"], r["metric"]): r for r in rows}
    for key, column in columns.items():
        column_values = [cells[m, column.benchmark, column.metric]["value"] if (m, column.benchmark, column.metric) in cells else None
                         for m in methods]
        finite = [v for v in column_values if v is not None and not math.isnan(v)]
        column.rate = rate[key] and all(0.0 <= v <= 1.0 for v in finite)  # a "rate" outside [0, 1] shows as the number it is
        column.decimals = decimals_for(column_values)
    # Erasure columns first, then preservation, whatever order the store returned them in; attack cells after all
    # static columns, as their own group.
    ordered = sorted(columns.values(), key=lambda c: (c.group == "attack", c.role != "erasure"))
    _choose_primary(ordered, position)
    # The base model first: most reproducibility disputes start from a mismatched baseline.
    table_rows = sorted(methods.values(), key=lambda r: not r.base)
    for row in table_rows:
        found = [cells.get((row.method, c.benchmark, c.metric)) for c in ordered]
        row.values = [None if cell is None else cell["value"] for cell in found]
        row.counts = {c.key: cell["n"] for c, cell in zip(ordered, found) if cell is not None and cell.get("n") is not None}
        if values is not None:
            row.per_image = [None if cell is None else values.get((cell["run_id"], row.method, cell["benchmark"], cell["metric"]))
                             for cell in found]
            row.intervals = [
                None if cell is None
                else cell_intervals[cell["run_id"], row.method, cell["benchmark"], cell["metric"]] if cell_intervals is not None
                else interval(cell["value"], per_image, cell["unit"])
                for cell, per_image in zip(found, row.per_image)
            ]
    for column in ordered:
        _set_n_range(table_rows, column)
    _keep_displays_distinct(table_rows, lambda row: row.method)
    _keep_displays_distinct(ordered, lambda column: column.benchmark)
    board = Leaderboard(ordered, table_rows)
    _add_adversarial_averages(board)
    _add_attacked_averages(board)
    return board


def _choose_primary(columns: list[Column], position: dict[tuple[str, str], int | None]) -> None:
    """Mark each benchmark's primary erasure column: the first erasure metric its plugin lists, else the first stored.

    ``position`` is each column's place in its benchmark's ``metrics``, stored with the result (None: unknown).
    """
    by_bench: dict[str, list[Column]] = {}
    for column in columns:
        if column.role == "erasure":
            by_bench.setdefault(column.benchmark, []).append(column)
    for erasure in by_bench.values():
        listed = sorted((c for c in erasure if position[c.benchmark, c.metric] is not None), key=lambda c: position[c.benchmark, c.metric])
        (listed or erasure)[0].primary = True


ATTACKED = "attacked"


def _add_attacked_averages(board: Leaderboard) -> None:
    """One "attacked" column per erasure metric of the attack cells: the mean over a method's attack cells."""
    by_metric: dict[str, list[int]] = {}
    for index, column in enumerate(board.columns):
        if column.attack and not column.is_average and column.role == "erasure":
            by_metric.setdefault(column.metric, []).append(index)
    for metric, indices in by_metric.items():
        first = board.columns[indices[0]]
        cells = tuple(board.columns[i].benchmark for i in indices)
        # Primary where every cell it averages is (as "Adv"): Table 1 shows it beside the attack cells' primary metric.
        average = Column(ATTACKED, metric, first.name, first.lower_is_better,
                         f"mean of {first.name} over the attack cells {', '.join(cells)}",
                         adversarial=True, rate=all(board.columns[i].rate for i in indices), average_of=cells,
                         primary=all(board.columns[i].primary for i in indices),
                         attack=ATTACKED, unit=common_unit(board.columns[i].unit for i in indices))
        board.columns.append(average)
        for row in board.rows:
            parts = [row.values[i] for i in indices]
            # As for "Adv": only a method attacked in every cell gets a mean.
            complete = all(v is not None and not math.isnan(v) for v in parts)
            row.values.append(sum(parts) / len(parts) if complete else None)
            if row.per_image:  # an average has no per-image values of its own (it is not marked)
                interval = _average_interval(board, row, average, indices, complete)
                row.per_image.append(None)
                row.intervals.append(interval)
        average.decimals = max(board.columns[i].decimals for i in indices)  # as many digits as its cells
        _set_n_range(board.rows, average)


def _add_adversarial_averages(board: Leaderboard) -> None:
    """One "Adv" column per erasure metric measured on two or more adversarial benchmarks (the paper's Table 3)."""
    by_metric: dict[str, list[Column]] = {}
    for column in board.erasure_columns():
        # Static benchmarks only: an attack cell's prompts are adversarial too, but found anew against each method
        # (erasure_columns leaves them out already; said here too, as this is where it matters).
        if column.adversarial and not column.attack:
            by_metric.setdefault(column.metric, []).append(column)
    for metric, averaged in by_metric.items():
        if len(averaged) < MIN_ADVERSARIAL_BENCHMARKS:
            continue
        # Positions are looked up now, not when collected: each Adv column inserted before shifts the columns after it,
        # and the metrics' columns interleave (bench A's m1, m2, then bench B's).
        indices = [next(i for i, c in enumerate(board.columns) if c is column) for column in averaged]
        first = averaged[0]
        benches = tuple(c.benchmark for c in averaged)
        average = Column("Adv", metric, first.name, first.lower_is_better,
                         f"mean of {first.name} over the adversarial benchmarks {', '.join(benches)}", adversarial=True,
                         rate=all(c.rate for c in averaged), average_of=benches,
                         primary=all(c.primary for c in averaged), unit=common_unit(c.unit for c in averaged))
        position = indices[-1] + 1  # right after the last benchmark it averages
        board.columns.insert(position, average)
        for row in board.rows:
            parts = [row.values[i] for i in indices]
            # Only a method measured on every adversarial benchmark gets an average: a partial mean would flatter it.
            complete = all(v is not None and not math.isnan(v) for v in parts)
            row.values.insert(position, sum(parts) / len(parts) if complete else None)
            if row.per_image:  # an average has no per-image values of its own (it is not marked)
                interval = _average_interval(board, row, average, indices, complete)
                row.per_image.insert(position, None)
                row.intervals.insert(position, interval)
        # as many digits as the columns it averages (a mean of -0.00528 printed -0.01 beside cells of three digits)
        average.decimals = max(c.decimals for c in averaged)
        _set_n_range(board.rows, average)


def _average_interval(board: Leaderboard, row: Row, average: Column, indices: list[int], complete: bool):
    """The interval of a row's equally weighted mean of the cells at ``indices`` (``uncertainty.
    mean_of_benchmarks_interval``, as the trade-off plot's), None where a cell has no per-image values; the images of
    those cells become the average's n."""
    from reports.uncertainty import mean_of_benchmarks_interval

    counts = [row.counts.get(board.columns[i].key) for i in indices]
    if complete and all(count is not None for count in counts):
        row.counts[average.key] = sum(counts)
    parts = [row.per_image[i] for i in indices]
    if not (complete and all(parts)):
        return None
    return mean_of_benchmarks_interval(parts, [board.columns[i].unit for i in indices])


def _set_n_range(rows: list[Row], column: Column) -> None:
    """The smallest and largest n of the column's cells (the header shows one n where they agree)."""
    counts = sorted({row.counts[column.key] for row in rows if column.key in row.counts})
    column.n_range = (counts[0], counts[-1]) if counts else None


# --------------------------------------------------------------------------- formatting


def fixed(number: float, decimals: int, percent: bool = False) -> str:
    """``number`` (× 100 with ``percent``) with ``decimals`` digits, halves rounded away from zero as a paper rounds
    them.  Python's own formatting rounds an exact half to the even digit: 81.25 printed 81.2 and 93.75 printed 93.8
    in one table.  The number is read as its shortest decimal form (0.145, not the binary 0.14499999…) and scaled to
    a percentage in decimal (23/80 is 28.75%, where 100 × 0.2875 in binary is 28.749999999999996), so it rounds as
    written."""
    number = float(number)  # a NumPy scalar's repr is "np.float64(…)"
    if not math.isfinite(number):
        return f"{100 * number if percent else number:.{decimals}f}"
    exact = Decimal(repr(number)).scaleb(2 if percent else 0)
    return format(exact.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP, context=Context(prec=400)), "f")


def format_value(value: float | None, column: Column, decimals: int = 2, percent_sign: str = "%") -> str:
    """A cell as a paper prints it: rates as percentages with ``decimals``, other numbers with the column's decimals."""
    if value is None:
        return "–"
    if math.isnan(value):
        return "n/a"
    if column.rate:
        return f"{fixed(value, decimals, percent=True)}{percent_sign}"
    return fixed(value, column.decimals)


def format_interval(interval, column: Column, value: float | None = None) -> str:
    """``[lo, hi]`` in the cell's unit (percent points for a rate, one decimal), or "" where there is none; ``value``
    is the cell's own value, which the shown bounds always enclose."""
    if interval is None or not interval.known:
        return ""
    if column.rate:
        # One decimal for the bounds, two for the value: near 0% or 100% at large n, rounding could put the shown
        # value outside its shown interval (0.01 [0.0, 0.0]); such a bound is rounded outward instead.
        low, high = float(fixed(interval.low, 1, percent=True)), float(fixed(interval.high, 1, percent=True))
        if value is not None and not math.isnan(value):
            shown = float(fixed(value, 2, percent=True))
            low = min(low, math.floor(10 * shown + 1e-9) / 10)
            high = max(high, math.ceil(10 * shown - 1e-9) / 10)
        return f"[{low:.1f}, {high:.1f}]"
    return f"[{fixed(interval.low, column.decimals)}, {fixed(interval.high, column.decimals)}]"


def interval_of(row: Row, index: int):
    return row.intervals[index] if row.intervals else None


def format_cost(row: Row) -> str:
    """The "UNet evals/img" cell: a whole number of UNet forward passes, or "–" where none were recorded."""
    return "–" if row.unet_evals_per_image is None else f"{row.unet_evals_per_image:.0f}"


def n_range_text(column: Column) -> str:
    """The column's n as a number or a range: "32" when every cell rests on 32 images, "30–48" when the cells differ
    (each cell then names its own, ``cell_n_text``), "" for an average of other columns."""
    if column.n_range is None:
        return ""
    low, high = column.n_range
    return str(low) if low == high else f"{low}–{high}"


def n_text(column: Column) -> str:
    """What a header says of the column's n: "n=32", "n=30–48", or ""."""
    return f"n={n_range_text(column)}" if column.n_range else ""


def cell_n_text(row: Row, column: Column) -> str:
    """A cell's own n, shown only where the column's cells differ (a uniform n is in the header)."""
    if column.n_range is None or column.n_range[0] == column.n_range[1] or column.key not in row.counts:
        return ""
    return f"n={row.counts[column.key]}"


def unit_header(column: Column, name: str | None = None) -> str:
    """The column header with its unit once (cells then carry none) and its n: "plain bright rate (%) ↓ n=32";
    ``name``: the benchmark as the table names it (default: its stored label)."""
    arrow = "↓" if column.lower_is_better else "↑"
    return f"{name or column.benchmark} {column.name}{' (%)' if column.rate else ''} {arrow} {n_text(column)}".rstrip()


def rule_text(board: Leaderboard) -> str:
    """What every table says under it: the marking rule and how intervals were computed."""
    from reports.uncertainty import BOOTSTRAP

    return (RANK_RULE + " Brackets: 95% interval (rates: Wilson, on the effective n of the prompts when a prompt has "
            "several seeds; per-image means: " + BOOTSTRAP + "; averages over benchmarks: each benchmark weighted "
            "equally, Wilson on their effective n or a bootstrap within each); none is shown for set-level metrics. "
            "n: the images behind a cell.")


def _md_escape(text: str) -> str:
    """A name as literal text in a markdown table: HTML is shown, not rendered; ``|`` and emphasis marks stay characters."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for mark in ("\\", "`", "*", "[", "]", "|"):
        text = text.replace(mark, "\\" + mark)
    return text


def marked_cell(board: Leaderboard, row_index: int, index: int, bold: str = "**{}**", underline: str = "<ins>{}</ins>",
                tie: str = "{}≈", with_interval: bool = True) -> str:
    """One cell: the value (unit in the header), its mark, and its interval."""
    column, row = board.columns[index], board.rows[row_index]
    if row.base and column.set_level:
        return "–"  # the base model's distance to its own images is 0 by construction: not a result
    text = format_value(row.values[index], column, percent_sign="")
    place = board.ranks(index).get(row_index)
    if place == 1:
        text = bold.format(text)
    elif place == 2:
        text = underline.format(text)
    elif row_index in board.ties(index):
        text = tie.format(text)
    bracket = format_interval(interval_of(row, index), column, row.values[index]) if with_interval else ""
    return " ".join(part for part in (text, bracket, cell_n_text(row, column)) if part)


def named_by_user(label: str, display: str) -> str:
    """How the plain-text tables (terminal, Markdown) name a row or column: the stored label as typed, which
    reproduces the run, except where the selection names itself, with ``label=NAME`` (a checkpoint, a CSV benchmark)
    or a file (``path=``): then its display name ("mine-uce", "CSV mine.csv"), as the HTML and LaTeX tables do, where
    the typed label would be a path clipped in the middle."""
    from harness.api import HarnessError
    from harness.spec import parse_selections

    if not display:
        return label
    try:
        parts = [part for item in parse_selections(label, "label") for part in item]
    except HarnessError:  # a label stored by an older version that no longer parses: shown as stored
        return label
    return display if any("label" in part.params or "path" in part.params for part in parts) else label


def distinct_names(names: dict[str, str]) -> dict[str, str]:
    """label -> shown name, where a name shown for two labels (a checkpoint labelled "uce" beside ``uce``) is each
    label as stored instead."""
    from collections import Counter

    shown = Counter(names.values())
    return {label: name if shown[name] == 1 else label for label, name in names.items()}


def plain_names(board: Leaderboard) -> tuple[dict[str, str], dict[str, str]]:
    """How the terminal and Markdown tables name each row and each column: stored label -> name."""
    rows = distinct_names({r.method: named_by_user(r.method, r.display) for r in board.rows})
    return rows, distinct_names({c.benchmark: named_by_user(c.benchmark, c.display) for c in board.columns})


def to_markdown(board: Leaderboard) -> str:
    row_names, column_names = plain_names(board)
    header = "| method | " + " | ".join(_md_escape(unit_header(c, column_names[c.benchmark])) for c in board.columns) + " | UNet evals/img | erase cost | provenance |"
    rule = "|---|" + "---:|" * (len(board.columns) + 2) + "---|"
    lines = [header, rule]
    for row_index, row in enumerate(board.rows):
        cells = [marked_cell(board, row_index, index) for index in range(len(board.columns))]
        lines.append(f"| {_md_escape(row_names[row.method])} | " + " | ".join(cells) + f" | {format_cost(row)} | {format_erase_cost(row)} | {_md_escape(row.provenance)} |")
    # a row or column shown by the name its selection gave itself: the typed selection, to run it again
    renamed = [f"{_md_escape(name)} = {_md_escape(label)}" for label, name in {**row_names, **column_names}.items() if name != label]
    return "\n".join(lines) + "\n\n" + ("; ".join(renamed) + "\n\n" if renamed else "") + rule_text(board)


TERMINAL_MARKS = "*: best, +: second, ≈: tied (see the rule below)"


def _clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` with "…" in the middle: a label's start names the plugin and its end the parameter
    that usually tells two labels apart (a sweep's last value, a CSV benchmark's file name)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def clip_labels(labels: list[str], width: int) -> dict[str, str]:
    """Each distinct label cut to at most ``width`` characters (``_clip``), no two alike: labels that still collide
    (a sweep differing only in a middle parameter) keep their start and end and are numbered "…1", "…2"."""
    clipped = {label: _clip(label, width) for label in dict.fromkeys(labels)}
    by_text: dict[str, list[str]] = {}
    for label, text in clipped.items():
        by_text.setdefault(text, []).append(label)
    for same in by_text.values():
        if len(same) > 1:
            for number, label in enumerate(same, 1):
                mark = f"…{number}"
                clipped[label] = label if len(label) <= width else _clip(label, width - len(mark)) + mark
    return clipped


def to_terminal(board: Leaderboard, width: int | None = None, max_header: int = 22) -> str:
    """The leaderboard for a terminal: plain text (no markup), headers on two lines, and the benchmark columns
    split into blocks that each fit ``width`` (default: the terminal's), every block repeating the method column."""
    import shutil

    width = width or shutil.get_terminal_size((120, 24)).columns
    row_names, column_names = plain_names(board)
    method_width = min(max(len("method"), *(len(name) for name in row_names.values())), 28)
    # stored label -> the text shown for it (its name, cut to fit)
    clipped = clip_labels(list(row_names.values()), method_width)
    methods = {label: clipped[name] for label, name in row_names.items()}
    clipped = clip_labels(list(column_names.values()), max_header)
    benchmarks = {label: clipped[name] for label, name in column_names.items()}
    columns = []  # (header line 1, header line 2, cells)
    for index, column in enumerate(board.columns):
        unit = " (%)" if column.rate else ""
        arrow = "↓" if column.lower_is_better else "↑"
        cells = [marked_cell(board, r, index, bold="{}*", underline="{}+", tie="{}≈") for r in range(len(board.rows))]
        columns.append((benchmarks[column.benchmark], _clip(f"{column.name}{unit} {arrow} {n_text(column)}".rstrip(), max_header), cells))
    columns.append(("UNet", "evals/img", [format_cost(r) for r in board.rows]))
    columns.append(("erase", "cost", [format_erase_cost(r) for r in board.rows]))
    columns.append(("", "provenance", [r.provenance for r in board.rows]))
    sized = [(top, bottom, cells, max(len(top), len(bottom), *(len(c) for c in cells))) for top, bottom, cells in columns]
    blocks, current, used = [], [], method_width
    for item in sized:
        if current and used + 2 + item[3] > width:
            blocks.append(current)
            current, used = [], method_width
        current.append(item)
        used += 2 + item[3]
    blocks.append(current)
    out = []
    for block in blocks:
        if out:
            out.append("")
        out.append(" " * method_width + "".join(f"  {top:>{w}}" for top, _, _, w in block))
        out.append(f"{'method':<{method_width}}" + "".join(f"  {bottom:>{w}}" for _, bottom, _, w in block))
        out.append("-" * (method_width + sum(2 + w for *_, w in block)))
        for r, row in enumerate(board.rows):
            out.append(f"{methods[row.method]:<{method_width}}" + "".join(f"  {cells[r]:>{w}}" for _, _, cells, w in block))
    import textwrap

    cut = {text: label for label, text in {**methods, **benchmarks}.items() if text != label}
    if cut:  # every cut or named label, whole, so that no row or column has to be guessed and each can be rerun
        out.append("")
        out.extend(f"{text} = {label}" for text, label in cut.items())
    out.append("")
    out.extend(textwrap.wrap(TERMINAL_MARKS + ". " + rule_text(board), width=max(width, 40)))
    return "\n".join(out)


def format_erase_cost(row: Row) -> str:
    """Wall time and device of the erasure as recorded when it was computed (a cached erasure keeps its original cost)."""
    seconds = row.erase_seconds
    if seconds is None:
        return "–"
    text = f"{seconds:.1f} s" if seconds < 100 else f"{seconds / 60:.1f} min"
    if row.erase_device:  # a minute on a GPU and a minute on a CPU are not the same cost
        text += f" on {row.erase_device}"
    if row.erase_unet_evals is not None:
        text += f", {row.erase_unet_evals} UNet / {row.erase_text_encoder_evals} TE evals"
    return text


def shown_number(value: float, column: Column, decimals: int = 2) -> float:
    """The number ``format_value`` prints, for ranking: two cells that print alike tie."""
    if column.rate:
        return float(fixed(value, decimals, percent=True))
    return float(fixed(value, column.decimals))


def exported_value(value: float | None, base: bool, column: Column) -> float | None:
    """A cell's number for CSV and JSON: None for the base model's set-level scores (its FID against its own images is
    0 by construction, not a result; "–" in the tables), where a 0.0 would sort it first as the best FID."""
    return None if base and column.set_level else value


def to_csv(board: Leaderboard) -> str:
    """``leaderboard.csv``: a row per method, the value of each column (rates as fractions in [0, 1]), then each
    column's n and 95% interval ("<key> n", "<key> ci_low", "<key> ci_high"; empty where there is none), so the
    value columns stay first and a reader takes what it needs by name."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method"] + [c.key for c in board.columns]
                    + [f"{c.key} {part}" for c in board.columns for part in ("n", "ci_low", "ci_high")]
                    + ["base_model", "unet_evals_per_image", "erase_seconds", "erase_device", "erase_unet_evals", "erase_text_encoder_evals", "provenance", "runs"])
    for row in board.rows:
        cost = "" if row.unet_evals_per_image is None else repr(row.unet_evals_per_image)
        erase = "" if row.erase_seconds is None else repr(row.erase_seconds)
        values = [exported_value(v, row.base, c) for v, c in zip(row.values, board.columns)]
        spreads = []
        for index, column in enumerate(board.columns):
            found = interval_of(row, index)
            low, high = (found.low, found.high) if found is not None and found.known else (None, None)
            spreads += [row.counts.get(column.key, ""), "" if low is None else repr(low), "" if high is None else repr(high)]
        writer.writerow([row.method] + [csv_number(v) for v in values] + spreads
                        + [int(row.base), cost, erase, row.erase_device or "", "" if row.erase_unet_evals is None else row.erase_unet_evals,
                           "" if row.erase_text_encoder_evals is None else row.erase_text_encoder_evals, row.provenance, " ".join(row.runs)])
    return buffer.getvalue()


def csv_number(value) -> str:
    """A number for a CSV cell: ``repr`` (the float round-trips exactly), empty where it is missing or undefined, as
    the JSON outputs write ``null`` (pandas reads both as NaN)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(value)


LONG_COLUMNS = ("run", "method", "benchmark", "metric", "value", "n", "ci_low", "ci_high", "lower_is_better", "base_model")


def to_long_csv(results: list[dict], intervals: dict) -> str:
    """``results.csv``: one tidy row per stored result, with its n, 95% interval (empty where there is none), direction
    and whether the row is the base model's (whose set-level scores are empty, as in ``to_csv``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LONG_COLUMNS)
    for row in results:
        found = intervals.get((row["run_id"], row["method"], row["benchmark"], row["metric"]))
        low, high = (found.low, found.high) if found and found.known else (None, None)
        base = provenance(row) == BASE_PROVENANCE
        value = None if base and row["needs_reference"] else row["value"]
        writer.writerow([row["run_id"], row["method"], row["benchmark"], row["metric"], csv_number(value), row["n"],
                         "" if low is None else repr(low), "" if high is None else repr(high), int(row["lower_is_better"]), int(base)])
    return buffer.getvalue()


def to_json(board: Leaderboard, results: list[dict], intervals: dict | None = None, caveats: list[str] = ()) -> str:
    """The whole board: columns with their definitions, rows with values and ranks, the raw records, and the
    ``caveats`` (``reports.caveats``) a reader of the numbers must know."""
    ranks = [board.ranks(i) for i in range(len(board.columns))]
    document = {
        "columns": [
            {
                "key": c.key, "benchmark": c.benchmark, "metric": c.metric, "name": c.name, "lower_is_better": c.lower_is_better,
                "description": c.description, "n": c.n, "role": c.role, "adversarial": c.adversarial, "set_level": c.set_level,
                "rate": c.rate, "average_of": list(c.average_of), "group": c.group, "attack": c.attack,
            }
            for c in board.columns
        ],
        "rows": [
            {
                "method": row.method,
                "variant": row.variant,
                "provenance": row.provenance,
                "unet_evals_per_image": row.unet_evals_per_image,
                "erase_seconds": row.erase_seconds,
                "erase_device": row.erase_device,
                "erase_unet_evals": row.erase_unet_evals,
                "erase_text_encoder_evals": row.erase_text_encoder_evals,
                "base": row.base,
                "runs": row.runs,
                "values": {c.key: _finite_or_none(exported_value(v, row.base, c)) for c, v in zip(board.columns, row.values)},
                "ci95": {c.key: (interval_of(row, i).as_list() if interval_of(row, i) else None) for i, c in enumerate(board.columns)},
                "n": {c.key: row.counts.get(c.key) for c in board.columns},
                "best": [c.key for i, c in enumerate(board.columns) if ranks[i].get(row_index) == 1],
                "second": [c.key for i, c in enumerate(board.columns) if ranks[i].get(row_index) == 2],
                "tied": [c.key for i, c in enumerate(board.columns) if row_index in board.ties(i)],
            }
            for row_index, row in enumerate(board.rows)
        ],
        "rule": rule_text(board),
        "caveats": list(caveats),
        "records": [{**record, "value": _finite_or_none(record["value"])} for record in to_records(results, intervals)],
    }
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


def _finite_or_none(value):
    """JSON has no NaN: a metric that could not be computed is null."""
    return None if value is None or math.isnan(value) else value


def to_records(results: list[dict], intervals: dict | None = None) -> list[dict]:
    """The stable machine-readable form: one record per (run, method, benchmark, metric).

    With ``intervals`` (``reports.uncertainty.intervals``) each record carries ``ci95: [lo, hi]`` (``null`` where the
    metric has no per-image values) and ``interval``, how it was computed.
    """
    records = [
        {
            "run": row["run_id"],
            "method": row["method"],
            "benchmark": row["benchmark"],
            "metric": row["metric"],
            "name": row["name"],
            "value": row["value"],
            "n": row["n"],
            "lower_is_better": row["lower_is_better"],
            "description": row["description"],
            "unit": row["unit"],
            "adversarial": row["adversarial"],
            "needs_reference": row["needs_reference"],
            "unet_evals_per_image": row["unet_evals_per_image"],
            "attack": row.get("attack"),
        }
        for row in results
    ]
    if intervals is not None:
        for record, row in zip(records, results):
            found = intervals.get((row["run_id"], row["method"], row["benchmark"], row["metric"]))
            record["ci95"] = found.as_list() if found else None
            record["interval"] = found.method if found else "none"
    return records
