"""`harness report` on a store filled by a real tiny-backbone run: leaderboard, LaTeX, plots, grids, HTML.

The run uses ``tests/plugins/report_kit.py``: user, adversarial, multi-category and preservation
benchmarks scored from the generated images, so every number here comes from the store, none is typed in.
"""

import csv
import io
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import stats
from harness.cli import main
from harness.store import Store
from reports import grids, latex, leaderboard, plots, uncertainty

KIT = str(Path(__file__).parent / "plugins" / "report_kit.py")
METHODS = "sd,tint:amount=0.1,tint:amount=-0.1,tint:amount=-0.3"
BENCH = "plain:count=4,attack-a:count=3,attack-b:count=3,multi:count=6,keep:count=3"
BRIGHT = 0.455  # the kit's threshold for a flagged ("bright") image


def cli(capsys, *args):
    code = main(["--plugin", KIT, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    import torch

    out = tmp_path_factory.mktemp("reports") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model gains nothing from threads, and on a busy 2-core machine they fight
    try:
        code = main(["--plugin", KIT, "run", "--model", "tiny", "--methods", METHODS, "--bench", BENCH, "--out", str(out), "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return out


@pytest.fixture(scope="module")
def board(store_dir):
    store = Store(store_dir)
    return leaderboard.build(store.results(), values=store.result_values())


@pytest.fixture(scope="module")
def report_dir(store_dir):
    code = main(["--plugin", KIT, "report", "--out", str(store_dir)])
    assert code == 0
    return store_dir / "report"


def stored_values(store_dir) -> dict[tuple[str, str, str], float]:
    return {(r["method"], r["benchmark"], r["metric"]): r["value"] for r in Store(store_dir).results()}


# --------------------------------------------------------------------------- leaderboard


def markdown_cells(text: str) -> tuple[list[str], dict[str, list[str]]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header, rows = split[0], split[2:]
    return header, {row[0]: row for row in rows}


def test_marks_follow_the_paired_tests_and_cells_carry_intervals(report_dir, store_dir, board):
    header, rows = markdown_cells((report_dir / "leaderboard.md").read_text())
    values = stored_values(store_dir)
    per_image = Store(store_dir).result_values()
    contenders = [m for m in rows if m != "sd"]
    assert list(rows)[0] == "sd" and rows["sd"][-1] == "base model"
    tested = 0
    for column_index, column in enumerate(board.columns, start=1):
        assert not rows["sd"][column_index].startswith(("**", "<ins>"))  # the reference is never ranked
        if column.is_average or column.set_level:
            assert not any(rows[m][column_index].startswith(("**", "<ins>")) for m in contenders)  # no test, no mark
            continue
        # Recompute the rule from the stored per-image values: order by value, Holm over the leader's paired tests
        # against every other method; bold only if all of them hold.
        cells = {m: per_image[next(iter(Store(store_dir).results()))["run_id"], m, column.benchmark, column.metric] for m in contenders}
        order = sorted(contenders, key=lambda m: values[m, column.benchmark, column.metric], reverse=not column.lower_is_better)
        pairs = [uncertainty.align(cells[order[0]], cells[other]) for other in order[1:]]
        adjusted = stats.holm([stats.paired_p_value(a, b, column.unit) for a, b, _ in pairs])
        bold = [m for m in contenders if rows[m][column_index].startswith("**")]
        assert bold == ([order[0]] if max(adjusted) < 0.05 else []), column.header
        tested += 1
        interval = uncertainty.interval(values[order[0], column.benchmark, column.metric], cells[order[0]], column.unit)
        assert leaderboard.format_interval(interval, column) in rows[order[0]][column_index]
    assert tested >= 8
    varied = [i for i in range(1, len(header) - 1) if len({rows[m][i] for m in contenders}) > 2]
    assert len(varied) >= 3, "the tint edits must change the scores, or this test proves little"


def test_adv_column_averages_the_adversarial_benchmarks(board, store_dir):
    values = stored_values(store_dir)
    adv = [c for c in board.columns if c.is_average]
    assert [c.benchmark for c in adv] == ["Adv"] and adv[0].average_of == ("attack-a:count=3", "attack-b:count=3")
    for row in board.rows:
        expected = (values[row.method, "attack-a:count=3", "pixels:bright"] + values[row.method, "attack-b:count=3", "pixels:bright"]) / 2
        assert row.values[board.columns.index(adv[0])] == pytest.approx(expected)
    roles = {(c.benchmark, c.metric): (c.role, c.adversarial) for c in board.columns}
    assert roles["keep:count=3", "drift:drift"] == ("preservation", False)  # set-level, though lower is better
    assert roles["keep:count=3", "pixels:contrast"] == ("preservation", False)
    assert roles["attack-b:count=3", "pixels:bright"] == ("erasure", True)
    assert board.category_benchmarks() == ["multi:count=6"]


def test_csv_and_json_carry_every_cell_and_the_provenance(report_dir, store_dir, board):
    values = stored_values(store_dir)
    table = list(csv.DictReader(io.StringIO((report_dir / "leaderboard.csv").read_text())))
    assert [row["method"] for row in table] == ["sd", "tint:amount=0.1", "tint:amount=-0.1", "tint:amount=-0.3"]
    assert float(table[1]["plain:count=4/pixels:bright"]) == values["tint:amount=0.1", "plain:count=4", "pixels:bright"]
    assert table[0]["provenance"] == "base model" and table[1]["provenance"] == "erased here"
    # Sampling cost: plain CFG on the tiny backbone's 4 steps is 8 UNet evaluations per image.
    assert {float(row["unet_evals_per_image"]) for row in table} == {8.0}
    document = json.loads((report_dir / "leaderboard.json").read_text())
    by_method = {row["method"]: row for row in document["rows"]}
    assert by_method["tint:amount=0.1"]["variant"] == "amount=0.1" and by_method["sd"]["base"] is True
    assert by_method["sd"]["unet_evals_per_image"] == 8.0
    key = "keep:count=3/drift:drift"
    column = next(c for c in document["columns"] if c["key"] == key)
    assert column["role"] == "preservation" and column["set_level"] and column["description"]
    assert not any(key in row["best"] + row["second"] for row in by_method.values())  # set-level: no paired test, no mark
    assert all(row["ci95"][key] is None for row in by_method.values())  # and no made-up interval
    assert len(document["records"]) == len(Store(store_dir).results())


def test_filters_compose_and_keep_the_base_model(store_dir, capsys, tmp_path):
    code, out, _ = cli(capsys, "report", "--out", str(store_dir), "--methods", "tint:amount=0.1", "--bench", "attack-a,keep",
                       "--format", "md,json", "--dest", str(tmp_path / "r"))
    assert code == 0 and "<ins>" not in out and "**" not in out  # the terminal gets no markup
    header, rows = markdown_cells((tmp_path / "r" / "leaderboard.md").read_text())
    assert list(rows) == ["sd", "tint:amount=0.1"]
    assert [h.split(" ")[0] for h in header[1:-3]] == ["attack-a:count=3", "keep:count=3", "keep:count=3"]
    assert header[-3:] == ["UNet evals/img", "erase cost", "provenance"]
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["leaderboard.json", "leaderboard.md"]
    code, out, _ = cli(capsys, "report", "--out", str(store_dir), "--methods", "tint", "--format", "md", "--dest", str(tmp_path / "r2"))
    assert list(markdown_cells((tmp_path / "r2" / "leaderboard.md").read_text())[1]) == ["sd", "tint:amount=0.1", "tint:amount=-0.1", "tint:amount=-0.3"]  # a name keeps all its variants


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--methods", "tnit"], "no results for method 'tnit'"),
        (["--bench", "atack-a"], "did you mean"),
        (["--runs", "run-nope"], "no run 'run-nope'"),
        (["--format", "md,docx"], "unknown format docx"),
    ],
)
def test_a_filter_matching_nothing_is_one_line(store_dir, capsys, args, expected):
    code, _, err = cli(capsys, "report", "--out", str(store_dir), *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err


def test_an_empty_store_says_so(tmp_path, capsys):
    Store(tmp_path / "empty").close()
    code, _, err = cli(capsys, "report", "--out", str(tmp_path / "empty"))
    assert code == 2 and "has no results yet" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- LaTeX


def tabular_rows(source: str) -> list[list[str]]:
    body = source[source.index(r"\midrule") : source.index(r"\bottomrule")]
    return [[cell.strip() for cell in line[: -len(r"\\")].split(" & ")] for line in body.splitlines() if line.endswith(r"\\")]


def test_latex_table1_has_the_papers_column_groups(report_dir, store_dir):
    source = (report_dir / "table1.tex").read_text()
    assert source.count(r"\toprule") == source.count(r"\bottomrule") == 1 and r"\begin{tabular}{lccccc}" in source
    assert re.search(r"\\multicolumn\{1\}\{c\}\{User prompt\} & \\multicolumn\{2\}\{c\}\{Adversarial prompt\} & "
                     r"\\multicolumn\{2\}\{c\}\{Knowledge preservation\}", source)
    assert r"\cmidrule(lr){2-2}\cmidrule(lr){3-4}\cmidrule(lr){5-6}" in source
    rows = tabular_rows(source)
    assert [row[0] for row in rows] == ["SD", "tint (amount=0.1)", "tint (amount=-0.1)", "tint (amount=-0.3)"]  # display names
    assert all(len(row) == 6 for row in rows)
    value = stored_values(store_dir)["tint:amount=0.1", "attack-a:count=3", "pixels:bright"]
    assert re.sub(r"\\(textbf|underline)\{(.*)\}|\$\^\{\\approx\}\$", r"\2", rows[1][2]) == f"{100 * value:.2f}\\%"  # the paper's "34.69\%"
    assert source.count("{") == source.count("}")


def test_latex_table2_has_a_column_per_category_with_one_decimal(report_dir):
    source = (report_dir / "table2-multi-count-6.tex").read_text()
    assert "Method & Warm & Cool & Plain words & Rate & Drift $\\downarrow$ & contrast $\\uparrow$" in source
    rows = tabular_rows(source)
    assert all(re.fullmatch(r"(\\textbf\{|\\underline\{)?\d+\.\d\\%\}?(\$\^\{\\approx\}\$)?", cell) for row in rows for cell in row[1:5])


def test_latex_escapes_special_characters():
    assert latex.escape("a_b & 50% #1 {x} ~ ^ \\ <y>") == (
        r"a\_b \& 50\% \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{} \textless{}y\textgreater{}"
    )


def test_latex_labels_hold_only_characters_a_label_key_takes(report_dir):
    """A CSV benchmark's label may hold %, #, braces or backslashes, which would end or break ``\\label{...}``."""
    assert re.search(r"\\label\{tab:categories-multi-count-6-[0-9a-f]{8}\}", (report_dir / "table2-multi-count-6.tex").read_text())
    assert latex.label_safe("csv:path=my%prompts#{1}\\x.csv").startswith("csv-path-my-prompts-1-x.csv-")
    assert re.fullmatch(r"[A-Za-z0-9.-]+", latex.label_safe("über/50% {x}"))
    assert latex.label_safe("a b") != latex.label_safe("a-b") and latex.label_safe("a-b") == "a-b"  # keys stay distinct


def test_latex_compiles(report_dir, tmp_path):
    engine = shutil.which("pdflatex")
    has_booktabs = shutil.which("kpsewhich") and subprocess.run(["kpsewhich", "booktabs.sty"], capture_output=True, text=True).stdout.strip()
    if engine is None or not has_booktabs:
        pytest.skip("pdflatex with booktabs is not installed (Debian: apt-get install texlive-latex-base texlive-latex-recommended); "
                    "the structure tests above still ran")
    for path in report_dir.glob("*.tex"):
        shutil.copy(path, tmp_path)
    run = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", "tables.tex"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout[-3000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 1000


# --------------------------------------------------------------------------- plots


def visible_bars(axes):
    return [patch for container in axes.containers for patch in container if patch.get_visible()]


def test_rate_bars_have_one_bar_per_method_and_benchmark(board, store_dir):
    figure = plots.rate_bars(board, "pixels:bright")
    axes = figure.axes[0]
    values = stored_values(store_dir)
    assert len(axes.containers) == 4 and len(visible_bars(axes)) == 4 * 3  # methods × (plain, attack-a, attack-b)
    assert [t.get_text() for t in axes.get_xticklabels()] == ["plain (count=4)", "attack-a (count=3)", "attack-b (count=3)"]  # display names
    heights = [patch.get_height() for patch in axes.containers[1]]
    assert heights == pytest.approx([100 * values["tint:amount=0.1", b, "pixels:bright"] for b in ("plain:count=4", "attack-a:count=3", "attack-b:count=3")])
    assert axes.get_ylabel() == "bright rate (%), lower is better"
    colours = [container.patches[0].get_facecolor() for container in axes.containers]
    assert len(set(colours)) == 4


def test_tradeoff_scatter_has_a_point_per_method_and_the_true_pareto_front(board):
    column = next(c for c in board.columns if c.metric == "drift:drift")
    figure = plots.tradeoff(board, column)
    axes = figure.axes[0]
    points = [tuple(offset) for collection in axes.collections for offset in collection.get_offsets()]
    # The base model's drift against its own images is 0 by construction: it is not a point.
    assert len(figure.points) == 3 and "sd" not in figure.points and all(tuple(p) in points for p in figure.points.values())
    erasure = board.erasure_columns()
    expected = {}
    for row in board.rows:
        if not row.base:
            x = 100 * sum(row.values[board.columns.index(c)] for c in erasure) / len(erasure)
            expected[row.method] = (x, row.values[board.columns.index(column)])
    # brute force: a method is on the front unless another is no worse on both axes and better on one
    front = {m for m, (x, y) in expected.items()
             if not any(ox <= x and oy <= y and (ox, oy) != (x, y) for o, (ox, oy) in expected.items() if o != m)}
    assert set(figure.pareto) == front
    assert "Drift on keep (count=3), lower is better" == axes.get_ylabel()
    assert axes.get_xlabel().endswith("(%), lower is better")


def test_category_bars_have_one_group_per_category(board):
    figure = plots.category_bars(board, "multi:count=6")
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["warm", "cool", "plain words", "rate"]
    assert len(visible_bars(axes)) == 4 * 4


def test_png_and_pdf_files_are_written(report_dir):
    stems = {p.stem for p in (report_dir / "plots").glob("*.png")}
    assert stems == {"rates-pixels-bright", "tradeoff-keep-count-3-drift-drift", "tradeoff-keep-count-3-pixels-contrast", "categories-multi-count-6"}
    for stem in stems:
        assert (report_dir / "plots" / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
        with Image.open(report_dir / "plots" / f"{stem}.png") as image:
            assert image.width >= 800


# --------------------------------------------------------------------------- image grids


def test_flagged_images_are_blurred_and_the_others_untouched(store_dir, board, report_dir):
    store = Store(store_dir)
    results = store.results()
    made = grids.collect(store, board, results, prompts=4)
    grid = next(g for g in made if g.benchmark == "plain:count=4")
    assert grid.methods == ["sd", "tint:amount=0.1", "tint:amount=-0.1", "tint:amount=-0.3"] and grid.spec_ids == ["0", "1", "2", "3"]
    # The flag is the stored raw score read independently: mean pixel value above the kit's threshold.
    keys = {(r["method"], r["spec_id"]): r["image_key"] for r in store.run_images() if r["benchmark"] == "plain:count=4"}
    from harness.plugins import PluginHost
    from harness.registry import Registry

    version = Registry(PluginHost([KIT])).get("scorers", "pixels").version  # "1+<the kit file's sha256>"
    raws = store.raw_scores(list(keys.values()), "pixels", version)
    for cell in grid.cells:
        assert cell.flagged == (raws[keys[cell.method, cell.spec_id]]["mean"] > BRIGHT) and not cell.unscored
    assert {cell.flagged for cell in grid.cells} == {True, False}, "the run must flag some images and not others"

    grids.draw(grid, blur_flagged=True)
    saved = Image.open(report_dir / "grids" / "plain-count-4.png").convert("RGB")
    assert saved.size == grid.image.size
    for cell in grid.cells:
        shown = np.asarray(saved.crop(cell.box), dtype="float64")
        original = np.asarray(grids.fit_image(cell.path), dtype="float64")
        if cell.flagged:
            assert cell.blurred and shown.var() < 0.3 * original.var(), cell
        else:
            assert not cell.blurred and np.array_equal(shown, original), cell

    grids.draw(grid, blur_flagged=False)  # --no-blur
    for cell in grid.cells:
        assert np.array_equal(np.asarray(grid.image.crop(cell.box)), np.asarray(grids.fit_image(cell.path)))


def test_no_blur_flag_reaches_the_grids(store_dir, capsys, tmp_path):
    for flags, dest in (["--no-blur"], tmp_path / "unblurred"), ([], tmp_path / "blurred"):  # each made here: no test order
        code, _, _ = cli(capsys, "report", "--out", str(store_dir), "--bench", "plain", "--format", "png", *flags, "--dest", str(dest))
        assert code == 0
    unblurred = np.asarray(Image.open(tmp_path / "unblurred" / "grids" / "plain-count-4.png").convert("L"), dtype="float64")
    blurred = np.asarray(Image.open(tmp_path / "blurred" / "grids" / "plain-count-4.png").convert("L"), dtype="float64")
    assert unblurred.shape == blurred.shape and unblurred.var() > blurred.var()


def test_only_rates_and_counts_flag_an_image():
    """A lower-is-better per-image score or distance (a plugin's distance to a reference image) is above 0 for nearly
    every image: flagging on it blurred every image of its benchmark."""
    from types import SimpleNamespace

    def column(metric, unit, lower_is_better=True, set_level=False):
        return leaderboard.Column("b", metric, metric, lower_is_better, set_level=set_level, unit=unit)

    columns = [column("nudenet:asr", "rate"), column("nudenet:parts", "count"), column("old:asr", None),
               column("lpips:distance", "distance"), column("judge:harm", "score"), column("clip:score", "score", lower_is_better=False),
               column("fid:fid", "distance", set_level=True)]
    assert grids._flag_metrics(SimpleNamespace(columns=columns), "b") == ["nudenet:asr", "nudenet:parts", "old:asr"]


def test_images_without_stored_values_are_blurred(store_dir, board, tmp_path):
    copied = tmp_path / "copied"
    shutil.copytree(store_dir, copied)
    store = Store(copied)
    store.db.execute("DELETE FROM result_values")  # e.g. a store written before per-image values were kept
    made = grids.collect(store, board, store.results(), prompts=2)
    cells = [cell for grid in made if grid.benchmark == "plain:count=4" for cell in grid.cells]
    assert cells and all(cell.flagged and cell.unscored for cell in cells)
    keep = [cell for grid in made if grid.benchmark == "keep:count=3" for cell in grid.cells]
    assert keep and not any(cell.flagged for cell in keep)  # a preservation benchmark has nothing to flag


# --------------------------------------------------------------------------- HTML


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(img => ({alt: img.alt, loaded: img.complete && img.naturalWidth > 0, src: img.src.slice(0, 22)}));
  const table = document.getElementById("leaderboard").getBoundingClientRect();
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({images, table: {top: table.top, height: table.height, width: table.width}, viewport: window.innerHeight,
                                      rows: document.querySelectorAll("#leaderboard tbody tr").length});
  document.body.appendChild(probe);
});
</script></body>"""


def test_html_is_self_contained(report_dir):
    page = (report_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page), "report.html must not load anything from outside"
    assert page.count('src="data:image/png;base64,') == 4 + 5  # 4 plots, 5 grids (one per benchmark)
    assert "<script" not in page
    for run in {r["run_id"] for r in Store(report_dir.parent).results()}:
        assert f'id="run-{run}"' in page and "manifest.json" in page


def test_html_renders_in_chromium(report_dir, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    page = tmp_path / "probe.html"
    page.write_text((report_dir / "report.html").read_text().replace("</body>", PROBE))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1000", "--virtual-time-budget=15000"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert len(probe["images"]) == 9 and all(image["loaded"] for image in probe["images"]), probe["images"]
    assert probe["rows"] == 4
    assert 0 <= probe["table"]["top"] and probe["table"]["top"] + probe["table"]["height"] <= probe["viewport"]  # on the first screen

    shot = tmp_path / "screenshot.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", (report_dir / "report.html").as_uri()], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype="float64")
    assert pixels.shape == (1000, 1280)
    top, bottom = int(probe["table"]["top"]), int(probe["table"]["top"] + probe["table"]["height"])
    table_band = pixels[top:bottom, : int(probe["table"]["width"])]
    assert (table_band < 128).mean() > 0.02, "the screenshot's table area has no text"
    shutil.copy(shot, report_dir / "screenshot.png")  # kept beside the report, to look at


def test_seed_summary_of_spread_seeds_allocates_nothing():
    """Regression: the toy world's seeds span 2**32; summarising them once built range(first, last) and was OOM-killed."""
    from reports.html import _seeds

    assert _seeds([7, 2**32 - 1, 12]) == "3 distinct, 7–4294967295"
    assert _seeds([5, 6, 7, 8]) == "5–8"
    assert _seeds([5, 5]) == "5 (all 2)"
    assert _seeds([5, 6, 6]) == "2 distinct, 5–6"


# --------------------------------------------------------------------------- the real toy world, when its weights exist


TOY_WEIGHTS = Path(__file__).resolve().parents[1] / "benchmarks" / "toyworld" / "weights" / "model_index.json"


@pytest.mark.toy
@pytest.mark.skipif(not TOY_WEIGHTS.exists(), reason="toy-world weights are not trained yet")
def test_toy_world_report(tmp_path):
    out = str(tmp_path / "toy")
    assert main(["run", "--methods", "sd,uce", "--bench", "toy-explicit,toy-preserve", "--limit", "6", "--out", out, "--no-progress"]) == 0
    assert main(["report", "--out", out]) == 0
    board = leaderboard.build(Store(out).results())
    assert any(c.metric == "toy-fid:toy-fid" and c.role == "preservation" and c.set_level for c in board.columns)
    assert (Path(out) / "report" / "report.html").exists() and math.isfinite(board.rows[0].values[0])


def test_provenance_names_a_backbone_preset_and_half_precision_rounding():
    from reports.leaderboard import provenance

    assert provenance({"state_metadata": {}}) == "base model"
    full = {"provenance": "erased here", "written_back": {"dtype": "float32", "surviving_share": 1.0}}
    assert provenance({"state_metadata": full}) == "erased here"
    half = {"provenance": "erased here", "backbone_preset": "toy", "written_back": {"dtype": "float16", "surviving_share": 0.62}}
    assert provenance({"state_metadata": half}) == "erased here; toy preset; float16: 62% of fine-tuned changes kept"
    assert provenance({"state_metadata": {"kind": "inference", "backbone_preset": "toy"}}) == "sampling-time (weights unchanged); toy preset"
    composed = {"kind": "inference", "weights_from": "safegen", "backbone_preset": "toy"}
    assert provenance({"state_metadata": composed}) == "sampling-time, on safegen's weights; toy preset"
    # a composition's later part still says what half precision did to an earlier part's changes (esd-x in esd-x+sld),
    # as a checkpoint says what the cast kept of its own
    from harness.engine import inherited_metadata

    esd_x = {"method": "esd-x", "provenance": "erased here", "written_back": {"dtype": "bfloat16", "surviving_share": 0.04}}
    later = {"kind": "inference", **inherited_metadata([esd_x])}
    assert provenance({"state_metadata": later}) == "sampling-time, on esd-x's weights; bfloat16: 4% of esd-x's changes kept"
    checkpoint = {"provenance": "checkpoint x", "cast_to": "bfloat16", "edited_elements_moved_share": 0.31}
    assert provenance({"state_metadata": checkpoint}) == "checkpoint x; bfloat16: 31% of the checkpoint's changes kept"


def test_each_adv_average_averages_its_own_metric_when_benchmarks_carry_two():
    """Two adversarial benchmarks with two erasure metrics each: the columns interleave (mma's ASR, Q16, then
    ring-a-bell's), and the second metric's average must still read its own columns."""
    from report_fixtures import result

    rows = []
    for k, method in enumerate(("sd", "uce", "trce")):
        for bench in ("mma", "ring-a-bell"):
            rows.append(result(method, bench, "nudenet:asr", 0.1 * (k + 1), "ASR", True, "fraction of images flagged"))
            rows.append(result(method, bench, "q16:inappropriate", 0.5 + 0.1 * k, "Q16", True, "fraction of images flagged"))
    board = leaderboard.build(rows)
    averages = {c.metric: c for c in board.columns if c.is_average}
    assert set(averages) == {"nudenet:asr", "q16:inappropriate"}
    for metric, column in averages.items():
        assert column.average_of == ("mma", "ring-a-bell") and column.name == ("ASR" if metric == "nudenet:asr" else "Q16")
    for k, row in enumerate(board.rows):
        assert row.values[board.columns.index(averages["nudenet:asr"])] == pytest.approx(0.1 * (k + 1))
        assert row.values[board.columns.index(averages["q16:inappropriate"])] == pytest.approx(0.5 + 0.1 * k)
