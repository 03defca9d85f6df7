"""Train the toy world from scratch: tokenizer, text encoder, VAE, shape and style classifiers, UNet, then (with
``decoder_steps``) a decoder fine-tune.

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

from benchmarks.toyworld import models, sampling, world
from benchmarks.toyworld import tokenizer as toy_tokenizer
from benchmarks.toyworld.scorer import DETECTOR_FILE, SHAPE_CLASSIFIER_FILE, STYLE_CLASSIFIER_FILE
from harness.progress import bar
from harness.versions import package_versions

TRAINING_FILE = "training.json"
BACKGROUND_CLASSES = world.backgrounds() + ["unmentioned"]


@dataclass
class TrainConfig:
    # The defaults are the recipe of the committed weights: 51 minutes on 2 CPU cores (training.json has the timings).
    seed: int = 0
    image_bank: int = 32768  # rendered training images (latents are pre-encoded once)
    # share of the bank showing two objects side by side (vocab.json, which the concept sets' captions also follow)
    compose_share: float = world.vocab()["training_mix_v2"]["compose"]
    # radius range (px) of a composition's two objects (a half is 16 px wide, so at most 7 with the 1-px margin)
    compose_radius_low: float = world.vocab()["image"]["compose_radius_px"][0]
    compose_radius_high: float = world.vocab()["image"]["compose_radius_px"][1]
    # share of single-object images with a plain background (the rest get one of 8 styles)
    style_plain: float = world.vocab()["training_mix_v2"]["style_plain"]
    captions_per_image: int = 4  # training captions drawn per image (the UNet picks one at random each step)
    eval_images: int = 1024
    # text encoder: CLIP-style pre-training on the pooled first [EoT], then frozen
    text_steps: int = 1000
    text_batch: int = 256
    text_lr: float = 1e-3
    # VAE: reconstruction MSE plus a tiny KL
    vae_steps: int = 1000
    vae_batch: int = 64
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    # shape and style classifiers (scorer), on clean plus VAE-reconstructed images (shape: also composition halves)
    shape_steps: int = 500
    shape_batch: int = 128
    shape_lr: float = 2e-3
    style_steps: int = 400
    # Decoder fine-tune, the last stage: only the VAE's decoder trains on, its encoder frozen, so the latents the UNet
    # learned are the same and every earlier stage is untouched (its draws come from their own generator).  SD's VAE
    # got the same after release (stabilityai/sd-vae-ft-mse: decoder only, a drop-in replacement).  The first decoder
    # loses small objects: of 1000 clean two-object scenes, reconstructed, the scorer read both objects right in
    # 93.8% (the committed model, 2026-12-08), a ceiling on toy-compose binding; 0 steps keeps it as trained.
    decoder_steps: int = 0
    decoder_batch: int = 64
    decoder_lr: float = 2e-4
    # UNet: epsilon objective with min-SNR-γ weighting, one-cycle AdamW, EMA
    unet_steps: int = 11000
    unet_batch: int = 128
    unet_lr: float = 4e-4
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    prompt_dropout: float = 0.1  # empty prompt, for classifier-free guidance
    # Every [EoT] replaced by the empty prompt's, so the UNet also reads word positions (v1 used 0.3, before the
    # keyword conflict did that job; under it an implicit caption must be read from its referent, against the
    # context conflict).
    eot_dropout: float = 0.1
    # The [EoT] dropout of captions that name a concept only by implication (a colour referent, an artist's work).
    # Dropping their [EoT]s teaches the UNet to read the concept from the referent's words, the opposite of what
    # the context conflict teaches; 0 keeps [EoT] dropout to captions whose concepts are all named by keywords.
    eot_dropout_context: float = 0.1
    # Conflicts teach the UNet where SD reads a concept from (issue 18, item 4).  Keyword conflict: in this share of
    # captions with a colour word or a style keyword (style word, artist name),
    # every other position's states come from the same caption with another colour / style in that slot, and the
    # image keeps the keyword's.  The causal text encoder copies the keyword into every later position; this teaches
    # the UNet that the keyword's own position decides, as SD's keyword tokens largely do (issue 18, item 4).
    keyword_conflict: float = 0.2
    # Context conflict: in this share of implicit captions (a colour referent, an artist's work), every word position
    # comes from the same caption with another colour's referent / artist's work in that slot and only the [EoT]
    # states are the caption's own, while the image keeps its colour / style.  Without it the keyword conflict also
    # teaches the UNet to read a referent's position, and overwriting every [EoT] then left implicit red at 93%.
    context_conflict: float = 0.3
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
            captions_per_image=1,
            eval_images=64,
            text_steps=3,
            text_batch=32,
            vae_steps=3,
            vae_batch=32,
            shape_steps=3,
            style_steps=3,
            shape_batch=32,
            unet_steps=3,
            unet_batch=16,
            sample_per_kind=2,
            sample_steps=2,
            log_every=1,
        )


# --------------------------------------------------------------------------- small helpers

# Shares of ``time_budget`` for the loops before the UNet's, and what is kept back for saving and the final check.
BUDGET_SHARES = {"text": 0.06, "vae": 0.12, "shape": 0.04, "style": 0.02, "decoder": 0.06}
BUDGET_RESERVE = 0.05


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
    progress = bar(range(steps), desc=name)
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
    """Every distinct training caption, tokenised, with its labels and keyword positions, on the device.

    ``per_image[i]`` holds the indices of the captions drawn for image ``i`` of the bank (``captions_per_image`` of
    them, from the training mix), so a UNet step picks a caption with one index computation.  ``partner[c]`` is the
    keyword-conflict partner of caption ``c`` (-1: none) and ``conflict_mask[c]`` the keyword positions kept from
    ``c`` when the partner supplies every other position.
    """

    def __init__(self, tokenizer, device: torch.device, captions: list[world.Caption], per_image: torch.Tensor, seed: int = 0):
        rng = random.Random(seed)
        conflict_keyword = [rng.choice(conflict_kinds(c)) if conflict_kinds(c) else "" for c in captions]
        candidates = [conflict_candidates(rng, c, which) for c, which in zip(captions, conflict_keyword)]
        encoded = toy_tokenizer.encode(tokenizer, [c.text for c in captions])
        flat = [p for group in candidates for p in group]
        encoded_candidates = toy_tokenizer.encode(tokenizer, [p.text for p in flat]) if flat else {"input_ids": [], "offsets": []}
        index = {c.text: i for i, c in enumerate(captions)}
        all_captions, all_ids, all_offsets = list(captions), list(encoded["input_ids"]), list(encoded["offsets"])
        partner = [-1] * len(captions)
        position = 0
        for i, group in enumerate(candidates):
            which = conflict_keyword[i]
            mask = conflict_positions(captions[i], encoded["input_ids"][i], encoded["offsets"][i], which) if group else None
            for candidate in group:
                ids, offsets = encoded_candidates["input_ids"][position], encoded_candidates["offsets"][position]
                position += 1
                if partner[i] >= 0 or not aligned(
                    encoded["input_ids"][i], ids, mask, conflict_positions(candidate, ids, offsets, which)
                ):
                    continue
                if candidate.text not in index:
                    index[candidate.text] = len(all_captions)
                    all_captions.append(candidate)
                    all_ids.append(ids)
                    all_offsets.append(offsets)
                partner[i] = index[candidate.text]
        self.captions = all_captions
        ids = torch.tensor(all_ids)
        if (ids == tokenizer.eos_token_id).sum(dim=1).min() < 2:
            raise RuntimeError("a training caption fills the context: raise tokenizer.MAX_LENGTH")
        partner += [-1] * (len(all_captions) - len(partner))
        conflict_keyword += [""] * (len(all_captions) - len(conflict_keyword))
        self.ids = ids
        self.partner = torch.tensor(partner)
        self.conflict_mask = torch.tensor(
            [
                conflict_positions(c, i, o, k) if k else [False] * len(o)
                for c, i, o, k in zip(all_captions, all_ids, all_offsets, conflict_keyword)
            ]
        )
        self.conflict_context = torch.tensor([k.endswith("-context") for k in conflict_keyword])
        # captions naming a concept only by implication (a referent or a work), whatever conflict they drew
        self.implied = torch.tensor(
            [
                c.kind in (world.IMPLICIT, world.IMPLICIT_HELDOUT) or c.style_kind in (world.WORK, world.WORK_HELDOUT)
                for c in all_captions
            ],
            dtype=torch.bool,
        )
        self.per_image = per_image
        labels = [caption_labels(c, o) for c, o in zip(all_captions, all_offsets)]
        for name in LABELS:
            setattr(self, name, torch.tensor([label[name] for label in labels]))
        self.eot_mask = ids == tokenizer.eos_token_id
        for name in ("ids", "partner", "conflict_mask", "conflict_context", "implied", "per_image", "eot_mask", *LABELS):
            setattr(self, name, getattr(self, name).to(device))

    def for_images(self, images: torch.Tensor, generator) -> torch.Tensor:
        """One of each image's training captions, at random."""
        pick = torch.randint(self.per_image.shape[1], (len(images),), device=images.device, generator=generator)
        return self.per_image[images, pick]

    def any(self, n: int, generator) -> torch.Tensor:
        return torch.randint(len(self.ids), (n,), device=self.ids.device, generator=generator)


