"""Prompts into text-encoder states, the one way the engine and every method do it.

``E(p)`` is the text encoder's last hidden state (``text_encoder(ids)[0]``) for prompt ``p`` padded to the
tokenizer's maximum length ``L`` (77 for SD, 16 for the tiny backbone) and cut there, one row per token; row 0 is
[SoT], and SD-1.x pads with [EoT].  This module imports torch: import it inside the functions that encode.
"""

from __future__ import annotations

from contextlib import contextmanager
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


def computes_below_float32(module) -> bool:
    """Whether ``module``'s floating-point weights are float16 or bfloat16."""
    return torch.finfo(module.dtype).eps > torch.finfo(torch.float32).eps


@contextmanager
def float32_text_encoder(pipe):
    """The pipeline's text encoder computing in float32 inside the block, whatever the run's dtype.

    What a method *decides* from text states (a closed-form edit's key statistics, SAFREE's trigger tokens) should
    not carry the encoder's own round-off: in bfloat16 (ε = 2⁻⁸, compounded over its layers) it moved the
    UCE/RECE/TRCE-T solutions of a bfloat16 run by 3–99% of the float32 ones.  Each floating-point parameter and
    buffer is upcast in place (the Parameter objects stay, so the engine's bookkeeping and the forward hooks hold)
    and given back its own dtype after the block, also when the block or the upcast itself fails; float16/bfloat16 →
    float32 → the same dtype is exact, so the weights afterwards are bit-identical (an edit applied to them included).
    """
    encoder = pipe.text_encoder
    if not computes_below_float32(encoder):
        yield encoder
        return
    tensors = [t for t in (*encoder.parameters(), *encoder.buffers()) if t.is_floating_point()]
    dtypes = [t.dtype for t in tensors]
    try:
        with torch.no_grad():
            for tensor in tensors:
                tensor.data = tensor.data.float()
        yield encoder
    finally:
        with torch.no_grad():
            for tensor, dtype in zip(tensors, dtypes):
                tensor.data = tensor.data.to(dtype)


def rows_computed_in(pipe) -> dict:
    """For a cache key of anything computed from ``encode_prompts``' float32 states: on a float16/bfloat16 encoder
    they are computed in float32 since ``float32_text_encoder`` exists (before, in the encoder's dtype), so an entry
    cached before is not reused; empty for a float32 encoder, whose keys stay as they were."""
    return {"rows_computed_in": "float32"} if computes_below_float32(pipe.text_encoder) else {}


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str], *, batch_size: int | None = 64, dtype: torch.dtype | None = torch.float32,
                   progress=None) -> EncodedPrompts:
    """``E(p)`` and the pooled output for every prompt, on the text encoder's device.

    ``batch_size`` prompts per encoder call (None: all in one call); ``dtype`` of the returned states: float32 by
    default, which the methods solve and train in, and then *computed* in float32 too (``float32_text_encoder``) on
    a float16/bfloat16 pipeline; None: the encoder's own states in its own dtype, as sampling uses them.
    ``progress`` optionally wraps the batch iterator (``ctx.progress``).
    """
    if dtype == torch.float32 and computes_below_float32(pipe.text_encoder):
        with float32_text_encoder(pipe):
            return encode_prompts(pipe, prompts, batch_size=batch_size, dtype=dtype, progress=progress)
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
