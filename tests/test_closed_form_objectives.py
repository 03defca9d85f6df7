"""The weights UCE, RECE and TRCE-T install minimise each one's written objective, with its own weights.

Each method solves, for every cross-attention key/value matrix W (methods/closed_form.py),

    min_W'  λ‖W' − W‖² + e Σ_i w_i ‖W' k_i − W t_i‖² + s Σ_j ‖W' p_j − W p_j‖²,

so the installed W' must make the gradient vanish (the normal equations):

    λ (W' − W) + e (W' Kᵀ − W Tᵀ) diag(w) K + s (W' − W) Pᵀ P = 0.

The tests below rebuild K, T, P and the weights λ, e, s from each paper's text (the rows through ``methods.text``,
the scales written out here) and measure that gradient on the weights the method left in the UNet.  A method that
dropped or changed a term (a preservation scale of 0, the erase term not divided by the number of prompt pairs, the
caption sum not averaged, a target mapped to its own key) leaves a gradient of the order of the terms themselves;
the checks ask for 1e-4 of it.  Other tests pin which rows each method reads (tests/test_uce_rece_trce_t.py).
"""

import pytest
import torch

from harness.api import ConceptSet
from methods.closed_form import cross_attention_projections
from methods.rece import RECE
from methods.text import encode_prompts, first_eot_index
from methods.trce_t import TRCET
from methods.uce import UCE, token_block_rows

CAPTIONS = ("a cat on a mat", "a red bus", "two dogs in snow", "a bowl of fruit", "a man on a bike", "a tall tree")
CONCEPTS = ConceptSet(
    name="tiny-nudity",
    erase=("nudity", "bare skin"),
    guides=(" ", "a person"),
    preserve=("a dog", "a red car"),
    phrases=(("nudity", "a person wearing clothes"), ("bare skin", "a person wearing clothes"), ("nude", "clothes")),
    templates=("a photo of {}", "{} in art"),
    captions=CAPTIONS,
)


def kv_weights(pipe) -> dict[str, torch.Tensor]:
    return {name: module.weight.detach().double().clone() for name, module in cross_attention_projections(pipe.unet)}


def gradient_share(before, after, keys, targets, preserved, *, lamb, erase, preserve, weights=None) -> float:
    """The largest, over the matrices, ‖normal-equation residual‖ / (sum of its three terms' norms)."""
    keys, targets, preserved = keys.double(), targets.double(), preserved.double()
    weighted = keys if weights is None else keys * weights.double()[:, None]
    worst = 0.0
    for name, w in before.items():
        w_new = after[name]
        terms = [lamb * (w_new - w), erase * (w_new @ keys.T - w @ targets.T) @ weighted, preserve * (w_new - w) @ preserved.T @ preserved]
        residual = sum(terms)
        worst = max(worst, float(residual.norm() / sum(term.norm() for term in terms)))
    return worst


def test_uce_installs_the_minimiser_of_its_objective(pipe, ctx):
    """UCE (Gandikota et al., WACV 2024; official train-scripts/train_erase.py @ 35e91e2): concept rows → guide rows, retain rows kept, λ = 0.5, e = 1, and the
    official preservation weight max(0.1, 1/|R|) over R = ["", *preserve] (so 1/3 here)."""
    before = kv_weights(pipe)
    UCE(UCE.Params()).edit(pipe, CONCEPTS, ctx)
    keys, targets = token_block_rows(pipe, list(zip(CONCEPTS.erase, CONCEPTS.guides)))
    retain = encode_prompts(pipe, ["", *CONCEPTS.preserve]).embeddings.flatten(0, 1)
    share = gradient_share(before, kv_weights(pipe), keys, targets, retain, lamb=0.5, erase=1.0, preserve=1 / 3)
    assert share < 1e-4
    # not vacuous: the same weights miss the objective with the preservation term left out
    assert gradient_share(before, kv_weights(pipe), keys, targets, retain, lamb=0.5, erase=1.0, preserve=0.0) > 1e-2


