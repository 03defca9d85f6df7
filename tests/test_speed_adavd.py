"""SPEED and AdaVD on the tiny backbone: what the edit changes and keeps, and the value decomposition's cases."""

import json
from pathlib import Path

import pytest
import torch

from harness.api import ConceptSet
from methods.adavd import AdaVD, ValueDecomposer, cross_attentions, target_embeddings
from methods.closed_form import cross_attention_projections
from methods.speed import SPEED, SpeedStatistics, kmeans, null_space_update, retain_prompts, token_rows
from methods.text import encode_prompts

CONCEPTS = ConceptSet(name="test", erase=("red",), guides=("gray",), preserve=("blue", "green", "a red bus"))
REPO = Path(__file__).resolve().parents[1]


def values_weights(pipe):
    return {name: module.weight.detach().double().clone() for name, module in cross_attention_projections(pipe.unet, edit_keys=False)}


# --------------------------------------------------------------------------- SPEED


def test_speed_changes_only_to_v(pipe, ctx):
    before = {name: tensor.clone() for name, tensor in pipe.unet.state_dict().items()}
    metadata = SPEED().edit(pipe, CONCEPTS, ctx)
    changed = sorted(name for name, tensor in pipe.unet.state_dict().items() if not torch.equal(tensor, before[name]))
    assert changed == sorted(f"{name}.weight" for name, _ in cross_attention_projections(pipe.unet, edit_keys=False))
    assert all(name.endswith("attn2.to_v.weight") for name in changed) and len(changed) == 4
    json.dumps(metadata)  # stored with the model state
    assert metadata["tokens"] == "all" and metadata["retain_scale"] == 0.7 and metadata["lamb"] == 0.5


def test_speed_leaves_retain_vectors_unchanged_and_maps_the_target_towards_its_anchor(pipe, ctx):
    # An exact null space (τ tiny) and every retain row kept: each retain row's value must not move.  The retain set is
    # the null text (L − 1 = 15 rows in d = 32), so a 17-dimensional null space is left for the edit.
    concepts = ConceptSet(name="test", erase=("red",), guides=("gray",))
    original = values_weights(pipe)
    params = SPEED.Params(threshold=1e-9, aug_num=0)  # no IPF, no DPA: the retain rows exactly
    metadata = SPEED(params).edit(pipe, concepts, ctx)
    assert all(info["null_space_dim"] == 32 - 15 for info in metadata["per_matrix"].values())
    edited = values_weights(pipe)
    retain = torch.cat(token_rows(pipe, [""], "all"))
    target = torch.cat(token_rows(pipe, ["red"], "all"))
    anchor = torch.cat(token_rows(pipe, ["gray"], "all"))
    for name in original:
        before, after = retain @ original[name].T, retain @ edited[name].T
        assert ((after - before).norm(dim=1) / before.norm(dim=1)).max() < 1e-5, name
        # the erased rows move towards the anchor's values
        distance_before = (target @ original[name].T - anchor @ original[name].T).norm()
        distance_after = (target @ edited[name].T - anchor @ original[name].T).norm()
        assert distance_after < 0.9 * distance_before, name


def test_speed_update_vanishes_outside_the_null_space_and_on_the_invariants(pipe):
    stats = SpeedStatistics.build(pipe, ["red"], ["gray"], retain_prompts(CONCEPTS, ["red"]), "all", 3, 0)
    weight = cross_attention_projections(pipe.unet, edit_keys=False)[0][1].weight
    identity = torch.eye(weight.shape[1], dtype=torch.float64)
    for lamb in (0.5, 0.0):
        delta, info = null_space_update(weight, stats, alpha=0.7, lamb=lamb, threshold=0.1, aug_num=10, filter_retain=True,
                                        generator=torch.Generator().manual_seed(0))
        P = info["projector"]
        assert 0 < info["null_space_dim"] < weight.shape[1]
        # ΔW (I − P) = 0 at the default approximate null space: whatever P discards is preserved exactly
        assert (delta @ (identity - P)).abs().max() < 1e-9 * delta.abs().max()
        assert delta.abs().max() > 0
    # With λ = 0 the invariant equality constraint holds: ΔW K2 = 0 ([SoT] and the null-text centres keep their values).
    assert (delta @ stats.invariants).abs().max() < 1e-8 * (weight.double() @ stats.invariants).abs().max()


