"""Prompts into text-encoder states, the one way the engine and every method do it.

``E(p)`` is the text encoder's last hidden state (``text_encoder(ids)[0]``) for prompt ``p`` padded to the
tokenizer's maximum length ``L`` (77 for SD, 16 for the tiny backbone) and cut there, one row per token; row 0 is
[SoT], and SD-1.x pads with [EoT].  This module imports torch: import it inside the functions that encode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EncodedPrompts:
    prompts: list[str]
    embeddings: torch.Tensor  # (n, L, d): E(p) for each prompt
    pooled: torch.Tensor  # (n, d): the encoder's pooled output (at the first [EoT] for CLIP)
    input_ids: torch.Tensor  # (n, L) on the CPU
    attention_mask: torch.Tensor  # (n, L) on the CPU; 1 for [SoT], word tokens and the first [EoT]

    @property
    def max_length(self) -> int:
        return self.input_ids.shape[1]


def tokenize(tokenizer, prompts: list[str]):
    """Token ids (and attention mask) padded to the tokenizer's maximum length and cut there, as tensors."""
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str], *, batch_size: int | None = 64, dtype: torch.dtype | None = torch.float32,
                   progress=None) -> EncodedPrompts:
    """``E(p)`` and the pooled output for every prompt, on the text encoder's device.

    ``batch_size`` prompts per encoder call (None: all in one call); ``dtype`` of the returned states (float32 by
    default, which the closed-form methods solve in; None: the encoder's own, which sampling uses).  ``progress``
    optionally wraps the batch iterator (``ctx.progress``).
    """
    tokenizer, text_encoder = pipe.tokenizer, pipe.text_encoder
    prompts = list(prompts)
    tokens = tokenize(tokenizer, prompts)
    step = batch_size or max(len(prompts), 1)
    starts = range(0, len(prompts), step)
    if progress is not None:
        starts = progress(starts, total=len(starts), desc="encoding prompts")
    hidden, pooled = [], []
    for start in starts:
        output = text_encoder(tokens.input_ids[start : start + step].to(text_encoder.device))
        hidden.append(output[0] if dtype is None else output[0].to(dtype))
        pooled.append(output.pooler_output)
    if not hidden:
        width = text_encoder.config.hidden_size
        return EncodedPrompts(prompts, torch.zeros(0, tokenizer.model_max_length, width), torch.zeros(0, width), tokens.input_ids,
                              tokens.attention_mask)
    return EncodedPrompts(prompts, torch.cat(hidden), torch.cat(pooled), tokens.input_ids, tokens.attention_mask)
