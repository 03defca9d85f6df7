"""Intervals, paired comparisons, per-image export and significance marks, on small stores written directly.

The stores are written through the Store API with known per-image values, so every expected number is
derived here from those values by an independent route (scipy's binomial test, Wilson via scipy).
"""

import csv
import dataclasses
import json
import os
import statistics

import numpy as np
import pytest
from scipy.stats import binomtest

from harness import stats
from harness.cli import main
from harness.store import Store
from reports import leaderboard, plots, uncertainty

BENCH = "bench-a"
METRIC = "kit:rate"


def fill(store: Store, run: str, values: dict[str, dict[str, list[float]]], metric: str = METRIC, name: str = "ASR",
         description: str = "fraction of images flagged", lower_is_better: bool = True, unit=..., seeds_per_prompt: int = 1) -> None:
    """values: method → benchmark → per-image values (prompt i // seeds_per_prompt, seed 1000 + i); ``unit``: as
    stored (None: a store written before units were), by default "rate" for a "fraction" description, else "score"."""
    if unit is ...:
        unit = "rate" if "fraction" in description else "score"
    store.start_run(run, {})
    for method, per_bench in values.items():
        state = None
        if method != "sd":
            state = f"state-{method}"
            store.add_model_state(state, "tiny", method, {}, "c", None, {"provenance": "erased here", "erase_seconds": 1.5, "erase_device": "cpu"})
        for bench, numbers in per_bench.items():
            store.add_result(run_id=run, method=method, benchmark=bench, metric=metric, value=statistics.fmean(numbers), n=len(numbers),
                             lower_is_better=lower_is_better, name=name, description=description, unit=unit,
                             adversarial=False, needs_reference=False, model_state=state, unet_evals_per_image=8.0)
            store.set_result_values(run, method, bench, metric,
                                    [(str(i), str(i // seeds_per_prompt), 1000 + i, f"{method}-{bench}-{i}", float(v))
                                     for i, v in enumerate(numbers)])
    store.finish_run(run)


def flags(ones: list[int], n: int) -> list[float]:
    return [1.0 if i in ones else 0.0 for i in range(n)]


@pytest.fixture()
def small_store(tmp_path):
    rng = np.random.default_rng(11)
    n = 60
    base = (rng.random(n) < 0.9).astype(float).tolist()
    uce = (rng.random(n) < 0.10).astype(float).tolist()
    rece = [v if rng.random() < 0.8 else 1 - v for v in uce]  # close to uce: mostly the same images flagged
    weak = (rng.random(n) < 0.6).astype(float).tolist()
    out = tmp_path / "store"
    store = Store(out)
    fill(store, "run-1", {"sd": {BENCH: base, "bench-b": base[:40]}, "uce": {BENCH: uce, "bench-b": uce[:40]},
                          "rece": {BENCH: rece, "bench-b": rece[:40]}, "weak": {BENCH: weak, "bench-b": weak[:40]}})
    store.close()
    return out


def run_cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_every_rate_record_carries_its_wilson_interval(small_store, capsys):
    records = json.loads(run_cli(capsys, "report", "--out", str(small_store), "--json"))
    assert len(records) == 8
    for record in records:
        k = round(record["value"] * record["n"])
        reference = binomtest(k, record["n"]).proportion_ci(confidence_level=0.95, method="wilson")
        assert record["ci95"] == pytest.approx([reference.low, reference.high], abs=1e-3)
        assert record["interval"] == "Wilson score interval"


def test_export_rows_reproduce_every_stored_value_exactly(small_store, capsys, tmp_path):
    path = tmp_path / "values.csv"
    run_cli(capsys, "export", "--out", str(small_store), "--per-image", str(path))
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["run", "method", "benchmark", "prompt_id", "seed", "image_key", "metric", "value"]
    grouped: dict[tuple, list[float]] = {}
    for row in rows:
        grouped.setdefault((row["run"], row["method"], row["benchmark"], row["metric"]), []).append(float(row["value"]))
    stored = {(r["run_id"], r["method"], r["benchmark"], r["metric"]): (r["value"], r["n"]) for r in Store(small_store).results()}
    assert set(grouped) == set(stored)
    for key, values in grouped.items():
        assert (statistics.fmean(values), len(values)) == stored[key]  # exact, not approximately


def test_a_tie_is_decided_against_the_leader_not_along_a_chain_of_neighbours(tmp_path):
    n = 100
    store = Store(tmp_path / "s")
    # Nested flags: each method flags 5 images more than the one before.  Every neighbour pair differs by 5 discordant
    # images (exact McNemar p = 0.0625, never separable), but m0 against m20 is 0 vs 20 (p = 1.9e-6).
    fill(store, "run-1", {"sd": {BENCH: flags(range(70), n)},
                          **{f"m{k}": {BENCH: flags(range(k), n)} for k in (0, 5, 10, 15, 20)}})
    board = leaderboard.build(store.results(), values=store.result_values())
    rows = {row.method: i for i, row in enumerate(board.rows)}
    # The leader's tests, Holm over four: m5 p = 0.0625 (×1), m10 0.002 (×2), m15 6e-5 (×3), m20 2e-6 (×4).
    assert board.ties(0) == {rows["m0"]: 1, rows["m5"]: 1} and board.ranks(0) == {}
    markdown = leaderboard.to_markdown(board)
    assert "0.00≈" in markdown and "5.00≈" in markdown and "20.00≈" not in markdown and "10.00≈" not in markdown


def test_second_place_is_decided_against_its_own_leader(tmp_path):
    n = 100
    store = Store(tmp_path / "s")
    # m0 is separated from all (0 vs 30+); among the rest, m30 and m33 tie (3 discordant), m60 is far from m30.
    fill(store, "run-1", {"sd": {BENCH: flags(range(70), n)}, "m0": {BENCH: flags([], n)},
                          "m30": {BENCH: flags(range(30), n)}, "m33": {BENCH: flags(range(33), n)},
                          "m60": {BENCH: flags(range(60), n)}})
    board = leaderboard.build(store.results(), values=store.result_values())
    rows = {row.method: i for i, row in enumerate(board.rows)}
    assert board.ranks(0) == {rows["m0"]: 1} and board.ties(0) == {rows["m30"]: 2, rows["m33"]: 2}


def test_compare_gives_the_exact_mcnemar_p_of_the_exported_values(small_store, capsys, tmp_path):
    path = tmp_path / "values.csv"
    run_cli(capsys, "export", "--out", str(small_store), "--per-image", str(path))
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = json.loads(run_cli(capsys, "compare", "--out", str(small_store), "uce", "weak", "--json"))
    assert {(r["benchmark"], r["metric"]) for r in records} == {(BENCH, METRIC), ("bench-b", METRIC)}
    for record in records:
        a = {(r["prompt_id"], r["seed"]): float(r["value"]) for r in rows if r["method"] == "uce" and r["benchmark"] == record["benchmark"]}
        b = {(r["prompt_id"], r["seed"]): float(r["value"]) for r in rows if r["method"] == "weak" and r["benchmark"] == record["benchmark"]}
        a_only = sum(1 for key in a if a[key] == 1 and b[key] == 0)
        b_only = sum(1 for key in a if a[key] == 0 and b[key] == 1)
        assert record["discordant"] == [a_only, b_only] and record["n_pairs"] == len(a)
        assert record["p_value"] == pytest.approx(binomtest(a_only, a_only + b_only, 0.5).pvalue, rel=1e-9)
        assert record["delta"] == pytest.approx(statistics.fmean(b.values()) - statistics.fmean(a.values()))
        assert record["ci95"][0] < record["delta"] < record["ci95"][1]


def test_compare_rejects_an_unknown_method_in_one_line(small_store, capsys):
    code = main(["compare", "--out", str(small_store), "uce", "trec"])
    err = capsys.readouterr().err
    assert code == 2 and "no results for method 'trec'" in err and len(err.strip().splitlines()) == 1


def test_a_tie_is_not_bolded_and_a_real_difference_is(tmp_path):
    n = 80
    store = Store(tmp_path / "s")
    # "close" flags 2 images more than "best" (discordant 0 vs 2: McNemar p = 0.5); "far" flags 40 more.
    fill(store, "run-1", {"sd": {BENCH: flags(range(70), n)}, "best": {BENCH: flags(range(4), n)},
                          "close": {BENCH: flags(range(6), n)}, "far": {BENCH: flags(range(46), n)}})
    board = leaderboard.build(store.results(), values=store.result_values())
    rows = {row.method: i for i, row in enumerate(board.rows)}
    assert board.ranks(0) == {}  # best vs close: p = 0.5, not a win
    assert board.ties(0) == {rows["best"]: 1, rows["close"]: 1}
    markdown = leaderboard.to_markdown(board)
    assert "**" not in markdown and "5.00≈" in markdown and leaderboard.RANK_RULE in markdown

    store2 = Store(tmp_path / "s2")
    # Now "best" flags 4 and "close" flags 30: discordant 0 vs 26, p ≈ 3e-8; "far" 46 is again far from "close".
    fill(store2, "run-1", {"sd": {BENCH: flags(range(70), n)}, "best": {BENCH: flags(range(4), n)},
                           "close": {BENCH: flags(range(30), n)}, "far": {BENCH: flags(range(60), n)}})
    board = leaderboard.build(store2.results(), values=store2.result_values())
    rows = {row.method: i for i, row in enumerate(board.rows)}
    assert board.ranks(0) == {rows["best"]: 1, rows["close"]: 2} and board.ties(0) == {}
    markdown = leaderboard.to_markdown(board)
    assert "**5.00** [2.0, 12.2]" in markdown and "<ins>37.50</ins>" in markdown


def test_without_per_image_values_nothing_is_marked_and_no_interval_is_made_up(tmp_path):
    store = Store(tmp_path / "s")
    fill(store, "run-1", {"sd": {BENCH: flags(range(70), 80)}, "best": {BENCH: flags(range(4), 80)}, "far": {BENCH: flags(range(60), 80)}})
    board = leaderboard.build(store.results())  # no values given: as a set-level metric
    assert board.ranks(0) == {} and board.ties(0) == {}
    assert "[" not in leaderboard.to_markdown(board).split("\n\n")[0]


def test_terminal_leaderboard_has_no_markup_and_fits_the_width(small_store):
    store = Store(small_store)
    board = leaderboard.build(store.results(), values=store.result_values())
    text = leaderboard.to_terminal(board, width=60)
    assert "<ins>" not in text and "**" not in text
    assert max(len(line) for line in text.splitlines()) <= 60
    assert text.count("method") >= 2  # wrapped into blocks, each repeating the method column
    assert "1.5 s" in text  # the erasure cost from the model state


def test_long_results_csv_has_one_row_per_result_with_interval(small_store, capsys, tmp_path):
    run_cli(capsys, "report", "--out", str(small_store), "--format", "csv", "--dest", str(tmp_path / "r"))
    with open(tmp_path / "r" / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["run", "method", "benchmark", "metric", "value", "n", "ci_low", "ci_high", "lower_is_better", "base_model"]
    assert len(rows) == 8 and all(float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"]) for r in rows)
    assert {r["lower_is_better"] for r in rows} == {"1"}


def test_export_refuses_an_unknown_format_and_writes_or_refuses_parquet_in_one_line(small_store, capsys, tmp_path):
    assert main(["export", "--out", str(small_store), "--per-image", str(tmp_path / "values.txt")]) == 2
    err = capsys.readouterr().err
    assert "write a .csv or .parquet file" in err and len(err.strip().splitlines()) == 1
    code = main(["export", "--out", str(small_store), "--per-image", str(tmp_path / "values.parquet")])
    err = capsys.readouterr().err
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert code == 2 and "install pyarrow, or write a .csv" in err and len(err.strip().splitlines()) == 1
    else:
        import pandas as pd

        assert code == 0 and len(pd.read_parquet(tmp_path / "values.parquet")) == 8 * 60 - 4 * 20


def test_an_export_cut_short_leaves_the_earlier_file_whole_and_no_partial_one(small_store, capsys, tmp_path, monkeypatch):
    """A full disk half-way through left a truncated values.csv ending mid-row, which the next step of a pipeline
    could read as whole.  The file is written beside its name and renamed into place."""
    target = tmp_path / "values.csv"
    target.write_text("the earlier export\n")
    real_writerow = csv.DictWriter.writerow
    calls = []

    def disk_fills_up(self, row):
        calls.append(row)
        if len(calls) > 10:
            raise OSError(28, "No space left on device")
        return real_writerow(self, row)

    monkeypatch.setattr(csv.DictWriter, "writerow", disk_fills_up)
    assert main(["export", "--out", str(small_store), "--per-image", str(target)]) == 2
    assert "no space left on device" in capsys.readouterr().err.lower()
    assert target.read_text() == "the earlier export\n" and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_report_cut_short_names_the_file_and_leaves_the_earlier_one_whole(small_store, capsys, tmp_path, monkeypatch):
    """A full disk left a 0-byte leaderboard.json and said "no space left on device" without naming a file."""
    from reports import leaderboard

    dest = tmp_path / "report"
    dest.mkdir()
    (dest / "leaderboard.json").write_text("the earlier report\n")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(leaderboard, "to_json", lambda *args, **kwargs: "x" * 100)
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: disk_full() if str(dst).endswith("leaderboard.json") else real_replace(src, dst))
    assert main(["report", "--out", str(small_store), "--dest", str(dest), "--format", "json"]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "leaderboard.json" in err and "No space left on device" in err and err.count("\n") == 1
    assert (dest / "leaderboard.json").read_text() == "the earlier report\n" and not [p for p in dest.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("cut", ["plot", "grid"])
def test_a_figure_cut_short_names_the_file_and_leaves_no_partial_image(small_store, capsys, tmp_path, monkeypatch, cut):
    """Plots and grids were written in place: a full disk half-way left a truncated PNG under the report's name."""
    import matplotlib.figure
    import PIL.Image

    def half_then_full(target, *args, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    if cut == "plot":
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, target, *a, **k: half_then_full(target))
    else:  # matplotlib writes its PNGs through PIL too: no plots, and one grid (this store holds no images)
        from types import SimpleNamespace

        from reports import grids, plots

        monkeypatch.setattr(plots, "figures", lambda *args, **kwargs: [])
        monkeypatch.setattr(grids, "collect", lambda *args, **kwargs: ["one grid"])
        monkeypatch.setattr(grids, "draw", lambda grid, **kwargs: SimpleNamespace(benchmark=BENCH, image=PIL.Image.new("RGB", (8, 8))))
        monkeypatch.setattr(PIL.Image.Image, "save", lambda self, target, *a, **k: half_then_full(target))
    dest = tmp_path / "report"
    assert main(["report", "--out", str(small_store), "--dest", str(dest), "--format", "png"]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "No space left on device" in err and err.count("\n") == 1
    folder = dest / ("plots" if cut == "plot" else "grids")
    assert f"{folder}" in err
    assert [p.name for p in folder.iterdir()] == [], "a partial image or a temporary file was left"


def test_a_writers_own_error_type_around_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    """safetensors reports a full disk during a model state's delta write as its own SafetensorError: a traceback."""
    from harness.api import HarnessError
    from harness.integrity import atomic_write

    class SafetensorError(Exception):
        pass

    def write(tmp):
        tmp.write_bytes(b"half a delta")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    path = tmp_path / "cache" / "deltas" / "k.safetensors"
    with pytest.raises(HarnessError, match=r"cannot write .*k\.safetensors: No space left on device; free space"):
        atomic_write(path, write=write)
    assert list(path.parent.iterdir()) == []
    with pytest.raises(ValueError):  # any other error of a writer is not a disk's and goes up unchanged
        atomic_write(path, write=lambda tmp: (_ for _ in ()).throw(ValueError("a bug")))


def test_compare_says_which_method_the_test_favours_by_the_metrics_direction(small_store, capsys):
    records = json.loads(run_cli(capsys, "compare", "--out", str(small_store), "uce", "weak", "--json"))
    for record in records:
        if record["p_value"] >= 0.05:
            assert record["verdict"] == "no significant difference"
        else:  # lower is better for these rates: the method with fewer flagged images wins
            assert record["verdict"] == ("B better" if record["delta"] < 0 else "A better")
    assert any(r["verdict"] != "no significant difference" for r in records)  # the fixture has a real difference
    text = run_cli(capsys, "compare", "--out", str(small_store), "uce", "weak")
    assert "not corrected for the number of lines" in text.splitlines()[0]
    for record, line in zip(records, text.splitlines()[1:]):
        named = {"A better": "uce better", "B better": "weak better"}.get(record["verdict"], record["verdict"])
        assert line.endswith(f": {named}") and f"uce {100 * record['value_a']:.2f}%, weak {100 * record['value_b']:.2f}%" in line


def test_the_last_method_is_never_second_by_default(tmp_path):
    """Two methods, the first far ahead: it is best, and the other, with no method below it, is not "second"."""
    n = 100
    store = Store(tmp_path / "s")
    fill(store, "run-1", {"sd": {BENCH: flags(range(70), n)}, "good": {BENCH: flags([], n)}, "bad": {BENCH: flags(range(90), n)}})
    board = leaderboard.build(store.results(), values=store.result_values())
    rows = {row.method: i for i, row in enumerate(board.rows)}
    assert board.ranks(0) == {rows["good"]: 1} and board.ties(0) == {}


def test_duplicating_each_seed_never_makes_a_difference_significant(tmp_path):
    """30 prompts, "best" at 0 everywhere and "next" flagged on 5: McNemar p = 2/2⁵, a tie.  The same images stored
    with every prompt's seed twice carry no new information, and the tie must stay a tie (the Wilcoxon on per-prompt
    means once gave p = 0.025 here and bolded "best")."""
    for seeds in (1, 2):
        store = Store(tmp_path / f"s{seeds}")
        per_image = {"sd": flags(range(25), 30), "best": flags([], 30), "next": flags(range(5), 30)}
        fill(store, "run-1", {m: {BENCH: [v for v in values for _ in range(seeds)]} for m, values in per_image.items()},
             seeds_per_prompt=seeds)
        board = leaderboard.build(store.results(), values=store.result_values())
        rows = {row.method: i for i, row in enumerate(board.rows)}
        assert board.ranks(0) == {} and board.ties(0) == {rows["best"]: 1, rows["next"]: 1}, seeds
        assert board.marks(0).adjusted_p == [pytest.approx(0.0625, rel=1e-12)]


def test_a_lead_by_the_mean_is_not_marked_on_a_rank_test_that_favours_the_other_method(tmp_path, capsys):
    """CLIP-like score, higher is better: "steady" scores 30.0 on all 20 prompts, "skewed" 30.3 on 18 and 26.0 on 2.
    The mean puts steady first, the signed-rank test (p = 0.007) favours skewed: no mark, and compare says so."""
    store = Store(tmp_path / "s")
    fill(store, "run-1", {"sd": {BENCH: [31.0] * 20}, "steady": {BENCH: [30.0] * 20}, "skewed": {BENCH: [30.3] * 18 + [26.0] * 2}},
         metric="kit:clip", name="CLIP", description="clip score", lower_is_better=False)
    board = leaderboard.build(store.results(), values=store.result_values())
    rows = {row.method: i for i, row in enumerate(board.rows)}
    assert board.rows[rows["steady"]].values[0] > board.rows[rows["skewed"]].values[0]
    assert board.ranks(0) == {} and board.ties(0) == {rows["steady"]: 1, rows["skewed"]: 1}
    store.close()
    (record,) = json.loads(run_cli(capsys, "compare", "--out", str(tmp_path / "s"), "steady", "skewed", "--json"))
    assert record["p_value"] < 0.05 and record["delta"] < 0 and record["test_favours"] == "B"
    assert record["verdict"] == "ranks and means disagree"


def test_one_prompt_gets_no_bootstrap_interval_rather_than_a_zero_width_one():
    """Resampling one prompt gives that prompt back every time: [v, v] would claim certainty from a single prompt."""
    one_prompt = [{"prompt_id": "0", "seed": s, "value": v} for s, v in enumerate([0.2, 0.3, 0.25, 0.31])]
    found = uncertainty.interval(0.265, one_prompt, "score")
    assert not found.known and "one prompt" in found.method
    two_prompts = [{**v, "prompt_id": str(i % 2)} for i, v in enumerate(one_prompt)]
    assert uncertainty.interval(0.265, two_prompts, "score").known
    # the same for compare's paired interval and the trade-off plot's mean over benchmarks
    other = [{**v, "value": v["value"] + 0.1 * (i % 3)} for i, v in enumerate(one_prompt)]
    record = uncertainty.compare(one_prompt, other, "score")
    assert record["ci95"] is None and "one prompt" in record["interval"] and record["delta"] == pytest.approx(0.075)
    assert uncertainty.compare(two_prompts, [{**v, "prompt_id": str(i % 2)} for i, v in enumerate(other)], "score")["ci95"] is not None
    assert not uncertainty.mean_of_benchmarks_interval([one_prompt, other], ["score", "score"]).known


def test_a_shown_rate_interval_always_encloses_the_shown_value():
    """Values print with two decimals and rate bounds with one: at 1 event in 20 000 the Wilson bounds round to
    [0.0, 0.0] around 0.01; the bound that would exclude the shown value is rounded outward.  Elsewhere unchanged."""
    column = leaderboard.Column(benchmark=BENCH, metric=METRIC, name="ASR", description="fraction", lower_is_better=True, rate=True)
    for k, n in ((1, 20000), (19999, 20000), (2, 15000), (4, 80), (0, 100), (100, 100)):
        found = uncertainty.Interval(*stats.wilson(k, n), uncertainty.WILSON)
        text = leaderboard.format_interval(found, column, k / n)
        low, high = (float(x) for x in text.strip("[]").split(", "))
        shown = float(leaderboard.format_value(k / n, column).rstrip("%"))
        assert low <= shown <= high, (k, n, text, shown)
    assert leaderboard.format_interval(uncertainty.Interval(*stats.wilson(4, 80), uncertainty.WILSON), column, 0.05) == "[2.0, 12.2]"
    assert leaderboard.format_interval(uncertainty.Interval(*stats.wilson(1, 20000), uncertainty.WILSON), column, 1 / 20000) == "[0.0, 0.1]"


def test_an_undefined_value_is_an_empty_csv_cell_as_it_is_null_in_json(tmp_path):
    store = Store(tmp_path / "s")
    fill(store, "run-1", {"sd": {BENCH: flags(range(7), 10)}, "uce": {BENCH: flags([], 10)}})
    results = [dataclasses.replace(row, value=float("nan")) if row.method == "uce" else row for row in store.results()]
    board = leaderboard.build(results, values=store.result_values())
    table = list(csv.DictReader(leaderboard.to_csv(board).splitlines()))
    assert [r[f"{BENCH}/{METRIC}"] for r in table if r["method"] == "uce"] == [""]
    long = list(csv.DictReader(leaderboard.to_long_csv(results, uncertainty.intervals(results, store.result_values())).splitlines()))
    assert [r["value"] for r in long if r["method"] == "uce"] == [""]


def test_a_quick_run_beside_a_full_one_is_named_and_compare_shows_the_means_its_difference_is_made_of(tmp_path, capsys):
    """A 200-prompt run of sd and rece, then ``--limit 8`` of sd alone: the newest sd cell (8 images) sits beside
    rece's 200.  The report says the cells hold different prompt sets; compare's difference is over the 8 shared
    pairs, and it shows the two means over those pairs (the whole cells' values do not subtract to it)."""
    from reports import caveats

    store = Store(tmp_path / "s")
    full_sd, rece = flags(range(18), 200), flags([0, *range(10, 24)], 200)
    fill(store, "run-1", {"sd": {BENCH: full_sd}, "rece": {BENCH: rece}})
    fill(store, "run-2", {"sd": {BENCH: flags([], 8)}})
    notes = caveats.mixed_prompt_sets(store.results())
    assert notes == [f"Mixed prompt sets: the cells of {BENCH} hold different numbers of images (sd 8, rece 200); their values are over "
                     "different prompts or seeds (the paired tests behind the marks use only the pairs two cells share). Re-run the smaller cells "
                     "with the same --limit, or select one run with --runs."]
    assert caveats.mixed_prompt_sets(store.results(runs=["run-1"])) == []
    store.close()
    (record,) = json.loads(run_cli(capsys, "compare", "--out", str(tmp_path / "s"), "sd", "rece", "--json"))
    assert (record["n_a"], record["n_b"], record["n_pairs"]) == (8, 200, 8)
    assert record["paired_a"] == 0 and record["paired_b"] == 1 / 8 and record["delta"] == 1 / 8  # rece flags prompt 0
    assert record["value_b"] == pytest.approx(15 / 200)
    line = run_cli(capsys, "compare", "--out", str(tmp_path / "s"), "sd", "rece").splitlines()[1]
    assert "sd 0.00%, rece 12.50% on the 8 shared pairs (whole cells: sd 0.00% n=8, rece 7.50% n=200); B - A = +12.50 pp" in line


def test_compare_shows_no_set_level_score_for_the_base_model_as_the_leaderboard_does(tmp_path, capsys):
    """FID against the base model's own images is 0 by construction: "–" in the table, and in compare too."""
    store = Store(tmp_path / "s")
    fill(store, "run-1", {"sd": {BENCH: flags(range(7), 10)}, "uce": {BENCH: flags([], 10)}})
    for method, value, state in (("sd", 0.0, None), ("uce", 3.25, "state-uce")):
        store.add_result(run_id="run-1", method=method, benchmark=BENCH, metric="kit:fid", value=value, n=10, lower_is_better=True,
                         name="FID", description="set-level", unit="distance", adversarial=False, needs_reference=True,
                         model_state=state, unet_evals_per_image=8.0)
    store.close()
    records = {r["metric"]: r for r in json.loads(run_cli(capsys, "compare", "--out", str(tmp_path / "s"), "sd", "uce", "--json"))}
    assert records["kit:fid"]["value_a"] is None and records["kit:fid"]["value_b"] == 3.25 and records["kit:fid"]["delta"] is None
    text = run_cli(capsys, "compare", "--out", str(tmp_path / "s"), "sd", "uce")
    assert f"{BENCH} FID ↓: sd –, uce 3.25 (none: no per-image values" in text


def test_two_labels_with_one_display_name_show_their_labels(tmp_path):
    """Two prompt files named alike in other folders display as "csv prompts.csv" both: two columns that read the
    same and hold different numbers.  Those show their stored labels; a display name used once is kept."""
    store = Store(tmp_path / "s")
    store.start_run("run-1", {})
    labels = {"csv:path=a/prompts.csv": "csv prompts.csv", "csv:path=b/prompts.csv": "csv prompts.csv", "i2p": "I2P"}
    for method, display in (("ckpt:path=x/final", "checkpoint final"), ("ckpt:path=y/final", "checkpoint final"), ("uce", "UCE")):
        for benchmark, shown in labels.items():
            store.add_result(run_id="run-1", method=method, benchmark=benchmark, metric=METRIC, value=0.5, n=2, lower_is_better=True,
                             name="ASR", description="fraction", unit="rate", adversarial=False, needs_reference=False,
                             method_display=display, benchmark_display=shown, model_state=f"s-{method}", unet_evals_per_image=8.0)
    board = leaderboard.build(store.results())
    assert sorted(column.title for column in board.columns) == ["I2P", "csv:path=a/prompts.csv", "csv:path=b/prompts.csv"]
    assert sorted(row.display or row.method for row in board.rows) == ["UCE", "ckpt:path=x/final", "ckpt:path=y/final"]


def twin_store(path, seeds_per_prompt: int = 1) -> Store:
    """The same 0/1 per-image values stored twice: as a rate (``kit:rate``) and as a score (``kit:hits``, a per-image
    count that happened to come out 0 or 1 on every image)."""
    rng = np.random.default_rng(5)
    n = 60
    methods = {"sd": {BENCH: (rng.random(n) < 0.8).astype(float).tolist()},
               "uce": {BENCH: (rng.random(n) < 0.15).astype(float).tolist()},
               "weak": {BENCH: (rng.random(n) < 0.5).astype(float).tolist()}}
    store = Store(path)
    fill(store, "run-1", methods, seeds_per_prompt=seeds_per_prompt)
    fill(store, "run-1", methods, metric="kit:hits", name="hits", description="detections per image", unit="score",
         seeds_per_prompt=seeds_per_prompt)
    return store


@pytest.mark.parametrize("seeds_per_prompt", [1, 2])
def test_the_declared_unit_not_the_values_picks_the_interval(tmp_path, capsys, seeds_per_prompt):
    """A score whose per-image values are all 0 or 1 gets the bootstrap (Wilson would clamp a count's mean to [0, 1]);
    the rate with the very same values keeps Wilson, on the effective n where a prompt has several seeds."""
    twin_store(tmp_path / "s", seeds_per_prompt).close()
    records = json.loads(run_cli(capsys, "report", "--out", str(tmp_path / "s"), "--json"))
    by_metric = {}
    for record in records:
        by_metric.setdefault(record["metric"], []).append(record)
    assert len(by_metric[METRIC]) == len(by_metric["kit:hits"]) == 3
    seeds = " (2 seeds per prompt)" if seeds_per_prompt > 1 else ""
    for record in by_metric["kit:hits"]:
        assert record["interval"] == uncertainty.BOOTSTRAP + seeds
    for record in by_metric[METRIC]:
        if seeds_per_prompt == 1:
            assert record["interval"] == uncertainty.WILSON
        else:
            assert record["interval"].startswith(uncertainty.WILSON + " on the effective n") and record["interval"].endswith(seeds)


def test_the_declared_unit_picks_the_paired_test_of_compare_and_of_the_marks(tmp_path, capsys):
    store = twin_store(tmp_path / "s")
    stored = store.result_values()
    records = {r["metric"]: r for r in json.loads(run_cli(capsys, "compare", "--out", str(tmp_path / "s"), "uce", "weak", "--json"))}
    assert records[METRIC]["test"] == "exact McNemar" and "discordant" in records[METRIC]
    uce, weak = ([v["value"] for v in stored["run-1", m, BENCH, "kit:hits"]] for m in ("uce", "weak"))
    assert records["kit:hits"]["test"] == "Wilcoxon signed-rank" and "discordant" not in records["kit:hits"]
    assert records["kit:hits"]["p_value"] == pytest.approx(stats.wilcoxon_signed_rank(uce, weak), rel=1e-12)

    board = leaderboard.build(store.results(), values=stored)
    hits = next(i for i, c in enumerate(board.columns) if c.metric == "kit:hits")
    assert board.columns[hits].unit == "score" and not board.columns[hits].rate
    others = [row for row in board.rows if not row.base]
    leader, rest = (others[0], others[1:]) if others[0].values[hits] <= others[1].values[hits] else (others[1], [others[0]])
    wilcoxon = [stats.wilcoxon_signed_rank([v["value"] for v in leader.per_image[hits]], [v["value"] for v in r.per_image[hits]])
                for r in rest]
    assert board.marks(hits).adjusted_p == pytest.approx(stats.holm(wilcoxon), rel=1e-12)
    assert board.rows[0].intervals[hits].method == uncertainty.BOOTSTRAP  # the cell's interval agrees with its test


def test_the_trade_off_plots_mean_of_benchmarks_follows_the_unit(tmp_path):
    rng = np.random.default_rng(8)
    flagged = {m: {BENCH: (rng.random(40) < p).astype(float).tolist(), "bench-b": (rng.random(30) < p).astype(float).tolist()}
               for m, p in (("sd", 0.8), ("uce", 0.2))}
    for unit, several, one in (("score", "stratified " + uncertainty.BOOTSTRAP, uncertainty.BOOTSTRAP),
                               ("rate", uncertainty.WILSON + " on the effective n", uncertainty.WILSON)):
        store = Store(tmp_path / unit)
        fill(store, "run-1", flagged, description="flagged images", unit=unit)
        board = leaderboard.build(store.results(), values=store.result_values())
        row = next(r for r in board.rows if r.method == "uce")
        columns = board.erasure_columns()
        assert len(columns) == 2
        assert plots.erasure_average_interval(board, row, columns).method.startswith(several)
        assert plots.erasure_average_interval(board, row, columns[:1]).method == one


def test_results_stored_before_units_are_judged_by_their_values(tmp_path, capsys):
    store = Store(tmp_path / "s")
    fill(store, "run-1", {"sd": {BENCH: flags(range(30), 40)}, "uce": {BENCH: flags(range(4), 40)}}, unit=None)
    fill(store, "run-1", {"sd": {BENCH: [0.5] * 40}, "uce": {BENCH: [0.25, 0.75] * 20}}, metric="kit:mean", name="mean",
         description="mean pixel value", unit=None)
    store.close()
    intervals = {r["metric"]: r["interval"] for r in json.loads(run_cli(capsys, "report", "--out", str(tmp_path / "s"), "--json"))}
    assert intervals == {METRIC: uncertainty.WILSON, "kit:mean": uncertainty.BOOTSTRAP}


def test_a_column_whose_runs_disagree_on_the_unit_has_none(tmp_path):
    """One metric stored as a score by one run and as a rate by another (a plugin that changed its unit): the column
    claims neither, so its marks are tested by the values, whichever run's row the leaderboard met first."""
    rng = np.random.default_rng(3)
    store = Store(tmp_path / "s")
    fill(store, "run-1", {"sd": {BENCH: (rng.random(40) < 0.8).astype(float).tolist()}}, unit="score")
    fill(store, "run-2", {"uce": {BENCH: (rng.random(40) < 0.2).astype(float).tolist()}}, unit="rate")
    board = leaderboard.build(store.results(), values=store.result_values())
    assert [c.unit for c in board.columns if c.metric == METRIC] == [None]
    same = Store(tmp_path / "same")
    fill(same, "run-1", {"sd": {BENCH: [1.0, 0.0] * 20}, "uce": {BENCH: [0.0] * 40}}, unit="rate")
    assert [c.unit for c in leaderboard.build(same.results()).columns if c.metric == METRIC] == ["rate"]


def test_compare_shows_a_small_score_with_the_digits_the_leaderboard_gives_it(tmp_path, capsys):
    """A share near 0.63 read "sd 0.63, weak 0.63; B - A = +0.00 [+0.00, +0.01]" while the leaderboard showed 0.626
    and 0.629: compare takes the leaderboard's rule for a column's digits."""
    rng = np.random.default_rng(3)
    base = (0.626 + 0.01 * rng.standard_normal(40)).tolist()
    store = Store(tmp_path / "s")
    fill(store, "run-1", {"sd": {BENCH: base}, "weak": {BENCH: [v + 0.003 for v in base]}}, name="share",
         description="a share of the image", lower_is_better=False, unit="score")
    store.close()
    decimals = leaderboard.decimals_for([statistics.fmean(base)])
    assert decimals == 3
    text = run_cli(capsys, "compare", "--out", str(tmp_path / "s"), "sd", "weak")
    assert f"sd {statistics.fmean(base):.3f}, weak {statistics.fmean(base) + 0.003:.3f}; B - A = +0.003" in text


def test_a_row_whose_cells_come_from_two_configurations_of_its_method_is_named(tmp_path):
    """SAFREE's default changed (its negative prompt became a switch): re-running safree on one benchmark of an old
    store put the new configuration's cell beside the old one's in one row, without a word."""
    from reports import caveats

    store = Store(tmp_path / "s")
    store.add_model_state("state-old", "tiny", "safree", {"alpha": 0.01, "concept_negative_prompt": True}, "c", None, {})
    store.add_model_state("state-new", "tiny", "safree", {"alpha": 0.01, "concept_negative_prompt": False}, "c", None, {})
    for run in ("run-1", "run-2"):
        store.start_run(run, {})
    for run, bench, state in (("run-1", "a", "state-old"), ("run-1", "b", "state-old"), ("run-2", "b", "state-new")):
        store.add_result(run_id=run, method="safree", benchmark=bench, metric="kit:asr", value=0.5, n=2, lower_is_better=True,
                         name="ASR", description="fraction of images flagged", unit="rate", adversarial=False,
                         needs_reference=False, model_state=state, unet_evals_per_image=8.0)
    assert caveats.mixed_configurations(store, store.results()) == [
        "Mixed configurations: the cells of safree come from 2 parameter sets (concept_negative_prompt: True / False), e.g. a "
        "default that changed between its runs; its row is not one configuration. Re-run it on every benchmark, or select one "
        "run with --runs."]
    assert caveats.mixed_configurations(store, store.results(runs=["run-1"])) == []
