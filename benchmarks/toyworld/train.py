"""Train the toy world from scratch: tokenizer, text encoder, VAE, shape classifier, UNet.

    python -m benchmarks.toyworld.train --out DIR --device cuda --seed 0
    python -m benchmarks.toyworld.train --out /tmp/toy --device cpu --quick   # smoke test, about a minute

The output folder is a diffusers ``StableDiffusionPipeline`` (safetensors), plus
the toy scorer's weights (``toy_detector.safetensors``,
``toy_shape_classifier.safetensors``) and ``training.json`` (configuration,
wall time of each part, final metrics).

Everything that runs per step lives on the training device: the rendered image
bank, the latent bank, the tokenised caption table and the frozen text
encoder's states for every distinct training caption.  A step therefore only
indexes tensors; the host reads a loss back once per ``log_every`` steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from benchmarks.toyworld import models, sampling, world
from benchmarks.toyworld import tokenizer as toy_tokenizer
from benchmarks.toyworld.scorer import DETECTOR_FILE, SHAPE_CLASSIFIER_FILE
from harness.versions import package_versions

TRAINING_FILE = "training.json"
BACKGROUND_CLASSES = world.backgrounds() + ["unmentioned"]


@dataclass
class TrainConfig:
    # The defaults are the recipe of the committed weights: 65 minutes on 2 CPU cores (training.json has the timings).
    seed: int = 0
    image_bank: int = 32768  # rendered training images (latents are pre-encoded once)
    captions_per_group: int = 0  # 0: every distinct training caption; n: at most n per (kind, colour, shape, background)
    eval_images: int = 1024
    # text encoder: CLIP-style pre-training on the pooled first [EoT], then frozen
    text_steps: int = 1000
    text_batch: int = 256
    text_lr: float = 1e-3
    # VAE: reconstruction MSE plus a tiny KL
    vae_steps: int = 1200
    vae_batch: int = 64
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    # shape classifier (scorer), on clean plus VAE-reconstructed images
    shape_steps: int = 500
    shape_batch: int = 128
    shape_lr: float = 2e-3
    # UNet: epsilon objective with min-SNR-γ weighting, one-cycle AdamW, EMA
    unet_steps: int = 5000
    unet_batch: int = 128
    unet_lr: float = 4e-4
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    prompt_dropout: float = 0.1  # empty prompt, for classifier-free guidance
    eot_dropout: float = 0.3  # every [EoT] replaced by the empty prompt's, so the UNet also reads word positions
    # final check: sample with the saved pipeline, as the benchmarks do
    sample_per_kind: int = 224
    sample_steps: int = 20
    guidance: float = 7.5
    log_every: int = 100
    # Seconds for the whole run (0: no limit).  Each training loop then lowers its step count to fit its share,
    # measured on this machine; the UNet gets whatever the earlier parts left.  The steps taken are recorded.
    time_budget: float = 0.0

    @classmethod
    def quick(cls, seed: int = 0) -> TrainConfig:
        """Tiny step counts: every code path runs, nothing is learned.  For tests and CPU smoke runs."""
        return cls(
            seed=seed,
            image_bank=512,
            captions_per_group=2,
            eval_images=64,
            text_steps=3,
            text_batch=32,
            vae_steps=3,
            vae_batch=32,
            shape_steps=3,
            shape_batch=32,
            unet_steps=3,
            unet_batch=16,
            sample_per_kind=2,
            sample_steps=2,
            log_every=1,
        )


# --------------------------------------------------------------------------- small helpers

# Shares of ``time_budget`` for the loops before the UNet's, and what is kept back for saving and the final check.
BUDGET_SHARES = {"text": 0.08, "vae": 0.17, "shape": 0.05}
BUDGET_RESERVE = 0.08


class Timer:
    """Wall time of each part, synchronising the device so asynchronous GPU work is counted where it ran."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def part(self, name: str):
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[name] = round(time.perf_counter() - start, 2)
        print(f"[toy train] {name}: {self.seconds[name]:.1f} s", flush=True)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def one_cycle(parameters, lr: float, steps: int):
    fused = all(p.is_cuda for p in parameters)  # one kernel for the whole update on the GPU
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=1e-2, fused=fused)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 2), pct_start=0.1)
    return optimizer, schedule


