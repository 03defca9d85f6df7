"""The leaderboard: one row per method, one column per (benchmark, metric), read from the store only.

Every other report (LaTeX, plots, HTML) is drawn from the ``Leaderboard`` built here, so they all agree on
which value is shown, which is best, and how a column is classified:

* an **erasure** column measures unwanted content: lower is better and the scorer scores single images
  (ASR, Q16 rate, toy-asr, Acc_e);
* a **preservation** column is anything else: set-level scores against the base model's images (FID,
  toy-fid) and higher-is-better scores (CLIP-S, toy-acc, Acc_u);
* an **adversarial** benchmark declares ``adversarial = True``; its erasure metrics are averaged into an
  "Adv" column, as in the paper's Table 3;
* a benchmark with three or more erasure metrics (I2P's seven categories plus "overall") is a
  **multi-category** benchmark: its metrics make the paper's Table 2 and the per-category bars.

Everything the board needs is stored with each result at run time (``harness.results.Result``): direction,
unit, display name, definition, the benchmark's ``adversarial`` flag and the scorer's ``needs_reference``.
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

from harness.results import Result
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
    n: int | None = None
    adversarial: bool = False  # the benchmark declares adversarial = True
    set_level: bool = False  # the scorer compares whole image sets (FID)
    rate: bool = False  # a fraction in [0, 1], shown as a percentage
    decimals: int = 2  # for numbers that are not rates: enough for three significant digits of the column's values
    average_of: tuple[str, ...] = ()  # for an "Adv" column: the benchmarks it averages

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

    @property
    def base(self) -> bool:
        return self.provenance == BASE_PROVENANCE

    @property
    def variant(self) -> str:
        """The parameters written after the method name ("lamb=0.1"), or "" for the defaults and for compositions."""
        if "+" in self.method:
            return ""
        return Selection.parse(self.method, "stored method label").label().partition(":")[2]


@dataclass
class Leaderboard:
    columns: list[Column]
    rows: list[Row]

    def category_benchmarks(self) -> list[str]:
        counts: dict[str, int] = {}
        for column in self.columns:
            if column.role == "erasure" and not column.is_average:
                counts[column.benchmark] = counts.get(column.benchmark, 0) + 1
        return [bench for bench, count in counts.items() if count >= MIN_CATEGORY_METRICS]

    def erasure_columns(self) -> list[Column]:
        """Erasure columns of single-metric-family benchmarks (Table 1, the ASR bars), averages excluded."""
        categories = set(self.category_benchmarks())
        return [c for c in self.columns if c.role == "erasure" and not c.is_average and c.benchmark not in categories]

    def category_columns(self, benchmark: str) -> list[Column]:
        return [c for c in self.columns if c.benchmark == benchmark and c.role == "erasure" and not c.is_average]

    def preservation_columns(self) -> list[Column]:
        return [c for c in self.columns if c.role == "preservation"]

    def ranks(self, index: int, decimals: int | None = 2) -> dict[int, int]:
        """Row index → 1 (best) or 2 (second best) for column ``index``; the base model takes no part.

        Values are compared as a table with ``decimals`` shows them, so two cells that print alike are both
        bold (``None``: raw values).  Nothing is ranked unless at least two methods have a value.
        """
        column = self.columns[index]
        shown = {}
        for row_index, row in enumerate(self.rows):
            value = row.values[index]
            if not row.base and value is not None and not math.isnan(value):
                shown[row_index] = value if decimals is None else shown_number(value, column, decimals)
        if len(shown) < 2:
            return {}
        order = sorted(set(shown.values()), reverse=not column.lower_is_better)
        ranks = {}
        for row_index, value in shown.items():
            place = order.index(value) + 1
            if place <= 2:
                ranks[row_index] = place
        return ranks

    def best(self, column_index: int) -> float | None:
        """The best raw value among the methods (the base model excluded)."""
        ranks = self.ranks(column_index, decimals=None)
        values = [self.rows[i].values[column_index] for i, place in ranks.items() if place == 1]
        return values[0] if values else None


# --------------------------------------------------------------------------- building


def latest_results(results: list[Result]) -> list[Result]:
    """The newest value of each (method, benchmark, metric); ``results`` come ordered by run time."""
    latest: dict[tuple, Result] = {}
    for row in results:
        latest[(row.method, row.benchmark, row.metric)] = row
    return list(latest.values())


def provenance(row: Result) -> str:
    """Where the evaluated weights came from, from the model state's metadata."""
    metadata = row.state_metadata or {}
    if metadata.get("provenance"):
        return str(metadata["provenance"])
    if metadata.get("kind") == "inference":
        return "sampling-time (weights unchanged)"
    if not metadata:
        return BASE_PROVENANCE  # no model state: the backbone as loaded
    return "erased here"


