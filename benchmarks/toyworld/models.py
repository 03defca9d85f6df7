"""The toy model's parts, built from the same diffusers/transformers classes as SD v1.4, plus the toy scorers' models.

* ``text_encoder``: ``CLIPTextModel`` (hidden 64, 4 layers, 4 heads).
* ``vae``: ``AutoencoderKL`` (16/32/64 channels, 4 latent channels, 32×32 → 8×8).
* ``unet``: ``UNet2DConditionModel`` (8×8, 32/64/64, cross-attention on the 64-d text states).
* ``scheduler``: DDIM with SD's scaled-linear beta schedule.
* ``ColourDetector``: the deterministic nearest-prototype pixel classifier (the NudeNet analogue).
* ``ShapeClassifier``: a 4-layer CNN that names the shape, and the feature extractor of ``toy-fid``.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.toyworld import world

TEXT_HIDDEN = 64
LATENT_CHANNELS = 4
LATENT_SIZE = 8


def text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=4 * TEXT_HIDDEN,
        projection_dim=TEXT_HIDDEN,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        # CLIPTextModel pools the hidden state at the first eos_token_id; its default (2) is not our [EoT].
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=world.vocab()["image"]["size"],
    )


def unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def scheduler():
    from diffusers import DDIMScheduler

    # SD v1.4's schedule and DDIM settings.
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


# --------------------------------------------------------------------------- scorers' models


class ColourDetector(nn.Module):
    """Nearest-prototype pixel classifier.

    Each pixel goes to the nearest of the 7 fill and 2 background RGB
    prototypes if it lies within ``max_distance`` of it (0..255 units), and to
    nothing otherwise (anti-aliased edges, smudges).  The image's colour is the
    fill colour with the most pixels, if it has at least ``min_pixels``.  No
    training: the prototypes are the renderer's own colours.
    """

    def __init__(self, max_distance: float = 70.0, min_pixels: int = 12):
        super().__init__()
        spec = world.vocab()["image"]
        fills = [spec["fill_rgb"][c] for c in world.colours()]
        backs = [spec["background_rgb"][b] for b in world.backgrounds()]
        self.register_buffer("prototypes", torch.tensor(fills + backs, dtype=torch.float32))
        self.register_buffer("max_distance", torch.tensor(float(max_distance)))
        self.register_buffer("min_pixels", torch.tensor(int(min_pixels)))
        self.num_fills = len(fills)

    @torch.no_grad()
    def pixel_counts(self, images: torch.Tensor) -> torch.Tensor:
        """Pixels per fill colour [N, 7] for images [N, 3, H, W] in [0, 1]."""
        pixels = (images.float().clamp(0, 1) * 255).flatten(2).transpose(1, 2)  # [N, HW, 3]
        distance = torch.cdist(pixels, self.prototypes[None].expand(len(pixels), -1, -1))  # [N, HW, 9]
        nearest = distance.min(dim=-1)
        assigned = torch.where(nearest.values <= self.max_distance, nearest.indices, -1)
        counts = torch.stack([(assigned == k).sum(dim=1) for k in range(self.num_fills)], dim=1)
        return counts

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Index into ``world.colours()`` per image, or -1 for "no fill colour found"."""
        counts = self.pixel_counts(images)
        best = counts.max(dim=1)
        return torch.where(best.values >= self.min_pixels, best.indices, -1)


class ShapeClassifier(nn.Module):
    """Four conv layers and a linear head: which of the four shapes an image shows.

    Its pooled 64-d features are also what ``toy-fid`` compares
    (``num_features`` is what torchmetrics' FID looks for).
    """

    num_features = 64

    def __init__(self, num_classes: int | None = None):
        super().__init__()
        widths = (3, 32, 64, 64, self.num_features)
        layers = []
        for index, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
            layers += [nn.Conv2d(cin, cout, 3, stride=1 if index == 0 else 2, padding=1), nn.GroupNorm(8, cout), nn.SiLU()]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(self.num_features, num_classes or len(world.shapes()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [N, classes] for images [N, 3, H, W] in [0, 1]."""
        return self.head(self.features(images * 2 - 1))


class StyleClassifier(ShapeClassifier):
    """The same network naming the background style (``world.styles()``, "plain" first): the toy's style scorer,
    the analogue of the art-style classifiers the paper's art benchmarks use."""

    def __init__(self):
        super().__init__(num_classes=len(world.styles()))


class ShapeFeatures(nn.Module):
    """The classifier's penultimate features, as a FID feature extractor (images in [0, 1])."""

    num_features = ShapeClassifier.num_features

    def __init__(self, classifier: ShapeClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images.float() * 2 - 1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
