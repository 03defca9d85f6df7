"""UCE, RECE and TRCE-T on the tiny backbone: token selection, the RECE embedding, caching, metadata, concept sets.

The tiny tokenizer is character-level, so every word spans several tokens: exactly the
case where a word count gives the wrong [EoT] position.
"""

import dataclasses
import json

import pytest
import torch

from harness.api import ConceptSet, HarnessError
from harness.context import EditContext
from methods.captions import load_captions
from methods.closed_form import cross_attention_projections
from methods.rece import RECE, adversarial_embeddings, resolve_schedule
from methods.text import (
    encode_prompts,
    first_eot_index,
    phrase_ids,
    phrase_token_positions,
    word_count_eot_index,
    word_count_phrase_positions,
)
from methods.trce_t import TRCET, parse_tokens, token_rows
from methods.uce import UCE, token_block_rows

CAPTIONS = ("a cat on a mat", "a red bus", "two dogs in snow", "a bowl of fruit", "a man on a bike", "a tall tree")
NUDITY = ConceptSet(
    name="tiny-nudity",
    erase=("nudity",),
    guides=(" ",),
    phrases=(("nudity", "a person wearing clothes"), ("bare skin", "a person wearing clothes"), ("nude", "clothes")),
    templates=("a photo of {}", "{} in art"),
    captions=CAPTIONS,
    extra={"rece": {"epochs": 2, "regular_scale": 0.05}},
)


def weights(pipe) -> dict:
    return {name: tensor.clone() for name, tensor in pipe.unet.state_dict().items()}


def changed(before: dict, after: dict) -> set:
    return {name for name in before if not torch.equal(before[name], after[name])}


def kv_weight_names(pipe, edit_keys=True) -> set:
    return {f"{name}.weight" for name, _ in cross_attention_projections(pipe.unet, edit_keys=edit_keys)}


def run(method_cls, pipe, concepts, ctx, **params):
    return method_cls(method_cls.Params(**params)).edit(pipe, concepts, ctx)


# --------------------------------------------------------------------------- every method


@pytest.mark.parametrize("method_cls", [UCE, RECE, TRCET])
def test_only_cross_attention_keys_and_values_change(method_cls, pipe, ctx):
    before = weights(pipe)
    metadata = run(method_cls, pipe, NUDITY, ctx)
    assert changed(before, weights(pipe)) == kv_weight_names(pipe)
    assert metadata["method"] == method_cls.name
    assert metadata["matrices"] == [name for name, _ in cross_attention_projections(pipe.unet)]
    assert "quirks" in metadata and "variant" in metadata
    json.dumps(metadata)  # stored with the model state


@pytest.mark.parametrize("method_cls", [UCE, RECE, TRCET])
def test_edit_keys_false_leaves_to_k_alone(method_cls, pipe, ctx):
    before = weights(pipe)
    run(method_cls, pipe, NUDITY, ctx, edit_keys=False)
    assert changed(before, weights(pipe)) == kv_weight_names(pipe, edit_keys=False)


def test_methods_are_registered_lazily_and_load(registry):
    for name, cls in (("uce", UCE), ("rece", RECE), ("trce-t", TRCET)):
        assert registry.get("methods", name) is cls
        assert registry.entry("methods", name).description


# --------------------------------------------------------------------------- UCE


def test_uce_token_block_is_last_word_eot_and_pads_aligned_with_the_guide(tiny):
    # "nudity" is 6 character tokens: k(o) = 6; " " is empty: k(n) = 0 ([SoT]); F = 6, so 16 − 6 = 10 rows each
    keys, targets = token_block_rows(tiny, [("nudity", " ")])
    concept, guide = encode_prompts(tiny, ["nudity", " "]).embeddings
    assert torch.allclose(keys, concept[6:16], atol=1e-6) and torch.allclose(targets, guide[0:10], atol=1e-6)
    # a guide longer than the concept: "cat" k=3, "a dog" k=4 ("a", "d", "o", "g"), F=4 → rows 3:15 and 4:16
    keys, targets = token_block_rows(tiny, [("cat", "a dog")])
    concept, guide = encode_prompts(tiny, ["cat", "a dog"]).embeddings
    assert torch.allclose(keys, concept[3:15], atol=1e-6) and torch.allclose(targets, guide[4:16], atol=1e-6)


