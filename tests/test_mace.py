"""MACE's maths on the tiny backbone: token alignment (CFR), the attention loss (L_attn), the LoRA, the fusion (FUSE)."""

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from harness.api import ConceptSet, HarnessError
from methods.closed_form import cross_attention_projections
from methods.mace import (
    MACE,
    AttentionProbe,
    Concept,
    attention_loss,
    concept_prompts,
    cross_attention_modules,
    files_data,
    fuse,
    importance_weights,
    matching_indices,
    train_concept_lora,
)
from methods.text import encode_prompts

CONCEPTS = ConceptSet(
    name="colours",
    erase=("red",),
    guides=("gray",),
    phrases=(("a red circle", "a gray circle"), ("a red square", "a gray square")),
    templates=("{}", "a photo of {}"),
    captions=("a blue circle", "a green square", "a yellow cross", "an orange triangle"),
)


def test_matching_keeps_prefix_suffix_and_the_padding_tail_and_drops_the_differing_middle():
    # [SoT] a photo of <red> <fox> [EoT]   vs   [SoT] a photo of <a> <gray> <wolf> <x> [EoT]  (ids are arbitrary)
    ids_o = [0, 5, 6, 7, 40, 41, 9, 1]
    ids_n = [0, 5, 6, 7, 50, 51, 52, 9, 1]
    index_o, index_n = matching_indices(ids_o, ids_n, length=12)
    assert index_o == [0, 1, 2, 3, 6, 7, 8, 9, 10]  # prefix 0–3, suffix (9, [EoT]), then pads 8..10
    assert index_n == [0, 1, 2, 3, 7, 8, 9, 10, 11]
    assert [ids_o[i] for i in index_o[:6]] == [ids_n[i] for i in index_n[:6]]


def test_the_explicit_content_config_maps_every_concept_phrase_to_one_mapping():
    concepts = ConceptSet(
        name="sexual",
        erase=("nudity",),
        guides=(" ",),
        phrases=(("nudity", "clothes"), ("naked body", "clothes"), ("erotic art", "art")),
        templates=("{}", "a photo of {}"),
        extra={"mace": {"concepts": ["nudity", "naked", "erotic", "sexual"], "mapping": "a person wearing clothes"}},
    )
    targets = concept_prompts(concepts, "", 0)
    assert [t.word for t in targets] == ["nudity", "naked", "erotic", "sexual"]
    assert targets[1].pairs == [("naked body", "a person wearing clothes"), ("a photo of naked body", "a photo of a person wearing clothes")]
    assert targets[3].pairs[0] == ("sexual", "a person wearing clothes")  # no phrase names it: the word itself


def test_attention_loss_is_the_sum_over_layers_of_the_masked_frobenius_norms():
    layer_a = torch.rand(2, 16, 5)  # (batch·heads, 4×4 pixels, tokens)
    layer_b = torch.rand(2, 4, 5)  # 2×2 pixels
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:2, :2] = True  # the top-left quarter; at 2×2 that is pixel 0
    positions = [1, 3]
    pixels_a = [0, 1, 4, 5]
    expected = layer_a[:, pixels_a][:, :, positions].norm() + layer_b[:, [0]][:, :, positions].norm()
    torch.testing.assert_close(attention_loss([layer_a, layer_b], mask, positions), expected)


def test_the_probe_reproduces_diffusers_attention_and_its_lora_equals_a_key_weight_of_w_plus_ba(tiny):
    unet = copy.deepcopy(tiny.unet)
    latents = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    context = encode_prompts(tiny, ["a red circle"]).embeddings
    with torch.no_grad():
        reference = unet(latents, 10, encoder_hidden_states=context).sample
        recorder = []
        for _, module in cross_attention_modules(unet):
            module.set_processor(AttentionProbe(None, None, recorder))
        probed = unet(latents, 10, encoder_hidden_states=context).sample
        torch.testing.assert_close(probed, reference)
        assert len(recorder) == len(cross_attention_modules(unet)) and recorder[0].shape[-1] == context.shape[1]

        updates = {}
        for name, module in cross_attention_modules(unet):
            out_features, in_features = module.to_k.weight.shape
            down, up = torch.randn(1, in_features), torch.randn(out_features, 1)
            module.set_processor(AttentionProbe(down, up, []))
            updates[name] = up @ down
        with_lora = unet(latents, 10, encoder_hidden_states=context).sample
        merged = copy.deepcopy(tiny.unet)
        for name, module in cross_attention_modules(merged):
            module.to_k.weight += updates[name]
        torch.testing.assert_close(with_lora, merged(latents, 10, encoder_hidden_states=context).sample)


def test_importance_sampling_concentrates_on_the_middle_timesteps():
    weights = importance_weights(1000)
    assert abs(float(weights.sum()) - 1) < 1e-9
    assert 200 <= int(weights.argmax()) <= 400
    assert float(weights[200:400].sum()) > 0.7 and float(weights[600:].sum()) < 1e-4


