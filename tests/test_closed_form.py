"""The shared closed-form cross-attention solver: which matrices, the normal equations, and the preservation cache."""

import pytest
import torch

from methods.closed_form import KeyStatistics, caption_statistics, closed_form_edit, cross_attention_projections
from methods.text import encode_prompts


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def linear_layers(*out_features, dim=8, dtype=torch.float32):
    torch.manual_seed(0)
    return [(f"layer{i}.attn2.to_v", torch.nn.Linear(dim, out, bias=False).to(dtype)) for i, out in enumerate(out_features)]


# --------------------------------------------------------------------------- which matrices


def test_projections_are_found_by_name_values_first_then_keys(tiny):
    projections = cross_attention_projections(tiny.unet)
    names = [name for name, _ in projections]
    assert len(names) == 8  # the tiny UNet has 4 cross-attention layers
    assert all(name.endswith("attn2.to_v") for name in names[:4])
    assert all(name.endswith("attn2.to_k") for name in names[4:])
    # down, up, mid: the registration order of UNet2DConditionModel, as the official get_ca_layers walks it
    assert [name.split(".")[0] for name in names[:4]] == ["down_blocks", "up_blocks", "up_blocks", "mid_block"]
    assert [n.removesuffix("to_k") for n in names[4:]] == [n.removesuffix("to_v") for n in names[:4]]
    assert [name for name, _ in cross_attention_projections(tiny.unet, edit_keys=False)] == names[:4]


def test_projections_of_any_layout_are_found_by_module_name():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn1 = torch.nn.ModuleDict({"to_k": torch.nn.Linear(4, 4), "to_v": torch.nn.Linear(4, 4)})
            self.attn2 = torch.nn.ModuleDict({"to_k": torch.nn.Linear(4, 6), "to_v": torch.nn.Linear(4, 6)})

    model = torch.nn.ModuleDict({"first": Block(), "second": torch.nn.ModuleList([Block()])})
    names = [name for name, _ in cross_attention_projections(model)]
    assert names == ["first.attn2.to_v", "second.0.attn2.to_v", "first.attn2.to_k", "second.0.attn2.to_k"]
    with pytest.raises(ValueError, match="attn2"):
        cross_attention_projections(torch.nn.Linear(2, 2))


# --------------------------------------------------------------------------- the normal equations


def test_solve_equals_the_normal_equations_written_out():
    """W' = (λW + e(W Σtkᵀ + Σvkᵀ) + s W Σppᵀ)(λI + e Σkkᵀ + s Σppᵀ)⁻¹, per matrix, in float64."""
    torch.manual_seed(1)
    projections = linear_layers(5, 12)
    before = [module.weight.detach().double().clone() for _, module in projections]
    keys, targets, weights = torch.randn(6, 8), torch.randn(6, 8), torch.rand(6) + 0.5
    erase = KeyStatistics.from_pairs(keys, targets, weights)
    preserve = KeyStatistics.preserve(torch.randn(20, 8))
    values = {projections[1][0]: torch.randn(12, 8, dtype=torch.float64)}  # an explicit Σ v kᵀ for one matrix
    lamb, e, s = 0.3, 1.7, 0.2

    info = closed_form_edit(projections, erase, lamb=lamb, erase_scale=e, preserve=preserve, preserve_scale=s, value_key=values)

    k, t, w = keys.double(), targets.double(), weights.double()
    sum_kk = (k * w[:, None]).T @ k
    sum_tk = t.T @ (k * w[:, None])
    for (name, module), weight in zip(projections, before):
        sum_vk = weight @ sum_tk + values.get(name, torch.zeros_like(weight @ sum_tk))
        mat1 = lamb * weight + e * sum_vk + s * weight @ preserve.key_key
        mat2 = lamb * torch.eye(8, dtype=torch.float64) + e * sum_kk + s * preserve.key_key
        expected = mat1 @ torch.linalg.inv(mat2)
        assert relative(module.weight.double(), expected) < 1e-5
    assert info["solver"] == "exact" and info["rank"] == 8 and info["unconstrained_directions"] == 0
    assert info["matrices"] == [name for name, _ in projections]


# --------------------------------------------------------------------------- exact solve versus the λ → 0⁺ limit


def official_formula(weight, keys, targets, lamb, preserved=(), preserve_scale=0.0):
    """UCE's ``edit_model`` written out independently, in float64: sums over keys, then ``torch.inverse``.

    mat1 = λW + Σ (W t) kᵀ + s Σ (W p) pᵀ,  mat2 = λI + Σ k kᵀ + s Σ p pᵀ,  W' = mat1 · mat2⁻¹
    (UCE @ 35e91e2, train-scripts/train_erase.py, ``edit_model``).
    """
    weight = weight.double()
    dim = weight.shape[1]
    mat1 = lamb * weight.clone()
    mat2 = lamb * torch.eye(dim, dtype=torch.float64)
    for key, target in zip(keys.double(), targets.double()):
        mat1 += torch.outer(weight @ target, key)
        mat2 += torch.outer(key, key)
    for row in torch.as_tensor(preserved).double():
        mat1 += preserve_scale * torch.outer(weight @ row, row)
        mat2 += preserve_scale * torch.outer(row, row)
    return mat1 @ torch.inverse(mat2)


