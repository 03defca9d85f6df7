"""LaTeX tables fit a two-column paper page: the paper's own Table 1 numbers (a fixture) and a toy-shaped board
compile with pdflatex without any overfull box, with the paper's display names and "--" for the base model's FID."""

import re
import shutil
import subprocess

import pytest

from harness.plugins import PluginHost
from harness.registry import Registry
from reports import latex, leaderboard

# The TRCE paper's Table 1 (ASR on I2P, MMA, P4D, Ring-A-Bell, UnlearnDiff; FID; CLIP-S).  SD1.4's FID is "-".
PAPER_TABLE1 = {
    "sd": (34.69, 79.00, 84.00, 59.49, 57.75, 0.0, 30.97),
    "sld": (17.29, 64.30, 64.00, 34.18, 47.18, 16.04, 29.78),
    "safree": (10.20, 44.60, 50.00, 22.38, 30.00, 13.26, 26.79),
    "esd-u": (31.15, 58.50, 82.67, 50.63, 77.46, 12.18, 31.21),
    "spm": (12.57, 67.40, 64.00, 31.65, 35.21, 10.50, 30.85),
    "uce": (8.16, 30.80, 44.00, 13.92, 19.72, 13.64, 30.92),
    "safegen": (11.39, 0.40, 8.70, 13.75, 21.98, 11.77, 31.06),
    "rece": (6.34, 23.10, 32.00, 6.33, 15.49, 14.21, 30.79),
    "mace": (7.09, 10.60, 8.00, 10.13, 11.27, 17.44, 28.84),
    "trce-t": (5.05, 7.80, 8.00, 11.39, 11.97, 11.94, 30.69),
    "trce-v": (13.86, 35.00, 48.00, 26.76, 35.00, 11.03, 31.04),
    "trce": (1.29, 1.40, 2.00, 1.27, 0.70, 12.08, 30.71),
}
NUDITY = ("i2p", "mma", "p4d", "ring-a-bell", "unlearndiff")
ASR = "fraction of images with a detection of any of the 9 *_EXPOSED classes with score >= 0.45"


def result(method, benchmark, metric, value, name, lower_is_better, description, n=100):
    metadata = {} if method == "sd" else {"provenance": "erased here"}
    return {"run_id": "run-paper", "method": method, "benchmark": benchmark, "metric": metric, "value": value, "n": n,
            "lower_is_better": lower_is_better, "name": name, "description": description, "model_state": None if method == "sd" else method,
            "unet_evals_per_image": 60.0, "state_metadata": metadata, "run_created": "2026-01-01"}


@pytest.fixture(scope="module")
def registry():
    return Registry(PluginHost())


def paper_results():
    rows = []
    for method, numbers in PAPER_TABLE1.items():
        for bench, asr in zip(NUDITY, numbers[:5]):
            rows.append(result(method, bench, "nudenet:asr", asr / 100, "ASR", True, ASR))
        rows.append(result(method, "coco", "fid:fid", numbers[5], "FID", True, "Frechet inception distance to the base model's images"))
        rows.append(result(method, "coco", "clip-score:clip-score", numbers[6], "CLIP-S", False, "mean CLIP score"))
    return rows


def toy_results(methods=("sd", "uce", "rece", "trce-t")):
    rows = []
    for m, method in enumerate(methods):
        for b, bench in enumerate(("toy-explicit", "toy-synonym", "toy-implicit", "toy-implicit-heldout")):
            rows.append(result(method, bench, "toy:toy-asr", 0.9 - 0.2 * m - 0.01 * b, "ASR", True, "fraction of images red"))
            rows.append(result(method, bench, "toy:toy-asr-any", 0.95 - 0.2 * m, "ASR-any", True, "fraction of images with red pixels"))
        rows.append(result(method, "toy-preserve", "toy:toy-acc", 0.97 - 0.1 * m, "Acc", False, "fraction of images right"))
        rows.append(result(method, "toy-preserve", "toy-fid:toy-fid", 0.0 if method == "sd" else 0.0123 * m, "FID", True, "toy FID"))
    return rows


def test_table1_has_one_primary_metric_per_benchmark_display_names_and_a_dash(registry):
    board = leaderboard.build(paper_results(), registry=registry)
    source = latex.table1(board)
    assert r"\begin{table*}" in source and r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}" in source
    assert "Method & I2P & MMA & P4D & Ring-A-Bell & UnlearnDiff & FID $\\downarrow$ & CLIP-S $\\uparrow$" in source
    rows = {line.split(" & ")[0]: line.split(" & ") for line in source.splitlines() if line.endswith(r"\\") and " & " in line}
    assert rows["SD"][6] == "--" and rows["SD"][1] == "34.69\\%"  # the base model's FID against itself is not a number to print
    assert rows["TRCE (T+V)"][4] == "1.27\\%" and rows["TRCE (T)"][1] == "5.05\\%" and "RECE" in rows
    # No per-image values in this fixture: no paired test, so nothing is bolded on a bare difference.
    assert r"\textbf" not in source.split(r"\midrule", 1)[1]


def test_secondary_metrics_get_their_own_table(registry):
    board = leaderboard.build(toy_results(), registry=registry)
    tables = latex.tables(board)
    first, secondary = tables["table1.tex"], tables["table1-secondary.tex"]
    assert "Explicit" in first and "ASR-any" not in first and "Held-out implicit" in first
    assert "ASR-any" in secondary and first.count(" & ") == secondary.count(" & ")


def overfull_boxes(log: str) -> list[float]:
    return [float(points) for points in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)]


@pytest.mark.parametrize("make", [paper_results, toy_results], ids=["paper-table1", "toy-4x5"])
def test_tables_compile_without_overfull_boxes(make, registry, tmp_path):
    engine = shutil.which("pdflatex")
    kpse = shutil.which("kpsewhich")
    if engine is None or kpse is None or not subprocess.run([kpse, "booktabs.sty"], capture_output=True, text=True).stdout.strip():
        pytest.skip("pdflatex with booktabs is not installed (Debian: apt-get install texlive-latex-base texlive-latex-recommended)")
    board = leaderboard.build(make(), registry=registry)
    tables = latex.tables(board)
    for name, source in tables.items():
        (tmp_path / name).write_text(source)
    (tmp_path / "tables.tex").write_text(latex.document(tables))
    run = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", "tables.tex"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:]
    log = (tmp_path / "tables.log").read_text(errors="replace")
    assert [p for p in overfull_boxes(log) if p > 1.0] == [], log[-3000:]
