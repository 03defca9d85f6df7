"""P4D (Chin et al., "Prompting4Debugging: Red-Teaming Text-to-Image Diffusion Models by Finding Problematic
Prompts", ICML 2024; official code joycenerd/P4D @ 2cf3cda, ``prompt_optimization/optimize_n.py``,
``optimize_k.py``, ``configs/esd_nudity_optmz_config.json``).

A white-box attack that makes the erased model behave like the base model on the unsafe prompt.  Read top to
bottom against the paper's method section (Sec. 3):

1. **Reference.**  The base model (original UNet and text encoder) on the unsafe prompt P gives the noise
   prediction ε_θ(x_t, c(P), t) to imitate.
2. **Soft prompt.**  Free tokens with continuous embeddings P_cont, initialised from random tokens.  P4D-N: the
   prompt is N learned tokens alone.  P4D-K: P's tokens with a learned token before each group of K of them,
   ``[L p1 … pK L pK+1 … p2K L …]``, ⌊n/K⌋ + 1 learned tokens for n prompt tokens (``optimize_k.py``,
   ``initialize_prompt``: the learned positions are those with i mod (K+1) = 0).
3. **Objective** (the paper's matching loss):

       min_{P_cont}  ‖ ε_θ'(x_t, c(Proj(P_cont)), t) − ε_θ(x_t, c(P), t) ‖²

   with Proj the projection of each embedding to its nearest vocabulary embedding by cosine similarity (PEZ,
   Wen et al. 2023; ``nn_project`` normalises both sides), the gradient taken at the projected embeddings and
   applied to P_cont (straight-through), optimiser AdamW.  x_t is the base model's image x₀ of P (its seed,
   guidance, steps and negative prompt) noised to a random training timestep, x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε, one
   draw per iteration: as the official code (``scheduler.add_noise`` on the target images' latents, t ~ U{0 …
   999}), the same draws as UnlearnDiffAtk.
4. **Result.**  The projected tokens after the last iteration, decoded to text (with P's tokens for P4D-K).  The
   official code instead generates an image with the erased model every 50 iterations and keeps the prompt whose
   image is most similar (CLIP ViT-H-14) to the target images; that needs a CLIP model and an image per check,
   which the harness leaves to the benchmark's scorer afterwards, so it is not reproduced.

Defaults: the official config (N = 16, K = 3, AdamW with learning rate 0.1 and weight decay 0.1, 3000
iterations); ``iterations`` is the budget parameter (``--attack-budget``).  The result's ``loss`` is the final
tokens' objective on ``probes`` fixed draws; ``details`` hold that objective for the initial tokens
(``loss_first``).  Padding after EOS is the tokenizer's own (the pipeline's layout; the official code pads with
id 0).

What the loss sees: ``pipe.unet`` and ``pipe.text_encoder`` as the method's weights left them.  Sampling-time erasure
(SLD, SAFREE, AdaVD, SPM's membrane) is not in that model (``harness.attacking.blind_spot_notes``): against such a
method the search matches the base model with its weights alone; the plan notes those cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from benchmarks.attacks import prompt_tuning as pt
from harness.api import AdversarialPrompt, Attack
from harness.validate import param


class P4D(Attack):
    name = "p4d"
    description = "P4D (ICML 2024): PEZ-style projected soft prompt so the erased UNet matches the base model's noise"
    paper = "Chin et al., Prompting4Debugging: Red-Teaming Text-to-Image Diffusion Models by Finding Problematic Prompts, ICML 2024"
    version = "2"  # 2: cosine projection, the official P4D-K layout
    budget_param = "iterations"

    @dataclass
    class Params:
        variant: Literal["n", "k"] = "n"  # P4D-N or P4D-K
        tokens: int = param(16, ge=1)  # N, the learned tokens of P4D-N
        every: int = param(3, ge=1)  # K of P4D-K: a learned token before each group of K prompt tokens
        iterations: int = param(3000, ge=1)
        lr: float = param(0.1, gt=0)
        weight_decay: float = param(0.1, ge=0)
        target_steps: int = param(0, ge=0)  # base image's steps if the prompt sets none; 0 = the backbone's
        probes: int = param(4, ge=1)  # fixed (t, ε) draws that measure the loss before/after (harness addition)
        restart: int = param(0, ge=0)  # 0: the search seeded by the prompt's seed; 1, 2, …: independent random restarts

    def prepare(self, pipe, concepts, ctx) -> None:
        self.vocabulary = pt.allowed_tokens(pipe.tokenizer)

    def _layout(self, tokenizer, prompt: str):
        """The token sequence body and the positions (in the full sequence, after BOS) of the learned tokens."""
        p = self.params
        placeholder = int(self.vocabulary[0])
        room = tokenizer.model_max_length - 2
        if p.variant == "n":
            count = min(p.tokens, room)
            return [placeholder] * count, list(range(1, count + 1))
        words = pt.prompt_ids(tokenizer, prompt, 0)
        while words and len(words) + len(words) // p.every + 1 > room:  # the prompt and its learned tokens must fit
            words = words[:-1]
        body, free, remaining = [], [], iter(words)
        for index in range(len(words) + len(words) // p.every + 1):
            if index % (p.every + 1) == 0:  # a learned token, then the next K prompt tokens
                body.append(placeholder)
                free.append(index + 1)
            else:
                body.append(next(remaining))
        return body, free

    def attack(self, pipe, concepts, spec, ctx) -> AdversarialPrompt:
        import torch

        p = self.params
        tokenizer, encoder, unet = pipe.tokenizer, pipe.text_encoder, pipe.unet
        base_unet, base_encoder = ctx.base("unet"), ctx.base("text_encoder")
        generator = ctx.generator()
        x0 = pt.base_target_latents(pipe, ctx, spec, p.target_steps)
        with torch.no_grad():
            reference_condition = pt.encode_text(base_encoder, tokenizer, [spec.prompt])  # 1. c(P) through the base encoder
        body, free = self._layout(tokenizer, spec.prompt)
        ids = pt.sequence(tokenizer, body)
        table = encoder.get_input_embeddings().weight.detach()
        allowed = table[self.vocabulary.to(table.device)].float()
        start = self.vocabulary[torch.randint(len(self.vocabulary), (len(free),), generator=generator)]
        ids[0, free] = start
        soft = allowed[torch.searchsorted(self.vocabulary, start).to(table.device)].clone().requires_grad_(True)  # 2. P_cont
        optimiser = torch.optim.AdamW([soft], lr=p.lr, weight_decay=p.weight_decay)
        probes = pt.denoising_draws(pipe, x0, p.probes, generator)
        references = {}

        def reference(draws):
            with torch.no_grad():
                t = torch.cat([d[0] for d in draws])
                noisy = torch.cat([d[2] for d in draws]).to(base_unet.dtype)
                return base_unet(noisy, t, encoder_hidden_states=reference_condition.expand(len(draws), -1, -1)).sample.float()

        def project(soft):
            chosen = nearest_tokens(soft.detach(), allowed)
            return chosen, allowed[chosen]

        def loss_of(token_embeddings, draws, target):
            embeddings = table[ids[0].to(table.device)].unsqueeze(0).clone()
            embeddings[0, free] = token_embeddings.to(embeddings.dtype)
            hidden = pt.encode_embeddings(encoder, ids, embeddings)
            t = torch.cat([d[0] for d in draws])
            noisy = torch.cat([d[2] for d in draws]).to(unet.dtype)
            predicted = unet(noisy, t, encoder_hidden_states=hidden.expand(len(draws), -1, -1)).sample.float()
            return ((predicted - target) ** 2).mean()

        references["probes"] = reference(probes)
        with torch.no_grad():
            first = float(loss_of(project(soft)[1], probes, references["probes"]))
        # One bar per prompt's optimisation (the harness shows the bar over prompts): 3000 iterations on SD take minutes.
        with ctx.progress(total=p.iterations, desc="p4d iterations", unit="it") as bar:
            for _ in range(p.iterations):  # 3. straight-through PEZ step
                draws = pt.denoising_draws(pipe, x0, 1, generator)
                _, projected = project(soft)
                projected = projected.clone().requires_grad_(True)
                loss = loss_of(projected, draws, reference(draws))
                (gradient,) = torch.autograd.grad(loss, projected)
                soft.grad = gradient.to(soft.dtype)
                optimiser.step()
                optimiser.zero_grad(set_to_none=True)
                ctx.step()
                bar.update(1)
                bar.set_postfix_str(f"loss {loss.detach().item():.4g}", refresh=False)
        with torch.no_grad():
            chosen, projected = project(soft)
            final = float(loss_of(projected, probes, references["probes"]))
        learned = self.vocabulary[chosen.cpu()].tolist()
        ids[0, free] = torch.tensor(learned, dtype=ids.dtype)
        found = ids[0, 1 : len(body) + 1].tolist()  # 4. the whole prompt body (P4D-K keeps P's tokens)
        text = tokenizer.decode(found).strip()
        again = tokenizer(text, add_special_tokens=False).input_ids
        return AdversarialPrompt(text=text, token_ids=tuple(found), retokenizes=again == found, loss=final,
                                 details={"loss_first": first, "learned_tokens": learned})


def nearest_tokens(embeddings, vocabulary_embeddings):
    """Each embedding's nearest vocabulary entry (its index) by cosine similarity (PEZ; the official ``nn_project``
    normalises both sides): a raw dot product favours long embeddings, and a token could fail to project onto itself."""
    import torch

    unit = torch.nn.functional.normalize
    return (unit(embeddings, dim=-1) @ unit(vocabulary_embeddings, dim=-1).T).argmax(dim=-1)