def replay_dpa(weight, stats, aug_num, seed, ipf):
    """SPEED's IPF and DPA written out again (train_erase_null.py @ 6d3df0c): the retain rows kept, counted."""
    W = weight.detach().double()
    identity = torch.eye(W.shape[1], dtype=torch.float64)
    erase_weight = W @ (stats.anchor_target - stats.target_target) @ torch.linalg.inv(identity + stats.target_target)
    retain = stats.retain
    if ipf:
        norms = (retain @ erase_weight.T).norm(dim=1)
        retain = retain[norms > norms.mean()]
    # v_min from the eigenvectors of W Wᵀ (v = Wᵀu / σ for its smallest eigenvalue σ²), not from the SVD the method calls:
    # torch.svd's reduced V, whose last column is the smallest non-zero singular direction also when W is wide.
    eigenvalues, eigenvectors = torch.linalg.eigh(W @ W.T)
    v_min = W.T @ eigenvectors[:, 0] / eigenvalues[0].sqrt()
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(retain), aug_num, W.shape[1], generator=generator, dtype=torch.float64)
    perturbed = (retain[:, None, :] + (noise @ v_min)[..., None] * v_min).reshape(-1, W.shape[1])
    norms = (perturbed @ erase_weight.T).norm(dim=1)
    return len(retain) + int((norms > norms.mean()).sum()), len(retain)


@pytest.mark.parametrize("disable_filter", [False, True])
def test_speed_dpa_keeps_perturbed_rows_above_their_own_mean_and_disable_filter_only_turns_ipf_off(pipe, disable_filter):
    stats = SpeedStatistics.build(pipe, ["red"], ["gray"], retain_prompts(CONCEPTS, ["red"]), "all", 3, 0)
    weight = cross_attention_projections(pipe.unet, edit_keys=False)[0][1].weight
    _, info = null_space_update(weight, stats, alpha=0.7, lamb=0.5, threshold=0.1, aug_num=10, filter_retain=not disable_filter,
                                generator=torch.Generator().manual_seed(0))
    expected, before_augmentation = replay_dpa(weight, stats, 10, 0, ipf=not disable_filter)
    assert info["retain_rows_kept"] == expected
    assert expected > before_augmentation  # augmentation ran, with or without the filter
    if disable_filter:
        assert before_augmentation == len(stats.retain)  # IPF off: every retain row kept


def test_speed_dpa_on_a_wide_matrix_perturbs_along_the_smallest_non_zero_singular_direction(pipe):
    """A wide W (out < in, as SD's 320- and 640-row to_v) has a null space; the official direction is not in it."""
    stats = SpeedStatistics.build(pipe, ["red"], ["gray"], retain_prompts(CONCEPTS, ["red"]), "all", 3, 0)
    dim = stats.retain.shape[1]
    weight = torch.randn(dim // 2, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _, info = null_space_update(weight, stats, alpha=0.7, lamb=0.5, threshold=0.1, aug_num=10, filter_retain=True,
                                generator=torch.Generator().manual_seed(0))
    assert info["retain_rows_kept"] == replay_dpa(weight, stats, 10, 0, ipf=True)[0]
    reduced, full = torch.linalg.svd(weight, full_matrices=False), torch.linalg.svd(weight, full_matrices=True)
    assert (weight @ reduced.Vh[-1]).norm() == pytest.approx(float(reduced.S[-1]))  # a direction W sees, a little
    assert (weight @ full.Vh[-1]).norm() < 1e-10  # what a full SVD's last row is here: invisible to W


def test_speed_inputs_from_the_concept_set(pipe, ctx):
    assert retain_prompts(CONCEPTS, ["red"]) == ["", "blue", "green"]  # "a red bus" names the target
    style = ConceptSet(name="style", kind="style", erase=("Van Gogh",), guides=("art",), preserve=("Monet",))
    metadata = SPEED().edit(pipe, style, ctx)
    assert metadata["tokens"] == "last" and metadata["retain_scale"] == 1.0 and metadata["lamb"] == 0.0
    assert metadata["targets"] == [["Van Gogh", "art"]] and metadata["retain"] == ["", "Monet"]
    sexual = ConceptSet.from_file(REPO / "benchmarks/concepts/sexual.json")
    assert sexual.erase == ("nudity",) and sexual.guides == (" ",)  # the official nudity run: "nudity" → "", retain [""]
    stats = SpeedStatistics.build(pipe, list(sexual.erase), [""], retain_prompts(sexual, list(sexual.erase)), "all", 3, 0)
    length = pipe.tokenizer.model_max_length
    assert stats.retain.shape[0] == length - 1 and stats.invariants.shape[1] == 4  # null-text rows 1…L−1; [SoT] + 3 centres