def test_trce_t_installs_the_minimiser_of_equation_5(pipe, ctx):
    """TRCE-T (paper §4.1, Eq. 4–5; App. C.1): the first-[EoT] row of each of the N·M malicious prompts → that of
    its safe prompt, the erase term divided by N·M; every token row of every caption preserved with s = 0.01 over
    the caption count (a mean); λ_W = 0."""
    before = kv_weights(pipe)
    TRCET(TRCET.Params()).edit(pipe, CONCEPTS, ctx)
    pairs = [(t.format(bad), t.format(safe)) for bad, safe in CONCEPTS.phrases for t in CONCEPTS.templates]
    malicious, safe = encode_prompts(pipe, [b for b, _ in pairs]), encode_prompts(pipe, [s for _, s in pairs])
    eos = pipe.tokenizer.eos_token_id
    keys = torch.stack([malicious.embeddings[i, first_eot_index(malicious.input_ids[i], eos)] for i in range(len(pairs))])
    targets = torch.stack([safe.embeddings[i, first_eot_index(safe.input_ids[i], eos)] for i in range(len(pairs))])
    captions = encode_prompts(pipe, list(CAPTIONS)).embeddings.flatten(0, 1)
    after = kv_weights(pipe)
    share = gradient_share(before, after, keys, targets, captions, lamb=0.0, erase=1 / len(pairs), preserve=0.01 / len(CAPTIONS))
    assert share < 1e-4
    for erase, preserve in ((1.0, 0.01 / len(CAPTIONS)), (1 / len(pairs), 0.01)):  # not normalised: another edit
        assert gradient_share(before, after, keys, targets, captions, lamb=0.0, erase=erase, preserve=preserve) > 1e-2


@pytest.mark.parametrize("epochs", [1, 2])
def test_each_rece_epoch_installs_the_minimiser_of_its_re_erase_objective(pipe, ctx, monkeypatch, epochs):
    """RECE (Gong et al., ECCV 2024, Eq. 3; official erase_methods/uce.py): an epoch starts from the current W, finds
    c′ = (λ_r I + Σ_l W_lᵀ W_l)⁻¹ (Σ_l W_lᵀ W⁰_l) c for every row c of each concept prompt (W⁰: the weights before any
    edit), and solves UCE's objective with c′ → the guide prompt's rows (position by position) as the erase term,
    λ = 0.1, e = 1, and p = 0.1 on " " (once per concept) and the preserve list."""
    import methods.rece as rece

    original = kv_weights(pipe)
    starts = []
    solve = rece.closed_form_edit

    def recording(projections, erase, **kwargs):  # RECE's own solves (UCE's goes through methods.uce)
        starts.append({name: module.weight.detach().double().clone() for name, module in projections})
        return solve(projections, erase, **kwargs)

    monkeypatch.setattr(rece, "closed_form_edit", recording)
    RECE(RECE.Params(epochs=epochs, regular_scale=0.05)).edit(pipe, CONCEPTS, ctx)
    assert len(starts) == epochs
    start, after = starts[-1], kv_weights(pipe)

    # c′ from the formula, on the weights the last epoch started from
    gram = 0.05 * torch.eye(next(iter(start.values())).shape[1], dtype=torch.float64)
    cross = torch.zeros_like(gram)
    for name, w in start.items():
        gram += w.T @ w
        cross += w.T @ original[name]
    concept = encode_prompts(pipe, list(CONCEPTS.erase)).embeddings.flatten(0, 1).double()
    adversarial = torch.linalg.solve(gram, cross @ concept.T).T
    guides = encode_prompts(pipe, list(CONCEPTS.guides)).embeddings.flatten(0, 1)
    retain = encode_prompts(pipe, [" "] * len(CONCEPTS.erase) + list(CONCEPTS.preserve)).embeddings.flatten(0, 1)
    assert gradient_share(start, after, adversarial, guides, retain, lamb=0.1, erase=1.0, preserve=0.1) < 1e-4
    # not vacuous: c′ mapped onto itself (no erasure), or no pull towards W, is another edit
    assert gradient_share(start, after, adversarial, adversarial, retain, lamb=0.1, erase=1.0, preserve=0.1) > 1e-2
    assert gradient_share(start, after, adversarial, guides, retain, lamb=0.0, erase=1.0, preserve=0.1) > 1e-2
