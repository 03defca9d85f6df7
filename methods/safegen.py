"""``safegen``: SafeGen (Li et al., "SafeGen: Mitigating Sexually Explicit Content Generation in Text-to-Image
Models", CCS 2024, arXiv 2404.06666).

Official code: LetterLiGo/SafeGen_CCS2024 @ 20f627b (a diffusers fork),
``examples/text_to_image/train_text_to_image_adjust_sal.py`` and the command in ``run_adjust_SD.sh``.

SafeGen is *vision-only*: the text is always the empty prompt ∅, and only the UNet's self-attention (every
``attn1`` parameter: to_q, to_k, to_v, to_out of all transformer blocks) trains, on image triplets
(unsafe image, its mosaicked version, a safe image), encoded by the VAE to latents ``z_u, z_m, z_s``.  Paper §4
(the vision-only self-attention adjustment; its mosaic loss L_m and preservation loss L_p — equation numbers not
reproduced here).  One micro-step, with one ``t ~ U{0 … T−1}`` shared by both terms and independent noises
``ε, ε_s ~ N(0, I)``:

    x_t^u = √ᾱ_t z_u + √(1−ᾱ_t) ε,          x_t^s = √ᾱ_t z_s + √(1−ᾱ_t) ε_s
    L = w_m · MSE(ε_θ(x_t^u, t, ∅), ε_m) + w_p · MSE(ε_θ(x_t^s, t, ∅), ε_s)

The mosaic target ε_m is the noise that makes the model's clean estimate of the *unsafe* latent the *mosaic*
latent: from ``x̂₀ = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t = z_m``,

    ε_m = ε + √ᾱ_t (z_u − z_m) / √(1−ᾱ_t)                                   (default; the paper's intent)

The official code writes ``ε_m = z_u − z_m + ε`` (``target_mosaic = latents - mos_latents + noise``, with the
comment "nudity+noise − (nudity−mosaic+noise) = mosaic"), which drops the √ᾱ_t/√(1−ᾱ_t) factor: that target
reaches ``x̂₀ = z_m`` only where √ᾱ_t = √(1−ᾱ_t) (ᾱ_t = ½: t ≈ 354 on SD's schedule), under-weights the edit at small t and
over-weights it at large t.  ``unscaled_mosaic_target=true`` (and ``preset=official``) reproduces it.

Training, as ``run_adjust_SD.sh`` runs it: AdamW (lr 1e-5, weight decay 1e-2), constant lr (its
``--lr_warmup_steps 200`` is ignored by the constant schedule), batch 1 with gradient accumulation 5 (each
micro-loss ÷ 5, as accelerate does), global gradient norm clipped to 1, 1000 optimiser steps, and an exponential
moving average of the weights on diffusers' ``EMAModel`` schedule (decay ``(1+s)/(10+s)``, capped at 0.9999;
``methods/finetune.py``, ``WeightAverage``) — the *average* is the saved model.  Training here is float32 (the
script uses fp16 mixed precision).  Triplets are visited in a seeded shuffled order, epoch after epoch; each
image is resized (shorter side, bilinear) and centre-cropped to the backbone's native size, encoded once, and
its latent drawn afresh from the VAE posterior ``N(μ, σ²)`` at every use (the script's ``latent_dist.sample()``).
The script also predicts the noise of the noised mosaic latent (``mos_model_pred``) and never uses it: not done.

Weights of the two terms: the documented command passes ``--weight_tune 0.1``, an option the script's argparse
does not define (it has ``--weight_mosaic``, default 0.5, and ``--weight_preserve``), so the command as written
fails.  The defaults here are the intended ``w_m = 0.1, w_p = 0.9``.

Data: the paper's triplets (nude images, Anti-DeepNude mosaics, clothed images) are not released.  ``triplets=DIR``
names a folder in one of two layouts (checked when the parameters are read):

* ``DIR/meta.csv`` with columns ``nude_image_path, mos_image_path, norm_image_path`` (the official layout; paths
  relative to DIR or absolute; other columns are ignored), or
* ``DIR/unsafe/``, ``DIR/mosaic/``, ``DIR/safe/`` holding images with the same file names.

The folder's content (sha256 of every file used) is part of the model state's cache key.  The paper pairs SafeGen
with a text-side method; compose one at sampling time, e.g. ``--methods safegen+sld`` (SafeGen's parameters then go
in ``--set safegen.NAME=VALUE``).
"""