def test_uce_metadata_and_the_official_preserve_scale_rule(pipe, ctx):
    metadata = run(UCE, pipe, NUDITY, ctx)
    assert metadata["tokens"] == "block" and metadata["lamb"] == 0.5 and metadata["erase_scale"] == 1.0
    assert metadata["retain"] == [""] and metadata["preserve_scale"] == 1.0  # max(0.1, 1/|R|), R = ['']
    assert metadata["erase"] == [["nudity", " "]] and metadata["erase_keys"] == 10
    assert metadata["preserve_scale_rule"] == "official default"
    art = dataclasses.replace(NUDITY, preserve=tuple(f"artist {i}" for i in range(19)))
    assert run(UCE, pipe, art, ctx)["preserve_scale"] == pytest.approx(0.1)  # |R| = 20
    few = dataclasses.replace(NUDITY, preserve=("a", "b", "c"))
    assert run(UCE, pipe, few, ctx)["preserve_scale"] == pytest.approx(0.25)
    assert run(UCE, pipe, few, ctx, preserve_scale=0.3)["preserve_scale_rule"] == "set by user"


def test_uce_moves_the_concept_block_towards_the_guide(pipe, ctx):
    keys, targets = token_block_rows(pipe, [("nudity", " ")])
    projections = cross_attention_projections(pipe.unet)
    before = [module.weight.detach().clone() for _, module in projections]
    run(UCE, pipe, NUDITY, ctx)
    for (_, module), weight in zip(projections, before):
        goal = targets @ weight.T
        assert (keys @ module.weight.detach().T - goal).norm() < 0.5 * (keys @ weight.T - goal).norm()


def test_uce_last_token_variant_uses_one_row_per_concept(pipe, ctx):
    two = dataclasses.replace(NUDITY, erase=("nudity", "naked"), preserve=("a cat",))
    metadata = run(UCE, pipe, two, ctx, tokens="last")
    assert metadata["erase_keys"] == 2 and metadata["retain"] == ["a cat"] and metadata["preserve_scale"] == 1.0


def test_uce_needs_something_to_erase(pipe, ctx):
    with pytest.raises(HarnessError, match="nothing to erase"):
        run(UCE, pipe, ConceptSet(name="empty"), ctx)


# --------------------------------------------------------------------------- RECE


def test_rece_adversarial_embedding_is_the_stacked_least_squares_solution(tiny):
    """c' = argmin Σ_l ‖W_l c' − W⁰_l c‖² + λ_r‖c'‖²: compare with lstsq on [W_1; …; W_n; √λ_r I] c' = [W⁰_1 c; …; 0]."""
    torch.manual_seed(4)
    original = [module.weight.detach().double() for _, module in cross_attention_projections(tiny.unet)]
    current = [weight + 0.05 * torch.randn_like(weight) for weight in original]  # an "edited" model
    concept = encode_prompts(tiny, ["nudity"]).embeddings[0]  # all 16 rows, [SoT] included
    regular_scale = 0.1

    adversarial = adversarial_embeddings(concept, current, original, regular_scale)

    dim = concept.shape[1]
    stacked = torch.cat(current + [regular_scale**0.5 * torch.eye(dim, dtype=torch.float64)])
    rhs = torch.cat(
        [concept.double() @ weight_0.T for weight_0 in original] + [torch.zeros(len(concept), dim, dtype=torch.float64)], 1
    )
    expected = torch.linalg.lstsq(stacked, rhs.T).solution.T
    assert adversarial.shape == concept.shape
    assert float((adversarial.double() - expected).norm() / expected.norm()) < 1e-4


def test_rece_schedule_comes_from_params_then_concept_set_then_kind():
    assert resolve_schedule(RECE.Params(), NUDITY) == (2, 0.05)
    assert resolve_schedule(RECE.Params(epochs=1), NUDITY) == (1, 0.05)
    assert resolve_schedule(RECE.Params(), ConceptSet(name="x", kind="style")) == (1, 1e-3)
    assert resolve_schedule(RECE.Params(), ConceptSet(name="x")) == (3, 0.1)


