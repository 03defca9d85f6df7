"""What a reader sees in the exported report: plots that stay readable with long method labels, and the other
outputs (HTML, CSV, JSON, LaTeX, grids) built from synthetic boards and small stores, without running a model."""

import dataclasses
import json
import re

import matplotlib
import pytest
from report_fixtures import per_image_values, result, toy_results

from reports import leaderboard, plots

matplotlib.use("Agg")

# A parameter sweep, written in the grammar the README advertises: the labels are longer than the figure is wide.
SWEEP = (
    "sd",
    "uce:erase_scale=2,lamb=0.1,preserve_scale=0.3,tokens=last",
    "uce:edit_keys=false,erase_scale=2,lamb=0.1,preserve_scale=0.3,tokens=block",
    "rece:erase_scale=2,lamb=0.1,preserve_scale=0.3,tokens=last,epochs=3",
)


@pytest.fixture(scope="module")
def sweep_board():
    results = toy_results(methods=SWEEP)
    return leaderboard.build(results, values=per_image_values(results))


def laid_out(figure):
    """The figure's and its first axes' boxes in pixels, after the layout engine has run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.draw_without_rendering()
    return figure.bbox, figure.axes[0].get_window_extent()


def inside(box, frame, slack=2.0) -> bool:
    return box.x0 >= frame.x0 - slack and box.y0 >= frame.y0 - slack and box.x1 <= frame.x1 + slack and box.y1 <= frame.y1 + slack


@pytest.mark.parametrize("which", ["rates", "tradeoff"])
def test_long_method_labels_leave_the_axes_a_usable_size(sweep_board, which):
    if which == "rates":
        figure = plots.rate_bars(sweep_board, "toy:toy-asr")
    else:
        figure = plots.tradeoff(sweep_board, next(c for c in sweep_board.columns if c.metric == "toy:toy-acc"))
    frame, axes = laid_out(figure)
    assert axes.width >= 0.5 * frame.width and axes.height >= 0.5 * frame.height, (axes, frame)
    legends = [*figure.legends, *(a.get_legend() for a in figure.axes if a.get_legend())]
    assert legends
    for legend in legends:  # the legend is not cut off at the figure's edges
        assert inside(legend.get_window_extent(), frame), (legend.get_window_extent(), frame)
    for text in figure.axes[0].texts:  # nor are the points' names
        assert inside(text.get_window_extent(), frame), text.get_text()


def test_long_benchmark_labels_wrap_under_their_bars_and_leave_the_axes_a_usable_size():
    long = {"toy-explicit": "csv:path=/home/researcher/prompt-sets/nudity_adversarial_v3_final.csv,metrics=toy:toy-asr",
            "toy-implicit": "csv:path=/home/researcher/prompt-sets/nudity_implicit_heldout_v2.csv,metrics=toy:toy-asr"}
    results = [dataclasses.replace(row, benchmark=long[row.benchmark], benchmark_display="") if row.benchmark in long else row
               for row in toy_results()]
    board = leaderboard.build(results, values=per_image_values(results))
    figure = plots.rate_bars(board, "toy:toy-asr")
    frame, axes = laid_out(figure)
    assert axes.width >= 0.5 * frame.width and axes.height >= 0.4 * frame.height, (axes, frame)
    ticks = [label.get_text() for label in figure.axes[0].get_xticklabels()]
    lines = [line for tick in ticks for line in tick.split("\n")]
    # Broken after commas, spaces and slashes: no line longer than 28 characters but a piece that has no such place.
    assert len(lines) > len(ticks) and all(len(line) <= 28 or not re.search(r"[, /].", line) for line in lines), lines


# --------------------------------------------------------------------------- trade-off with partial results


def partial_board():
    """sd and uce on every toy benchmark; uce:lamb=0.1 on toy-explicit and toy-preserve only (say, a later quick run)."""
    results = [r for r in toy_results(methods=("sd", "uce", "uce:lamb=0.1"))
               if r.method != "uce:lamb=0.1" or r.benchmark in ("toy-explicit", "toy-preserve")]
    return leaderboard.build(results, values=per_image_values(results))


def test_tradeoff_places_every_method_on_the_benchmarks_they_share():
    board = partial_board()
    accuracy = next(c for c in board.columns if c.metric == "toy:toy-acc")
    figure = plots.tradeoff(board, accuracy)
    assert set(figure.points) == {"sd", "uce", "uce:lamb=0.1"}
    assert [c.benchmark for c in figure.columns] == ["toy-explicit"] and figure.left_out == {}
    assert figure.axes[0].get_xlabel() == "ASR on Explicit (%), lower is better"
    caption = next(caption for stem, caption, _ in plots.figures(board) if stem == "tradeoff-toy-preserve-toy-toy-acc")
    assert "leaves out Synonym, Implicit, Held-out implicit" in caption


def test_tradeoff_names_the_methods_it_leaves_out_and_never_warns(recwarn):
    # uce:lamb=0.1 shares no erasure benchmark with uce: the larger group is plotted, the other named.
    results = [r for r in toy_results(methods=("sd", "uce", "uce:lamb=0.1"))
               if r.method != "uce:lamb=0.1" or r.benchmark == "toy-preserve"]
    results += [dataclasses.replace(r, benchmark="other", benchmark_display="Other")
                for r in toy_results(methods=("sd", "uce:lamb=0.1")) if r.benchmark == "toy-explicit" and r.metric == "toy:toy-asr"]
    board = leaderboard.build(results, values=per_image_values(results))
    made = {stem: (caption, figure) for stem, caption, figure in plots.figures(board)}
    caption, figure = made["tradeoff-toy-preserve-toy-toy-acc"]
    assert set(figure.points) == {"sd", "uce"} and set(figure.left_out) == {"uce:lamb=0.1"}
    assert "uce:lamb=0.1 is left out" in caption and "Explicit" in caption
    caption, figure = made["tradeoff-toy-preserve-toy-fid-toy-fid"]  # the base model is no point on FID; uce still is
    assert set(figure.points) == {"uce"}
    assert not [w for w in recwarn if "legend" in str(w.message)]


def test_a_tradeoff_with_no_point_is_no_plot_and_says_so(recwarn):
    results = [r for r in toy_results(methods=("sd", "uce")) if r.method == "sd" or r.benchmark == "toy-preserve"]
    board = leaderboard.build(results, values=per_image_values(results))
    notes = []
    stems = [stem for stem, _, _ in plots.figures(board, notes)]
    assert "tradeoff-toy-preserve-toy-fid-toy-fid" not in stems
    assert any("FID" in note and "uce" in note for note in notes), notes
    assert not [w for w in recwarn if "legend" in str(w.message)]


def test_an_interval_a_rounding_error_past_its_point_draws(monkeypatch):
    """A mean of benchmark intervals at 0% can start at 1e-17: matplotlib refuses a negative error bar length."""
    from reports.uncertainty import Interval

    board = partial_board()
    monkeypatch.setattr(plots, "erasure_average", lambda *args: 0.0)
    monkeypatch.setattr(plots, "erasure_average_interval", lambda *args: Interval(1e-17, 0.16, "mean of benchmarks"))
    accuracy = next(c for c in board.columns if c.metric == "toy:toy-acc")
    assert plots.tradeoff(board, accuracy).points["uce"][0] == 0.0


# --------------------------------------------------------------------------- a small store, without running a model


def small_store(root, methods=("sd", "uce"), finished=True, truncated=None):
    """A store holding ``toy_results`` for ``methods`` (one run, ``run-a``) and their per-image values; no images."""
    from harness.store import Store

    store = Store(root)
    store.start_run("run-a", {})
    for method in methods:
        if method != "sd":
            store.add_model_state(method, "toy", method, {}, "red", None, {"provenance": "erased here"})
    results = toy_results(methods=methods)
    values = per_image_values(results)
    for r in results:
        add_result(store, r, values.get(("run-paper", r.method, r.benchmark, r.metric), []))
    store.write_manifest("run-a", {"truncated_prompts": truncated or {}})
    if finished:
        store.finish_run("run-a")
    return store


def add_result(store, r, values):
    """Store result ``r`` (a ``report_fixtures.result``) in run ``run-a``, with its per-image ``values`` in their order."""
    store.add_result(run_id="run-a", method=r.method, benchmark=r.benchmark, metric=r.metric, value=r.value, n=r.n,
                     lower_is_better=r.lower_is_better, name=r.name, description=r.description, unit=r.unit,
                     adversarial=r.adversarial, needs_reference=r.needs_reference, method_display=r.method_display,
                     benchmark_display=r.benchmark_display, metric_position=r.metric_position,
                     model_state=r.model_state, unet_evals_per_image=r.unet_evals_per_image)
    store.set_result_values("run-a", r.method, r.benchmark, r.metric,
                            [(v["spec_id"], v["prompt_id"], v["seed"], v["image_key"], v["value"]) for v in values])


def write_report(store, dest, formats=("md", "csv", "json", "latex", "html")):
    from reports import report

    return report.write(store, store.results(), dest, formats)


def test_caveats_reach_the_html_json_and_latex(tmp_path):
    store = small_store(tmp_path / "store", finished=False, truncated={"toy-explicit": {"count": 2, "of": 100, "limit": 32}})
    dest = tmp_path / "report"
    write_report(store, dest)
    for name in ("leaderboard.md", "report.html", "leaderboard.json", "table1.tex"):
        text = (dest / name).read_text()
        assert "Truncated: 2 of 100 prompts of toy-explicit" in text and "Unfinished: run run-a" in text, name
    page = (dest / "report.html").read_text()
    # under the leaderboard, before the next section
    assert page.index('id="leaderboard"') < page.index("Truncated: 2 of 100") < page.index('<section id="section-metrics"')
    document = json.loads((dest / "leaderboard.json").read_text())
    assert len(document["caveats"]) == 2 and document["caveats"][1].startswith("Truncated: 2 of 100")
    table = (dest / "table1.tex").read_text()
    assert all(line.startswith("%") for line in table.splitlines() if "Truncated" in line or "Unfinished" in line)


def test_complete_results_carry_no_caveats(tmp_path):
    dest = tmp_path / "report"
    write_report(small_store(tmp_path / "store"), dest, formats=("json", "html"))
    assert json.loads((dest / "leaderboard.json").read_text())["caveats"] == []
    assert 'class="caveats"' not in (dest / "report.html").read_text()


def test_the_base_models_fid_is_exported_empty_and_its_row_is_marked(tmp_path):
    import csv

    dest = tmp_path / "report"
    write_report(small_store(tmp_path / "store"), dest, formats=("csv", "json"))
    fid = "toy-preserve/toy-fid:toy-fid"
    table = {row["method"]: row for row in csv.DictReader((dest / "leaderboard.csv").open(newline=""))}
    assert table["sd"][fid] == "" and float(table["uce"][fid]) > 0
    assert table["sd"]["base_model"] == "1" and table["uce"]["base_model"] == "0"
    long = list(csv.DictReader((dest / "results.csv").open(newline="")))
    sd_fid = next(r for r in long if r["method"] == "sd" and r["metric"] == "toy-fid:toy-fid")
    assert sd_fid["value"] == "" and sd_fid["base_model"] == "1"
    assert {r["base_model"] for r in long if r["method"] == "uce"} == {"0"}
    assert next(r for r in long if r["method"] == "sd" and r["metric"] == "toy:toy-acc")["value"] != ""  # only set-level scores
    rows = {row["method"]: row for row in json.loads((dest / "leaderboard.json").read_text())["rows"]}
    assert rows["sd"]["values"][fid] is None and rows["uce"]["values"][fid] > 0


def test_leaderboard_csv_carries_each_cells_n_and_interval(tmp_path):
    import csv

    dest = tmp_path / "report"
    write_report(small_store(tmp_path / "store"), dest, formats=("csv",))
    table = {row["method"]: row for row in csv.DictReader((dest / "leaderboard.csv").open(newline=""))}
    asr = "toy-explicit/toy:toy-asr"
    uce = table["uce"]
    assert uce[f"{asr} n"] == "100" and float(uce[f"{asr} ci_low"]) < float(uce[asr]) < float(uce[f"{asr} ci_high"])
    fid = "toy-preserve/toy-fid:toy-fid"
    assert uce[f"{fid} n"] == "100" and uce[f"{fid} ci_low"] == uce[f"{fid} ci_high"] == ""  # set-level: no interval
    long = {(r["method"], r["benchmark"], r["metric"]): r for r in csv.DictReader((dest / "results.csv").open(newline=""))}
    assert float(uce[f"{asr} ci_low"]) == float(long["uce", "toy-explicit", "toy:toy-asr"]["ci_low"])  # one computation


# --------------------------------------------------------------------------- grids


def seeded_store(root, per_image=True):
    """toy-explicit with prompts "b", "a", "c" in that (the benchmark's) order, two seeds each, for sd and uce."""
    from PIL import Image

    from harness.store import Store

    store = Store(root)
    store.start_run("run-a", {})
    store.add_model_state("uce", "toy", "uce", {}, "red", None, {"provenance": "erased here"})
    specs = []
    for prompt, seed in (("b", 30), ("a", 10), ("c", 20)):
        for k in range(2):
            labels = {"seeds_of": prompt}
            specs.append({"id": prompt if k == 0 else f"{prompt}#seed{k}", "prompt": f"a photo of {prompt}", "seed": seed + 1000 * k,
                          "labels": labels})
    for method in ("sd", "uce"):
        keys = []
        for spec in specs:
            key = f"{method}{spec['id']}".replace("#", "-")
            store.image_path(key).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (200, 30, 30)).save(store.image_path(key))
            keys.append(key)
        store.add_images([(key, None, spec, 2) for key, spec in zip(keys, specs)])
        store.link_run_images("run-a", method, "toy-explicit", [(spec["id"], key) for spec, key in zip(specs, keys)])
        values = [{"spec_id": spec["id"], "prompt_id": spec["labels"]["seeds_of"], "seed": spec["seed"], "image_key": key, "value": 0.0}
                  for spec, key in zip(specs, keys)]
        add_result(store, result(method, "toy-explicit", "toy:toy-asr", 0.0, "ASR", True, "fraction of images red", n=6),
                   values if per_image else [])
    store.finish_run("run-a")
    return store


