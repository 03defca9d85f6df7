"""``harness report``: the leaderboard, LaTeX tables, plots, image grids and HTML, from the store alone."""

from __future__ import annotations

import argparse
import json
import sys

from harness.api import HarnessError

REPORT_HELP = """\
Report the stored results: nothing is recomputed, everything is read from the
store under --out.  Prints the leaderboard and writes, under OUT/report (or --dest):

  md, csv, json   leaderboard.md/.csv/.json: a row per method (with provenance and erasure
                  cost), a column per (benchmark, metric) with its n and 95% interval, an "Adv"
                  column averaging the adversarial benchmarks; best bold and second
                  underlined only where a paired test (Holm-corrected) separates them;
                  csv and json give rates as fractions in [0, 1] and mark the base model's
                  row (csv: base_model, json: base); results.csv: one row per result with
                  n, ci_low, ci_high, lower_is_better, base_model
  latex           table1.tex (one primary metric per benchmark: user / adversarial prompts /
                  knowledge preservation), table1-secondary.tex, table2-<bench>.tex per
                  multi-category benchmark, tables.tex (standalone, two-column page)
  png, pdf        plots/ (rates per benchmark, erasure-vs-preservation with the Pareto
                  front, per-category bars) and grids/ (methods x prompts)
  html            report.html: all of it in one self-contained file, with each run's manifest

Images flagged by a benchmark's safety metric are blurred in grids unless --no-blur.

examples:
  harness report --out harness-out
  harness report --out harness-out --methods sd,uce,trce --bench i2p,mma --format latex,pdf
  harness report --out harness-out --json      one record per (run, method, benchmark, metric), with ci95

see also: harness compare (paired test of two methods), harness export --per-image (every image's value)
"""


def cmd_report(args, registry) -> int:
    from harness.store import Store
    from reports import report

    formats = report.parse_formats(args.format)
    if args.grid_prompts < 1:
        raise HarnessError(f"--grid-prompts must be at least 1; got {args.grid_prompts}")
    with Store(args.out, read_only=True) as store:  # closed on every path: a refused --dest leaves no log files behind
        return _report(args, registry, store, formats)


def _report(args, registry, store, formats) -> int:
    from harness import names
    from reports import leaderboard, report
    from reports.select import select

    results = select(store.results(), args.out, runs=args.runs, methods=args.methods, bench=args.bench, registry=registry)
    if args.json:
        from reports.result_schema import records_document
        from reports.uncertainty import intervals

        print(json.dumps(records_document(results, intervals(results, store.result_values())), indent=2))
        return 0
    if store.read_only and not args.dest:
        raise HarnessError(f"the store {store.root} is read-only here, so the report cannot go under it; "
                           "write it elsewhere with --dest /a/writable/folder (or print it with --json)")
    destination = names.inside(store.root, args.dest or "report", "--dest")
    filters = "".join(f"; {name} {value}" for name, value in (("runs", args.runs), ("methods", args.methods), ("benchmarks", args.bench)) if value)
    written = report.write(store, results, destination, formats, blur=not args.no_blur,
                           grid_prompts=args.grid_prompts, filters=filters)
    from reports import caveats

    print(leaderboard.to_terminal(written.board) + caveats.to_text(written.caveats))
    for note in written.notes:
        print(f"harness: note: {note}", file=sys.stderr)
    print(f"\nwrote {len(written.files)} file{'' if len(written.files) == 1 else 's'} under {destination}" + (f" (open {destination / 'report.html'})" if "html" in formats else ""),
          file=sys.stderr)
    return 0


def add_report_command(subparsers) -> None:
    p = subparsers.add_parser("report", help="leaderboard, LaTeX, plots, image grids and HTML from the store", description=REPORT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="harness-out", help="the store written by harness run (default: harness-out)")
    p.add_argument("--dest", help="where to write the report (default: OUT/report; a relative path is taken inside OUT)")
    p.add_argument("--runs", help="comma list of run ids (default: all; the newest value of each cell wins)")
    p.add_argument("--methods", help="only these methods; 'uce' keeps every uce variant (the base model row always stays)")
    p.add_argument("--bench", help="only these benchmarks (or benchmark groups, e.g. toy)")
    p.add_argument("--format", help=f"comma list of {','.join(('md', 'csv', 'json', 'latex', 'png', 'pdf', 'html'))} (default: all)")
    p.add_argument("--no-blur", action="store_true", help="show flagged (unsafe) images unblurred in the grids")
    p.add_argument("--grid-prompts", type=int, default=6, metavar="N", help="prompts per image grid (default 6)")
    p.add_argument("--json", action="store_true", help="print one JSON record per (run, method, benchmark, metric) and stop")
    p.set_defaults(handler=cmd_report)