def test_rece_starts_from_uce_and_records_every_setting(pipe, ctx):
    metadata = run(RECE, pipe, NUDITY, ctx)
    assert metadata["epochs"] == 2 and len(metadata["epoch_log"]) == 2 and metadata["regular_scale"] == 0.05
    assert (metadata["lamb"], metadata["preserve_scale"], metadata["erase_scale"]) == (0.1, 0.1, 1.0)
    assert metadata["uce"]["method"] == "uce" and metadata["uce"]["lamb"] == 0.5
    assert metadata["retain"] == [" "]
    assert metadata["quirks"] == {"validation_epoch_selection": False}


def test_rece_on_top_of_an_explicit_uce_imitates_the_original_weights(registry, tiny, tmp_path):
    """W⁰ is the original model's weights (RECE's ldm_stable_copy), also under composition: `uce+rece:run_uce=false`
    is `rece` (which runs the same UCE inside), not RECE imitating the UCE-edited weights."""
    from harness.engine import ModelStates
    from harness.runner import expand_method
    from harness.spec import parse_selections
    from harness.store import Store
    from harness.testing import tiny_target

    def parts(text):
        (item,) = parse_selections(text, "--methods")
        return [part for selection in item for part in expand_method(registry, selection, {}, text)]

    states = ModelStates(tiny, Store(tmp_path), "tiny-fp", tiny_target(), show_progress=False)
    try:
        edited = {}
        for text in ("rece", "uce+rece:run_uce=false"):
            states.activate(parts(text), NUDITY, text)
            edited[text] = {name: module.weight.detach().double().clone() for name, module in cross_attention_projections(tiny.unet)}
    finally:
        states.reset()
    for name, alone in edited["rece"].items():
        assert float((edited["uce+rece:run_uce=false"][name] - alone).norm() / alone.norm()) < 1e-6


def test_rece_with_zero_epochs_is_uce(pipe, ctx):
    start = weights(pipe)
    run(UCE, pipe, NUDITY, ctx)
    uce = weights(pipe)
    pipe.unet.load_state_dict(start)
    run(RECE, pipe, NUDITY, ctx, epochs=0)
    assert not changed(uce, weights(pipe))
    pipe.unet.load_state_dict(start)
    run(RECE, pipe, NUDITY, ctx, run_uce=False, epochs=1)
    assert changed(uce, weights(pipe))


# --------------------------------------------------------------------------- TRCE-T: positions


def test_first_eot_comes_from_the_token_ids_and_the_quirk_counts_words(tiny):
    prompt = "a nude cat"  # 1 + 4 + 3 character tokens: [SoT] at 0, words at 1–8, first [EoT] at 9
    encoded = encode_prompts(tiny, [prompt])
    ids = encoded.input_ids[0]
    assert first_eot_index(ids, tiny.tokenizer.eos_token_id) == 9 == int(encoded.attention_mask[0].sum()) - 1
    assert word_count_eot_index(prompt, encoded.max_length) == 4  # the official len(split()) + 1: a word row
    assert phrase_token_positions(ids, phrase_ids(tiny.tokenizer, "nude")) == [2, 3, 4, 5]
    assert word_count_phrase_positions(prompt, "nude", encoded.max_length) == [2]


def test_trce_t_key_rows_follow_the_ids_and_the_quirk_reproduces_the_word_count(tiny):
    pairs = [("a nude cat", "a dressed cat", "nude")]
    bad, good = encode_prompts(tiny, ["a nude cat", "a dressed cat"]).embeddings
    keys, targets, weight, _ = token_rows(tiny, pairs, ("eot",), word_count_positions=False)
    assert torch.equal(keys[0], bad[9]) and torch.equal(targets[0], good[12])  # "a dressed cat": 1+7+3 → [EoT] at 12
    keys, targets, weight, _ = token_rows(tiny, pairs, ("eot",), word_count_positions=True)
    assert torch.equal(keys[0], bad[4]) and torch.equal(targets[0], good[4])  # both 3 words → row 4


