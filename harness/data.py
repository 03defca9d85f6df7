"""The data layer: pinned upstream files (prompt sets, captions, classifier assets), their exact bytes, a verified cache.

Files that cannot be vendored (several have no licence or a non-commercial one) are described by an ``Upstream``
pin: a commit-pinned URL, sha256, size and, for a CSV, its header and row count.  ``resolve(pin)`` returns a
verified local file: the user's own copy (``data=PATH``, recorded with its sha256 and a warning when it is not the
pinned file), else the cache, else a download that is refused when its bytes differ.  Gated sets (MMA, P4D) come
from their Hugging Face dataset with the user's token; the ungated copies other repositories carry are used only on
explicit opt-in (``ungated=True``), which warns with their licence caveat.

This module is the core's: benchmarks keep their pins (``benchmarks/data.py``), and a concept set carries the pin of
its preservation captions, so methods and benchmarks share it without importing each other.  No network is touched
when ``HF_HUB_OFFLINE=1`` or ``HARNESS_OFFLINE=1``: the user gets a one-line error that says where to put a manually
downloaded file.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from harness import backbones
from harness.api import HarnessError, sha256_file
from harness.integrity import atomic_write
from harness.names import is_safe_name

DOWNLOAD_TIMEOUT_S = 20


class UngatedCopyWarning(UserWarning):
    """An opt-in download of a copy that bypasses the official gate; the message carries the licence caveat."""


SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class UnpinnedDataWarning(UserWarning):
    """A user-supplied file whose bytes are not the pinned upstream bytes."""


@dataclass(frozen=True)
class Upstream:
    """One upstream file, pinned.  ``url`` is the public copy; with ``hf_dataset`` set it is an ungated copy (opt-in)."""

    key: str
    filename: str
    url: str | None
    sha256: str | None
    size: int | None
    licence: str
    rows: int | None = None  # data rows of a CSV (Python csv module), None for other files
    header: tuple[str, ...] | None = None  # exact first line of a CSV
    mirrors: tuple[str, ...] = ()  # other URLs with the same bytes
    hf_dataset: str | None = None  # the official, gated source
    hf_filename: str | None = None  # None: the one CSV in the dataset repo with the expected header
    ungated_caveat: str | None = None

    @property
    def gated(self) -> bool:
        return self.hf_dataset is not None

    @classmethod
    def from_dict(cls, data: dict, origin: str = "a pin") -> Upstream:
        """A pin written as JSON (e.g. in a concept set); lists become tuples."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown or not {"key", "filename", "url", "sha256", "size", "licence"} <= set(data):
            raise HarnessError(f"{origin}: a data pin needs key, filename, url, sha256, size and licence (unknown: {unknown})")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        item = cls(**values)
        # A JSON pin comes from a file the user was handed (a concept set): its names decide where the download is
        # written, and its sha256 whether the bytes are checked at all, so neither may be left to chance.
        if not (isinstance(item.key, str) and is_safe_name(item.key)):
            raise HarnessError(f"{origin}: the pin's key {item.key!r} is not a safe folder name (letters, digits, '.', '_', '-')")
        if not (isinstance(item.filename, str) and is_safe_name(item.filename)):
            raise HarnessError(f"{origin}: the pin's filename {item.filename!r} must be a bare file name, not a path")
        if not item.gated and not (isinstance(item.sha256, str) and SHA256_HEX.fullmatch(item.sha256)):
            raise HarnessError(f"{origin}: the pin of {item.key!r} needs its file's sha256 (64 hex digits); got {item.sha256!r}")
        return item

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# --------------------------------------------------------------------------- the cache


def data_dir() -> Path:
    """``$HARNESS_DATA_DIR``, else ``$XDG_CACHE_HOME/erasure-harness/data``, else ``~/.cache/erasure-harness/data``."""
    if os.environ.get("HARNESS_DATA_DIR"):
        return Path(os.environ["HARNESS_DATA_DIR"]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "erasure-harness" / "data"


def cache_path(item: Upstream) -> Path:
    """Where the pin's file is cached: ``<data dir>/<key>/<filename>``, never outside the data folder."""
    if not (is_safe_name(item.key) and is_safe_name(item.filename)):
        raise HarnessError(f"data pin {item.key!r}: its key and filename must be safe names, not paths ({item.filename!r})")
    return data_dir() / item.key / item.filename


def _record_path(path: Path) -> Path:
    """Next to each cached file: where it came from and its sha256 (needed for Hugging Face files, which have no pin)."""
    return path.with_name(path.name + ".source.json")


def offline() -> bool:
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in ("HARNESS_OFFLINE", "HF_HUB_OFFLINE"))


