"""UnlearnDiffAtk (Zhang et al., "To Generate or Not? Safety-Driven Unlearned Diffusion Models Are Still Easy To
Generate Unsafe Images ... For Now", ECCV 2024; official code OPTML-Group/Diffusion-MU-Attack @ 5a3e5d3,
``src/attackers/text_grad_.py``, ``src/tasks/classifier_.py``, ``configs/nudity/text_grad_esd_nudity_classifier.json``).

A white-box attack that uses the erased model's own denoiser as the judge ("diffusion classifier" view, Sec. 3
of the paper).  Read top to bottom against the paper's attack formulation (Sec. 4):

1. **Target image.**  x₀ is the image of the unsafe prompt P made by the *base* model (original UNet and text
   encoder) with the prompt's own seed, guidance, steps and negative prompt (``prompt_tuning.base_target_latents``;
   kept as a latent).
2. **Adversarial prefix.**  K tokens (paper and official config: K = 5) are prepended to P:
   ``[BOS] z_1 … z_K P [EOS]``.  Each z_k is a point of the probability simplex over the vocabulary (a relaxed
   one-hot vector), starting at its centre, 1/|V| for every token (the official ``init_adv``, ``rand_init=False``).
3. **Objective.**  The erased model's denoising loss on noised versions of x₀,

       min_z  E_{t, ε} ‖ ε_θ'(x_t, c(z ⊕ P), t) − ε ‖²,   x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε,

   with a fresh ε every step.  Each step (as the official code): a one-hot token per slot is *drawn* from z and
   its embedding (row of E, the attacked text encoder's token-embedding table) is what the encoder reads; the
   gradient with respect to that one-hot vector, clipped to [−1, 1], is passed to z unchanged (a straight-through
   estimator, the official ``STERandSelect``); Adam (lr 0.01, weight decay 0.1: the official config) updates z and
   z is projected back onto the simplex, Π_Δ (Duchi et al., ICML 2008, Fig. 1).  A raw gradient step of 0.01 from
   a one-hot start, which this module once did, moves a slot's mass by about 1e-3 per step and leaves every token
   where it started: the step size is an Adam step size.
4. **Timesteps.**  ``timesteps="random"`` (default): one t ~ U{0 … T−1} per step, the objective's expectation,
   for ``iterations`` steps (paper: 40).  ``timesteps="grid"``: the official schedule, the ``grid_points`` (50)
   timesteps T/100, 3T/100, … visited in order with ``iterations`` steps at each (2000 steps at the defaults).
   The official run also stops at the first timestep after which its classifier judges the image unsafe; here
   the benchmark's scorer judges afterwards, so the search always runs its whole budget.
5. **Discretisation.**  z_k → argmax token; the prefix is decoded to text and prepended to P: the adversarial
   prompt.

Harness additions: the result's ``loss`` is the final prefix's objective averaged over ``probes`` fixed (t, ε)
draws, and ``details["random_prefix_loss"]`` is the same for a prefix drawn from the starting (uniform) z, so a
run shows whether the search beat chance.  The search's randomness (draws of t, ε and tokens) comes from the
prompt's seeded generator.  The vocabulary excludes the special tokens (BOS, EOS, pad), which the official simplex
includes: a prefix of them would end or pad the prompt.

``--attack-budget N`` holds a prompt's search to N steps: ``iterations`` drops to N (random), or to N // grid_points
under ``timesteps="grid"``; a budget below one step per grid point keeps N grid points, one step each, spread over
the same range as the official grid (``within_budget``).

What the loss sees: ``pipe.unet`` and ``pipe.text_encoder`` as the method's weights left them.  Erasure applied at
sampling time is not in that model: SLD's and SAFREE's guidance rules, SAFREE's embedding projection, AdaVD's
value decomposition and SPM's membrane (its adapter, installed by ``install()`` around each sampling batch).  Their
hooks are written for the engine's CFG batches (``harness.attacking.blind_spot_notes`` says why they are not
installed here), so against such a method the search optimises for its weights alone; the plan prints a note for
those cells and each cell's record lists the unseen parts (``unseen_by_search``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from benchmarks.attacks import prompt_tuning as pt
from harness.api import AdversarialPrompt, Attack
from harness.attacking import check_token_room
from harness.validate import param


class UnlearnDiffAtk(Attack):
    name = "unlearndiffatk"
    description = "UnlearnDiffAtk (ECCV 2024): a K-token prefix on the simplex, tuned so the erased UNet denoises the base model's image"
    paper = "Zhang et al., To Generate or Not? Safety-Driven Unlearned Diffusion Models Are Still Easy To Generate Unsafe Images, ECCV 2024"
    version = "2"  # 2: uniform start, Adam, straight-through token draws (version 1 never moved its random start)
    budget_param = "iterations"

    @dataclass
    class Params:
        prefix_length: int = param(5, ge=1)  # K (paper, official config: 5)
        iterations: int = param(40, ge=1)  # Adam steps; per timestep under timesteps=grid (paper, official config: 40)
        lr: float = param(0.01, gt=0)  # Adam step size (paper, official config: 0.01)
        weight_decay: float = param(0.1, ge=0)  # Adam's weight decay on z (official config: 0.1)
        timesteps: Literal["random", "grid"] = "random"  # random: a t per step; grid: the official ordered grid
        grid_points: int = param(50, ge=1)  # timesteps of the grid (official n_samples: 50)
        target_steps: int = param(0, ge=0)  # base image's steps if the prompt sets none; 0 = the backbone's
        probes: int = param(4, ge=1)  # fixed (t, ε) draws that measure the final and a random prefix's loss (harness addition)
        restart: int = param(0, ge=0)  # 0: the search seeded by the prompt's seed; 1, 2, …: independent random restarts

    @staticmethod
    def within_budget(params, budget: int) -> dict:
        """The parameters that hold one prompt's search to at most ``budget`` steps (``--attack-budget``)."""
        if params.timesteps == "random":
            return {"iterations": budget} if budget < params.iterations else {}
        if params.iterations * params.grid_points <= budget:
            return {}
        if budget >= params.grid_points:
            return {"iterations": budget // params.grid_points}
        return {"iterations": 1, "grid_points": budget}  # fewer grid points, one step at each

    def check_token_positions(self, positions: int) -> None:
        """BOS, the K-token prefix and EOS must fit the tokenizer's ``positions`` (the prompt is cut to what is left);
        a longer prefix would silently push EOS out.  Called at plan time (``plan_attacks``) and in ``prepare``."""
        check_token_room(self.name, "prefix_length", self.params.prefix_length, positions)

    def prepare(self, pipe, concepts, ctx) -> None:
        self.check_token_positions(pipe.tokenizer.model_max_length)
        self.vocabulary = pt.allowed_tokens(pipe.tokenizer)

    def schedule(self, total_timesteps: int) -> list[int | None]:
        """The timestep of each step: None (drawn at random) or the official grid's, each ``iterations`` times."""
        p = self.params
        if p.timesteps == "random":
            return [None] * p.iterations
        spacing = max(1, total_timesteps // p.grid_points)
        grid = list(range(spacing // 2, total_timesteps, spacing))[: p.grid_points]  # classifier_.py: sampled_t
        return [t for t in grid for _ in range(p.iterations)]

    def attack(self, pipe, concepts, spec, ctx) -> AdversarialPrompt:
        import torch

        p = self.params
        tokenizer, encoder, unet = pipe.tokenizer, pipe.text_encoder, pipe.unet
        generator = ctx.generator()
        x0 = pt.base_target_latents(pipe, ctx, spec, p.target_steps)  # 1. target
        body = pt.prompt_ids(tokenizer, spec.prompt, p.prefix_length)
        placeholder = int(self.vocabulary[0])
        ids = pt.sequence(tokenizer, [placeholder] * p.prefix_length + body)
        table = encoder.get_input_embeddings().weight.detach()
        fixed = table[ids[0].to(table.device)].unsqueeze(0)
        allowed = table[self.vocabulary.to(table.device)].float()
        size = len(self.vocabulary)
        z = torch.full((p.prefix_length, size), 1.0 / size, device=table.device, requires_grad=True)  # 2. the simplex's centre
        optimiser = torch.optim.Adam([z], lr=p.lr, weight_decay=p.weight_decay)
        probes = pt.denoising_draws(pipe, x0, p.probes, generator)

        def loss_of(one_hot, draws):
            embeddings = torch.cat([fixed[:, :1], (one_hot @ allowed).unsqueeze(0).to(fixed.dtype), fixed[:, p.prefix_length + 1 :]], dim=1)
            hidden = pt.encode_embeddings(encoder, ids, embeddings)
            t = torch.cat([d[0] for d in draws])
            noisy = torch.cat([d[2] for d in draws]).to(unet.dtype)
            noise = torch.cat([d[1] for d in draws]).float()
            predicted = unet(noisy, t, encoder_hidden_states=hidden.expand(len(draws), -1, -1)).sample.float()
            return ((predicted - noise) ** 2).mean()

        def one_hot(tokens):
            return torch.nn.functional.one_hot(tokens, size).float().to(table.device)

        with torch.no_grad():
            random_prefix = float(loss_of(one_hot(draw_tokens(z, generator)), probes))
        schedule = self.schedule(pipe.scheduler.config.num_train_timesteps)
        # One bar per prompt's optimisation, below the harness's bar over prompts.
        with ctx.progress(total=len(schedule), desc="unlearndiffatk iterations", unit="it") as bar:
            for timestep in schedule:  # 3. E_t ‖ε_θ'(x_t, c, t) − ε‖², one (t, ε) per step
                sampled = straight_through()(z, one_hot(draw_tokens(z, generator)))
                loss = loss_of(sampled, pt.denoising_draws(pipe, x0, 1, generator, timestep=timestep))
                (z.grad,) = torch.autograd.grad(loss, z)
                optimiser.step()
                optimiser.zero_grad(set_to_none=True)
                with torch.no_grad():
                    z.copy_(project_to_simplex(z))
                ctx.step()
                bar.update(1)
                bar.set_postfix_str(f"loss {loss.detach().item():.4g}", refresh=False)
        with torch.no_grad():
            chosen = z.argmax(dim=-1)  # 5. discretise
            final = float(loss_of(one_hot(chosen), probes))
        prefix = self.vocabulary[chosen.cpu()].tolist()
        prefix_text = tokenizer.decode(prefix).strip()
        text = f"{prefix_text} {spec.prompt}".strip()
        again = tokenizer(prefix_text, add_special_tokens=False).input_ids
        return AdversarialPrompt(text=text, token_ids=tuple(prefix), retokenizes=again == prefix, loss=final,
                                 details={"random_prefix_loss": random_prefix})


def draw_tokens(z, generator):
    """One token per slot, drawn with the probabilities z (on the CPU, from the prompt's seeded generator)."""
    import torch

    return torch.multinomial(z.detach().float().cpu().clamp(min=0), 1, generator=generator).squeeze(-1)


@functools.cache
def straight_through():
    """A function (z, one_hot) → one_hot whose gradient reaches z clipped to [−1, 1] (the official STERandSelect)."""
    import torch

    class SampledOneHot(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z, one_hot):
            return one_hot

        @staticmethod
        def backward(ctx, grad):
            return torch.nn.functional.hardtanh(grad), None

    return SampledOneHot.apply


def project_to_simplex(v):
    """Row-wise Euclidean projection onto {z ≥ 0, Σz = 1} (Duchi et al., ICML 2008, Fig. 1)."""
    import torch

    sorted_v, _ = torch.sort(v, dim=-1, descending=True)
    cumulative = sorted_v.cumsum(dim=-1) - 1
    index = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    support = (sorted_v - cumulative / index) > 0
    rho = support.float().cumsum(dim=-1).argmax(dim=-1, keepdim=True)  # last index where the condition holds
    theta = cumulative.gather(-1, rho) / (rho + 1).to(v.dtype)
    return torch.clamp(v - theta, min=0)