# Per-caption labels for the text encoder's heads (-100: no label, ignored by the loss).
LABELS = (
    "kind_index",
    "colour",
    "shape",
    "background",
    "style",
    "left_colour",
    "left_shape",
    "right_colour",
    "right_shape",
    "token_colour",
    "token_style",
)
CAPTION_KINDS = list(world.TRAINING_KINDS) + [world.COMPOSE]


def caption_labels(caption: world.Caption, offsets) -> dict:
    colours, shapes, styles = world.colours(), world.shapes(), world.styles()
    compose = caption.kind == world.COMPOSE
    n = len(offsets)
    token_colour, token_style = [-100] * n, [-100] * n
    for colour, start, end in colour_word_spans(caption):
        for t, (s, e) in enumerate(offsets):
            if e > s and s >= start and e <= end:
                token_colour[t] = colours.index(colour)
    if caption.style_kind in (world.STYLE_WORD, world.ARTIST):
        for t, on in enumerate(keyword_positions(caption, offsets, "style")):
            if on:
                token_style[t] = styles.index(caption.style)
    return {
        "kind_index": CAPTION_KINDS.index(caption.kind),
        "colour": -100 if compose else colours.index(caption.colour),
        "shape": -100 if compose else shapes.index(caption.shape),
        "background": BACKGROUND_CLASSES.index(caption.background or "unmentioned"),
        "style": styles.index(caption.style),
        "left_colour": colours.index(caption.colour) if compose else -100,
        "left_shape": shapes.index(caption.shape) if compose else -100,
        "right_colour": colours.index(caption.colour2) if compose else -100,
        "right_shape": shapes.index(caption.shape2) if compose else -100,
        "token_colour": token_colour,
        "token_style": token_style,
    }