def test_grid_prompts_count_prompts_in_the_benchmarks_order_with_every_seed(tmp_path):
    from reports import grids, report

    store = seeded_store(tmp_path / "store")
    results = store.results()
    board = leaderboard.build(results, values=store.result_values())
    (grid,) = grids.collect(store, board, results, prompts=2)
    assert grid.prompts == ["b", "a"] and grid.spec_ids == ["b", "b#seed1", "a", "a#seed1"]
    assert [grid.column_label(sid) for sid in grid.spec_ids] == ["#b seed 30", "#b seed 1030", "#a seed 10", "#a seed 1010"]
    caption = report.grid_caption(grids.draw(grid), blur=True)
    assert "the first 2 prompts of toy-explicit, in the benchmark's order" in caption and "2 seeds" in caption


def test_grid_without_a_stored_order_says_it_goes_by_prompt_id(tmp_path):
    from reports import grids, report

    store = seeded_store(tmp_path / "store", per_image=False)
    results = store.results()
    (grid,) = grids.collect(store, leaderboard.build(results, values=store.result_values()), results, prompts=2)
    assert grid.spec_ids == ["a", "a#seed1", "b", "b#seed1"]
    assert "by prompt id" in report.grid_caption(grid, blur=True)


def test_a_rerun_removes_its_own_stale_tables_and_nothing_else(tmp_path):
    dest = tmp_path / "report"
    dest.mkdir()
    for name in ("table1-secondary.tex", "table2-i2p.tex", "my-notes.tex", "table3.tex"):
        (dest / name).write_text("% from an earlier report, or the user's own\n")
    from reports import report

    store = small_store(tmp_path / "store")
    primary_only = [r for r in store.results() if r.metric != "toy:toy-asr-any"]  # this time no secondary table
    report.write(store, primary_only, dest, ("latex",))
    assert sorted(p.name for p in dest.iterdir()) == ["my-notes.tex", "table1.tex", "table3.tex", "tables.tex"]


