"""Repeated seeds: ``--seeds-per-prompt K`` generates K images per prompt, with seeds derived from the prompt's own.

Seed 0 of a prompt is the benchmark's seed, unchanged, so K = 1 is exactly the benchmark and a K = 4 run reuses
every image a K = 1 run made.  Seed k ≥ 1 is a hash of (the benchmark's seed, k): deterministic, spread over 2**32,
and independent of the prompt's position, so ``--limit`` does not change it.  Each extra spec is named
``<prompt id>#seed<k>`` and carries its prompt's id in ``labels[SEEDS_OF]``: intervals and paired tests
resample and pair by prompt, not by image (stored as each value's ``prompt_id``).  The label has a name of its own, not
"prompt_id": a prompt CSV's extra columns become labels, and a column of that common name must not silently turn
unrelated rows into seeds of one prompt.
"""

from __future__ import annotations

import dataclasses
import hashlib

from harness.api import HarnessError, PromptSpec

SEEDS_OF = "seeds_of"  # the label naming the prompt a repeated-seed spec belongs to


def derived_seed(seed: int, k: int) -> int:
    """The k-th seed of a prompt whose benchmark seed is ``seed`` (k = 0: ``seed`` itself)."""
    if k == 0:
        return seed
    digest = hashlib.sha256(f"erasure-harness seed {seed} repeat {k}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def repeat_seeds(specs: list[PromptSpec], per_prompt: int) -> list[PromptSpec]:
    """``per_prompt`` specs for each spec in ``specs``, prompt by prompt; ``per_prompt = 1`` returns ``specs`` unchanged."""
    if per_prompt < 1:
        raise HarnessError(f"--seeds-per-prompt must be at least 1; got {per_prompt}")
    if per_prompt == 1:
        return list(specs)
    repeated = []
    for spec in specs:
        labels = {**spec.labels, SEEDS_OF: spec.id}
        repeated.append(dataclasses.replace(spec, labels=labels))
        for k in range(1, per_prompt):
            repeated.append(dataclasses.replace(spec, id=f"{spec.id}#seed{k}", seed=derived_seed(spec.seed, k), labels=labels))
    return repeated
