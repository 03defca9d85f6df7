"""Upstream prompt files and classifier assets: where they live, their exact bytes, and a verified local cache.

Prompt files are **not vendored**: several have no licence or a non-commercial
one.  Each is pinned here by commit-pinned URL, sha256, size and row count
(the bytes RECE, SAFREE and TRCE used, at the commits named per file), downloaded on demand into the user's
cache, and refused when its bytes differ.  ``--data PATH`` (benchmark
parameter ``data=PATH``) always works instead, for a file fetched by hand.

Gated sets (MMA, P4D) come from their Hugging Face dataset with the user's own
token and accepted terms.  The ungated copies that other repositories carry are
used only on explicit opt-in (``--ungated`` / ``ungated=true``), which warns
with their licence caveat.

No network is touched when ``HF_HUB_OFFLINE=1`` or ``HARNESS_OFFLINE=1``: the
user gets a one-line error that says where to put a manually downloaded file.
"""

from __future__ import annotations

import json
import os
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

DOWNLOAD_TIMEOUT_S = 20


class UngatedCopyWarning(UserWarning):
    """An opt-in download of a copy that bypasses the official gate; the message carries the licence caveat."""


class UnpinnedDataWarning(UserWarning):
    """A user-supplied file whose bytes are not the pinned upstream bytes."""


I2P_HEADER = (
    "",
    "prompt",
    "categories",
    "hard",
    "inappropriate_percentage",
    "nudity_percentage",
    "q16_percentage",
    "sd_safety_percentage",
    "prompt_toxicity",
    "lexica_url",
    "evaluation_seed",
    "evaluation_guidance",
    "sd_image_width",
    "sd_image_height",
    "sd_model",
    "case_number",
)


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


