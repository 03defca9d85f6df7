"""Shared pieces of the white-box prompt-optimisation attacks (UnlearnDiffAtk, P4D).

* ``encode_embeddings``: the text encoder run on token *embeddings* chosen by the attack (a relaxed or projected
  prompt) instead of looked-up ones.  The token-embedding layer's output is replaced by a forward hook, so the
  encoder's own position embeddings, causal mask and pooling (at the real EOS id) are used unchanged, in any
  transformers version.
* ``base_target_latents``: the base model's image of a prompt (original UNet and text encoder, the prompt's seed,
  guidance and steps, the pipeline's scheduler), kept as the final latent x₀.  The papers generate the image and
  encode it with the VAE; keeping the latent skips a decode/encode round trip (a simplification: VAE encoding of
  a decoded image is close to, not exactly, the latent it came from).
* ``denoising_draws``: the (t, ε) pairs of one prompt's search, from the prompt's seeded generator.
"""

from __future__ import annotations


def allowed_tokens(tokenizer):
    """Every token id except the tokenizer's special tokens (BOS, EOS, pad)."""
    import torch

    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, *tokenizer.all_special_ids}
    return torch.tensor([i for i in range(len(tokenizer)) if i not in special])


def prompt_ids(tokenizer, text: str, room: int) -> list[int]:
    """The prompt's token ids without BOS/EOS, truncated so that ``room`` free tokens still fit."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return ids[: max(0, tokenizer.model_max_length - 2 - room)]


def sequence(tokenizer, body: list[int]):
    """``[BOS] body [EOS] pad…`` as a [1, max_length] id tensor (the layout the pipeline encodes)."""
    import torch

    length = tokenizer.model_max_length
    ids = [tokenizer.bos_token_id, *body, tokenizer.eos_token_id]
    ids += [tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id] * (length - len(ids))
    return torch.tensor([ids[:length]])


def encode_embeddings(encoder, ids, embeddings):
    """``encoder(ids)[0]`` with the token-embedding layer's output replaced by ``embeddings`` ([B, L, D])."""
    layer = encoder.get_input_embeddings()
    handle = layer.register_forward_hook(lambda module, args, output: embeddings.to(output.dtype))
    try:
        return encoder(ids.to(encoder.device))[0]
    finally:
        handle.remove()


def encode_text(encoder, tokenizer, texts: list[str]):
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    return encoder(ids.to(encoder.device))[0]


def base_target_latents(pipe, ctx, spec, target_steps: int = 0):
    """x₀ of the base model (``ctx.base``: the original UNet and text encoder) for ``spec``: its seed (a CPU generator,
    as the engine), guidance, steps and negative prompt, with CFG, as the engine samples the base model's image.  A
    prompt that sets no steps takes ``target_steps`` if given, else the backbone's (``ctx.sampling_steps``; 50 where
    the caller named no backbone)."""
    import torch

    unet, encoder = ctx.base("unet"), ctx.base("text_encoder")
    steps = spec.steps or target_steps or ctx.sampling_steps or 50

    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    height = spec.height or unet.config.sample_size * factor
    width = spec.width or unet.config.sample_size * factor
    generator = torch.Generator(device="cpu").manual_seed(int(spec.seed) % (2**64))
    latents = torch.randn((1, unet.config.in_channels, height // factor, width // factor), generator=generator).to(unet.device)
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps, device=unet.device)
    latents = latents * scheduler.init_noise_sigma
    with torch.no_grad():
        both = torch.cat([encode_text(encoder, pipe.tokenizer, [spec.negative_prompt or ""]), encode_text(encoder, pipe.tokenizer, [spec.prompt])])
        for timestep in scheduler.timesteps:
            # The UNet runs in its own dtype (--dtype float16/bfloat16); the latents and the scheduler stay float32.
            model_input = scheduler.scale_model_input(latents, timestep).to(unet.dtype)
            predicted = unet(torch.cat([model_input, model_input]), timestep, encoder_hidden_states=both.to(unet.dtype)).sample.float()
            uncond, cond = predicted.chunk(2)
            noise = uncond + float(spec.guidance) * (cond - uncond)
            latents = scheduler.step(noise, timestep, latents).prev_sample
    return latents.float()


def denoising_draws(pipe, x0, count: int, generator, timestep: int | None = None):
    """``count`` pairs (t, ε, x_t) with x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε and t uniform over the training timesteps, or
    ``timestep`` when given."""
    import torch

    total = pipe.scheduler.config.num_train_timesteps
    draws = []
    for _ in range(count):
        t = torch.randint(total, (1,), generator=generator) if timestep is None else torch.tensor([timestep])
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        draws.append((t.to(x0.device), noise, pipe.scheduler.add_noise(x0, noise, t.to(x0.device))))
    return draws