def badly_conditioned_keys(dim=8, count=20, small=1e-4):
    """Keys that span every direction, one of them only weakly: λ_min / λ_max ≈ small², far above round-off."""
    generator = torch.Generator().manual_seed(4)
    keys = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    keys[:, -1] *= small
    return keys.float(), torch.randn(count, dim, generator=generator)


@pytest.mark.parametrize("solver", ["exact", "limit"])
def test_both_solvers_match_the_official_formula_on_a_well_conditioned_system(solver):
    projections = linear_layers(5, 12)
    before = [module.weight.detach().clone() for _, module in projections]
    keys, targets = torch.randn(6, 8), torch.randn(6, 8)
    info = closed_form_edit(projections, KeyStatistics.from_pairs(keys, targets), lamb=0.5, solver=solver)
    for (_, module), weight in zip(projections, before):
        assert relative(module.weight.double(), official_formula(weight, keys, targets, 0.5)) < 1e-6
    assert info["solver"] == solver and info["unconstrained_directions"] == 0 and info["condition"] > 1


def test_exact_solver_inverts_a_badly_conditioned_system_the_limit_drops_its_weak_direction():
    """λ = 0, keys spanning every direction, one weakly (condition ≈ 1e8): determined, so the official inverse and
    the exact solve agree, while the 1e-6 cut of ``solver=limit`` leaves that direction unconstrained."""
    keys, targets = badly_conditioned_keys()
    results = {}
    for solver in ("exact", "limit"):
        projections = linear_layers(5, 12)
        before = [module.weight.detach().clone() for _, module in projections]
        info = closed_form_edit(projections, KeyStatistics.from_pairs(keys, targets), lamb=0.0, solver=solver)
        results[solver] = info
        errors = [relative(m.weight.double(), official_formula(w, keys, targets, 0.0)) for (_, m), w in zip(projections, before)]
        if solver == "exact":
            assert max(errors) < 1e-5
        else:
            assert min(errors) > 1e-2
    assert results["exact"]["unconstrained_directions"] == 0 and results["limit"]["unconstrained_directions"] == 1
    eigenvalues = torch.linalg.eigvalsh(keys.double().T @ keys.double())
    assert results["exact"]["condition"] == pytest.approx(float(eigenvalues[-1] / eigenvalues[0]), rel=1e-6)  # recorded
    assert results["exact"]["condition"] > 1e7


@pytest.mark.parametrize("solver", ["exact", "limit"])
def test_a_system_singular_to_working_precision_takes_the_lambda_to_zero_limit(solver):
    """λ = 0 and 5 keys in 8 dimensions: mat2 has rank 5.  Both solvers give the λ → 0⁺ limit of the official
    formula (evaluated at a tiny λ in float64) and say that 3 directions were left unconstrained."""
    projections = linear_layers(5, 12)
    before = [module.weight.detach().clone() for _, module in projections]
    torch.manual_seed(5)
    keys, targets = torch.randn(5, 8), torch.randn(5, 8)
    info = closed_form_edit(projections, KeyStatistics.from_pairs(keys, targets), lamb=0.0, solver=solver)
    assert info["unconstrained_directions"] == 3 and info["rank"] == 5
    for (_, module), weight in zip(projections, before):
        limit = official_formula(weight, keys, targets, 1e-9)
        assert relative(module.weight.double(), limit) < 1e-5


def test_an_unknown_solver_is_a_one_line_error():
    from harness.api import HarnessError

    with pytest.raises(HarnessError, match="solver='inverse'.*exact.*limit"):
        closed_form_edit(linear_layers(4), KeyStatistics.from_pairs(torch.randn(2, 8), torch.randn(2, 8)), lamb=0.1, solver="inverse")


def test_lambda_zero_without_preservation_maps_every_key_to_its_target(pipe):
    """Fewer keys than dimensions, λ = 0, no preservation: W' k = W t exactly, and W stays W off the keys' span."""
    projections = cross_attention_projections(pipe.unet)
    before = [module.weight.detach().double().clone() for _, module in projections]
    # real text-encoder rows as keys (what the methods use), random rows as targets.  [SoT] rows are the same for
    # every prompt (causal mask), so take rows 1–3 of prompts that differ from their first token on: 12 keys < 32
    keys = encode_prompts(pipe, ["nudity", "erotic art", "bare skin", "sensual"]).embeddings[:, 1:4].flatten(0, 1)
    targets = torch.randn(len(keys), keys.shape[1])
    info = closed_form_edit(projections, KeyStatistics.from_pairs(keys, targets, torch.rand(len(keys)) + 0.1), lamb=0.0)

    assert info["rank"] == len(keys) and info["unconstrained_directions"] == keys.shape[1] - len(keys)
    basis, _ = torch.linalg.qr(keys.double().T, mode="complete")
    elsewhere = basis[:, len(keys) :].T  # orthogonal to every key: nothing constrains these directions
    for (_, module), weight in zip(projections, before):
        wanted = targets.double() @ weight.T
        assert relative(keys.double() @ module.weight.double().T, wanted) < 1e-4
        assert relative(elsewhere @ module.weight.double().T, elsewhere @ weight.T) < 1e-4  # the λ → 0⁺ limit


