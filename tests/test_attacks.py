"""`harness run --attack`: attack cells A(B) on the tiny backbone, with the trivial attacks of tests/plugins/attacks_kit.py.

What is checked: cells are scored with B's per-image erasure metrics and stored with their attack; adversarial
prompts keep the source's id, seed and guidance; prompts are cached per source prompt (a re-run does zero attack
steps and zero UNet calls; a killed attack resumes); a text-encoder-only attack is shared by UNet-side edits but
not by a text-encoder edit; cost is counted; the exported CSV replays to the same score; the leaderboard shows
the attack group and the "attacked" column.
"""

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from harness.api import HarnessError
from harness.cli import main
from harness.plugins import PluginHost
from harness.registry import Registry
from harness.runner import RunConfig, Runner, plan

PLUGINS = Path(__file__).parent / "plugins"
FILES = [str(PLUGINS / "brightness.py"), str(PLUGINS / "edits.py"), str(PLUGINS / "attacks_kit.py")]
BENCH = "fixed:count=4"


@pytest.fixture(scope="module")
def registry():
    return Registry(PluginHost(FILES))


def run(registry, out, methods="sd,scale-keys,scale-token-embedding", attacks="append-word,unet-probe", **options):
    config = RunConfig(methods=methods, bench=BENCH, model="tiny", out=str(out), show_progress=False, attacks=attacks, **options)
    runner = Runner(plan(config, registry))
    runner.execute()
    return runner


def log_of(runner, method, attack):
    (record,) = [r for r in runner.attack_log if r["method"] == method and r["attack"] == attack]
    return record


def test_attack_cells_are_scored_cached_and_costed(registry, tmp_path):
    first = run(registry, tmp_path)
    results = first.store.results([first.plan.run_id])
    cells = {(r["method"], r["benchmark"], r["metric"]): r for r in results if r["attack"]}
    # B's per-image, lower-is-better metric only ("dark rate"); the higher-is-better brightness is not an attack target.
    assert set(cells) == {(m, f"{a}({BENCH})", "brightness:dark") for m in ("sd", "scale-keys", "scale-token-embedding")
                          for a in ("append-word", "unet-probe")}
    assert all(r["n"] == 4 and r["attack"] in ("append-word", "unet-probe") for r in cells.values())
    assert not any(r["attack"] for r in results if "(" not in r["benchmark"])

    # The text-encoder-only attack searched for sd, was shared by the UNet edit, and searched again for the text-encoder edit.
    assert log_of(first, "sd", "append-word")["found_now"] == 4
    assert log_of(first, "scale-keys", "append-word")["found_now"] == 0
    assert log_of(first, "scale-token-embedding", "append-word")["found_now"] == 4
    assert log_of(first, "scale-keys", "append-word")["attack_state"] == log_of(first, "sd", "append-word")["attack_state"]
    # The whole-model attack searched for every state.  Cost: 3 iterations, 3 UNet + 1 base-UNet evaluations per prompt.
    for method in ("sd", "scale-keys", "scale-token-embedding"):
        record = log_of(first, method, "unet-probe")
        assert record["found_now"] == 4
        assert record["cost_now"]["attack_steps"] == 12 and record["cost_now"]["unet_evals"] == 16
        assert record["cost_now"]["text_encoder_evals"] == 4 and record["cost_now"]["wall_s"] > 0
        assert record["cost_total"]["unet_evals"] == 16

    # Adversarial images: the source prompt's seed and guidance, the attack's text.
    rows = [r for r in first.store.run_images(first.plan.run_id) if r["benchmark"] == f"unet-probe({BENCH})" and r["method"] == "sd"]
    specs = sorted((json.loads(r["spec"]) for r in rows), key=lambda s: int(s["id"]))
    assert [s["seed"] for s in specs] == [1000, 1001, 1002, 1003]
    assert [s["prompt"] for s in specs] == ["a red circle blood", "a blue square blood", "a green triangle blood", "blood"]
    assert all(s["labels"]["source_prompt"] is not None and s["labels"]["attack"] == "unet-probe" for s in specs)

    second = run(registry, tmp_path)
    assert second.engine.unet_calls == 0
    for record in second.attack_log:
        assert record["found_now"] == 0
        assert record["cost_now"] == {"attack_steps": 0, "text_encoder_evals": 0, "unet_evals": 0, "wall_s": 0}
    assert second.store.results([second.plan.run_id]) == results

    manifest = json.loads((tmp_path / "runs" / first.plan.run_id / "manifest.json").read_text())
    assert [a["label"] for a in manifest["attacks"]] == ["append-word", "unet-probe"]
    assert len(manifest["attack_cells"]) == 6