def test_trce_t_table4_rows_and_weights(tiny):
    pairs = [("a nude cat", "a dressed cat", "nude")]
    bad, good = encode_prompts(tiny, ["a nude cat", "a dressed cat"]).embeddings
    keys, targets, weight, missing = token_rows(tiny, pairs, ("sot", "eot", "last-eot", "key"), word_count_positions=False)
    assert len(keys) == 1 + 1 + 1 + 4 and missing == 0
    assert torch.equal(keys[2], bad[15]) and weight[2] == 15 - 9  # the last row stands for the 6 pad [EoT] after the first
    assert torch.equal(keys[3], bad[2]) and torch.equal(targets[3], good[15])  # keyword token → the safe prompt's last row
    # the official weight for the last [EoT] is 77 − words − 2, i.e. L − words − 2 here: reproduced with the quirk
    _, _, weight, _ = token_rows(tiny, pairs, ("last-eot",), word_count_positions=True)
    assert weight[0] == 16 - 3 - 2


def test_trce_t_tokens_param_parses_table4_names():
    assert parse_tokens("eot") == ("eot",)
    assert parse_tokens("eot+key") == ("eot", "key")
    assert parse_tokens(" EoT + SoT + key ") == ("eot", "sot", "key")
    for bad in ("", "eos", "eot+keyword"):
        with pytest.raises(HarnessError, match="sot, eot, last-eot, key"):
            parse_tokens(bad)


# --------------------------------------------------------------------------- TRCE-T: the edit


def test_trce_t_metadata(pipe, ctx):
    metadata = run(TRCET, pipe, NUDITY, ctx)
    assert metadata["variant"] == "eot" and metadata["tokens"] == {"sot": False, "eot": True, "last-eot": False, "key": False}
    assert (metadata["phrases"], metadata["templates"], metadata["prompt_pairs"], metadata["erase_keys"]) == (3, 2, 6, 6)
    assert metadata["lamb"] == 0.0 and metadata["preserve_scale"] == metadata["effective_preserve_scale"] == 0.01
    assert metadata["quirks"] == {"word_count_positions": False, "double_preserve_scale": False, "caption_divisor": 0.0,
                                  "augmentation": "concepts"}
    assert metadata["captions"]["count"] == len(CAPTIONS) and metadata["captions"]["source"] == "concept set 'tiny-nudity'"
    metadata = run(TRCET, pipe, NUDITY, ctx, num_phrases=1, num_templates=1, tokens="eot+key")
    assert (metadata["phrases"], metadata["templates"], metadata["erase_keys"]) == (1, 1, 1 + 6)


def test_trce_t_maps_first_eot_of_malicious_prompts_onto_the_safe_ones(pipe, ctx):
    prompt_pairs = [(t.format(bad), t.format(safe), bad) for bad, safe in NUDITY.phrases for t in NUDITY.templates]
    keys, targets, _, _ = token_rows(pipe, prompt_pairs, ("eot",), word_count_positions=False)
    projections = cross_attention_projections(pipe.unet)
    before = [module.weight.detach().clone() for _, module in projections]
    run(TRCET, pipe, NUDITY, ctx, preserve_scale=1e-4)
    for (_, module), weight in zip(projections, before):
        goal = targets @ weight.T
        assert (keys @ module.weight.detach().T - goal).norm() < 0.2 * (keys @ weight.T - goal).norm()


def test_trce_t_is_stable_to_the_text_encoders_round_off(tmp_path):
    """λ = 0 on the tiny backbone: its random LayerNorm puts every text row in a hyperplane, so mat2 is singular
    up to round-off.  The solve must not amplify that round-off (a device check once saw GPU and CPU differ by 47%)."""
    from harness.testing import tiny_pipeline

    edited = {}
    for dtype in (torch.float32, torch.float64):
        pipe = tiny_pipeline()
        pipe.text_encoder.to(dtype)
        metadata = run(TRCET, pipe, NUDITY, EditContext(cache_dir=tmp_path / str(dtype), show_progress=False))
        edited[dtype] = [module.weight.detach().clone() for _, module in cross_attention_projections(pipe.unet)]
        assert metadata["unconstrained_directions"] == 1  # the LayerNorm hyperplane's normal
    for single, double in zip(edited[torch.float32], edited[torch.float64]):
        assert float((single - double).norm() / double.norm()) < 1e-4


