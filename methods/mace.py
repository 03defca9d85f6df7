"""``mace``: MACE, Mass Concept Erasure in Diffusion Models (Lu et al., CVPR 2024).

Official code: Shilin-LU/MACE @ 057e7a6 (``training.py`` → ``src/cfr_lora_training.py``, ``src/fuse_lora_close_form.py``,
``src/cfr_utils.py``).  MACE erases each concept in three steps; every step changes only the cross-attention key and
value projections ``W`` (``attn2.to_k``, ``attn2.to_v``).  The paper's section and equation numbers could not be checked
offline here, so each equation is named ((CFR), (L_attn), (IS), (FUSE)) and tied to the official file it comes from:

1. **Closed-form refinement** (``cfr_utils.closed_form_refinement``).  Concept prompts ``o`` ("a photo of nudity") and the same prompts
   with the mapping phrase ``n`` ("a photo of a person wearing clothes") are aligned token by token: the common prefix,
   the common suffix and the padding tail are kept, the differing middle (the concept words themselves) is dropped.
   The residual *context* the concept leaves in the words around it (causal attention) is what CFR rewrites:

       W ← (λW + Σ_{pairs, t} (W n_t) o_tᵀ + s·Σ_p W⁰ p pᵀ) · (λI + Σ_{pairs, t} o_t o_tᵀ + s·Σ_p p pᵀ)⁻¹          (CFR)

   with ``p`` every token row of the preservation captions (MS-COCO in the paper), λ = 0.  W⁰ is the weights MACE
   starts from: SD's own when MACE runs alone, as in the paper and the official cache; in a composition such as
   ``uce+mace`` the weights the earlier method left, so MACE preserves the captions' mapping of the model it is
   given rather than pulling it back towards SD (which would partly undo the earlier edit).  The fusion's W⁰ below
   is the same.
2. **Target-concept erasure with LoRA** (``cfr_lora_training.py``, ``AttnController.loss``).  For each concept a rank-1 LoRA on the cross-attention keys
   of the refined model is trained so that the concept's tokens receive no attention inside the concept's region:

       L_i = Σ_layers ‖ A_l[mask, concept positions] ‖_F                                                      (L_attn)

   ``A_l`` are the cross-attention probabilities of layer ``l`` for a noised image of the concept (DDPM, t ~ U[0, T),
   or the importance sampling (IS) with ``importance_sampling``), ``mask`` the concept's pixels.  MACE takes the
   mask from Grounded-SAM on 8 generated images per concept; that cannot run offline, so the mask source is the
   parameter ``masks`` (our variant, recorded in the metadata):
   ``attention`` (default): the concept tokens' cross-attention map of the *original* model on the generated image
   (averaged over layers, heads and tokens, min-max normalised, ≥ ``mask_threshold``); ``none``: every pixel;
   ``files:DIR``: the user's own images and masks, ``DIR/<concept>/<k>.png`` with ``DIR/<concept>/<k>_mask.png``
   (white = concept), e.g. from MACE's own Grounded-SAM data preparation.  The concept positions are its word tokens
   plus, with ``use_pooler`` (official default), the first [EoT], which summarises the prompt.
3. **Closed-form multi-LoRA fusion** (``fuse_lora_close_form.py``).  Each concept's LoRA is folded into its own copy of the refined
   weights ``W_i = W + ΔW_i``; one matrix then reproduces every ``W_i`` on its own concept's prompts ``c`` (all token
   rows) while keeping the original outputs on the captions:

       W* = (λW + Σ_i Σ_c W_i c cᵀ + s_f·Σ_p W⁰ p pᵀ) · (λI + Σ_i Σ_c c cᵀ + s_f·Σ_p p pᵀ)⁻¹                (FUSE)

Preservation scale units.  The official cache sums over all 616,767 MS-COCO 2014 train+val captions and multiplies by
``s`` (explicit content: 7e-7).  Here the caption statistics are averaged per caption and multiplied by
``s · COCO_CAPTIONS``, so ``s`` keeps the paper's meaning whatever caption set is given.

Concepts.  The concept set's ``extra.mace = {"concepts": [...], "mapping": "..."}`` gives MACE's concept words and
mapping (``sexual``: the explicit-content config, nudity/naked/erotic/sexual → "a person wearing clothes"); otherwise
each ``erase`` keyword is a concept, mapped to its guide.  A concept's prompts are the concept set's ``phrases`` that
contain it (or the word itself) crossed with its ``templates``.  This differs from the official prompts: MACE's
``prompt_augmentation`` puts the bare concept word into 30 of its own object templates (``aug_length=30``).  The
harness gives every method that reads prompts of the concept the same ones (the concept set's), so that a difference
between methods is not a difference of prompt lists; with the ``sexual`` set that is 15 to 30 pairs per concept, some
of them multi-word phrases ("provocative naked").

Defaults: the explicit-content config (``configs/explicit_content/erase_explicit_content.yaml``): lr 1e-5, 120 steps
per concept, rank 1, s = s_f = 7e-7, λ = 0, use_pooler, no importance sampling, 8 images per concept.  The 100-artist
config is ``lr=1e-4,steps=50,preserve_scale=1e-4,fuse_preserve_scale=1e-4,importance_sampling=true``.
Where the official code differs from the paper, the default follows the paper and a named switch gives the code:

* ``double_preserve_scale`` (default False): the code scales the COCO cache by s twice in CFR (effective s², 4.9e-13;
  ``src/cfr_lora_training.py`` @ 057e7a6, inherited by TRCE's ``run_trce_stage1.py``).
* ``pooler_all_pads`` (default False): with ``use_pooler`` the code marks *every* [EoT] position, and SD-1.x pads with
  [EoT], so the loss suppresses ~70 padding positions, not the one summary token.
* Not reproduced: the official LoRA also sits on ``to_v``, but the loss depends only on attention probabilities, so it
  never receives a gradient and stays zero; only the key LoRA is trained here, which is the same model.  The official
  data are decoded, saved as JPEG and re-encoded with ImageNet normalisation; generated latents are used directly.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from harness.api import ConceptSet, HarnessError, Method
from harness.validate import param
from methods.captions import check_captions_available, file_sha256, folder_sha256, load_captions
from methods.closed_form import (
    KeyStatistics,
    caption_statistics,
    closed_form_edit,
    cross_attention_projections,
    invert,
    second_moment,
)
from methods.finetune import TrajectoryRequest, cached_trajectories, latent_size, lazy, make_optimizer, original_unet, train
from methods.text import encode_prompts, first_eot_index, phrase_ids, phrase_token_positions

COCO_CAPTIONS = 616_767  # MS-COCO 2014 train (414,113) + val (202,654) captions: the official cache's sum
MASK_SOURCES = ("attention", "none", "files:DIR")


@dataclass
class Concept:
    word: str
    pairs: list[tuple[str, str]]  # (concept prompt o, mapped prompt n)


class MACE(Method):
    name = "mace"
    display_name = "MACE"
    description = "MACE (CVPR 2024): closed-form refinement, per-concept attention-suppressing LoRA, closed-form LoRA fusion"
    paper = "Lu et al., MACE: Mass Concept Erasure in Diffusion Models, CVPR 2024"
    version = "1"
    presets = {
        # Shilin-LU/MACE @ 057e7a6 as it runs: s² in CFR, every [EoT]/pad position in the loss (module docstring)
        "official": {"double_preserve_scale": True, "pooler_all_pads": True},
        # configs/art/erase_art_100.yaml (the 100-artist setting); the concept set names the artists, mapping "art"
        "art-100": {"lr": 1e-4, "steps": 50, "preserve_scale": 1e-4, "fuse_preserve_scale": 1e-4, "importance_sampling": True, "mapping": "art"},
    }

    @dataclass
    class Params:
        mapping: str = ""  # the phrase every concept maps to; "" = extra.mace.mapping or the concept set's guides
        preserve_scale: float = param(7e-7, ge=0)  # s in CFR (train_preserve_scale), per COCO caption of the official sum
        fuse_preserve_scale: float = param(7e-7, ge=0)  # s_f in the fusion
        lamb: float = param(0.0, ge=0)  # λ
        lr: float = param(1e-5, gt=0)  # LoRA learning rate (AdamW, weight decay 0.01)
        steps: int = param(120, ge=0)  # LoRA steps per concept (batch 1)
        rank: int = param(1, ge=1)  # of each concept's key LoRA
        images: int = param(8, ge=1)  # images per concept for the attention loss
        masks: str = "attention"  # attention | none | files:DIR (our variant of Grounded-SAM masks)
        mask_threshold: float = param(0.5, ge=0, le=1)  # attention masks: normalised map ≥ this
        use_pooler: bool = True  # the first [EoT] counts as a concept position
        importance_sampling: bool = False  # (IS) timestep distribution (official: art only)
        num_templates: int = param(0, ge=0)  # templates per concept, 0 = all of the concept set's
        sampling_steps: int = param(30, ge=1)  # data generation (paper: 30 steps, DPM-Solver; here DDIM)
        guidance: float = param(7.5, ge=0)  # CFG of the generated concept images
        captions: str = ""  # preservation captions file; "" = the concept set's
        max_captions: int = param(0, ge=0)  # use only the first n captions, 0 = all
        seed: int = param(0, ge=0)  # concept images, their noising for the masks, LoRA initialisation, draws
        solver: Literal["exact", "limit"] = "exact"  # float64 solve unless singular to working precision (closed_form.invert); "limit" = λ → 0⁺
        double_preserve_scale: bool = False  # quirk: official s² in CFR
        pooler_all_pads: bool = False  # quirk: official use_pooler marks every [EoT]/pad position

        def __post_init__(self):
            if self.masks not in ("attention", "none") and not (self.masks.startswith("files:") and len(self.masks) > 6):
                raise HarnessError(f"mace: masks={self.masks!r}: choose {', '.join(MASK_SOURCES)}")
            if self.masks.startswith("files:") and not Path(self.masks[6:]).expanduser().is_dir():
                raise HarnessError(f"mace: masks folder {self.masks[6:]!r} does not exist (layout: DIR/<concept>/<k>.png + <k>_mask.png)")

    def params_dict(self) -> dict:
        """The parameters, plus the content hashes of a captions file and a masks folder given as parameters: the key
        holds their names, so files edited in place handed back the edit made from the old ones."""
        values = super().params_dict()
        if self.params.captions:
            values["captions_sha256"] = file_sha256(self.params.captions)
        if self.params.masks.startswith("files:"):
            values["masks_sha256"] = folder_sha256(self.params.masks[6:])
        return values

    def check_concepts(self, concepts: ConceptSet) -> None:
        if self.params.preserve_scale or self.params.fuse_preserve_scale:
            check_captions_available(concepts, self.params.captions, "mace")

    def edit(self, pipe, concepts: ConceptSet, ctx) -> dict:
        params = self.params
        started = time.perf_counter()
        targets = concept_prompts(concepts, params.mapping, params.num_templates)
        projections = cross_attention_projections(pipe.unet)
        original = {name: module.weight.detach().float().clone() for name, module in projections}  # W⁰: the entry weights

        # Data for step 2 from the *original* model (MACE generates with SD itself): images (latents) and masks.
        reference = lazy(lambda: original_unet(pipe, ctx))
        data = [concept_data(pipe, ctx, reference, concept, params, index) for index, concept in enumerate(targets)]

        # Preservation statistics, per caption (module docstring: units).
        preserve = None
        caption_info = None
        if params.preserve_scale or params.fuse_preserve_scale:
            captions, caption_info = load_captions(concepts, params.captions, params.max_captions, method="mace",
                                                   without="preserve_scale=0,fuse_preserve_scale=0")
            totals = caption_statistics(pipe, captions, ctx)
            preserve = totals.scaled(1 / totals.count)

        # 1. (CFR): aligned context rows of o → the mapped prompt's values, preserving the captions.
        keys, values = [], []
        for concept in targets:
            concept_keys, concept_values = aligned_rows(pipe, concept.pairs)
            keys.append(concept_keys)
            values.append(concept_values)
        erase = KeyStatistics.from_pairs(torch.cat(keys), torch.cat(values))
        cfr_scale = (params.preserve_scale**2 if params.double_preserve_scale else params.preserve_scale) * COCO_CAPTIONS
        cfr = closed_form_edit(projections, erase, lamb=params.lamb, preserve=preserve, preserve_scale=cfr_scale if preserve else 0.0,
                               solver=params.solver)
        refined = {name: module.weight.detach().float().clone() for name, module in projections}

        # 2. One LoRA per concept on the refined model (L_attn).
        deltas, histories = [], []
        for concept, (latents, masks) in zip(targets, data):
            delta, history = train_concept_lora(pipe, ctx, concept, latents, masks, params)
            deltas.append(delta)
            histories.append(history)

        # 3. Closed-form fusion (FUSE).
        fusion = fuse(pipe, projections, targets, deltas, refined, original, preserve, params)
        return {
            "method": "mace",
            **asdict(params),
            "concepts": [concept.word for concept in targets],
            "prompt_pairs": [len(concept.pairs) for concept in targets],
            "cfr_rows": sum(len(k) for k in keys),
            "cfr_effective_preserve_scale": cfr_scale,
            "captions": caption_info,
            "mask_source": params.masks if params.masks != "attention" else "attention (our variant: cross-attention maps of the original model, not Grounded-SAM)",
            "mask_share": [round(float(masks.float().mean()), 4) for _, masks in data],
            "lora": histories,
            "cfr": {k: v for k, v in cfr.items() if k != "matrices"},
            "fusion": fusion,
            "matrices": cfr["matrices"],
            "quirks": {"double_preserve_scale": params.double_preserve_scale, "pooler_all_pads": params.pooler_all_pads},
            "seconds": round(time.perf_counter() - started, 2),
        }


# --------------------------------------------------------------------------- concepts and prompts


def concept_prompts(concepts: ConceptSet, mapping: str, num_templates: int) -> list[Concept]:
    """MACE's concept list with (o, n) prompt pairs: phrases containing the concept (or the word) × templates."""
    extra = concepts.extra.get("mace", {}) if isinstance(concepts.extra.get("mace"), dict) else {}
    words = list(extra.get("concepts") or concepts.erase)
    if not words:
        raise HarnessError(f"mace: concept set {concepts.name!r} names no concept to erase ('erase' or extra.mace.concepts)")
    templates = list(concepts.templates) or ["{}"]
    templates = templates[:num_templates] if num_templates > 0 else templates
    result = []
    for index, word in enumerate(words):
        target = mapping or extra.get("mapping") or concepts.guide_for(index) or " "
        pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
        phrases = [(bad, good) for bad, good in concepts.phrases if pattern.search(bad)]
        if not phrases:
            phrases = [(word, target)]
        elif mapping or extra.get("mapping"):  # one mapping phrase for every concept (the explicit-content config)
            phrases = [(bad, target) for bad, _ in phrases]
        result.append(Concept(word, [(t.format(bad), t.format(good)) for bad, good in phrases for t in templates]))
    return result


