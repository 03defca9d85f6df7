"""``speed``: SPEED, Scalable, Precise, Efficient concept Erasure (Li et al., ICLR 2026; arXiv 2503.07392).

SPEED is a closed-form edit of the cross-attention **value** projections only
(``attn2.to_v``; official code Ouxiang-Li/SPEED @ 6d3df0c ``train_erase_null.py``).  Like
UCE it maps each target concept's text rows onto an anchor's, but the update is
confined to the (near-)null space of a *retain* set, so retained inputs keep their
values, and a few invariant inputs ([SoT] and the null text) are kept exactly.
Notation as in ``methods/text.py`` (rows are d-vectors; ``Σ a tᵀ`` is d × d):

1. **Targets and anchors.**  ``X_t`` and ``X_a`` are position-aligned rows of the
   target prompt and of its anchor prompt.  ``tokens="all"`` uses rows 1 … L−1 (every
   row after [SoT]; the official nudity mode), ``tokens="last"`` the last word row only
   (the official mode for every other concept).  Over the concepts:

       C_tt = mean_c Σ t tᵀ,   C_at = mean_c Σ a tᵀ

2. **Invariants (IEC).**  ``K2 = [E('')_0, kmeans_3(E('')[1:L])]``: the [SoT] row and
   three k-means centres of the null text's other rows (seeded k-means).

3. **Retain set.**  Rows of the retain texts, with the same row choice as the targets.  (Read
   from the official ``train_erase_null.py``, a reviewer found another rule: every row when the
   retain list is exactly ``[""]``, else each text's last subject row, whatever the target
   mode.  The two agree for the shipped concept sets; they differ for an ``object`` set with
   ``all`` rows and a preserve list.  Not settled here.)  For
   each edited matrix W (IPF and DPA, paper §3.2):

       Ẇ_e = W (C_at − C_tt)(I + C_tt)⁻¹                          "how much the edit moves r"
       IPF : keep r with ‖Ẇ_e r‖ > mean_r ‖Ẇ_e r‖
       DPA : r' = r + (ξ·v_min) v_min,  ξ ~ N(0, I),  aug_num per kept r, where v_min is
             the right-singular vector of W's smallest singular value in its reduced SVD (a
             direction W barely sees, so W r' ≈ W r).  For a wide W (out < in: SD's 320- and
             640-row ``to_v``, 10 of 16) that is the smallest *non-zero* one, as ``torch.svd``
             gives it in the official code; a full SVD's last row would be a vector of W's null
             space instead, orthogonal to it, and would change which retain rows are kept;
             keep r' with ‖Ẇ_e r'‖ > mean_{r'} ‖Ẇ_e r'‖, the mean over the perturbed rows
             (per chunk of 128 retain rows, as the official code; it also shuffles the
             rows before chunking, which matters only beyond 128 retain rows)
       C_rr = mean of r rᵀ over the kept r and r'
       P    = U_{σ<τ} U_{σ<τ}ᵀ,   (U, σ) = eigh(C_rr)                the approximate null space of the retain set

4. **The update** (null-space constrained least squares with the IEC equality
   constraint relaxed by λ; ``train_erase_null.py``, ``edit_model``):

       M  = (C_tt P + α I)⁻¹
       ΔW = W (C_at − C_tt) P (I − M K2 (K2ᵀ P M K2 + λ I)⁻¹ K2ᵀ P) M
       W ← W + ΔW

   Why it preserves: for any x with P x = 0, ``C_tt P x = 0`` so ``M x = x / α``,
   and ΔW x = W(C_at − C_tt) P (I − …) x / α = W(C_at − C_tt) P x / α = 0.  So ΔW
   vanishes on the span of the retain rows up to the threshold τ, and with λ = 0
   also on K2 exactly.  ``(·)⁻¹`` of the 4 × 4 IEC system is a pseudo-inverse: an
   invariant that already lies in the retain span (P k = 0) is preserved by P and
   adds no constraint.

Defaults are the official ones: only ``to_v``, τ = 0.1, aug_num = 10, seed 0; the
nudity preset α = 0.7 (``retain_scale``), λ = 0.5 with ``tokens="all"``, and the
few-concept preset α = 1.0, λ = 0 with ``tokens="last"``.

How a concept set becomes the inputs:

* targets = the set's ``erase`` keywords; anchors = its ``guides`` ("" for " ", i.e. the
  null text).  ``sexual`` gives the official nudity run exactly ("nudity" → "").
* ``tokens="auto"`` (default): ``"all"`` for sets of kind ``object`` (the harness's
  safety sets ``sexual``/``unsafe`` and the toy world's ``toy-red``, which plays the
  malicious concept) and ``"last"`` for styles (``van-gogh`` → "art", as the official
  Van Gogh run).  The official code picks "all" only when the target list is exactly
  ``['nudity']`` and silently falls back to "last" for any other implicit concept
  (``train_erase_null.py``: ``if target_concepts == ['nudity']``); here the choice follows the concept's kind, and
  ``tokens=all|last`` forces it.  ``retain_scale``/``lamb`` default to the preset of the
  chosen mode.
* retain texts = ``[""]`` + the set's ``preserve`` list (the official nudity run retains
  ``[""]`` only, and the art runs a style list); a retain text that contains a target
  word is dropped, as the official code does (pitfall 5).

k-means is seeded (``seed``); its centres are not the ones ``kmeans_pytorch`` draws.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch

from harness.api import ConceptSet, HarnessError, Method, MethodKind
from methods.closed_form import cross_attention_projections
from methods.text import encode_prompts, last_word_index

DPA_CHUNK = 128  # retain rows per augmentation chunk (official chunk_size); the keep threshold is a per-chunk mean

# (retain_scale α, lamb λ) of the official runs, by token mode.
PRESETS = {"all": (0.7, 0.5), "last": (1.0, 0.0)}
MATRICES = {"V": ("to_v",), "K": ("to_k",), "KV": ("to_v", "to_k")}


class SPEED(Method):
    name = "speed"
    display_name = "SPEED"
    description = "SPEED: closed-form to_v edit inside the null space of a filtered, augmented retain set (IPF/DPA/IEC)"
    paper = "Li et al., SPEED: Scalable, Precise, and Efficient Concept Erasure for Diffusion Models, ICLR 2026"
    kind = MethodKind.EDIT
    version = "2"  # 2: DPA threshold over the perturbed rows; disable_filter keeps DPA
    # The defaults are the official code (SPEED @ 6d3df0c, train_erase_null.py, scripts/eval_nudity.sh), except that
    # tokens="auto" picks the token mode by concept kind, where the code tests the target list for ['nudity'].
    presets = {"official": {"threshold": 0.1, "aug_num": 10, "disable_filter": False, "anchor_clusters": 3, "matrices": "V", "seed": 0}}

    @dataclass
    class Params:
        tokens: Literal["auto", "all", "last"] = "auto"  # which target rows (module docstring)
        retain_scale: float | None = None  # α; None = preset of the token mode (0.7 all, 1.0 last)
        lamb: float | None = None  # λ of the IEC constraint; None = preset (0.5 all, 0.0 last)
        threshold: float = 0.1  # τ: eigenvalues of C_rr below it span the null space
        aug_num: int = 10  # DPA copies per retained row; 0 turns DPA and IPF off (official)
        disable_filter: bool = False  # IPF off: keep every retain row; DPA still runs (official --disable_filter)
        anchor_clusters: int = 3  # k-means centres of the null text in K2
        matrices: Literal["V", "K", "KV"] = "V"  # official params='V'
        seed: int = 0  # k-means and DPA noise

    def edit(self, pipe, concepts: ConceptSet, ctx) -> dict:
        params = self.params
        mode = params.tokens if params.tokens != "auto" else ("last" if concepts.kind == "style" else "all")
        default_alpha, default_lamb = PRESETS[mode]
        alpha = default_alpha if params.retain_scale is None else params.retain_scale
        lamb = default_lamb if params.lamb is None else params.lamb
        targets, anchors = target_anchor_pairs(concepts)
        retain_texts = retain_prompts(concepts, targets)

        stats = SpeedStatistics.build(pipe, targets, anchors, retain_texts, mode, params.anchor_clusters, params.seed)
        projections = [(name, module) for name, module in cross_attention_projections(pipe.unet, edit_keys="K" in params.matrices)
                       if name.rsplit(".", 1)[-1] in MATRICES[params.matrices]]
        generator = torch.Generator().manual_seed(params.seed)
        per_matrix = {}
        with torch.no_grad():
            for name, module in ctx.progress(projections, desc="speed"):
                delta, info = null_space_update(module.weight, stats, alpha=alpha, lamb=lamb, threshold=params.threshold,
                                                 aug_num=params.aug_num, filter_retain=not params.disable_filter, generator=generator)
                module.weight.copy_((module.weight.double() + delta.to(module.weight.device)).to(module.weight.dtype))
                info.pop("projector")  # a d × d tensor: for tests, not for the stored metadata
                per_matrix[name] = info
        return {
            "method": "speed",
            "tokens": mode,
            "retain_scale": alpha,
            "lamb": lamb,
            "threshold": params.threshold,
            "aug_num": params.aug_num,
            "filter": not params.disable_filter and params.aug_num > 0,
            "augmentation": params.aug_num > 0,
            "targets": [list(pair) for pair in zip(targets, anchors)],
            "retain": retain_texts,
            "retain_rows": int(stats.retain.shape[0]),
            "invariants": int(stats.invariants.shape[1]),
            "matrices": list(per_matrix),
            "per_matrix": per_matrix,
            "quirks": {},
        }


def target_anchor_pairs(concepts: ConceptSet) -> tuple[list[str], list[str]]:
    if not concepts.erase:
        raise HarnessError(f"speed: concept set {concepts.name!r} has nothing to erase (its 'erase' list is empty)")
    targets = list(concepts.erase)
    anchors = [concepts.guide_for(i).strip() for i in range(len(targets))]  # " " and "" are the same null text
    return targets, anchors


def retain_prompts(concepts: ConceptSet, targets: list[str]) -> list[str]:
    """``[""]`` + preserve, without any text that names a target word (the official filter)."""
    pattern = re.compile(r"\b(" + "|".join(re.escape(t) for t in targets) + r")\b", re.IGNORECASE)
    texts = [""] + [text for text in concepts.preserve if text.strip()]
    return [text for text in dict.fromkeys(texts) if not pattern.search(text)]


# --------------------------------------------------------------------------- statistics of the text side


@dataclass
class SpeedStatistics:
    """Everything the update needs from the text encoder, shared by all edited matrices (float64, CPU)."""

    target_target: torch.Tensor  # C_tt (d × d)
    anchor_target: torch.Tensor  # C_at (d × d)
    retain: torch.Tensor  # retain rows R (n × d)
    invariants: torch.Tensor  # K2 (d × (1 + clusters))

    @classmethod
    def build(cls, pipe, targets, anchors, retain_texts, mode: str, clusters: int, seed: int) -> SpeedStatistics:
        target_rows = token_rows(pipe, targets, mode)
        anchor_rows = token_rows(pipe, anchors, mode)
        # C_tt = mean over concepts of Σ t tᵀ, C_at = mean of Σ a tᵀ (position-aligned rows)
        target_target = sum(t.T @ t for t in target_rows) / len(targets)
        anchor_target = sum(a.T @ t for a, t in zip(anchor_rows, target_rows)) / len(targets)
        retain = torch.cat(token_rows(pipe, retain_texts, mode))
        null = encode_prompts(pipe, [""]).embeddings[0].double().cpu()
        centres = kmeans(null[1:], clusters, seed)
        invariants = torch.cat([null[:1], centres]).T  # K2: [SoT] + the centres, as columns
        return cls(target_target, anchor_target, retain, invariants)


def token_rows(pipe, prompts: list[str], mode: str) -> list[torch.Tensor]:
    """Per prompt, its rows 1 … L−1 (``all``) or its last word row (``last``), float64 on the CPU."""
    encoded = encode_prompts(pipe, prompts)
    embeddings = encoded.embeddings.double().cpu()
    if mode == "all":
        return [rows[1:] for rows in embeddings]
    return [rows[last_word_index(mask)][None] for rows, mask in zip(embeddings, encoded.attention_mask)]


def kmeans(points: torch.Tensor, clusters: int, seed: int, iterations: int = 100) -> torch.Tensor:
    """Lloyd's k-means (euclidean) from ``clusters`` distinct points drawn with ``seed``; returns the centres."""
    clusters = min(clusters, len(points))
    generator = torch.Generator().manual_seed(seed)
    centres = points[torch.randperm(len(points), generator=generator)[:clusters]].clone()
    assignment = None
    for _ in range(iterations):
        new_assignment = torch.cdist(points, centres).argmin(dim=1)
        if assignment is not None and torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
        for index in range(clusters):
            members = points[assignment == index]
            if len(members):  # an empty cluster keeps its centre
                centres[index] = members.mean(dim=0)
    return centres


