"""``harness report``: every output from the store alone, nothing recomputed.

Layout of the output folder (default ``<store>/report``)::

    leaderboard.md  leaderboard.csv  leaderboard.json       md, csv, json
    results.csv                                             csv (long: one row per result, with n and 95% interval)
    table1.tex  table2-<bench>.tex  tables.tex              latex (tables.tex is a standalone document)
    plots/<name>.png|.pdf                                   png, pdf
    grids/<bench>.png|.pdf                                  png, pdf (flagged images blurred unless --no-blur)
    report.html                                             html (self-contained)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from harness import names
from harness.api import HarnessError
from harness.results import Result
from reports import leaderboard

FORMATS = ("md", "csv", "json", "latex", "png", "pdf", "html")


def parse_formats(text: str | None) -> tuple[str, ...]:
    if not text:
        return FORMATS
    wanted = tuple(dict.fromkeys(item.strip().lower() for item in text.split(",") if item.strip()))
    unknown = [item for item in wanted if item not in FORMATS]
    if unknown or not wanted:
        raise HarnessError(f"--format {text!r}: unknown format {', '.join(unknown) or '(none)'}; choose from {','.join(FORMATS)}")
    return wanted


@dataclass
class Written:
    board: leaderboard.Leaderboard
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the plots leave out, for the terminal
    caveats: list[str] = field(default_factory=list)  # what the table cannot show (reports.caveats), in every output


def _write(path: Path, text: str, written: Written) -> None:
    """Written beside and renamed into place: a full disk or a Ctrl-C leaves the previous file or none, never a
    truncated one, and the error names the file."""
    from harness.integrity import atomic_write

    atomic_write(path, text.encode("utf-8"))
    written.files.append(path)


def write(store, results: list[Result], destination: Path, formats: tuple[str, ...], blur: bool = True,
          grid_prompts: int = 6, filters: str = "") -> Written:
    """Write the requested ``formats`` of the report on ``results`` (rows of ``store.results()``) under ``destination``."""
    from reports import caveats
    from reports.uncertainty import intervals

    stored_values = store.result_values()
    cell_intervals = intervals(results, stored_values)  # computed once: the board, the CSV and the JSON share them
    board = leaderboard.build(results, values=stored_values, cell_intervals=cell_intervals)
    written = Written(board, caveats=caveats.caveats(store, results))
    destination.mkdir(parents=True, exist_ok=True)
    if "md" in formats:
        _write(destination / "leaderboard.md", leaderboard.to_markdown(board) + caveats.to_text(written.caveats, escape=leaderboard._md_escape) + "\n", written)
    if "csv" in formats:
        _write(destination / "leaderboard.csv", leaderboard.to_csv(board), written)
        _write(destination / "results.csv", leaderboard.to_long_csv(results, cell_intervals), written)
    if "json" in formats:
        _write(destination / "leaderboard.json", leaderboard.to_json(board, results, cell_intervals, written.caveats), written)
    if "latex" in formats:
        from reports import latex

        tables = latex.tables(board, written.caveats)
        # An earlier report's tables (a secondary table or a benchmark this one lacks) must not pass for this one's;
        # only the names this report writes are removed, never a user's own files.
        for pattern in ("table1.tex", "table1-secondary.tex", "table2-*.tex"):
            for stale in destination.glob(pattern):
                stale.unlink()
        for name, source in tables.items():
            _write(destination / name, source, written)
        _write(destination / "tables.tex", latex.document(tables), written)

    image_formats = tuple(f for f in ("png", "pdf") if f in formats)
    if not image_formats and "html" not in formats:
        return written
    from harness.integrity import atomic_write
    from reports import grids as grid_module
    from reports import html, plots

    figures = plots.figures(board, written.notes)
    grid_list = [grid_module.draw(grid, blur_flagged=blur) for grid in grid_module.collect(store, board, results, grid_prompts)]
    if image_formats:
        for sub in ("plots", "grids"):  # these folders hold only what this report makes: no stale plot survives a re-run
            shutil.rmtree(destination / sub, ignore_errors=True)
    for stem, _, figure in figures:
        if image_formats:
            written.files += plots.save(figure, destination / "plots", stem, image_formats)
    grid_stem = names.FileNames()
    for grid in grid_list:
        for fmt in image_formats:
            path = destination / "grids" / f"{grid_stem(grid.benchmark)}.{fmt}"
            atomic_write(path, write=lambda temporary, image=grid.image, fmt=fmt: image.save(
                temporary, format=fmt.upper(), **({"resolution": 150.0} if fmt == "pdf" else {})))
            written.files.append(path)
    if "html" in formats:
        manifests = {}
        for run in dict.fromkeys(row["run_id"] for row in results):
            manifests[run] = store.read_manifest(run)
        figure_parts = [(stem, caption, html.figure_png(figure)) for stem, caption, figure in figures]
        grid_parts = [(grid.benchmark, grid_caption(grid, blur), html.image_png(grid.image), grid.column_prompts())
                      for grid in grid_list]
        _write(destination / "report.html", html.render(board, figure_parts, grid_parts, manifests, filters=filters, caveats=written.caveats), written)
    return written


def grid_caption(grid, blur: bool) -> str:
    from reports import grids as grid_module

    flagged = sum(cell.flagged for cell in grid.cells)
    order = "in the benchmark's order" if grid.in_benchmark_order else "by prompt id (the store does not record the benchmark's order)"
    count = len(grid.prompts) or len(grid.spec_ids)
    text = f"Rows: methods; columns: the first {count} prompts of {grid.benchmark}, {order} (prompt id and text above each column)."
    if grid.seeds_per_prompt > 1:
        text += f" Each prompt's {grid.seeds_per_prompt} seeds stand side by side, each column labelled with its seed."
    if flagged:
        by = grid_module.flagged_by_text(grid)
        text += f" {flagged} of {len(grid.cells)} images were flagged by {by} (framed)"
        text += "; they are blurred." if blur else "; shown unblurred because of --no-blur."
    return text
