"""`harness merge`: stores made by separate runs merge into the store one run would have made; conflicts change nothing."""

import json
import sqlite3
from functools import partial
from pathlib import Path

import pytest
from plugin_cli import call, plugin_args

from harness.cli import main

PLUGIN_ARGS = plugin_args("brightness.py", "edits.py")


harness = partial(call, PLUGIN_ARGS)  # harness(capsys, *args) -> (exit status, stdout, stderr)


def run(capsys, out, methods):
    code, _, err = harness(capsys, "run", "--model", "tiny", "--methods", methods, "--bench", "fixed:count=4", "--out", str(out), "--no-progress")
    assert code == 0, err


def report_values(capsys, out) -> dict:
    code, stdout, _ = harness(capsys, "report", "--out", str(out), "--json")
    assert code == 0
    return {(r["method"], r["benchmark"], r["metric"]): (r["value"], r["n"], r["unet_evals_per_image"]) for r in json.loads(stdout)}


def snapshot(out: Path) -> dict:
    """Every row of every table and every file's bytes: what 'nothing changed' means."""
    db = sqlite3.connect(out / "harness.db")
    tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    rows = {name: sorted(map(repr, db.execute(f'SELECT * FROM "{name}"'))) for name in tables}
    db.close()
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and not p.name.startswith("harness.db")}
    return {"rows": rows, "files": files}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    for name, methods in (("sd", "sd"), ("edit", "scale-keys"), ("both", "sd,scale-keys")):
        assert main([*PLUGIN_ARGS, "run", "--model", "tiny", "--methods", methods, "--bench", "fixed:count=4", "--out", str(root / name), "--no-progress"]) == 0
    return root


def test_two_single_method_stores_merge_into_the_report_of_one_run_of_both(stores, tmp_path, capsys):
    merged = tmp_path / "merged"
    code, stdout, err = harness(capsys, "merge", str(stores / "sd"), str(stores / "edit"), "--into", str(merged))
    assert code == 0, err
    assert "8 images" in stdout  # 4 prompts × 2 model states
    assert report_values(capsys, merged) == report_values(capsys, stores / "both")
    db = sqlite3.connect(merged / "harness.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 8
    (delta_path,) = db.execute("SELECT delta_path FROM model_states").fetchone()
    assert Path(delta_path).parent == merged / "cache" / "deltas" and Path(delta_path).exists()
    for (path,) in db.execute("SELECT path FROM images"):
        assert (merged / path).exists()
    assert len(list((merged / "runs").glob("*/manifest.json"))) == 2
    code, _, err = harness(capsys, "check", "--out", str(merged))  # every file the merged store records is there and intact
    assert code == 0, err
    # Merging again adds nothing and is not a conflict.
    before = snapshot(merged)
    code, stdout, _ = harness(capsys, "merge", str(stores / "sd"), str(stores / "edit"), "--into", str(merged))
    assert code == 0 and "nothing new" in stdout
    assert snapshot(merged)["files"] == before["files"]


def test_a_conflicting_entry_fails_with_one_line_and_changes_nothing(stores, tmp_path, capsys):
    import shutil

    merged, changed = tmp_path / "merged", tmp_path / "sd-changed"
    assert harness(capsys, "merge", str(stores / "sd"), "--into", str(merged))[0] == 0
    shutil.copytree(stores / "sd", changed)
    db = sqlite3.connect(changed / "harness.db")
    db.execute("UPDATE results SET value = value + 1 WHERE rowid = (SELECT MIN(rowid) FROM results)")
    db.commit()
    db.close()

    before = snapshot(merged)
    # The edit store alone would merge cleanly (new images, a new delta); with the changed copy nothing is merged.
    code, stdout, err = harness(capsys, "merge", str(stores / "edit"), str(changed), "--into", str(merged))
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith("harness: error: conflict in results") and "nothing was merged" in err
    assert snapshot(merged) == before


def test_a_conflict_between_two_sources_leaves_no_new_target(stores, tmp_path, capsys):
    import shutil

    shutil.copytree(stores / "sd", tmp_path / "a")
    db = sqlite3.connect(tmp_path / "a" / "harness.db")
    db.execute("UPDATE raw_scores SET raw='{\"mean\": 0.99}' WHERE rowid = (SELECT MIN(rowid) FROM raw_scores)")
    db.commit()
    db.close()
    code, _, err = harness(capsys, "merge", str(stores / "both"), str(tmp_path / "a"), "--into", str(tmp_path / "new"))
    assert code == 2 and "conflict in raw_scores" in err
    assert not (tmp_path / "new").exists()


def test_bad_sources_fail_with_one_line(stores, tmp_path, capsys):
    code, _, err = harness(capsys, "merge", str(tmp_path / "nowhere"), "--into", str(tmp_path / "m"))
    assert code == 2 and "no results store at" in err and err.count("\n") == 1
    code, _, err = harness(capsys, "merge", str(stores / "sd"), "--into", str(stores / "sd"))
    assert code == 2 and "is the target itself" in err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = harness(capsys, "merge", str(stores / "sd"), "--into", str(blocker / "m"))
    assert code == 2 and "choose another --into" in err and "--out" not in err  # merge has no --out


def test_a_source_store_nobody_can_write_merges(stores, tmp_path, capsys, monkeypatch):
    """An archived store on a read-only mount is a source like any other (simulated: the write probe fails for it)."""
    from harness import store as store_module

    real = store_module.unwritable
    monkeypatch.setattr(store_module, "unwritable", lambda folder: "Read-only file system" if Path(folder) == stores / "edit" else real(folder))
    code, _, err = harness(capsys, "merge", str(stores / "sd"), str(stores / "edit"), "--into", str(tmp_path / "m"))
    assert code == 0, err
    assert report_values(capsys, tmp_path / "m") == report_values(capsys, stores / "both")


def test_a_link_in_a_source_store_is_never_followed(stores, tmp_path, capsys):
    """A store copied from elsewhere may hold a link where an image belongs: merging must not copy what it points
    at (any file readable here) into the merged store."""
    import shutil

    source = tmp_path / "copied"
    shutil.copytree(stores / "sd", source)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the store")
    link = source / "cache" / "images" / "ab" / ("ab" + "0" * 62 + ".png")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(secret)
    merged = tmp_path / "merged"
    code, _, err = harness(capsys, "merge", str(source), str(stores / "edit"), "--into", str(merged))
    assert code == 0, err
    copied = merged / link.relative_to(source)
    assert not copied.exists() and not copied.is_symlink()
    assert not any(p.is_file() and p.read_bytes() == secret.read_bytes() for p in merged.rglob("*"))


def test_an_image_key_with_a_path_in_it_names_no_file(tmp_path):
    from harness.api import HarnessError
    from harness.store import Store

    with Store(tmp_path / "s") as store, pytest.raises(HarnessError, match="is not an image key"):
        store.image_path("../../../etc/passwd")
