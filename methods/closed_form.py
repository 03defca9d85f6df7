"""The closed-form cross-attention editor shared by UCE, RECE and TRCE-T (and MACE's refinement).

These methods only change the key and value projections ``W`` (``attn2.to_k``,
``attn2.to_v``; out × d) of the UNet's cross-attention layers.  Each one solves,
for every such matrix independently, the ridge regression

    min_W'  λ‖W' − W‖²  +  e Σ_i w_i ‖W' k_i − v_i‖²  +  s Σ_j ‖W' p_j − W p_j‖²          (UCE's objective)

    keys k_i   → targets v_i      the mapping to install (concept → guide)
    keys p_j                      preserved: W' p_j should stay W p_j

TRCE's Eq. 4 is this objective with λ = 0 and its own λ on the preservation term, which is ``s`` here
(``trce_t.py`` maps the two).  Its normal equations give the update (TRCE Eq. 5; UCE @ 35e91e2 ``train-scripts/train_erase.py``,
RECE @ 403a67f ``erase_methods/uce.py``, MACE @ 057e7a6 ``src/cfr_utils.py``)

    W' = (λW + e Σ w v kᵀ + s Σ W p pᵀ) · (λI + e Σ w k kᵀ + s Σ p pᵀ)⁻¹
       =            mat1               ·              mat2⁻¹

Every method here takes its targets from the **current** weights: ``v = W t`` for
some embedding ``t`` (the guide prompt's row).  Then ``Σ v kᵀ = W Σ t kᵀ`` and the
whole right-hand side factors as ``W' = W · (λI + e Σ w t kᵀ + s Σ p pᵀ) · mat2⁻¹``.
That is the same equation, evaluated in the cheap order: the statistics are d × d
matrices of *text embeddings* only, the same for all 32 projections, and the solve
(one eigendecomposition of ``mat2``) is done once.  ``value_key`` adds per-matrix
``Σ v kᵀ`` terms for targets that are not ``W t`` (MACE's LoRA fusion).  The same
factoring gives ``Σ W p pᵀ = W Σ p pᵀ`` for the preservation term, so the cache stores
``Σ p pᵀ`` only; it depends on the text encoder and the captions, not on the UNet.
Directions that nothing constrains keep the current weights (``invert``).

Precision: the statistics are computed in float64 (from the float32 rows), and the
d × d system is solved in float64 on the CPU, exactly unless it is singular to the
rows' precision (``invert`` states the rank test).  Text-encoder rows differ widely in norm
(CLIP's [SoT] row stands out), so ``mat2`` can be badly conditioned, and forming it
squares that.  The per-matrix product runs in float32 on the
weights' device and is written back in the weights' dtype (float16 only with --dtype float16).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.api import HarnessError, sha256_json
from harness.text import float32_text_encoder, rows_computed_in
from methods.finetune import module_fingerprint

# solver="limit": eigenvalues of mat2 below RCOND × the largest count as unconstrained (see invert).
RCOND = 1e-6

# --------------------------------------------------------------------------- which matrices


def cross_attention_projections(unet, edit_keys: bool = True) -> list[tuple[str, torch.nn.Linear]]:
    """The edited matrices, found by module name, in the order of the official ``get_ca_layers``.

    Order: every ``*attn2.to_v`` in ``named_modules()`` order, then every
    ``*attn2.to_k`` (if ``edit_keys``).  ``UNet2DConditionModel`` registers
    ``down_blocks``, ``up_blocks`` and then ``mid_block``, so for SD-1.4 this is
    [16 × to_v: down(6), up(9), mid(1)] + [16 × to_k, same order] (``get_ca_layers`` in
    MACE @ 057e7a6 and TRCE @ 0da9b71 ``src/cfr_utils.py``),
    and index ``l`` matches the layer index of the MACE/TRCE COCO caches.  Only the
    names matter, so the tiny and toy backbones are edited by the same code.
    """
    modules = list(unet.named_modules())
    values = [(name, module) for name, module in modules if name.endswith("attn2.to_v")]
    keys = [(name, module) for name, module in modules if name.endswith("attn2.to_k")] if edit_keys else []
    found = values + keys
    if not values:
        raise ValueError("no cross-attention projections (modules named '*attn2.to_v') in this UNet")
    for name, module in found:
        if not isinstance(module, torch.nn.Linear):
            raise TypeError(f"{name} is a {type(module).__name__}, not a Linear; cannot edit it in closed form")
    return found


# --------------------------------------------------------------------------- statistics


@dataclass
class KeyStatistics:
    """Second moments of a set of weighted (key k, target embedding t) pairs; the value target is ``W t``.

    ``key_key = Σ w k kᵀ`` and ``target_key = Σ w t kᵀ`` are d × d, float64.
    For a preservation set the target is the key itself (``target_key = key_key``).
    """

    key_key: torch.Tensor
    target_key: torch.Tensor
    count: float  # how many items the sums run over (Σ w, or captions), for normalising and the metadata

    @classmethod
    def from_pairs(cls, keys: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None) -> KeyStatistics:
        """From rows ``keys`` (n × d) and ``targets`` (n × d), each row weighted by ``weights`` (n) or 1."""
        weighted = keys if weights is None else keys.double() * weights.double().to(keys.device)[:, None]
        count = float(len(keys) if weights is None else weights.sum())
        return cls(second_moment(weighted, keys), second_moment(targets, weighted), count)

    @classmethod
    def preserve(cls, keys: torch.Tensor, weights: torch.Tensor | None = None) -> KeyStatistics:
        """Keys whose outputs must not change: the target of each key is the key itself."""
        weighted = keys if weights is None else keys.double() * weights.double().to(keys.device)[:, None]
        key_key = second_moment(weighted, keys)
        return cls(key_key, key_key, float(len(keys) if weights is None else weights.sum()))

    @classmethod
    def zeros(cls, dim: int, device=None) -> KeyStatistics:
        zero = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        return cls(zero, zero.clone(), 0.0)

    def __add__(self, other: KeyStatistics) -> KeyStatistics:
        device = self.key_key.device
        return KeyStatistics(
            self.key_key + other.key_key.to(device), self.target_key + other.target_key.to(device), self.count + other.count
        )

    def scaled(self, factor: float) -> KeyStatistics:
        return KeyStatistics(self.key_key * factor, self.target_key * factor, self.count * factor)


def second_moment(left: torch.Tensor, right: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """``leftᵀ · right`` (d × d) in float64, over chunks of rows so the float64 copies stay small.

    float32 products are 3× faster but perturb the small eigenvalues of ``mat2`` enough to rotate the
    directions a λ = 0 solve maps exactly (seen in tests at 2e-4 relative).
    """
    total = torch.zeros(left.shape[1], right.shape[1], dtype=torch.float64, device=left.device)
    for start in range(0, len(left), chunk):
        total += left[start : start + chunk].double().T @ right[start : start + chunk].double()
    return total


# --------------------------------------------------------------------------- the solve


SOLVERS = ("exact", "limit")


@torch.no_grad()
def closed_form_edit(
    projections: list[tuple[str, torch.nn.Linear]],
    erase: KeyStatistics,
    *,
    lamb: float,
    erase_scale: float = 1.0,
    preserve: KeyStatistics | None = None,
    preserve_scale: float = 0.0,
    value_key: dict[str, torch.Tensor] | None = None,
    solver: str = "exact",
) -> dict:
    """Replace every ``W`` in ``projections`` by ``mat1 · mat2⁻¹`` (module docstring; TRCE Eq. 5).

    ``value_key`` optionally maps a matrix name to an extra ``Σ w v kᵀ`` (out × d)
    for targets that are not ``W t``; it is scaled by ``erase_scale`` like the rest
    of the erase term.  ``solver`` chooses how ``mat2`` is inverted (``invert``).  Returns how the
    system was solved, for the metadata.
    """
    dim = erase.key_key.shape[0]
    identity = torch.eye(dim, dtype=torch.float64)
    if preserve is None:
        preserve = KeyStatistics.zeros(dim)
    # mat2 = λI + e Σ w k kᵀ + s Σ p pᵀ          and the bracket of mat1 = W · (λI + e Σ w t kᵀ + s Σ p pᵀ)
    mat2 = lamb * identity + erase_scale * erase.key_key.cpu() + preserve_scale * preserve.key_key.cpu()
    bracket = lamb * identity + erase_scale * erase.target_key.cpu() + preserve_scale * preserve.target_key.cpu()
    inverse = invert(mat2, solver=solver)
    transform = inverse.right(bracket) + inverse.unconstrained  # mat1 · mat2⁻¹ = W · transform

    for name, module in projections:
        weight = module.weight
        updated = weight.float() @ transform.to(device=weight.device, dtype=torch.float32)
        if value_key is not None and name in value_key:
            extra = inverse.right(erase_scale * value_key[name].double().cpu())
            updated += extra.to(device=weight.device, dtype=torch.float32)
        weight.copy_(updated.to(weight.dtype))
    return {**inverse.info, "matrices": [name for name, _ in projections]}


@dataclass
class Inverse:
    """``mat2⁻¹`` as applied from the right, and the projector onto the directions it leaves unconstrained."""

    right: Callable[[torch.Tensor], torch.Tensor]  # rhs (… × d, float64) → rhs · mat2⁻¹ on the constrained directions
    unconstrained: torch.Tensor  # d × d projector; zero when every direction is constrained
    info: dict  # solver, rank, unconstrained_directions, condition (λ_max / λ_min of what was inverted)


def invert(matrix: torch.Tensor, *, solver: str = "exact", rcond: float = RCOND) -> Inverse:
    """Invert the symmetric positive semi-definite ``mat2`` (float64): exactly where possible, else the λ → 0⁺ limit.

    **Rank test.**  The keys are rows computed in float32 (``encode_prompts`` computes them
    so in a float16/bfloat16 run too), each known only to a relative round-off ``ε`` (float32's).
    Along a unit direction ``u`` in which every key is pure round-off, ``uᵀ mat2 u ≤
    ε² Σ‖k‖² ≤ ε² · trace(mat2)``.  So ``mat2`` is *singular to working precision* iff
    its smallest eigenvalue is at most ``ε² · trace(mat2)``; those eigen-directions
    carry no information.

    * ``solver="exact"`` (default): if no eigenvalue is at or below that bound,
      ``rhs · mat2⁻¹`` is ``torch.linalg.solve`` in float64 (no explicit inverse), as the
      official codes' ``torch.inverse`` computes it but without its float32 round-off.
      Otherwise the eigen-directions at or below the bound are unconstrained and the
      rest is inverted exactly (the limit below, with the rank test as threshold).
    * ``solver="limit"``: eigenvalues below ``rcond · λ_max`` (1e-6) count as
      unconstrained, whatever the precision.  This was the only solver before; it
      drops directions that are badly conditioned but well determined.

    In unconstrained directions the weights are kept as they are (the ``unconstrained``
    projector term): that is the λ → 0⁺ limit of Eq. 5.  A plain inverse would blow
    round-off up there, and a pseudo-inverse would zero the weights there.
    """
    if solver not in SOLVERS:
        raise HarnessError(f"solver={solver!r}: choose 'exact' (float64 solve) or 'limit' (λ → 0⁺ with rcond {rcond:g})")
    matrix = (matrix.double() + matrix.double().T) / 2  # symmetric by construction; remove the round-off
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    largest = float(eigenvalues.max()) if len(eigenvalues) else 0.0
    if solver == "exact":
        bound = torch.finfo(torch.float32).eps ** 2 * float(torch.trace(matrix))
    else:
        bound = rcond * largest
    keep = eigenvalues > bound if largest > 0 else torch.zeros_like(eigenvalues, dtype=torch.bool)
    info = {
        "solver": solver,
        "rank": int(keep.sum()),
        "unconstrained_directions": int((~keep).sum()),
        "condition": largest / float(eigenvalues[keep].min()) if bool(keep.any()) else None,
        "singular_bound": bound,
    }
    if solver == "exact" and bool(keep.all()):
        info["solve"] = "torch.linalg.solve (float64)"
        return Inverse(lambda rhs: torch.linalg.solve(matrix, rhs.double().T).T, torch.zeros_like(matrix), info)
    kept, dropped = eigenvectors[:, keep], eigenvectors[:, ~keep]
    pseudo = (kept / eigenvalues[keep]) @ kept.T
    info["solve"] = "eigendecomposition, λ → 0⁺ in the unconstrained directions"
    return Inverse(lambda rhs: rhs.double() @ pseudo, dropped @ dropped.T, info)


# --------------------------------------------------------------------------- preservation statistics of a caption set


def caption_statistics(pipe, captions: list[str], ctx, batch_size: int = 64) -> KeyStatistics:
    """``Σ p pᵀ`` over **every token row** of every caption (MACE's ``all_words`` COCO cache, MACE @ 057e7a6 ``src/cfr_utils.py``).

    Computed once per (backbone, text encoder, caption set) and cached through
    ``ctx.cached_tensors``; ``count`` is the number of captions, so callers can
    take the mean per caption.
    """
    text_encoder = pipe.text_encoder
    key = {
        "statistic": "caption-key-key",
        "version": 1,
        "captions_sha256": sha256_json(list(captions)),
        "captions": len(captions),
        "max_length": pipe.tokenizer.model_max_length,
        "text_encoder_dtype": str(text_encoder.dtype),
        **rows_computed_in(pipe),
        # the backbone fingerprint names the model; this catches a swapped or edited text encoder (a composition's
        # checkpoint+trce-t): every weight's bytes, where a sum and sum of squares missed a permutation of rows
        "text_encoder": module_fingerprint(text_encoder),
    }

    def compute() -> dict:
        from methods.text import encode_prompts

        dim = text_encoder.config.hidden_size
        total = torch.zeros(dim, dim, dtype=torch.float64, device=text_encoder.device)
        starts = ctx.progress(range(0, len(captions), batch_size), desc="preservation statistics")
        with float32_text_encoder(pipe):  # once for every batch, not once per batch
            for start in starts:
                rows = encode_prompts(pipe, captions[start : start + batch_size]).embeddings.flatten(0, 1)
                total += second_moment(rows, rows)
        return {"key_key": total, "captions": torch.tensor(float(len(captions)), dtype=torch.float64)}

    tensors = ctx.cached_tensors("closed-form-preservation", key, compute)
    key_key = tensors["key_key"].double().cpu()
    return KeyStatistics(key_key, key_key, float(tensors["captions"]))


