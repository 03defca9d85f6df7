"""The ``tiny`` backbone: a random SD-architecture pipeline built in code from a fixed seed, in about a second.

``tiny_pipeline()`` builds a ``StableDiffusionPipeline`` with the same component classes as SD v1.4
(``UNet2DConditionModel`` with cross-attention, ``AutoencoderKL``, ``CLIPTextModel`` and a ``CLIPTokenizer``
that pads with its end token).  It knows nothing, but every code path of a method or of the engine runs on it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

TINY_SEED = 0
TINY_MAX_LENGTH = 16  # short, but long enough that prompts have several [EoT]/pad tokens like SD's 77
TINY_IMAGE_SIZE = 32


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte → printable-character map (GPT-2 scheme): the 256 characters a CLIP vocabulary starts with."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def write_char_tokenizer(directory: str | Path, max_length: int = TINY_MAX_LENGTH) -> Path:
    """Write a character-level CLIP tokenizer (no merges) that ``CLIPTokenizer.from_pretrained`` loads.

    Its layout is CLIP's: every byte-character with and without the ``</w>``
    end-of-word mark, then ``<|startoftext|>`` and ``<|endoftext|>``, and the end
    token doubles as the pad token, as in SD v1.4.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    config = {
        "model_max_length": max_length,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "CLIPTokenizer",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return directory


def tiny_pipeline(seed: int = TINY_SEED, device: str = "cpu", dtype: str = "float32"):
    """A random, tiny ``StableDiffusionPipeline`` (32×32 images, 4×4 latents), identical for the same seed."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(write_char_tokenizer(tmp))
    # CLIP's text model pools at eos_token_id; the default config value is wrong for our vocabulary.
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=TINY_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(text_config)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(
        sample_size=TINY_IMAGE_SIZE // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=TINY_IMAGE_SIZE,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    if dtype != "float32":
        pipe = pipe.to(dtype=getattr(torch, dtype))
    return pipe.to(device)
