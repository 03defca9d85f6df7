"""``spm``: SPM, the concept Semi-Permeable Membrane (Lyu et al., "One-dimensional Adapter to Rule Them All: Concepts,
Diffusion Models and Erasing Applications", CVPR 2024; arXiv 2312.16145).

Official code: Con6924/SPM @ 3dd762e (``src/models/spm.py``, ``train_spm.py``, ``src/configs/prompt.py``,
``src/engine/sampling.py``, ``src/engine/train_util.py``, ``infer_spm.py``).  The paper's equation numbers could
not be checked offline here, so each equation is named ((SPM), (L_erase), (LA), (FT)) after the paper's three parts
(the membrane, Latent Anchoring, Facilitated Transport) and tied to the official file it comes from.

1. **The membrane** (``src/models/spm.py``).  Every ``Linear`` and ``Conv2d`` inside each ``Transformer2DModel`` of the
   UNet (``proj_in``/``proj_out``, ``attn1``/``attn2`` ``to_q``/``to_k``/``to_v``/``to_out``, the feed-forward
   ``ff``) gets a one-dimensional (rank r = 1) adapter beside it:

       y = W x + m · (α / r) · U D x                                                              (SPM)

   with D (r × in; for a convolution, r filters of W's kernel, stride and padding) kaiming-uniform and U (out × r;
   a 1 × 1 convolution) zero at the start, so the adapter starts as the identity.  α = 1.  ``m`` is the membrane's
   multiplier: 1 while training, γ at generation.  The base weights W never change: the model state is the adapter
   (``ctx.state_tensors``, stored in the state's delta file), and it is applied at sampling time.

2. **Training** (``train_spm.py``, ``PromptEmbedsPair._erase_with_la``).  Each iteration picks one concept c (one
   ``PromptSettings`` per concept word; target = positive = c, neutral = unconditional = ""), draws k ~ U{1, …, 29},
   runs k steps of a 30-step DDIM from fresh noise with guidance 3 **with the membrane on** (m = 1) to get x, and
   takes t = the k·1000/30-th of the scheduler's 1000 timesteps.  Then, with ε_θ the frozen model (m = 0):

       L_erase = ‖ε_{θ+SPM}(x, t, c) − (ε_θ(x, t, "") − g (ε_θ(x, t, c) − ε_θ(x, t, "")))‖² (mean)           (L_erase)
       L_LA    = ‖ε_{θ+SPM}(x, t, a_j) − ε_θ(x, t, a_j)‖² (mean over j = 1..4)                              (LA)
       L       = L_erase + λ_LA · L_LA,       g = 1, λ_LA = 1000

   The anchors a_j are random text embeddings far from the concept (``src/engine/sampling.py``): n ~ N(0, I) of the
   concept embedding's shape, n/‖n‖, accepted with probability 1 − cos(n, E(c)), scaled by ‖E(c)‖ · U[0.8, 1.2].
   Defaults (``configs/snoopy/config.yaml``): 3000 iterations, lr 1e-4, cosine with hard restarts (3 cycles) after
   500 warm-up steps, float32.  The code uses bitsandbytes' ``AdamW8bit`` (weight decay 0.01); plain float32
   ``AdamW`` with the same betas and weight decay is used here (no 8-bit optimiser state).  The code's
   ``dynamic_resolution`` (random sizes in a bucket around 512) is not reproduced: latents are the backbone's native size.
   Both DDIM schedules (30 steps for x, 1000 for t) come from the backbone's scheduler config, whose
   ``steps_offset=1`` (SD v1.4) puts every timestep one later than the code's: ``create_noise_scheduler`` in
   ``src/models/model_util.py`` builds a ``DDIMScheduler`` with the default ``steps_offset=0``, so x is sampled at
   957, 924, … and k = 1 queries t = 966 there, 958, 925, … and t = 967 here.  One step in 1000 is negligible next to
   the code's own offset of t from x's noise level (x at 924, t = 966), which is reproduced, so it is documented
   rather than switched: a new parameter would change the key of every stored SPM state and retrain them all.  (The
   code's ``set_alpha_to_one=True`` would matter only for a step below t = 0, which training never takes: k ≤ 29.)

3. **Facilitated transport** (``infer_spm.py``, ``calculate_matching_score``).  At generation the multiplier depends on
   the prompt p:

       γ(p) = max_c max( cos(flat E(p), flat E(c)),  |T(p) ∩ T(c)| / |T(c)| )                                 (FT)

   with E the text encoder's output (all L × d rows, flattened) and T the set of token ids without special tokens.
   The engine samples a batch of prompts at once, so each sample gets its own γ: the UNet batch rows of every branch
   (uncond and cond alike, as the official code's global multiplier) use their sample's γ.  E(p) is the embedding
   the hook receives: the prompt's own, unless a method composed before ``spm`` transformed it (``safree+spm``).

Where the official code differs from the paper, the default follows the paper and a named switch gives the code:

* ``gamma_squared`` (default False): ``infer_spm.py`` multiplies every tensor of the adapter's state dict by γ, i.e.
  *both* U and D, so the delta it applies is γ² · U D (and summing several SPMs key-wise adds cross terms; with one
  membrane per concept set here there are none).  The paper scales the membrane by γ.
* ``official_anchor_rows`` (default False): ``train_spm.py`` feeds the 4 anchors as [∅, a_1, ∅, a_2, ∅, a_3, ∅, a_4]
  to ``predict_noise``, which doubles the latents and takes the second half as the "conditional" prediction, so
  the anchoring loss sees [∅, a_3, ∅, a_4]: two anchors plus the empty prompt twice.  Default: all four anchors.
* ``sample_with_adapter`` (default True, the code): x is sampled by the model being trained (the membrane on), as
  the old ESD code did.  The paper does not say which model samples x, and SPM's authors published no other code, so
  the code's choice is the default.  ESD differs because its authors' 2025 code samples with the frozen base model,
  which ESD's default follows; there the old code's choice is the quirk (``sample_with_trainable``).  ``false`` samples
  x with the frozen model.
* ``facilitated_transport=false`` applies the membrane at m = 1 to every prompt (the code's fixed
  ``--spm_multiplier 1``, and what a LoRA loader such as the webui does).

``facilitated_transport`` and ``gamma_squared`` act only at sampling time.  They stay in the model-state key, because
the engine keys a state's images by that key and the ablation's images must be its own; but the trained membrane is
also cached under its training inputs alone (the other parameters, the concept words, the UNet and text encoder it
was trained with, dtype and device), so ``spm:facilitated_transport=false`` or ``spm:gamma_squared=true`` reuses the
default's membrane instead of training it again (3000 iterations).

``preset=official`` turns on ``gamma_squared`` and ``official_anchor_rows``.  No nudity configuration was released
(weights only); the concept words come from the concept set's ``erase`` keywords (``sexual`` → "nudity") or
``spm:concepts=a|b``.  White-box attacks evaluate the UNet directly and do not see the membrane (like the sampling-time
methods' hooks); ``harness erase --save`` refuses ``spm`` (a prompt-dependent adapter is not a checkpoint).
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from harness.api import ConceptSet, HarnessError, Method, SamplingHooks
from harness.text import rows_computed_in
from harness.validate import param
from methods.finetune import ddim_scheduler, latent_size, make_optimizer, module_fingerprint, predict, train
from methods.text import encode_prompts

ADAPTED_BLOCK = "Transformer2DModel"  # SPMNetwork.UNET_TARGET_REPLACE_MODULE_TRANSFORMER
SAMPLING_ONLY = ("facilitated_transport", "gamma_squared")  # read only by FacilitatedTransport, never by training
MEMBRANE_CACHE = "spm-membranes"
HISTORY = "training_history.json"  # the loss summary, as UTF-8 bytes beside the adapter in the cached file


class SPM(Method):
    name = "spm"
    display_name = "SPM"
    description = "SPM (CVPR 2024): rank-1 membrane on every transformer Linear/Conv, latent anchoring, prompt-dependent strength"
    paper = "Lyu et al., One-dimensional Adapter to Rule Them All: Concepts, Diffusion Models and Erasing Applications, CVPR 2024"
    concept_params = ("concepts",)  # given, it replaces the concept set's concepts
    version = "1"
    # Con6924/SPM @ 3dd762e as it runs: γ on both factors (γ²·ΔW), anchors as the code's batch layout sees them.
    presets = {"official": {"gamma_squared": True, "official_anchor_rows": True}}

    @dataclass
    class Params:
        concepts: tuple[str, ...] = ()  # concept words (one training prompt each); () = the concept set's erase keywords
        iterations: int = param(3000, ge=0)  # optimiser steps
        lr: float = param(1e-4, gt=0)  # AdamW learning rate, on the cosine-with-restarts schedule
        warmup: int = param(500, ge=0)  # linear warm-up steps of the cosine-with-restarts schedule
        cycles: int = param(3, ge=1)  # hard restarts
        weight_decay: float = param(0.01, ge=0)  # AdamW (AdamW8bit's default in the code)
        rank: int = param(1, ge=1)  # of each membrane layer (the paper's one-dimensional adapter: 1)
        alpha: float = param(1.0, gt=0)  # the adapter's output is scaled by α / rank
        num_steps: int = param(30, ge=2)  # max_denoising_steps: the DDIM that samples x
        sampling_guidance: float = param(3.0, ge=0)  # CFG while sampling x (train_spm.py: 3)
        erase_guidance: float = param(1.0, ge=0)  # g in L_erase (PromptSettings.guidance_scale)
        anchors: int = param(4, ge=0)  # sampling_batch_size
        anchor_strength: float = param(1000.0, ge=0)  # λ_LA (la_strength)
        facilitated_transport: bool = True  # γ from the prompt (FT); false = m = 1 for every prompt
        gamma_squared: bool = False  # quirk: the official code scales both factors by γ (γ²·ΔW)
        official_anchor_rows: bool = False  # quirk: the code's anchor batch layout ([∅, a_3, ∅, a_4])
        sample_with_adapter: bool = True  # x sampled with the membrane on (the code)
        seed: int = param(0, ge=0)  # membrane initialisation, concept and step draws

    def concept_words(self, concepts: ConceptSet) -> list[str]:
        words = [w for w in (self.params.concepts or concepts.erase) if w.strip()]
        if not words:
            raise HarnessError(f"spm: concept set {concepts.name!r} names nothing to erase; pass spm:concepts=a|b")
        return words

    def edit(self, pipe, concepts: ConceptSet, ctx) -> dict:
        params = self.params
        words = self.concept_words(concepts)
        if params.official_anchor_rows and params.anchors % 2:
            raise HarnessError(f"spm: official_anchor_rows needs an even number of anchors (got anchors={params.anchors})")
        started = time.perf_counter()
        trained_here = []

        def compute() -> dict:
            # Train on a float32 copy of the current UNet (a composition's earlier edits included); its weights stay frozen.
            unet = copy.deepcopy(pipe.unet).requires_grad_(False).eval()
            if unet.dtype != torch.float32:
                unet = unet.to(torch.float32)
            membrane = Membrane.create(unet, rank=params.rank, alpha=params.alpha, seed=params.seed)
            history = train_membrane(pipe, unet, membrane, words, params, progress=ctx.progress)
            trained_here.append(True)
            encoded = torch.tensor(list(json.dumps(history).encode()), dtype=torch.uint8)
            return {**membrane.state_tensors(), HISTORY: encoded}

        # The sampling-only switches are in the state key but not here: an ablation of them reuses this membrane.
        cached = ctx.cached_tensors(MEMBRANE_CACHE, self.membrane_key(pipe, words, ctx), compute)
        history = json.loads(bytes(cached[HISTORY].cpu().tolist()).decode())
        adapter = {name: tensor.detach().float().cpu() for name, tensor in cached.items() if name != HISTORY}
        ctx.state_tensors.update(adapter)
        return {
            "method": "spm",
            **asdict(params),
            "concepts": words,
            "adapted_modules": sum(name.endswith(".down") for name in adapter),
            "adapter_parameters": sum(tensor.numel() for tensor in adapter.values()),
            "training": history,
            "membrane": "trained" if trained_here else "reused: trained earlier with the same training inputs",
            "optimizer": "AdamW (float32; the official code uses bitsandbytes AdamW8bit)",
            "quirks": {name: getattr(params, name) for name in ("gamma_squared", "official_anchor_rows", "sample_with_adapter")},
            "seconds": round(time.perf_counter() - started, 2),
        }

    def membrane_key(self, pipe, words: list[str], ctx) -> dict:
        """Everything the trained membrane depends on (``ctx.cached_tensors`` adds the backbone fingerprint).

        The UNet and text encoder are fingerprinted as they are now: a composition's earlier part may have changed
        them, and ``train_membrane`` trains on the UNet and encodes the concepts with the text encoder.
        """
        return {
            "version": self.version,
            "params": {name: value for name, value in asdict(self.params).items() if name not in SAMPLING_ONLY},
            "concepts": words,
            "unet": module_fingerprint(pipe.unet),
            "text_encoder": module_fingerprint(pipe.text_encoder),
            "scheduler": {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")},
            # Training in another dtype or on another device gives a (slightly) different membrane.
            "dtype": str(pipe.unet.dtype),
            "device": pipe.unet.device.type,
            **rows_computed_in(pipe),
        }

    def sampling_hooks(self, pipe, concepts: ConceptSet, ctx) -> SamplingHooks:
        if not ctx.state_tensors:
            raise HarnessError("spm: the model state holds no adapter (was it stored by an older harness?); delete its delta to retrain")
        words = self.concept_words(concepts)
        membrane = Membrane.from_state_tensors(pipe.unet, ctx.state_tensors, alpha=self.params.alpha)
        return FacilitatedTransport(pipe, membrane, words, self.params)


# --------------------------------------------------------------------------- the membrane (SPM)


def adapted_modules(unet) -> list[tuple[str, torch.nn.Module]]:
    """Every Linear/Conv2d inside each Transformer2DModel, by its UNet name (``SPMNetwork.create_modules``)."""
    found = {}
    for block_name, block in unet.named_modules():
        if type(block).__name__ != ADAPTED_BLOCK:
            continue
        for child_name, child in block.named_modules():
            if isinstance(child, (torch.nn.Linear, torch.nn.Conv2d)):
                found[f"{block_name}.{child_name}"] = child
    if not found:
        raise HarnessError(f"spm: this UNet has no {ADAPTED_BLOCK} with Linear/Conv2d layers to adapt")
    return list(found.items())


class MembraneLayer(torch.nn.Module):
    """U D of one layer: ``down`` (r × in, or r conv filters of the layer's kernel) and ``up`` (out × r), float32."""

    def __init__(self, module: torch.nn.Module, rank: int, generator: torch.Generator | None = None):
        super().__init__()
        self.conv = isinstance(module, torch.nn.Conv2d)
        if self.conv:
            self.stride, self.padding, self.dilation = module.stride, module.padding, module.dilation
            rank = min(rank, module.in_channels, module.out_channels)  # as the official SPMLayer
            down = torch.empty(rank, module.in_channels, *module.kernel_size)
            up = torch.zeros(module.out_channels, rank, 1, 1)
        else:
            down = torch.empty(rank, module.in_features)
            up = torch.zeros(module.out_features, rank)
        # kaiming_uniform_(a=√5), as nn.Linear's default and the official init: U(−b, b), b = 1/√fan_in
        bound = 1 / math.sqrt(down[0].numel())
        down.uniform_(-bound, bound, generator=generator)
        self.down = torch.nn.Parameter(down)
        self.up = torch.nn.Parameter(up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """U D x for the layer's input x."""
        if self.conv:
            return F.conv2d(F.conv2d(x, self.down.to(x.dtype), stride=self.stride, padding=self.padding, dilation=self.dilation),
                            self.up.to(x.dtype))
        return F.linear(F.linear(x, self.down.to(x.dtype)), self.up.to(x.dtype))

    def delta_weight(self) -> torch.Tensor:
        """ΔW = U D as a weight of the layer's shape (a convolution's 1 × 1 ``up`` composed with ``down``)."""
        if self.conv:
            return torch.einsum("or,rikl->oikl", self.up[:, :, 0, 0], self.down)
        return self.up @ self.down


class Membrane(torch.nn.Module):
    """The adapters of one SPM, with forward hooks that add ``m · (α/r) · U D x`` to each adapted layer (SPM).

    ``multiplier`` is a number, or a tensor of one value per sample of the prompt batch: UNet batch row i uses
    ``multiplier[i % len(multiplier)]``, so every branch of a guidance rule ([uncond; cond], SLD's three) gets its
    sample's value.
    """

    def __init__(self, names: list[str], layers: list[MembraneLayer], modules: list[torch.nn.Module], alpha: float):
        super().__init__()
        self.names = names
        self.layers = torch.nn.ModuleList(layers)
        self.modules_ = modules
        self.alpha = alpha
        self.multiplier: float | torch.Tensor = 1.0
        self.handles: list = []

    @classmethod
    def create(cls, unet, *, rank: int, alpha: float, seed: int) -> Membrane:
        generator = torch.Generator().manual_seed(seed)
        names, modules = zip(*adapted_modules(unet))
        device = next(unet.parameters()).device
        layers = [MembraneLayer(module, rank, generator).to(device) for module in modules]
        return cls(list(names), layers, list(modules), alpha)

    @classmethod
    def from_state_tensors(cls, unet, tensors: dict, *, alpha: float) -> Membrane:
        names, modules = zip(*adapted_modules(unet))
        device = next(unet.parameters()).device
        layers = []
        for name, module in zip(names, modules):
            if f"{name}.down" not in tensors or f"{name}.up" not in tensors:
                raise HarnessError(f"spm: the stored adapter has no layer {name!r}; it was trained on another UNet")
            layer = MembraneLayer(module, rank=1)
            layer.down = torch.nn.Parameter(tensors[f"{name}.down"].float().to(device), requires_grad=False)
            layer.up = torch.nn.Parameter(tensors[f"{name}.up"].float().to(device), requires_grad=False)
            layers.append(layer)
        return cls(list(names), layers, list(modules), alpha)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for name, layer in zip(self.names, self.layers):
            tensors[f"{name}.down"] = layer.down.detach().float().cpu().clone()
            tensors[f"{name}.up"] = layer.up.detach().float().cpu().clone()
        return tensors

    def scale(self, layer: MembraneLayer) -> float:
        return self.alpha / layer.down.shape[0]  # α / r

    def install(self) -> None:
        self.remove()
        for layer, module in zip(self.layers, self.modules_):
            self.handles.append(module.register_forward_hook(self._hook(layer)))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self):
        self.install()
        return self

    def __exit__(self, *exc):
        self.remove()

    def _hook(self, layer: MembraneLayer):
        scale = self.scale(layer)

        def hook(module, args, output):
            multiplier = self.multiplier
            if isinstance(multiplier, torch.Tensor):
                rows = output.shape[0]
                if rows % len(multiplier):
                    raise RuntimeError(f"spm: a UNet batch of {rows} rows is not whole branches of {len(multiplier)} samples")
                # γ stays float32 (in bfloat16 it was rounded by up to 0.2%); the sum is cast once, at the end
                multiplier = multiplier.to(output.device, torch.float32).repeat(rows // len(multiplier))
                multiplier = multiplier.view(-1, *([1] * (output.dim() - 1)))
            elif multiplier == 0:
                return output
            return (output.float() + (multiplier * scale) * layer(args[0]).float()).to(output.dtype)

        return hook


# --------------------------------------------------------------------------- training (L_erase, LA)


def sample_anchors(target: torch.Tensor, count: int, generator: torch.Generator, rng: random.Random) -> torch.Tensor:
    """``count`` random embeddings far from ``target`` (L × d), each of norm ‖target‖ · U[0.8, 1.2] (LA).

    ``src/engine/sampling.py``: a unit Gaussian direction is accepted with probability 1 − cos(direction, target).
    """
    flat = target.reshape(-1).float()
    anchors = []
    while len(anchors) < count:
        direction = torch.randn(flat.shape, generator=generator, dtype=torch.float32, device="cpu").to(flat.device)
        direction = direction / direction.norm()
        if rng.random() >= 1 - float(F.cosine_similarity(flat, direction, dim=0)):
            continue
        anchors.append((rng.random() * 0.4 + 0.8) * flat.norm() * direction)
    return torch.stack(anchors).view(count, *target.shape) if anchors else target.new_zeros((0, *target.shape))


def anchor_rows(anchors: torch.Tensor, null: torch.Tensor, official: bool) -> torch.Tensor:
    """The anchor embeddings the loss sees: all of them, or the code's layout ([∅, a_{n/2+1}, ∅, …, a_n] of n)."""
    if not official:
        return anchors
    interleaved = torch.stack([null.expand_as(anchors), anchors], dim=1).flatten(0, 1)  # ∅, a_1, ∅, a_2, …
    return interleaved[len(anchors) :]  # predict_noise's second half of the doubled batch


def cosine_with_restarts(step: int, *, warmup: int, total: int, cycles: int) -> float:
    """The lr factor of ``get_cosine_with_hard_restarts_schedule_with_warmup`` (transformers/diffusers) at ``step``."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    if progress >= 1.0:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0)))


def train_membrane(pipe, unet, membrane: Membrane, words: list[str], params: SPM.Params, progress=None) -> dict:
    """Train ``membrane`` on ``unet`` (float32, frozen) with L_erase + λ_LA · L_LA; returns the loss summary."""
    device = next(unet.parameters()).device
    generator = torch.Generator().manual_seed(params.seed)
    rng = random.Random(params.seed)
    encoded = encode_prompts(pipe, [*words, ""])
    embeddings = encoded.embeddings.to(device, torch.float32)
    targets, null = embeddings[:-1], embeddings[-1]
    size = latent_size(pipe, 0)
    channels = unet.config.in_channels
    sampler = ddim_scheduler(pipe, params.num_steps)
    timesteps_1000 = ddim_scheduler(pipe, 1000).timesteps
    optimizer = make_optimizer(membrane.parameters(), "adamw", params.lr, params.weight_decay)

    def step_losses(step: int) -> dict[str, torch.Tensor]:
        for group in optimizer.param_groups:  # the schedule's factor for this step (LambdaLR's order: step 0 first)
            group["lr"] = params.lr * cosine_with_restarts(step, warmup=params.warmup, total=params.iterations, cycles=params.cycles)
        concept = int(torch.randint(len(words), (1,), generator=generator))
        target = targets[concept : concept + 1]
        stop = int(torch.randint(1, params.num_steps, (1,), generator=generator))
        latents = torch.randn((1, channels, size, size), generator=generator).to(device) * sampler.init_noise_sigma
        with torch.no_grad():
            membrane.multiplier = 1.0 if params.sample_with_adapter else 0.0
            with membrane:  # x: `stop` DDIM steps with guidance, the membrane on (train_util.diffusion)
                for t in sampler.timesteps[:stop]:
                    model_input = sampler.scale_model_input(latents, t)
                    both = predict(unet, torch.cat([model_input, model_input]), t, torch.cat([null[None], target]))
                    eps_uncond, eps_cond = both.chunk(2)
                    latents = sampler.step(eps_uncond + params.sampling_guidance * (eps_cond - eps_uncond), t, latents).prev_sample
            t = timesteps_1000[int(stop * 1000 / params.num_steps)]
            eps_pos = predict(unet, latents, t, target)  # frozen model: no hooks installed
            eps_neu = predict(unet, latents, t, null[None])
        membrane.multiplier = 1.0
        with membrane:
            eps_tgt = predict(unet, latents, t, target)
        erase = F.mse_loss(eps_tgt, eps_neu - params.erase_guidance * (eps_pos - eps_neu))
        losses = {"loss": erase, "erase": erase}
        if params.anchors and params.anchor_strength:
            anchors = anchor_rows(sample_anchors(target[0], params.anchors, generator, rng), null, params.official_anchor_rows)
            repeated = latents.expand(len(anchors), -1, -1, -1)
            with torch.no_grad():
                eps_anchor_original = predict(unet, repeated, t, anchors)
            with membrane:
                eps_anchor = predict(unet, repeated, t, anchors)
            anchoring = F.mse_loss(eps_anchor, eps_anchor_original)
            losses = {"loss": erase + params.anchor_strength * anchoring, "erase": erase, "anchoring": anchoring}
        return losses

    return train(step_losses, optimizer, params.iterations, progress=progress, desc="spm")


# --------------------------------------------------------------------------- facilitated transport (FT)


def token_sets(tokenizer, prompts: list[str]) -> list[set[int]]:
    """T(p): each prompt's token ids (padded and truncated as the encoder sees it) without the special tokens."""
    special = set(tokenizer.all_special_ids)
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids
    return [set(row) - special for row in ids]


def transport_gamma(prompt_embeddings: torch.Tensor, prompt_tokens: list[set[int]], concept_embeddings: torch.Tensor,
                    concept_tokens: list[set[int]]) -> torch.Tensor:
    """γ per prompt (FT): the largest over concepts of max(flattened-embedding cosine, share of the concept's tokens present)."""
    cosine = F.cosine_similarity(prompt_embeddings.flatten(1).float()[:, None], concept_embeddings.flatten(1).float()[None], dim=-1)
    share = torch.tensor([[len(p & c) / len(c) if c else 0.0 for c in concept_tokens] for p in prompt_tokens],
                         dtype=torch.float32, device=cosine.device)
    return torch.maximum(cosine, share).amax(dim=1)


class FacilitatedTransport(SamplingHooks):
    """Installs the membrane with each sample's multiplier γ(p) (or γ², or 1), computed from its prompt."""

    def __init__(self, pipe, membrane: Membrane, words: list[str], params: SPM.Params):
        self.membrane = membrane
        self.tokenizer = pipe.tokenizer
        self.params = params
        self.concept_embeddings = encode_prompts(pipe, words).embeddings
        self.concept_tokens = token_sets(pipe.tokenizer, words)
        self.gamma: torch.Tensor | None = None  # of the batch being sampled

    def transform_embeddings(self, cond, uncond, specs):
        if self.params.facilitated_transport:
            gamma = transport_gamma(cond, token_sets(self.tokenizer, [s.prompt for s in specs]),
                                    self.concept_embeddings.to(cond.device), self.concept_tokens)
        else:
            gamma = torch.ones(len(specs), device=cond.device)
        self.gamma = gamma
        return cond, uncond

    def multipliers(self) -> torch.Tensor:
        """The membrane's m per sample: γ (paper) or γ² (``gamma_squared``, the official code)."""
        return self.gamma**2 if self.params.gamma_squared else self.gamma

    def install(self, pipe):
        self.membrane.multiplier = self.multipliers()
        self.membrane.install()

    def uninstall(self, pipe):
        self.membrane.remove()
