"""Presets: ``name:preset=official`` is data expanded into the recorded parameters, a backbone presets methods for its
world, and what the official code computes is reproduced (checked against the official formulas written out here)."""

import pytest
import torch

from harness.api import ConceptSet, HarnessError
from harness.context import EditContext
from harness.runner import RunConfig, _manifest, expand_method, plan
from harness.spec import parse_selections
from methods.closed_form import cross_attention_projections


def parts_for(registry, text, backbone=None):
    (item,) = parse_selections(text, "--methods")
    return [part for selection in item for part in expand_method(registry, selection, {}, text, backbone=backbone)]


# --------------------------------------------------------------------------- the mechanism


def test_a_preset_expands_into_the_parameters_and_parameters_beside_it_override_it(registry):
    (method, label), = parts_for(registry, "trce-t:preset=official,num_phrases=3")
    assert label == "trce-t:num_phrases=3,preset=official"
    params = method.params
    assert params.word_count_positions and params.double_preserve_scale and params.caption_divisor == 3e4
    assert params.num_templates == 15 and params.num_phrases == 3  # the user's value wins over the preset's 20
    assert method.presets_applied == {"preset": "official"}
    (default, _), = parts_for(registry, "trce-t")
    assert not default.params.word_count_positions and default.presets_applied == {}


def test_a_composition_hands_the_preset_to_every_part_that_has_it(registry):
    parts = parts_for(registry, "trce:preset=official")
    (stage_one, _), (stage_two, _) = parts
    assert stage_one.params.double_preserve_scale and stage_two.params.skip_zero_grad and stage_two.params.optimizer == "adamw"
    assert stage_one.presets_applied == stage_two.presets_applied == {"preset": "official"}


def test_an_unknown_preset_is_a_one_line_error_with_the_known_ones(registry):
    with pytest.raises(HarnessError, match=r"trce-t has no preset 'oficial'.*did you mean 'official'.*presets: official"):
        parts_for(registry, "trce-t:preset=oficial")
    with pytest.raises(HarnessError, match="trce .* has no preset 'paper'"):
        parts_for(registry, "trce:preset=paper")


def test_every_listed_method_has_an_official_preset_that_builds(registry):
    for name in ("trce-t", "trce-v", "esd-u", "esd-x", "uce", "rece", "speed", "adavd", "safree", "sld"):
        (method, _), *_ = parts_for(registry, f"{name}:preset=official")
        for key, value in registry.get("methods", name).presets["official"].items():
            assert getattr(method.params, key) == value, (name, key)


def test_the_manifest_records_the_expanded_parameters_and_the_presets(registry, tmp_path):
    config = RunConfig(methods="trce-t:preset=official", bench="toy-explicit", model="toy", limit=1, out=str(tmp_path))
    planned = plan(config, registry)
    part = _manifest(planned, "fingerprint")["methods"][0]["parts"][0]
    assert part["params"]["caption_divisor"] == 3e4 and part["params"]["word_count_positions"] is True
    assert part["presets"] == {"preset": "official"}


# --------------------------------------------------------------------------- backbone presets


def test_the_toy_backbone_presets_its_methods_and_set_overrides_it(registry, tmp_path):
    def planned(methods, sets=()):
        config = RunConfig(methods=methods, bench="toy-explicit", model="toy", limit=1, sets=list(sets), out=str(tmp_path))
        return {method.name: method for planned in plan(config, registry).methods for method, _ in planned.parts}

    from benchmarks.toyworld.backbone import ToyBackbone

    preset = ToyBackbone.method_presets
    toy = planned("trce,esd-u,adavd,uce")
    assert toy["trce-v"].params.lr == preset["trce-v"]["lr"] != 1e-6  # not the paper's
    assert toy["trce-v"].params.regularizer_samples == preset["trce-v"]["regularizer_samples"] == 300
    assert toy["esd-u"].params.lr == preset["esd-u"]["lr"] != 1e-5 and toy["adavd"].params.shift_b == preset["adavd"]["shift_b"]
    assert toy["trce-v"].presets_applied == {"backbone_preset": "toy"}
    assert toy["uce"].presets_applied == {} and toy["trce-t"].presets_applied == {}
    assert planned("trce-v", ["trce-v.lr=1e-5"])["trce-v"].params.lr == 1e-5  # --set wins
    assert planned("trce-v:lr=2e-5")["trce-v"].params.lr == 2e-5
    official = planned("trce-v:preset=official")["trce-v"]
    assert official.params.lr == preset["trce-v"]["lr"] and official.params.skip_zero_grad  # a named preset sits on top of the backbone's
    assert official.presets_applied == {"backbone_preset": "toy", "preset": "official"}
    # and another backbone applies nothing
    (method, _), = parts_for(registry, "trce-v")
    assert method.params.lr == 1e-6