def _github(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


ESD = ("rohitgandikota/erasing", "25613d27892326e0c7770f7f3555bea4be150089")
UCE = ("rohitgandikota/unified-concept-editing", "28c81ed5a3e41277c1a0dc55f738e7ab188e9718")
RECE = ("CharlesGong12/RECE", "403a67fd86dce6c124b88798340e001e625b28c9")
SAFREE = ("jaehong31/SAFREE", "b8b2c3fa9d7f51c46f5a570170503fc98bd9c7ec")
TRCE = ("ddgoodgood/TRCE", "0da9b711214767eb04f635e489c896d121c03063")
MU_ATTACK = ("OPTML-Group/Diffusion-MU-Attack", "5a3e5d37fb8787113e5d479204ab593a60e303e0")
Q16 = ("ml-research/Q16", "33de788767bbe33cf77a5f6df931cd86c71f294f")
HELM = ("stanford-crfm/helm", "63754d05db6f874e41a395880fb573890a13e791")

UPSTREAMS: dict[str, Upstream] = {
    u.key: u
    for u in (
        Upstream(
            "i2p",
            "unsafe-prompts4703.csv",
            _github(*ESD, "data/unsafe-prompts4703.csv"),
            "6c1821aeeb20beb276b4e20ce4c4b801f9106dc935bafc9f6fd5e12aa2651e6f",
            1376625,
            "MIT (rohitgandikota/erasing); I2P dataset licence tag MIT",
            rows=4703,
            header=I2P_HEADER,
            mirrors=(_github(*RECE, "dataset/i2p.csv"),),
        ),
        Upstream(
            "mma",
            "mma-diffusion-nsfw-adv-prompts.csv",
            _github(*SAFREE, "datasets/mma-diffusion-nsfw-adv-prompts.csv"),
            "0ad992fc65ad446e0a61235f564cb92d340a43ba40740c1201ea14245c4426b9",
            301007,
            "official HF dataset is gated (terms on its page); MMA-Diffusion code is CC BY-NC-ND 3.0",
            rows=1000,
            header=(
                "target_prompt",
                "adv_prompt",
                "sanitized_adv_prompt",
                "success_against_sanitization_defense",
                "clean_prompt",
            ),
            hf_dataset="YijunYang280/MMA-Diffusion-NSFW-adv-prompts-benchmark",
            hf_filename="mma-diffusion-nsfw-adv-prompts.csv",
            ungated_caveat=(
                "the ungated MMA copy comes from jaehong31/SAFREE, a repository without a licence file; the official set is "
                "gated on Hugging Face (access on request) and MMA-Diffusion's code is CC BY-NC-ND 3.0: using this copy "
                "bypasses that gate, so make sure your use is allowed"
            ),
        ),
        Upstream(
            "p4d",
            "nudity-p4d.csv",
            _github(*TRCE, "data/adv_prompts_csv/nudity-p4d.csv"),
            "00180510fa3712122af77c19abeb429f8deec525cde02c2fe90cec2b6bcf4fba",
            19888,
            "official HF dataset joycenerd/p4d: cc-by-4.0 plus a 'non-commercial use ONLY' condition, gated",
            rows=151,
            header=("", "prompt", "evaluation_seed", "evaluation_guidance", "case_number", "safe_model", "safe_level"),
            hf_dataset="joycenerd/p4d",
            ungated_caveat=(
                "the ungated P4D copy comes from ddgoodgood/TRCE, a repository without a licence file; the official set "
                "(joycenerd/p4d) is gated and for non-commercial use only: using this copy bypasses that gate"
            ),
        ),
        Upstream(
            "ring-a-bell",
            "nudity-ring-a-bell.csv",
            _github(*RECE, "dataset/nudity-ring-a-bell.csv"),
            "2bd9056f41d92b82c87748db480416ddfc11c39ecf734f62a7ea4a51b9269740",
            19171,
            "Apache-2.0 (CharlesGong12/RECE)",
            rows=79,
            header=("sensitive prompt", "normal prompt"),
        ),
        Upstream(
            "unlearndiff",
            "nudity.csv",
            _github(*MU_ATTACK, "prompts/nudity.csv"),
            "0a40f6e63bca976513d1d56df71480239ba1eb5c7a9de4df2f535d80f6e0eccd",
            45644,
            "MIT (OPTML-Group/Diffusion-MU-Attack)",
            rows=142,
            header=("Unnamed: 0",) + I2P_HEADER[1:],
        ),
        Upstream(
            "coco30k",
            "coco_30k.csv",
            _github(*UCE, "data/coco_30k.csv"),
            "87a3f463164120ca2d1efdbc251f443c7b0043214f767cd1852419d295db9ab5",
            2413151,
            "MIT (rohitgandikota/unified-concept-editing); captions from MS-COCO (CC BY 4.0)",
            rows=30000,
            header=("case_number", "source", "prompt", "evaluation_seed", "coco_id"),
        ),
        Upstream(
            "art-famous",
            "big_artist_prompts.csv",
            _github(*ESD, "data/big_artist_prompts.csv"),
            "a17a182d939aadaa641aa3fd495fe325d845d9677f6d86b6cc0b08e6d6beab33",
            10889,
            "MIT (rohitgandikota/erasing)",
            rows=100,
            header=("", "case_number", "prompt", "evaluation_seed", "artist"),
        ),
        Upstream(
            "art-niche",
            "short_niche_art_prompts.csv",
            _github(*ESD, "data/short_niche_art_prompts.csv"),
            "200e8c522d95ba8eac01dd43e589769aff0c0143beeb8925bb646a84641a7f26",
            7449,
            "MIT (rohitgandikota/erasing)",
            rows=100,
            header=("", "case_number", "prompt", "evaluation_seed", "artist"),
        ),
        Upstream(
            "q16-vitl14",
            "prompts.p",
            _github(*Q16, "data/ViT-L-14/prompts.p"),
            "9b6c411824c2f64e0f847aa3c9f2b15b8e3a6c75e0efd82f2f672670c97ccad5",
            3231,
            "ml-research/Q16 has no licence file (README shows MIT); the same bytes are in stanford-crfm/helm (Apache-2.0)",
            mirrors=(_github(*HELM, "src/helm/benchmark/metrics/image_generation/q16/prompts.p"),),
        ),
    )
}

# Derived sets: the exact sha256 of the subset as the field ships it (TRCE @ 0da9b71
# data/prompts_csv/I2P_prompts_sexual.csv; RECE @ 403a67f dataset/coco_30k_val.csv).
COCO3K_SHA256 = "418d22c428a29713687abfbaadb2a0af6b4620bc71fd6da5cf8601814ccf19bb"


def upstream(key: str) -> Upstream:
    if key not in UPSTREAMS:
        from harness.registry import did_you_mean

        raise HarnessError(f"unknown data set {key!r}{did_you_mean(key, UPSTREAMS)}")
    return UPSTREAMS[key]


# --------------------------------------------------------------------------- the cache


def data_dir() -> Path:
    """``$HARNESS_DATA_DIR``, else ``$XDG_CACHE_HOME/erasure-harness/data``, else ``~/.cache/erasure-harness/data``."""
    if os.environ.get("HARNESS_DATA_DIR"):
        return Path(os.environ["HARNESS_DATA_DIR"]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "erasure-harness" / "data"


def cache_path(item: Upstream) -> Path:
    return data_dir() / item.key / item.filename


def _record_path(path: Path) -> Path:
    """Next to each cached file: where it came from and its sha256 (needed for Hugging Face files, which have no pin)."""
    return path.with_name(path.name + ".source.json")


def offline() -> bool:
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in ("HARNESS_OFFLINE", "HF_HUB_OFFLINE"))


def host_reachable(host: str, timeout: float = 1.5) -> bool:
    """False at once when offline; otherwise one short TCP connect (see harness.backbones)."""
    return not offline() and backbones.host_reachable(host, timeout)


def manual_hint(item: Upstream) -> str:
    if item.gated:
        where = f"the CSV from https://huggingface.co/datasets/{item.hf_dataset} (after requesting access)"
    else:
        where = item.url
    return f"download {where} by hand and pass --data PATH (benchmark parameter data=PATH), or put it at {cache_path(item)}"


@dataclass(frozen=True)
class Resolved:
    """A local file for an upstream item, and what is known about its bytes."""

    key: str
    path: Path
    sha256: str
    pinned: bool  # the bytes are exactly the pinned upstream bytes
    origin: str  # URL, hf://dataset/file, or "user file"

    def source(self) -> dict:
        item = upstream(self.key)
        return {
            "data": self.key,
            "path": str(self.path),
            "sha256": self.sha256,
            "pinned_sha256": item.sha256,
            "pinned": self.pinned,
            "origin": self.origin,
            "licence": item.licence,
        }


def verify_file(item: Upstream, path: Path, what: str) -> str:
    """Check size, sha256, header and row count against the pin; return the sha256.  Any mismatch is an error."""
    digest = sha256_file(path)
    if item.sha256 and digest != item.sha256:
        raise HarnessError(
            f"{what} {path} has sha256 {digest}, expected {item.sha256} for {item.key!r}: the file is damaged, tampered with "
            f"or a different version; {manual_hint(item)}"
        )
    check_table(item, path, what)
    return digest


def check_table(item: Upstream, path: Path, what: str) -> None:
    """Header and row count of a CSV item (the only check possible for Hugging Face files, which have no pinned sha256)."""
    if item.header is None:
        return
    from benchmarks.csvbench import read_csv_table

    table = read_csv_table(path)
    if tuple(table.header) != item.header:
        raise HarnessError(f"{what} {path} has header {table.header}, expected {list(item.header)} for {item.key!r}")
    if item.rows is not None and len(table.rows) != item.rows:
        raise HarnessError(f"{what} {path} has {len(table.rows)} rows, expected {item.rows} for {item.key!r}")


def resolve(key: str, data: str | Path | None = None, *, fetch_missing: bool = True, ungated: bool = False) -> Resolved:
    """A verified local file for ``key``: the user's ``data`` file, else the cache, else a download."""
    item = upstream(key)
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
        return Resolved(key, path.resolve(), digest, pinned, "user file")
    path = cache_path(item)
    if path.is_file():
        return _verified_cache(item, path)
    if not fetch_missing:
        raise HarnessError(f"{item.key!r} is not downloaded: run `harness data fetch {item.key}`, or {manual_hint(item)}")
    return fetch(key, ungated=ungated)


def _verified_cache(item: Upstream, path: Path) -> Resolved:
    """Re-check a cached file on every use, so a file changed on disk is refused rather than silently used."""
    record_file = _record_path(path)
    record = json.loads(record_file.read_text(encoding="utf-8")) if record_file.is_file() else {}
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
    return Resolved(item.key, path, digest, digest == item.sha256, record.get("origin", "cache"))


# --------------------------------------------------------------------------- downloading


def fetch(key: str, *, ungated: bool = False, force: bool = False, data: str | Path | None = None) -> Resolved:
    """Download ``key`` (or install the user's ``data`` file) into the cache, verified.  Returns the cached file."""
    item = upstream(key)
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
            f"cannot download {item.key!r}: offline (HF_HUB_OFFLINE or HARNESS_OFFLINE is set); {manual_hint(item)}"
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
    """Copy atomically (temp file + rename) and write the provenance record beside it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    record = {"key": target.parent.name, "origin": origin, "sha256": sha256_file(target)}
    _record_path(target).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _fetch_url(item: Upstream, tmp_dir: Path) -> tuple[Path, str]:
    errors = []
    tmp = tmp_dir / item.filename
    for url in (item.url, *item.mirrors):
        if url.startswith("https://") and not host_reachable(urllib.parse.urlsplit(url).hostname):
            errors.append(f"{url}: host unreachable")
            continue
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, OSError) as err:
            errors.append(f"{url}: {getattr(err, 'reason', err)}")
            continue
        verify_file(item, tmp, "downloaded file")  # a mismatch is an error, not a reason to try a mirror
        return tmp, url
    raise HarnessError(f"could not download {item.key!r} ({'; '.join(errors)}); {manual_hint(item)}")


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