def _is_rate(row: Result) -> bool:
    if row.unit is not None:
        return row.unit == "rate"
    # A result stored before units were: every rate of this code base said "fraction of ..." in its definition.
    return "fraction" in row.description.lower()


def _decimals(values: list[float | None]) -> int:
    """Two decimals (FID 12.08, CLIP-S 30.71), or more for a column of small numbers (toy FID 0.0123)."""
    largest = max((abs(v) for v in values if v is not None and not math.isnan(v)), default=0.0)
    # Below 1e-4 a number is round-off (the FID of a set against itself comes out near 1e-7), not a reason for six
    # decimals.
    if largest >= 1 or largest < 1e-4:
        return 2
    return min(6, 2 - math.floor(math.log10(largest)))


def build(results: list[Result]) -> Leaderboard:
    """The leaderboard of ``results`` (as ``Store.results`` returns them), from what is stored with each result."""
    rows = latest_results(results)
    columns: dict[tuple[str, str], Column] = {}
    rate: dict[tuple[str, str], bool] = {}
    methods: dict[str, Row] = {}
    costs: dict[str, dict[str, float]] = {}  # method -> benchmark -> UNet evaluations per image
    for row in rows:
        key = (row.benchmark, row.metric)
        if key not in columns:
            columns[key] = Column(
                row.benchmark, row.metric, row.name, row.lower_is_better, row.description, row.n,
                adversarial=row.adversarial, set_level=row.needs_reference,
            )
            rate[key] = _is_rate(row)
        method = methods.setdefault(row.method, Row(row.method, [], provenance(row)))
        if row.run_id not in method.runs:
            method.runs.append(row.run_id)
        if row.unet_evals_per_image:
            costs.setdefault(row.method, {})[row.benchmark] = row.unet_evals_per_image
    for name, per_bench in costs.items():
        methods[name].unet_evals_per_image = sum(per_bench.values()) / len(per_bench)
    values = {(r.method, r.benchmark, r.metric): r.value for r in rows}
    for key, column in columns.items():
        column_values = [values.get((m, column.benchmark, column.metric)) for m in methods]
        finite = [v for v in column_values if v is not None and not math.isnan(v)]
        column.rate = rate[key] and all(0.0 <= v <= 1.0 for v in finite)  # a rate outside [0, 1] is shown as the number it is
        column.decimals = _decimals(column_values)
    ordered = list(columns.values())
    # The base model first: most reproducibility disputes start from a mismatched baseline.
    table_rows = sorted(methods.values(), key=lambda r: not r.base)
    for row in table_rows:
        row.values = [values.get((row.method, c.benchmark, c.metric)) for c in ordered]
    board = Leaderboard(ordered, table_rows)
    _add_adversarial_averages(board)
    return board


def _add_adversarial_averages(board: Leaderboard) -> None:
    """One "Adv" column per erasure metric measured on two or more adversarial benchmarks (the paper's Table 3)."""
    by_metric: dict[str, list[int]] = {}
    for index, column in enumerate(board.columns):
        if column.adversarial and column in board.erasure_columns():
            by_metric.setdefault(column.metric, []).append(index)
    inserted = 0
    for metric, indices in by_metric.items():
        if len(indices) < MIN_ADVERSARIAL_BENCHMARKS:
            continue
        indices = [i + inserted for i in indices]
        first = board.columns[indices[0]]
        benches = tuple(board.columns[i].benchmark for i in indices)
        average = Column("Adv", metric, first.name, first.lower_is_better,
                         f"mean of {first.name} over the adversarial benchmarks {', '.join(benches)}", None, adversarial=True,
                         rate=all(board.columns[i].rate for i in indices), average_of=benches)
        position = indices[-1] + 1  # right after the last benchmark it averages
        board.columns.insert(position, average)
        for row in board.rows:
            parts = [row.values[i] for i in indices]
            # Only a method measured on every adversarial benchmark gets an average: a partial mean would flatter it.
            complete = all(v is not None and not math.isnan(v) for v in parts)
            row.values.insert(position, sum(parts) / len(parts) if complete else None)
        inserted += 1