# --------------------------------------------------------------------------- the official formulas, written out


CAPTIONS = ("a cat", "a red bus", "two dogs", "a bowl", "a man", "a tree", "green hills", "blue sea")
PHRASES = (("nudity", "clothes"), ("bare skin", "a coat"), ("nude", "dressed"))
TEMPLATES = ("a {}", "{} art", "photo {}")


@pytest.fixture(scope="module")
def pipe():
    """A tiny pipeline whose text rows span every direction (a random final-LayerNorm bias), so the official
    ``torch.inverse`` is well defined and the comparison tests the formula, not round-off in a null direction."""
    from harness.testing import tiny_pipeline

    pipe = tiny_pipeline()
    torch.manual_seed(11)
    with torch.no_grad():
        dict(pipe.text_encoder.named_parameters())["final_layer_norm.bias"].normal_(0, 0.5)
    return pipe


def embed(pipe, prompt: str) -> torch.Tensor:
    tokenizer = pipe.tokenizer
    ids = tokenizer([prompt], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids)[0][0].double()



def relative(a, b) -> float:
    return float((a.double() - b).norm() / b.norm())


def test_trce_t_official_preset_matches_the_official_formula(registry, pipe, tmp_path):
    """ddgoodgood/TRCE @ 0da9b71, src/cfr_utils.py ``prepare_k_v`` / ``closed_form_refinement`` and run_trce_stage1.py,
    written out in float64: first [EoT] at ``len(prompt.split()) + 1``, token weights [0, 1, 0, 0], the erase sums
    divided by the number of prompt pairs, the caption cache scaled by s when built and again in the solve, divided by
    3e4, λ = 0, ``W ← mat1 · inverse(mat2)``."""
    concepts = ConceptSet(name="t", erase=("nudity",), phrases=PHRASES, templates=TEMPLATES, captions=CAPTIONS)
    # s = 3, not the paper's 0.01: on 8 captions the s²/3e4-weighted caption term would be too small to tell a single from
    # a double scale.  Any s is the same formula.  The tiny world has no official phrase file: its own lists are used.
    (method, _), = parts_for(registry, "trce-t:preset=official,preserve_scale=3,augmentation=concepts")
    projections = cross_attention_projections(pipe.unet)
    before = [module.weight.detach().double().clone() for _, module in projections]
    state = {name: tensor.clone() for name, tensor in pipe.unet.state_dict().items()}
    try:
        metadata = method.edit(pipe, concepts, EditContext(cache_dir=tmp_path, show_progress=False))
        after = [module.weight.detach().clone() for _, module in projections]
    finally:
        pipe.unet.load_state_dict(state)
    assert metadata["unconstrained_directions"] == 0 and metadata["solver"] == "exact"

    s = 3.0
    pairs = [(t.format(bad), t.format(good)) for bad, good in PHRASES for t in TEMPLATES]
    caption_rows = torch.cat([embed(pipe, caption) for caption in CAPTIONS])  # every token row of every caption
    for weight, edited in zip(before, after):
        mat1 = torch.zeros_like(weight)
        mat2 = torch.zeros(weight.shape[1], weight.shape[1], dtype=torch.float64)
        for old, new in pairs:
            key = embed(pipe, old)[len(old.split()) + 1]
            value = weight @ embed(pipe, new)[len(new.split()) + 1]
            mat1 += torch.outer(value, key)
            mat2 += torch.outer(key, key)
        mat1, mat2 = mat1 / len(pairs), mat2 / len(pairs)
        cache1 = s * (weight @ caption_rows.T @ caption_rows)  # cache_dict = preserve_scale · prior
        cache2 = s * (caption_rows.T @ caption_rows)
        mat1 = mat1 + s * cache1 / 3e4  # ... and preserve_scale again in closed_form_refinement
        mat2 = mat2 + s * cache2 / 3e4
        expected = mat1 @ torch.inverse(mat2)
        assert relative(edited, expected) < 1e-5