def seconds_per_step(step_fn, parameters, device: torch.device, probes: int = 5) -> float:
    """Time a few forward/backward passes (no update), so a stage can fit its step count to a time allowance."""

    def run(n):
        for _ in range(n):
            step_fn().backward()

    run(2)  # warm-up: cuDNN autotuning, allocator
    Timer(device)._sync()
    start = time.perf_counter()
    run(probes)
    Timer(device)._sync()
    for p in parameters:
        p.grad = None
    return (time.perf_counter() - start) / probes * 1.15  # + optimizer step and EMA update


def training_loop(name, steps, step_fn, parameters, lr, config, device, seconds=None, after_step=None) -> dict:
    """Run ``step_fn() -> loss`` with AdamW and a one-cycle schedule; returns the stage's training record.

    With ``seconds``, the step count is lowered (never raised) so the loop fits
    in that many seconds on this machine.  The loss is read back from the
    device only every ``log_every`` steps, so the host never waits on the GPU
    in between.
    """
    planned = steps
    if seconds:
        steps = max(1, min(steps, int(seconds / seconds_per_step(step_fn, parameters, device))))
        if steps < planned:
            print(f"[toy train] {name}: {steps} of {planned} steps fit in {seconds:.0f} s", flush=True)
    optimizer, schedule = one_cycle(parameters, lr, steps)
    progress = tqdm(range(steps), desc=name, dynamic_ncols=True, mininterval=1.0)
    start = time.perf_counter()
    running, count, last = None, 0, float("nan")
    for step in progress:
        loss = step_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        if after_step is not None:
            after_step()
        running = loss.detach() if running is None else running + loss.detach()
        count += 1
        if (step + 1) % config.log_every == 0 or step + 1 == steps:
            last = (running / count).item()
            progress.set_postfix(loss=f"{last:.4f}")
            running, count = None, 0
    return {"steps": steps, "final_loss": round(last, 5), "seconds_per_step": round((time.perf_counter() - start) / steps, 5)}


def in_chunks(fn, tensor: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(tensor[i : i + chunk]) for i in range(0, len(tensor), chunk)])


# --------------------------------------------------------------------------- captions on the device