def test_exported_prompts_replay_as_a_csv_benchmark_with_the_same_score(registry, tmp_path):
    first = run(registry, tmp_path, methods="sd", attacks="unet-probe")
    record = log_of(first, "sd", "unet-probe")
    exported = Path(record["export"])
    header = exported.read_text().splitlines()[0].split(",")
    assert header[:4] == ["case_number", "prompt", "evaluation_seed", "evaluation_guidance"] and "source_prompt" in header
    config = RunConfig(methods="sd", bench=f"csv:path={exported},metrics=brightness:dark,concepts=colours", model="tiny", out=str(tmp_path),
                       show_progress=False)
    replay = Runner(plan(config, registry))
    replay.execute()
    assert replay.engine.unet_calls == 0  # the same prompts, seeds and guidance: the attack cell's images
    (cell,) = [r for r in first.store.results([first.plan.run_id]) if r["attack"] == "unet-probe"]
    (replayed,) = replay.store.results([replay.plan.run_id])
    assert replayed["value"] == cell["value"] and replayed["n"] == cell["n"] == 4


def test_attack_budget_caps_iterations_and_the_capped_cell_is_stored_apart(registry, tmp_path):
    full = run(registry, tmp_path, methods="sd", attacks="unet-probe")
    capped = run(registry, tmp_path, methods="sd", attacks="unet-probe", attack_budget=1)
    (attack,) = capped.plan.attacks
    assert attack.attack.params.iterations == 1 and attack.label == "unet-probe:iterations=1"
    assert log_of(capped, "sd", "unet-probe:iterations=1")["cost_now"]["attack_steps"] == 4
    # Another run, another cell: the capped search once replaced the full one under the same name.
    assert capped.plan.run_id != full.plan.run_id
    from harness.store import Store

    cells = {r["benchmark"] for r in Store(tmp_path).results() if r["attack"]}
    assert cells == {f"unet-probe({BENCH})", f"unet-probe:iterations=1({BENCH})"}
    # A budget the parameter is already within changes nothing, so the run is the same.
    roomy = plan(RunConfig(methods="sd", bench=BENCH, model="tiny", out=str(tmp_path), attacks="unet-probe", attack_budget=100), registry)
    assert roomy.attacks[0].label == "unet-probe" and roomy.run_id == full.plan.run_id


def test_a_killed_attack_resumes_from_the_prompts_already_found(registry, tmp_path):
    cls = registry.get("attacks", "unet-probe")
    original = cls.attack
    calls = []

    def dies_on_the_third_prompt(self, pipe, concepts, spec, ctx):
        calls.append(spec.id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, pipe, concepts, spec, ctx)

    cls.attack = dies_on_the_third_prompt
    try:
        with pytest.raises(KeyboardInterrupt):
            run(registry, tmp_path, methods="sd", attacks="unet-probe")
    finally:
        cls.attack = original
    resumed = run(registry, tmp_path, methods="sd", attacks="unet-probe")
    record = log_of(resumed, "sd", "unet-probe")
    assert record["found_now"] == 2 and record["cost_now"]["attack_steps"] == 6
    assert record["cost_total"]["attack_steps"] == 12  # two prompts found before the kill, two after