def test_uce_default_matches_the_official_2023_formula(registry, pipe, tmp_path):
    """UCE @ 35e91e2, train-scripts/train_erase.py ``edit_model`` (technique 'replace', λ = 0.5, e = 1,
    R = [''] + preserve with p = max(0.1, 1/|R|)), written out in float64: the concept's last word token, [EoT] and
    pads aligned with the guide's block ``E(n)[k_n : L − (F − k_n)]``, retain rows all L tokens."""
    concepts = ConceptSet(name="u", erase=("nudity", "bare skin"), guides=(" ",), preserve=("a cat", "a red bus"))
    (method, _), = parts_for(registry, "uce")
    projections = cross_attention_projections(pipe.unet)
    before = [module.weight.detach().double().clone() for _, module in projections]
    state = {name: tensor.clone() for name, tensor in pipe.unet.state_dict().items()}
    try:
        method.edit(pipe, concepts, EditContext(cache_dir=tmp_path, show_progress=False))
        after = [module.weight.detach().clone() for _, module in projections]
    finally:
        pipe.unet.load_state_dict(state)

    length = pipe.tokenizer.model_max_length
    retain = ["", "a cat", "a red bus"]
    p, lamb = max(0.1, 1 / len(retain)), 0.5

    def last_word(prompt: str) -> int:
        mask = pipe.tokenizer([prompt], padding="max_length", max_length=length, truncation=True).attention_mask[0]
        return sum(mask) - 2

    for weight, edited in zip(before, after):
        mat1 = lamb * weight.clone()
        mat2 = lamb * torch.eye(weight.shape[1], dtype=torch.float64)
        for old in concepts.erase:
            new = " "
            k_o, k_n = last_word(old), last_word(new)
            shift = max(k_o, k_n)
            contexts = embed(pipe, old)[k_o : length - (shift - k_o)]
            values = (weight @ embed(pipe, new)[k_n : length - (shift - k_n)].T).T
            for context, value in zip(contexts, values):
                mat1 += torch.outer(value, context)
                mat2 += torch.outer(context, context)
        for text in retain:
            for row in embed(pipe, text):
                mat1 += p * torch.outer(weight @ row, row)
                mat2 += p * torch.outer(row, row)
        expected = mat1 @ torch.inverse(mat2)
        assert relative(edited, expected) < 1e-5