def host_reachable(host: str, timeout: float = 1.5, port: int = 443) -> bool:
    """False at once when offline; otherwise one short TCP connect (see harness.backbones)."""
    return not offline() and backbones.host_reachable(host, timeout, port)


BY_HAND = "pass --data PATH (benchmark parameter data=PATH)"  # what `harness data fetch` takes; see ``reworded``


def reworded(err: HarnessError, option: str) -> HarnessError:
    """``err`` with its by-hand hint naming ``option``, the form the user's own command accepts (``harness run`` has
    no --data: it takes ``--bench NAME:data=PATH``); other errors unchanged."""
    text = str(err)
    return HarnessError(text.replace(BY_HAND, f"pass {option}")) if BY_HAND in text else err


def manual_hint(item: Upstream, ungated: bool = False) -> str:
    """Where to get the file by hand: for a gated set, the official page, or the ungated copy when the user opted in."""
    if item.gated and not ungated:
        where = f"the CSV from https://huggingface.co/datasets/{item.hf_dataset} (after requesting access)"
    elif item.gated:
        where = f"the ungated copy {item.url} (licence caveat: {item.ungated_caveat})"
    else:
        where = item.url
    return f"download {where} by hand and {BY_HAND}, or put it at {cache_path(item)}"


@dataclass(frozen=True)
class Resolved:
    """A local file for an upstream item, and what is known about its bytes."""

    item: Upstream
    path: Path
    sha256: str
    pinned: bool  # the bytes are exactly the pinned upstream bytes
    origin: str  # URL, hf://dataset/file, or "user file"

    @property
    def key(self) -> str:
        return self.item.key

    def source(self) -> dict:
        item = self.item
        return {
            "data": self.key,
            "path": str(self.path),
            "sha256": self.sha256,
            "pinned_sha256": item.sha256,
            "pinned": self.pinned,
            "origin": self.origin,
            "licence": item.licence,
        }


def verify_file(item: Upstream, path: Path, what: str, ungated: bool = False) -> str:
    """Check the sha256 (which fixes the size too), header and row count against the pin; return the sha256.  Any
    mismatch is an error."""
    digest = sha256_file(path)
    if item.sha256 and digest != item.sha256:
        raise HarnessError(
            f"{what} {path} has sha256 {digest}, expected {item.sha256} for {item.key!r}: the file is damaged, tampered with "
            f"or a different version; {manual_hint(item, ungated)}"
        )
    check_table(item, path, what)
    return digest


def check_table(item: Upstream, path: Path, what: str) -> None:
    """Header and row count of a CSV item (the only check possible for Hugging Face files, which have no pinned sha256)."""
    if item.header is None:
        return
    header, rows = csv_shape(path)
    if tuple(header) != item.header:
        raise HarnessError(f"{what} {path} has header {header}, expected {list(item.header)} for {item.key!r}")
    if item.rows is not None and rows != item.rows:
        raise HarnessError(f"{what} {path} has {rows} rows, expected {item.rows} for {item.key!r}")


