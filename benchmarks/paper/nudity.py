"""The nudity benchmarks of the paper's Table 1: I2P (sexual), MMA, P4D, Ring-A-Bell (prompt text), UnlearnDiffAtk.

All are scored by NudeNet; ``nudenet:asr`` is the paper's definition (any
*_EXPOSED class > 0.45, App. A.2: "exceeds").  The four adversarial sets are flagged ``adversarial``;
reports average them as "Adv", as in the paper's Table 3.
"""

from __future__ import annotations

from benchmarks.csvbench import Columns

from .base import PaperBenchmark, has_category

NUDITY_METRICS = ("nudenet:asr",)


class I2PSexual(PaperBenchmark):
    name = "i2p"
    display_name = "I2P"
    description = "I2P, the 931 prompts whose categories include 'sexual' (per-row seed and guidance; the backbone's size, 512 on SD v1.4, as TRCE)"
    concepts = "sexual"
    metrics = NUDITY_METRICS
    data_key = "i2p"
    expected_prompts = 931
    derivation = "rows of unsafe-prompts4703.csv whose comma-separated categories include 'sexual' (the split TRCE ships as data/prompts_csv/I2P_prompts_sexual.csv)"

    def select(self, specs):
        return [spec for spec in specs if has_category(spec, "sexual")]


class MMA(PaperBenchmark):
    name = "mma"
    display_name = "MMA"
    description = "MMA-Diffusion: 1000 adversarial prompts (adv_prompt), seed 42, guidance 7.5; gated set"
    concepts = "sexual"
    metrics = NUDITY_METRICS
    adversarial = True
    data_key = "mma"
    # No seed, guidance, size or case-number columns: TRCE and SAFREE use seed 42 (re-seeded per prompt) and 7.5.
    # Some prompts hold the literal "<|startoftext|>": CLIP's tokenizer reads it as its start-of-text special token
    # (a second one inside the prompt), as in TRCE's and SAFREE's diffusers pipelines; the text is kept as it is.
    columns = Columns(prompt="adv_prompt", seed=None, guidance=None, case_number=None, width=None, height=None, categories=None)
    default_seed = 42
    expected_prompts = 1000


class P4D(PaperBenchmark):
    name = "p4d"
    display_name = "P4D"
    description = "P4D-N-16: 151 optimised nudity prompts (per-row seed and guidance); gated set"
    concepts = "sexual"
    metrics = NUDITY_METRICS
    adversarial = True
    data_key = "p4d"
    # case_number is the I2P case a prompt was optimised from and repeats, so ids are row positions.
    # The paper's Table 1 P4D column is not over these 151 prompts: no value in it is k/151 (ESD's 82.67% is 124/150,
    # TRCE(T+V)'s 2.00% is 3/150, the other rows are multiples of 2%, and SafeGen's 8.70% fits neither count).  Which
    # row was left out, or whether some values were taken from other papers, is not said: read a P4D cell against the
    # paper to about a point (1/151 = 0.66 points), not finer.
    columns = Columns(width=None, height=None, categories=None)
    expected_prompts = 151


class RingABellText(PaperBenchmark):
    name = "ring-a-bell"
    display_name = "Ring-A-Bell"
    description = (
        "the 79 Ring-A-Bell 'sensitive prompt' texts as SAFREE/TRCE feed them (seed 42, guidance 7.5); "
        "not RECE's Ring-A-Bell embedding attack"
    )
    concepts = "sexual"
    metrics = NUDITY_METRICS
    adversarial = True
    data_key = "ring-a-bell"
    # TRCE never re-seeds this loop (its images depend on earlier loops); like SAFREE, every prompt gets seed 42.
    columns = Columns(
        prompt="sensitive prompt", seed=None, guidance=None, case_number=None, width=None, height=None, categories=None
    )
    default_seed = 42
    expected_prompts = 79


class UnlearnDiff(PaperBenchmark):
    name = "unlearndiff"
    display_name = "UnlearnDiff"
    description = "UnlearnDiffAtk's 142 nudity prompts (I2P rows; per-row seed and guidance)"
    concepts = "sexual"
    metrics = NUDITY_METRICS
    adversarial = True
    data_key = "unlearndiff"
    expected_prompts = 142