def colour_word_spans(caption: world.Caption) -> list[tuple[str, int, int]]:
    """(colour, start, end) of each colour word or synonym in the text: none for implicit captions, two in a
    composition."""
    if caption.kind == world.COMPOSE:
        spans = []
        for colour, shape in ((caption.colour, caption.shape), (caption.colour2, caption.shape2)):
            start = caption.text.index(f" {colour} {shape}") + 1
            spans.append((colour, start, start + len(colour)))
        return spans
    if caption.keyword_is_colour_word:
        return [(caption.colour, *caption.keyword_span)]
    return []


def keyword_positions(caption: world.Caption, offsets, which: str = "colour") -> list[bool]:
    """Which token positions spell the caption's colour word or synonym (``which="colour"``; none for implicit
    captions), or its style word or artist name (``which="style"``)."""
    if which == "style":
        if caption.style_kind not in (world.STYLE_WORD, world.ARTIST):
            return [False] * len(offsets)
        start, end = caption.style_keyword_span
    else:
        if caption.kind == world.COMPOSE or not caption.keyword_is_colour_word:
            return [False] * len(offsets)
        start, end = caption.keyword_span
    return [e > s and s >= start and e <= end for s, e in offsets]


def conflict_kinds(caption: world.Caption) -> list[str]:
    """The conflicts a caption can take part in: "colour"/"style" (its keyword decides) for a colour word or a style
    word / artist name, "colour-context"/"style-context" (its [EoT] states decide) for a referent or a work."""
    out = []
    if caption.kind in (world.EXPLICIT, world.SYNONYM):
        out.append("colour")
    elif caption.kind == world.IMPLICIT:
        out.append("colour-context")
    if caption.style_kind in (world.STYLE_WORD, world.ARTIST):
        out.append("style")
    elif caption.style_kind == world.WORK:
        out.append("style-context")
    return out


