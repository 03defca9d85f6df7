"""The data layer: pinned upstream files, the verified cache, offline and gated behaviour.  No network: file:// URLs only."""

import json
import time
from pathlib import Path

import pytest

from benchmarks import data
from benchmarks.data import UngatedCopyWarning, UnpinnedDataWarning, Upstream
from harness import backbones
from harness import data as core  # the core's pin handling, which a concept set's JSON pin reaches
from harness.api import HarnessError, sha256_file

FIXTURES = Path(__file__).parent / "fixtures"
RAB = FIXTURES / "ring_a_bell_sample.csv"


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def online(monkeypatch):
    """Allow 'downloads'; every URL in these tests is a local file:// URL."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HARNESS_OFFLINE", raising=False)
    from harness import backbones

    monkeypatch.setattr(backbones, "host_reachable", lambda host, timeout=1.5, port=443: True)  # the hub calls are mocked too


def pinned_item(monkeypatch, key="test-rab", path=RAB, **changes):
    """An upstream entry whose pinned bytes are a fixture, served from a file:// URL."""
    fields = dict(
        key=key,
        filename="prompts.csv",
        url=path.resolve().as_uri(),
        sha256=sha256_file(path),
        size=path.stat().st_size,
        licence="test",
        rows=3,
        header=("sensitive prompt", "normal prompt"),
    )
    fields.update(changes)
    item = Upstream(**fields)
    monkeypatch.setitem(data.UPSTREAMS, key, item)
    return item


def test_pinned_table_matches_data_sources():
    i2p = data.upstream("i2p")
    assert i2p.sha256 == "6c1821aeeb20beb276b4e20ce4c4b801f9106dc935bafc9f6fd5e12aa2651e6f" and i2p.rows == 4703
    assert "/25613d27892326e0c7770f7f3555bea4be150089/" in i2p.url  # commit-pinned, never a branch
    for item in data.UPSTREAMS.values():
        assert item.url.startswith("https://raw.githubusercontent.com/") and "/main/" not in item.url
        assert item.sha256 and len(item.sha256) == 64
    assert data.upstream("mma").gated and data.upstream("p4d").gated and not data.upstream("ring-a-bell").gated
    with pytest.raises(HarnessError, match="did you mean 'i2p'"):
        data.upstream("i2q")


def test_fetch_verifies_and_caches(monkeypatch, online, data_dir):
    item = pinned_item(monkeypatch)
    resolved = data.fetch(item.key)
    assert resolved.pinned and resolved.sha256 == item.sha256
    assert resolved.path == data_dir / item.key / "prompts.csv"
    record = json.loads((data_dir / item.key / "prompts.csv.source.json").read_text())
    assert record["origin"] == item.url and record["sha256"] == item.sha256
    # Once cached, nothing is downloaded again.
    monkeypatch.setitem(data.UPSTREAMS, item.key, Upstream(**{**item.__dict__, "url": "file:///nonexistent"}))
    assert data.resolve(item.key).path == resolved.path


def test_sha256_check_refuses_a_tampered_download(monkeypatch, online, tmp_path, data_dir):
    tampered = tmp_path / "tampered.csv"
    tampered.write_bytes(RAB.read_bytes().replace(b"beach", b"beech"))
    item = pinned_item(monkeypatch, url=tampered.as_uri())
    with pytest.raises(HarnessError, match="sha256 .* expected .*tampered") as info:
        data.fetch(item.key)
    assert "--data PATH" in str(info.value) and "\n" not in str(info.value)
    assert not (data_dir / item.key / "prompts.csv").exists()


def test_tampered_cache_file_is_refused(monkeypatch, online, data_dir):
    item = pinned_item(monkeypatch)
    path = data.fetch(item.key).path
    path.write_bytes(path.read_bytes() + b"x,y\r\n")
    with pytest.raises(HarnessError, match="cached file .* has sha256"):
        data.resolve(item.key)


def test_row_count_and_header_are_checked(monkeypatch, online):
    item = pinned_item(monkeypatch, rows=79)
    with pytest.raises(HarnessError, match="has 3 rows, expected 79"):
        data.fetch(item.key)
    item = pinned_item(monkeypatch, key="other", header=("prompt", "evaluation_seed"))
    with pytest.raises(HarnessError, match="has header"):
        data.fetch(item.key)


