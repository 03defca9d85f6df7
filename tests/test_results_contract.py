"""What a result carries: a report needs no plugin, and ``harness report --json`` follows its published schema."""

import json
import re
import shutil
from pathlib import Path

import pytest

from harness.api import Metric
from harness.cli import main
from harness.results import Result
from harness.store import Store
from reports.result_schema import SCHEMA, SCHEMA_VERSION

KIT = str(Path(__file__).parent / "plugins" / "report_kit.py")


@pytest.fixture(scope="module")
def kit_store(tmp_path_factory):
    """A tiny run of the report kit: a user benchmark, two adversarial ones (so an "Adv" column) and a set-level scorer."""
    out = tmp_path_factory.mktemp("contract") / "out"
    code = main(["--plugin", KIT, "run", "--model", "tiny", "--methods", "sd,tint:amount=0.1,tint:amount=-0.3",
                 "--bench", "plain:count=2,attack-a:count=2,attack-b:count=2,keep:count=2", "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def report(capsys, *args) -> str:
    capsys.readouterr()
    assert main([*args]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_a_store_reports_the_same_without_the_plugins_that_produced_it(kit_store, tmp_path, capsys, monkeypatch):
    # The terminal table splits into blocks as wide as the terminal (120 columns when there is none); the header
    # checked below must not depend on where the tests run (a pytest-xdist worker reported a narrower one).
    monkeypatch.setenv("COLUMNS", "160")
    here = report(capsys, "--plugin", KIT, "report", "--out", str(kit_store), "--format", "md,csv,json")
    elsewhere = tmp_path / "copied"
    shutil.copytree(kit_store, elsewhere)  # as if copied to a machine where the kit (methods, benchmarks, scorers) is absent
    there = report(capsys, "report", "--out", str(elsewhere), "--format", "md,csv,json")
    assert there == here
    header = here.splitlines()[0]
    assert "Adv" in header and "attack-a" in header and "keep" in header  # the adversarial average and the set-level column
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json"):
        assert (elsewhere / "report" / name).read_text() == (kit_store / "report" / name).read_text()


def test_each_result_stores_what_its_plugins_declared(kit_store):
    results = Store(kit_store).results()
    assert results and all(isinstance(r, Result) for r in results)
    by_cell = {(r.method, r.benchmark, r.metric): r for r in results}
    attack = by_cell["sd", "attack-a:count=2", "pixels:bright"]
    assert attack.adversarial and attack.unit == "rate" and not attack.needs_reference and attack.lower_is_better
    plain = by_cell["sd", "plain:count=2", "pixels:bright"]
    assert not plain.adversarial
    drift = by_cell["tint:amount=0.1", "keep:count=2", "drift:drift"]
    assert drift.needs_reference and drift.unit == "distance"
    assert drift.method_display == "tint (amount=0.1)" and drift.benchmark_display == "keep (count=2)"  # no display_name: the names
    assert drift.metric_position == 0 and by_cell["sd", "keep:count=2", "pixels:contrast"].metric_position == 1  # Keep.metrics order
    contrast = by_cell["sd", "keep:count=2", "pixels:contrast"]
    assert contrast.unit == "score" and not contrast.lower_is_better
    assert attack.metric_ref.scorer == "pixels" and attack.metric_ref.metric == "bright"


def test_report_json_follows_the_published_schema(kit_store, capsys):
    jsonschema = pytest.importorskip("jsonschema")
    records = json.loads(report(capsys, "report", "--out", str(kit_store), "--json"))
    jsonschema.validate(records, SCHEMA)
    assert {r["schema_version"] for r in records} == {SCHEMA_VERSION}
    assert len(records) == len(Store(kit_store).results())
    broken = [dict(records[0], unit="percent")]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_a_metric_unit_must_be_one_of_the_known_units():
    with pytest.raises(ValueError, match="unit 'percent'"):
        Metric("x", "x", True, "a rate", per_image=float, unit="percent")


def test_one_parser_for_selections_and_metric_references():
    from harness.api import HarnessError, MetricRef
    from harness.spec import Selection

    selection = Selection.parse("rece:lamb=0.1,erase_scale=2")
    assert selection.name == "rece" and selection.params == {"lamb": "0.1", "erase_scale": "2"}
    assert selection.label() == "rece:erase_scale=2,lamb=0.1" and selection.params_text() == "erase_scale=2,lamb=0.1"
    assert Selection.parse(selection.label()) == selection  # a stored label parses back to what made it
    with pytest.raises(HarnessError, match="one name with its parameters"):
        Selection.parse("uce+sld")
    assert MetricRef.parse("nudenet:asr-rece") == MetricRef("nudenet", "asr-rece") and str(MetricRef("q16", "hate")) == "q16:hate"
    with pytest.raises(HarnessError, match="'scorer:metric'"):
        MetricRef.parse("nudenet")


def test_a_method_kind_outside_the_enum_fails_on_load():
    from harness.api import HarnessError, Method
    from harness.hookspecs import hookimpl
    from harness.plugins import PluginHost
    from harness.registry import Registry

    class Sideways(Method):
        name = "sideways"
        kind = "sideways"

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register(Sideways)

    host = PluginHost(load_entry_points=False)
    host.add_module(Plugin(), name="sideways-plugin")
    with pytest.raises(HarnessError, match="kind 'sideways'"):
        Registry(host).get("methods", "sideways")


def attack_store(path) -> Store:
    """Two static adversarial benchmarks (so an "Adv" column), a user benchmark and its attack cell "append-word(plain)",
    written as the runner writes them: the attack cell with its source benchmark's flag cleared."""
    store = Store(path)
    store.start_run("run-1", {})
    cells = [("plain", False, None), ("adv-a", True, None), ("adv-b", True, None), ("append-word(plain)", False, "append-word")]
    for method, flagged in (("sd", [1, 1, 1, 0]), ("uce", [0, 1, 0, 0])):
        state = None
        if method != "sd":
            state = "state-uce"
            store.add_model_state(state, "tiny", method, {}, "c", None, {"provenance": "erased here"})
        for bench, adversarial, attack in cells:
            store.add_result(run_id="run-1", method=method, benchmark=bench, metric="kit:asr", value=sum(flagged) / 4, n=4,
                             lower_is_better=True, name="ASR", description="fraction of images flagged", unit="rate",
                             adversarial=adversarial, needs_reference=False, model_state=state, unet_evals_per_image=8.0,
                             attack=attack, values=[(str(i), str(i), i, f"{method}-{bench}-{i}", float(v)) for i, v in enumerate(flagged)])
    store.finish_run("run-1")
    return store


def test_an_attack_cell_is_adversarial_in_every_output(tmp_path, capsys):
    from reports import html, latex, leaderboard

    out = tmp_path / "s"
    store = attack_store(out)
    raw = {row[0] for row in store.db.execute("SELECT adversarial FROM results WHERE attack IS NOT NULL")}
    assert raw == {1}  # stored so, for anyone reading the database itself
    store.db.execute("UPDATE results SET adversarial = 0 WHERE attack IS NOT NULL")  # as stores written before were
    by_bench = {(r.method, r.benchmark): r for r in store.results()}
    assert by_bench["uce", "append-word(plain)"].adversarial and not by_bench["uce", "plain"].adversarial
    store.close()

    records = json.loads(report(capsys, "report", "--out", str(out), "--json"))
    flags = {(r["benchmark"], r["attack"]): r["adversarial"] for r in records}
    assert flags == {("plain", None): False, ("adv-a", None): True, ("adv-b", None): True, ("append-word(plain)", "append-word"): True}
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(records, SCHEMA)

    report(capsys, "report", "--out", str(out), "--format", "json,html,latex", "--dest", str(tmp_path / "r"))
    document = json.loads((tmp_path / "r" / "leaderboard.json").read_text())
    columns = {c["benchmark"]: c for c in document["columns"]}
    assert columns["append-word(plain)"]["adversarial"] and columns["append-word(plain)"]["group"] == "attack"
    assert columns["attacked"]["adversarial"] and not columns["plain"]["adversarial"]
    # "Adv" still averages the static adversarial benchmarks only: an attack cell's prompts differ between methods.
    assert columns["Adv"]["average_of"] == ["adv-a", "adv-b"]
    assert {r["benchmark"]: r["adversarial"] for r in document["records"]}["append-word(plain)"]

    board = leaderboard.build(Store(out).results())
    groups = {title: [board.columns[i].benchmark for i in indices] for title, indices, _ in html.column_groups(board)}
    assert groups["Adversarial prompt"] == ["adv-a", "adv-b", "Adv"] and groups["User prompt"] == ["plain"]
    assert groups["Attacked (prompts found against each method)"] == ["append-word(plain)", "attacked"]
    kinds = dict(re.findall(r'<tr><td class="text">([^<]+)</td>.*?<td class="text">([^<]+)</td><td class="text">[^<]*</td></tr>',
                            html.metrics_table(board)))
    assert kinds == {"plain": "erasure", "adv-a": "erasure, adversarial", "adv-b": "erasure, adversarial", "Adv": "average",
                     "append-word(plain)": "erasure, adversarial", "attacked": "average"}
    table = latex.table1(board)
    assert r"\multicolumn{2}{c}{Adversarial prompt}" in table and r"{Attacked}" in table


def test_table1_shows_an_attack_cells_primary_metric_and_the_secondary_table_its_others(tmp_path):
    """Table 1 promises one primary metric per benchmark, and its Attacked group listed every metric of an attack
    cell (each again in the "attacked" average)."""
    from reports import latex, leaderboard

    store = attack_store(tmp_path / "s")
    store.start_run("run-1", {})
    for method, state, flagged in (("sd", None, [1, 0, 1, 0]), ("uce", "state-uce", [0, 0, 1, 0])):
        for bench, adversarial, attack in (("plain", False, None), ("append-word(plain)", True, "append-word")):
            store.add_result(run_id="run-1", method=method, benchmark=bench, metric="kit:any", value=sum(flagged) / 4, n=4,
                             lower_is_better=True, name="ASR-any", description="fraction of images with any flag", unit="rate",
                             adversarial=adversarial, needs_reference=False, model_state=state, unet_evals_per_image=8.0,
                             attack=attack, values=[(str(i), str(i), i, f"{method}-{bench}-{i}-any", float(v)) for i, v in enumerate(flagged)])
    store.finish_run("run-1")
    board = leaderboard.build(store.results(), values=store.result_values())
    attacked = board.attack_columns()
    assert sorted((c.benchmark, c.metric, c.primary) for c in attacked if not c.is_average) == [
        ("append-word(plain)", "kit:any", False), ("append-word(plain)", "kit:asr", True)]
    # The "attacked" average of the primary metric is primary too (it was in the secondary table, Table 1 had none).
    assert sorted((c.metric, c.primary) for c in attacked if c.is_average) == [("kit:any", False), ("kit:asr", True)]
    primary, secondary = latex.table1(board), latex.table1_secondary(board)
    # sd's ASR is 75% in every cell, its ASR-any 50%: each table's attack cell and attacked average show its own metric
    assert r"sd & 75.00\% & 75.00\% & 75.00\% & 75.00\% & 75.00\% \\" in primary  # plain, adv-a, adv-b, A(plain), attacked
    assert r"sd & 50.00\% & 50.00\% & 50.00\% \\" in secondary and "75.00" not in secondary  # plain, A(plain), attacked
    assert primary.split("Attacked")[1].count("attacked") == secondary.split("Attacked")[1].count("attacked") == 1


def test_an_average_column_prints_as_many_digits_as_the_columns_it_averages(tmp_path):
    """A score's "Adv" and "attacked" means printed two decimals whatever their columns printed: a mean of -0.00525
    showed as -0.01 beside cells of three significant digits."""
    from reports import leaderboard

    store = Store(tmp_path / "s")
    store.start_run("run-1", {})
    cells = [("adv-a", True, None), ("adv-b", True, None), ("plain", False, None), ("append-word(plain)", True, "append-word")]
    for method, values in (("sd", [0.2, 0.1, 0.3, 0.1]), ("uce", [-0.021, 0.0, 0.0, 0.0])):
        state = None if method == "sd" else "state-uce"
        if state:
            store.add_model_state(state, "tiny", method, {}, "c", None, {"provenance": "erased here"})
        for bench, adversarial, attack in cells:
            store.add_result(run_id="run-1", method=method, benchmark=bench, metric="kit:score", value=sum(values) / 4, n=4,
                             lower_is_better=True, name="Score", description="mean score", unit="score",
                             adversarial=adversarial, needs_reference=False, model_state=state, unet_evals_per_image=8.0,
                             attack=attack, values=[(str(i), str(i), i, f"{method}-{bench}-{i}", v) for i, v in enumerate(values)])
    store.finish_run("run-1")
    board = leaderboard.build(store.results(), values=store.result_values())
    columns = {c.benchmark: c for c in board.columns}
    assert columns["adv-a"].decimals == 3
    for average in ("Adv", "attacked"):
        assert columns[average].decimals == 3, average
        index = board.columns.index(columns[average])
        uce = next(row for row in board.rows if row.method == "uce")
        assert leaderboard.format_value(uce.values[index], columns[average]) == "-0.005"


def test_an_average_column_carries_its_interval_and_its_images(tmp_path):
    """"Adv" and "attacked" were numbers without an interval or n (a mean over benchmarks): each now has the interval
    of its equally weighted mean, the trade-off plot's (Wilson on the effective n B² / Σ 1/n_b for rates)."""
    from harness import stats
    from reports import leaderboard

    store = attack_store(tmp_path / "s")  # sd flags 3 of 4 images everywhere, uce 1 of 4
    board = leaderboard.build(store.results(), values=store.result_values())
    columns = {c.benchmark: c for c in board.columns}
    assert columns["Adv"].n == 8 and columns["attacked"].n == 4  # adv-a + adv-b; the one attack cell
    for row in board.rows:
        share = 0.75 if row.method == "sd" else 0.25
        adv = row.intervals[board.columns.index(columns["Adv"])]
        assert (adv.low, adv.high) == pytest.approx(stats.wilson(share * 8, 8))  # B² / Σ 1/n_b = 4 / (1/4 + 1/4)
        attacked = row.intervals[board.columns.index(columns["attacked"])]
        assert (attacked.low, attacked.high) == pytest.approx(stats.wilson(share * 4, 4))
    assert "75.00 [40.9, 92.9]" in leaderboard.to_markdown(board)