def conflict_positions(caption: world.Caption, ids, offsets, which: str) -> list[bool]:
    """The positions a conflict keeps from the caption itself: its keyword's, or its [EoT]s (``*-context``)."""
    if which.endswith("-context"):
        return [token == ids[-1] for token in ids]  # every prompt ends in padding [EoT]s
    return keyword_positions(caption, offsets, which)


def conflict_candidates(rng: random.Random, caption: world.Caption, which: str, count: int = 3) -> list[world.Caption]:
    """Up to ``count`` copies of ``caption`` with another colour (or style word / artist) in the keyword's slot."""
    if not which:
        return []
    if which.startswith("colour"):
        others = [c for c in world.colours() if c != caption.colour]
        return [caption.recoloured(c) for c in rng.sample(others, min(count, len(others)))]
    if caption.style_kind == world.STYLE_WORD:
        others = [s for s in world.styles() if s not in (world.PLAIN, caption.style)]
    else:
        others = [a["slug"] for a in world.artists() if a["name"] != caption.artist]
    return [caption.restyled(o) for o in rng.sample(others, min(count, len(others)))]


def aligned(ids, candidate_ids, mask, candidate_mask) -> bool:
    """A conflict partner must put every token at the same position: same length and the keyword in the same slots."""
    eos = ids[-1]
    return ids.count(eos) == candidate_ids.count(eos) and mask == candidate_mask and any(mask)


def training_captions(bank: ImageBank, per_image: int, seed: int) -> tuple[list[world.Caption], torch.Tensor]:
    """Draw ``per_image`` training captions for every image of the bank; returns the distinct captions and, per
    image, the indices of its captions."""
    rng = random.Random(f"toyworld/captions/{seed}")
    colours, shapes, backgrounds, styles = world.colours(), world.shapes(), world.backgrounds(), world.styles()
    captions: list[world.Caption] = []
    index: dict[str, int] = {}

    def add(caption: world.Caption) -> int:
        if caption.text not in index:
            index[caption.text] = len(captions)
            captions.append(caption)
        return index[caption.text]

    rows = []
    single = bank.single
    attributes = zip(single.colour.tolist(), single.shape.tolist(), single.background.tolist(), single.style.tolist())
    for colour, shape, background, style in attributes:
        rows.append(
            [
                add(world.sample_training_caption_v2(rng, colours[colour], shapes[shape], backgrounds[background], styles[style]))
                for _ in range(per_image)
            ]
        )
    left, right = bank.left, bank.right
    for lc, ls, rc, rs, background in zip(
        left.colour.tolist(), left.shape.tolist(), right.colour.tolist(), right.shape.tolist(), left.background.tolist()
    ):
        rows.append(
            [
                add(
                    world.sample_compose_caption(
                        rng, (colours[lc], shapes[ls]), (colours[rc], shapes[rs]), backgrounds[background]
                    )
                )
                for _ in range(per_image)
            ]
        )
    return captions, torch.tensor(rows)


# --------------------------------------------------------------------------- the parts


@dataclass
class ImageBank:
    """Single-object scenes (some with a styled background) followed by two-object compositions."""

    single: world.Scenes
    left: world.Scenes
    right: world.Scenes
    images: torch.Tensor  # [len(single) + len(left), 3, 32, 32] in [0, 1]

    @staticmethod
    def sample(count: int, config: TrainConfig, generator) -> ImageBank:
        compose = int(round(count * config.compose_share))
        single = count - compose
        styled = torch.rand(single, generator=generator) >= config.style_plain
        style = torch.where(styled, 1 + torch.randint(len(world.styles()) - 1, (single,), generator=generator), 0)
        scenes = world.sample_scenes(single, generator, style=style)
        radius = (config.compose_radius_low, config.compose_radius_high)
        left, right = world.sample_compose_scenes(compose, generator, radius_px=radius)
        images = torch.cat([world.render_batches(scenes), world.render_compose_batches(left, right)])
        return ImageBank(scenes, left, right, images)

    def to(self, device) -> ImageBank:
        return ImageBank(self.single.to(device), self.left.to(device), self.right.to(device), self.images.to(device))

    @property
    def singles(self) -> torch.Tensor:
        return self.images[: len(self.single)]

    @property
    def compositions(self) -> torch.Tensor:
        return self.images[len(self.single) :]


