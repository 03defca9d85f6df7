"""A plugin author's mistakes are reported in one line that names the plugin's object and what it must do, before
any work where they can be found before it, and never leave a half-written result in the store."""

from pathlib import Path

import pytest
from one_line import one_line

from harness.cli import main
from harness.store import Store

MISTAKES = str(Path(__file__).parent / "plugins" / "author_mistakes.py")


def run(capsys, tmp_path, bench: str):
    out = tmp_path / "out"
    code = main(["--plugin", MISTAKES, "run", "--model", "tiny", "--methods", "sd", "--bench", bench, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    return code, err, out


@pytest.mark.parametrize(("mistake", "says"), [
    ("duplicate-ids", "benchmark 'mistaken:mistake=duplicate-ids': two prompts have the id '0'"),
    ("strings", "prompts() must return harness.api.PromptSpec objects; item 0 is a str"),
])
def test_a_benchmarks_bad_prompts_are_refused_before_any_image(capsys, tmp_path, mistake, says):
    code, err, out = run(capsys, tmp_path, f"mistaken:mistake={mistake}")
    one_line(code, err, says)
    assert not (out / "cache" / "images").exists()


def test_a_benchmark_without_metrics_is_refused_before_any_image(capsys, tmp_path):
    code, err, out = run(capsys, tmp_path, "no-metrics")
    one_line(code, err, "benchmark 'no-metrics' lists no metrics")
    assert not (out / "cache" / "images").exists()


@pytest.mark.parametrize(("scorer", "got"), [("too-few", "2 results for 3 images"), ("too-many", "4 results for 3 images"), ("nothing", "a NoneType for 3 images")])
def test_a_scorer_returning_the_wrong_number_of_results_is_one_line_and_stores_no_result(capsys, tmp_path, scorer, got):
    prompts = tmp_path / "p.csv"
    prompts.write_text("prompt,evaluation_seed\na cat,1\na dog,2\na bird,3\n", encoding="utf-8")
    code, err, out = run(capsys, tmp_path, f"csv:path={prompts},metrics={scorer}:mean")
    one_line(code, err, f"scorer '{scorer}' returned {got}", "one dict per image")
    with Store(out, create=False) as store:
        assert not store.has_results()


def test_the_same_plugin_without_mistakes_runs(capsys, tmp_path):
    code, err, out = run(capsys, tmp_path, "mistaken")
    assert code == 0, err
    with Store(out, create=False) as store:
        assert [r.metric for r in store.results()] == ["counted:mean"]


def test_a_result_and_its_per_image_values_are_written_together_or_not_at_all(tmp_path):
    """A failure while writing the per-image values (here: two values for one prompt, which the schema refuses) leaves
    no result behind, where it used to leave one whose intervals silently went missing."""
    import sqlite3

    fields = dict(run_id="run-a", method="sd", benchmark="b", metric="counted:mean", value=0.5, n=2, lower_is_better=False,
                  name="brightness", description="mean", unit="score", adversarial=False, needs_reference=False,
                  model_state="sd", unet_evals_per_image=8.0)
    with Store(tmp_path) as store:
        store.start_run("run-a", {})
        with pytest.raises(sqlite3.IntegrityError):
            store.add_result(**fields, values=[("0", "0", 1, "k0", 0.4), ("0", "0", 1, "k1", 0.6)])
        assert not store.has_results() and store.result_values() == {}
        store.add_result(**fields, values=[("0", "0", 1, "k0", 0.4), ("1", "1", 2, "k1", 0.6)])
        assert [r.value for r in store.results()] == [0.5]
        assert [v["value"] for v in store.result_values()["run-a", "sd", "b", "counted:mean"]] == [0.4, 0.6]


@pytest.mark.skipif(not hasattr(BaseException, "add_note"), reason="exception notes are Python 3.11+")
def test_a_bug_in_a_methods_edit_keeps_its_traceback_and_names_the_method(tmp_path):
    concepts = tmp_path / "red.json"
    concepts.write_text('{"name": "red", "erase": ["red"]}')
    with pytest.raises(ValueError, match="my bug") as raised:
        main(["--plugin", MISTAKES, "run", "--model", "tiny", "--methods", "sd,boom", "--bench", "mistaken",
              "--concepts", str(concepts), "--out", str(tmp_path / "out"), "--no-progress"])
    assert raised.value.__notes__ == [f"raised in method 'boom' (Boom.edit, {MISTAKES}): a bug in that method's code"]


@pytest.mark.skipif(not hasattr(BaseException, "add_note"), reason="exception notes are Python 3.11+")
@pytest.mark.parametrize(("bench", "attack", "note"), [
    ("mistaken:mistake=raises", None, "raised in benchmark 'mistaken' (Mistaken.prompts, {}): a bug in that benchmark's code"),
    ("csv:path={csv},metrics=raising-scorer:mean", None, "raised in scorer 'raising-scorer' (RaisingScorer.score, {}): a bug in that scorer's code"),
    ("csv:path={csv},metrics=counted:broken", None, "raised in scorer 'counted' (Counted.metric 'broken', {}): a bug in that scorer's code"),
    ("csv:path={csv},metrics=counted:rate", "raising-attack", "raised in attack 'raising-attack' (RaisingAttack.attack, {}): a bug in that attack's code"),
])
def test_a_bug_in_any_plugins_code_keeps_its_traceback_and_names_the_plugin(tmp_path, bench, attack, note):
    """Only a method's edit named its plugin; a benchmark's prompts(), a scorer, a metric or an attack raising gave a
    bare traceback that did not say whose code failed."""
    prompts = tmp_path / "p.csv"
    prompts.write_text("prompt,evaluation_seed\na cat,1\n", encoding="utf-8")
    command = ["--plugin", MISTAKES, "run", "--model", "tiny", "--methods", "sd", "--bench", bench.format(csv=prompts),
               "--out", str(tmp_path / "out"), "--no-progress", *(["--attack", attack] if attack else [])]
    with pytest.raises(ValueError, match="a plugin's own bug") as raised:
        main(command)
    assert raised.value.__notes__ == [note.format(MISTAKES)]


def test_an_attack_with_nothing_to_attack_is_refused_before_any_work(capsys, tmp_path):
    """The only metric is higher-is-better (brightness): no attack cell could be made, which used to pass in silence."""
    code = main(["--plugin", MISTAKES, "run", "--model", "tiny", "--methods", "sd", "--bench", "mistaken", "--attack",
                 "ring-a-bell:length=8", "--out", str(tmp_path / "out"), "--dry-run"])
    err = capsys.readouterr().err
    one_line(code, err, "--attack has nothing to attack: no benchmark of this run (mistaken) has a per-image erasure metric")


def test_an_attack_whose_budget_param_names_no_parameter_is_one_line(capsys, tmp_path):
    code = main(["--plugin", MISTAKES, "run", "--model", "tiny", "--bench", "mistaken", "--attack", "misnamed-budget", "--attack-budget", "3", "--out", str(tmp_path / "out"), "--dry-run"])
    err = capsys.readouterr().err
    one_line(code, err, "attack 'misnamed-budget' names 'iters' as its budget_param, which is not one of its parameters (iterations)")


def test_a_scorer_returning_values_json_cannot_store_is_one_line(capsys, tmp_path):
    prompts = tmp_path / "p.csv"
    prompts.write_text("prompt,evaluation_seed\na cat,1\n", encoding="utf-8")
    code, err, out = run(capsys, tmp_path, f"csv:path={prompts},metrics=set-values:mean")
    one_line(code, err, "scorer 'set-values' returned a result JSON cannot store", "return plain Python values")


def test_numpy_values_a_scorer_returns_are_stored_as_the_numbers_they_hold(capsys, tmp_path):
    """A numpy float32 was refused after every image was generated; it is the number it holds."""
    from harness.store import Store

    prompts = tmp_path / "p.csv"
    prompts.write_text("prompt,evaluation_seed\na cat,1\na dog,2\n", encoding="utf-8")
    code, err, _ = run(capsys, tmp_path, f"csv:path={prompts},metrics=numpy-values:mean")
    assert code == 0, err
    with Store(tmp_path / "out") as store:
        (numpy_result,) = store.results()
    code, err, _ = run(capsys, tmp_path / "plain", f"csv:path={prompts},metrics=counted:mean")
    assert code == 0, err
    with Store(tmp_path / "plain" / "out") as store:
        (plain_result,) = store.results()
    assert numpy_result.value == pytest.approx(plain_result.value, rel=1e-6) and numpy_result.n == 2


def test_keep_going_runs_the_other_methods_and_the_same_command_retries_only_the_failed_one(tmp_path, capsys):
    """One method's bug stopped the whole run: `sd` after `boom` never ran and the store had no results."""
    from harness.store import Store

    concepts = tmp_path / "red.json"
    concepts.write_text('{"name": "red", "erase": ["red"]}')
    command = ["--plugin", MISTAKES, "run", "--model", "tiny", "--methods", "boom,sd", "--bench", "mistaken", "--concepts",
               str(concepts), "--out", str(tmp_path / "out"), "--no-progress", "--keep-going"]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "raised in method 'boom'" in err  # the bug keeps its traceback, the plugin named
    assert "harness: method boom failed: ValueError: my bug; going on with the next method (--keep-going)" in err
    assert err.strip().splitlines()[-1] == ("harness: error: 1 of 2 method(s) failed: boom (ValueError: my bug); the other "
                                            "methods' results are stored; fix the cause and run the same command again to "
                                            "retry only what failed")
    with Store(tmp_path / "out") as store:
        assert {r.method for r in store.results()} == {"sd"}
        assert set(store.run_status().values()) == {"running"}  # unfinished, as a killed run: reports say so
        (run_id,) = store.run_status()
        assert "model_states" not in store.read_manifest(run_id)  # no finishing keys: merge takes a finished copy's
    # again: sd's cell is stored, boom fails again, nothing else is made
    assert main(command) == 2
    assert "2 of 2" not in capsys.readouterr().err
    # without --keep-going the first failure stops the run, as before
    with pytest.raises(ValueError, match="my bug"):
        main([*command[:-1], "--out", str(tmp_path / "other")])  # the last --out counts


def test_an_attack_whose_reads_names_no_component_is_one_line(capsys, tmp_path):
    """reads = () was cached under the text encoder's state without a word; an unknown name likewise."""
    code = main(["--plugin", MISTAKES, "run", "--model", "tiny", "--bench", "mistaken", "--attack", "reads-nothing",
                 "--out", str(tmp_path / "out"), "--dry-run"])
    err = capsys.readouterr().err
    one_line(code, err, "attack 'reads-nothing' declares reads=(); it must name the components its search depends on, "
                        "from text_encoder, unet")