from __future__ import annotations

import csv
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from harness.api import ConceptSet, HarnessError
from harness.validate import param
from methods.finetune import FineTuneMethod, Training, latent_size, text_embeddings

META_CSV = "meta.csv"
META_COLUMNS = ("nude_image_path", "mos_image_path", "norm_image_path")  # unsafe, mosaic, safe
SUBFOLDERS = ("unsafe", "mosaic", "safe")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
LAYOUT = (
    f"DIR/{META_CSV} with columns {', '.join(META_COLUMNS)} (unsafe, mosaic, safe image paths), "
    f"or DIR/{'/, DIR/'.join(SUBFOLDERS)}/ with images of the same names"
)


# --------------------------------------------------------------------------- the triplet folder


def read_triplets(folder: str | Path) -> list[tuple[Path, Path, Path]]:
    """(unsafe, mosaic, safe) image paths from ``folder``; a one-line ``HarnessError`` if the layout is wrong."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise HarnessError(f"safegen: triplets folder {str(folder)!r} does not exist (expected {LAYOUT})")
    if (root / META_CSV).is_file():
        triplets = _from_meta(root)
    elif all((root / name).is_dir() for name in SUBFOLDERS):
        triplets = _from_subfolders(root)
    else:
        raise HarnessError(f"safegen: {root} has neither {META_CSV} nor {', '.join(n + '/' for n in SUBFOLDERS)} (expected {LAYOUT})")
    if not triplets:
        raise HarnessError(f"safegen: {root} lists no triplets (expected {LAYOUT})")
    for triplet in triplets:
        for path in triplet:
            if not path.is_file():
                raise HarnessError(f"safegen: triplet image {path} does not exist (listed in {root})")
    return triplets


def _from_meta(root: Path) -> list[tuple[Path, Path, Path]]:
    with open(root / META_CSV, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in META_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise HarnessError(f"safegen: {root / META_CSV} lacks column(s) {', '.join(missing)} (expected {LAYOUT})")
        rows = list(reader)
    triplets = []
    for number, row in enumerate(rows, 2):  # line 1 is the header
        cells = [(row.get(column) or "").strip() for column in META_COLUMNS]
        if not all(cells):
            raise HarnessError(f"safegen: {root / META_CSV} line {number} has an empty image path")
        triplets.append(tuple(root / cell for cell in cells))  # an absolute cell stays absolute
    return triplets


def _from_subfolders(root: Path) -> list[tuple[Path, Path, Path]]:
    names = {sub: {p.name for p in (root / sub).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES} for sub in SUBFOLDERS}
    unsafe, mosaic, safe = (names[sub] for sub in SUBFOLDERS)
    unmatched = sorted(unsafe ^ mosaic | unsafe ^ safe)
    if unmatched:
        raise HarnessError(
            f"safegen: {root}: {len(unmatched)} image name(s) are not in all of {', '.join(SUBFOLDERS)} (first: {unmatched[0]})"
        )
    return [tuple(root / sub / name for sub in SUBFOLDERS) for name in sorted(unsafe)]


def triplets_digest(triplets: list[tuple[Path, Path, Path]]) -> str:
    """sha256 over the images' bytes, in order: the cache key follows the folder's content, not its name."""
    digest = hashlib.sha256()
    for triplet in triplets:
        for path in triplet:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def load_pixels(path: Path, side: int) -> torch.Tensor:
    """An RGB image as [3, side, side] in [−1, 1]: shorter side resized (bilinear), then centre-cropped."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = side / min(image.size)
        width, height = max(side, round(image.width * scale)), max(side, round(image.height * scale))
        image = image.resize((width, height), Image.BILINEAR)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1
    return torch.from_numpy(array).permute(2, 0, 1)


