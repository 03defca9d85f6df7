"""Shared machinery of the fine-tuning methods (ESD-u / ESD-x, TRCE-V, SafeGen).

They need the same three things, built once here:

1. **Which parameters train.**  Parameter groups are chosen by module *name*, so the
   same selector works on SD v1.4, the toy and the tiny UNets (all diffusers
   ``UNet2DConditionModel``).  ``attn1`` is self-attention, ``attn2`` cross-attention.

2. **Trajectories sampled with a frozen reference UNet.**  Deterministic DDIM (η = 0)
   with classifier-free guidance, ``ε = ε_∅ + w (ε_c − ε_∅)`` (TRCE Eq. 3).  A request
   names a prompt, a seed and the DDIM step indices ``k`` whose latent to keep:
   step ``k`` keeps ``x_{t_k}``, the latent the sampler feeds into step ``k`` (so it
   sits exactly at timestep ``t_k``); ``k = num_steps`` keeps the final latent.
   Each sample's starting noise comes from its own CPU generator seeded with its
   seed, so a latent never depends on its batch-mates, on the device, or on the
   order of the requests.  Requests are batched, and a batch stops as soon as its
   last requested step is recorded (batches are formed by sorting on that step).
   Only the requested latents are kept, and they are stored as safetensors through
   ``ctx.cached_tensors`` in chunks of ``CACHE_CHUNK`` requests, keyed by the
   backbone fingerprint, the text encoder's current weights, the prompts, seeds, steps
   and the sampler settings.  A longer
   run therefore reuses every chunk a shorter one sampled, and ablations that change
   only training settings sample nothing.

3. **A small training loop** over selected parameters of a float32 copy of the UNet,
   with a tqdm bar showing the running mean of every loss term.  The pipeline's UNet
   is not touched while training (so it can serve as a frozen model), and only the
   trained tensors are written back; every other tensor stays bit for bit.

4. **The template** (``FineTuneMethod``): trainable copy → (the method's) cached
   trajectories and step-loss closure → train → write back → the same metadata keys.
   A method supplies only its parameter group (``trainable_group``) and its loss
   (``prepare``), so each still reads top to bottom against its paper.  Optional, per
   method: gradient accumulation, gradient-norm clipping and a moving average of the
   weights that replaces them at the end (``Training``; SafeGen uses all three).

Precision: training is always float32, and the trained float32 values are handed to
the engine (``ctx.exact_weights``), which stores the model state's delta in float32.
A pipeline loaded in half precision rounds them when they are applied: an update
smaller than half a unit in the last place of its weight is lost (at TRCE-V's lr 1e-6
most are).  ``written_back`` in the metadata records the pipeline's dtype and
``surviving_share``, the share of changed elements that survive that cast; the
leaderboard's provenance column shows it when it is below 1.

Training is not resumable: at the paper settings it takes minutes on one GPU
(TRCE-V: 300 steps; ESD: 1000), and the expensive part, trajectory sampling, is
cached chunk by chunk, so a killed run loses at most the training itself.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from harness.api import HarnessError, Method
from harness.text import rows_computed_in

TRAJECTORY_CACHE = "trajectories"  # ctx.cache_hits / cache_misses count under this name
LOST_UPDATES_WARNING = 0.5  # warn when fewer trained changes than this survive the cast to a half-precision UNet
CACHE_CHUNK = 100  # requests per cached file; fixed, so that chunks are shared between runs of different length

# --------------------------------------------------------------------------- parameter groups


def _dotted(name: str) -> str:
    return f".{name}."


def _is_cross_attention(name: str) -> bool:
    return ".attn2." in _dotted(name)


def _cross_attention_key_value(name: str) -> bool:
    """ESD-x-strict: the cross-attention key and value projections only (rohitgandikota/erasing @ 25613d2 ``esd_sd.py``)."""
    dotted = _dotted(name)
    return ".attn2.to_k." in dotted or ".attn2.to_v." in dotted


def _trce_visual_layers(name: str) -> bool:
    """TRCE §4.2 / A.3: self-attention layers and the query matrices of cross-attention."""
    dotted = _dotted(name)
    return ".attn1." in dotted or ".attn2.to_q." in dotted


def _self_attention(name: str) -> bool:
    """SafeGen: every parameter whose name contains ``attn1`` (LetterLiGo/SafeGen_CCS2024 @ 20f627b)."""
    return ".attn1." in _dotted(name)


def _esd_u_paper(name: str) -> bool:
    """ESD-u as in the paper code (CompVis ``noxattn``, rohitgandikota/erasing @ a2189e9 ``train-scripts/train-esd.py``).

    Everything except cross-attention, the time embedding (``time_embed`` →
    diffusers ``time_embedding``) and the output layers (``out.`` = final GroupNorm +
    conv → ``conv_norm_out``, ``conv_out``).  The resnets' ``time_emb_proj`` (CompVis
    ``emb_layers``) *are* trained, and so are ``conv_in`` and every norm.
    """
    excluded_prefixes = ("time_embedding.", "conv_norm_out.", "conv_out.")
    return not _is_cross_attention(name) and not name.startswith(excluded_prefixes)


PARAMETER_GROUPS = {
    "self-attention+query": "TRCE-V: every attn1 parameter and attn2.to_q (§4.2 'visual layers')",
    "self-attention": "SafeGen: every attn1 parameter (to_q, to_k, to_v, to_out)",
    "cross-attention": "ESD-x: every attn2 parameter (to_q, to_k, to_v, to_out), as CompVis 'xattn' and diffusers 'esd-x'",
    "cross-attention-key-value": "ESD-x, 2025 diffusers code's 'esd-x-strict': attn2.to_k and attn2.to_v only",
    "non-cross-attention": "ESD-u, paper code ('noxattn'): all but attn2, time_embedding, conv_norm_out, conv_out",
    "non-cross-attention-diffusers": "ESD-u, 2025 diffusers code ('esd-u'): weights and biases of every Linear/Conv2d outside attn2 (no norms)",
}


def parameter_group(unet, group: str) -> list[str]:
    """The names of ``unet``'s parameters in ``group`` (see ``PARAMETER_GROUPS``), in ``named_parameters`` order."""
    if group not in PARAMETER_GROUPS:
        raise HarnessError(f"unknown parameter group {group!r}; choose from {', '.join(PARAMETER_GROUPS)}")
    if group == "non-cross-attention-diffusers":
        selected = set()
        for module_name, module in unet.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and not _is_cross_attention(module_name):
                selected.update(f"{module_name}.{name}" for name, _ in module.named_parameters(recurse=False))
        names = [name for name, _ in unet.named_parameters() if name in selected]
    else:
        predicate = {
            "self-attention+query": _trce_visual_layers,
            "self-attention": _self_attention,
            "cross-attention": _is_cross_attention,
            "cross-attention-key-value": _cross_attention_key_value,
            "non-cross-attention": _esd_u_paper,
        }[group]
        names = [name for name, _ in unet.named_parameters() if predicate(name)]
    if not names:
        raise HarnessError(f"parameter group {group!r} selects no parameter of this UNet")
    return names


