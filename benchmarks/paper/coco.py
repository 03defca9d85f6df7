"""COCO captions for knowledge preservation: FID against the base model's own images, and CLIP score.

The 3k validation prompts that RECE and TRCE use are derived, byte-exactly, from
the 30k file (reproducing RECE @ 403a67f ``dataset/coco_30k_val.csv``, sha256 418d22c4…): RECE's ``df.sample(n=3000, random_state=42)``
takes the rows at positions ``RandomState(42).choice(30000, 3000, replace=False)``,
in that order.  Guidance is 7.5 (the file has none); seeds are the file's.

CLIP-S is ``clip-score-b32`` (CLIP ViT-B/32, 100·cos), the model behind the
paper's numbers: TRCE's evaluation (TRCE @ 0da9b71 ``scripts/eval_coco_batch.ipynb``)
runs Taited/clip-score with no ``--clip-model``, whose default is ``ViT-B/32``
(Taited/clip-score @ dbfa0ca ``src/clip_score/clip_score.py``).  ViT-L/14's
scores are on another scale and do not compare with the paper's column; they
are one parameter away: ``coco:metrics=fid:fid|clip-score:clip-score``.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass

from benchmarks.csvbench import Columns, CsvTable, read_csv_table, require_columns, specs_from_table
from benchmarks.data import COCO3K_SHA256
from harness.api import HarnessError, PromptSpec

from .base import PaperBenchmark

SUBSET_SEED = 42


def subset_positions(rows: int, size: int) -> list[int]:
    """RECE's ``DataFrame.sample(n=size, random_state=42)``: positions in the order they are drawn."""
    import numpy as np

    return [int(i) for i in np.random.RandomState(SUBSET_SEED).choice(rows, size=size, replace=False)]


def subset_csv_bytes(table: CsvTable, positions: list[int]) -> bytes:
    """The subset file as RECE wrote it (pandas ``to_csv(index=False)``: minimal quoting, LF), for its sha256."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.header)
    for position in positions:
        writer.writerow([table.rows[position][name] for name in table.header])
    return buffer.getvalue().encode("utf-8")


class Coco(PaperBenchmark):
    name = "coco"
    display_name = "COCO"
    description = "COCO-30k captions, the 3k validation subset (RandomState(42)); FID vs. the base model's images, CLIP score (ViT-B/32)"
    concepts = None  # preservation: measured for whatever concept set the run erases
    metrics = ("fid:fid", "clip-score-b32:clip-score")  # ViT-B/32, as TRCE's evaluation (module docstring)
    data_key = "coco30k"
    columns = Columns(guidance=None, width=None, height=None, categories=None)

    @dataclass
    class Params(PaperBenchmark.Params):
        subset: int = 3000  # prompts drawn with RandomState(42); 0 = all rows of the file

    def read_all(self) -> list[PromptSpec]:
        table = read_csv_table(self.resolved().path)
        require_columns(table, self.required_columns())
        specs = specs_from_table(table, self.columns, default_guidance=self.default_guidance, size=self.params.size)
        self._subset_sha256 = None
        self._file_rows = len(specs)
        if not self.params.subset:
            self._positions = list(range(len(specs)))
            return specs
        if self.params.subset > len(specs):
            raise HarnessError(
                f"benchmark 'coco': {self.resolved().path} has {len(specs)} rows, fewer than subset={self.params.subset}; "
                "pass coco:subset=N (or 0 for all rows)"
            )
        self._positions = subset_positions(len(specs), self.params.subset)
        self._subset_sha256 = hashlib.sha256(subset_csv_bytes(table, self._positions)).hexdigest()
        if self.resolved().pinned and self.params.subset == 3000 and self._subset_sha256 != COCO3K_SHA256:
            raise HarnessError(f"the derived COCO 3k subset has sha256 {self._subset_sha256}, expected {COCO3K_SHA256}")
        return specs

    def select(self, specs: list[PromptSpec]) -> list[PromptSpec]:
        return [specs[position] for position in self._positions]

    def source(self) -> dict:
        source = super().source()
        if self.params.subset:
            source["derivation"] = (
                f"rows at RandomState({SUBSET_SEED}).choice({self._file_rows}, {self.params.subset}, replace=False) of the file, in draw order"
            )
        source["subset_sha256"] = self._subset_sha256
        return source
