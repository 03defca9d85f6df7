"""What the paper's benchmarks share: a pinned upstream file, read with schema checks, maybe narrowed to a subset.

Every benchmark takes these parameters (``--bench i2p:data=FILE,size=512``):

* ``data``: a local copy of the upstream file instead of the verified cache.
* ``ungated``: for gated sets (MMA, P4D), use the ungated copy (prints its licence caveat).
* ``size``: force another square size for every row.
* ``row_sizes``: generate each row at the file's ``sd_image_width`` × ``sd_image_height``
  (I2P's rows, as RECE's generator does) instead of the backbone's size.
* ``metrics``: replace the benchmark's metrics, ``"nudenet:asr|nudenet:asr-rece"``.

Prompts keep the file's seed and guidance where it has them; steps and size
are the backbone's (SD v1.4: DDIM, 30 steps, 512×512) for every row, as in
the paper (§5.1: "DDIM scheduler with 30 steps"): TRCE's generator passes
``height = 512, width = 512`` for every nudity set (TRCE @ 0da9b71
``scripts/gen_sexual.py``), although 14 of the 931 I2P "sexual" rows ask for
another size (e.g. 512×384).

Where that released generator differs from the paper's text, the harness follows the text, and numbers from the
two are not image-for-image comparable: it never sets a scheduler, so it samples with the one in SD v1.4's
``model_index.json`` (PNDM), in float16, seeds the global CUDA generator (``seed_everything``) where the harness
gives each image its own CPU generator, and saves JPEG files (PIL's default quality 75) that its NudeNet and
CLIP-score notebooks read back; the harness scores the generated pixels, losslessly stored as PNG.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from benchmarks.csvbench import Columns, read_csv_table, require_columns, specs_from_table, split_list
from benchmarks.data import Resolved, resolve, upstream
from harness.api import Benchmark, HarnessError, PromptSpec


class PaperBenchmark(Benchmark):
    data_key: ClassVar[str]  # key in benchmarks.data.UPSTREAMS
    columns: ClassVar[Columns] = Columns()
    default_seed: ClassVar[int | None] = None  # for files without a seed column
    default_guidance: ClassVar[float] = 7.5  # for files without a guidance column
    expected_prompts: ClassVar[int | None] = None  # prompt count on the pinned file, checked when the file is the pinned one
    derivation: ClassVar[str] = "all rows"

    @dataclass
    class Params:
        data: str | None = None  # local copy of the upstream file
        ungated: bool = False  # gated sets: use the ungated copy (licence caveat printed)
        size: int | None = None  # force a square image size for every row (unset: the backbone's, 512 on SD v1.4, as TRCE)
        row_sizes: bool = False  # each row at the file's sd_image_width/height (RECE's protocol) instead of the backbone's size
        metrics: str | None = None  # override the metrics, "scorer:metric|scorer:metric"

    def __init__(self, params=None):
        super().__init__(params)
        if self.params.size is not None and self.params.row_sizes:
            raise HarnessError(f"benchmark {self.name!r}: size= and row_sizes=true contradict each other; pass one")
        if self.params.metrics:
            self.metrics = split_list(self.params.metrics)
        self._resolved: Resolved | None = None
        self._specs: list[PromptSpec] | None = None

    # ------------------------------------------------------------------ data

    def resolved(self, fetch_missing: bool = True) -> Resolved:
        if self._resolved is None:
            self._resolved = resolve(self.data_key, self.params.data, fetch_missing=fetch_missing, ungated=self.params.ungated)
        return self._resolved

    def required_columns(self) -> list[str]:
        """The columns this benchmark reads; a file without one of them is refused with the columns it has."""
        c = self.columns
        return [name for name in (c.prompt, c.seed, c.guidance, c.case_number, c.width, c.height, c.categories) if name]

    def read_all(self) -> list[PromptSpec]:
        """Every row of the file as a spec, before any subset is taken."""
        table = read_csv_table(self.resolved().path)
        require_columns(table, self.required_columns())
        # Unless asked for, the rows' sizes are not read: they stay in the labels, as text, and the backbone's size applies.
        columns = self.columns if self.params.row_sizes else dataclasses.replace(self.columns, width=None, height=None)
        return specs_from_table(
            table,
            columns,
            default_seed=self.default_seed,
            default_guidance=self.default_guidance,
            size=self.params.size,
        )

    def select(self, specs: list[PromptSpec]) -> list[PromptSpec]:
        """The benchmark's subset of the file's rows (all of them by default)."""
        return specs

    def prompts(self) -> list[PromptSpec]:
        if self._specs is None:
            specs = self.select(self.read_all())
            if self.resolved().pinned and self.expected_prompts is not None and len(specs) != self.expected_prompts:
                raise HarnessError(
                    f"benchmark {self.name!r}: {len(specs)} prompts from the pinned file, expected {self.expected_prompts}"
                )
            self._specs = specs
        return self._specs

    def source(self) -> dict:
        resolved = self.resolved()
        return {
            **resolved.source(),
            "url": upstream(self.data_key).url,
            "derivation": self.derivation,
            "prompts": len(self.prompts()),
        }


def has_category(spec: PromptSpec, category: str) -> bool:
    """I2P's rule: the category is one of the comma-separated tokens (AIML-TUDA/i2p; the ESD-format ``unsafe-prompts4703.csv``)."""
    return category in spec.labels.get("categories", ())