# --------------------------------------------------------------------------- the update of one matrix


def null_space_update(weight: torch.Tensor, stats: SpeedStatistics, *, alpha: float, lamb: float, threshold: float, aug_num: int,
                      filter_retain: bool, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """ΔW for one matrix (module docstring, steps 3–4), in float64 on the CPU, and what shaped it.

    ``info`` holds the number of retain rows kept, the null-space dimension and the projector ``P`` itself.
    """
    W = weight.detach().double().cpu()
    dim = W.shape[1]
    identity = torch.eye(dim, dtype=torch.float64)
    shift = stats.anchor_target - stats.target_target  # C_at − C_tt

    # 3. IPF and DPA: the retain rows the edit would move most, and nearby variants of them
    retain = stats.retain
    if aug_num > 0:
        erase_weight = W @ shift @ torch.linalg.inv(identity + stats.target_target)  # Ẇ_e
        influence = lambda rows: (rows @ erase_weight.T).norm(dim=1)  # noqa: E731  ‖Ẇ_e r‖ per row
        if filter_retain:  # IPF: keep the rows above the mean influence of the retain rows
            retain = retain[influence(retain) > influence(retain).mean()]
        weakest = torch.linalg.svd(W, full_matrices=False).Vh[-1]  # v_min (reduced SVD: see the module docstring)
        kept = [retain]
        for start in range(0, len(retain), DPA_CHUNK):  # DPA, per chunk of retain rows as the official code
            rows = retain[start : start + DPA_CHUNK]
            noise = torch.randn(len(rows), aug_num, dim, generator=generator, dtype=torch.float64)
            augmented = (rows[:, None, :] + (noise @ weakest)[..., None] * weakest).reshape(-1, dim)
            strength = influence(augmented)
            kept.append(augmented[strength > strength.mean()])  # above the mean over the perturbed rows themselves
        retain = torch.cat(kept)
    if len(retain):
        retain_retain = retain.T @ retain / len(retain)  # C_rr
        eigenvalues, eigenvectors = torch.linalg.eigh((retain_retain + retain_retain.T) / 2)
        null_basis = eigenvectors[:, eigenvalues < threshold]
    else:
        null_basis = identity
    P = null_basis @ null_basis.T

    # 4. ΔW = W (C_at − C_tt) P (I − M K2 (K2ᵀ P M K2 + λI)⁻¹ K2ᵀ P) M,   M = (C_tt P + αI)⁻¹
    M = torch.linalg.inv(stats.target_target @ P + alpha * identity)
    K2 = stats.invariants
    constraint = K2.T @ P @ M @ K2 + lamb * torch.eye(K2.shape[1], dtype=torch.float64)
    keep_invariants = identity - M @ K2 @ torch.linalg.pinv(constraint, rtol=1e-10) @ K2.T @ P
    delta = W @ shift @ P @ keep_invariants @ M
    info = {"retain_rows_kept": int(len(retain)), "null_space_dim": int(null_basis.shape[1]), "projector": P}
    return delta, info
