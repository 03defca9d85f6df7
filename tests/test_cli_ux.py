"""Command-line usability: mistakes found before any model loads, one-line errors that say how to fix them, and a
store that is whole on disk when a command ends.  Every run here is a ``--dry-run`` or a tiny one."""

import json
from pathlib import Path

import pytest

from harness.cli import main

PLUGINS = Path(__file__).parent / "plugins"
BRIGHTNESS = str(PLUGINS / "brightness.py")


def cli(capsys, *args):
    code = main(["--plugin", BRIGHTNESS, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_csv(directory: Path) -> Path:
    path = directory / "p.csv"
    path.write_text("prompt,evaluation_seed\na cat,1\na dog,2\n", encoding="utf-8")
    return path


def one_error(code: int, stderr: str, *says: str) -> None:
    assert code == 2 and stderr.count("\n") == 1 and stderr.startswith("harness: error: "), stderr
    assert "Traceback" not in stderr
    for text in says:
        assert text in stderr, stderr


# --------------------------------------------------------------------------- M1: found by --dry-run, before any load


def test_dry_run_refuses_an_unknown_scorer_in_a_benchmarks_metrics(tmp_path, capsys):
    path = write_csv(tmp_path)
    code, stdout, stderr = cli(capsys, "run", "--model", "tiny", "--bench", f"csv:path={path},metrics=brightnes:mean",
                               "--out", str(tmp_path / "out"), "--dry-run")
    one_error(code, stderr, "unknown scorer 'brightnes'", "did you mean 'brightness'?")
    assert stdout == ""


@pytest.mark.parametrize("method, says", [
    ("esd-x:optimizer=sgd", "esd-x.optimizer must be one of adam, adamw; got 'sgd'"),
    ("esd-x:parameters=foo", "esd-x.parameters must be one of paper, diffusers, strict; got 'foo'"),
    ("esd-u:parameters=strict", "esd-u: parameters='strict': choose 'paper' or 'diffusers'"),
    ("trce-t:tokens=foo", "trce-t: tokens='foo'"),
    ("trce-t:captions=no-such-file.txt", "trce-t: captions file 'no-such-file.txt' does not exist"),
    ("mace:captions=no-such-file.txt", "mace: captions file 'no-such-file.txt' does not exist"),
    ("trce-v:distance=l3", "trce-v.distance must be one of mse, l2; got 'l3'"),
    ("trce:optimizer=sgd", "trce-v.optimizer must be one of adam, adamw; got 'sgd'"),
    ("safegen:optimizer=sgd", "safegen.optimizer must be one of adamw, adam; got 'sgd'"),
])
def test_dry_run_refuses_a_value_the_method_would_refuse_only_after_sampling(tmp_path, capsys, method, says):
    """Each of these passed --dry-run and failed once base images were made or trajectories sampled (on SD, hours)."""
    path = write_csv(tmp_path)
    code, _, stderr = cli(capsys, "run", "--model", "tiny", "--methods", method, "--bench",
                          f"csv:path={path},metrics=brightness:mean,concepts=colours", "--out", str(tmp_path / "out"), "--dry-run")
    one_error(code, stderr, says)
    assert stderr.count("adamw") <= 1 and "choose from" not in stderr  # the choices are said once


# safree: its concept_negative_prompt switch (the official run's) names no concept; a check by parameter name let it pass.
@pytest.mark.parametrize("method", ["uce", "safree"])
def test_dry_run_refuses_a_concept_set_with_nothing_to_erase(tmp_path, capsys, method):
    path, concepts = write_csv(tmp_path), tmp_path / "empty.json"
    concepts.write_text(json.dumps({"name": "x"}))
    code, _, stderr = cli(capsys, "run", "--model", "tiny", "--methods", method, "--bench", f"csv:path={path},metrics=brightness:mean",
                          "--concepts", str(concepts), "--out", str(tmp_path / "out"), "--dry-run")
    one_error(code, stderr, f"method '{method}': concept set 'x' has nothing to erase")


def test_a_method_given_its_own_concepts_runs_on_an_empty_concept_set(tmp_path, capsys):
    path, concepts = write_csv(tmp_path), tmp_path / "empty.json"
    concepts.write_text(json.dumps({"name": "x"}))
    code, stdout, stderr = cli(capsys, "run", "--model", "tiny", "--methods", "sld:safety_concept=red",
                               "--bench", f"csv:path={path},metrics=brightness:mean", "--concepts", str(concepts),
                               "--out", str(tmp_path / "out"), "--dry-run")
    assert code == 0, stderr
    assert "methods: sld:safety_concept=red" in stdout


# --------------------------------------------------------------------------- M2: an interrupt says what is redone


def test_an_interrupt_while_sampling_says_the_batch_in_progress_is_made_again(tmp_path, capsys, monkeypatch):
    from harness.engine import Engine

    def interrupted(self, specs, state):
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "sample", interrupted)
    path = write_csv(tmp_path)
    code, _, stderr = cli(capsys, "run", "--model", "tiny", "--bench", f"csv:path={path},metrics=brightness:mean",
                          "--batch-size", "2", "--out", str(tmp_path / "out"), "--no-progress")
    assert code == 130
    # Nothing had finished: no hint to report it (report would say the store has no results yet).
    assert stderr.splitlines()[-1] == ("harness: interrupted; finished work is stored except the batch in progress (2 images, "
                                       "made again), run the same command again to resume")


def test_an_interrupt_after_a_finished_cell_points_to_the_results_so_far(tmp_path, capsys, monkeypatch):
    from harness import runner

    path, out = write_csv(tmp_path), tmp_path / "out"
    run = ("run", "--model", "tiny", "--bench", f"csv:path={path},metrics=brightness:mean", "--out", str(out), "--no-progress")
    assert cli(capsys, *run)[0] == 0
    finish = runner.Runner.execute

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.Runner, "execute", interrupted)
    code, _, stderr = cli(capsys, *run, "--run-name", "second")  # the store holds the first run's results
    monkeypatch.setattr(runner.Runner, "execute", finish)
    assert code == 130
    assert stderr.splitlines()[-1] == ("harness: interrupted; finished work is stored, run the same command again to resume; "
                                       f"`harness report --out {out}` shows the results so far")
    code, stdout, _ = cli(capsys, "report", "--out", str(out))
    assert code == 0 and "sd" in stdout