# --------------------------------------------------------------------------- formatting


def format_value(value: float | None, column: Column, decimals: int = 2, percent_sign: str = "%") -> str:
    """A cell as a paper prints it: rates as percentages with ``decimals``, other numbers with the column's decimals."""
    if value is None:
        return "–"
    if math.isnan(value):
        return "n/a"
    if column.rate:
        return f"{100 * value:.{decimals}f}{percent_sign}"
    return f"{value:.{column.decimals}f}"


def format_cost(row: Row) -> str:
    """The "UNet evals/img" cell: a whole number of UNet forward passes, or "–" where none were recorded."""
    return "–" if row.unet_evals_per_image is None else f"{row.unet_evals_per_image:.0f}"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(board: Leaderboard) -> str:
    header = "| method | " + " | ".join(_md_escape(c.header) for c in board.columns) + " | UNet evals/img | provenance |"
    rule = "|---|" + "---:|" * (len(board.columns) + 1) + "---|"
    lines = [header, rule]
    ranks = [board.ranks(i) for i in range(len(board.columns))]
    for row_index, row in enumerate(board.rows):
        cells = []
        for index, value in enumerate(row.values):
            text = format_value(value, board.columns[index])
            place = ranks[index].get(row_index)
            if place == 1:
                text = f"**{text}**"
            elif place == 2:
                text = f"<ins>{text}</ins>"  # markdown has no underline; GitHub renders <ins> as one
            cells.append(text)
        lines.append(f"| {_md_escape(row.method)} | " + " | ".join(cells) + f" | {format_cost(row)} | {row.provenance} |")
    return "\n".join(lines)


def shown_number(value: float, column: Column, decimals: int = 2) -> float:
    """The number ``format_value`` prints, for ranking: two cells that print alike tie."""
    if column.rate:
        return round(100 * value, decimals)
    return round(value, column.decimals)


def to_csv(board: Leaderboard) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method"] + [c.key for c in board.columns] + ["unet_evals_per_image", "provenance", "runs"])
    for row in board.rows:
        cost = "" if row.unet_evals_per_image is None else repr(row.unet_evals_per_image)
        writer.writerow([row.method] + ["" if v is None else repr(v) for v in row.values] + [cost, row.provenance, " ".join(row.runs)])
    return buffer.getvalue()


def to_json(board: Leaderboard, results: list[Result]) -> str:
    """The whole board: columns with their definitions, rows with values and ranks, and the raw records."""
    ranks = [board.ranks(i) for i in range(len(board.columns))]
    document = {
        "columns": [
            {
                "key": c.key, "benchmark": c.benchmark, "metric": c.metric, "name": c.name, "lower_is_better": c.lower_is_better,
                "description": c.description, "n": c.n, "role": c.role, "adversarial": c.adversarial, "set_level": c.set_level,
                "rate": c.rate, "average_of": list(c.average_of),
            }
            for c in board.columns
        ],
        "rows": [
            {
                "method": row.method,
                "variant": row.variant,
                "provenance": row.provenance,
                "unet_evals_per_image": row.unet_evals_per_image,
                "base": row.base,
                "runs": row.runs,
                "values": {c.key: _finite_or_none(v) for c, v in zip(board.columns, row.values)},
                "best": [c.key for i, c in enumerate(board.columns) if ranks[i].get(row_index) == 1],
                "second": [c.key for i, c in enumerate(board.columns) if ranks[i].get(row_index) == 2],
            }
            for row_index, row in enumerate(board.rows)
        ],
        "records": [{**record, "value": _finite_or_none(record["value"])} for record in to_records(results)],
    }
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


def _finite_or_none(value):
    """JSON has no NaN: a metric that could not be computed is null."""
    return None if value is None or math.isnan(value) else value


def to_records(results: list[Result]) -> list[dict]:
    """The stable machine-readable form: one record per (run, method, benchmark, metric); see ``reports.result_schema``."""
    return [
        {
            "run": row.run_id,
            "method": row.method,
            "benchmark": row.benchmark,
            "metric": row.metric,
            "name": row.name,
            "value": row.value,
            "n": row.n,
            "lower_is_better": row.lower_is_better,
            "description": row.description,
            "unit": row.unit,
            "adversarial": row.adversarial,
            "needs_reference": row.needs_reference,
            "unet_evals_per_image": row.unet_evals_per_image,
        }
        for row in results
    ]
