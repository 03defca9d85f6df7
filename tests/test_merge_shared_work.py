"""`harness merge` of stores that did a piece of the same work: one model state erased in both, a text-encoder attack
whose prompts every method shares, a method cache recomputed with other bits.  They differ in how the work went
(timings, paths into their own store), not in what it made, so they merge; a real difference is still a conflict."""

import json
import shutil
import sqlite3
from functools import partial
from pathlib import Path

import pytest
from plugin_cli import call, plugin_args

from harness.cli import main

PLUGIN_ARGS = plugin_args("brightness.py", "edits.py", "attacks_kit.py", "shared_work.py")


harness = partial(call, PLUGIN_ARGS)  # harness(capsys, *args) -> (exit status, stdout, stderr)


def report_values(capsys, out) -> dict:
    code, stdout, err = harness(capsys, "report", "--out", str(out), "--json")
    assert code == 0, err
    return {(r["method"], r["benchmark"], r["metric"]): (r["value"], r["n"], r["unet_evals_per_image"]) for r in json.loads(stdout)}


def rows(out: Path, sql: str) -> list:
    db = sqlite3.connect(out / "harness.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def nap_state(out: Path) -> tuple[str, dict]:
    ((key, metadata),) = rows(out, "SELECT key, metadata FROM model_states WHERE method='nap-keys'")
    return key, json.loads(metadata)


def method_cache(out: Path) -> bytes:
    (path,) = (out / "cache" / "methods" / "nap-stats").glob("*.safetensors")
    return path.read_bytes()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """``a``: sd and nap-keys; ``b``: nap-keys+shift-keys, which erases nap-keys's state again, more slowly."""
    root = tmp_path_factory.mktemp("shared")
    for name, methods, seconds in (("a", "sd,nap-keys", "0"), ("b", "nap-keys+shift-keys", "0.05")):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("NAP_KEYS_SECONDS", seconds)
            assert main([*PLUGIN_ARGS, "run", "--model", "tiny", "--methods", methods, "--bench", "fixed:count=3", "--attack", "append-word",
                         "--out", str(root / name), "--no-progress"]) == 0
    return root


def test_the_stores_did_the_same_work_and_measured_it_differently(stores):
    """What the merge must not see as a conflict is really there (else the tests below would prove nothing)."""
    a, b = stores / "a", stores / "b"
    (key_a, metadata_a), (key_b, metadata_b) = nap_state(a), nap_state(b)
    assert key_a == key_b and metadata_a["erase_seconds"] != metadata_b["erase_seconds"] and metadata_a["seconds"] != metadata_b["seconds"]
    assert (a / "cache" / "deltas" / f"{key_a}.safetensors").read_bytes() == (b / "cache" / "deltas" / f"{key_b}.safetensors").read_bytes()
    assert (a / "cache" / "states" / f"{key_a}.json").read_bytes() != (b / "cache" / "states" / f"{key_b}.json").read_bytes()
    assert method_cache(a) != method_cache(b)
    query = "SELECT key, spec, cost FROM attack_prompts ORDER BY key"
    prompts_a, prompts_b = rows(a, query), rows(b, query)
    assert [row[:2] for row in prompts_a] == [row[:2] for row in prompts_b] and prompts_a != prompts_b  # same prompts, other wall_s
    (export_a,), (export_b,) = rows(a, "SELECT export_path FROM attack_sets"), rows(b, "SELECT export_path FROM attack_sets")
    assert export_a != export_b


def check_merged(capsys, merged: Path, stores: Path) -> None:
    values = report_values(capsys, merged)
    for source in ("a", "b"):  # every cell reads in the merged store as in the store that made it
        own = report_values(capsys, stores / source)
        assert own and {cell: values.get(cell) for cell in own} == own
    # The first store's version of the shared work is kept, the state's row and its record together.
    assert nap_state(merged) == nap_state(stores / "a")
    key = nap_state(merged)[0]
    assert (merged / "cache" / "states" / f"{key}.json").read_bytes() == (stores / "a" / "cache" / "states" / f"{key}.json").read_bytes()
    assert method_cache(merged) == method_cache(stores / "a")
    # The export is the merged store's own, not a path into a source store.
    ((export,),) = rows(merged, "SELECT export_path FROM attack_sets")
    assert Path(export).parent == merged / "attacks" and Path(export).is_file()
    code, _, err = harness(capsys, "check", "--out", str(merged))  # every recorded file is there and matches its row
    assert code == 0, err


def test_stores_that_shared_work_merge_and_report_as_each_source(stores, tmp_path, capsys):
    merged = tmp_path / "merged"
    code, stdout, err = harness(capsys, "merge", str(stores / "a"), str(stores / "b"), "--into", str(merged))
    assert code == 0, err
    check_merged(capsys, merged, stores)
    # Merging again adds nothing and is not a conflict.
    code, stdout, err = harness(capsys, "merge", str(stores / "a"), str(stores / "b"), "--into", str(merged))
    assert code == 0 and "nothing new" in stdout, err


def test_a_store_that_shared_work_merges_into_a_target_that_has_it(stores, tmp_path, capsys):
    merged = tmp_path / "merged"
    assert harness(capsys, "merge", str(stores / "a"), "--into", str(merged))[0] == 0
    code, _, err = harness(capsys, "merge", str(stores / "b"), "--into", str(merged))
    assert code == 0, err
    check_merged(capsys, merged, stores)


def test_other_erased_weights_under_the_same_state_are_still_a_conflict(stores, tmp_path, capsys):
    """A delta with other bytes, recorded as such, is another result, not another measurement."""
    changed = tmp_path / "b-changed"
    shutil.copytree(stores / "b", changed)
    key = nap_state(changed)[0]
    delta = changed / "cache" / "deltas" / f"{key}.safetensors"
    from safetensors.torch import load_file, save_file

    save_file({name: tensor * 2 for name, tensor in load_file(str(delta)).items()}, str(delta))
    db = sqlite3.connect(changed / "harness.db")
    # Recorded as the store's own bytes, as an erasure that made them would have.
    db.execute("UPDATE files SET sha256=?, size=? WHERE path=?", (_sha256(delta), delta.stat().st_size, f"cache/deltas/{key}.safetensors"))
    db.commit()
    db.close()
    code, stdout, err = harness(capsys, "merge", str(stores / "a"), str(changed), "--into", str(tmp_path / "merged"))
    assert code == 2 and stdout == "" and err.count("\n") == 1
    assert err.startswith(f"harness: error: conflict in files (path=cache/deltas/{key}.safetensors)") and "nothing was merged" in err
    assert not (tmp_path / "merged").exists()


def test_other_metadata_than_measured_values_is_still_a_conflict(stores, tmp_path, capsys):
    changed = tmp_path / "b-changed"
    shutil.copytree(stores / "b", changed)
    key, metadata = nap_state(changed)
    db = sqlite3.connect(changed / "harness.db")
    db.execute("UPDATE model_states SET metadata=? WHERE key=?", (json.dumps({**metadata, "parameters_changed": 1}), key))
    db.commit()
    db.close()
    code, _, err = harness(capsys, "merge", str(stores / "a"), str(changed), "--into", str(tmp_path / "merged"))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"harness: error: conflict in model_states (key={key})") and "differ in metadata" in err


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_stores_that_searched_one_prompt_under_other_labels_merge(stores, tmp_path, capsys):
    """A search is keyed by its input alone (prompt, seed, guidance, ...), so two stores can hold one search under one
    key with another source id and labels (a --seeds-per-prompt 2 store's seed-0 prompts carry seeds_of; a CSV copy
    of a benchmark names its rows otherwise).  That is no conflict; it was one."""
    copy = tmp_path / "a-relabelled"
    shutil.copytree(stores / "a", copy)
    db = sqlite3.connect(copy / "harness.db")
    for key, spec in db.execute("SELECT key, spec FROM attack_prompts").fetchall():
        relabelled = {**json.loads(spec), "id": "row-7", "labels": {"seeds_of": "0"}}
        db.execute("UPDATE attack_prompts SET source_id = 'row-7', spec = ? WHERE key = ?", (json.dumps(relabelled), key))
    db.commit()
    db.close()
    code, _, err = harness(capsys, "merge", str(stores / "a"), str(copy), "--into", str(tmp_path / "m"))
    assert code == 0, err
    assert report_values(capsys, tmp_path / "m") == report_values(capsys, stores / "a")
