"""``uce``: Unified Concept Editing (Gandikota et al., WACV 2024).

UCE maps the text embedding of each concept onto that of a guide ("nudity" → " ",
"Van Gogh" → "art") in every cross-attention key/value projection, and keeps a
retain set where it was (official code rohitgandikota/unified-concept-editing):

    W ← (λW + e Σ (W n) cᵀ + p Σ (W r) rᵀ) · (λI + e Σ c cᵀ + p Σ r rᵀ)⁻¹

    c  rows of the concept prompt's embedding E(o)
    n  the guide prompt's rows aligned with them; the target value is W n (W before the edit)
    r  rows of the retain prompts, whose values W r must not change

Two generations of the official code differ in which rows are used:

* ``tokens="block"`` (default; the 2023 paper code, @ 35e91e2 ``train-scripts/train_erase.py``).  This is what RECE
  starts from and what the UCE rows of the RECE and TRCE tables used.  With
  ``k(p)`` the last word token and ``F = max(k(o), k(n))``, the block
  ``E(o)[k(o) : L − (F − k(o))]`` (last word, [EoT] and all pads) maps onto
  ``E(n)[k(n) : L − (F − k(n))]``.  For "nudity" → " " the word lands on the guide's
  [SoT], [EoT] on [EoT], and pad t on pad t − 1.  The retain set is
  R = [""] + the concept set's ``preserve`` list, all L rows each, with
  ``p = max(0.1, 1/|R|)``.
* ``tokens="last"`` (the 2025 rewrite, @ 28c81ed ``trainscripts/uce_sd_erase.py``): one row per concept,
  ``E(o)[k(o)] → E(n)[k(n)]`` (a guide of "" or " " gives [SoT]).  The preserve concepts
  keep their last word row, with ``p = 1``.

Defaults are the official ones: λ = 0.5 (hard-coded in the 2023 script), e = 1,
both ``to_k`` and ``to_v`` edited, ``technique="replace"``.  The concept set gives
``erase``, ``guides`` (one for all or one per concept; " " when absent, i.e.
"towards the unconditional") and ``preserve``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from harness.api import ConceptSet, HarnessError, Method
from harness.validate import param
from methods.closed_form import KeyStatistics, closed_form_edit, cross_attention_projections
from methods.text import encode_prompts, last_word_index

TOKEN_VARIANTS = {
    "block": "2023 paper code: last word + [EoT] + pads, aligned with the guide prompt",
    "last": "2025 rewrite: the last word token only",
}


class UCE(Method):
    name = "uce"
    display_name = "UCE"
    description = "Unified Concept Editing: closed-form edit of cross-attention K/V (2023 token-block variant by default)"
    paper = "Gandikota et al., Unified Concept Editing in Diffusion Models, WACV 2024"
    version = "2"  # 2: exact float64 solve (solver=limit is version 1's)
    # The defaults are the 2023 paper code (UCE @ 35e91e2, train-scripts/train_erase.py); the official preset names
    # them, and "2025" is the diffusers rewrite (@ 28c81ed, trainscripts/uce_sd_erase.py: one token, p = 1).
    presets = {
        "official": {"tokens": "block", "lamb": 0.5, "erase_scale": 1.0, "preserve_scale": None, "edit_keys": True},
        "2025": {"tokens": "last", "lamb": 0.5, "erase_scale": 1.0, "preserve_scale": None, "edit_keys": True},
    }

    @dataclass
    class Params:
        tokens: Literal["block", "last"] = "block"  # 2023 code (default) or the 2025 rewrite
        lamb: float = param(0.5, ge=0)  # λ: pull towards the current W
        erase_scale: float = param(1.0, ge=0)  # e
        preserve_scale: float | None = param(None, ge=0)  # p; None = official rule: max(0.1, 1/|R|) for "block", 1.0 for "last"
        edit_keys: bool = True  # edit attn2.to_k as well as attn2.to_v (official with_to_k=True)
        solver: Literal["exact", "limit"] = "exact"  # float64 solve unless singular to working precision (closed_form.invert)

    def edit(self, pipe, concepts: ConceptSet, ctx) -> dict:
        return apply_uce(pipe, concepts, self.params, ctx)


def apply_uce(pipe, concepts: ConceptSet, params: UCE.Params, ctx) -> dict:
    """Run the UCE edit in place and return its metadata (RECE calls this as its first step)."""
    if params.tokens not in TOKEN_VARIANTS:
        raise HarnessError(f"uce: tokens={params.tokens!r} is not one of {sorted(TOKEN_VARIANTS)}")
    pairs = erase_pairs(concepts, "uce")

    # 1. erase term: keys from the concept prompts, targets from the guide prompts
    if params.tokens == "block":
        erase, n_keys = token_block_statistics(pipe, pairs)
        retain = [""] + list(concepts.preserve)
        preserve = KeyStatistics.preserve(encode_prompts(pipe, retain).embeddings.flatten(0, 1))
        default_scale = max(0.1, 1 / len(retain))
    else:
        erase, n_keys = last_token_statistics(pipe, pairs)
        retain = list(concepts.preserve)
        preserve = KeyStatistics.preserve(last_token_rows(pipe, retain)) if retain else None
        default_scale = 1.0
    preserve_scale = default_scale if params.preserve_scale is None else params.preserve_scale

    # 2. one closed-form solve for every attn2 key/value matrix
    projections = cross_attention_projections(pipe.unet, edit_keys=params.edit_keys)
    solved = closed_form_edit(
        projections,
        erase,
        lamb=params.lamb,
        erase_scale=params.erase_scale,
        preserve=preserve,
        preserve_scale=preserve_scale,
        solver=params.solver,
    )
    return {
        "method": "uce",
        "variant": f"tokens={params.tokens} ({TOKEN_VARIANTS[params.tokens]})",
        "tokens": params.tokens,
        "lamb": params.lamb,
        "erase_scale": params.erase_scale,
        "preserve_scale": preserve_scale,
        "preserve_scale_rule": "official default" if params.preserve_scale is None else "set by user",
        "erase": [list(pair) for pair in pairs],
        "retain": retain,
        "erase_keys": n_keys,
        "edit_keys": params.edit_keys,
        "quirks": {},
        **solved,
    }


def erase_pairs(concepts: ConceptSet, method: str) -> list[tuple[str, str]]:
    """(concept text, guide text) for each erased concept; the guide defaults to " " (towards the unconditional)."""
    if not concepts.erase:
        raise HarnessError(f"{method}: concept set {concepts.name!r} has nothing to erase (its 'erase' list is empty)")
    return [(text, concepts.guide_for(index) or " ") for index, text in enumerate(concepts.erase)]


def token_block_statistics(pipe, pairs: list[tuple[str, str]]) -> tuple[KeyStatistics, int]:
    """The 2023 token block: ``E(o)[k_o : L−(F−k_o)] → E(n)[k_n : L−(F−k_n)]``, F = max(k_o, k_n) (``train_erase.py`` @ 35e91e2)."""
    keys, targets = token_block_rows(pipe, pairs)
    return KeyStatistics.from_pairs(keys, targets), len(keys)


def token_block_rows(pipe, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    concept = encode_prompts(pipe, [old for old, _ in pairs])
    guide = encode_prompts(pipe, [new for _, new in pairs])
    length = concept.max_length
    keys, targets = [], []
    for index in range(len(pairs)):
        k_old = last_word_index(concept.attention_mask[index])
        k_new = last_word_index(guide.attention_mask[index])
        shift = max(k_old, k_new)  # both blocks end early by what the longer prefix used, so they have L − F rows
        keys.append(concept.embeddings[index, k_old : length - (shift - k_old)])
        targets.append(guide.embeddings[index, k_new : length - (shift - k_new)])
    return torch.cat(keys), torch.cat(targets)


def last_token_statistics(pipe, pairs: list[tuple[str, str]]) -> tuple[KeyStatistics, int]:
    """The 2025 variant: one row per concept, ``E(o)[k(o)] → E(n)[k(n)]`` (``uce_sd_erase.py`` @ 28c81ed)."""
    keys = last_token_rows(pipe, [old for old, _ in pairs])
    targets = last_token_rows(pipe, [new for _, new in pairs])
    return KeyStatistics.from_pairs(keys, targets), len(keys)


def last_token_rows(pipe, prompts: list[str]) -> torch.Tensor:
    encoded = encode_prompts(pipe, prompts)
    rows = [encoded.embeddings[i, last_word_index(encoded.attention_mask[i])] for i in range(len(prompts))]
    return torch.stack(rows)
