"""``trce-v``: TRCE stage 2, Denoising Trajectory Steering (paper §4.2, Eq. 6–9; Appendix A.3; Table 5).

Stage 1 (``trce-t``) removes the malicious meaning from the text side.  Stage 2
fine-tunes the *early* denoising predictions, before the "turning point" where
details appear, so that sampling trajectories drift away from the unsafe content.
Run alone it starts from the base model: the paper's "TRCE (V)" row.  Composed as
``trce`` (= ``trce-t+trce-v``) it starts from the stage-1 model.

Models:

* ``ε*``: the **original** UNet (``ctx.original_unet()``), frozen.  It samples the
  trajectories and gives the guidance-enhanced targets (§4.2 "Guidance Enhancement").
* ``ε_θ``: the model being trained.  It starts from the pipe's current UNet (stage 1
  under ``trce``) and trains only the "visual layers": every self-attention
  (``attn1``) parameter and the cross-attention queries (``attn2.to_q``), §4.2, A.3.
* ``ε_reg``: the pipe's current UNet as it was on entry (stage 1 under ``trce``),
  frozen: the regulariser's reference (Eq. 9, "the model's original generation
  abilities" after stage 1, as the official code's reloaded stage-1 UNet).

Concept set → prompts: each (malicious, safe) pair of ``phrases`` (or, without phrases,
each ``erase`` keyword with its guide) goes into ``template`` ("a photo of {}", the
official code's template for "sexual"; it used "an image depicting {}" for the I2P
set): ``c⁻`` = "a photo of nudity", ``c⁺`` = "a photo of a person wearing clothes".
``num_phrases`` (0 = all; shared with ``trce-t`` under ``trce``) takes the first N pairs.

1. **Trajectory preparation** (§4.2, A.3).  ``samples_per_prompt`` DDIM trajectories
   per malicious prompt (paper: 20 phrases × 5 = 100 for "sexual"), sampled by ``ε*``
   at guidance 3 with ``num_steps`` = 50 steps.  Only the early window is stored:
   the latents ``x_{t_k}`` for k = 0 … ``early_steps`` + 1.  The regulariser reads
   latents of *unconditional* trajectories at a step drawn uniformly from all 50; each
   regulariser sample is one (seed, step) pair, and only that latent is computed
   and stored.  The pool holds as many samples as training reads, at most
   ``regularizer_samples`` (A.3: 2000), after which it is reused cyclically.
2. **Per training step** (batch ``batch_size``, official 1): a malicious trajectory
   (each once per epoch, in a seeded random order) and a step k ~ U{0 … early_steps}, both
   ends included: 26 of the 50 steps at the default 25, as the official ``randint(0, 25)``
   (A.3: "uniformly sampled timesteps from 0 to 25 of 50 DDIM steps"); latent
   ``x = x_{t_k}``, queried at ``t = t_k``.  Then

       ε⁻ = ε*(x, t, c⁻) + g (ε*(x, t, c⁻) − ε*(x, t, ∅))                 (Eq. 6)
       ε⁺ = ε*(x, t, c⁺) + g (ε*(x, t, c⁺) − ε*(x, t, ∅))                 (Eq. 7)
       L_con(ε) = max(d(ε, ε⁺) − d(ε, ε⁻) + α, 0)                          (Eq. 8)
       L_reg    = ‖ε_θ(x', t', ∅) − ε_reg(x', t', ∅)‖²  (mean), x' from the pool   (Eq. 9)
       L        = ½ [L_con(ε_θ(x, t, c⁻)) + L_con(ε_θ(x, t, ∅))] + λ L_reg

   with g = 15, α = 0.01, λ = 100 (A.3; Table 8 for g).  The form of Eq. 6–7 above, with g
   on the difference from the conditional prediction (an effective guidance of g + 1), is the
   official code's (``run_trce_stage2.py``, ``safe_ref + guidance * (safe_ref − uncond_ref)``);
   the paper's text says it "leverages Eq. 3" and was not checked against its typeset equation.  The contrastive term is
   applied to the conditional *and* the unconditional prediction (§4.2: "steer its
   both conditional and unconditional denoising predictions") and the two are
   averaged, as in the official code.  ``regularizer_batch`` (official 4) pool latents
   per step.
3. **Optimiser**: Adam, lr 1e-6, 3 epochs (§5.1, A.3).  We follow the paper's Adam;
   ``optimizer=adamw`` gives the official code's AdamW (weight decay 0.01).  At lr 1e-6
   that decay is 1e-8 of a weight per step, so the two differ very little.

Choices the paper leaves open (its equations are not in our copy of the text; the
official code, ddgoodgood/TRCE @ 0da9b71 ``run_trce_stage2.py``, settles them):

* ``distance="mse"`` (default): ``d(a, b)`` is the per-sample **mean squared error**,
  as in the official code.  The margin α = 0.01 and λ = 100 were tuned at that scale.
  ``distance="l2"`` is the textbook triplet margin loss [Balntas et al.] with Euclidean
  distances, whose values are √(numel) larger, so the same α and λ mean something else.
* ``objective="align"``: Table 5's ablation that aligns with the safe prediction only,
  ``L_con = d(ε, ε⁺)``.  ``regularization_scale=0`` removes ``L_reg`` (Table 5's other
  row).

Quirks of the official code, off by default; each is recorded in the metadata:

* ``skip_zero_grad``: the code never calls ``optimizer.zero_grad()``, so every step
  applies the sum of all gradients so far (``run_trce_stage2.py``).
* ``latent_after_step``: the code stores, for step k, the latent *after* step k
  (``x_{t_{k+1}}``) with step k's timestep ``t_k``, so every training latent is one DDIM
  step less noisy than the timestep it is queried at.  The default queries ``x_{t_k}``
  at ``t_k``.  (The malicious cache holds both latents, so the switch re-samples only
  the regulariser pool.)
* ``random_timestep_in_interval``: the code draws the training timestep uniformly in
  the step's DDPM interval ``[T − (k+1)·T/N, T − k·T/N)`` instead of ``t_k``.  For the
  malicious latent it then overwrites that draw with the stored ``t_k``; only the
  regulariser's timestep stays random, and that is what the switch reproduces.
* Not switchable, for the record: the code sums its regulariser from the constant
  0.01 (no effect on gradients); its regulariser step draw ``randint(0, 50)`` can
  index past the 50 stored steps and then silently drops that sample; it walks the
  trajectory files in a fixed order, not shuffled; its DDIM scheduler has no
  ``steps_offset`` (timesteps 980 … 0; SD's config gives 981 … 1, used here).

Cost: training is ``epochs × trajectories / batch_size`` steps (300 for "sexual"), each
with 3 + ``regularizer_batch`` frozen predictions and one backward pass through 2 + 4
student predictions.  The trajectory caches make a second run, or an ablation of any
training setting, sample nothing.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

import torch

from harness.api import ConceptSet, HarnessError
from methods.finetune import (
    FineTuneMethod,
    Training,
    TrajectoryRequest,
    cached_trajectories,
    ddim_scheduler,
    latent_size,
    lazy,
    module_fingerprint,
    original_unet,
    predict,
    text_embeddings,
)

SEED_STRIDE = 1_000_000  # trajectory seeds: trajectory_seed · STRIDE + index; regulariser samples from + STRIDE / 2
TRAINABLE_GROUP = "self-attention+query"


class TRCEV(FineTuneMethod):
    name = "trce-v"
    display_name = "TRCE (V)"
    description = "TRCE stage 2: triplet fine-tuning of self-attention and attn2.to_q on early trajectory steps"
    paper = "TRCE: Towards Reliable Malicious Concept Erasure in Text-to-Image Diffusion Models (2025), §4.2"
    version = "1"
    # ddgoodgood/TRCE @ 0da9b71: run_trce_stage2.py
    presets = {
        "official": {
            "optimizer": "adamw",  # weight decay 0.01
            "skip_zero_grad": True,  # gradients never cleared
            "latent_after_step": True,  # x_{t_{k+1}} queried at t_k
            "random_timestep_in_interval": True,  # regulariser t drawn in the step's DDPM interval
        },
    }

    @dataclass
    class Params:
        guidance_enhancement: float = 15.0  # g (Eq. 6–7; A.3, Table 8)
        margin: float = 0.01  # α (Eq. 8; A.3)
        regularization_scale: float = 100.0  # λ on L_reg (Eq. 9; A.3 "prior preservation weight")
        lr: float = 1e-6  # A.3
        epochs: int = 3  # A.3
        optimizer: Literal["adam", "adamw"] = "adam"  # paper; "adamw" = official code
        weight_decay: float = 0.01  # AdamW only (official)
        batch_size: int = 1  # malicious latents per step (official 1)
        regularizer_batch: int = 4  # regulariser latents per step (official 4)
        num_phrases: int = 0  # (malicious, safe) pairs to use, 0 = all (paper: 20)
        samples_per_prompt: int = 5  # trajectories per malicious prompt (A.3: 100 = 20 × 5)
        template: str = "a photo of {}"  # official, "sexual"
        num_steps: int = 50  # DDIM steps of the cached trajectories (A.3)
        early_steps: int = 25  # train on steps k = 0 … early_steps (A.3: 0 to 25 of 50)
        sample_guidance: float = 3.0  # CFG of the malicious trajectories (official)
        regularizer_samples: int = 2000  # most unconditional samples in the pool (A.3)
        resolution: int = 0  # px; 0 = the backbone's native size (512 for SD v1.4)
        objective: Literal["triplet", "align"] = "triplet"  # Eq. 8; "align" = Table 5's d(ε, ε⁺) only
        distance: Literal["mse", "l2"] = "mse"  # d in Eq. 8: per-sample mean squared error (official) or "l2"
        max_steps: int = 0  # cap on optimiser steps, 0 = epochs × trajectories / batch_size
        seed: int = 0  # training draws (order, steps)
        trajectory_seed: int = 0  # starting noises of the cached trajectories
        sample_batch_size: int = 16  # trajectories denoised together (speed only)
        skip_zero_grad: bool = False  # quirk: official code never zeroes gradients
        latent_after_step: bool = False  # quirk: official latent for step k is x_{t_{k+1}}
        random_timestep_in_interval: bool = False  # quirk: official regulariser t drawn in the step's interval

    def validate(self, concepts: ConceptSet) -> None:
        check_params(self.params)

    def trainable_group(self) -> str:
        return TRAINABLE_GROUP  # §4.2, A.3: the "visual layers"

    def quirks(self) -> dict:
        params = self.params
        return {
            "skip_zero_grad": params.skip_zero_grad,
            "latent_after_step": params.latent_after_step,
            "random_timestep_in_interval": params.random_timestep_in_interval,
            "optimizer": params.optimizer,
        }

    def prepare(self, pipe, concepts: ConceptSet, ctx, student) -> Training:
        params = self.params
        device = pipe.unet.device
        size = latent_size(pipe, params.resolution)
        timesteps = ddim_scheduler(pipe, params.num_steps).timesteps.to(device)
        num_train_timesteps = pipe.scheduler.config.num_train_timesteps

        # Prompts: c⁻ and c⁺ for every (malicious, safe) pair.
        pairs = phrase_pairs(concepts, params.num_phrases)
        malicious = [params.template.format(bad) for bad, _ in pairs]
        safe = [params.template.format(good) for _, good in pairs]

        # Models: ε* (original, frozen), ε_reg (the pipe's UNet on entry, frozen: only a copy trains), ε_θ = student.
        reference = lazy(lambda: original_unet(pipe, ctx))
        regularizer_reference = pipe.unet

        # 1. trajectory preparation with the original UNet (§4.2): the early window of each malicious trajectory
        offset = 1 if params.latent_after_step else 0
        window = tuple(range(params.early_steps + 2))  # + 1 so that both latent conventions share the cache
        trajectory_prompts, requests = [], []
        for index, prompt in enumerate(malicious):
            for sample in range(params.samples_per_prompt):
                number = index * params.samples_per_prompt + sample
                trajectory_prompts.append(index)
                requests.append(TrajectoryRequest(prompt, params.trajectory_seed * SEED_STRIDE + number, window))
        trajectories = cached_trajectories(
            ctx,
            pipe,
            reference,
            requests,
            num_steps=params.num_steps,
            guidance=params.sample_guidance,
            size=size,
            batch_size=params.sample_batch_size,
        )
        steps_per_epoch = math.ceil(len(requests) / params.batch_size)
        total_steps = params.epochs * steps_per_epoch
        if params.max_steps > 0:
            total_steps = min(total_steps, params.max_steps)

        # ... and the regulariser pool: unconditional samples at a uniformly drawn step each (Eq. 9: "t from 0 … T")
        use_regularizer = params.regularization_scale != 0
        pool = min(params.regularizer_samples, total_steps * params.regularizer_batch) if use_regularizer else 0
        pool_steps, pool_requests = [], []
        for number in range(pool):
            seed = params.trajectory_seed * SEED_STRIDE + SEED_STRIDE // 2 + number
            step = random.Random(seed).randrange(params.num_steps)  # a function of the seed alone
            pool_steps.append(step)
            pool_requests.append(TrajectoryRequest("", seed, (step + offset,)))
        pool_latents = None
        if pool:
            pool_latents = cached_trajectories(
                ctx,
                pipe,
                reference,
                pool_requests,
                num_steps=params.num_steps,
                guidance=1.0,
                size=size,
                batch_size=params.sample_batch_size,
            )[:, 0]

        # Text embeddings, once.
        embeddings = text_embeddings(pipe, malicious + safe + [""])
        unsafe_rows = torch.stack([embeddings[p] for p in malicious]).to(device)
        safe_rows = torch.stack([embeddings[p] for p in safe]).to(device)
        null_row = embeddings[""].to(device)

        # 2. the training plan: every trajectory once per epoch, in a seeded order; a random early step for each
        rng = random.Random(params.seed)
        order = []
        for _ in range(params.epochs):
            epoch = list(range(len(requests)))
            rng.shuffle(epoch)
            order += epoch
        ref_unet = reference()

        def step_losses(step: int) -> dict:
            chosen = [order[(step * params.batch_size + b) % len(order)] for b in range(params.batch_size)]
            early = [rng.randint(0, params.early_steps) for _ in chosen]
            x = trajectories[torch.tensor(chosen, device=device), torch.tensor(early, device=device) + offset]
            t = timesteps[early]
            prompt_index = [trajectory_prompts[i] for i in chosen]
            c_unsafe, c_safe = unsafe_rows[prompt_index], safe_rows[prompt_index]
            c_null = null_row.expand_as(c_unsafe)

            with torch.no_grad():  # guidance-enhanced targets from the original model (Eq. 6–7)
                eps_unsafe, eps_safe, eps_null = predict(
                    ref_unet, torch.cat([x, x, x]), torch.cat([t, t, t]), torch.cat([c_unsafe, c_safe, c_null])
                ).chunk(3)
                negative = eps_unsafe + params.guidance_enhancement * (eps_unsafe - eps_null)  # ε⁻ (Eq. 6)
                positive = eps_safe + params.guidance_enhancement * (eps_safe - eps_null)  # ε⁺ (Eq. 7)

            inputs, times, conds = [x, x], [t, t], [c_unsafe, c_null]
            if pool:  # regulariser latents, reused cyclically when training reads more than the pool holds
                picked = [(step * params.regularizer_batch + b) % pool for b in range(params.regularizer_batch)]
                x_reg = pool_latents[picked]
                t_reg = torch.stack(
                    [regularizer_timestep(pool_steps[j], timesteps, num_train_timesteps, params, rng) for j in picked]
                )
                inputs.append(x_reg)
                times.append(t_reg.to(device))
                conds.append(null_row.expand(len(picked), *null_row.shape))
            predictions = predict(student, torch.cat(inputs), torch.cat(times), torch.cat(conds))
            pred_cond, pred_uncond = predictions[: len(x)], predictions[len(x) : 2 * len(x)]

            contrastive = 0.5 * (
                contrastive_loss(pred_cond, positive, negative, params)
                + contrastive_loss(pred_uncond, positive, negative, params)
            )
            losses = {"contrastive": contrastive}
            loss = contrastive
            if pool:
                with torch.no_grad():
                    target = predict(regularizer_reference, x_reg, times[-1], conds[-1])
                regularizer = torch.nn.functional.mse_loss(predictions[2 * len(x) :], target)  # Eq. 9
                losses["regularizer"] = regularizer
                loss = loss + params.regularization_scale * regularizer
            return {"loss": loss, **losses}

        metadata = {
            "prompt_pairs": len(pairs),
            "trajectories": len(requests),
            "regularizer_pool": pool,
            "latent_size": size,
            "reference_unet": module_fingerprint(ref_unet),  # ε*: the original UNet
            "regularizer_unet": module_fingerprint(regularizer_reference),  # ε_reg: the UNet trce-v started from
        }
        # 3. Adam (paper) or AdamW (official), lr 1e-6, 3 epochs: run by the template
        return Training(step_losses, total_steps, metadata, weight_decay=params.weight_decay, skip_zero_grad=params.skip_zero_grad)


def check_params(params) -> None:
    if not 0 <= params.early_steps < params.num_steps:
        raise HarnessError(f"trce-v: early_steps={params.early_steps} must lie in 0 … num_steps − 1 ({params.num_steps - 1})")
    if params.template.count("{}") != 1:
        raise HarnessError(f"trce-v: template {params.template!r} needs exactly one '{{}}'")
    for name in ("epochs", "batch_size", "samples_per_prompt", "num_steps", "sample_batch_size"):
        if getattr(params, name) < 1:
            raise HarnessError(f"trce-v: {name} must be at least 1")
    if params.regularization_scale != 0 and (params.regularizer_batch < 1 or params.regularizer_samples < 1):
        raise HarnessError(
            "trce-v: the regulariser needs regularizer_batch ≥ 1 and regularizer_samples ≥ 1 (or regularization_scale=0)"
        )


def phrase_pairs(concepts: ConceptSet, num_phrases: int) -> list[tuple[str, str]]:
    """The (malicious, safe) pairs: ``phrases``, or each ``erase`` keyword with its guide."""
    pairs = list(concepts.phrases) or [(text, concepts.guide_for(i).strip()) for i, text in enumerate(concepts.erase)]
    if not pairs:
        raise HarnessError(f"trce-v: concept set {concepts.name!r} has neither 'phrases' nor 'erase'")
    return pairs[:num_phrases] if num_phrases > 0 else pairs


def sample_distance(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    """Per-sample distance: mean squared error (official) or Euclidean norm of the flattened difference."""
    difference = (a - b).flatten(1)
    if distance == "mse":
        return difference.pow(2).mean(dim=1)
    return difference.norm(dim=1)


def triplet_margin_loss(prediction, positive, negative, margin: float, distance: str = "mse") -> torch.Tensor:
    """Eq. 8: ``max(d(ε, ε⁺) − d(ε, ε⁻) + α, 0)``, averaged over the batch."""
    gap = sample_distance(prediction, positive, distance) - sample_distance(prediction, negative, distance)
    return torch.relu(gap + margin).mean()


def contrastive_loss(prediction, positive, negative, params) -> torch.Tensor:
    if params.objective == "align":  # Table 5: align with the safe prediction only
        return sample_distance(prediction, positive, params.distance).mean()
    return triplet_margin_loss(prediction, positive, negative, params.margin, params.distance)


def regularizer_timestep(step: int, timesteps, num_train_timesteps: int, params, rng: random.Random) -> torch.Tensor:
    """``t_k`` for a regulariser latent, or (quirk) a uniform draw in step k's DDPM interval."""
    if not params.random_timestep_in_interval:
        return timesteps[step]
    stride = num_train_timesteps // params.num_steps
    high = num_train_timesteps - stride * step
    return torch.tensor(rng.randrange(high - stride, high), device=timesteps.device)