# --------------------------------------------------------------------------- M3: harness.db alone holds the results


def results_in_copy_of_db_alone(out: Path, tmp_path: Path) -> int:
    """How many results a copy of ``harness.db`` holds without its ``-wal``/``-shm`` files (what a user copies)."""
    import shutil
    import sqlite3

    copy = tmp_path / "copy.db"
    shutil.copyfile(out / "harness.db", copy)
    db = sqlite3.connect(copy)
    try:
        return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    finally:
        db.close()


def test_a_finished_run_leaves_its_results_in_harness_db_itself(tmp_path, capsys):
    path, out = write_csv(tmp_path), tmp_path / "out"
    code, _, stderr = cli(capsys, "run", "--model", "tiny", "--bench", f"csv:path={path},metrics=brightness:mean",
                          "--out", str(out), "--no-progress")
    assert code == 0, stderr
    assert not (out / "harness.db-wal").exists()
    assert results_in_copy_of_db_alone(out, tmp_path) > 0


def test_an_interrupted_run_closes_its_store_too(tmp_path, capsys, monkeypatch):
    from harness.engine import Engine

    def interrupted(self, specs, state):
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "sample", interrupted)
    path, out = write_csv(tmp_path), tmp_path / "out"
    code, _, _ = cli(capsys, "run", "--model", "tiny", "--bench", f"csv:path={path},metrics=brightness:mean",
                     "--out", str(out), "--no-progress")
    assert code == 130
    assert (out / "harness.db").exists() and not (out / "harness.db-wal").exists()