def test_kmeans_is_seeded_and_finds_clear_clusters():
    generator = torch.Generator().manual_seed(3)
    points = torch.cat([torch.randn(10, 2, generator=generator, dtype=torch.float64) * 0.1 + torch.tensor(c) for c in ([0.0, 0.0], [5.0, 0.0], [0.0, 5.0])])
    centres = kmeans(points, 3, seed=0)
    assert torch.equal(centres, kmeans(points, 3, seed=0))
    found = sorted((round(float(x)), round(float(y))) for x, y in centres)
    assert found == [(0, 0), (0, 5), (5, 0)]


# --------------------------------------------------------------------------- AdaVD


def unet_output(pipe, seed=0):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(4, 4, 4, 4, generator=generator)
    embeddings = encode_prompts(pipe, ["", "", "a red circle", "a blue square"]).embeddings
    with torch.no_grad():
        return pipe.unet(latents, 500, encoder_hidden_states=embeddings).sample


@pytest.mark.parametrize("joint", [False, True])
def test_adavd_with_a_zero_target_is_the_identity(tiny, joint):
    plain = unet_output(tiny)
    params = AdaVD.Params(joint_cfg_halves=joint)
    zero = torch.zeros_like(target_embeddings(tiny, ["red"]))
    decomposer = ValueDecomposer(zero, torch.zeros_like(zero[0]), params)
    decomposer.install(tiny)
    try:
        assert torch.equal(unet_output(tiny), plain)
    finally:
        decomposer.uninstall(tiny)
    assert all(not attention.to_v._forward_hooks for _, attention in cross_attentions(tiny.unet))


def test_adavd_changes_the_output_and_uninstalls(tiny, ctx):
    plain = unet_output(tiny)
    hooks = AdaVD(AdaVD.Params(adaptive_shift=False)).sampling_hooks(tiny, CONCEPTS, ctx)
    assert hooks.extra_branches == 0
    hooks.install(tiny)
    try:
        assert not torch.allclose(unet_output(tiny), plain)
    finally:
        hooks.uninstall(tiny)
    assert torch.equal(unet_output(tiny), plain)


def adaptive_shift(cosine, params):
    return params.shift_c / (1 + torch.exp(-params.shift_a * (cosine - params.shift_b)))


def hooked_values(pipe, params, targets, prompts):
    """(attention module, values the first attn2.to_v returns for ``prompts`` with AdaVD installed)."""
    decomposer = ValueDecomposer(target_embeddings(pipe, targets), encode_prompts(pipe, [""]).embeddings[0], params)
    _, attention = cross_attentions(pipe.unet)[0]
    embeddings = encode_prompts(pipe, prompts).embeddings
    decomposer.install(pipe)
    try:
        with torch.no_grad():
            return attention, attention.to_v(embeddings).double()
    finally:
        decomposer.uninstall(pipe)


@pytest.mark.parametrize("adaptive", [False, True])
def test_adavd_decomposes_each_sample_on_its_own_by_default(tiny, adaptive):
    params = AdaVD.Params(adaptive_shift=adaptive, shift_b=0.0)  # b = 0: the sigmoid is not saturated on random weights
    prompts = ["", "a red circle"]
    attention, out = hooked_values(tiny, params, ["red"], prompts)
    with torch.no_grad():
        values = attention.to_v(encode_prompts(tiny, prompts).embeddings).double()
        target = attention.to_v(target_embeddings(tiny, ["red"])[0]).double()  # V_tgt, L × inner
    for b in range(2):
        v = values[b]
        dot = (v * target).sum(-1)
        w = dot / (target * target).sum(-1)
        if adaptive:
            w = adaptive_shift(dot / (v.norm(dim=-1) * target.norm(dim=-1)), params) * w
        w[0] = 0  # [SoT] untouched
        assert torch.allclose(out[b], v - w[:, None] * target, atol=1e-5), b
    assert torch.equal(out[:, 0], values[:, 0])


