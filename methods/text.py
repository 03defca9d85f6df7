"""Text-side helpers shared by the closed-form methods: token positions in encoded prompts.

Prompts are encoded by the core's ``harness.text.encode_prompts`` (re-exported here; float32, 64 per call).

Notation: ``E(p)`` is the text encoder's last hidden state (``text_encoder(ids)[0]``) for
prompt ``p`` padded to the tokenizer's maximum length ``L`` (77 for SD, 16 for the
tiny backbone), one row per token.  Row 0 is [SoT].  SD-1.x pads with [EoT], so
every row after the prompt's words is an [EoT] row.

Positions are always found from the **token ids**.  The official TRCE code counts
words instead (``len(prompt.split()) + 1``), which is wrong as soon as a word
spans several tokens; ``word_count_*`` reproduce that behaviour for the quirk
switch and are never the default.
"""

from __future__ import annotations

import torch

from harness.text import EncodedPrompts, encode_prompts

__all__ = ["EncodedPrompts", "encode_prompts", "first_eot_index", "last_word_index", "phrase_ids", "phrase_token_positions",
           "word_count_eot_index", "word_count_phrase_positions"]


# --------------------------------------------------------------------------- positions from token ids (correct)


def last_word_index(attention_mask: torch.Tensor) -> int:
    """``k(p) = attention_mask.sum() − 2``: the last word token; 0 (= [SoT]) for an empty prompt (UCE, RECE, SPEED)."""
    return int(attention_mask.sum()) - 2


def first_eot_index(input_ids: torch.Tensor, eos_token_id: int) -> int:
    """Position of the first [EoT] token, read from the ids (every word may be several tokens)."""
    hits = (input_ids == eos_token_id).nonzero()
    if len(hits) == 0:  # cannot happen with a CLIP tokenizer, which always appends [EoT]
        return len(input_ids) - 1
    return int(hits[0, 0])


def phrase_token_positions(input_ids: torch.Tensor, phrase_ids: list[int]) -> list[int]:
    """Positions of the first occurrence of ``phrase_ids`` inside ``input_ids`` ([] when absent or empty)."""
    ids, n = input_ids.tolist(), len(phrase_ids)
    if n == 0:
        return []
    for start in range(1, len(ids) - n + 1):  # position 0 is [SoT]
        if ids[start : start + n] == phrase_ids:
            return list(range(start, start + n))
    return []


def phrase_ids(tokenizer, phrase: str) -> list[int]:
    """The token ids a phrase contributes inside a prompt (CLIP tokenises words independently)."""
    return tokenizer(phrase, add_special_tokens=False).input_ids


# --------------------------------------------------------------------------- official TRCE word-count quirk


def word_count_eot_index(prompt: str, max_length: int) -> int:
    """The official TRCE first-[EoT] index, ``len(prompt.split()) + 1`` (clamped to the sequence).

    Right only when every word is exactly one token (TRCE @ 0da9b71 ``src/cfr_utils.py``, ``prepare_k_v``).
    """
    return min(len(prompt.split()) + 1, max_length - 1)


def word_count_phrase_positions(prompt: str, phrase: str, max_length: int) -> list[int]:
    """The official TRCE keyword positions: word offsets of ``phrase`` in ``prompt``, plus one for [SoT]."""
    words, sub = prompt.split(), phrase.split()
    for start in range(len(words) - len(sub) + 1):
        if sub and words[start : start + len(sub)] == sub:
            return [i + 1 for i in range(start, start + len(sub)) if i + 1 < max_length]
    return []
