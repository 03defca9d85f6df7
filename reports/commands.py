"""The reports plugin (entry point ``reports``): ``harness report`` (``reports/command.py``), ``harness compare`` and
``harness export`` (paired comparisons and per-image values), and the leaderboard ``harness run`` prints at the end.

Registered through the ``register_commands`` and ``summarize_run`` hooks, like any plugin's: the core never imports
the reports package.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from harness.api import HarnessError
from harness.hookspecs import hookimpl
from harness.results import common_unit
from reports.leaderboard import decimals_for, fixed

COMPARE_HELP = """\
Paired comparison of two methods on every benchmark and metric both have in the store: the
difference B - A, its 95% interval (paired bootstrap over prompts) and a p-value from a paired
test on the same prompts and seeds (exact McNemar on the discordant pairs for 0/1 per-image
values with one image per prompt; otherwise Wilcoxon signed-rank, exact up to 200 non-zero pairs,
on per-prompt means when a prompt has several seeds).  Where the test and the mean difference
favour different methods (many small wins, a few large losses) the verdict says "ranks and
means disagree".  Set-level metrics (FID) have no per-image values and are listed without a test.

examples:
  harness compare --out harness-out uce trce-t
  harness compare --out harness-out rece trce --bench ring-a-bell --json
"""

EXPORT_HELP = """\
Write every stored per-image value as one tidy row per image and metric:
run,method,benchmark,prompt_id,seed,image_key,metric,value
(a .parquet file name writes Parquet, if pandas has a Parquet engine).  The mean of a result's
rows is its stored value, so any statistic can be redone from this file.

examples:
  harness export --out harness-out --per-image values.csv
  harness export --out harness-out --per-image values.parquet --methods sd,trce --bench i2p