class CaptionTable:
    """Every distinct training caption, tokenised, with its labels, grouped for fast conditional sampling.

    Captions are stored grouped by (kind, colour, shape, background mention),
    so drawing "a caption of kind k for a red circle on black" is one index
    computation on the device: ``offset[group] + floor(u · count[group])``.
    """

    def __init__(self, tokenizer, device: torch.device, per_group: int = 0):
        self.captions = world.all_captions(world.TRAINING_KINDS)
        if per_group:
            self.captions = _thin_groups(self.captions, per_group)
        encoded = toy_tokenizer.encode(tokenizer, [c.text for c in self.captions])
        ids = torch.tensor(encoded["input_ids"])
        if (ids == tokenizer.eos_token_id).sum(dim=1).min() < 2:
            raise RuntimeError("a training caption fills the context: raise tokenizer.MAX_LENGTH")
        # Colour-word (or synonym) positions: the only tokens that get a per-token colour label.
        keyword_mask = torch.tensor([keyword_positions(c, offsets) for c, offsets in zip(self.captions, encoded["offsets"])])
        kinds, colours, shapes = list(world.TRAINING_KINDS), world.colours(), world.shapes()
        background_modes = world.backgrounds() + [world.UNMENTIONED]
        self.kind = torch.tensor([kinds.index(c.kind) for c in self.captions])
        self.colour = torch.tensor([colours.index(c.colour) for c in self.captions])
        self.shape = torch.tensor([shapes.index(c.shape) for c in self.captions])
        self.background = torch.tensor([background_modes.index(c.background) for c in self.captions])
        group = self._group(self.kind, self.colour, self.shape, self.background)
        if not bool((group[1:] >= group[:-1]).all()):
            raise RuntimeError("world.all_captions() must return captions grouped by (kind, colour, shape, background)")
        num_groups = len(kinds) * len(colours) * len(shapes) * len(background_modes)
        self.count = torch.bincount(group, minlength=num_groups)
        self.offset = torch.cumsum(self.count, 0) - self.count
        mix = world.vocab()["training_mix"]
        self.kind_weights = torch.tensor([mix["explicit"], mix["synonym"], mix["implicit_seen"]])
        self.background_mentioned = mix["background_mentioned"]
        self.ids = ids
        self.keyword_mask = keyword_mask
        self.eot_mask = ids == tokenizer.eos_token_id
        for name in (
            "kind",
            "colour",
            "shape",
            "background",
            "count",
            "offset",
            "kind_weights",
            "ids",
            "keyword_mask",
            "eot_mask",
        ):
            setattr(self, name, getattr(self, name).to(device))

    @staticmethod
    def _group(kind, colour, shape, background_mode):
        # Must match the order of world.all_captions().
        return ((kind * len(world.colours()) + colour) * len(world.shapes()) + shape) * (
            len(world.backgrounds()) + 1
        ) + background_mode

    def sample(self, colour, shape, background, generator) -> torch.Tensor:
        """Caption indices from the training mix, one per image (colour/shape/background index tensors)."""
        n, device = len(colour), colour.device
        kind = torch.multinomial(self.kind_weights, n, replacement=True, generator=generator)
        mentioned = torch.rand(n, device=device, generator=generator) < self.background_mentioned
        background_mode = torch.where(mentioned, background, len(world.backgrounds()))
        group = self._group(kind, colour, shape, background_mode)
        pick = (torch.rand(n, device=device, generator=generator) * self.count[group]).long()
        return self.offset[group] + pick

    def sample_any(self, n: int, generator) -> torch.Tensor:
        device = self.ids.device
        colour = torch.randint(len(world.colours()), (n,), device=device, generator=generator)
        shape = torch.randint(len(world.shapes()), (n,), device=device, generator=generator)
        background = torch.randint(len(world.backgrounds()), (n,), device=device, generator=generator)
        return self.sample(colour, shape, background, generator)


def keyword_positions(caption: world.Caption, offsets) -> list[bool]:
    """Which token positions spell the caption's colour word or synonym (none for implicit captions)."""
    if not caption.keyword_is_colour_word:
        return [False] * len(offsets)
    start, end = caption.keyword_span
    return [e > s and s >= start and e <= end for s, e in offsets]