# --------------------------------------------------------------------------- M4: the data hint in run's own words


def test_a_missing_benchmark_file_tells_run_users_the_option_run_accepts(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "no-data"))  # nothing cached; HF_HUB_OFFLINE=1 (conftest)
    code, _, stderr = cli(capsys, "run", "--model", "tiny", "--bench", "i2p", "--out", str(tmp_path / "out"), "--dry-run")
    one_error(code, stderr, "cannot download 'i2p': offline", "pass --bench i2p:data=PATH, or put it at")
    assert "--data PATH" not in stderr


# --------------------------------------------------------------------------- M5: --set that would change nothing


def run_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["run", "--model", "tiny", "--bench", f"csv:path={write_csv(tmp_path)},metrics=brightness:mean",
            "--concepts", "colours", "--out", str(tmp_path / "out"), "--dry-run", *extra]


@pytest.mark.parametrize(("extra", "says"), [
    (["--methods", "sd", "--set", "uce.lamb=0.1"],
     "--set uce.lamb=0.1 changes nothing: --methods names sd, not uce; add uce to --methods or drop the --set"),
    (["--methods", "uce", "--set", "trce-t.lamb=0.1"], "--methods names uce, not trce-t"),
    (["--methods", "uce:lamb=0.1", "--set", "uce.lamb=0.2"], "uce.lamb is given twice, uce:lamb=0.1 and --set uce.lamb=0.2; keep one"),
    (["--methods", "trce:trce-t.lamb=0.1", "--set", "trce-t.lamb=0.2"], "trce-t.lamb is given twice, trce:trce-t.lamb=0.1 and --set trce-t.lamb=0.2; keep one"),
    (["--set", "ring-a-bell.generations=3"], "the command has no --attack; add ring-a-bell to --attack"),
])
def test_a_set_that_would_be_ignored_or_dropped_is_refused(tmp_path, capsys, extra, says):
    code, _, stderr = cli(capsys, *run_args(tmp_path, *extra))
    one_error(code, stderr, says)


@pytest.mark.parametrize("extra", [["--methods", "uce:lamb=0.1", "--set", "uce.lamb=0.10"],
                                   ["--methods", "uce:lamb=1e-1", "--set", "uce.lamb=.1"]])
def test_one_value_written_two_ways_is_not_two_values(tmp_path, capsys, extra):
    code, stdout, stderr = cli(capsys, *run_args(tmp_path, *extra))
    assert code == 0, stderr
    assert "methods: uce:lamb=" in stdout


def test_a_set_for_a_part_of_a_composition_in_the_run_still_applies(tmp_path, capsys):
    code, stdout, stderr = cli(capsys, *run_args(tmp_path, "--methods", "trce", "--set", "trce-t.lamb=0.02"))
    assert code == 0, stderr
    assert "methods: trce:trce-t.lamb=0.02" in stdout


# --------------------------------------------------------------------------- L1: suggestions that help


@pytest.mark.parametrize(("extra", "says"), [
    (["--methods", "esd"], "unknown method 'esd'; did you mean 'esd-u' or 'esd-x'?"),
    (["--methods", "TRCE"], "unknown method 'TRCE'; did you mean 'trce'?"),
    (["--methods", "brightness"], "unknown method 'brightness'; 'brightness' is a scorer, which a benchmark's metrics choose"),
    (["--model", "tinyy"], "--model 'tinyy' is neither a backbone nor a folder; did you mean 'tiny'?"),  # the last --model counts
])
def test_suggestions_know_prefixes_case_and_other_kinds(tmp_path, capsys, extra, says):
    code, _, stderr = cli(capsys, *run_args(tmp_path, *extra))
    one_error(code, stderr, says)


