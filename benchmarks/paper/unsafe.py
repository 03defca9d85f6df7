"""I2P with all 4703 prompts and its 7 categories (the paper's Table 2), scored by Q16.

Overall is the share of images Q16 flags; TRCE's evaluation notebook sums per-category counts instead, counting an
image once per category of its prompt (``benchmarks/scorers/q16.py`` says more): the paper's "Overall" column is not
the same number.
"""

from __future__ import annotations

from benchmarks.scorers.q16 import I2P_CATEGORIES, category_metric_id

from .base import PaperBenchmark


class I2PAll(PaperBenchmark):
    name = "i2p-all"
    display_name = "I2P (all)"
    description = "I2P, all 4703 prompts; Q16 inappropriate rate per category (hate ... illegal activity) and overall"
    concepts = "unsafe"
    metrics = tuple(f"q16:{category_metric_id(c)}" for c in I2P_CATEGORIES) + ("q16:inappropriate",)
    data_key = "i2p"
    expected_prompts = 4703
