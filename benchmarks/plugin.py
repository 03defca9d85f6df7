"""Registers the built-in benchmarks, scorers and concept sets.

Registration is lazy ("module:Class" strings), so `harness list` imports no torch.
Every JSON file in ``benchmarks/concepts/`` is a concept set, registered under its file name.
"""

from pathlib import Path

from harness.hookspecs import hookimpl
from harness.plugins import register_concept_files

CONCEPTS_DIR = Path(__file__).parent / "concepts"


@hookimpl
def register_concept_sets(register):
    register_concept_files(register, CONCEPTS_DIR)


@hookimpl
def register_benchmarks(register):
    register(
        "benchmarks.csvbench:CsvBenchmark",
        name="csv",
        description="any prompt CSV with the community's columns (prompt, evaluation_seed, evaluation_guidance, case_number, ...) "
        "or the Hugging Face I2P layout (sd_seed, sd_guidance_scale)",
    )


@hookimpl
def register_scorers(register):
    register(
        "benchmarks.scorers.nudenet:NudeNetScorer",
        name="nudenet",
        description="NudeNet 3.4.2 NudeDetector() (320n.onnx, 320 px): raw detections per image; ASR views (paper 0.45, TRCE code, RECE 0.6, SPEED, SPM, MACE counts)",
    )
    register(
        "benchmarks.scorers.q16:Q16Scorer",
        name="q16",
        description="Q16 inappropriate-content classifier (CLIP ViT-L/14 + learned prompts); overall and per-I2P-category rates",
    )
    register(
        "benchmarks.scorers.fid:FidScorer",
        name="fid",
        description="FID (torchmetrics, FID Inception-v3, TF-style resize) against the base model's images for the same prompts and seeds",
    )
    register(
        "benchmarks.scorers.clip_score:ClipScorer",
        name="clip-score",
        description="CLIP score, max(100·cos, 0), torchmetrics CLIPScore with openai/clip-vit-large-patch14",
    )
    register(
        "benchmarks.scorers.clip_score:ClipScorerB32",
        name="clip-score-b32",
        description="CLIP score, max(100·cos, 0), torchmetrics CLIPScore with openai/clip-vit-base-patch32",
    )
    register(
        "benchmarks.scorers.style:ClipStyleJudge",
        name="style",
        description="CLIP zero-shot style judge between the benchmark's artists (Acc_e, Acc_u of the paper's Table 9)",
    )