# --------------------------------------------------------------------------- HTML


def test_html_ids_are_unique_safe_and_every_anchor_lands():
    import re
    from html.parser import HTMLParser

    from reports import html

    class Anchors(HTMLParser):
        def __init__(self):
            super().__init__()
            self.ids, self.links = [], []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if "id" in attrs:
                self.ids.append(attrs["id"])
            if attrs.get("href", "").startswith("#"):
                self.links.append(attrs["href"][1:])

    results = toy_results()
    board = leaderboard.build(results, values=per_image_values(results))
    grids = [("csv:path=/my data/p&q.csv", "one", b"png"), ("csv:path=/my-data/p&q.csv", "two", b"png")]  # same slug
    page = html.render(board, [("rates-toy-toy-asr", "bars", b"png")], grids, {"run-paper": None})
    parser = Anchors()
    parser.feed(page)
    assert len(parser.ids) == len(set(parser.ids)), sorted(parser.ids)
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", i) for i in parser.ids), parser.ids
    assert parser.links and set(parser.links) <= set(parser.ids)
    assert sum(i.startswith("grid-") for i in parser.ids) == 2


def test_html_lists_each_grid_columns_whole_prompt_as_text(tmp_path):
    """The grid image wraps a prompt to three lines (and draws a script no installed font has as boxes): the HTML
    report lists every column's label and whole prompt as text under the grid."""
    from html.parser import HTMLParser

    from reports import html, report

    store = seeded_store(tmp_path / "store")
    report.write(store, store.results(), tmp_path / "report", ("html",), grid_prompts=2)

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.inside = [], False

        def handle_starttag(self, tag, attrs):
            self.inside = self.inside or (tag == "details" and ("class", "prompts") in attrs)
            if self.inside and tag == "tr":
                self.rows.append([])

        def handle_endtag(self, tag):
            self.inside = self.inside and tag != "details"

        def handle_data(self, data):
            if self.inside and self.rows and data.strip():
                self.rows[-1].append(data)

    parser = Cells()
    parser.feed((tmp_path / "report" / "report.html").read_text(encoding="utf-8"))
    assert parser.rows == [["#b seed 30", "a photo of b"], ["#b seed 1030", "a photo of b"],
                           ["#a seed 10", "a photo of a"], ["#a seed 1010", "a photo of a"]]
    long_cjk = "一幅梵高风格的星空 " * 20 + "<b>&"
    listed = html.grid_prompts([("#7", long_cjk), ("#8", "")])
    assert html._e(long_cjk) in listed and "<b>&" not in listed  # whole, and escaped
    assert "(empty prompt)" in listed