def make_image_bank(config: TrainConfig, device: torch.device) -> tuple[ImageBank, ImageBank]:
    generator = torch.Generator().manual_seed(config.seed)
    train = ImageBank.sample(config.image_bank, config, generator)
    held_out = ImageBank.sample(config.eval_images, config, generator)
    return train.to(device), held_out.to(device)


def train_text_encoder(config, tokenizer, table: CaptionTable, device, generator, seconds=None):
    """CLIP-style pre-training: the pooled first [EoT] predicts what the image shows; then frozen.

    Pooled heads: colour, shape, background and style of a single-object caption, and each object's colour and
    shape of a composition.  Per-token heads predict the colour at a colour word or synonym and the style at a style
    word or artist name (and nowhere else).  Keyword-level edits (UCE, ESD-x) then have a direction to act on at the
    keyword, as on SD; implicit referents and an artist's works carry no token label, so they reach the model only
    through the [EoT] states, as CLIP's contrastive objective puts them there.
    """
    torch.manual_seed(config.seed)
    encoder = models.text_encoder(tokenizer).to(device)
    hidden = encoder.config.hidden_size
    colours, shapes, styles = len(world.colours()), len(world.shapes()), len(world.styles())
    sizes = {
        "colour": colours,
        "shape": shapes,
        "background": len(BACKGROUND_CLASSES),
        "style": styles,
        "left_colour": colours,
        "left_shape": shapes,
        "right_colour": colours,
        "right_shape": shapes,
        "token_colour": colours,
        "token_style": styles,
    }
    heads = nn.ModuleDict({name: nn.Linear(hidden, size) for name, size in sizes.items()}).to(device)
    parameters = list(encoder.parameters()) + list(heads.parameters())

    def loss(logits, targets):
        # A batch may lack every labelled example of a head (e.g. no composition): count such a head as zero.
        valid = targets != -100
        if not bool(valid.any()):
            return logits.sum() * 0
        return F.cross_entropy(logits[valid], targets[valid])

    def step():
        index = table.any(config.text_batch, generator)
        out = encoder(table.ids[index])
        pooled = out.pooler_output
        total = sum(loss(heads[name](pooled), getattr(table, name)[index]) for name in sizes if not name.startswith("token_"))
        for name in ("token_colour", "token_style"):
            total = total + loss(heads[name](out.last_hidden_state).flatten(0, 1), getattr(table, name)[index].flatten())
        return total

    encoder.train()
    metrics = training_loop("text encoder", config.text_steps, step, parameters, config.text_lr, config, device, seconds)
    encoder.eval().requires_grad_(False)

    # How well the pooled [EoT] names the colour and the style, on seen and on held-out implicit phrasings.
    with torch.no_grad():
        for kind in (world.EXPLICIT, world.SYNONYM, world.IMPLICIT, world.IMPLICIT_HELDOUT):
            captions = world.all_captions((kind,))
            captions = random.Random(0).sample(captions, min(len(captions), 16 * config.eval_images))
            ids = torch.tensor(toy_tokenizer.encode(tokenizer, [c.text for c in captions])["input_ids"], device=device)
            labels = torch.tensor([world.colours().index(c.colour) for c in captions], device=device)
            logits = in_chunks(lambda x: heads["colour"](encoder(x).pooler_output), ids)
            metrics[f"pooled_colour_acc_{kind}"] = round((logits.argmax(-1) == labels).float().mean().item(), 4)
        rng = random.Random(1)
        for kind in (world.ARTIST, world.WORK, world.WORK_HELDOUT):
            captions = [
                world.styled_caption(
                    rng,
                    world.make_caption(world.EXPLICIT, rng.choice(world.colours()), rng.choice(world.shapes())),
                    kind,
                    rng.choice(world.artists())["slug"],
                )
                for _ in range(min(2048, 2 * config.eval_images))
            ]
            ids = torch.tensor(toy_tokenizer.encode(tokenizer, [c.text for c in captions])["input_ids"], device=device)
            labels = torch.tensor([world.styles().index(c.style) for c in captions], device=device)
            logits = in_chunks(lambda x: heads["style"](encoder(x).pooler_output), ids)
            metrics[f"pooled_style_acc_{kind}"] = round((logits.argmax(-1) == labels).float().mean().item(), 4)
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


