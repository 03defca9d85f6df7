"""Sampling the toy pipeline from text states, as the harness engine does (for training checks and calibration).

Each sample's starting noise comes from its own CPU generator, so an image
depends only on its seed, never on its batch-mates or the device (up to the
last float bits in which batched and single kernels differ, which may tip a
pixel by one 8-bit step).  Images are rounded to 8 bits, as the engine's PNG
files are, before they are scored.
"""

from __future__ import annotations

import torch

from harness.text import encode_prompts


def encode(pipe, prompts: list[str]) -> torch.Tensor:
    """The text encoder's last hidden states [N, 24, 64] (what the UNet cross-attends to), as the engine encodes them."""
    return encode_prompts(pipe, prompts, batch_size=None, dtype=None).embeddings


def initial_latents(pipe, seeds: list[int]) -> torch.Tensor:
    size = pipe.unet.config.sample_size
    noise = [
        torch.randn((1, pipe.unet.config.in_channels, size, size), generator=torch.Generator().manual_seed(int(s))) for s in seeds
    ]
    return torch.cat(noise).to(pipe.unet.device, pipe.unet.dtype)


@torch.no_grad()
def sample(
    pipe, cond: torch.Tensor, seeds: list[int], steps: int = 20, guidance: float = 7.5, uncond=None, batch_size: int = 512
):
    """Images [N, 3, H, W] in [0, 1] for text states ``cond`` [N, T, D] with DDIM and classifier-free guidance."""
    if uncond is None:
        uncond = encode(pipe, [""])
    out = []
    for start in range(0, len(seeds), batch_size):
        chunk_cond = cond[start : start + batch_size]
        chunk_uncond = uncond.expand(len(chunk_cond), -1, -1) if len(uncond) == 1 else uncond[start : start + batch_size]
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)  # set_timesteps mutates it
        scheduler.set_timesteps(steps, device=pipe.unet.device)
        latents = initial_latents(pipe, seeds[start : start + batch_size]) * scheduler.init_noise_sigma
        context = torch.cat([chunk_uncond, chunk_cond]).to(pipe.unet.dtype)
        for timestep in scheduler.timesteps:
            latent_input = scheduler.scale_model_input(torch.cat([latents, latents]), timestep)
            noise_uncond, noise_cond = pipe.unet(latent_input, timestep, encoder_hidden_states=context).sample.chunk(2)
            latents = scheduler.step(noise_uncond + guidance * (noise_cond - noise_uncond), timestep, latents).prev_sample
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample.float()
        out.append(((decoded / 2 + 0.5).clamp(0, 1) * 255).round() / 255)
    return torch.cat(out)


def sample_prompts(pipe, prompts: list[str], seeds: list[int], steps: int = 20, guidance: float = 7.5, batch_size: int = 512):
    return sample(pipe, encode(pipe, prompts), seeds, steps, guidance, batch_size=batch_size)