def test_trce_t_reuses_the_preservation_cache(pipe, ctx, tmp_path):
    run(TRCET, pipe, NUDITY, ctx)
    assert ctx.cache_misses["closed-form-preservation"] == 1 and ctx.cache_hits["closed-form-preservation"] == 0
    run(TRCET, pipe, NUDITY, ctx, num_phrases=1)  # another edit, same backbone and captions
    assert ctx.cache_misses["closed-form-preservation"] == 1 and ctx.cache_hits["closed-form-preservation"] == 1
    later = EditContext(cache_dir=tmp_path / "cache", show_progress=False)  # a later process, same cache directory
    run(TRCET, pipe, NUDITY, later)
    assert later.cache_hits["closed-form-preservation"] == 1 and later.cache_misses["closed-form-preservation"] == 0


def test_trce_t_double_preserve_scale_quirk_squares_the_weight(pipe, ctx):
    start = weights(pipe)
    once = run(TRCET, pipe, NUDITY, ctx, preserve_scale=0.1)
    single = weights(pipe)
    pipe.unet.load_state_dict(start)
    twice = run(TRCET, pipe, NUDITY, ctx, preserve_scale=0.1, double_preserve_scale=True)
    assert once["effective_preserve_scale"] == pytest.approx(0.1)
    assert twice["effective_preserve_scale"] == pytest.approx(0.01) and twice["quirks"]["double_preserve_scale"]
    quirk = weights(pipe)
    assert changed(single, quirk)
    pipe.unet.load_state_dict(start)
    run(TRCET, pipe, NUDITY, ctx, preserve_scale=0.01)  # the single-scale equivalent of the quirk
    assert all(torch.allclose(weights(pipe)[name], value, atol=1e-6) for name, value in quirk.items())


def test_trce_t_without_captions_is_a_clear_error_unless_preservation_is_off(pipe, ctx):
    bare = dataclasses.replace(NUDITY, captions=())
    with pytest.raises(HarnessError, match="no preservation captions.*trce-t.captions=PATH"):
        run(TRCET, pipe, bare, ctx)
    assert run(TRCET, pipe, bare, ctx, preserve_scale=0)["captions"] is None


def test_trce_t_reads_captions_from_txt_and_csv(tmp_path):
    text = tmp_path / "captions.txt"
    text.write_text("a cat\n\na dog\n", encoding="utf-8")
    assert load_captions(NUDITY, str(text), 0)[0] == ["a cat", "a dog"]
    table = tmp_path / "coco.csv"
    table.write_text('case_number,prompt,evaluation_seed\n0,"a bus,\nred",1\n1,a tree,2\n2,a boat,3\n', encoding="utf-8")
    captions, info = load_captions(NUDITY, str(table), 2)
    assert captions == ["a bus,\nred", "a tree"] and info["count"] == 2 and info["source"] == str(table)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,sentence\n0,a cat\n", encoding="utf-8")
    with pytest.raises(HarnessError, match=r"found \['id', 'sentence'\]"):
        load_captions(NUDITY, str(wrong), 0)
    with pytest.raises(HarnessError, match="does not exist"):
        load_captions(NUDITY, str(tmp_path / "missing.txt"), 0)


# --------------------------------------------------------------------------- concept sets


@pytest.mark.parametrize("name", ["sexual", "unsafe", "van-gogh", "kelly-mckernan"])
def test_shipped_concept_sets_are_registered_and_complete(registry, name):
    concepts = registry.concept_set(name)
    assert concepts.name == name and concepts.description
    assert concepts.erase and concepts.guides and concepts.phrases
    assert all(template.count("{}") == 1 for template in concepts.templates)
    assert {"epochs", "regular_scale"} <= set(concepts.extra["rece"])
    if concepts.kind == "style":
        assert concepts.guides == ("art",) and len(concepts.templates) == 30
        assert len(concepts.preserve) >= 50 and concepts.erase[0] not in concepts.preserve
    else:
        assert len(concepts.templates) == 15
    if name == "sexual":
        assert len(concepts.phrases) == 20 and {safe for _, safe in concepts.phrases} == {"a person wearing clothes"}
    if name == "unsafe":
        assert len(concepts.erase) == 11 and set(concepts.extra["categories"]) == {
            "hate", "harassment", "violence", "self-harm", "sexual", "shocking", "illegal activity",
        }  # fmt: skip