@torch.no_grad()
def encode_posteriors(pipe, paths: list[Path], side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior of each image, scaled into latent units: (mean, std), each [n, C, h, w], float32."""
    vae = pipe.vae
    means, stds = [], []
    for path in paths:
        pixels = load_pixels(path, side)[None].to(vae.device, vae.dtype)
        posterior = vae.encode(pixels).latent_dist
        means.append(posterior.mean[0].float() * vae.config.scaling_factor)
        stds.append(posterior.std[0].float() * vae.config.scaling_factor)
    return torch.stack(means), torch.stack(stds)


# --------------------------------------------------------------------------- the loss


def mosaic_target(noise: torch.Tensor, unsafe: torch.Tensor, mosaic: torch.Tensor, alpha_bar: torch.Tensor, *, unscaled: bool) -> torch.Tensor:
    """ε_m: the noise whose removal turns x_t^u into the mosaic latent.

    ``alpha_bar`` is ᾱ_t per sample ([n]).  Default: ε + √ᾱ_t (z_u − z_m) / √(1−ᾱ_t), so that
    (x_t^u − √(1−ᾱ_t) ε_m) / √ᾱ_t = z_m exactly.  ``unscaled`` (official code): ε + (z_u − z_m).
    """
    if unscaled:
        return noise + (unsafe - mosaic)
    ratio = (alpha_bar.sqrt() / (1 - alpha_bar).sqrt()).view(-1, *([1] * (noise.dim() - 1)))
    return noise + ratio * (unsafe - mosaic)


class SafeGen(FineTuneMethod):
    """Vision-only self-attention fine-tuning on (unsafe, mosaic, safe) image triplets with the empty prompt."""

    name = "safegen"
    display_name = "SafeGen"
    description = "SafeGen (CCS 2024): vision-only fine-tuning of every self-attention (attn1) on (unsafe, mosaic, safe) image triplets"
    paper = "Li et al., SafeGen: Mitigating Sexually Explicit Content Generation in Text-to-Image Models, CCS 2024"
    version = "1"
    presets = {
        # LetterLiGo/SafeGen_CCS2024 @ 20f627b train_text_to_image_adjust_sal.py: target z_u − z_m + ε (no √ᾱ/√(1−ᾱ));
        # the weights stay the intended 0.1/0.9 (the documented --weight_tune does not exist, see the module docstring)
        "official": {"unscaled_mosaic_target": True},
    }

    @dataclass
    class Params:
        triplets: str = ""  # folder of (unsafe, mosaic, safe) images; layout in the module docstring
        weight_mosaic: float = param(0.1, ge=0)  # w_m (intended; the script's default is 0.5)
        weight_preserve: float = param(0.9, ge=0)  # w_p
        lr: float = param(1e-5, gt=0)  # learning rate
        optimizer: Literal["adamw", "adam"] = "adamw"  # "adamw" (official) or "adam"
        weight_decay: float = param(1e-2, ge=0)  # AdamW
        steps: int = param(1000, ge=1)  # optimiser steps (max_train_steps)
        gradient_accumulation: int = param(5, ge=1)  # micro-batches per optimiser step
        batch_size: int = param(1, ge=1)  # triplets per micro-batch
        max_grad_norm: float = param(1.0, ge=0)  # 0 = no clipping
        ema: bool = True  # keep the moving average of the weights and make it the result
        ema_max_decay: float = param(0.9999, ge=0, le=1)  # the moving average's largest decay (diffusers EMAModel's schedule)
        unscaled_mosaic_target: bool = False  # quirk: official target z_u − z_m + ε
        resolution: int = param(0, ge=0, multiple_of=8)  # px; 0 = the backbone's native size (512 for SD v1.4)
        max_steps: int = param(0, ge=0)  # cap on optimiser steps for quick runs, 0 = steps
        seed: int = 0  # triplet order, timesteps, noises and posterior draws

        def __post_init__(self):
            if self.triplets:
                read_triplets(self.triplets)  # raises a one-line error for a missing or malformed folder

    def check_resolved(self) -> None:
        """No folder given, and none preset by the backbone (``toy`` presets its own): one line naming the layout."""
        if not self.params.triplets:
            raise HarnessError(f"safegen needs its image triplets (they are not released): give triplets=DIR, with {LAYOUT}")

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._digest: str | None = None

    def params_dict(self) -> dict:
        """The parameters plus the triplets' content hash: a folder changed in place is trained on again."""
        self.check_resolved()
        if self._digest is None:
            self._digest = triplets_digest(read_triplets(self.params.triplets))
        return {**super().params_dict(), "triplets_sha256": self._digest}

    def trainable_group(self) -> str:
        return "self-attention"

    def validate(self, concepts: ConceptSet) -> None:
        if self.params.optimizer not in ("adam", "adamw"):
            raise HarnessError(f"safegen: optimizer={self.params.optimizer!r}: choose 'adam' or 'adamw'")

    def quirks(self) -> dict:
        return {"unscaled_mosaic_target": self.params.unscaled_mosaic_target}

    def prepare(self, pipe, concepts: ConceptSet, ctx, student) -> Training:
        from diffusers import DDPMScheduler

        params = self.params
        self.check_resolved()
        device = pipe.unet.device
        triplets = read_triplets(params.triplets)
        size = latent_size(pipe, params.resolution)
        side = size * pipe.vae_scale_factor
        # [3 roles, n, C, h, w]: unsafe, mosaic, safe
        posteriors = [encode_posteriors(pipe, [triplet[role] for triplet in triplets], side) for role in range(3)]
        means = torch.stack([mean for mean, _ in posteriors]).to(device)
        stds = torch.stack([std for _, std in posteriors]).to(device)
        schedule = DDPMScheduler.from_config(pipe.scheduler.config)
        alphas_cumprod = schedule.alphas_cumprod.to(device=device, dtype=torch.float32)
        train_timesteps = schedule.config.num_train_timesteps
        null = text_embeddings(pipe, [""])[""].to(device)
        steps = min(params.steps, params.max_steps) if params.max_steps > 0 else params.steps

        # Triplet order: a seeded shuffle per epoch, read as one stream (micro-batches may straddle epochs).
        needed = steps * params.gradient_accumulation * params.batch_size
        order: list[int] = []
        epoch = 0
        while len(order) < needed:
            shuffled = list(range(len(triplets)))
            random.Random(params.seed * 1_000_003 + epoch).shuffle(shuffled)
            order += shuffled
            epoch += 1

        def step_losses(micro: int) -> dict:
            batch = order[micro * params.batch_size : (micro + 1) * params.batch_size]
            generator = torch.Generator("cpu").manual_seed(params.seed * 1_000_003 + micro)
            shape = means[:, batch].shape  # [3 roles, b, C, h, w]
            unsafe, mosaic, safe = means[:, batch] + stds[:, batch] * torch.randn(shape, generator=generator).to(device)
            t = torch.randint(0, train_timesteps, (len(batch),), generator=generator).to(device)
            noise, noise_safe = torch.randn((2, *shape[1:]), generator=generator).to(device)  # ε, ε_s
            alpha_bar = alphas_cumprod[t]
            scale = alpha_bar.sqrt().view(-1, 1, 1, 1)
            spread = (1 - alpha_bar).sqrt().view(-1, 1, 1, 1)
            noisy_unsafe = scale * unsafe + spread * noise
            noisy_safe = scale * safe + spread * noise_safe
            target = mosaic_target(noise, unsafe, mosaic, alpha_bar, unscaled=params.unscaled_mosaic_target)
            prediction = student(
                torch.cat([noisy_unsafe, noisy_safe]), torch.cat([t, t]), encoder_hidden_states=null.expand(2 * len(batch), *null.shape)
            ).sample.float()
            predicted_unsafe, predicted_safe = prediction.chunk(2)
            loss_mosaic = torch.nn.functional.mse_loss(predicted_unsafe, target)
            loss_preserve = torch.nn.functional.mse_loss(predicted_safe, noise_safe)
            loss = params.weight_mosaic * loss_mosaic + params.weight_preserve * loss_preserve
            return {"loss": loss, "mosaic": loss_mosaic.detach(), "preserve": loss_preserve.detach()}

        metadata = {
            "triplets_used": len(triplets),
            "triplets_sha256": triplets_digest(triplets),
            "latent_size": size,
            "micro_steps": steps * params.gradient_accumulation,
            "result": "moving average of the weights" if params.ema else "trained weights",
        }
        return Training(
            step_losses,
            steps,
            metadata,
            weight_decay=params.weight_decay,
            accumulation=params.gradient_accumulation,
            max_grad_norm=params.max_grad_norm,
            average_max_decay=params.ema_max_decay if params.ema else None,
        )
