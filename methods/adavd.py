"""``adavd``: AdaVD, the Adaptive Value Decomposer (Wang et al., CVPR 2025; arXiv 2412.06143), training-free.

AdaVD erases in the *value space* of every cross-attention layer: each token's
value vector loses its component along the target concept's value, so the token
cannot bring the concept into the image.  Keys, queries and attention
probabilities are untouched (official code WYuan1001/AdaVD @ c2d2962 ``src/main.py``).

1. **Target record.**  For a concept c, the target embedding spreads its last word
   row over every position after [SoT]:

       T = E(c);   T[l] = E(c)[k(c)]  for l ≥ 1          k(c) = last word token, read from the ids

   and the target values are ``V_tgt = to_v(T)`` in each ``attn2``.  The official code
   runs the UNet once to record them; values depend on the text only, so applying each
   ``to_v`` to T gives the same numbers without a UNet evaluation.  They are recorded
   when the hook is installed, i.e. from the weights sampling runs with (``uce+adavd``
   records on the UCE-edited weights), as ``F.linear`` with ``to_v``'s weight and bias: calling the
   module would run the forward hooks of methods installed before it, such as SPM's membrane,
   whose per-sample multipliers do not fit the m target rows (``spm+adavd`` crashed).

2. **Decomposition**, for every sample's value v at token l ≥ 1 ([SoT] is never changed):

       w_l   = s_l · ⟨v_tgt, v⟩ / ⟨v_tgt, v_tgt⟩,      v ← v − w_l · v_tgt             ("retain" mode)
       s_l   = c / (1 + exp(−a (cos(v_tgt, v) − b)))    adaptive shift (``adaptive_shift``, a=100, b=0.93, c=2)
       s_l   = 1                                        plain orthogonal projection (``adaptive_shift=false``)

   Several concepts are orthonormalised per token by Gram–Schmidt (in the concept
   set's order) into q_1 … q_m and v ← v − Σ_j s_lj ⟨q_j, v⟩ q_j, with s_lj from
   cos(q_j, v); for one concept this is exactly the rule above.  A zero target has
   no direction and changes nothing.  The official ``--mode retain`` is the safe
   image; its ``--mode erase`` outputs the erased component instead (a naming pitfall).

3. **Heads.**  The official code splits V into heads and views the batch as
   ``2 × (B · 8)``, i.e. it concatenates the 8 heads of a token (hard-coded for SD-1.x).
   A token's heads concatenated are its un-split ``inner_dim`` value row, so the
   decomposition is done on that row, before the attention splits it into
   ``attn.heads`` heads; the head count (and ``inner_dim``) comes from each module,
   and the tiny and toy backbones run the same code.

4. **Unconditional branch.**  Default: every sample of the UNet batch is decomposed
   on its own, against the concept's value, so the rule does not depend on how a
   guidance rule lays out its batch (it composes with ``sld``'s three branches).  The
   unconditional prompt's values change only as far as they point along the concept.
   ``joint_cfg_halves=true`` reproduces the official code (``src/main.py``, ``AttnProcessor``):
   the uncond and cond values of each sample are concatenated (batch layout
   [uncond; cond], two halves) and decomposed as one vector against
   [V(""), V(T)], so one weight w_l scales both halves.  For the usual empty
   negative prompt the uncond half then becomes (1 − w_l) · V("") and the
   conditional similarity leaks into the unconditional prediction.  The adaptive
   shift's b = 0.93 was tuned on these joint vectors, whose shared uncond half
   raises the cosine.

Defaults follow the paper's method and the official demo: adaptive shift on
(a=100, b=0.93, c=2).  The decomposition is recomputed at every step from the
current values; the official code caches it at the first step, which gives the
same numbers because values do not depend on the latent.

How a concept set becomes the targets: its ``erase`` keywords (``sexual`` → "nudity";
``unsafe`` → its 11 words; ``van-gogh`` → "Van Gogh", the official demo's concept;
``toy-red`` → "red" and its four synonyms), or ``adavd:concepts=a|b``.  The official
repository has no nudity script.  Cost: the same UNet evaluations as plain sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.api import ConceptSet, HarnessError, Method, MethodKind, SamplingHooks
from methods.text import encode_prompts, last_word_index


class AdaVD(Method):
    name = "adavd"
    display_name = "AdaVD"
    description = "AdaVD: remove the target concept's component from every cross-attention value, adaptively per token"
    paper = "Wang et al., Precise, Fast, and Low-cost Concept Erasure in Value Space: Orthogonal Complement Matters, CVPR 2025"
    kind = MethodKind.INFERENCE
    concept_params = ("concepts",)  # given, it replaces the concept set's concepts
    version = "1"
    # AdaVD @ c2d2962 src/main.py with the demo's --token_sim settings: the [uncond, cond] halves decomposed jointly.
    presets = {"official": {"joint_cfg_halves": True, "adaptive_shift": True, "shift_a": 100.0, "shift_b": 0.93, "shift_c": 2.0}}

    @dataclass
    class Params:
        concepts: tuple[str, ...] = ()  # target words; () = the concept set's erase keywords
        adaptive_shift: bool = True  # s_l from the token similarity (official --token_sim, as in the demo)
        shift_a: float = 100.0  # a in the adaptive shift s = c·σ(a(cos − b)): its steepness
        shift_b: float = 0.93  # b: the value cosine at which the shift is half of c (calibrated on SD's CLIP)
        shift_c: float = 2.0  # c: the largest shift
        joint_cfg_halves: bool = False  # official: decompose [uncond, cond] values jointly

    def sampling_hooks(self, pipe, concepts: ConceptSet, ctx) -> SamplingHooks:
        words = list(self.params.concepts) or list(concepts.erase)
        if not words:
            raise HarnessError(f"adavd: concept set {concepts.name!r} has nothing to erase; pass adavd:concepts=a|b")
        decomposer = ValueDecomposer(target_embeddings(pipe, words), null_embedding(pipe), self.params)
        return decomposer


@torch.no_grad()
def target_embeddings(pipe, words: list[str]) -> torch.Tensor:
    """T for each concept (m × L × d): its last word row spread over every position after [SoT] (step 1)."""
    encoded = encode_prompts(pipe, words)
    spread = encoded.embeddings.clone()
    for index, mask in enumerate(encoded.attention_mask):
        spread[index, 1:] = encoded.embeddings[index, last_word_index(mask)]
    return spread


@torch.no_grad()
def null_embedding(pipe) -> torch.Tensor:
    """E("") (L × d): the uncond half of the official joint target record."""
    return encode_prompts(pipe, [""]).embeddings[0]


def cross_attentions(unet) -> list[tuple[str, torch.nn.Module]]:
    return [(name, module) for name, module in unet.named_modules() if name.endswith("attn2") and hasattr(module, "to_v")]


def orthonormal_basis(targets: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Gram–Schmidt per token over the concepts: (m × L × D) → orthonormal q_j (zero where a target adds no direction)."""
    basis = []
    for target in targets:
        residual = target.clone()
        for q in basis:
            residual = residual - (residual * q).sum(-1, keepdim=True) * q
        norm = residual.norm(dim=-1, keepdim=True)
        basis.append(torch.where(norm > eps, residual / norm.clamp_min(eps), torch.zeros_like(residual)))
    basis = torch.stack(basis)
    basis[:, 0] = 0  # w_0 = 0: [SoT] is never changed
    return basis