def _thin_groups(captions: list[world.Caption], per_group: int) -> list[world.Caption]:
    """An evenly spaced subset of at most ``per_group`` captions per group, keeping the grouping (quick runs)."""
    groups: dict[tuple, list] = {}
    for caption in captions:
        groups.setdefault((caption.kind, caption.colour, caption.shape, caption.background), []).append(caption)
    return [c for group in groups.values() for c in group[:: max(1, len(group) // per_group)][:per_group]]


# --------------------------------------------------------------------------- the parts


def make_image_bank(config: TrainConfig, device: torch.device):
    generator = torch.Generator().manual_seed(config.seed)
    train = world.sample_scenes(config.image_bank, generator).to(device)
    held_out = world.sample_scenes(config.eval_images, generator).to(device)
    return train, world.render_batches(train), held_out, world.render_batches(held_out)


def train_text_encoder(config, tokenizer, table: CaptionTable, device, generator, seconds=None):
    """CLIP-style pre-training: the pooled first [EoT] predicts colour, shape and background.

    A per-token head also predicts the colour at the colour word or synonym
    (and nowhere else).  Keyword-level edits (UCE, ESD-x) then have a colour
    direction to act on at the keyword, as on SD; implicit referents carry no
    token label, so their colour reaches the model only through the [EoT]
    states, as CLIP's contrastive objective puts it there.
    """
    torch.manual_seed(config.seed)
    encoder = models.text_encoder(tokenizer).to(device)
    hidden = encoder.config.hidden_size
    heads = nn.ModuleDict(
        {
            "colour": nn.Linear(hidden, len(world.colours())),
            "shape": nn.Linear(hidden, len(world.shapes())),
            "background": nn.Linear(hidden, len(BACKGROUND_CLASSES)),
            "token_colour": nn.Linear(hidden, len(world.colours())),
        }
    ).to(device)
    parameters = list(encoder.parameters()) + list(heads.parameters())

    def step():
        index = table.sample_any(config.text_batch, generator)
        out = encoder(table.ids[index])
        pooled = out.pooler_output
        token_targets = torch.where(table.keyword_mask[index], table.colour[index, None], -100)
        token_logits = heads["token_colour"](out.last_hidden_state)
        return (
            F.cross_entropy(heads["colour"](pooled), table.colour[index])
            + F.cross_entropy(heads["shape"](pooled), table.shape[index])
            + F.cross_entropy(heads["background"](pooled), table.background[index])
            + F.cross_entropy(token_logits.flatten(0, 1), token_targets.flatten(), ignore_index=-100)
        )

    encoder.train()
    metrics = training_loop("text encoder", config.text_steps, step, parameters, config.text_lr, config, device, seconds)
    encoder.eval().requires_grad_(False)

    # How well the pooled [EoT] names the colour, on seen and on held-out implicit phrasings.
    with torch.no_grad():
        for kind in (world.EXPLICIT, world.SYNONYM, world.IMPLICIT, world.IMPLICIT_HELDOUT):
            captions = world.all_captions((kind,))
            captions = random.Random(0).sample(captions, min(len(captions), 16 * config.eval_images))
            ids = torch.tensor(toy_tokenizer.encode(tokenizer, [c.text for c in captions])["input_ids"], device=device)
            labels = torch.tensor([world.colours().index(c.colour) for c in captions], device=device)
            logits = in_chunks(lambda x: heads["colour"](encoder(x).pooler_output), ids)
            metrics[f"pooled_colour_acc_{kind}"] = round((logits.argmax(-1) == labels).float().mean().item(), 4)
    return encoder, metrics


def encode_states(encoder, ids: torch.Tensor) -> torch.Tensor:
    """The frozen text encoder's last hidden states (what the pipeline feeds the UNet)."""
    return in_chunks(lambda x: encoder(x).last_hidden_state, ids)


def train_vae(config, images, held_out_images, detector, held_out_scenes, device, generator, seconds=None):
    torch.manual_seed(config.seed + 1)
    vae = models.vae().to(device)
    parameters = list(vae.parameters())

    def step():
        index = torch.randint(len(images), (config.vae_batch,), device=device, generator=generator)
        x = images[index] * 2 - 1
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=None)).sample
        return F.mse_loss(reconstruction, x) + config.vae_kl_weight * posterior.kl().mean()

    vae.train()
    metrics = training_loop("vae", config.vae_steps, step, parameters, config.vae_lr, config, device, seconds)
    vae.eval().requires_grad_(False)

    # SD scales latents to unit variance; take the factor from this VAE's latents.
    means = in_chunks(lambda x: vae.encode(x * 2 - 1).latent_dist.mean, images)
    scaling_factor = float(1.0 / means.std())
    vae.register_to_config(scaling_factor=scaling_factor)
    reconstructed = reconstruct(vae, held_out_images)
    metrics |= {
        "scaling_factor": round(scaling_factor, 5),
        "reconstruction_mse": round(F.mse_loss(reconstructed, held_out_images).item(), 6),
        "detector_acc_reconstructed": round((detector(reconstructed) == held_out_scenes.colour).float().mean().item(), 4),
    }
    return vae, metrics


def reconstruct(vae, images: torch.Tensor) -> torch.Tensor:
    return in_chunks(lambda x: (vae.decode(vae.encode(x * 2 - 1).latent_dist.mean).sample / 2 + 0.5).clamp(0, 1), images)


def train_shape_classifier(config, images, shape_labels, held_out, device, generator, seconds=None):
    """A small CNN that names the shape; trained on clean and VAE-reconstructed images so it also reads generated ones."""
    torch.manual_seed(config.seed + 2)
    classifier = models.ShapeClassifier().to(device)
    parameters = list(classifier.parameters())

    def step():
        index = torch.randint(len(images), (config.shape_batch,), device=device, generator=generator)
        return F.cross_entropy(classifier(images[index]), shape_labels[index])

    classifier.train()
    metrics = training_loop("shape classifier", config.shape_steps, step, parameters, config.shape_lr, config, device, seconds)
    classifier.eval().requires_grad_(False)
    for name, (x, y) in held_out.items():
        metrics[f"acc_{name}"] = round((in_chunks(classifier, x).argmax(-1) == y).float().mean().item(), 4)
    return classifier, metrics


def train_unet(
    config,
    latent_mean,
    latent_std,
    scaling_factor,
    scenes,
    table,
    states,
    empty_states,
    noise_schedule,
    device,
    generator,
    seconds=None,
):
    """ε-prediction with min-SNR-γ loss weights, prompt dropout and [EoT] dropout; returns the EMA weights."""
    torch.manual_seed(config.seed + 3)
    unet = models.unet().to(device)
    ema = [p.detach().clone() for p in unet.parameters()]
    parameters = list(unet.parameters())
    alphas_cumprod = noise_schedule.alphas_cumprod.to(device)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    # min-SNR-γ for ε-prediction: weight = min(SNR, γ) / SNR.
    loss_weight = snr.clamp(max=config.min_snr_gamma) / snr
    num_timesteps = len(alphas_cumprod)

    def step():
        n = config.unet_batch
        index = torch.randint(len(latent_mean), (n,), device=device, generator=generator)
        latents = (latent_mean[index] + latent_std[index] * torch.randn_like(latent_mean[index])) * scaling_factor
        caption = table.sample(scenes.colour[index], scenes.shape[index], scenes.background[index], generator)
        context = states[caption]
        drop_prompt = torch.rand(n, device=device, generator=generator) < config.prompt_dropout
        drop_eot = torch.rand(n, device=device, generator=generator) < config.eot_dropout
        replace = drop_prompt[:, None] | (drop_eot[:, None] & table.eot_mask[caption])  # [n, tokens]
        context = torch.where(replace[..., None], empty_states[None], context)
        t = torch.randint(num_timesteps, (n,), device=device, generator=generator)
        noise = torch.randn_like(latents)
        a = alphas_cumprod[t].sqrt()[:, None, None, None]
        s = (1 - alphas_cumprod[t]).sqrt()[:, None, None, None]
        prediction = unet(a * latents + s * noise, t, encoder_hidden_states=context).sample
        per_sample = (prediction - noise).pow(2).mean(dim=(1, 2, 3))
        return (loss_weight[t] * per_sample).mean()

    def update_ema():
        with torch.no_grad():
            torch._foreach_lerp_(ema, parameters, 1 - config.ema_decay)

    unet.train()
    metrics = training_loop("unet", config.unet_steps, step, parameters, config.unet_lr, config, device, seconds, update_ema)
    with torch.no_grad():
        for p, e in zip(parameters, ema):
            p.copy_(e)
    unet.eval().requires_grad_(False)
    return unet, metrics


# --------------------------------------------------------------------------- checking the saved pipeline


def evaluation_prompts(per_kind: int, seed: int) -> list[tuple[str, world.Caption]]:
    """A fixed sample of captions per kind, every colour included (the held-out kind is never trained on)."""
    rng = random.Random(seed)
    out = []
    for kind in (world.EXPLICIT, world.SYNONYM, world.IMPLICIT, world.IMPLICIT_HELDOUT):
        pool = world.all_captions((kind,))
        out += [(kind, caption) for caption in rng.sample(pool, min(per_kind, len(pool)))]
    return out


def load_pipeline(directory: str | Path, device: str | torch.device):
    from harness.backbones import load_sd_pipeline

    return load_sd_pipeline(str(directory), "float32", local_files_only=True, device=device)


def check_pipeline(config, out: Path, detector, classifier, device) -> dict:
    """Load the saved folder as the harness will, sample every caption kind, and score colour and shape."""
    pipe = load_pipeline(out, device)
    prompts = evaluation_prompts(config.sample_per_kind, config.seed)
    seeds = list(range(len(prompts)))
    images = sampling.sample_prompts(pipe, [c.text for _, c in prompts], seeds, config.sample_steps, config.guidance)
    colour = detector(images).cpu()
    shape = in_chunks(classifier, images).argmax(-1).cpu()
    metrics = {}
    for kind in dict.fromkeys(k for k, _ in prompts):
        rows = [i for i, (k, _) in enumerate(prompts) if k == kind]
        want_colour = torch.tensor([world.colours().index(prompts[i][1].colour) for i in rows])
        want_shape = torch.tensor([world.shapes().index(prompts[i][1].shape) for i in rows])
        metrics[f"colour_acc_{kind}"] = round((colour[rows] == want_colour).float().mean().item(), 4)
        metrics[f"shape_acc_{kind}"] = round((shape[rows] == want_shape).float().mean().item(), 4)
    return metrics


# --------------------------------------------------------------------------- saving


def save_scorer_weights(out: Path, detector, classifier):
    from safetensors.torch import save_file

    def cpu(state):
        return {k: v.detach().contiguous().cpu() for k, v in state.items()}

    save_file(cpu(detector.state_dict()), str(out / DETECTOR_FILE), metadata={"colours": json.dumps(world.colours())})
    save_file(cpu(classifier.state_dict()), str(out / SHAPE_CLASSIFIER_FILE), metadata={"shapes": json.dumps(world.shapes())})


def save_pipeline(out: Path, tokenizer, encoder, vae, unet, noise_schedule):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=noise_schedule,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to("cpu").save_pretrained(str(out), safe_serialization=True)


# --------------------------------------------------------------------------- main


def train(out: str | Path, device: str = "cpu", seed: int = 0, quick: bool = False, overrides: dict | None = None) -> dict:
    """Train every part, save the pipeline folder and scorer weights into ``out``, return the training record."""
    config = TrainConfig.quick(seed) if quick else TrainConfig(seed=seed)
    config = dataclasses.replace(config, **(overrides or {}))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    generator = torch.Generator(device).manual_seed(config.seed)
    timer = Timer(device)
    metrics: dict[str, dict] = {}
    detector = models.ColourDetector().to(device)
    total_start = time.perf_counter()

    def allowance(stage: str) -> float | None:
        if not config.time_budget:
            return None
        if stage == "unet":  # everything that is left
            return max(1.0, config.time_budget * (1 - BUDGET_RESERVE) - (time.perf_counter() - total_start))
        return config.time_budget * BUDGET_SHARES[stage]

    with timer.part("data"):
        scenes, images, held_out_scenes, held_out_images = make_image_bank(config, device)
        metrics["detector"] = {"acc_clean": round((detector(held_out_images) == held_out_scenes.colour).float().mean().item(), 4)}

    with timer.part("tokenizer"):
        corpus = sorted({c.text for c in world.all_captions(world.TRAINING_KINDS)})
        toy_tokenizer.train_tokenizer(corpus, out / "tokenizer")
        tokenizer = toy_tokenizer.load_tokenizer(out / "tokenizer")
        table = CaptionTable(tokenizer, device, config.captions_per_group)
        metrics["tokenizer"] = {"vocab_size": len(tokenizer), "training_captions": len(table.captions)}

    with timer.part("text_encoder"):
        encoder, metrics["text_encoder"] = train_text_encoder(config, tokenizer, table, device, generator, allowance("text"))
        states = encode_states(encoder, table.ids)
        empty_ids = torch.tensor(toy_tokenizer.encode(tokenizer, [""])["input_ids"], device=device)
        empty_states = encode_states(encoder, empty_ids)[0]

    with timer.part("vae"):
        vae, metrics["vae"] = train_vae(
            config, images, held_out_images, detector, held_out_scenes, device, generator, allowance("vae")
        )
        posterior = [vae.encode(images[i : i + 4096] * 2 - 1).latent_dist for i in range(0, len(images), 4096)]
        latent_mean = torch.cat([p.mean for p in posterior]).detach()
        latent_std = torch.cat([p.std for p in posterior]).detach()
        del posterior

    with timer.part("shape_classifier"):
        reconstructed = reconstruct(vae, images)
        clean_and_reconstructed = torch.cat([images, reconstructed])
        shape_labels = torch.cat([scenes.shape, scenes.shape])
        held_out = {
            "clean": (held_out_images, held_out_scenes.shape),
            "reconstructed": (reconstruct(vae, held_out_images), held_out_scenes.shape),
        }
        classifier, metrics["shape_classifier"] = train_shape_classifier(
            config, clean_and_reconstructed, shape_labels, held_out, device, generator, allowance("shape")
        )
        del reconstructed, clean_and_reconstructed

    noise_schedule = models.scheduler()
    with timer.part("unet"):
        scaling_factor = vae.config.scaling_factor
        unet, metrics["unet"] = train_unet(
            config,
            latent_mean,
            latent_std,
            scaling_factor,
            scenes,
            table,
            states,
            empty_states,
            noise_schedule,
            device,
            generator,
            allowance("unet"),
        )

    with timer.part("save"):
        save_pipeline(out, tokenizer, encoder, vae, unet, noise_schedule)
        save_scorer_weights(out, detector, classifier)

    with timer.part("check"):
        metrics["samples"] = check_pipeline(config, out, detector, classifier, device)

    record = {
        "config": dataclasses.asdict(config),
        "quick": quick,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "versions": package_versions("torch", "diffusers", "transformers", "tokenizers"),
        "parameters": {
            "text_encoder": models.count_parameters(encoder),
            "vae": models.count_parameters(vae),
            "unet": models.count_parameters(unet),
            "shape_classifier": models.count_parameters(classifier),
        },
        "seconds": {**timer.seconds, "total": round(time.perf_counter() - total_start, 2)},
        "metrics": metrics,
    }
    (out / TRAINING_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"[toy train] total: {record['seconds']['total']:.1f} s; wrote {out}", flush=True)
    print(json.dumps(metrics, indent=1), flush=True)
    return record


def add_arguments(parser: argparse.ArgumentParser, default_out: str | None = None):
    parser.add_argument("--out", default=default_out, required=default_out is None, help="output folder (a diffusers pipeline)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny step counts: checks every code path in about a minute on CPU")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a training setting, e.g. --set unet_steps=6000 (settings: {', '.join(f.name for f in dataclasses.fields(TrainConfig))})",
    )


def parse_overrides(pairs: list[str]) -> dict:
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    overrides = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in types:
            raise SystemExit(f"unknown training setting {key!r}; choose from {', '.join(types)}")
        overrides[key] = float(value) if types[key] in (float, "float") else int(value)
    return overrides


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.toyworld.train", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    train(args.out, device=args.device, seed=args.seed, quick=args.quick, overrides=parse_overrides(args.set))


if __name__ == "__main__":
    main()