def matching_indices(ids_o: list[int], ids_n: list[int], length: int) -> tuple[list[int], list[int]]:
    """MACE's token alignment of o and n: common prefix, common suffix up to the first [EoT], then the padding tail.

    ``ids_*`` are the unpadded ids ([SoT] … [EoT]).  The differing middle (the concept words) is left out.
    """
    prefix = 0
    while prefix < min(len(ids_o), len(ids_n)) and ids_o[prefix] == ids_n[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(ids_o), len(ids_n)) - prefix and ids_o[-1 - suffix] == ids_n[-1 - suffix]:
        suffix += 1
    index_o = list(range(prefix)) + list(range(len(ids_o) - suffix, len(ids_o)))
    index_n = list(range(prefix)) + list(range(len(ids_n) - suffix, len(ids_n)))
    tail = min(length - len(ids_o), length - len(ids_n))
    index_o += list(range(len(ids_o), len(ids_o) + tail))
    index_n += list(range(len(ids_n), len(ids_n) + tail))
    return index_o, index_n


def aligned_rows(pipe, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """CFR keys ``E(o)[idx_o]`` and value embeddings ``E(n)[idx_n]`` (the target is ``W`` times them)."""
    concept = encode_prompts(pipe, [o for o, _ in pairs])
    mapped = encode_prompts(pipe, [n for _, n in pairs])
    keys, values = [], []
    for index in range(len(pairs)):
        ids_o = concept.input_ids[index][concept.attention_mask[index].bool()].tolist()
        ids_n = mapped.input_ids[index][mapped.attention_mask[index].bool()].tolist()
        index_o, index_n = matching_indices(ids_o, ids_n, concept.max_length)
        keys.append(concept.embeddings[index, index_o])
        values.append(mapped.embeddings[index, index_n])
    return torch.cat(keys), torch.cat(values)


def concept_positions(pipe, prompt_ids: torch.Tensor, word: str, use_pooler: bool, all_pads: bool) -> list[int]:
    """The concept's word tokens in a prompt, plus the first [EoT] (``use_pooler``), or every [EoT] (quirk)."""
    tokenizer = pipe.tokenizer
    positions = phrase_token_positions(prompt_ids, phrase_ids(tokenizer, word))
    if use_pooler:
        eot = first_eot_index(prompt_ids, tokenizer.eos_token_id)
        positions += list(range(eot, len(prompt_ids))) if all_pads else [eot]
    return sorted(set(positions))


# --------------------------------------------------------------------------- attention with a LoRA on the keys


class AttentionProbe:
    """Cross-attention that adds a LoRA ``B A x`` to the keys and hands its probabilities to a recorder.

    Only the plain SD-1.x cross-attention path (3-D hidden states, no norms on the context) is needed.
    """

    def __init__(self, down: torch.nn.Parameter | None, up: torch.nn.Parameter | None, recorder: list):
        self.down, self.up, self.recorder = down, up, recorder

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        query = attn.to_q(hidden_states)
        key = attn.to_k(encoder_hidden_states)
        if self.down is not None:
            key = key + (encoder_hidden_states @ self.down.T) @ self.up.T
        value = attn.to_v(encoder_hidden_states)
        probabilities = attn.get_attention_scores(attn.head_to_batch_dim(query), attn.head_to_batch_dim(key), None)
        self.recorder.append(probabilities)  # (batch · heads, pixels, tokens)
        out = attn.batch_to_head_dim(torch.bmm(probabilities, attn.head_to_batch_dim(value)))
        return attn.to_out[1](attn.to_out[0](out))


def cross_attention_modules(unet) -> list[tuple[str, torch.nn.Module]]:
    return [(name, module) for name, module in unet.named_modules() if name.endswith("attn2") and hasattr(module, "to_k")]


def attention_loss(probabilities: list[torch.Tensor], mask: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """(L_attn): Σ_layers ‖A_l[mask, positions]‖_F, the mask resized (nearest) to each layer's resolution."""
    total = probabilities[0].new_zeros(())
    for layer in probabilities:
        side = int(round(layer.shape[1] ** 0.5))
        resized = torch.nn.functional.interpolate(mask[None, None].float(), size=(side, side), mode="nearest")[0, 0] > 0.5
        selected = layer[:, resized.flatten()][:, :, positions]
        total = total + selected.pow(2).sum().sqrt() if selected.numel() else total
    return total


# --------------------------------------------------------------------------- step 2 data: images and masks


def concept_data(pipe, ctx, reference, concept: Concept, params, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents x₀, masks) of ``params.images`` images of the concept: generated here, or the user's files."""
    if params.masks.startswith("files:"):
        return files_data(pipe, Path(params.masks[6:]).expanduser() / concept.word, params.images)
    size = latent_size(pipe, 0)
    prompts = [concept.pairs[k % len(concept.pairs)][0] for k in range(params.images)]
    requests = [TrajectoryRequest(prompt, params.seed * 1000 + index * 100 + k, (params.sampling_steps,)) for k, prompt in enumerate(prompts)]
    latents = cached_trajectories(ctx, pipe, reference, requests, num_steps=params.sampling_steps, guidance=params.guidance, size=size)[:, 0]
    if params.masks == "none":
        return latents, torch.ones(len(latents), size, size, dtype=torch.bool)
    return latents, attention_masks(pipe, reference(), latents, prompts, concept.word, params)


@torch.no_grad()
def attention_masks(pipe, unet, latents: torch.Tensor, prompts: list[str], word: str, params) -> torch.Tensor:
    """Our stand-in for Grounded-SAM: where the original model attends to the concept's words on its own image.

    Each image is noised to the middle of the schedule (fixed seed), the UNet runs once with its prompt, and the
    word tokens' probabilities are averaged over heads, tokens and layers (each upsampled to the latent size).
    """
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    timestep = torch.tensor([scheduler.config.num_train_timesteps // 2])
    encoded = encode_prompts(pipe, prompts)
    size = latents.shape[-1]
    masks = []
    modules = cross_attention_modules(unet)
    saved = {name: module.processor for name, module in modules}
    recorder: list = []
    try:
        for _, module in modules:
            module.set_processor(AttentionProbe(None, None, recorder))
        for index, latent in enumerate(latents):
            generator = torch.Generator().manual_seed(params.seed + index)
            noise = torch.randn(latent.shape, generator=generator).to(latent.device)
            noisy = scheduler.add_noise(latent[None].float(), noise[None], timestep)
            recorder.clear()
            unet(noisy.to(unet.dtype), timestep.to(latent.device), encoder_hidden_states=encoded.embeddings[index : index + 1].to(unet.dtype))
            positions = phrase_token_positions(encoded.input_ids[index], phrase_ids(pipe.tokenizer, word)) or [
                first_eot_index(encoded.input_ids[index], pipe.tokenizer.eos_token_id)
            ]
            maps = []
            for layer in recorder:
                side = int(round(layer.shape[1] ** 0.5))
                layer_map = layer[:, :, positions].float().mean(dim=(0, 2)).reshape(1, 1, side, side)
                maps.append(torch.nn.functional.interpolate(layer_map, size=(size, size), mode="bilinear", align_corners=False)[0, 0])
            heat = torch.stack(maps).mean(0)
            heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)
            masks.append(heat >= params.mask_threshold)
    finally:
        for name, module in modules:
            module.set_processor(saved[name])
    return torch.stack(masks).cpu()


def files_data(pipe, folder: Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The user's images ``<k>.png|jpg`` and masks ``<k>_mask.png`` from ``folder``, encoded with the VAE."""
    import numpy as np
    from PIL import Image

    images = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg") and not p.stem.endswith("_mask"))
    if not images:
        raise HarnessError(f"mace: no images in {folder} (layout: DIR/<concept>/<k>.png with <k>_mask.png beside each)")
    vae = pipe.vae
    pixels_side = latent_size(pipe, 0) * pipe.vae_scale_factor
    latents, masks = [], []
    for path in images[:count]:
        mask_path = path.with_name(f"{path.stem}_mask.png")
        if not mask_path.is_file():
            raise HarnessError(f"mace: image {path} has no mask {mask_path.name} beside it")
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB").resize((pixels_side, pixels_side)), dtype=np.float32) / 127.5 - 1
        with Image.open(mask_path) as image:
            mask = np.asarray(image.convert("L").resize((pixels_side // pipe.vae_scale_factor,) * 2, Image.NEAREST)) > 127
        with torch.no_grad():
            tensor = torch.from_numpy(array).permute(2, 0, 1)[None].to(vae.device, vae.dtype)
            latents.append(vae.encode(tensor).latent_dist.mean[0].float() * vae.config.scaling_factor)
        masks.append(torch.from_numpy(mask))
    return torch.stack(latents), torch.stack(masks)


# --------------------------------------------------------------------------- step 2: one LoRA per concept


def importance_weights(num_timesteps: int) -> torch.Tensor:
    """(IS) (``cfr_utils.importance_sampling_fn``): p(t) ∝ σ(0.05(t − 200)) − σ(0.05(t − 400))."""
    t = torch.arange(num_timesteps, dtype=torch.float64)
    weights = torch.sigmoid(0.05 * (t - 200)) - torch.sigmoid(0.05 * (t - 400))
    return weights / weights.sum()


def train_concept_lora(pipe, ctx, concept: Concept, latents: torch.Tensor, masks: torch.Tensor, params) -> tuple[dict, dict]:
    """Train rank-``rank`` key LoRAs on every cross-attention for one concept; return {to_k name: ΔW = B A} and a summary."""
    import copy

    from diffusers import DDPMScheduler

    student = copy.deepcopy(pipe.unet).requires_grad_(False).to(torch.float32)
    device = next(student.parameters()).device
    generator = torch.Generator().manual_seed(params.seed)
    rng = random.Random(f"{params.seed}-{concept.word}")
    recorder: list = []
    loras = {}
    for name, module in cross_attention_modules(student):
        out_features, in_features = module.to_k.weight.shape
        # LoRA initialisation: A ~ N(0, 1/rank), B = 0, so training starts from the refined model.
        down = torch.nn.Parameter(torch.randn(params.rank, in_features, generator=generator).to(device) / params.rank)
        up = torch.nn.Parameter(torch.zeros(out_features, params.rank, device=device))
        module.set_processor(AttentionProbe(down, up, recorder))
        loras[f"{name}.to_k"] = (down, up)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    num_timesteps = scheduler.config.num_train_timesteps
    probabilities = importance_weights(num_timesteps) if params.importance_sampling else None
    prompts = [o for o, _ in concept.pairs]
    encoded = encode_prompts(pipe, prompts)
    positions = [concept_positions(pipe, ids, concept.word, params.use_pooler, params.pooler_all_pads) for ids in encoded.input_ids]

    def step_losses(step: int) -> dict:
        image = rng.randrange(len(latents))
        prompt = rng.randrange(len(prompts))
        if probabilities is not None:
            timestep = torch.multinomial(probabilities, 1, generator=generator)
        else:
            timestep = torch.randint(0, num_timesteps, (1,), generator=generator)
        noise = torch.randn(latents[image].shape, generator=generator).to(device)
        noisy = scheduler.add_noise(latents[image][None].to(device), noise[None], timestep)
        recorder.clear()
        student(noisy, timestep.to(device), encoder_hidden_states=encoded.embeddings[prompt : prompt + 1].to(device))
        return {"loss": attention_loss(recorder, masks[image].to(device), positions[prompt])}

    weights = [tensor for pair in loras.values() for tensor in pair]
    optimizer = make_optimizer(weights, "adamw", params.lr, weight_decay=0.01)

    def clip_gradients(*_):  # the official max_grad_norm 1.0, before every step
        torch.nn.utils.clip_grad_norm_(weights, 1.0)

    optimizer.register_step_pre_hook(clip_gradients)
    history = train(step_losses, optimizer, params.steps, progress=ctx.progress, desc=f"mace LoRA {concept.word}")
    with torch.no_grad():
        deltas = {name: (up @ down).detach() for name, (down, up) in loras.items()}
    return deltas, {"concept": concept.word, **history}


# --------------------------------------------------------------------------- step 3: fusion


@torch.no_grad()
def fuse(pipe, projections, targets: list[Concept], deltas: list[dict], refined: dict, original: dict, preserve, params) -> dict:
    """(FUSE), per matrix: W* = (λW + Σ_i W_i C_i + s_f W⁰ P) · (λI + Σ_i C_i + s_f P)⁻¹ with C_i over all rows of i's prompts."""
    moments = []
    for concept in targets:
        rows = encode_prompts(pipe, [o for o, _ in concept.pairs]).embeddings.flatten(0, 1)
        moments.append(second_moment(rows, rows).cpu())
    dim = moments[0].shape[0]
    identity = torch.eye(dim, dtype=torch.float64)
    scale = params.fuse_preserve_scale * COCO_CAPTIONS if preserve is not None else 0.0
    prior = preserve.key_key.cpu() if preserve is not None else torch.zeros(dim, dim, dtype=torch.float64)
    mat2 = params.lamb * identity + sum(moments) + scale * prior
    inverse = invert(mat2, solver=params.solver)
    for name, module in projections:
        weight = refined[name].double().cpu()
        mat1 = params.lamb * weight + scale * original[name].double().cpu() @ prior
        for moment, delta in zip(moments, deltas):
            concept_weight = weight + delta[name].double().cpu() if name in delta else weight
            mat1 = mat1 + concept_weight @ moment
        fused = inverse.right(mat1) + weight @ inverse.unconstrained  # unconstrained directions keep the refined weights
        module.weight.copy_(fused.to(module.weight.device, module.weight.dtype))
    return {**inverse.info, "preserve_scale": scale}