def decompose(values: torch.Tensor, basis: torch.Tensor, params: AdaVD.Params) -> torch.Tensor:
    """v − Σ_j s_j ⟨q_j, v⟩ q_j for values (N × L × D) and an orthonormal basis (m × L × D) (step 2)."""
    coefficients = torch.einsum("nld,mld->nml", values, basis)  # ⟨q_j, v⟩
    if params.adaptive_shift:
        cosine = coefficients / values.norm(dim=-1)[:, None, :].clamp_min(1e-12)  # cos(q_j, v) = cos(v_tgt, v) for one concept
        shift = params.shift_c * torch.sigmoid(params.shift_a * (cosine - params.shift_b))
        coefficients = shift * coefficients
    return values - torch.einsum("nml,mld->nld", coefficients, basis)


class ValueDecomposer(SamplingHooks):
    """Installs the decomposition on the output of every ``attn2.to_v`` (the value rows, before the head split)."""

    def __init__(self, targets: torch.Tensor, null: torch.Tensor, params: AdaVD.Params):
        self.targets = targets  # m × L × d text embeddings
        self.null = null  # L × d
        self.params = params
        self.handles = []

    @torch.no_grad()
    def install(self, pipe):
        self.uninstall(pipe)
        for _, attention in cross_attentions(pipe.unet):
            to_v = attention.to_v
            weight = to_v.weight
            # The projection itself, not the module: another method's hook on to_v (SPM's per-sample membrane)
            # belongs to the sampled batch, not to these m target rows.
            target_values = F.linear(self.targets.to(weight.device, weight.dtype), weight, to_v.bias).float()  # V_tgt (m × L × inner)
            if self.params.joint_cfg_halves:
                null_values = F.linear(self.null.to(weight.device, weight.dtype), weight, to_v.bias).float()
                target_values = torch.cat([null_values.expand_as(target_values), target_values], dim=-1)  # [V(""), V(T)]
            basis = orthonormal_basis(target_values)
            self.handles.append(to_v.register_forward_hook(self._hook(basis)))

    def uninstall(self, pipe):
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _hook(self, basis: torch.Tensor):
        params = self.params

        def hook(module, args, output):
            if output.dim() != 3 or output.shape[1] != basis.shape[1]:
                return output  # not a text-conditioned call (the encoder length differs)
            values = output.float()
            if params.joint_cfg_halves:
                if values.shape[0] % 2:
                    raise RuntimeError("adavd: joint_cfg_halves needs a CFG batch [uncond; cond] of two halves")
                uncond, cond = values.chunk(2)
                joint = decompose(torch.cat([uncond, cond], dim=-1), basis, params)
                values = torch.cat(joint.chunk(2, dim=-1))
            else:
                values = decompose(values, basis, params)
            return values.to(output.dtype)

        return hook