def encode_bank(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen encoder's posterior mean and std of every image: the UNet and the decoder stage draw their latents
    from these, so no training step runs the encoder."""
    with torch.no_grad():
        posterior = [vae.encode(images[i : i + 4096] * 2 - 1).latent_dist for i in range(0, len(images), 4096)]
        return torch.cat([p.mean for p in posterior]), torch.cat([p.std for p in posterior])


def reconstruction_metrics(vae, held: ImageBank, detector) -> dict:
    """How much of the held-out bank survives the VAE: pixel MSE, single objects' colour, and both colours of a
    composition (each half read alone, as toy-binding reads it): the ceiling a generated composition cannot pass."""
    reconstructed = reconstruct(vae, held.images)
    singles = len(held.single)
    left, right = world.compose_halves(reconstructed[singles:])
    both = (detector(left) == held.left.colour) & (detector(right) == held.right.colour)
    return {
        "reconstruction_mse": round(F.mse_loss(reconstructed, held.images).item(), 6),
        "detector_acc_reconstructed": round((detector(reconstructed[:singles]) == held.single.colour).float().mean().item(), 4),
        "compose_colours_reconstructed": round(both.float().mean().item(), 4),
    }


def finetune_decoder(config, vae, bank: ImageBank, latents: tuple, held: ImageBank, detector, device, seconds=None) -> dict:
    """Train only the decoder (and its post-quantisation conv) to reconstruct the bank from samples of the frozen
    encoder's posterior (``latents``: ``encode_bank``'s mean and std); the latent space, and with it the UNet, stays
    valid.  Draws come from a generator of their own (seed + 6), so adding this stage changes nothing before it."""
    latent_mean, latent_std = latents
    generator = torch.Generator(device).manual_seed(config.seed + 6)
    before = reconstruction_metrics(vae, held, detector)
    parameters = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    vae.requires_grad_(False)
    for parameter in parameters:
        parameter.requires_grad_(True)

    def step():
        index = torch.randint(len(bank.images), (config.decoder_batch,), device=device, generator=generator)
        mean, std = latent_mean[index], latent_std[index]
        latents = mean + std * torch.randn(mean.shape, device=device, generator=generator)
        return F.mse_loss(vae.decode(latents).sample, bank.images[index] * 2 - 1)

    vae.decoder.train()
    metrics = training_loop("decoder", config.decoder_steps, step, parameters, config.decoder_lr, config, device, seconds)
    vae.eval().requires_grad_(False)
    return metrics | {"before": before, "after": reconstruction_metrics(vae, held, detector)}


def train_classifier(name, classifier, steps, config, images, labels, held_out, device, generator, seconds=None):
    """A small CNN scorer (shape or style), trained on clean and VAE-reconstructed images so it also reads generated
    ones; ``held_out`` maps a name to (images, labels) for the reported accuracies."""
    classifier = classifier.to(device)
    parameters = list(classifier.parameters())

    def step():
        index = torch.randint(len(images), (config.shape_batch,), device=device, generator=generator)
        return F.cross_entropy(classifier(images[index]), labels[index])

    classifier.train()
    metrics = training_loop(name, steps, step, parameters, config.shape_lr, config, device, seconds)
    classifier.eval().requires_grad_(False)
    for part, (x, y) in held_out.items():
        metrics[f"acc_{part}"] = round((in_chunks(classifier, x).argmax(-1) == y).float().mean().item(), 4)
    return classifier, metrics


def shape_examples(bank: ImageBank, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-object images plus each composition's two halves (as ``world.compose_halves`` gives the scorer),
    with their shape labels; ``images`` is the bank's images or their reconstructions."""
    left, right = world.compose_halves(images[len(bank.single) :])
    return (
        torch.cat([images[: len(bank.single)], left, right]),
        torch.cat([bank.single.shape, bank.left.shape, bank.right.shape]),
    )