"""

PER_IMAGE_COLUMNS = ("run", "method", "benchmark", "prompt_id", "seed", "image_key", "metric", "value")


@hookimpl
def summarize_run(store, run_id):
    from reports import caveats, leaderboard

    results = store.results(runs=[run_id])
    board = leaderboard.build(results, values=store.result_values(runs=[run_id]))
    return leaderboard.to_terminal(board) + caveats.to_text(caveats.caveats(store, results))


@hookimpl
def register_commands(subparsers):
    from reports.command import add_report_command

    add_report_command(subparsers)
    formatter = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("compare", help="paired test of method B against method A on the stored per-image values",
                              description=COMPARE_HELP, formatter_class=formatter)
    p.add_argument("a", metavar="A", help="method label as stored (e.g. uce or uce:lamb=0.1)")
    p.add_argument("b", metavar="B", help="method label as stored")
    p.add_argument("--out", default="harness-out", help="the store written by harness run (default: harness-out)")
    p.add_argument("--bench", help="only these benchmarks (or groups)")
    p.add_argument("--runs", help="comma list of run ids (default: all; the newest value of each cell wins)")
    p.add_argument("--json", action="store_true", help="print one JSON record per benchmark and metric")
    p.set_defaults(handler=cmd_compare)

    p = subparsers.add_parser("export", help="per-image values as a tidy CSV or Parquet file", description=EXPORT_HELP,
                              formatter_class=formatter)
    p.add_argument("--out", default="harness-out", help="the store written by harness run (default: harness-out)")
    p.add_argument("--per-image", required=True, metavar="FILE", help="output file: .csv or .parquet")
    p.add_argument("--runs", help="comma list of run ids (default: all)")
    p.add_argument("--methods", help="only these methods (the base model's rows always stay)")
    p.add_argument("--bench", help="only these benchmarks (or groups)")
    p.set_defaults(handler=cmd_export)


# --------------------------------------------------------------------------- compare


def _latest_cell(results: list[dict], method: str) -> dict[tuple[str, str], dict]:
    """(benchmark, metric) → the newest result row of ``method`` (results come ordered by run time)."""
    return {(row["benchmark"], row["metric"]): row for row in results if row["method"] == method}


def comparisons(results: list[dict], stored: dict, a: str, b: str) -> list[dict]:
    """One record per (benchmark, metric) that both methods have: B − A with its interval and paired p-value."""
    from reports.uncertainty import compare

    cells_a, cells_b = _latest_cell(results, a), _latest_cell(results, b)
    records = []
    for key, row_a in cells_a.items():
        if key not in cells_b:
            continue
        row_b = cells_b[key]
        values_a = stored.get((row_a["run_id"], a, *key))
        values_b = stored.get((row_b["run_id"], b, *key))
        record = {
            "benchmark": key[0], "metric": key[1], "name": row_a["name"], "a": a, "b": b,
            "value_a": _cell_value(row_a), "value_b": _cell_value(row_b), "n_a": row_a["n"], "n_b": row_b["n"],
            "lower_is_better": row_a["lower_is_better"], "unit": row_a["unit"], "run_a": row_a["run_id"], "run_b": row_b["run_id"],
        }
        if values_a and values_b:
            # The stored unit picks the test (stats.is_rate); two runs that disagree on it (a plugin changed in
            # between) leave the choice to the values, as for results stored before units were.
            record.update(compare(values_a, values_b, common_unit((row_a["unit"], row_b["unit"]))))
        else:
            delta = None if record["value_a"] is None or record["value_b"] is None else record["value_b"] - record["value_a"]
            record.update(delta=delta, ci95=None, p_value=None, n_pairs=0, test="none: no per-image values (a set-level or aggregate metric)")
        record["verdict"] = verdict(record)
        records.append(record)
    # As the leaderboard: erasure metrics (lower is better, per image) first, then preservation.
    erasure = {key for key, row in cells_a.items() if row["lower_is_better"] and not row["needs_reference"]}
    return sorted(records, key=lambda r: (((r["benchmark"], r["metric"]) not in erasure), r["benchmark"], r["metric"]))


def _cell_value(row: dict) -> float | None:
    """A cell's stored value; none for the base model's set-level score against itself (its FID is 0 by
    construction, which the leaderboard shows as "–" too)."""
    from reports.leaderboard import BASE_PROVENANCE, provenance

    if row["needs_reference"] and provenance(row) == BASE_PROVENANCE:
        return None
    return _finite(row["value"])


VERDICT_LEVEL = 0.05  # per record, uncorrected: the header says so; the leaderboard's marks are Holm-corrected


def verdict(record: dict) -> str | None:
    """"B better", "A better" or "no significant difference" at p < 0.05 (by the metric's direction); None untested.

    A significant test whose direction disagrees with the mean difference (a rank test finding B higher on most
    prompts while a few large losses pull B's mean below A's) is "ranks and means disagree": neither is better on
    both counts, and the mean alone is what the tables show."""
    if record.get("p_value") is None or record.get("delta") is None:
        return None
    if record["p_value"] >= VERDICT_LEVEL or record["delta"] == 0:
        return "no significant difference"
    if record.get("test_favours") not in (None, "B" if record["delta"] > 0 else "A"):
        return "ranks and means disagree"
    b_lower = record["delta"] < 0
    return "B better" if b_lower == bool(record["lower_is_better"]) else "A better"


def _finite(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _check_method(results: list[dict], label: str, where: str) -> None:
    from harness.api import did_you_mean

    stored = {row["method"] for row in results}
    if label not in stored:
        raise HarnessError(f"no results for method {label!r} in the store at {where}{did_you_mean(label, stored)}")


def _shown(value: float | None, rate: bool, decimals: int) -> str:
    """A compared value: a rate in percent (two decimals), other numbers with ``decimals``, "–" for none."""
    return "–" if value is None else f"{fixed(value, 2, percent=True)}%" if rate else fixed(value, decimals)


def _both(record: dict, value_a: float | None, value_b: float | None, rate: bool, decimals: int) -> str:
    """"uce 12.50%, trce 3.00%": the two methods' values."""
    return f"{record['a']} {_shown(value_a, rate, decimals)}, {record['b']} {_shown(value_b, rate, decimals)}"


def _format_compare(records: list[dict]) -> str:
    lines = []
    for r in records:
        rate = r["unit"] == "rate" or r["test"] == "exact McNemar"  # results stored before units: 0/1 values
        scale, unit = (100, " pp") if rate else (1, "")
        # the leaderboard's rule for the column's digits (a share of 0.626 against 0.629 is not 0.63 against 0.63)
        decimals = 2 if rate else decimals_for([r["value_a"], r["value_b"]])
        arrow = "↓" if r["lower_is_better"] else "↑"
        if r["delta"] is None:
            if r["value_a"] is None and r["value_b"] is None:
                lines.append(f"{r['benchmark']} {r['name']}: no values to compare")
            else:  # the base model's set-level score against its own images has no value
                lines.append(f"{r['benchmark']} {r['name']} {arrow}: {_both(r, r['value_a'], r['value_b'], rate, decimals)} "
                             f"({r['test']}; no difference to take)")
            continue
        partial = "paired_a" in r and r["n_pairs"] < max(r["n_a"], r["n_b"])
        if partial:  # the difference is over the shared pairs: show the means it is made of, then the whole cells
            sides = (f"{_both(r, r['paired_a'], r['paired_b'], rate, decimals)} on the {r['n_pairs']} shared pairs "
                     f"(whole cells: {r['a']} {_shown(r['value_a'], rate, decimals)} n={r['n_a']}, "
                     f"{r['b']} {_shown(r['value_b'], rate, decimals)} n={r['n_b']})")
        else:
            sides = _both(r, r["value_a"], r["value_b"], rate, decimals)
        text = f"{r['benchmark']} {r['name']} {arrow}: {sides}; B - A = {scale * r['delta']:+.{decimals}f}{unit}"
        if r["ci95"]:
            text += f" [{scale * r['ci95'][0]:+.{decimals}f}, {scale * r['ci95'][1]:+.{decimals}f}]"
        if r["p_value"] is not None:
            prompts = f" of {r['n_prompts']} prompts" if r.get("n_prompts", r["n_pairs"]) < r["n_pairs"] else ""
            text += f", p = {r['p_value']:.3g} ({r['test']}, {r['n_pairs']} pairs{prompts}"
            text += f", discordant A-only {r['discordant'][0]} / B-only {r['discordant'][1]})" if "discordant" in r else ")"
        else:
            text += f" ({r['test']})"
        if r["verdict"]:
            text += ": " + {"A better": f"{r['a']} better", "B better": f"{r['b']} better"}.get(r["verdict"], r["verdict"])
        lines.append(text)
    return "\n".join(lines)


def cmd_compare(args, registry) -> int:
    from harness.store import Store

    with Store(args.out, read_only=True) as store:
        return _compare(args, registry, store)


def _compare(args, registry, store) -> int:
    from reports.select import select

    results = select(store.results(), args.out, runs=args.runs, bench=args.bench, registry=registry)
    for label in (args.a, args.b):
        _check_method(results, label, args.out)
    if args.a == args.b:
        raise HarnessError(f"compare needs two different methods; got {args.a!r} twice")
    records = comparisons(results, store.result_values(), args.a, args.b)
    if not records:
        raise HarnessError(f"{args.a!r} and {args.b!r} share no benchmark and metric in the store at {args.out}")
    if args.json:
        print(json.dumps(records, indent=2, allow_nan=False))
        return 0
    print(f"B = {args.b} against A = {args.a} (paired by prompt id and seed; 95% intervals by paired bootstrap over prompts; "
          f"each verdict at p < {VERDICT_LEVEL} on its own line, not corrected for the number of lines)")
    print(_format_compare(records))
    return 0


# --------------------------------------------------------------------------- export


def per_image_rows(results: list[dict], stored: dict) -> list[dict]:
    rows = []
    for result in results:
        for value in stored.get((result["run_id"], result["method"], result["benchmark"], result["metric"]), []):
            rows.append({
                "run": result["run_id"], "method": result["method"], "benchmark": result["benchmark"], "prompt_id": value["prompt_id"],
                "seed": value["seed"], "image_key": value["image_key"], "metric": result["metric"], "value": value["value"],
            })
    return rows


def write_per_image(rows: list[dict], path: Path) -> None:
    """Write the rows to ``path`` (.csv or .parquet) through ``integrity.atomic_write``, so a full disk or Ctrl-C never
    leaves a truncated file under the name a pipeline reads next."""
    from harness.integrity import atomic_write
    from reports.leaderboard import csv_number

    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise HarnessError(f"--per-image {path}: write a .csv or .parquet file")

    def write_parquet(temporary: Path) -> None:
        import pandas as pd

        try:
            pd.DataFrame(rows, columns=list(PER_IMAGE_COLUMNS)).to_parquet(temporary, index=False)
        except ImportError:
            raise HarnessError(f"--per-image {path}: pandas has no Parquet engine here; install pyarrow, or write a .csv") from None

    def write_csv(temporary: Path) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=PER_IMAGE_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "value": csv_number(row["value"])})  # repr: the float round-trips exactly

    atomic_write(path, write=write_parquet if suffix == ".parquet" else write_csv)


def cmd_export(args, registry) -> int:
    from harness.store import Store

    with Store(args.out, read_only=True) as store:
        return _export(args, registry, store)


def _export(args, registry, store) -> int:
    from reports.select import select

    results = select(store.results(), args.out, runs=args.runs, methods=args.methods, bench=args.bench, registry=registry)
    rows = per_image_rows(results, store.result_values())
    if not rows:
        raise HarnessError(f"the store at {args.out} has no per-image values for these results (set-level metrics have none; "
                           "results stored before per-image storage need `harness run` again)")
    path = Path(args.per_image)
    write_per_image(rows, path)
    print(f"wrote {len(rows)} per-image values of {len({(r['run'], r['method'], r['benchmark'], r['metric']) for r in rows})} results to {path}",
          file=sys.stderr)
    return 0