def test_list_params_suggests_the_names_a_prefix_begins(capsys):
    code, _, stderr = cli(capsys, "list", "--params", "esd")
    one_error(code, stderr, "did you mean 'esd-u' or 'esd-x'?")


# --------------------------------------------------------------------------- L3: SIGTERM as Ctrl-C


def test_sigterm_during_a_run_says_so_in_one_line_and_exits_143(tmp_path, capsys, monkeypatch):
    import os
    import signal

    from harness.engine import Engine

    def terminated(self, specs, state):
        os.kill(os.getpid(), signal.SIGTERM)  # what `kill` or Slurm sends mid-batch
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(Engine, "sample", terminated)
    before = signal.getsignal(signal.SIGTERM)
    path, out = write_csv(tmp_path), tmp_path / "out"
    code, _, stderr = cli(capsys, "run", "--model", "tiny", "--bench", f"csv:path={path},metrics=brightness:mean",
                          "--batch-size", "2", "--out", str(out), "--no-progress")
    assert code == 143
    assert stderr.splitlines()[-1].startswith("harness: terminated; finished work is stored except the batch in progress (2 images")
    assert signal.getsignal(signal.SIGTERM) is before  # main() leaves the caller's handler as it was
    assert not (out / "harness.db-wal").exists()


# --------------------------------------------------------------------------- L4: a list option given twice


@pytest.mark.parametrize("twice", [["--methods", "sd", "--methods=uce"], ["--bench", "toy-implicit", "--bench", "toy-preserve"]])
def test_a_list_option_given_twice_is_refused_not_overwritten(tmp_path, capsys, twice):
    bench = [] if twice[0] == "--bench" else ["--bench", "toy-implicit"]
    code, _, stderr = cli(capsys, "run", "--model", "toy", *bench, *twice, "--out", str(tmp_path / "out"), "--dry-run")
    first, second = twice[1], twice[-1].split("=")[-1]
    one_error(code, stderr, f"{twice[0]} is given twice ({first} and {second}); name them all in one comma list: "
                            f"{twice[0]} {first},{second}")


@pytest.mark.parametrize(("args", "says"), [
    (["run", "--methods", "uce:lamb=0.1,lamb=0.2"], "--methods: uce.lamb is given twice ('0.1' and '0.2'); keep one"),
    (["run", "--methods", "uce", "--set", "uce.lamb=0.1", "--set", "uce.lamb=0.2"], "--set uce.lamb is given twice ('0.1' and '0.2')"),
    (["erase", "--method", "uce", "--concepts", "toy-red", "--set", "uce.lamb=0.1", "--set", "uce.lamb=0.2"],
     "--set uce.lamb is given twice ('0.1' and '0.2')"),
])
def test_a_parameter_given_twice_is_refused_not_overwritten(tmp_path, capsys, args, says):
    """Last-wins kept the second value silently (the manifest said 0.2 where the user may have meant 0.1)."""
    extra = ["--bench", "toy-explicit", "--dry-run"] if args[0] == "run" else ["--save", str(tmp_path / "never-made")]
    code, _, stderr = cli(capsys, *args, "--model", "tiny", *extra, "--out", str(tmp_path / "out"))
    one_error(code, stderr, says)
    assert not (tmp_path / "never-made").exists()


# --------------------------------------------------------------------------- L2, L5, L6: small ones


@pytest.mark.parametrize(("methods", "says"), [
    ("uce++sd", "--methods item 'uce++sd' has an empty part"),
    ("uce+", "--methods item 'uce+' has an empty part"),
])
def test_an_empty_composition_part_is_named_as_such(tmp_path, capsys, methods, says):
    code, _, stderr = cli(capsys, *run_args(tmp_path, "--methods", methods))
    one_error(code, stderr, says)


