"""The pins of the upstream files the built-in benchmarks and scorers use (the bytes RECE, SAFREE and TRCE used): where each lives,
its exact bytes, its licence.  The mechanism (cache, verification, downloads) is the core's ``harness.data``; this
module keeps the table and looks items up by key for ``harness data`` and the benchmarks.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness import data as _data_layer
from harness.api import HarnessError
from harness.data import Resolved, UngatedCopyWarning, UnpinnedDataWarning, Upstream

__all__ = ["COCO3K_SHA256", "UPSTREAMS", "Resolved", "UngatedCopyWarning", "UnpinnedDataWarning", "Upstream", "fetch",
           "host_reachable", "resolve", "upstream"]

# The COCO-30k pin is a JSON file, because the SD concept sets carry it too (as TRCE-T's preservation captions).
COCO30K_PIN = Path(__file__).parent / "concepts" / "pins" / "coco30k.json"

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
        Upstream.from_dict(json.loads(COCO30K_PIN.read_text(encoding="utf-8")), origin=str(COCO30K_PIN)),
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

# Derived sets: the exact sha256 of the subset as the field ships it (RECE @ 403a67f dataset/coco_30k_val.csv, drawn
# as the paper's COCO-3k).  TRCE's I2P_prompts_sexual.csv (@ 0da9b71 data/prompts_csv) is checked by its 931 rows only.
COCO3K_SHA256 = "418d22c428a29713687abfbaadb2a0af6b4620bc71fd6da5cf8601814ccf19bb"


def upstream(key: str) -> Upstream:
    if key not in UPSTREAMS:
        from harness.api import did_you_mean

        raise HarnessError(f"unknown data set {key!r}{did_you_mean(key, UPSTREAMS)}")
    return UPSTREAMS[key]


def resolve(key: str, data: str | Path | None = None, *, fetch_missing: bool = True, ungated: bool = False) -> Resolved:
    """A verified local file for the upstream item ``key`` (see ``harness.data.resolve``)."""
    return _data_layer.resolve(upstream(key), data, fetch_missing=fetch_missing, ungated=ungated)


def fetch(key: str, *, ungated: bool = False, force: bool = False, data: str | Path | None = None) -> Resolved:
    """Download the upstream item ``key`` into the cache (see ``harness.data.fetch``)."""
    return _data_layer.fetch(upstream(key), ungated=ungated, force=force, data=data)


host_reachable = _data_layer.host_reachable