def test_bad_attack_options_fail_before_any_work(registry, tmp_path):
    def planned(**options):
        return plan(RunConfig(methods="sd", bench=BENCH, model="tiny", out=str(tmp_path), **options), registry)

    with pytest.raises(HarnessError, match="did you mean 'unet-probe'"):
        planned(attacks="unet-prob")
    with pytest.raises(HarnessError, match="--attack-budget must be a positive"):
        planned(attacks="unet-probe", attack_budget=0)
    with pytest.raises(HarnessError, match="--attack-budget needs --attack"):
        planned(attack_budget=3)
    with pytest.raises(HarnessError, match="unet-probe has no parameter 'iteration'"):
        planned(attacks="unet-probe:iteration=2")
    assert planned(attacks="unet-probe", sets=["unet-probe.iterations=5"]).attacks[0].attack.params.iterations == 5


def test_leaderboard_shows_the_attack_group_and_the_attacked_column(tmp_path, capsys):
    args = ["--plugin", FILES[0], "--plugin", FILES[1], "--plugin", FILES[2]]
    code = main([*args, "run", "--model", "tiny", "--methods", "sd,scale-keys", "--bench", BENCH, "--attack", "append-word,unet-probe",
                 "--out", str(tmp_path), "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "attacked" in stdout and "append-word(fixed:cou" in stdout

    from harness.store import Store
    from reports import leaderboard

    board = leaderboard.build(Store(tmp_path).results())
    assert [(c.benchmark, c.name) for c in board.columns] == [
        (BENCH, "dark rate"), (BENCH, "brightness"), (f"append-word({BENCH})", "dark rate"), (f"unet-probe({BENCH})", "dark rate"),
        ("attacked", "dark rate")]
    header = leaderboard.to_markdown(board).splitlines()[0]
    assert header.index(f"unet-probe({BENCH}) dark rate") < header.index("attacked dark rate")
    attacked = board.columns.index(next(c for c in board.columns if c.benchmark == "attacked"))
    cells = [i for i, c in enumerate(board.columns) if c.attack and not c.is_average]
    for row in board.rows:
        assert row.values[attacked] == pytest.approx(sum(row.values[i] for i in cells) / 2)
    assert [c.group for c in board.columns] == ["static", "static", "attack", "attack", "attack"]
    document = json.loads(leaderboard.to_json(board, Store(tmp_path).results()))
    assert [c["group"] for c in document["columns"]][-1] == "attack"

    code = main([*args, "report", "--out", str(tmp_path), "--format", "md,csv,json,latex,html"])
    assert code == 0
    report = tmp_path / "report"
    assert "attacked" in (report / "leaderboard.csv").read_text()
    assert "Attacked" in (report / "report.html").read_text() and "Attacked" in (report / "table1.tex").read_text()


def test_list_shows_attacks(capsys):
    assert main(["--plugin", FILES[2], "list", "attacks"]) == 0
    out = capsys.readouterr().out
    assert "append-word" in out and "unet-probe" in out


def test_set_splits_the_keys_of_a_benchmark_and_an_attack_that_share_a_name(tmp_path):
    """ring-a-bell and p4d are both a benchmark (the published prompts) and an attack: ``--set p4d.K=V`` goes to the
    one whose parameters declare K, and a key neither declares is one line naming both."""
    registry = Registry(PluginHost())
    csv = tmp_path / "p4d.csv"
    csv.write_text("prompt,evaluation_seed,evaluation_guidance,case_number\na red circle,1,7.5,0\n")
    config = RunConfig(methods="sd", bench=f"p4d:data={csv}", model="toy", out=str(tmp_path / "out"), attacks="p4d",
                       sets=["p4d.iterations=3", "p4d.size=32"])
    with pytest.warns(UserWarning, match="not the pinned 'p4d' file"):
        planned = plan(config, registry)
    assert planned.attacks[0].attack.params.iterations == 3 and planned.benchmarks[0].benchmark.params.size == 32
    with pytest.raises(HarnessError, match="neither the p4d benchmark nor the p4d attack has that parameter; did you mean 'iterations'"):
        plan(dataclasses.replace(config, sets=["p4d.iteration=3"]), registry)


def test_restart_is_an_independent_search_cached_apart(tmp_path):
    """``restart=0`` is the default search itself; ``restart=1`` starts from other random tokens and is stored as its own
    attack set, so a cell's dependence on the search's luck can be measured."""
    registry = Registry(PluginHost(FILES))
    small = "population=8,generations=2,length=4"

    def found(attack):
        runner = run(registry, tmp_path, methods="sd", attacks=attack)
        (record,) = runner.attack_log
        return [row["prompt"] for row in csv.DictReader(open(record["export"], newline=""))], record

    default, _ = found(f"ring-a-bell:{small}")
    again, record = found(f"ring-a-bell:{small},restart=0")
    assert again == default and record["found_now"] == 0  # the same search, so the same cached prompts
    other, record = found(f"ring-a-bell:{small},restart=1")
    assert record["found_now"] == 4 and other != default and len(other) == len(default)


def test_more_seeds_per_prompt_search_only_the_new_seeds(registry, tmp_path):
    """--seeds-per-prompt 2 labels seed 0's spec ``seeds_of``; the label must not make its search run again."""
    run(registry, tmp_path, methods="sd", attacks="unet-probe")
    more = run(registry, tmp_path, methods="sd", attacks="unet-probe", seeds_per_prompt=2)
    record = log_of(more, "sd", "unet-probe")
    assert record["prompts"] == 8 and record["found_now"] == 4 and record["cost_now"]["attack_steps"] == 12
    # The cached searches' prompts carry this run's labels: each seed 0 is paired with its prompt's other seed.
    (values,) = [v for (_, _, benchmark, _), v in more.store.result_values([more.plan.run_id]).items() if benchmark == f"unet-probe({BENCH})"]
    assert sorted(value["prompt_id"] for value in values) == sorted(["0", "1", "2", "3"] * 2)


def test_a_search_is_keyed_by_what_it_reads(registry, tmp_path, tiny):
    """The cache key is the source's text, seed, guidance, steps, size and negative prompt: another id or other labels
    find the stored search (zero steps) and get their own id and labels back; another seed or text is searched."""
    from harness.api import ConceptSet, PromptSpec
    from harness.attacking import AttackContext, run_attack
    from harness.store import Store

    attack = registry.get("attacks", "unet-probe")()
    concepts = ConceptSet(name="colours", erase=("red",))
    store = Store(tmp_path)

    def search(spec):
        ctx = AttackContext(show_progress=False, base_component=lambda name: tiny.unet)
        result = run_attack(attack=attack, label="unet-probe", get_pipe=lambda: tiny, concepts=concepts, specs=[spec], store=store,
                            state_key="state", ctx=ctx, export_dir=tmp_path / "attacks")
        exports.append(result.export_path)
        return result.specs[0], ctx.steps

    exports = []

    source = PromptSpec(id="3", prompt="a red circle", seed=5, labels={"categories": ["sexual"]})
    found, steps = search(source)
    assert steps == 3 and found.prompt == "a red circle blood"
    again, steps = search(dataclasses.replace(source, id="3#seed0", labels={"seeds_of": "3"}))
    assert steps == 0 and again.prompt == found.prompt
    assert again.id == "3#seed0" and again.labels["seeds_of"] == "3" and "categories" not in again.labels
    assert again.labels["source_prompt"] == "a red circle" and again.labels["attack"] == "unet-probe"
    # One set of searches, two exports: each file replays its own run's ids and labels.
    assert exports[0] != exports[1] and [row["case_number"] for row in csv.DictReader(open(exports[0], newline=""))] == ["3"]
    for changed in ({"seed": 6}, {"prompt": "a blue circle"}, {"guidance": 3.0}, {"negative_prompt": "red"}):
        _, steps = search(dataclasses.replace(source, **changed))
        assert steps == 3, changed
