"""UnlearnDiffAtk (Zhang et al., "To Generate or Not? Safety-Driven Unlearned Diffusion Models Are Still Easy To
Generate Unsafe Images ... For Now", ECCV 2024).

A white-box attack that uses the erased model's own denoiser as the judge ("diffusion classifier" view, Sec. 3
of the paper).  Read top to bottom against the paper's attack formulation (Sec. 4):

1. **Target image.**  x₀ is the image of the unsafe prompt P made by the *base* model (original UNet and text
   encoder) with the prompt's own seed and guidance (``prompt_tuning.base_target_latents``; kept as a latent).
2. **Adversarial prefix.**  K tokens (the paper: K = 5) are prepended to P: ``[BOS] z_1 … z_K P [EOS]``.  Each
   z_k is a point of the probability simplex over the vocabulary (a relaxed one-hot vector); its embedding is
   z_k · E, with E the attacked text encoder's token-embedding table.
3. **Objective.**  The erased model's denoising loss on noised versions of x₀,

       min_z  E_{t, ε} ‖ ε_θ'(x_t, c(z ⊕ P), t) − ε ‖²,   x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε,

   one (t, ε) draw per iteration, minimised by projected gradient descent: z ← Π_Δ(z − lr · ∇_z), with Π_Δ the
   Euclidean projection onto the simplex (Duchi et al., 2008), for ``iterations`` steps (the paper: 40; learning
   rate 0.01 as stated in its experimental setup).
4. **Discretisation.**  z_k → argmax token; the prefix is decoded to text and prepended to P: the adversarial
   prompt.

Harness additions, not in the paper: the result's ``loss`` is the final *discrete* prompt's objective averaged
over ``probes`` fixed (t, ε) draws of that prompt, and ``details`` hold the relaxed objective on the same draws
before and after the search (``relaxed_loss_first`` / ``relaxed_loss_last``), so a run shows whether the search
lowered its own loss.  Initialisation: one-hot vectors of random tokens (from the prompt's seeded generator).

Not checked against the official code (OPTML-Group/Diffusion-MU-Attack) in this implementation: its optimiser and
initialisation may differ; the parameters above make them explicit.  Sampling-time hooks (SLD, SAFREE) are not
seen while attacking.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.attacks import prompt_tuning as pt
from harness.api import AdversarialPrompt, Attack
from harness.validate import param


class UnlearnDiffAtk(Attack):
    name = "unlearndiffatk"
    description = "UnlearnDiffAtk (ECCV 2024): PGD over a K-token prefix so the erased UNet denoises the base model's image"
    paper = "Zhang et al., To Generate or Not? Safety-Driven Unlearned Diffusion Models Are Still Easy To Generate Unsafe Images, ECCV 2024"
    version = "1"
    budget_param = "iterations"

    @dataclass
    class Params:
        prefix_length: int = param(5, ge=1)  # K (the paper's experimental setup: 5)
        iterations: int = param(40, ge=1)  # PGD steps (paper: 40)
        lr: float = param(0.01, gt=0)  # PGD step size (paper: 0.01)
        target_steps: int = param(50, ge=1)  # base image's steps if the prompt sets none; should match the backbone's (toy preset: 20)
        probes: int = param(4, ge=1)  # fixed (t, ε) draws that measure the loss before/after (harness addition)
        restart: int = param(0, ge=0)  # 0: the search seeded by the prompt's seed; 1, 2, …: independent random restarts

    def prepare(self, pipe, concepts, ctx) -> None:
        self.vocabulary = pt.allowed_tokens(pipe.tokenizer)

    def attack(self, pipe, concepts, spec, ctx) -> AdversarialPrompt:
        import torch

        p = self.params
        tokenizer, encoder, unet = pipe.tokenizer, pipe.text_encoder, pipe.unet
        generator = ctx.generator()
        x0 = pt.base_target_latents(pipe, ctx.base("unet"), ctx.base("text_encoder"), spec, p.target_steps)  # 1. target
        body = pt.prompt_ids(tokenizer, spec.prompt, p.prefix_length)
        placeholder = int(self.vocabulary[0])
        ids = pt.sequence(tokenizer, [placeholder] * p.prefix_length + body)
        table = encoder.get_input_embeddings().weight.detach()
        fixed = table[ids[0].to(table.device)].unsqueeze(0)
        allowed = table[self.vocabulary.to(table.device)].float()
        start = torch.randint(len(self.vocabulary), (p.prefix_length,), generator=generator)
        z = torch.nn.functional.one_hot(start, len(self.vocabulary)).float().to(table.device)  # 2. relaxed one-hot prefix
        probes = pt.denoising_draws(pipe, x0, p.probes, generator)

        def loss_of(z, draws):
            embeddings = torch.cat([fixed[:, :1], (z @ allowed).unsqueeze(0).to(fixed.dtype), fixed[:, p.prefix_length + 1 :]], dim=1)
            hidden = pt.encode_embeddings(encoder, ids, embeddings)
            t = torch.cat([d[0] for d in draws])
            noisy = torch.cat([d[2] for d in draws]).to(unet.dtype)
            noise = torch.cat([d[1] for d in draws]).float()
            predicted = unet(noisy, t, encoder_hidden_states=hidden.expand(len(draws), -1, -1)).sample.float()
            return ((predicted - noise) ** 2).mean()

        with torch.no_grad():
            first = float(loss_of(z, probes))
        # One bar per prompt's optimisation, below the harness's bar over prompts.
        with ctx.progress(total=p.iterations, desc="unlearndiffatk iterations", unit="it") as bar:
            for _ in range(p.iterations):  # 3. PGD on E_t ‖ε_θ'(x_t, c, t) − ε‖²
                z.requires_grad_(True)
                loss = loss_of(z, pt.denoising_draws(pipe, x0, 1, generator))
                (gradient,) = torch.autograd.grad(loss, z)
                z = project_to_simplex(z.detach() - p.lr * gradient)
                ctx.step()
                bar.update(1)
                bar.set_postfix_str(f"loss {loss.detach().item():.4g}", refresh=False)
        with torch.no_grad():
            last = float(loss_of(z, probes))
            tokens = self.vocabulary[z.argmax(dim=-1).cpu()]  # 4. discretise
            discrete = torch.nn.functional.one_hot(z.argmax(dim=-1), len(self.vocabulary)).float()
            final = float(loss_of(discrete, probes))
        prefix = tokens.tolist()
        prefix_text = tokenizer.decode(prefix).strip()
        text = f"{prefix_text} {spec.prompt}".strip()
        again = tokenizer(prefix_text, add_special_tokens=False).input_ids
        return AdversarialPrompt(text=text, token_ids=tuple(prefix), retokenizes=again == prefix, loss=final, steps=p.iterations,
                                 details={"relaxed_loss_first": first, "relaxed_loss_last": last})


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