def test_grid_text_draws_each_character_in_a_font_that_has_it():
    """Grid images draw a multilingual prompt's CJK in an installed font that has those glyphs (PIL has no per-glyph
    fallback: DejaVu alone draws boxes), the Latin around it in DejaVu, all on one baseline; the width measured for
    wrapping is the width drawn."""
    from PIL import Image, ImageDraw

    from reports.grids import Typeface, _codepoints, _fallback_face

    if _fallback_face(ord("猫")) is None:
        pytest.skip("no installed font has CJK glyphs (e.g. Debian's fonts-droid-fallback or fonts-noto-cjk)")
    typeface = Typeface(13)
    text = "a photo of 一只猫 on a mat"
    runs = typeface.runs(text)
    assert "".join(run for _, run in runs) == text
    assert [run for _, run in runs] == ["a photo of ", "一只猫", " on a mat"]
    assert runs[0][0] == runs[2][0] == typeface.primary and runs[1][0] != typeface.primary
    assert all(ord(c) in _codepoints(*face) for face, run in runs for c in run if not c.isspace())
    assert all(ord(c) not in _codepoints(*typeface.primary) for c in "一只猫")  # the box the fallback replaces

    canvas = Image.new("L", (400, 40), 255)
    typeface.draw(ImageDraw.Draw(canvas), (0, 10), text, fill=0)
    inked = [x for x in range(canvas.width) if any(canvas.getpixel((x, y)) < 128 for y in range(canvas.height))]
    assert abs((inked[-1] + 1) - typeface.getlength(text)) <= 2  # wrapping measures what drawing draws
    plain = Typeface(13)
    assert plain.getlength("a mat") == plain.font(plain.primary).getlength("a mat")  # Latin alone: DejaVu, unchanged