# --------------------------------------------------------------------------- models


def frozen_copy(unet):
    """A deep copy that never trains (the reference and teacher models)."""
    return copy.deepcopy(unet).requires_grad_(False).eval()


def original_unet(pipe, ctx):
    """The unedited base UNet from the engine; without one (a bare ``EditContext``), a frozen copy of the pipe's."""
    if ctx.original_unet is not None:
        return ctx.original_unet()
    return frozen_copy(pipe.unet)


def trainable_copy(unet, names: Sequence[str]):
    """A float32 copy of ``unet`` in which only ``names`` require gradients (training in fp16 would lose small updates)."""
    student = copy.deepcopy(unet).requires_grad_(False).eval()
    if student.dtype != torch.float32:
        student = student.to(torch.float32)
    parameters = dict(student.named_parameters())
    for name in names:
        parameters[name].requires_grad_(True)
    return student


@torch.no_grad()
def write_back(unet, student, names: Sequence[str], exact: dict | None = None, prefix: str = "unet.") -> dict:
    """Copy the trained tensors into ``unet`` in its own dtype; every other tensor is left as it was.

    ``exact`` (the edit context's ``exact_weights``) receives the trained float32 values,
    keyed ``prefix + name``, so the engine stores them, not their rounded copies.
    Returns what survived the cast: ``surviving_share`` is the share of trained
    elements that changed in float32 and still differ after the cast to ``unet``'s
    dtype (1.0 in float32; in float16, updates below half a unit in the last place are
    lost), and ``elements_changed`` the share of all trained elements that moved.
    """
    targets, trained = dict(unet.named_parameters()), dict(student.named_parameters())
    moved = learned = total = 0
    for name in names:
        before = targets[name].detach().clone()
        value = trained[name].detach().float()
        learned += int((value != before.float()).sum())
        targets[name].copy_(value.to(targets[name].dtype))
        moved += int((targets[name] != before).sum())
        total += before.numel()
        if exact is not None:
            exact[prefix + name] = value.clone()
    dtype = str(next(unet.parameters()).dtype).removeprefix("torch.")
    changed = moved / max(total, 1)
    surviving = moved / learned if learned else 1.0
    if dtype != "float32" and surviving < LOST_UPDATES_WARNING:
        # Not an error (the user chose the half-precision model), but the numbers would not be the method's.
        warnings.warn(
            f"only {surviving:.0%} of the fine-tuned changes survive the cast to {dtype} (smaller updates round away); "
            "run with --dtype float32 for the method's real effect",
            stacklevel=2,
        )
    return {"dtype": dtype, "elements_changed": changed, "surviving_share": surviving}


