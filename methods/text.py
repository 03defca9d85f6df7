"""Text-side helpers shared by the closed-form methods: encode prompts, and find token positions in them.

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

from dataclasses import dataclass

import torch


@dataclass
class EncodedPrompts:
    prompts: list[str]
    embeddings: torch.Tensor  # (n, L, d) float32: E(p) for each prompt
    input_ids: torch.Tensor  # (n, L) on the CPU
    attention_mask: torch.Tensor  # (n, L) on the CPU; 1 for [SoT], word tokens and the first [EoT]

    @property
    def max_length(self) -> int:
        return self.input_ids.shape[1]


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str], batch_size: int = 64, progress=None) -> EncodedPrompts:
    """``E(p)`` for every prompt, in float32, on the text encoder's device.

    ``progress`` optionally wraps the batch iterator (``ctx.progress``).
    """
    tokenizer, text_encoder = pipe.tokenizer, pipe.text_encoder
    prompts = list(prompts)
    tokens = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
    starts = range(0, len(prompts), batch_size)
    if progress is not None:
        starts = progress(starts, total=len(starts), desc="encoding prompts")
    chunks = [text_encoder(tokens.input_ids[start : start + batch_size].to(text_encoder.device))[0].float() for start in starts]
    embeddings = torch.cat(chunks) if chunks else torch.zeros(0, tokenizer.model_max_length, text_encoder.config.hidden_size)
    return EncodedPrompts(prompts, embeddings, tokens.input_ids, tokens.attention_mask)


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