def test_bitmap_only_and_unreadable_fonts_are_never_a_grid_fallback(tmp_path):
    """A colour-emoji font holds fixed-size bitmaps that PIL refuses to open at the grid's sizes: it must not be
    chosen for a character (the report would fail on an emoji prompt); a face PIL cannot open draws DejaVu instead."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    from reports.grids import Typeface, _codepoints

    def font_file(name: str, outlines: bool) -> str:
        builder = FontBuilder(1000, isTTF=True)
        builder.setupGlyphOrder([".notdef", "smile"])
        builder.setupCharacterMap({0x1F600: "smile"})
        pen = TTGlyphPen(None)
        pen.moveTo((0, 0)), pen.lineTo((500, 0)), pen.lineTo((500, 500)), pen.closePath()
        builder.setupGlyf({".notdef": TTGlyphPen(None).glyph(), "smile": pen.glyph()})
        builder.setupHorizontalMetrics({".notdef": (500, 0), "smile": (500, 0)})
        builder.setupHorizontalHeader(ascent=800, descent=-200)
        builder.setupNameTable({"familyName": name, "styleName": "Regular"})
        builder.setupOS2(), builder.setupPost()
        if not outlines:  # what a bitmap-only (CBDT/sbix) font lacks: outline glyphs
            del builder.font["glyf"], builder.font["loca"]
        path = str(tmp_path / f"{name}.ttf")
        builder.save(path)
        return path

    assert 0x1F600 in _codepoints(font_file("Outlined", outlines=True), 0)  # the same font with outlines is a candidate
    assert _codepoints(font_file("BitmapOnly", outlines=False), 0) == frozenset()
    typeface = Typeface(13)
    assert typeface.font((str(tmp_path / "not-a-font.ttf"), 0)) is typeface.font(typeface.primary)


def test_terminal_labels_cut_to_fit_stay_distinct_and_are_given_whole(sweep_board):
    """A sweep's labels share their start (and some their end): cut alike, two rows could not be told apart."""
    text = leaderboard.to_terminal(sweep_board, width=200)
    table, _, notes = text.partition("\n\n")
    rows = [line.split("  ")[0].strip() for line in table.splitlines()[3:]]
    assert len(rows) == len(set(rows)) == len(sweep_board.rows)
    given = dict(line.split(" = ", 1) for line in notes.splitlines() if " = " in line)
    for shown, row in zip(rows, sweep_board.rows):
        assert len(shown) <= 28
        assert shown == row.method or given[shown] == row.method