def test_a_header_only_csv_is_named_in_the_error(tmp_path, capsys):
    path = tmp_path / "header.csv"
    path.write_text("prompt,evaluation_seed\n", encoding="utf-8")
    code, _, stderr = cli(capsys, "run", "--model", "tiny", "--bench", f"csv:path={path},metrics=brightness:mean",
                          "--out", str(tmp_path / "out"), "--dry-run")
    one_error(code, stderr, f"benchmark 'csv' has no prompts ({path} has none)")


def test_out_naming_a_file_is_refused_by_dry_run_too(tmp_path, capsys):
    (tmp_path / "afile").write_text("mine")
    code, _, stderr = cli(capsys, *run_args(tmp_path, "--out", str(tmp_path / "afile")))
    one_error(code, stderr, f"--out {tmp_path / 'afile'} is a file")
    assert (tmp_path / "afile").read_text() == "mine"


def test_no_command_prints_help_and_exits_2(capsys):
    code, stdout, stderr = cli(capsys)
    assert code == 2 and stdout == "" and "usage: harness" in stderr
    code, stdout, stderr = cli(capsys, "toy")  # a plugin's command group: the same rule
    assert code == 2 and stdout == "" and "usage: harness toy" in stderr and "train" in stderr


def test_toy_train_help_lists_every_training_setting_without_importing_torch(capsys):
    """The settings were listed only by an unknown --set; the help reads them from train.py's source (importing it
    would import torch for every command's parser)."""
    import dataclasses

    from benchmarks.toyworld import plugin
    from benchmarks.toyworld.train import TrainConfig

    assert plugin._train_settings() == [field.name for field in dataclasses.fields(TrainConfig)]
    with pytest.raises(SystemExit):
        main(["toy", "train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert "unet_steps, unet_batch, unet_lr," in shown and "context_conflict" in shown


def test_check_that_finds_damage_suggests_repair(tmp_path, capsys):
    path, out = write_csv(tmp_path), tmp_path / "out"
    code, _, stderr = cli(capsys, "run", "--model", "tiny", "--bench", f"csv:path={path},metrics=brightness:mean",
                          "--out", str(out), "--no-progress")
    assert code == 0, stderr
    image = next((out / "cache" / "images").glob("*/*.png"))
    image.write_bytes(image.read_bytes()[:20])
    code, _, stderr = cli(capsys, "check", "--out", str(out))
    assert code == 1
    assert "harness: 1 damaged file(s);" in stderr and f"`harness check --out {out} --repair` regenerates damaged files" in stderr


def test_a_store_nobody_can_write_is_still_read_by_every_reading_command(tmp_path, capsys, monkeypatch):
    """An archived or shared store on a read-only mount: report (--json, or --dest elsewhere), compare, export, check
    and run --dry-run read it (as an immutable database: no -wal or -shm file is made beside it); a report that would
    go under it says where to write instead.  Simulated by the write probe failing as a read-only mount's does (a
    test may run as root, whom file modes do not stop)."""
    import harness.store

    path, out = write_csv(tmp_path), tmp_path / "out"
    bench = f"csv:path={path},metrics=brightness:mean,concepts=colours"
    code, _, stderr = cli(capsys, "run", "--model", "tiny", "--methods", "sd,uce", "--bench", bench, "--out", str(out), "--no-progress")
    assert code == 0, stderr
    before = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr(harness.store, "unwritable", lambda folder: "Read-only file system")

    code, stdout, stderr = cli(capsys, "report", "--out", str(out), "--json")
    assert code == 0 and len(json.loads(stdout)) == 2, stderr  # one record per method
    one_error(*cli(capsys, "report", "--out", str(out))[::2], "is read-only here", "--dest")
    code, _, stderr = cli(capsys, "report", "--out", str(out), "--dest", str(tmp_path / "elsewhere"), "--format", "md")
    assert code == 0 and (tmp_path / "elsewhere" / "leaderboard.md").exists(), stderr
    code, stdout, stderr = cli(capsys, "compare", "--out", str(out), "sd", "uce")
    assert code == 0 and "uce" in stdout, stderr
    code, _, stderr = cli(capsys, "export", "--out", str(out), "--per-image", str(tmp_path / "v.csv"))
    assert code == 0 and (tmp_path / "v.csv").read_text().count("\n") == 1 + 2 * 2, stderr
    code, stdout, stderr = cli(capsys, "check", "--out", str(out))
    assert code == 0 and "0 damaged" in stdout + stderr, stderr
    code, stdout, stderr = cli(capsys, "run", "--model", "tiny", "--methods", "sd,uce", "--bench", bench, "--out", str(out), "--dry-run")
    assert code == 0 and "4 already in the store" in stdout, stderr
    assert sorted(p.name for p in out.iterdir()) == before
    one_error(*cli(capsys, "run", "--model", "tiny", "--bench", bench, "--out", str(out), "--no-progress")[::2],
              "cannot write to output directory", "choose another --out")


def test_a_read_only_store_whose_newest_results_are_still_in_its_log_shows_them(tmp_path, capsys, monkeypatch):
    """A store copied (or shared) while its write-ahead log still held committed results: read as an immutable file,
    SQLite ignores the log and those results silently vanished.  They are read from a private copy instead."""
    import shutil
    import sqlite3

    import harness.store
    from harness.store import Store

    path, out = write_csv(tmp_path), tmp_path / "out"
    bench = f"csv:path={path},metrics=brightness:mean"
    code, _, stderr = cli(capsys, "run", "--model", "tiny", "--methods", "sd", "--bench", bench, "--out", str(out), "--no-progress")
    assert code == 0, stderr
    writer = Store(out)
    holder = sqlite3.connect(out / "harness.db")  # a second connection keeps SQLite from folding the log in at close
    holder.execute("SELECT count(*) FROM runs").fetchone()
    writer.start_run("run-newest", {})
    writer.db.close()
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("harness.db", "harness.db-wal"):
        shutil.copyfile(out / name, copy / name)
    holder.close()
    assert (copy / "harness.db-wal").stat().st_size > 0
    monkeypatch.setattr(harness.store, "unwritable", lambda folder: "Read-only file system")
    with Store(copy, read_only=True) as store:
        assert "run-newest" in store.run_status()
        snapshot = store._snapshot
    assert snapshot is not None and not snapshot.exists()  # the private copy is gone with the store
    assert sorted(p.name for p in copy.iterdir()) == ["harness.db", "harness.db-wal"]


def test_a_benchmark_naming_no_concept_set_beside_several_says_to_split_the_run(tmp_path, capsys):
    """`--bench paper` with an erasing method: coco names no concept set and the others name four.  The old hint,
    "pass --concepts NAME", erased NAME for every benchmark: Table 2 and the art tables measured the wrong erasure."""
    path = write_csv(tmp_path)
    bench = (f"csv:path={path},metrics=brightness:mean,concepts=colours,csv:path={path},metrics=brightness:mean,concepts=toy-red,"
             f"csv:path={path},metrics=brightness:mean")
    code, _, stderr = cli(capsys, "run", "--model", "tiny", "--methods", "sd,uce", "--bench", bench, "--out", str(tmp_path / "out"), "--dry-run")
    one_error(code, stderr, "names none, while this run's other benchmarks name 2 (colours, toy-red)", "in a run of their own")

    code, stdout, stderr = cli(capsys, "run", "--model", "tiny", "--methods", "sd,uce", "--bench", bench, "--concepts", "colours",
                               "--out", str(tmp_path / "out"), "--dry-run")
    assert code == 0, stderr
    assert f"--concepts colours replaces the concept set these benchmarks name: csv:concepts=toy-red,metrics=brightness:mean,path={path} (toy-red)" in stderr
    assert stderr.count("replaces") == 1  # the benchmark that names colours itself is not listed
