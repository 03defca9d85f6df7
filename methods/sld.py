"""``sld``: Safe Latent Diffusion (Schramowski et al., CVPR 2023), written from its guidance rule.

SLD changes sampling, not weights.  Every denoising step evaluates the UNet on a
third conditioning, a fixed text ``S`` that describes what is unsafe, and bends
the classifier-free guidance away from it (official code
ml-research/safe-latent-diffusion @ a42923c ``src/sld/sld_pipeline.py`` lines 470–500 and the diffusers port
``StableDiffusionPipelineSafe``, 0.42.1, lines 680–745).  With ε_∅, ε_p, ε_S the
noise predictions for the unconditional (negative) prompt, the prompt and S, and
w the CFG scale of the prompt:

    (1)  g   = ε_p − ε_∅                                        plain CFG direction
    (2)  μ   = min(|ε_p − ε_S| · s_S, 1)                         elementwise safety scale
    (3)  μ   = 0  where  ε_p − ε_S ≥ λ                           only where the prompt is *closer* to S
    (4)  γ   = μ ⊙ (ε_S − ε_∅) + s_m · ν                         ν: momentum, 0 at the first step
    (5)  ν   ← β_m · ν + (1 − β_m) · γ                           updated at EVERY step, warm-up included
    (6)  g   ← g − γ          only for steps i ≥ warm-up
    (7)  ε̃   = ε_∅ + w · g                                       so the safety term is scaled by w too

It is on only when ``s_S = sld_guidance_scale > 1`` and the sample uses CFG
(w > 1), as in both official implementations.  Cost: 3 UNet evaluations per step
instead of 2 (``extra_branches = 1``, recorded per image in the store).

Parameters.  ``strength`` picks one of the four ``SafetyConfig`` presets
(diffusers ``pipelines/deprecated/stable_diffusion_safe/__init__.py:21–49``); the
``sld_*`` parameters override single values of the preset (names as in diffusers):

    preset   sld_warmup_steps  sld_guidance_scale  sld_threshold  sld_momentum_scale  sld_mom_beta
    weak            15                  20              0.0             0.0              0.0
    medium          10                1000              0.01            0.3              0.4     (default)
    strong           7                2000              0.025           0.5              0.7
    max              0                5000              1.0             0.5              0.7

Warm-up counts steps as the official pipeline does (its default is 50 steps; the
harness's SD protocol is 30), so MEDIUM leaves the first 10 steps unguided.

How a concept set becomes the safety concept ``S`` (``safety_concept=""``, the default):

* ``sexual`` and ``unsafe``: the original repository's fixed 20-item text
  (``SAFETY_CONCEPT`` below, ``sld_pipeline.py:70``).  SLD is published with this
  one concept for all inappropriate content, and the RECE and ESD baselines keep
  it for nudity too.
* a concept set whose ``extra["sld"]["safety_concept"]`` is given: that text.
* any other set (``van-gogh``, ``kelly-mckernan``, ``toy-red``, ...): its ``erase``
  keywords joined by ", " ("Van Gogh"; "red, crimson, scarlet, vermilion, carmine").

``safety_concept=TEXT`` uses TEXT for every concept set.  ``diffusers_prefix=true``
reproduces the diffusers port, which prefixes the concept with "an image showing "
(``pipeline_stable_diffusion_safe.py:80–83``); the original code does not, and the
two give different embeddings.  Both are parameters, so both are part of the model state's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from harness.api import ConceptSet, HarnessError, Method, MethodKind, SamplingHooks
from harness.text import encode_prompts
from harness.validate import param

# The original repository's safety concept (SLD@a42923c:src/sld/sld_pipeline.py:70).
SAFETY_CONCEPT = (
    "hate, harassment, violence, suffering, humiliation, harm, suicide, sexual, nudity, bodily fluids, blood, "
    "obscene gestures, illegal activity, drug use, theft, vandalism, weapons, child abuse, brutality, cruelty"
)
DIFFUSERS_PREFIX = "an image showing "
# Concept sets for which SLD's own fixed concept is the right input (see the module docstring).
FIXED_CONCEPT_SETS = ("sexual", "unsafe")


@dataclass(frozen=True)
class SafetyConfig:
    sld_warmup_steps: int
    sld_guidance_scale: float
    sld_threshold: float
    sld_momentum_scale: float
    sld_mom_beta: float


PRESETS = {
    "weak": SafetyConfig(15, 20.0, 0.0, 0.0, 0.0),
    "medium": SafetyConfig(10, 1000.0, 0.01, 0.3, 0.4),
    "strong": SafetyConfig(7, 2000.0, 0.025, 0.5, 0.7),
    "max": SafetyConfig(0, 5000.0, 1.0, 0.5, 0.7),
}


class SLD(Method):
    name = "sld"
    display_name = "SLD"
    description = "Safe Latent Diffusion: a third UNet branch on a safety concept steers CFG away from it (inference-time)"
    paper = "Schramowski et al., Safe Latent Diffusion: Mitigating Inappropriate Degeneration in Diffusion Models, CVPR 2023"
    kind = MethodKind.INFERENCE
    concept_params = ("safety_concept",)  # given, it replaces the concept set's concepts
    version = "1"
    # official: the original repository (SLD @ a42923c, sld_pipeline.py), MEDIUM; "diffusers": the diffusers port, whose
    # safety concept is prefixed with "an image showing ".
    presets = {"official": {"strength": "medium", "diffusers_prefix": False}, "diffusers": {"strength": "medium", "diffusers_prefix": True}}

    @dataclass
    class Params:
        strength: Literal["weak", "medium", "strong", "max"] = "medium"  # SafetyConfig preset (diffusers default: medium)
        sld_warmup_steps: int | None = param(None, ge=0)  # None: the preset's value
        sld_guidance_scale: float | None = param(None, ge=0)  # s_S; ≤ 1 turns SLD off (plain CFG)
        sld_threshold: float | None = None  # λ
        sld_momentum_scale: float | None = param(None, ge=0)  # s_m
        sld_mom_beta: float | None = param(None, ge=0, le=1)  # β_m
        safety_concept: str = ""  # "" = from the concept set (module docstring)
        diffusers_prefix: bool = False  # prefix "an image showing " as the diffusers port does

        def __post_init__(self):
            if self.strength not in PRESETS:
                raise ValueError(f"strength must be one of {sorted(PRESETS)}; got {self.strength!r}")

    def config(self) -> SafetyConfig:
        """The preset with any ``sld_*`` parameter the user set."""
        preset = PRESETS[self.params.strength]
        values = {
            field: getattr(self.params, field) if getattr(self.params, field) is not None else getattr(preset, field)
            for field in SafetyConfig.__dataclass_fields__
        }
        return SafetyConfig(**values)

    def sampling_hooks(self, pipe, concepts: ConceptSet, ctx) -> SamplingHooks:
        config = self.config()
        text = safety_concept_text(concepts, self.params)
        if config.sld_guidance_scale <= 1:
            # Off, as in the official pipelines: the engine's own CFG runs, so images are bit-identical to plain sampling.
            return SamplingHooks()
        safety_embedding = encode_prompts(pipe, [text], dtype=None).embeddings  # as the engine encodes prompts
        return SafeGuidance(config, safety_embedding)


def safety_concept_text(concepts: ConceptSet, params: SLD.Params) -> str:
    """The text S whose branch SLD steers away from (module docstring)."""
    if params.safety_concept:
        text = params.safety_concept
    elif "safety_concept" in concepts.extra.get("sld", {}):
        text = str(concepts.extra["sld"]["safety_concept"])
    elif concepts.name in FIXED_CONCEPT_SETS:
        text = SAFETY_CONCEPT
    elif concepts.erase:
        text = ", ".join(concepts.erase)
    else:
        raise HarnessError(f"sld: concept set {concepts.name!r} names nothing to erase; pass sld:safety_concept=TEXT")
    return DIFFUSERS_PREFIX + text if params.diffusers_prefix else text


class SafeGuidance(SamplingHooks):
    """The per-step guidance rule (1)–(7).  Momentum ν lives for one batch and restarts at step 0."""

    extra_branches = 1  # the safety-concept branch: 3 UNet evaluations per step instead of 2

    def __init__(self, config: SafetyConfig, safety_embedding: torch.Tensor):
        self.config = config
        self.safety_embedding = safety_embedding
        self.momentum = None

    def guide(self, step_index, timestep, latent_input, unet_call, cond, uncond, guidance):
        config = self.config
        if step_index == 0:
            self.momentum = None  # a new batch: ν starts at 0
        batch = latent_input.shape[0]
        safety = self.safety_embedding.to(cond.device, cond.dtype).expand(batch, -1, -1)
        noise = unet_call(torch.cat([latent_input] * 3), timestep, torch.cat([uncond, cond, safety]))
        # the rule in float32 whatever the UNet's dtype (the engine's own guidance is float32 too): in bfloat16 the
        # clamp, threshold and momentum moved the safety term by 0.3% (medium) to 1.7% (strong)
        noise_uncond, noise_prompt, noise_safety = noise.float().chunk(3)
        direction = noise_prompt - noise_uncond  # (1)
        scale = torch.clamp((noise_prompt - noise_safety).abs() * config.sld_guidance_scale, max=1.0)  # (2)
        scale = torch.where(noise_prompt - noise_safety >= config.sld_threshold, torch.zeros_like(scale), scale)  # (3)
        safety_guidance = scale * (noise_safety - noise_uncond)  # (4)
        if self.momentum is None:
            self.momentum = torch.zeros_like(safety_guidance)
        safety_guidance = safety_guidance + config.sld_momentum_scale * self.momentum
        self.momentum = config.sld_mom_beta * self.momentum + (1 - config.sld_mom_beta) * safety_guidance  # (5)
        if step_index >= config.sld_warmup_steps:
            # (6), only for samples that use CFG at all (w > 1), as in the official pipelines
            uses_cfg = (guidance > 1).to(direction.dtype)
            direction = direction - uses_cfg * safety_guidance
        return noise_uncond + guidance * direction  # (7)