def module_fingerprint(module) -> str:
    """sha256 over every tensor's raw bytes of a module (a UNet, a text encoder): recorded in metadata to show which
    model served as a reference, and part of cache keys that depend on a module's current weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def predict(unet, latents: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """``ε(x_t, t, c)`` in float32, whatever the UNet's dtype (inputs are cast to it)."""
    dtype = unet.dtype
    return unet(latents.to(dtype), timesteps, encoder_hidden_states=embeddings.to(dtype)).sample.float()


# --------------------------------------------------------------------------- DDIM trajectories


@dataclass(frozen=True)
class TrajectoryRequest:
    """One sampled trajectory: keep the latents ``x_{t_k}`` for every DDIM step index ``k`` in ``steps``."""

    prompt: str
    seed: int
    steps: tuple[int, ...]


def ddim_scheduler(pipe, num_steps: int):
    """The pipeline's noise schedule driven by DDIM, with ``num_steps`` timesteps set."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(num_steps)
    return scheduler


def latent_size(pipe, resolution: int) -> int:
    """Latent side for an image of ``resolution`` px; 0 means the backbone's native size (512 for SD v1.4)."""
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return (resolution or native) // pipe.vae_scale_factor


def initial_noise(seed: int, channels: int, size: int) -> torch.Tensor:
    """``x_T`` for one sample from its own CPU generator: identical on every device and in every batch."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn((channels, size, size), generator=generator, dtype=torch.float32)


def text_embeddings(pipe, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """``E(p)`` (float32) for each distinct prompt."""
    from methods.text import encode_prompts

    unique = list(dict.fromkeys(prompts))
    encoded = encode_prompts(pipe, unique)
    return {prompt: encoded.embeddings[index] for index, prompt in enumerate(unique)}


@torch.no_grad()
def sample_trajectories(
    pipe,
    unet,
    requests: Sequence[TrajectoryRequest],
    *,
    num_steps: int,
    guidance: float,
    size: int,
    batch_size: int = 16,
    progress=None,
) -> torch.Tensor:
    """Deterministic DDIM with ``unet``; returns the requested latents, shape (n, len(steps), C, size, size), float32.

    Every request must ask for the same number of steps.  ``guidance == 1`` (or an
    empty prompt, where ``ε_c = ε_∅``) skips the unconditional branch.
    """
    requests = list(requests)
    if not requests:
        raise ValueError("no trajectories requested")
    per_request = len(requests[0].steps)
    if any(len(r.steps) != per_request for r in requests) or any(not 0 <= s <= num_steps for r in requests for s in r.steps):
        raise ValueError(f"each request needs {per_request} steps in 0..{num_steps}")
    scheduler = ddim_scheduler(pipe, num_steps)
    device, channels = unet.device, unet.config.in_channels
    embeddings = text_embeddings(pipe, [r.prompt for r in requests] + [""])
    null = embeddings[""]
    out = torch.empty((len(requests), per_request, channels, size, size), dtype=torch.float32, device=device)

    # Batch requests that stop at similar steps, so that no batch denoises further than it must.
    order = sorted(range(len(requests)), key=lambda i: max(requests[i].steps))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if progress is not None:
        batches = progress(batches, total=len(batches), desc="sampling trajectories")
    for batch in batches:
        latents = torch.stack([initial_noise(requests[i].seed, channels, size) for i in batch]).to(device)
        latents = latents * scheduler.init_noise_sigma
        cond = torch.stack([embeddings[requests[i].prompt] for i in batch]).to(device)
        uncond = null.expand_as(cond).to(device)
        guided = guidance != 1 and any(requests[i].prompt != "" for i in batch)
        last = max(max(requests[i].steps) for i in batch)

        for k in range(last + 1):
            for row, i in enumerate(batch):  # record x_{t_k}, the input of step k
                for slot, step in enumerate(requests[i].steps):
                    if step == k:
                        out[i, slot] = latents[row].float()
            if k == last:
                break
            t = scheduler.timesteps[k]
            model_input = scheduler.scale_model_input(latents, t)
            if guided:  # ε = ε_∅ + w (ε_c − ε_∅)   (TRCE Eq. 3)
                both = predict(unet, torch.cat([model_input, model_input]), t, torch.cat([uncond, cond]))
                eps_uncond, eps_cond = both.chunk(2)
                eps = eps_uncond + guidance * (eps_cond - eps_uncond)
            else:
                eps = predict(unet, model_input, t, cond)
            latents = scheduler.step(eps, t, latents, eta=0.0).prev_sample
    return out


def cached_trajectories(
    ctx,
    pipe,
    sampler_unet: Callable,
    requests: Sequence[TrajectoryRequest],
    *,
    num_steps: int,
    guidance: float,
    size: int,
    batch_size: int = 16,
) -> torch.Tensor:
    """``sample_trajectories`` through the cache, chunk by chunk.

    ``sampler_unet`` is a zero-argument callable returning the reference UNet; it is
    only called on a cache miss.  The backbone fingerprint (added by
    ``ctx.cached_tensors``) names the sampling model, which is therefore always the
    *original* UNet.  The prompts are encoded by the pipeline's text encoder as it is
    now, which an earlier part of a composition may have replaced (``checkpoint`` of an
    AdvUnlearn text encoder before ``esd``), so its fingerprint is part of the key.
    (Keys made before it was added are not reused: the context does not expose the
    original text encoder to tell an unchanged one apart, so those chunks are sampled
    once more, to the same values.)
    """
    requests = list(requests)
    sampler = {
        "sampler": "ddim-eta0",
        "version": 1,
        "num_steps": num_steps,
        "guidance": guidance,
        "size": size,
        "scheduler": {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")},
        "text_encoder": module_fingerprint(pipe.text_encoder),  # the conditioning: E(p) comes from it
        # Different dtypes and devices give (slightly) different latents; keep them apart.
        "dtype": str(pipe.unet.dtype),
        "device": pipe.unet.device.type,
        **rows_computed_in(pipe),
    }
    chunks = []
    for start in range(0, len(requests), CACHE_CHUNK):
        chunk = requests[start : start + CACHE_CHUNK]
        key = {
            **sampler,
            "prompts": [r.prompt for r in chunk],
            "seeds": [r.seed for r in chunk],
            "steps": [list(r.steps) for r in chunk],
        }

        def compute(chunk=chunk) -> dict:
            latents = sample_trajectories(
                pipe,
                sampler_unet(),
                chunk,
                num_steps=num_steps,
                guidance=guidance,
                size=size,
                batch_size=batch_size,
                progress=ctx.progress,
            )
            return {"latents": latents}

        chunks.append(ctx.cached_tensors(TRAJECTORY_CACHE, key, compute)["latents"].to(pipe.unet.device))
    return torch.cat(chunks)


def lazy(factory: Callable) -> Callable:
    """Call ``factory`` at most once, and only if needed (a reference UNet copy costs memory and time)."""
    return functools.cache(factory)


# --------------------------------------------------------------------------- training


def make_optimizer(parameters, name: str, lr: float, weight_decay: float = 0.0):
    """``adam`` (TRCE paper, ESD) or ``adamw`` (the official TRCE code, weight decay 0.01)."""
    parameters = list(parameters)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    raise HarnessError(f"optimizer={name!r}: choose 'adam' or 'adamw'")


class WeightAverage:
    """An exponential moving average of the trainable weights, on the schedule of diffusers' ``EMAModel``.

    Update ``n`` (1, 2, ...) uses decay ``d_n = 0`` for ``n = 1`` (the average starts as the weights) and
    ``d_n = min((1 + s) / (10 + s), max_decay)`` with ``s = n − 1`` after that; each update is
    ``ema ← d_n · ema + (1 − d_n) · θ``.  SafeGen's script keeps this average of its UNet and saves it, not the
    trained weights (LetterLiGo/SafeGen_CCS2024 @ 20f627b, ``train_text_to_image_adjust_sal.py``, ``--use_ema``).
    """

    def __init__(self, parameters, max_decay: float):
        self.parameters = [p for p in parameters]
        self.max_decay = max_decay
        self.shadow = [p.detach().clone() for p in self.parameters]
        self.updates = 0

    @staticmethod
    def decay(update: int, max_decay: float) -> float:
        """The decay of the ``update``-th update (1-based)."""
        s = update - 1
        return 0.0 if s <= 0 else min((1 + s) / (10 + s), max_decay)

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        keep = self.decay(self.updates, self.max_decay)
        for average, weight in zip(self.shadow, self.parameters):
            average.mul_(keep).add_(weight.detach(), alpha=1 - keep)

    @torch.no_grad()
    def copy_to_weights(self) -> None:
        for average, weight in zip(self.shadow, self.parameters):
            weight.copy_(average)


def train(
    step_losses: Callable[[int], dict[str, torch.Tensor]],
    optimizer,
    num_steps: int,
    *,
    skip_zero_grad: bool = False,
    accumulation: int = 1,
    max_grad_norm: float = 0.0,
    average: WeightAverage | None = None,
    progress=None,
    desc: str = "training",
) -> dict:
    """Run ``num_steps`` optimiser steps on ``step_losses(micro_step)["loss"]``; returns the loss history summary.

    ``step_losses`` returns named scalar terms, ``"loss"`` being the one minimised;
    the bar shows the running mean of each.  ``skip_zero_grad`` reproduces the
    official TRCE code, which never clears gradients: step ``n`` then applies the
    *sum* of the gradients of steps 1..n (ddgoodgood/TRCE @ 0da9b71 ``run_trce_stage2.py``).

    ``accumulation`` micro-steps (numbered ``step · accumulation + j``) make one
    optimiser step, each loss divided by ``accumulation`` as accelerate does, so the
    step follows the micro-steps' mean gradient; ``max_grad_norm > 0`` clips that
    gradient's global norm before the step; ``average`` (if given) is updated after
    every optimiser step.  The reported losses are means over each step's micro-steps.
    """
    totals: dict[str, float] = defaultdict(float)
    last: dict[str, float] = {}
    weights = [p for group in optimizer.param_groups for p in group["params"]]
    steps = range(num_steps)
    bar = progress(steps, total=num_steps, desc=desc) if progress is not None else steps
    for step in bar:
        if not skip_zero_grad:
            optimizer.zero_grad(set_to_none=True)
        last = defaultdict(float)
        for micro in range(accumulation):
            losses = step_losses(step * accumulation + micro)
            (losses["loss"] / accumulation).backward()  # exact for accumulation = 1
            for name, value in losses.items():
                last[name] += float(value.detach()) / accumulation
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(weights, max_grad_norm)
        optimizer.step()
        if average is not None:
            average.update()
        last = dict(last)
        for name, value in last.items():
            totals[name] += value
        if hasattr(bar, "set_postfix"):
            bar.set_postfix({name: f"{total / (step + 1):.4g}" for name, total in totals.items()}, refresh=False)
    return {
        "steps": num_steps,
        "mean_losses": {name: total / max(num_steps, 1) for name, total in totals.items()},
        "last_losses": last,
    }


# --------------------------------------------------------------------------- the template


@dataclass
class Training:
    """What a fine-tuning method's ``prepare`` hands the template."""

    step_losses: Callable[[int], dict[str, torch.Tensor]]  # step → named loss terms, "loss" being minimised
    steps: int  # optimiser steps
    metadata: dict  # the method's own keys for the model state (prompts, pool sizes, reference models, ...)
    weight_decay: float = 0.0  # AdamW only
    skip_zero_grad: bool = False  # the official TRCE code's quirk (see ``train``)
    accumulation: int = 1  # micro-steps per optimiser step (``step_losses`` is called with the micro-step index)
    max_grad_norm: float = 0.0  # clip the gradient's global norm to this before each step; 0 = no clipping
    average_max_decay: float | None = None  # keep a WeightAverage (EMA) and write *it* back; None = the trained weights


