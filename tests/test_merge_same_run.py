"""`harness merge` of stores that did the same run (the same command into other --out folders, on another --device,
one of them killed part-way): a run is the options that define it (harness.runner.RUN_DEFINING), and its manifest
differs between the stores only in where and how it ran, so they merge; a run-defining difference is a conflict."""

import json
import shutil
import sqlite3
from functools import partial
from pathlib import Path

import pytest
from plugin_cli import call, plugin_args

from harness.cli import main

PLUGIN_ARGS = plugin_args("brightness.py", "edits.py", "shared_work.py")
COMMAND = ["run", "--model", "tiny", "--methods", "sd,nap-keys", "--bench", "fixed:count=2"]


harness = partial(call, PLUGIN_ARGS)  # harness(capsys, *args) -> (exit status, stdout, stderr)


def report_values(capsys, out) -> dict:
    code, stdout, err = harness(capsys, "report", "--out", str(out), "--json")
    assert code == 0, err
    return {(r["method"], r["benchmark"], r["metric"]): (r["value"], r["n"], r["unet_evals_per_image"]) for r in json.loads(stdout)}


def manifest(out: Path) -> dict:
    (path,) = (out / "runs").glob("*/manifest.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """``a``: the command; ``b``: the same command on --device cpu with progress bars, its erasure slower; ``killed``:
    the same command, interrupted after its first cell's images."""
    from harness.store import Store

    root = tmp_path_factory.mktemp("same-run")
    with pytest.MonkeyPatch.context() as patch:
        assert main([*PLUGIN_ARGS, *COMMAND, "--out", str(root / "a"), "--no-progress"]) == 0
        patch.setenv("NAP_KEYS_SECONDS", "0.05")
        assert main([*PLUGIN_ARGS, *COMMAND, "--out", str(root / "b"), "--device", "cpu"]) == 0
        original = Store.link_run_images
        linked = []

        def killed_after_one_cell(self, *args, **kwargs):
            if linked:
                raise KeyboardInterrupt
            linked.append(args)
            return original(self, *args, **kwargs)

        patch.setattr(Store, "link_run_images", killed_after_one_cell)
        assert main([*PLUGIN_ARGS, *COMMAND, "--out", str(root / "killed"), "--no-progress"]) == 130
    return root


def test_the_stores_did_one_run_and_differ_where_the_merge_must_not_look(stores):
    """What the merge must take for no conflict is really there (else the tests below would prove nothing)."""
    a, b, killed = manifest(stores / "a"), manifest(stores / "b"), manifest(stores / "killed")
    assert a["run_id"] == b["run_id"] == killed["run_id"]
    assert {key for key in a["config"] if a["config"][key] != b["config"][key]} == {"out", "device", "show_progress"}
    erased = [[part for part in m["model_states"]["nap-keys / colours"] if "erase_seconds" in part][0] for m in (a, b)]
    assert erased[0]["erase_seconds"] < 0.05 <= erased[1]["erase_seconds"]
    assert "model_states" not in killed  # written when the run finishes
    db = sqlite3.connect(stores / "killed" / "harness.db")
    assert db.execute("SELECT status FROM runs").fetchall() == [("running",)]
    db.close()


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a"), ("killed", "a"), ("a", "killed"), ("killed", "b", "a")])
def test_stores_of_one_command_merge_into_the_store_of_that_run(stores, tmp_path, capsys, order):
    merged = tmp_path / "merged"
    code, _, err = harness(capsys, "merge", *(str(stores / name) for name in order), "--into", str(merged))
    assert code == 0, err
    assert report_values(capsys, merged) == report_values(capsys, stores / "a")
    first_finished = next(name for name in order if name != "killed")
    assert manifest(merged) == manifest(stores / first_finished)  # the finished run's, not the killed one's
    db = sqlite3.connect(merged / "harness.db")
    assert db.execute("SELECT status, finished IS NOT NULL FROM runs").fetchall() == [("finished", 1)]
    db.close()
    code, stdout, err = harness(capsys, "check", "--out", str(merged))
    assert code == 0 and "0 damaged, 0 unrecorded, 0 orphaned" in stdout, stdout + err


@pytest.mark.parametrize(("key", "value"), [("limit", 1), ("dtype", "bfloat16"), ("seeds_per_prompt", 2)])
def test_a_run_defining_difference_is_still_a_conflict(stores, tmp_path, capsys, key, value):
    """The same run id with another value of a key that defines the run (here: edited in; a --run-name reused for
    another configuration does it for real) is two runs, in its database row and in its manifest alike."""
    in_row, in_manifest = tmp_path / "row", tmp_path / "manifest"
    for changed in (in_row, in_manifest):
        shutil.copytree(stores / "b", changed)
    db = sqlite3.connect(in_row / "harness.db")
    with db:
        (config,) = db.execute("SELECT config FROM runs").fetchone()
        db.execute("UPDATE runs SET config=?", (json.dumps({**json.loads(config), key: value}),))
    db.close()
    (path,) = (in_manifest / "runs").glob("*/manifest.json")
    data = json.loads(path.read_text())
    data["config"][key] = value
    path.write_text(json.dumps(data))

    code, stdout, err = harness(capsys, "merge", str(stores / "a"), str(in_row), "--into", str(tmp_path / "m1"))
    assert code == 2 and stdout == "" and err.count("\n") == 1, err
    assert err.startswith("harness: error: conflict in runs (id=run-") and "differ in config" in err, err
    code, stdout, err = harness(capsys, "merge", str(stores / "a"), str(in_manifest), "--into", str(tmp_path / "m2"))
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("harness: error: conflict in files: ") and "manifest.json" in err, err
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists()


def test_what_an_attack_cell_measured_is_no_conflict_and_what_it_is_still_is(tmp_path):
    """A manifest's attack cells record this execution's search (found now, its cost, the total cost, the export path
    into its own store); two stores of one command with an attack differ in them (a resumed search finds fewer now)."""
    from harness.merge import _same_file

    cell = {"method": "sd", "benchmark": "append-word(fixed)", "attack": "append-word", "attack_state": "k", "prompts": 2,
            "found_now": 2, "cost_now": {"wall_s": 0.02}, "cost_total": {"wall_s": 0.02}, "export": "/x/attacks/a.csv",
            "attack_set": "s", "unseen_by_search": []}
    base = {"run_id": "run-1", "config": {"methods": "sd", "out": "/x"}, "attack_cells": [cell]}
    paths = []
    for name, data in (("a", base),
                       ("b", {**base, "config": {"methods": "sd", "out": "/y"},
                              "attack_cells": [{**cell, "found_now": 0, "cost_now": {"wall_s": 0}, "cost_total": {"wall_s": 0.3},
                                                "export": "/y/attacks/a.csv"}]}),
                       ("c", {**base, "attack_cells": [{**cell, "prompts": 3}]})):
        path = tmp_path / name / "manifest.json"
        path.parent.mkdir()
        path.write_text(json.dumps(data))
        paths.append(path)
    assert _same_file(paths[0], paths[1])
    assert not _same_file(paths[0], paths[2])


def test_the_machines_kernel_is_no_conflict_and_a_package_version_still_is(tmp_path):
    """Two nodes of one cluster ran the same run: their manifests differ in versions.platform (the kernel build), which
    is where it ran, not what it is; another torch is another run's software, and stays a conflict."""
    from harness.merge import _same_file

    base = {"run_id": "run-1", "config": {"methods": "sd"},
            "versions": {"python": "3.11.2", "platform": "Linux-6.1.0-13-amd64-x86_64-with-glibc2.36", "torch": "2.13.0"}}
    paths = []
    for name, versions in (("a", {}), ("b", {"platform": "Linux-6.8.0-49-generic-x86_64-with-glibc2.39"}), ("c", {"torch": "2.12.0"})):
        path = tmp_path / name / "manifest.json"
        path.parent.mkdir()
        path.write_text(json.dumps({**base, "versions": {**base["versions"], **versions}}))
        paths.append(path)
    assert _same_file(paths[0], paths[1])
    assert not _same_file(paths[0], paths[2])


def test_a_finished_run_merged_into_a_target_that_holds_it_killed_replaces_its_manifest(stores, tmp_path, capsys, monkeypatch):
    import harness.merge as merge_module

    merged = tmp_path / "merged"
    assert harness(capsys, "merge", str(stores / "killed"), "--into", str(merged))[0] == 0
    killed_manifest = manifest(merged)

    # A failure after the files were copied puts the target's own manifest back.
    original = merge_module._Plan.add_store

    def then_the_database_fails(self, source):
        original(self, source)

        def failing():
            raise sqlite3.OperationalError("disk I/O error")

        self.target.transaction = failing

    with monkeypatch.context() as patch:
        patch.setattr(merge_module._Plan, "add_store", then_the_database_fails)
        with pytest.raises(sqlite3.OperationalError):
            merge_module.merge([stores / "a"], merged)
    assert manifest(merged) == killed_manifest

    code, _, err = harness(capsys, "merge", str(stores / "a"), "--into", str(merged))
    assert code == 0, err
    assert manifest(merged) == manifest(stores / "a")
    assert report_values(capsys, merged) == report_values(capsys, stores / "a")
    db = sqlite3.connect(merged / "harness.db")
    assert db.execute("SELECT status, finished IS NOT NULL FROM runs").fetchall() == [("finished", 1)]
    db.close()