def test_offline_fails_fast_with_a_manual_route(monkeypatch, data_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(HarnessError) as info:
        data.resolve("i2p")
    assert time.monotonic() - start < 2
    message = str(info.value)
    assert "offline" in message and "--data PATH" in message and str(data_dir / "i2p" / "unsafe-prompts4703.csv") in message


def test_check_never_downloads(monkeypatch, online):
    item = pinned_item(monkeypatch)
    with pytest.raises(HarnessError, match="not downloaded: run `harness data fetch test-rab`"):
        data.resolve(item.key, fetch_missing=False)


def test_user_file_is_accepted_and_an_unpinned_one_is_flagged(monkeypatch, tmp_path):
    item = pinned_item(monkeypatch)
    resolved = data.resolve(item.key, RAB)
    assert resolved.pinned and resolved.origin == "user file"
    other = tmp_path / "other.csv"
    other.write_bytes(RAB.read_bytes().replace(b"\r\n", b"\n"))
    with pytest.warns(UnpinnedDataWarning, match="not the pinned"):
        resolved = data.resolve(item.key, other)
    assert not resolved.pinned and resolved.source()["sha256"] == sha256_file(other)
    with pytest.raises(HarnessError, match="no such file"):
        data.resolve(item.key, tmp_path / "missing.csv")


def test_fetch_with_data_installs_only_the_pinned_bytes(monkeypatch, tmp_path, data_dir):
    item = pinned_item(monkeypatch)
    resolved = data.fetch(item.key, data=RAB)  # offline is fine: nothing is downloaded
    assert resolved.pinned and resolved.path.read_bytes() == RAB.read_bytes()
    other = tmp_path / "other.csv"
    other.write_bytes(RAB.read_bytes().replace(b"\r\n", b"\n"))
    with pytest.raises(HarnessError, match="sha256"):
        data.fetch(item.key, data=other, force=True)


def test_gated_set_without_access_explains_the_routes(monkeypatch, online):
    from huggingface_hub.errors import GatedRepoError

    def refuse(*args, **kwargs):
        # Built without its HTTP response object, whose class depends on the huggingface_hub version.
        error = GatedRepoError.__new__(GatedRepoError)
        Exception.__init__(error, "403 Client Error: gated")
        raise error

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    item = pinned_item(
        monkeypatch, key="test-gated", hf_dataset="someone/gated-set", hf_filename="prompts.csv", ungated_caveat="NO LICENCE"
    )
    with pytest.raises(HarnessError) as info:
        data.fetch(item.key)
    message = str(info.value)
    assert "request access at https://huggingface.co/datasets/someone/gated-set" in message
    assert "--data PATH" in message and "--ungated" in message and "NO LICENCE" in message


def test_gated_set_from_hugging_face_is_checked_by_header_and_rows(monkeypatch, online, tmp_path):
    import huggingface_hub

    lf_copy = tmp_path / "hf.csv"  # the official copy may differ in bytes from the pinned ungated copy
    lf_copy.write_bytes(RAB.read_bytes().replace(b"\r\n", b"\n"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: str(lf_copy))
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda *a, **k: ["README.md", "prompts.csv"])
    item = pinned_item(monkeypatch, key="test-gated", hf_dataset="someone/gated-set", ungated_caveat="NO LICENCE")
    resolved = data.fetch(item.key)
    assert resolved.origin == "hf://datasets/someone/gated-set/prompts.csv" and not resolved.pinned
    assert data.resolve(item.key).sha256 == sha256_file(lf_copy)  # re-verified against the recorded sha256
    resolved.path.write_bytes(b"sensitive prompt,normal prompt\na,b\n")
    with pytest.raises(HarnessError, match="changed since it was downloaded"):
        data.resolve(item.key)


def test_offline_hint_names_the_copy_the_user_asked_for(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    item = pinned_item(monkeypatch, key="test-gated", hf_dataset="someone/gated-set", ungated_caveat="NO LICENCE FILE")
    with pytest.raises(HarnessError) as official:
        data.fetch(item.key)
    assert "huggingface.co/datasets/someone/gated-set" in str(official.value) and item.url not in str(official.value)
    with pytest.raises(HarnessError) as ungated:
        data.fetch(item.key, ungated=True)
    message = str(ungated.value)
    assert f"the ungated copy {item.url}" in message and "NO LICENCE FILE" in message and "huggingface.co" not in message
    assert "\n" not in message


def test_ungated_copy_is_opt_in_and_prints_its_caveat(monkeypatch, online):
    item = pinned_item(
        monkeypatch, key="test-gated", hf_dataset="someone/gated-set", hf_filename="prompts.csv", ungated_caveat="NO LICENCE FILE"
    )
    with pytest.warns(UngatedCopyWarning, match="NO LICENCE FILE"):
        resolved = data.fetch(item.key, ungated=True)
    assert resolved.pinned and resolved.origin == item.url


def test_reachability_goes_through_the_configured_https_proxy(monkeypatch):
    """On a cluster whose only way out is a proxy, the hub is reachable when the proxy is: a direct probe of port 443
    refused every download there."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    try:
        for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        assert not backbones.host_reachable("host.invalid", timeout=0.5)  # no proxy: a direct connect, which fails
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{listener.getsockname()[1]}")
        assert backbones.host_reachable("host.invalid", timeout=0.5)  # through the proxy, which answers
        monkeypatch.setenv("NO_PROXY", "host.invalid")
        assert not backbones.host_reachable("host.invalid", timeout=0.5)  # bypassed: direct again
    finally:
        listener.close()


# --------------------------------------------------------------------------- pins a user was handed (concept sets)


def pin_dict(**changes) -> dict:
    fields = {"key": "my-captions", "filename": "captions.txt", "url": RAB.resolve().as_uri(), "sha256": sha256_file(RAB),
              "size": RAB.stat().st_size, "licence": "test"}
    return {**fields, **changes}


@pytest.mark.parametrize(("changes", "says"), [
    ({"filename": "../../escaped.txt"}, "must be a bare file name"),
    ({"filename": "ABSOLUTE"}, "must be a bare file name"),  # tmp_path/escaped.txt, written in full
    ({"key": "../outside"}, "is not a safe folder name"),
    ({"key": "/abs"}, "is not a safe folder name"),
    ({"sha256": None}, "needs its file's sha256"),  # without it the download would be used unchecked
    ({"sha256": "abc"}, "needs its file's sha256"),
])
def test_a_json_pin_cannot_write_outside_the_cache_or_skip_its_check(changes, says, online, data_dir, tmp_path):
    """A concept set's pin decides where its download is written and whether its bytes are checked: a path as its
    filename or key, or no sha256, is refused before anything is fetched."""
    if changes.get("filename") == "ABSOLUTE":
        changes = {"filename": str(tmp_path / "escaped.txt")}
    with pytest.raises(HarnessError, match=says):
        core.resolve(core.Upstream.from_dict(pin_dict(**changes), origin="concept set 'x'"))
    assert not (tmp_path / "escaped.txt").exists() and not (data_dir.parent / "outside").exists()
    assert core.resolve(core.Upstream.from_dict(pin_dict(), origin="concept set 'x'")).pinned  # the sound pin still works


def test_a_path_in_a_pin_built_in_code_is_refused_too(tmp_path):
    with pytest.raises(HarnessError, match="must be safe names"):
        core.cache_path(core.Upstream(**{**pin_dict(), "filename": "../x.txt"}))


def test_a_damaged_download_record_is_one_line_that_says_what_to_delete(monkeypatch, online, data_dir):
    item = pinned_item(monkeypatch)
    data.fetch(item.key)
    (data_dir / item.key / "prompts.csv.source.json").write_text('{"key": "test-rab", "orig')  # a kill mid-write
    with pytest.raises(HarnessError, match=r"download record .* is damaged; delete it and prompts.csv"):
        data.resolve(item.key)


def test_a_download_far_past_its_pinned_size_is_cut_off(monkeypatch, online, tmp_path):
    """A wrong or hostile mirror cannot fill the disk: the stream stops at twice the pinned size plus 1 MiB."""
    huge = tmp_path / "huge.csv"
    huge.write_bytes(b"x" * ((1 << 20) + 4 * RAB.stat().st_size))
    item = pinned_item(monkeypatch, url=huge.resolve().as_uri())
    with pytest.raises(HarnessError, match="far more than the pinned"):
        data.fetch(item.key)
    assert not core.cache_path(item).exists()
