"""Every user-given name that becomes a path stays inside the store: refused with one line, or mapped to a safe name."""

import json

import pytest

from harness import names
from harness.api import HarnessError

TRAVERSALS = ["../../escaped", "..", "a/../../b", "/tmp/abs", "a/b", "..\\x", ".hidden", "", "a\x00b", "x" * 200]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_unsafe_names_are_refused(name):
    with pytest.raises(HarnessError, match="not a safe name"):
        names.check_name(name, "--run-name")


@pytest.mark.parametrize("name", ["run-1", "my_run.v2", "A1"])
def test_safe_names_pass_unchanged(name):
    assert names.check_name(name, "--run-name") == name


@pytest.mark.parametrize("text", TRAVERSALS + ["csv:path=../../x.csv", "a:b=c/d"])
def test_slugs_are_single_safe_path_components(text):
    stem = names.slug(text)
    assert names.is_safe_name(stem), stem
    assert "/" not in stem and "\\" not in stem and ".." not in stem


def test_file_names_never_collide():
    stem = names.FileNames()
    texts = ["a/b", "a:b", "a-b", "a b", "a/b"]
    stems = [stem(text) for text in texts]
    assert stems[0] == stems[4]  # the same text keeps its name
    assert len(set(stems[:4])) == 4
    assert stems[0] == "a-b"  # the first text keeps its readable slug; later ones that would collide get a hash
    assert all(names.is_safe_name(s) for s in stems)


def test_run_name_traversal_is_refused_with_one_line_and_writes_nothing(cli, files_under, tmp_path):
    out = tmp_path / "store" / "out"
    code, _, err = cli("run", "--model", "tiny", "--bench", "fixed:count=1", "--out", str(out), "--run-name", "../../x", "--no-progress")
    assert code == 2
    assert err.strip().count("\n") == 0 and "--run-name '../../x' is not a safe name" in err
    assert files_under(tmp_path) == set()


def test_benchmark_method_and_concept_names_stay_inside_the_store(cli, files_under, tmp_path):
    """A benchmark label with a path in it, a method label with slashes, a concept set named like a path: all inside --out."""
    prompts = tmp_path / "in" / "prompts.csv"
    prompts.parent.mkdir()
    prompts.write_text("prompt,evaluation_seed,evaluation_guidance,case_number\na red circle,1,7.5,0\na blue square,2,7.5,1\n")
    concepts = tmp_path / "in" / "evil.json"
    concepts.write_text(json.dumps({"name": "../../../evil-concepts", "erase": ["red"], "guides": ["gray"]}))
    before = files_under(tmp_path)
    out = tmp_path / "deep" / "out"
    bench = f"csv:path={prompts.parent}/../in/prompts.csv"
    code, _, err = cli("run", "--model", "tiny", "--methods", "sd,scale-keys:factor=0.5", "--bench", bench, "--concepts", str(concepts),
                       "--out", str(out), "--no-progress")
    assert code == 0, err
    code, _, err = cli("report", "--out", str(out), "--format", "md,latex,png,html")
    assert code == 0, err
    created = files_under(tmp_path) - before
    assert created and all(out in path.parents for path in created), sorted(map(str, created - {p for p in created if out in p.parents}))
    grids = list((out / "report" / "grids").glob("*.png"))
    assert len(grids) == 1 and names.is_safe_name(grids[0].stem)


@pytest.mark.parametrize("dest", ["../escaped", "a/../../escaped", "report/../../x"])
def test_relative_dest_cannot_leave_the_store(cli, files_under, tmp_path, dest):
    out = tmp_path / "out"
    assert cli("run", "--model", "tiny", "--bench", "fixed:count=1", "--out", str(out), "--no-progress")[0] == 0
    before = files_under(tmp_path)
    code, _, err = cli("report", "--out", str(out), "--format", "md", "--dest", dest)
    assert code == 2 and "--dest" in err and "leads outside" in err and err.strip().count("\n") == 0
    assert files_under(tmp_path) == before


def test_relative_dest_is_taken_inside_the_store(cli, files_under, tmp_path):
    out = tmp_path / "out"
    assert cli("run", "--model", "tiny", "--bench", "fixed:count=1", "--out", str(out), "--no-progress")[0] == 0
    assert cli("report", "--out", str(out), "--format", "md", "--dest", "mine/r1")[0] == 0
    assert (out / "mine" / "r1" / "leaderboard.md").exists()


def test_a_stored_run_id_with_a_traversal_is_never_used_as_a_path(tmp_path):
    from harness.store import Store

    store = Store(tmp_path / "out")
    with pytest.raises(HarnessError, match="not a safe name"):
        store.write_manifest("../../x", {})
