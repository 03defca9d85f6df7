"""LaTeX tables fit a two-column paper page: the paper's own Table 1 numbers (a fixture) and a toy-shaped board
compile with pdflatex without any overfull box, with the paper's display names and "--" for the base model's FID."""

import re
import shutil
import subprocess

import pytest
from report_fixtures import paper_results, toy_results

from reports import latex, leaderboard


def test_table1_has_one_primary_metric_per_benchmark_display_names_and_a_dash():
    board = leaderboard.build(paper_results())
    source = latex.table1(board)
    assert r"\begin{table*}" in source and r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}" in source
    assert "Method & I2P & MMA & P4D & Ring-A-Bell & UnlearnDiff & FID $\\downarrow$ & CLIP-S $\\uparrow$" in source
    rows = {line.split(" & ")[0]: line.split(" & ") for line in source.splitlines() if line.endswith(r"\\") and " & " in line}
    assert rows["SD"][6] == "--" and rows["SD"][1] == "34.69\\%"  # the base model's FID against itself is not a number to print
    assert rows["TRCE (T+V)"][4] == "1.27\\%" and rows["TRCE (T)"][1] == "5.05\\%" and "RECE" in rows
    # No per-image values in this fixture: no paired test, so nothing is bolded on a bare difference.
    assert r"\textbf" not in source.split(r"\midrule", 1)[1]


def test_secondary_metrics_get_their_own_table():
    board = leaderboard.build(toy_results())
    tables = latex.tables(board)
    first, secondary = tables["table1.tex"], tables["table1-secondary.tex"]
    assert "Explicit" in first and "ASR-any" not in first and "Held-out implicit" in first
    assert "ASR-any" in secondary and first.count(" & ") == secondary.count(" & ")


def overfull_boxes(log: str) -> list[float]:
    return [float(points) for points in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)]


@pytest.mark.parametrize("make", [paper_results, toy_results], ids=["paper-table1", "toy-4x5"])
def test_tables_compile_without_overfull_boxes(make, tmp_path):
    engine = shutil.which("pdflatex")
    kpse = shutil.which("kpsewhich")
    if engine is None or kpse is None or not subprocess.run([kpse, "booktabs.sty"], capture_output=True, text=True).stdout.strip():
        pytest.skip("pdflatex with booktabs is not installed (Debian: apt-get install texlive-latex-base texlive-latex-recommended)")
    board = leaderboard.build(make())
    tables = latex.tables(board)
    for name, source in tables.items():
        (tmp_path / name).write_text(source)
    (tmp_path / "tables.tex").write_text(latex.document(tables))
    run = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", "tables.tex"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:]
    log = (tmp_path / "tables.log").read_text(errors="replace")
    assert [p for p in overfull_boxes(log) if p > 1.0] == [], log[-3000:]


def test_markdown_and_terminal_print_a_dash_for_the_base_models_fid():
    board = leaderboard.build(paper_results())
    fid = next(i for i, c in enumerate(board.columns) if c.metric == "fid:fid")
    base = next(i for i, row in enumerate(board.rows) if row.base)
    assert leaderboard.marked_cell(board, base, fid) == "–"
    sd_line = next(line for line in leaderboard.to_markdown(board).splitlines() if line.startswith("| sd |"))
    assert "| – |" in sd_line and "0.00" not in sd_line