def test_clip_labels_keeps_start_and_end_and_numbers_what_still_collides():
    same_ends = ["uce:erase_scale=2,lamb=0.1,preserve_scale=0.3,tokens=last",
                 "uce:erase_scale=2,lamb=0.5,preserve_scale=0.3,tokens=last"]
    clipped = leaderboard.clip_labels([*same_ends, "sd"], 20)
    assert clipped["sd"] == "sd"
    assert len(set(clipped.values())) == 3 and all(len(text) <= 20 for text in clipped.values())
    assert clipped[same_ends[0]].startswith("uce:") and clipped[same_ends[0]].endswith("…1")
    path = "csv:metrics=nudenet:asr,path=/data/sets/adversarial_v3.csv"
    assert leaderboard.clip_labels([path], 24)[path].endswith("arial_v3.csv")  # the file name's end survives


def test_plain_tables_name_a_selection_the_user_named_or_that_names_a_file_by_its_display_name():
    """``checkpoint:…,label=NAME`` and ``csv:path=…`` are shown as "NAME" and "CSV file.csv" in the terminal and
    Markdown tables (as in HTML and LaTeX), the typed label given whole under the terminal table; a name that would
    show two rows alike (a checkpoint labelled "sd" beside ``sd``) leaves both as typed."""
    from report_fixtures import _registry

    from harness.runner import display_label

    labelled = "checkpoint:label=mine-uce,path=/scratch/a/long/folder/erased-uce"
    same_as_sd = "checkpoint:label=sd,path=/scratch/x"
    csv_label = "csv:path=/data/sets/adversarial_v3.csv"
    results = toy_results(methods=("sd", "uce"))
    uce = [r for r in results if r.method == "uce"]
    results += [dataclasses.replace(r, method=labelled, method_display="mine-uce") for r in uce]
    results += [dataclasses.replace(r, method=same_as_sd, method_display="sd") for r in uce]
    csv_display = display_label(_registry(), "benchmarks", csv_label)
    assert csv_display.endswith("adversarial_v3.csv") and "/data" not in csv_display
    results += [dataclasses.replace(r, benchmark=csv_label, benchmark_display=csv_display) for r in results if r.benchmark == "toy-explicit"]
    board = leaderboard.build(results)
    markdown = leaderboard.to_markdown(board)
    names = [line.split(" | ")[0].removeprefix("| ") for line in markdown.splitlines()[2:] if line.startswith("| ")]
    assert sorted(names) == sorted(["sd", "uce", "mine-uce", leaderboard._md_escape(same_as_sd)]), names
    assert leaderboard._md_escape(csv_display) in markdown.splitlines()[0] and "/data/sets" not in markdown.splitlines()[0]
    assert f"mine-uce = {leaderboard._md_escape(labelled)}" in markdown  # the typed selection under the table, to run it again
    # a CSV benchmark labelled like a built-in one beside it keeps both columns told apart (the typed labels)
    twin = "csv:label=toy-synonym,path=x.csv"
    clash = results + [dataclasses.replace(r, benchmark=twin, benchmark_display="toy-synonym") for r in results if r.benchmark == "toy-explicit"]
    header = leaderboard.to_markdown(leaderboard.build(clash)).splitlines()[0]
    assert leaderboard._md_escape(twin) in header and "| toy-synonym " in header
    text = leaderboard.to_terminal(board, width=400)
    table, _, notes = text.partition("\n\n")
    shown = [line.split("  ")[0].strip() for line in table.splitlines()[3:]]
    assert "mine-uce" in shown and "sd" in shown and "erased-uce" not in table and "/data/sets" not in table
    given = dict(line.split(" = ", 1) for line in notes.splitlines() if " = " in line)
    assert given["mine-uce"] == labelled and given[csv_display] == csv_label  # the typed labels, to rerun