def test_the_lora_lowers_the_concept_attention_it_is_trained_on(tiny, ctx):
    params = MACE.Params(lr=0.05, steps=40, images=2, masks="none")
    concept = Concept("red", [("a red circle", "a gray circle")])
    latents = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    masks = torch.ones(2, 4, 4, dtype=torch.bool)
    deltas, history = train_concept_lora(tiny, ctx, concept, latents, masks, params)
    assert set(deltas) == {f"{name}.to_k" for name, _ in cross_attention_modules(tiny.unet)}
    assert all(delta.shape == tiny.unet.get_submodule(name).weight.shape for name, delta in deltas.items())

    def concept_attention(extra: dict) -> float:
        unet = copy.deepcopy(tiny.unet)
        recorder = []
        with torch.no_grad():
            for name, module in cross_attention_modules(unet):
                module.to_k.weight += extra.get(f"{name}.to_k", 0)
                module.set_processor(AttentionProbe(None, None, recorder))
            encoded = encode_prompts(tiny, ["a red circle"])
            from methods.mace import concept_positions

            positions = concept_positions(tiny, encoded.input_ids[0], "red", True, False)
            total = 0.0
            for t in (100, 300, 500, 700):
                recorder.clear()
                unet(latents[:1], t, encoder_hidden_states=encoded.embeddings)
                total += float(attention_loss(recorder, masks[0], positions))
        return total

    assert concept_attention(deltas) < 0.8 * concept_attention({})
    assert history["steps"] == 40


def test_fusion_solves_its_normal_equations(tiny):
    unet = copy.deepcopy(tiny.unet)
    pipe = copy.copy(tiny)
    pipe.unet = unet
    projections = cross_attention_projections(unet)
    refined = {name: m.weight.detach().float().clone() for name, m in projections}
    original = {name: w + 0.01 for name, w in refined.items()}
    targets = [Concept("red", [("a red circle", "x")]), Concept("crimson", [("a crimson square", "x")])]
    generator = torch.Generator().manual_seed(0)
    deltas = [{name: torch.randn(w.shape, generator=generator) * 0.1 for name, w in refined.items() if name.endswith("to_k")} for _ in targets]
    captions = encode_prompts(tiny, ["a blue circle", "a green cross"]).embeddings.flatten(0, 1).double()
    from methods.closed_form import KeyStatistics

    preserve = KeyStatistics.preserve(captions).scaled(0.5)
    params = MACE.Params(fuse_preserve_scale=1e-6, lamb=0.1)
    fuse(pipe, projections, targets, deltas, refined, original, preserve, params)
    scale = 1e-6 * 616_767
    moments = [encode_prompts(tiny, [o for o, _ in t.pairs]).embeddings.flatten(0, 1).double() for t in targets]
    moments = [rows.T @ rows for rows in moments]
    prior = preserve.key_key
    for name, module in projections:
        weight = refined[name].double()
        mat2 = 0.1 * torch.eye(weight.shape[1], dtype=torch.float64) + sum(moments) + scale * prior
        mat1 = 0.1 * weight + scale * original[name].double() @ prior
        mat1 = mat1 + sum((weight + d[name].double() if name in d else weight) @ m for d, m in zip(deltas, moments))
        torch.testing.assert_close(module.weight.double() @ mat2, mat1, rtol=1e-4, atol=1e-4)


def test_files_masks_read_the_documented_layout(tiny, tmp_path):
    folder = tmp_path / "red"
    folder.mkdir()
    for k in range(2):
        Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8)).save(folder / f"{k}.png")
        mask = np.zeros((32, 32), dtype=np.uint8)
        mask[:16] = 255  # the top half
        Image.fromarray(mask).save(folder / f"{k}_mask.png")
    latents, masks = files_data(tiny, folder, 8)
    assert latents.shape == (2, 4, 4, 4) and masks.shape == (2, 4, 4)
    assert masks[:, :2].all() and not masks[:, 2:].any()
    (folder / "2.png").write_bytes((folder / "0.png").read_bytes())
    with pytest.raises(HarnessError, match="no mask 2_mask.png"):
        files_data(tiny, folder, 8)


def test_bad_mask_sources_fail_when_parameters_are_built(tmp_path):
    with pytest.raises(HarnessError, match="choose attention, none, files:DIR"):
        MACE.Params(masks="sam")
    with pytest.raises(HarnessError, match="does not exist"):
        MACE.Params(masks=f"files:{tmp_path / 'nothing'}")


def test_mace_edits_only_cross_attention_keys_and_values_and_records_its_mask_source(tiny, ctx):
    before = {name: tensor.clone() for name, tensor in tiny.unet.state_dict().items()}
    try:
        metadata = MACE(MACE.Params(steps=3, images=2, sampling_steps=3, lr=1e-3)).edit(tiny, CONCEPTS, ctx)
        after = tiny.unet.state_dict()
        changed = {name for name in before if not torch.equal(before[name], after[name])}
        assert changed and all(name.endswith(("attn2.to_k.weight", "attn2.to_v.weight")) for name in changed)
        assert metadata["mask_source"].startswith("attention (our variant")
        assert metadata["concepts"] == ["red"] and metadata["prompt_pairs"] == [4]
        assert metadata["cfr_effective_preserve_scale"] == pytest.approx(7e-7 * 616_767)
    finally:
        tiny.unet.load_state_dict(before)


def test_presets_give_the_official_quirks_and_the_100_artist_config():
    from harness.plugins import PluginHost
    from harness.registry import Registry
    from harness.runner import expand_method
    from harness.spec import Selection

    registry = Registry(PluginHost())
    ((official, _),) = expand_method(registry, Selection("mace", {"preset": "official"}), {}, "mace")
    assert official.params.double_preserve_scale and official.params.pooler_all_pads and official.params.lr == 1e-5
    ((art, _),) = expand_method(registry, Selection("mace", {"preset": "art-100"}), {}, "mace")
    assert (art.params.lr, art.params.steps, art.params.preserve_scale, art.params.importance_sampling) == (1e-4, 50, 1e-4, True)
    assert not art.params.double_preserve_scale