def csv_shape(path: Path) -> tuple[list[str], int]:
    """A CSV's header and its number of data rows (blank lines skipped); a row with the wrong number of cells is an error."""
    with open(path, encoding="utf-8-sig", newline="") as handle:  # utf-8-sig drops a byte-order mark if there is one
        reader = csv.reader(handle, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise HarnessError(f"{path} is empty (no header line)")
            rows = 0
            for cells in reader:
                if not cells:
                    continue
                if len(cells) != len(header):
                    raise HarnessError(f"{path}, line {reader.line_num}: malformed row with {len(cells)} cells where the header has {len(header)}")
                rows += 1
        except csv.Error as err:
            raise HarnessError(f"{path}, line {reader.line_num}: not a valid CSV ({err})") from None
    return header, rows


def resolve(item: Upstream, data: str | Path | None = None, *, fetch_missing: bool = True, ungated: bool = False) -> Resolved:
    """A verified local file for the pin ``item``: the user's ``data`` file, else the cache, else a download."""
    if data:
        path = Path(data).expanduser()
        if not path.is_file():
            raise HarnessError(f"--data {path}: no such file (expected the {item.key!r} file {item.filename})")
        digest = sha256_file(path)
        pinned = digest == item.sha256
        if item.sha256 and not pinned:
            # The user chose this file (a re-serialised or HF-layout copy, a subset...): use it, say so, record it.
            warnings.warn(
                f"{path} is not the pinned {item.key!r} file (sha256 {digest[:12]}…, pinned {item.sha256[:12]}…); "
                "its sha256 is recorded, but results may not compare with runs on the pinned file",
                UnpinnedDataWarning,
                stacklevel=2,
            )
        return Resolved(item, path.resolve(), digest, pinned, "user file")
    path = cache_path(item)
    if path.is_file():
        return _verified_cache(item, path)
    if not fetch_missing:
        raise HarnessError(f"{item.key!r} is not downloaded: run `harness data fetch {item.key}`, or {manual_hint(item, ungated)}")
    return fetch(item, ungated=ungated)


def check_obtainable(item: Upstream, needs: str, by_hand: str) -> None:
    """At plan time (``--dry-run`` too): ``item``'s file is cached and sound, or can be downloaded now.  Otherwise one
    line, ``needs`` naming who needs it and ``by_hand`` the option that takes a file instead, so that a run does not
    fail on it only after the model has loaded and images were made."""
    try:
        resolve(item, fetch_missing=False)
        return
    except HarnessError:
        if host_reachable(urllib.parse.urlsplit(item.url or "").hostname or ""):
            return  # the run downloads it
    raise HarnessError(f"{needs}, which is not downloaded and cannot be (offline): run `harness data fetch {item.key}` on "
                       f"a connected machine (into the same HARNESS_DATA_DIR), or {by_hand}")


def _verified_cache(item: Upstream, path: Path) -> Resolved:
    """Re-check a cached file on every use, so a file changed on disk is refused rather than silently used."""
    record_file = _record_path(path)
    try:
        record = json.loads(record_file.read_text(encoding="utf-8")) if record_file.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HarnessError(f"the download record {record_file} is damaged; delete it and {path.name}, then run "
                           f"`harness data fetch {item.key}`") from None
    if item.sha256 and not item.gated:
        digest = verify_file(item, path, "cached file")
    else:
        # A gated set's official Hugging Face bytes are not pinned (only the ungated copy is): check them
        # against the sha256 recorded when they were downloaded.
        digest = sha256_file(path)
        if record.get("sha256") and digest != record["sha256"]:
            raise HarnessError(
                f"cached file {path} changed since it was downloaded (sha256 {digest}, recorded {record['sha256']}); "
                f"delete it and run `harness data fetch {item.key}`"
            )
        check_table(item, path, "cached file")
    return Resolved(item, path, digest, digest == item.sha256, record.get("origin", "cache"))


# --------------------------------------------------------------------------- downloading


def fetch(item: Upstream, *, ungated: bool = False, force: bool = False, data: str | Path | None = None) -> Resolved:
    """Download the pin ``item`` (or install the user's ``data`` file) into the cache, verified.  Returns the cached file."""
    target = cache_path(item)
    if data:
        source = Path(data).expanduser()
        if not source.is_file():
            raise HarnessError(f"--data {source}: no such file")
        if item.sha256 and not item.gated:
            verify_file(item, source, "file")
        else:
            check_table(item, source, "file")
        _install(source, target, origin=f"user file {source.resolve()}")
        return _verified_cache(item, target)
    if target.is_file() and not force:
        return _verified_cache(item, target)
    if offline():
        raise HarnessError(
            f"cannot download {item.key!r}: offline (HF_HUB_OFFLINE or HARNESS_OFFLINE is set); {manual_hint(item, ungated)}"
        )
    if item.gated and not ungated:
        downloaded, origin = _fetch_hugging_face(item)
        check_table(item, downloaded, "downloaded file")
        _install(downloaded, target, origin=origin)  # the download itself stays in the Hugging Face cache
    else:
        if item.gated:
            warnings.warn(item.ungated_caveat or f"{item.key}: ungated copy", UngatedCopyWarning, stacklevel=2)
        with tempfile.TemporaryDirectory(prefix="harness-fetch-") as tmp_dir:
            downloaded, origin = _fetch_url(item, Path(tmp_dir))
            _install(downloaded, target, origin=origin)
    return _verified_cache(item, target)


def _install(source: Path, target: Path, origin: str) -> None:
    """Copy atomically (temp file + rename) and write the provenance record beside it, atomically too (a kill while
    writing it would leave a record every later use fails to read)."""
    digest, _ = atomic_write(target, write=lambda tmp: shutil.copyfile(source, tmp))
    record = {"key": target.parent.name, "origin": origin, "sha256": digest}
    atomic_write(_record_path(target), (json.dumps(record, indent=2) + "\n").encode("utf-8"))


def _copy_at_most(response, out, size: int | None, chunk: int = 1 << 20) -> None:
    """Stream the download, refusing it once it is far past the pinned size (twice it, plus 1 MiB: a pin's size is
    a guard here, the sha256 decides), so a wrong or hostile mirror cannot fill the disk before the check."""
    limit = None if size is None else 2 * size + (1 << 20)
    written = 0
    while block := response.read(chunk):
        written += len(block)
        if limit is not None and written > limit:
            raise OSError(f"the download passed {limit} bytes, far more than the pinned {size}")
        out.write(block)


def _fetch_url(item: Upstream, tmp_dir: Path) -> tuple[Path, str]:
    ungated = item.gated  # a gated set's URL is its ungated copy, downloaded only on opt-in
    errors = []
    tmp = tmp_dir / item.filename
    for url in (item.url, *item.mirrors):
        if url.startswith("https://") and not host_reachable(urllib.parse.urlsplit(url).hostname):
            errors.append(f"{url}: host unreachable")
            continue
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as out:
                _copy_at_most(response, out, item.size)
        except (urllib.error.URLError, OSError) as err:
            errors.append(f"{url}: {getattr(err, 'reason', err)}")
            continue
        verify_file(item, tmp, "downloaded file", ungated)  # a mismatch is an error, not a reason to try a mirror
        return tmp, url
    raise HarnessError(f"could not download {item.key!r} ({'; '.join(errors)}); {manual_hint(item, ungated)}")


def _fetch_hugging_face(item: Upstream) -> tuple[Path, str]:
    """The gated official copy, with the user's token (``hf auth login`` or ``HF_TOKEN``) and accepted terms."""
    try:
        from huggingface_hub import hf_hub_download, list_repo_files
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers
        raise HarnessError("downloading gated sets needs huggingface_hub (pip install huggingface_hub)") from None
    page = f"https://huggingface.co/datasets/{item.hf_dataset}"
    gate_hint = (
        f"{item.key!r} is gated: request access at {page}, log in (`hf auth login` or HF_TOKEN) and retry; "
        f"or {manual_hint(item)}; or opt in to the ungated copy with --ungated (licence caveat: {item.ungated_caveat})"
    )
    hub_host, hub_port = backbones.hub_endpoint()
    if not host_reachable(hub_host, port=hub_port):  # huggingface_hub would retry for ~25 s, printing each retry, before failing
        raise HarnessError(f"could not reach {page} ({'offline' if offline() else f'{hub_host} unreachable'}); {manual_hint(item)}")
    try:
        filenames = (
            [item.hf_filename] if item.hf_filename else _csv_candidates(list_repo_files(item.hf_dataset, repo_type="dataset"))
        )
        for filename in filenames:
            path = Path(hf_hub_download(item.hf_dataset, filename, repo_type="dataset"))
            try:
                check_table(item, path, "downloaded file")
            except HarnessError:
                if item.hf_filename:
                    raise
                continue  # the file list is not documented: take the CSV that has the expected header and rows
            return path, f"hf://datasets/{item.hf_dataset}/{filename}"
        raise HarnessError(f"no CSV in {page} has the expected header {list(item.header or ())}; {manual_hint(item)}")
    except (GatedRepoError, RepositoryNotFoundError):
        raise HarnessError(gate_hint) from None
    except HfHubHTTPError as err:
        raise HarnessError(f"{gate_hint} ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    except OSError as err:  # connection errors
        raise HarnessError(f"could not reach {page} ({type(err).__name__}); {manual_hint(item)}") from None


def _csv_candidates(files: list[str]) -> list[str]:
    return [name for name in files if name.lower().endswith(".csv")]