def test_harness_list_methods_presets_shows_every_preset_with_its_values(capsys):
    import json

    from harness.cli import main

    assert main(["list", "methods", "--presets"]) == 0
    text = capsys.readouterr().out
    assert "trce-t:preset=official  word_count_positions=True, double_preserve_scale=True, caption_divisor=30000.0" in text
    assert "trce:preset=official" in text and "trce-v.skip_zero_grad=True" in text
    assert "toy: trce-v  lr=0.0003, regularizer_samples=300" in text
    assert "toy: ring-a-bell (attack)  population=64, generations=100" in text
    assert main(["list", "methods", "--presets", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records["methods"]["sld"]["diffusers"] == {"strength": "medium", "diffusers_prefix": True}
    assert records["backbones"]["toy"]["adavd"] == {"shift_b": 0.3}


# --------------------------------------------------------------------------- the official augmentation lists, parsed

# Shaped like TRCE's src/cfr_utils.py (our own strings): templates live in code, one list per concept type.
CFR_UTILS_LIKE = '''
import torch

def prompt_augmentation(content, augment=True, augment_num=30, concept_type='object'):
    if augment:
        if concept_type == 'object':
            prompts = [
                ("{} on a shelf".format(content), content),
                ("A study of {}".format(content), content),
            ]
        elif concept_type == 'style':
            prompts = [("Work by {}".format(content), content)]
        else:
            raise ValueError("unknown concept type.")
    else:
        prompts = [("A photo of {}".format(content), content)]
    return prompts[:augment_num]
'''


def test_official_templates_are_read_from_the_code_without_running_it():
    from methods.trce_t import official_phrase_pairs, official_templates

    assert official_templates(CFR_UTILS_LIKE, "object", "file") == ["{} on a shelf", "A study of {}"]
    assert official_templates(CFR_UTILS_LIKE, "style", "file") == ["Work by {}"]
    with pytest.raises(HarnessError, match="no template list for concept type 'scene'"):
        official_templates(CFR_UTILS_LIKE, "scene", "file")
    with pytest.raises(HarnessError, match="no prompt_augmentation"):
        official_templates("x = 1\n", "object", "file")
    assert official_phrase_pairs('[["nudity", "clothes"], ["naked", "a coat"]]', "f") == [("nudity", "clothes"), ("naked", "a coat")]
    with pytest.raises(HarnessError, match="not a JSON list"):
        official_phrase_pairs('{"a": 1}', "f")


def test_official_augmentation_reads_the_pinned_upstream_files_through_the_data_layer(tmp_path, monkeypatch):
    """With ``augmentation=official`` the phrases and templates come from the pins in the concept set (here: files
    served by a stand-in for the download), sha256-checked, and their sources are recorded."""
    import hashlib

    from harness import data
    from methods.trce_t import augmentation

    files = {"phrases.json": '[["nudity", "clothes"], ["naked", "a coat"], ["nude", "dressed"]]', "cfr_utils.py": CFR_UTILS_LIKE}
    pins = {}
    for role, name in (("phrases", "phrases.json"), ("templates", "cfr_utils.py")):
        path = tmp_path / name
        path.write_text(files[name], encoding="utf-8")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        pins[role] = {"key": f"test-{role}", "filename": name, "url": f"https://example.invalid/{name}", "sha256": digest,
                      "size": path.stat().st_size, "licence": "test"}
    monkeypatch.setattr(data, "resolve", lambda item, *a, **k: data.Resolved(item, tmp_path / item.filename,
                                                                             hashlib.sha256((tmp_path / item.filename).read_bytes()).hexdigest(), True, "test"))
    concepts = ConceptSet(name="c", erase=("nudity",), phrases=(("ours", "x"),), templates=("our {}",), extra={"trce_official": pins})
    pairs, templates, origin = augmentation(concepts, 2, 1, "official")
    assert pairs == [("nudity", "clothes"), ("naked", "a coat")] and templates == ["{} on a shelf"]
    assert origin["phrases"]["sha256"] == pins["phrases"]["sha256"] and origin["templates"]["pinned"]
    assert augmentation(concepts, 0, 0, "concepts")[:2] == ([("ours", "x")], ["our {}"])
    with pytest.raises(HarnessError, match="no pins of the official TRCE lists.*augmentation=concepts"):
        augmentation(ConceptSet(name="bare", erase=("x",)), 0, 0, "official")


@pytest.mark.parametrize("name", ["sexual", "unsafe"])
def test_the_sd_concept_sets_pin_the_official_trce_lists(registry, name):
    from harness import data

    pins = registry.concept_set(name).extra["trce_official"]
    phrases, templates = (data.Upstream.from_dict(pins[role]) for role in ("phrases", "templates"))
    assert "ddgoodgood/TRCE/0da9b711214767eb04f635e489c896d121c03063/" in phrases.url and len(phrases.sha256) == 64
    assert templates.url.endswith("/src/cfr_utils.py") and len(templates.sha256) == 64
