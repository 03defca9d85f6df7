"""Issue 14's done-when on a real toy store: `sd,uce,trce-t` on `toy-explicit,toy-preserve`, the first 48 prompts.

Every rate record of `harness report --json` carries the Wilson interval of (value·n, n); `harness export
--per-image` reproduces every stored rate exactly; `harness compare uce trce-t --json` gives the exact McNemar
p-value that the exported values imply (checked against scipy's binomial test).
"""

import csv
import json
import statistics

import pytest
from scipy.stats import binomtest

from harness.cli import main

pytestmark = [pytest.mark.toy, pytest.mark.slow]


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy-stats") / "out"
    code = main(["run", "--methods", "sd,uce,trce-t", "--bench", "toy-explicit,toy-preserve", "--limit", "48", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    return out


def cli_json(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_rate_records_carry_wilson_export_reproduces_and_compare_is_exact_mcnemar(toy_store, capsys, tmp_path):
    records = cli_json(capsys, "report", "--out", str(toy_store), "--json")
    records = records["records"] if isinstance(records, dict) else records
    rates = [r for r in records if r["interval"] == "Wilson score interval"]
    assert len(rates) >= 3 * 3  # toy-asr and toy-asr-any on toy-explicit, toy-acc on toy-preserve, for 3 methods
    for record in rates:
        k = round(record["value"] * record["n"])
        assert abs(record["value"] * record["n"] - k) < 1e-9 and record["n"] == 48
        reference = binomtest(k, record["n"]).proportion_ci(confidence_level=0.95, method="wilson")
        assert record["ci95"] == pytest.approx([reference.low, reference.high], abs=1e-3)
    fid = [r for r in records if r["metric"] == "toy-fid:toy-fid"]
    assert fid and all(r["ci95"] is None for r in fid)  # set-level: no made-up interval

    path = tmp_path / "values.csv"
    assert main(["export", "--out", str(toy_store), "--per-image", str(path)]) == 0
    capsys.readouterr()
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    grouped: dict[tuple, list[float]] = {}
    for row in rows:
        grouped.setdefault((row["method"], row["benchmark"], row["metric"]), []).append(float(row["value"]))
    for record in rates:
        assert statistics.fmean(grouped[record["method"], record["benchmark"], record["metric"]]) == record["value"]  # exactly

    compared = cli_json(capsys, "compare", "--out", str(toy_store), "uce", "trce-t", "--json")
    binary = [r for r in compared if r.get("discordant") is not None]
    assert len(binary) >= 3
    for record in binary:
        a = {(r["prompt_id"], r["seed"]): float(r["value"]) for r in rows
             if r["method"] == "uce" and r["benchmark"] == record["benchmark"] and r["metric"] == record["metric"]}
        b = {(r["prompt_id"], r["seed"]): float(r["value"]) for r in rows
             if r["method"] == "trce-t" and r["benchmark"] == record["benchmark"] and r["metric"] == record["metric"]}
        a_only = sum(1 for key in a if a[key] == 1 and b[key] == 0)
        b_only = sum(1 for key in a if a[key] == 0 and b[key] == 1)
        assert record["discordant"] == [a_only, b_only]
        expected = 1.0 if a_only + b_only == 0 else binomtest(a_only, a_only + b_only, 0.5).pvalue
        assert record["p_value"] == pytest.approx(expected, rel=1e-12)
        print(f"{record['benchmark']} {record['metric']}: uce {record['value_a']:.4f} trce-t {record['value_b']:.4f} "
              f"discordant {record['discordant']} p = {record['p_value']:.4g}")


@pytest.fixture(scope="module")
def toy_store_4x5(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy-4x5") / "out"
    code = main(["run", "--methods", "sd,uce,rece,trce-t", "--bench", "toy-explicit,toy-synonym,toy-implicit,toy-implicit-heldout,toy-preserve",
                 "--limit", "8", "--out", str(out), "--no-progress"])
    assert code == 0
    assert main(["report", "--out", str(out), "--format", "latex,html"]) == 0
    return out / "report"


def test_a_4_method_5_benchmark_toy_report_fits_the_page_and_the_window(toy_store_4x5, tmp_path):
    import re
    import shutil
    import subprocess

    from test_html_fit import PROBE, chromium
    from test_latex_fit import overfull_boxes

    tables = toy_store_4x5 / "tables.tex"
    assert r"\begin{table*}" in (toy_store_4x5 / "table1.tex").read_text()
    if shutil.which("pdflatex"):
        for path in toy_store_4x5.glob("*.tex"):
            shutil.copy(path, tmp_path)
        run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tables.name], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, run.stdout[-3000:]
        assert [p for p in overfull_boxes((tmp_path / "tables.log").read_text(errors="replace")) if p > 1.0] == []
    browser = chromium()
    if browser:
        page = tmp_path / "probe.html"
        page.write_text((toy_store_4x5 / "report.html").read_text().replace("</body>", PROBE))
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1000", "--virtual-time-budget=5000"]
        dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
        probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S).group(1).replace("&quot;", '"'))
        assert probe["right"] <= 1280 and probe["rows"] == 4 + 2, probe
    if not shutil.which("pdflatex") and not browser:
        pytest.skip("neither pdflatex nor chromium is installed")