def unet_context(config, table: CaptionTable, states, empty_states, caption: torch.Tensor, generator) -> torch.Tensor:
    """The text states a UNet step conditions on for ``caption`` (indices into ``table``): the caption's own, with
    the keyword or context conflict, prompt dropout and [EoT] dropout applied at their configured shares."""
    n, device = len(caption), caption.device
    context = states[caption]
    partner = table.partner[caption]
    share = torch.where(table.conflict_context[caption], config.context_conflict, config.keyword_conflict)
    conflict = (partner >= 0) & (torch.rand(n, device=device, generator=generator) < share)
    keep = table.conflict_mask[caption] | ~conflict[:, None]  # [n, tokens]: positions that stay the caption's own
    context = torch.where(keep[..., None], context, states[partner.clamp(min=0)])
    drop_prompt = torch.rand(n, device=device, generator=generator) < config.prompt_dropout
    eot_share = torch.where(table.implied[caption], config.eot_dropout_context, config.eot_dropout)
    drop_eot = torch.rand(n, device=device, generator=generator) < eot_share
    replace = drop_prompt[:, None] | (drop_eot[:, None] & table.eot_mask[caption])  # [n, tokens]
    return torch.where(replace[..., None], empty_states[None], context)


def train_unet(
    config,
    latent_mean,
    latent_std,
    scaling_factor,
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
        caption = table.for_images(index, generator)
        context = unet_context(config, table, states, empty_states, caption, generator)
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


def save_scorer_weights(out: Path, detector, classifier, style_classifier):
    from safetensors.torch import save_file

    def cpu(state):
        return {k: v.detach().contiguous().cpu() for k, v in state.items()}

    save_file(cpu(detector.state_dict()), str(out / DETECTOR_FILE), metadata={"colours": json.dumps(world.colours())})
    save_file(cpu(classifier.state_dict()), str(out / SHAPE_CLASSIFIER_FILE), metadata={"shapes": json.dumps(world.shapes())})
    save_file(
        cpu(style_classifier.state_dict()), str(out / STYLE_CLASSIFIER_FILE), metadata={"styles": json.dumps(world.styles())}
    )


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
        if stage == "unet":  # everything that is left, less the decoder's share when it comes after
            kept = BUDGET_RESERVE + (BUDGET_SHARES["decoder"] if config.decoder_steps else 0.0)
            return max(1.0, config.time_budget * (1 - kept) - (time.perf_counter() - total_start))
        return config.time_budget * BUDGET_SHARES[stage]

    with timer.part("data"):
        bank, held = make_image_bank(config, device)
        metrics["detector"] = {"acc_clean": round((detector(held.singles) == held.single.colour).float().mean().item(), 4)}

    with timer.part("tokenizer"):
        captions, per_image = training_captions(bank, config.captions_per_image, config.seed)
        corpus = sorted({c.text for c in world.all_captions(world.TRAINING_KINDS)} | {c.text for c in captions})
        toy_tokenizer.train_tokenizer(corpus, out / "tokenizer")
        tokenizer = toy_tokenizer.load_tokenizer(out / "tokenizer")
        table = CaptionTable(tokenizer, device, captions, per_image, config.seed)
        metrics["tokenizer"] = {
            "vocab_size": len(tokenizer),
            "training_captions": len(table.captions),
            "conflict_partners": int((table.partner >= 0).sum()),
            "context_conflict_partners": int(((table.partner >= 0) & table.conflict_context).sum()),
        }

    with timer.part("text_encoder"):
        encoder, metrics["text_encoder"] = train_text_encoder(config, tokenizer, table, device, generator, allowance("text"))
        states = encode_states(encoder, table.ids)
        empty_ids = torch.tensor(toy_tokenizer.encode(tokenizer, [""])["input_ids"], device=device)
        empty_states = encode_states(encoder, empty_ids)[0]

    with timer.part("vae"):
        vae, metrics["vae"] = train_vae(
            config, bank.images, held.singles, detector, held.single, device, generator, allowance("vae")
        )
        latent_mean, latent_std = encode_bank(vae, bank.images)

    with timer.part("shape_classifier"):
        reconstructed = reconstruct(vae, bank.images)
        held_reconstructed = reconstruct(vae, held.images)
        clean_x, clean_y = shape_examples(bank, bank.images)
        rec_x, rec_y = shape_examples(bank, reconstructed)
        held_halves = shape_examples(held, held.images)
        torch.manual_seed(config.seed + 2)
        classifier, metrics["shape_classifier"] = train_classifier(
            "shape classifier",
            models.ShapeClassifier(),
            config.shape_steps,
            config,
            torch.cat([clean_x, rec_x]),
            torch.cat([clean_y, rec_y]),
            {
                "clean": (held.singles, held.single.shape),
                "reconstructed": (held_reconstructed[: len(held.single)], held.single.shape),
                "compose_halves": (held_halves[0][len(held.single) :], held_halves[1][len(held.single) :]),
            },
            device,
            generator,
            allowance("shape"),
        )
        del clean_x, rec_x

    with timer.part("style_classifier"):
        singles = len(bank.single)
        torch.manual_seed(config.seed + 4)
        style_classifier, metrics["style_classifier"] = train_classifier(
            "style classifier",
            models.StyleClassifier(),
            config.style_steps,
            config,
            torch.cat([bank.singles, reconstructed[:singles]]),
            torch.cat([bank.single.style, bank.single.style]),
            {
                "clean": (held.singles, held.single.style),
                "reconstructed": (held_reconstructed[: len(held.single)], held.single.style),
            },
            device,
            generator,
            allowance("style"),
        )
        del reconstructed, held_reconstructed

    noise_schedule = models.scheduler()
    with timer.part("unet"):
        scaling_factor = vae.config.scaling_factor
        unet, metrics["unet"] = train_unet(
            config,
            latent_mean,
            latent_std,
            scaling_factor,
            table,
            states,
            empty_states,
            noise_schedule,
            device,
            generator,
            allowance("unet"),
        )

    if config.decoder_steps:
        with timer.part("decoder"):
            latents = (latent_mean, latent_std)
            metrics["decoder"] = finetune_decoder(config, vae, bank, latents, held, detector, device, allowance("decoder"))

    with timer.part("save"):
        save_pipeline(out, tokenizer, encoder, vae, unet, noise_schedule)
        save_scorer_weights(out, detector, classifier, style_classifier)

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
            "style_classifier": models.count_parameters(style_classifier),
        },
        "seconds": {**timer.seconds, "total": round(time.perf_counter() - total_start, 2)},
        "metrics": metrics,
    }
    (out / TRAINING_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"[toy train] total: {record['seconds']['total']:.1f} s; wrote {out}", flush=True)
    print(json.dumps(metrics, indent=1), flush=True)
    return record