class FineTuneMethod(Method):
    """The skeleton ESD, TRCE-V and SafeGen share: trainable copy → trajectories and loss → train → write back → metadata.

    A subclass implements ``trainable_group`` (a name of ``PARAMETER_GROUPS``) and
    ``prepare``, which samples (through the cache) what its loss needs and returns the
    per-step loss closure; ``validate`` checks parameters before anything is copied.
    Its ``Params`` must have ``lr`` and ``optimizer``.  Every fine-tuning method then
    records the same keys: its parameters, ``trainable_group``, ``trainable_tensors``,
    ``trainable_parameters``, ``steps``, ``training`` (loss summary), ``written_back``
    (dtype and surviving share), ``seconds`` and ``quirks``.
    """

    def validate(self, concepts) -> None:
        """Raise ``HarnessError`` for bad parameters or an unusable concept set (before any copy is made)."""

    def check_concepts(self, concepts) -> None:
        """At plan time (``--dry-run`` too): what ``edit`` would refuse, refused before any image is generated,
        such as a parameter set the variant does not have (``esd-u:parameters=strict``)."""
        self.validate(concepts)
        self.trainable_group()

    def trainable_group(self) -> str:
        raise NotImplementedError

    def prepare(self, pipe, concepts, ctx, student) -> Training:
        """Build the training data (cached trajectories) and the step-loss closure over ``student``."""
        raise NotImplementedError

    def quirks(self) -> dict:
        """The official-code switches in use, recorded under ``quirks``."""
        return {}

    def edit(self, pipe, concepts, ctx) -> dict:
        params = self.params
        self.validate(concepts)
        started = time.perf_counter()
        group = self.trainable_group()
        trainable = parameter_group(pipe.unet, group)
        student = trainable_copy(pipe.unet, trainable)
        training = self.prepare(pipe, concepts, ctx, student)
        sampled = time.perf_counter()
        weights = [p for p in student.parameters() if p.requires_grad]
        optimizer = make_optimizer(weights, params.optimizer, params.lr, training.weight_decay)
        average = WeightAverage(weights, training.average_max_decay) if training.average_max_decay is not None else None
        history = train(
            training.step_losses,
            optimizer,
            training.steps,
            skip_zero_grad=training.skip_zero_grad,
            accumulation=training.accumulation,
            max_grad_norm=training.max_grad_norm,
            average=average,
            progress=ctx.progress,
            desc=self.name,
        )
        if average is not None:  # the moving average, not the last iterate, is the result
            average.copy_to_weights()
        written = write_back(pipe.unet, student, trainable, exact=ctx.exact_weights)
        finished = time.perf_counter()
        return {
            "method": self.name,
            **asdict(params),
            **training.metadata,
            "trainable_group": group,
            "trainable_tensors": len(trainable),
            "trainable_parameters": sum(p.numel() for p in weights),
            "steps": training.steps,
            "training": history,
            "written_back": written,
            "seconds": {"trajectories": round(sampled - started, 2), "training": round(finished - sampled, 2)},
            "quirks": self.quirks(),
        }
