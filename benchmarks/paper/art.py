"""Artistic style removal (the paper's Table 9): erase one artist, keep the others.

Each file has 5 artists × 20 prompts.  All 100 rows are generated; the style
judge measures Acc_e on the erased artist's 20 rows and Acc_u on the other 80.
The ``artist`` value is the file's own text (``Van Gogh``, not "Vincent van Gogh").
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from benchmarks.csvbench import Columns
from harness.api import HarnessError, PromptSpec

from .base import PaperBenchmark


class ArtBenchmark(PaperBenchmark):
    metrics = ("style:acc-e", "style:acc-u")
    columns = Columns(guidance=None, width=None, height=None, categories=None)
    expected_prompts = 100
    erased_artist: ClassVar[str]

    def required_columns(self) -> list[str]:
        return super().required_columns() + ["artist"]

    def select(self, specs: list[PromptSpec]) -> list[PromptSpec]:
        # Every prompt carries what a style judge needs: the file's artists and which one is erased.
        artists = list(dict.fromkeys(spec.labels["artist"] for spec in specs))
        if self.erased_artist not in artists:
            raise HarnessError(f"benchmark {self.name!r}: the file has no rows for {self.erased_artist!r} (artists: {artists})")
        return [
            dataclasses.replace(spec, labels={**spec.labels, "artist_candidates": artists, "erased_artist": self.erased_artist})
            for spec in specs
        ]


class ArtVanGogh(ArtBenchmark):
    name = "art-vangogh"
    display_name = "Van Gogh"
    description = "famous artists (Picasso, Van Gogh, Rembrandt, Warhol, Caravaggio) × 20; erase Van Gogh; Acc_e / Acc_u"
    concepts = "van-gogh"
    data_key = "art-famous"
    erased_artist = "Van Gogh"


class ArtKelly(ArtBenchmark):
    name = "art-kelly"
    display_name = "Kelly McKernan"
    description = "niche artists (Edlin, Kinkade, Eng, McKernan, Ajin) × 20; erase Kelly McKernan; Acc_e / Acc_u"
    concepts = "kelly-mckernan"
    data_key = "art-niche"
    erased_artist = "Kelly McKernan"