def test_a_preserved_key_orthogonal_to_the_erased_keys_does_not_move(pipe):
    projections = cross_attention_projections(pipe.unet)
    before = [module.weight.detach().double().clone() for _, module in projections]
    torch.manual_seed(2)
    dim = before[0].shape[1]
    keys = torch.randn(5, dim, dtype=torch.float64)
    basis, _ = torch.linalg.qr(keys.T)  # orthonormal basis of span(keys)
    preserved = torch.randn(12, dim, dtype=torch.float64)
    preserved -= (preserved @ basis) @ basis.T  # not orthonormal, but orthogonal to every erased key
    erase = KeyStatistics.from_pairs(keys, torch.randn(5, dim, dtype=torch.float64))

    closed_form_edit(projections, erase, lamb=0.5, preserve=KeyStatistics.preserve(preserved), preserve_scale=1.0)

    for (_, module), weight in zip(projections, before):
        after = module.weight.double()
        assert relative(preserved[0] @ after.T, preserved[0] @ weight.T) < 1e-3
        assert relative(keys @ after.T, keys @ weight.T) > 0.1  # while the erased keys did move


def test_weights_are_solved_in_float32_or_better_and_written_back_in_their_dtype():
    half = linear_layers(6, 10, dtype=torch.float16)
    full = [(name, torch.nn.Linear(8, module.out_features, bias=False)) for name, module in half]
    for (_, h), (_, f) in zip(half, full):
        f.weight.data.copy_(h.weight.float())
    torch.manual_seed(3)
    erase = KeyStatistics.from_pairs(torch.randn(4, 8), torch.randn(4, 8))
    for projections in (half, full):
        closed_form_edit(projections, erase, lamb=0.5)
    for (_, h), (_, f) in zip(half, full):
        assert h.weight.dtype == torch.float16
        assert relative(h.weight.float(), f.weight) < 2e-3  # only the final fp16 rounding differs


def test_key_statistics_are_weighted_second_moments():
    keys, targets, weights = torch.randn(3, 4), torch.randn(3, 4), torch.tensor([1.0, 2.0, 0.5])
    stats = KeyStatistics.from_pairs(keys, targets, weights)
    expected_kk = sum(w * torch.outer(k, k) for k, w in zip(keys, weights)).double()
    expected_tk = sum(w * torch.outer(t, k) for k, t, w in zip(keys, targets, weights)).double()
    assert torch.allclose(stats.key_key, expected_kk, atol=1e-6)
    assert torch.allclose(stats.target_key, expected_tk, atol=1e-6)
    assert stats.count == pytest.approx(3.5)
    both = stats + KeyStatistics.preserve(keys)
    assert torch.allclose(both.target_key, expected_tk + keys.double().T @ keys.double(), atol=1e-6)
    assert stats.scaled(2).count == pytest.approx(7.0)


# --------------------------------------------------------------------------- preservation statistics


def test_caption_statistics_sum_every_token_row_and_are_cached(tiny, ctx):
    captions = ["a cat on a mat", "a red bus in the city", "two dogs playing in the snow"]
    first = caption_statistics(tiny, captions, ctx)
    assert ctx.cache_misses["closed-form-preservation"] == 1 and ctx.cache_hits["closed-form-preservation"] == 0

    rows = encode_prompts(tiny, captions).embeddings.flatten(0, 1).double()  # all L rows of every caption
    assert torch.allclose(first.key_key, rows.T @ rows, rtol=1e-5, atol=1e-6)
    assert first.count == 3  # normalisation is per caption

    second = caption_statistics(tiny, captions, ctx)
    assert ctx.cache_misses["closed-form-preservation"] == 1 and ctx.cache_hits["closed-form-preservation"] == 1
    assert torch.equal(first.key_key, second.key_key)

    caption_statistics(tiny, captions[:2], ctx)  # another caption set is another entry
    assert ctx.cache_misses["closed-form-preservation"] == 2


def test_caption_statistics_of_another_text_encoder_are_computed_anew(tiny, ctx):
    """The key held the encoder's weight sum and sum of squares: an encoder whose weight rows were permuted (or a
    fine-tune that kept both sums) was handed the base encoder's statistics."""
    captions = ["a cat on a mat", "a red bus in the city"]
    first = caption_statistics(tiny, captions, ctx)
    weight = tiny.text_encoder.get_parameter("encoder.layers.0.mlp.fc1.weight")
    original = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.copy_(original.flip(0))  # the same numbers in another order: equal sums
        second = caption_statistics(tiny, captions, ctx)
    finally:
        with torch.no_grad():
            weight.copy_(original)
    assert ctx.cache_misses["closed-form-preservation"] == 2
    assert not torch.allclose(first.key_key, second.key_key)
