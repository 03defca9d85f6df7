"""The leaderboard: one row per method, one column per (benchmark, metric), read from the store only."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass


@dataclass
class Column:
    benchmark: str
    metric: str
    name: str
    lower_is_better: bool

    @property
    def header(self) -> str:
        arrow = "↓" if self.lower_is_better else "↑"
        return f"{self.benchmark} {self.name} {arrow}"


@dataclass
class Leaderboard:
    columns: list[Column]
    rows: list[tuple[str, list[float | None]]]  # (method, one value per column)

    def best(self, column_index: int) -> float | None:
        values = [v[column_index] for _, v in self.rows if v[column_index] is not None and not math.isnan(v[column_index])]
        if not values:
            return None
        return min(values) if self.columns[column_index].lower_is_better else max(values)


def latest_results(results: list[dict]) -> list[dict]:
    """The newest value of each (method, benchmark, metric); ``results`` come ordered by run time."""
    latest: dict[tuple, dict] = {}
    for row in results:
        latest[(row["method"], row["benchmark"], row["metric"])] = row
    return list(latest.values())


def build(results: list[dict]) -> Leaderboard:
    rows = latest_results(results)
    columns: dict[tuple[str, str], Column] = {}
    methods: list[str] = []
    for row in rows:
        columns.setdefault((row["benchmark"], row["metric"]), Column(row["benchmark"], row["metric"], row["name"], row["lower_is_better"]))
        if row["method"] not in methods:
            methods.append(row["method"])
    # The base model first: most reproducibility disputes start from a mismatched baseline.
    methods.sort(key=lambda m: m != "sd")
    values = {(r["method"], r["benchmark"], r["metric"]): r["value"] for r in rows}
    table_rows = [(method, [values.get((method, c.benchmark, c.metric)) for c in columns.values()]) for method in methods]
    return Leaderboard(list(columns.values()), table_rows)


def _format(value: float | None) -> str:
    if value is None:
        return "–"
    if math.isnan(value):
        return "nan"
    return f"{value:.3f}"


def to_markdown(board: Leaderboard) -> str:
    header = "| method | " + " | ".join(c.header for c in board.columns) + " |"
    rule = "|---|" + "---:|" * len(board.columns)
    lines = [header, rule]
    for method, values in board.rows:
        cells = []
        for index, value in enumerate(values):
            text = _format(value)
            if value is not None and len(board.rows) > 1 and value == board.best(index):
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_csv(board: Leaderboard) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method"] + [f"{c.benchmark}/{c.metric}" for c in board.columns])
    for method, values in board.rows:
        writer.writerow([method] + ["" if v is None else repr(v) for v in values])
    return buffer.getvalue()


def to_records(results: list[dict]) -> list[dict]:
    """The stable machine-readable form: one record per (run, method, benchmark, metric)."""
    return [
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
            "unet_evals_per_image": row["unet_evals_per_image"],
        }
        for row in results
    ]
