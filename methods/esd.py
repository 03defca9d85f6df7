"""``esd-u`` and ``esd-x``: Erased Stable Diffusion (Gandikota et al., ICCV 2023).

Official code: rohitgandikota/erasing, the paper's CompVis code @ a2189e9
``train-scripts/train-esd.py`` and the 2025 diffusers rewrite @ 25613d2 ``esd_sd.py``.

ESD fine-tunes the model so that, for the concept prompt c, it predicts what the
frozen model would predict under *negative* guidance away from c:

    ε_θ(x_t, t, c)  ←  ε*(x_t, t, ∅) − η [ε*(x_t, t, c) − ε*(x_t, t, ∅)]        (ESD, paper convention)

One iteration (batch 1): draw a keyword c and a DDIM step k ~ U{0 … 49}; sample
``x_{t_k}`` by 50-step DDIM from x_T at guidance 3 (``guidance``) conditioned on c; query
at ``t = t_k``; one Adam step on ``MSE(ε_θ(x_t, t, c), target)``.

Models: ``ε*`` is the frozen UNet the edit starts from (the base model when run
alone: ESD's self-distillation from θ*).  The trajectories come from the frozen
**original** UNet (as in the 2025 diffusers code, ``esd_sd.py``), so
they are cached (``methods/finetune.py``) and a second run samples nothing;
``sample_with_trainable`` reproduces the paper code instead.

Which parameters train (``methods/finetune.py``, ``PARAMETER_GROUPS``):

* ``esd-u``: the non-cross-attention weights.  ``parameters="paper"`` (default) is the
  paper code's ``noxattn``: everything except ``attn2``, the time embedding and the
  output layers (``conv_norm_out``, ``conv_out``), but including ``conv_in``, every norm
  and the resnets' ``time_emb_proj``.  ``parameters="diffusers"`` is the 2025 code's
  ``esd-u``: weights and biases of every Linear/Conv2d outside ``attn2`` (so also
  ``conv_in``, ``conv_out`` and the time embedding, but no norms).
* ``esd-x``: every cross-attention parameter (``attn2.to_q/to_k/to_v/to_out``).  Both
  generations of the code select the same tensors (``paper`` and ``diffusers`` are the same set).
  ``parameters="strict"`` is the 2025 code's ``esd-x-strict``: only the key and value
  projections ``attn2.to_k/to_v``, which read the text, so the query (image features) and
  the output projection, shared by every prompt, stay as they were.

Concept set → prompts: the ``erase`` keywords, one drawn uniformly per iteration (the
paper code's ``--seperator`` mode; "sexual" erases "nudity" as in the ESD paper, the I2P
set its 11 category words).  ``keywords=N`` keeps the first N.

Defaults are the paper's settings (as the paper code, ``train-esd.py``, runs them): η = 1, 1000 iterations, Adam at
lr 1e-5, guidance 3, DDIM 50, 512 px (the backbone's native size), fp32 training.

Old (2023 CompVis, paper results) versus new (2025 diffusers) code:

* **η convention.**  The new code's target is ``ε*_c − η' (ε*_c − ε*_∅)``, which equals
  the paper's with η' = η + 1: **new η' = 2 is the paper's η = 1**.  ``negative_guidance``
  here is always the paper's η.
* **Parameter sets** differ for ESD-u (above); ``parameters`` picks one.
* **Sampling model.**  The old code samples x_t with the *trainable* model, so each
  iteration's trajectory depends on the training so far; the new code with the frozen
  base.  ``sample_with_trainable=true`` reproduces the old behaviour (no cache, one
  trajectory per iteration).
* **Preset.**  New: 200 iterations, lr 5e-5, bf16 weights trained directly, and a
  hard-coded 1024 px for SD v1.4 (a bug).  To approximate it:
  ``parameters=diffusers,iterations=200,lr=5e-5``; training here is always fp32.
* **Timestep.**  The old code queries a DDPM timestep drawn in step k's interval while
  its latent sits about two DDIM steps lower (its modified ``ldm/models/diffusion/ddim.py``).  Not reproduced: the
  latent ``x_{t_k}`` is always queried at ``t_k`` (the new code's semantics).

``max_steps`` caps the iterations for quick runs (``--set esd-u.max_steps=50``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from harness.api import ConceptSet, HarnessError
from harness.validate import param
from methods.finetune import (
    FineTuneMethod,
    Training,
    TrajectoryRequest,
    cached_trajectories,
    ddim_scheduler,
    latent_size,
    lazy,
    original_unet,
    predict,
    sample_trajectories,
    text_embeddings,
)

PARAMETER_SETS = {
    # (ESD variant, parameters) → parameter group of methods/finetune.py
    ("esd-u", "paper"): "non-cross-attention",
    ("esd-u", "diffusers"): "non-cross-attention-diffusers",
    ("esd-x", "paper"): "cross-attention",
    ("esd-x", "diffusers"): "cross-attention",
    ("esd-x", "strict"): "cross-attention-key-value",  # the 2025 code's esd-x-strict
}


ADAMW_WEIGHT_DECAY = 0.01  # optimizer=adamw: torch's AdamW default


class ESD(FineTuneMethod):
    """ESD with the parameter set of the subclass (``esd-u`` or ``esd-x``)."""

    paper = "Gandikota et al., Erasing Concepts from Diffusion Models, ICCV 2023"
    version = "1"
    variant: ClassVar[str]
    presets = {
        # the paper code, rohitgandikota/erasing @ a2189e9 train-scripts/train-esd.py: x_t sampled with the model being
        # trained (its timestep offset is not reproduced, see above)
        "official": {"sample_with_trainable": True},
        # the 2025 diffusers code, @ 25613d2 esd_sd.py, at SD's native 512 px (its hard-coded 1024 px is a bug)
        "diffusers-2025": {"parameters": "diffusers", "iterations": 200, "lr": 5e-5},
    }

    @dataclass
    class Params:
        negative_guidance: float = param(1.0, ge=0)  # η, paper convention (= the 2025 code's η' = 2)
        iterations: int = param(1000, ge=1)  # optimiser steps, batch 1
        lr: float = param(1e-5, gt=0)  # Adam learning rate
        guidance: float = param(3.0, ge=0)  # CFG used to sample x_t ("start guidance")
        num_steps: int = param(50, ge=1, le=1000)  # DDIM steps
        resolution: int = param(0, ge=0, multiple_of=8)  # px; 0 = the backbone's native size (512 for SD v1.4)
        optimizer: Literal["adam", "adamw"] = "adam"  # "adam" (paper code) or "adamw" (weight decay 0.01, torch's default)
        keywords: int = param(0, ge=0)  # use the first N erase keywords, 0 = all
        # "paper" (CompVis noxattn/xattn) or "diffusers" (2025 code): differ for esd-u; esd-x also takes "strict"
        parameters: Literal["paper", "diffusers", "strict"] = "paper"
        sample_with_trainable: bool = False  # quirk: paper code samples x_t with the model being trained
        max_steps: int = param(0, ge=0)  # cap on iterations, 0 = iterations
        seed: int = 0  # keyword and step draws
        trajectory_seed: int = 0  # starting noises
        sample_batch_size: int = param(16, ge=1)  # trajectories denoised together (speed only)

    def trainable_group(self) -> str:
        group = PARAMETER_SETS.get((self.variant, self.params.parameters))
        if group is None:
            choices = " or ".join(repr(p) for variant, p in PARAMETER_SETS if variant == self.variant)
            raise HarnessError(f"{self.name}: parameters={self.params.parameters!r}: choose {choices}")
        return group

    def keywords(self, concepts: ConceptSet) -> list[str]:
        return list(concepts.erase)[: self.params.keywords or None]

    def validate(self, concepts: ConceptSet) -> None:
        self.trainable_group()
        if not self.keywords(concepts):
            raise HarnessError(f"{self.name}: concept set {concepts.name!r} has no 'erase' keywords")

    def quirks(self) -> dict:
        return {"sample_with_trainable": self.params.sample_with_trainable, "parameters": self.params.parameters}

    def prepare(self, pipe, concepts: ConceptSet, ctx, student) -> Training:
        params = self.params
        keywords = self.keywords(concepts)
        device = pipe.unet.device
        size = latent_size(pipe, params.resolution)
        timesteps = ddim_scheduler(pipe, params.num_steps).timesteps.to(device)
        iterations = min(params.iterations, params.max_steps) if params.max_steps > 0 else params.iterations

        # The plan: iteration i's keyword, step and seed are functions of i alone, so any run is a prefix of a longer one.
        plan = []
        for i in range(iterations):
            draw = random.Random(params.seed * 1_000_003 + i)
            plan.append(
                TrajectoryRequest(
                    draw.choice(keywords), params.trajectory_seed * 1_000_003 + i, (draw.randrange(params.num_steps),)
                )
            )

        teacher = pipe.unet  # ε*: frozen, since only a copy trains
        latents = None
        if not params.sample_with_trainable:
            latents = cached_trajectories(
                ctx,
                pipe,
                lazy(lambda: original_unet(pipe, ctx)),
                plan,
                num_steps=params.num_steps,
                guidance=params.guidance,
                size=size,
                batch_size=params.sample_batch_size,
            )[:, 0]

        embeddings = text_embeddings(pipe, keywords + [""])
        null_row = embeddings[""].to(device)

        def step_losses(i: int) -> dict:
            request = plan[i]
            if latents is None:  # paper code: x_t from the model being trained
                x = sample_trajectories(
                    pipe, student, [request], num_steps=params.num_steps, guidance=params.guidance, size=size
                )[:, 0]
            else:
                x = latents[i : i + 1]
            t = timesteps[list(request.steps)]
            cond = embeddings[request.prompt].to(device)[None]
            with torch.no_grad():
                eps_null, eps_cond = predict(
                    teacher, torch.cat([x, x]), torch.cat([t, t]), torch.cat([null_row[None], cond])
                ).chunk(2)
                target = eps_null - params.negative_guidance * (eps_cond - eps_null)  # ESD, paper convention
            loss = torch.nn.functional.mse_loss(predict(student, x, t, cond), target)
            return {"loss": loss}

        metadata = {
            "negative_guidance_new_convention": params.negative_guidance + 1,
            "keywords_used": keywords,
            "latent_size": size,
        }
        # AdamW without weight decay is Adam step for step: the switch would only retrain the same weights under a
        # new key.  With torch's default decay it is the optimiser most diffusers training scripts use.
        weight_decay = ADAMW_WEIGHT_DECAY if params.optimizer == "adamw" else 0.0
        return Training(step_losses, iterations, metadata, weight_decay=weight_decay)

    def params_dict(self) -> dict:
        """The parameters, and for ``optimizer=adamw`` the decay it trains with: the model-state key is made from
        them, and an adamw state stored before the decay was applied (plain Adam then) must not be taken for one."""
        values = super().params_dict()
        if values["optimizer"] == "adamw":
            values["adamw_weight_decay"] = ADAMW_WEIGHT_DECAY
        return values


class ESDU(ESD):
    name = "esd-u"
    display_name = "ESD-u"
    variant = "esd-u"
    description = "ESD-u: negative-guidance fine-tuning of the non-cross-attention weights (paper preset)"


class ESDX(ESD):
    name = "esd-x"
    display_name = "ESD-x"
    variant = "esd-x"
    description = "ESD-x: negative-guidance fine-tuning of the cross-attention weights (paper preset)"