def test_adavd_official_joint_halves_scale_the_uncond_value(tiny):
    # notes §13.2: [uncond | cond] of a sample are one vector, decomposed against [V(""), V(T)];
    # for an empty negative prompt the uncond half becomes (1 − w) V("").
    params = AdaVD.Params(joint_cfg_halves=True, shift_b=0.0)
    prompts = ["", "a red circle"]  # batch [uncond; cond] for one sample
    attention, out = hooked_values(tiny, params, ["red"], prompts)
    with torch.no_grad():
        values = attention.to_v(encode_prompts(tiny, prompts).embeddings).double()
        target = attention.to_v(target_embeddings(tiny, ["red"])[0]).double()
    null, cond = values[0], values[1]
    # The official layout: split by the module's own head count, concatenate [uncond heads, cond heads] per token.
    heads = attention.heads
    assert heads == 8 and values.shape[-1] % heads == 0
    per_head = lambda x: x.view(x.shape[0], heads, -1)  # noqa: E731  (L, heads, d_head)
    joint_v = torch.cat([per_head(null), per_head(cond)], dim=1).flatten(1)
    joint_t = torch.cat([per_head(null), per_head(target)], dim=1).flatten(1)
    dot = (joint_v * joint_t).sum(-1)
    cosine = dot / (joint_v.norm(dim=-1) * joint_t.norm(dim=-1))
    w = adaptive_shift(cosine, params) * dot / (joint_t * joint_t).sum(-1)
    w[0] = 0
    assert torch.allclose(out[0], (1 - w)[:, None] * null, atol=1e-5)
    assert torch.allclose(out[1], cond - w[:, None] * target, atol=1e-5)
    assert (w[1:] - 1).abs().max() > 1e-3  # the uncond branch really changes


def test_adavd_several_concepts_are_projected_out_together(tiny):
    params = AdaVD.Params(adaptive_shift=False)
    attention, out = hooked_values(tiny, params, ["red", "blue"], ["a red and blue circle"])
    with torch.no_grad():
        targets = attention.to_v(target_embeddings(tiny, ["red", "blue"])).double()
    for target in targets:
        cosine = (out[0, 1:] * target[1:]).sum(-1) / (out[0, 1:].norm(dim=-1) * target[1:].norm(dim=-1))
        assert cosine.abs().max() < 1e-5


def test_adavd_target_values_match_the_official_record_pass(tiny):
    # The official code runs the UNet on the spread target to record to_v's outputs; to_v of T gives the same values.
    spread = target_embeddings(tiny, ["red"])
    recorded = {}
    handles = [attention.to_v.register_forward_hook(lambda module, args, output, name=name: recorded.setdefault(name, output))
               for name, attention in cross_attentions(tiny.unet)]
    try:
        with torch.no_grad():
            tiny.unet(torch.zeros(1, 4, 4, 4), 999, encoder_hidden_states=spread)
    finally:
        for handle in handles:
            handle.remove()
    for name, attention in cross_attentions(tiny.unet):
        with torch.no_grad():
            assert torch.allclose(attention.to_v(spread), recorded[name])
    # The spread target repeats the last word row after [SoT].
    encoded = encode_prompts(tiny, ["red"])
    last = int(encoded.attention_mask[0].sum()) - 2
    assert torch.equal(spread[0, 1:], encoded.embeddings[0, last].expand_as(spread[0, 1:]))
    assert torch.equal(spread[0, 0], encoded.embeddings[0, 0])


def test_adavd_records_its_target_values_without_the_hooks_of_methods_installed_before_it(tiny):
    """spm+adavd: SPM's membrane is already on attn2.to_v, with one multiplier per sample of the batch."""
    from methods.spm import Membrane

    params = AdaVD.Params(adaptive_shift=False)
    targets, null = target_embeddings(tiny, ["red"]), encode_prompts(tiny, [""]).embeddings[0]
    _, attention = cross_attentions(tiny.unet)[0]
    embeddings = encode_prompts(tiny, ["a red circle", "a blue square"]).embeddings
    alone = ValueDecomposer(targets, null, params)
    alone.install(tiny)
    try:
        with torch.no_grad():
            expected = attention.to_v(embeddings)
    finally:
        alone.uninstall(tiny)
    membrane = Membrane.create(tiny.unet, rank=1, alpha=1.0, seed=0)
    with torch.no_grad():
        for layer in membrane.layers:  # a trained-looking membrane: it changes to_v's output
            layer.up.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    decomposer = ValueDecomposer(targets, null, params)
    try:
        membrane.multiplier = torch.tensor([0.9, 0.2, 0.5])  # a batch of 3 prompts, as FacilitatedTransport sets it
        membrane.install()
        decomposer.install(tiny)  # 1 target row is not whole branches of 3 samples: this raised
        membrane.multiplier = 0.0  # the membrane off: what is left is AdaVD on its own target values
        with torch.no_grad():
            assert torch.equal(attention.to_v(embeddings), expected)
    finally:
        decomposer.uninstall(tiny)
        membrane.remove()