def finetune_decoder_of(model: str | Path, out: str | Path, device: str = "cpu", overrides: dict | None = None) -> dict:
    """Run the decoder stage on a toy model trained before it, writing a copy to ``out``.  The bank is rebuilt from
    the recipe in the model's training.json and the stage is ``train``'s own (same function, same draws) on the same
    UNet, text encoder and VAE encoder (a second training run would not give those bit for bit: the BPE trainer
    orders tied merges differently run to run).  The record keeps the source's settings and adds the decoder's."""
    import shutil

    from diffusers import AutoencoderKL

    from benchmarks.toyworld.scorer import load_scorer_models

    model, out = Path(model), Path(out)
    record = json.loads((model / TRAINING_FILE).read_text(encoding="utf-8"))
    if record["config"].get("decoder_steps"):
        raise ValueError(f"{model} already has a fine-tuned decoder ({record['config']['decoder_steps']} steps)")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    config = dataclasses.replace(
        TrainConfig(**{k: v for k, v in record["config"].items() if k in known}), **{"decoder_steps": 2000, **(overrides or {})}
    )
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; give the copy a new folder")
    shutil.copytree(model, out, dirs_exist_ok=True)
    device = torch.device(device)
    timer = Timer(device)
    start = time.perf_counter()
    with timer.part("data"):
        bank, held = make_image_bank(config, device)
    vae = AutoencoderKL.from_pretrained(str(model / "vae")).to(device).eval()
    detector, classifier = load_scorer_models(str(device), model)
    with timer.part("decoder"):
        metrics = finetune_decoder(config, vae, bank, encode_bank(vae, bank.images), held, detector, device)
    vae.save_pretrained(str(out / "vae"), safe_serialization=True)
    with timer.part("check"):
        samples = check_pipeline(config, out, detector, classifier, device)
    record["config"] = dataclasses.asdict(config)
    record["metrics"] |= {"decoder": metrics, "samples": samples, "samples_before_decoder": record["metrics"].get("samples")}
    record["seconds"] |= {"decoder": timer.seconds["decoder"], "check": timer.seconds["check"]}
    record["seconds"]["total"] = round(record["seconds"]["total"] + time.perf_counter() - start, 2)
    record["decoder_added_to"] = str(model)
    (out / TRAINING_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
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
