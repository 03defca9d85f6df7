"""SLD and SAFREE on the tiny backbone: the guidance rule, presets, the projection, the step switch, and the recorded cost."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.api import ConceptSet, PromptSpec
from harness.cli import main
from harness.context import EditContext
from harness.engine import ActiveState, Defaults, Engine
from harness.store import Store
from methods.safree import NUDITY_CONCEPTS, SAFREE, span_projector, switch_step, toxic_concepts
from methods.sld import DIFFUSERS_PREFIX, PRESETS, SAFETY_CONCEPT, SLD, SafeGuidance, SafetyConfig, safety_concept_text

CONCEPTS = ConceptSet(name="test", erase=("red", "crimson"), guides=("gray",))
REPO = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def ctx(tmp_path):
    return EditContext(cache_dir=tmp_path / "cache", show_progress=False)


def make_engine(tiny, tmp_path, steps):
    return Engine(tiny, Store(tmp_path / "store"), "tiny-fp", Defaults(steps=steps, height=32, width=32), "cpu", "float32", show_progress=False)


def two_specs(engine):
    return [engine.resolve(PromptSpec("0", "a red circle", seed=11)), engine.resolve(PromptSpec("1", "a crimson cross", seed=12))]


def pixels(images):
    return [np.asarray(image, dtype=np.int16) for image in images]


# --------------------------------------------------------------------------- SLD


def test_sld_guidance_rule_against_a_hand_computed_step():
    # s_S = 10, λ = 0.05, s_m = 0.5, β_m = 0.6, warm-up 1 step; CFG w = 7.5 for sample 0 and w = 1 (no CFG) for sample 1.
    config = SafetyConfig(sld_warmup_steps=1, sld_guidance_scale=10.0, sld_threshold=0.05, sld_momentum_scale=0.5, sld_mom_beta=0.6)
    # Three elements per sample: (ε_∅, ε_p, ε_S).
    uncond = torch.tensor([0.0, 0.1, 0.0], dtype=torch.float64)
    prompt = torch.tensor([0.2, 0.5, 0.5], dtype=torch.float64)
    safety = torch.tensor([0.3, 0.48, 0.1], dtype=torch.float64)
    embeddings = {"u": torch.full((1, 2, 3), 1.0), "p": torch.full((1, 2, 3), 2.0), "s": torch.full((1, 2, 3), 3.0)}
    seen = []

    def unet_call(latents, timestep, emb):
        # The batch must be [uncond, prompt, safety concept] for both samples.
        seen.append(emb[:, 0, 0].tolist())
        rows = [uncond, uncond, prompt, prompt, safety, safety]
        return torch.stack(rows).view(6, 1, 1, 3)

    guide = SafeGuidance(config, embeddings["s"])
    latents = torch.zeros(2, 1, 1, 3, dtype=torch.float64)
    cond, negative = embeddings["p"].expand(2, -1, -1), embeddings["u"].expand(2, -1, -1)
    guidance = torch.tensor([7.5, 1.0], dtype=torch.float64).view(-1, 1, 1, 1)
    step0 = guide.guide(0, 999, latents, unet_call, cond, negative, guidance)
    step1 = guide.guide(1, 980, latents, unet_call, cond, negative, guidance)
    assert seen[0] == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]

    # Step 0 is warm-up: plain CFG, but the momentum already builds up.
    #   element 0: p−S = −0.1 < λ → μ = min(0.1·10, 1) = 1,   γ = 1·(0.3 − 0) = 0.3,         ν = 0.4·0.3 = 0.12
    #   element 1: p−S = 0.02 < λ → μ = 0.2,                  γ = 0.2·(0.48 − 0.1) = 0.076,  ν = 0.4·0.076 = 0.0304
    #   element 2: p−S = 0.4 ≥ λ  → μ = 0,                    γ = 0,                         ν = 0
    assert step0[0].flatten().tolist() == pytest.approx([7.5 * 0.2, 0.1 + 7.5 * 0.4, 7.5 * 0.5])
    # Step 1: γ = μ(ε_S − ε_∅) + s_m ν → 0.3 + 0.06 = 0.36;  0.076 + 0.0152 = 0.0912;  0;   ε̃ = ε_∅ + w(ε_p − ε_∅ − γ)
    assert step1[0].flatten().tolist() == pytest.approx([7.5 * (0.2 - 0.36), 0.1 + 7.5 * (0.4 - 0.0912), 7.5 * 0.5])
    # w = 1 means no CFG, and SLD is off for that sample, as in the official pipelines.
    assert step1[1].flatten().tolist() == pytest.approx(prompt.tolist())
    # ν ← β ν + (1 − β) γ after step 1
    assert guide.momentum[0].flatten().tolist() == pytest.approx([0.6 * 0.12 + 0.4 * 0.36, 0.6 * 0.0304 + 0.4 * 0.0912, 0.0])
    # A new batch restarts the momentum.
    guide.guide(0, 999, latents, unet_call, cond, negative, guidance)
    assert guide.momentum[0].flatten().tolist() == pytest.approx([0.12, 0.0304, 0.0])


def test_presets_are_the_safety_configs_and_params_override_them():
    assert PRESETS["medium"] == SafetyConfig(10, 1000, 0.01, 0.3, 0.4)
    assert PRESETS["max"] == SafetyConfig(0, 5000, 1.0, 0.5, 0.7)
    assert PRESETS["weak"] == SafetyConfig(15, 20, 0.0, 0.0, 0.0)
    assert PRESETS["strong"] == SafetyConfig(7, 2000, 0.025, 0.5, 0.7)
    assert SLD(SLD.Params(strength="strong", sld_threshold=0.5)).config() == SafetyConfig(7, 2000, 0.5, 0.5, 0.7)
    with pytest.raises(ValueError):
        SLD.Params(strength="extreme")


def test_max_and_weak_change_the_image_and_an_off_scale_is_bit_identical(tiny, tmp_path, ctx):
    steps = 16  # WEAK waits 15 warm-up steps
    engine = make_engine(tiny, tmp_path, steps)
    specs = two_specs(engine)
    plain = pixels(engine.sample(specs, ActiveState("base", "sd")))

    def run(params):
        hooks = SLD(params).sampling_hooks(tiny, CONCEPTS, ctx)
        calls = engine.unet_calls
        images = pixels(engine.sample(specs, ActiveState("sld", "sld", hooks=[hooks])))
        return images, hooks, engine.unet_calls - calls

    for strength in ("max", "weak"):
        images, hooks, calls = run(SLD.Params(strength=strength))
        assert hooks.extra_branches == 1 and calls == steps  # one batched UNet call of 3 branches per step
        assert all(np.abs(a - b).max() > 0 for a, b in zip(images, plain)), strength

    images, hooks, _ = run(SLD.Params(strength="max", sld_guidance_scale=1.0))
    assert not hooks.guides and hooks.extra_branches == 0
    assert all(np.array_equal(a, b) for a, b in zip(images, plain))


def test_safety_concept_from_the_concept_set():
    sexual = ConceptSet.from_file(REPO / "benchmarks/concepts/sexual.json")
    unsafe = ConceptSet.from_file(REPO / "benchmarks/concepts/unsafe.json")
    van_gogh = ConceptSet.from_file(REPO / "benchmarks/concepts/van-gogh.json")
    toy_red = ConceptSet.from_file(REPO / "benchmarks/toyworld/concepts/toy-red.json")
    default = SLD.Params()
    assert safety_concept_text(sexual, default) == safety_concept_text(unsafe, default) == SAFETY_CONCEPT
    assert SAFETY_CONCEPT.count(",") == 19  # the original 20-item concept
    assert safety_concept_text(sexual, SLD.Params(diffusers_prefix=True)) == "an image showing " + SAFETY_CONCEPT == DIFFUSERS_PREFIX + SAFETY_CONCEPT
    assert safety_concept_text(van_gogh, default) == "Van Gogh"
    assert safety_concept_text(toy_red, default) == "red, crimson, scarlet, vermilion, carmine"
    assert safety_concept_text(toy_red, SLD.Params(safety_concept="blood")) == "blood"


# --------------------------------------------------------------------------- SAFREE


def pooled(pipe, prompts):
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids).pooler_output.double()


def embed(pipe, prompts):
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids)[0]


def test_concept_projection_is_idempotent_and_orthogonal_to_the_concept_subspace(tiny, ctx):
    hooks = SAFREE().sampling_hooks(tiny, CONCEPTS, ctx)
    sampler = hooks.guide.__self__
    concept_vectors = pooled(tiny, list(CONCEPTS.erase))
    projector = sampler.concept_projector
    # P_c is the projector of Kᵀ(KKᵀ)⁺K: symmetric, idempotent, and I − P_c removes the concept directions.
    reference = concept_vectors.T @ torch.linalg.pinv(concept_vectors @ concept_vectors.T) @ concept_vectors
    assert torch.allclose(projector, reference, atol=1e-8)
    assert torch.allclose(projector @ projector, projector, atol=1e-10) and torch.allclose(projector, projector.T, atol=1e-12)
    off = torch.eye(len(projector), dtype=torch.float64) - projector
    assert torch.allclose(off @ off, off, atol=1e-10)
    assert torch.linalg.matrix_rank(projector) == 2

    # The projected trigger rows of a prompt have no component in the concept subspace; the other rows are untouched.
    original = embed(tiny, ["a red circle"])[0]
    result = sampler.project_prompt("a red circle", original)
    assert result.triggers, "the tiny model flags some tokens of 'a red circle'"
    rows = result.embedding[result.triggers].double()
    scale = rows.norm(dim=1, keepdim=True) * concept_vectors.norm(dim=1)
    assert (rows @ concept_vectors.T / scale).abs().max() < 1e-6
    untouched = [i for i in range(original.shape[0]) if i not in result.triggers]
    assert torch.equal(result.embedding[untouched], original[untouched])
    # Projecting an already projected row again changes nothing (off-concept part of an off-concept row).
    assert torch.allclose(rows @ off.T, rows, atol=1e-5)


def test_trigger_tokens_and_switch_step_follow_the_equations(tiny, ctx):
    sampler = SAFREE().sampling_hooks(tiny, CONCEPTS, ctx).guide.__self__
    prompt = "a red circle"
    ids = tiny.tokenizer(prompt).input_ids
    words = len(ids) - 2
    variants = []
    for i in range(words):
        masked = list(ids)
        masked[i + 1] = 0  # CLIP's "!"
        variants.append(masked)
    with torch.no_grad():
        p = tiny.text_encoder(torch.tensor(variants)).pooler_output.double()
    concept_vectors = pooled(tiny, list(CONCEPTS.erase))
    off = torch.eye(p.shape[1], dtype=torch.float64) - concept_vectors.T @ torch.linalg.pinv(concept_vectors @ concept_vectors.T) @ concept_vectors
    d = (p @ off).norm(dim=1)
    expected_triggers = [i + 1 for i in range(words) if not d[i] < 1.01 * (d.sum() - d[i]) / (words - 1)]
    original = embed(tiny, [prompt])[0].double()
    projected_all = original @ (off @ span_projector(p)).T
    beta = 1 - torch.nn.functional.cosine_similarity(projected_all[: words + 2], original[: words + 2], dim=1).mean()

    result = sampler.project_prompt(prompt, embed(tiny, [prompt])[0])
    assert result.triggers == expected_triggers
    assert result.beta == pytest.approx(float(beta), rel=1e-9)
    assert result.last_step == round(10 / (1 + math.exp(-2 * 2.5 * (10 * float(beta) - 5.333))))
    assert switch_step(0.5333, 10, 2.5, 5.333) == 5 and switch_step(0.0, 10, 2.5, 5.333) == 0 and switch_step(1.0, 10, 2.5, 5.333) == 10


def test_the_projected_embedding_is_used_up_to_the_computed_step(tiny, ctx):
    prompt = "a red circle"
    beta = SAFREE().sampling_hooks(tiny, CONCEPTS, ctx).guide.__self__.project_prompt(prompt, embed(tiny, [prompt])[0]).beta
    # Centre the sigmoid on this prompt's β: T* = round(4 · ½) = 2, so steps 0, 1, 2 use the projection and 3, 4, 5 do not.
    params = SAFREE.Params(up_t=4, svf_t0=10 * beta, concept_negative_prompt=True)
    hooks = SAFREE(params).sampling_hooks(tiny, CONCEPTS, ctx)
    cond = embed(tiny, [prompt, ""])
    uncond = embed(tiny, ["", ""])
    specs = [PromptSpec("0", prompt, 1), PromptSpec("1", "", 2)]
    projected, negative = hooks.transform_embeddings(cond, uncond, specs)
    assert hooks.guide.__self__.batch.last_step.tolist() == [2, -1]
    # The negative prompt is the concept list (the official run's switch).
    assert torch.equal(negative, embed(tiny, ["red, crimson"]).expand(2, -1, -1))
    used = []

    def unet_call(latents, timestep, embeddings):
        used.append(torch.equal(embeddings[2], projected[0]) and not torch.equal(embeddings[2], cond[0]))
        assert torch.equal(embeddings[3], cond[1]) and torch.equal(embeddings[:2], negative)
        return torch.zeros(4, 4, 4, 4)

    for step in range(6):
        hooks.guide(step, 999 - step, torch.zeros(2, 4, 4, 4), unet_call, projected, negative, torch.full((2, 1, 1, 1), 7.5))
    assert used == [True, True, True, False, False, False]


def test_switches_negative_prompt_self_validation_and_latent_reattention(tiny, ctx):
    cond, uncond = embed(tiny, ["a red circle"]), embed(tiny, [""])
    specs = [PromptSpec("0", "a red circle", 1)]
    assert not SAFREE.Params().concept_negative_prompt  # the paper's method; the official run's negative prompt is a switch
    assert SAFREE.presets["official"]["concept_negative_prompt"]
    hooks = SAFREE(SAFREE.Params(self_validation=False)).sampling_hooks(tiny, CONCEPTS, ctx)
    _, negative = hooks.transform_embeddings(cond, uncond, specs)
    assert torch.equal(negative, uncond)
    assert hooks.guide.__self__.batch.last_step.item() >= 10**9  # projected at every step
    assert hooks.extra_branches == 0
    hooks.install(tiny)
    try:
        assert all(getattr(block, "s1", None) is None for block in tiny.unet.up_blocks)  # FreeU stays off
    finally:
        hooks.uninstall(tiny)

    hooks = SAFREE(SAFREE.Params(latent_reattention=True)).sampling_hooks(tiny, CONCEPTS, ctx)
    hooks.install(tiny)
    try:
        assert all(getattr(block, "s1", None) == 0.9 and block.s2 == 0.2 and block.b1 == 1.0 for block in tiny.unet.up_blocks)
    finally:
        hooks.uninstall(tiny)
    assert all(getattr(block, "s1", None) is None for block in tiny.unet.up_blocks)


def test_safree_changes_the_image_on_the_tiny_backbone(tiny, tmp_path, ctx):
    engine = make_engine(tiny, tmp_path, 4)
    specs = two_specs(engine)
    plain = pixels(engine.sample(specs, ActiveState("base", "sd")))
    hooks = SAFREE().sampling_hooks(tiny, CONCEPTS, ctx)
    calls = engine.unet_calls
    images = pixels(engine.sample(specs, ActiveState("safree", "safree", hooks=[hooks])))
    assert engine.unet_calls - calls == 4  # plain CFG cost
    assert all(np.abs(a - b).max() > 0 for a, b in zip(images, plain))


def test_toxic_concepts_from_the_concept_set():
    sexual = ConceptSet.from_file(REPO / "benchmarks/concepts/sexual.json")
    van_gogh = ConceptSet.from_file(REPO / "benchmarks/concepts/van-gogh.json")
    kelly = ConceptSet.from_file(REPO / "benchmarks/concepts/kelly-mckernan.json")
    toy_red = ConceptSet.from_file(REPO / "benchmarks/toyworld/concepts/toy-red.json")
    default = SAFREE.Params()
    assert toxic_concepts(sexual, default) == list(NUDITY_CONCEPTS) and len(NUDITY_CONCEPTS) == 17
    assert toxic_concepts(van_gogh, default) == ["Van Gogh"] and toxic_concepts(kelly, default) == ["Kelly McKernan"]
    assert toxic_concepts(toy_red, default) == ["red", "crimson", "scarlet", "vermilion", "carmine"]
    assert toxic_concepts(toy_red, SAFREE.Params(concepts=("blood",))) == ["blood"]


# --------------------------------------------------------------------------- cost in the store


def test_unet_evaluations_per_image_are_recorded(tmp_path, capsys):
    out = str(tmp_path / "out")
    methods = "sd,sld:strength=max,speed,speed+sld:strength=max,safree,adavd"
    code = main(["--plugin", str(PLUGINS / "brightness.py"), "run", "--model", "tiny", "--methods", methods, "--bench", "fixed:count=2",
                 "--out", out, "--no-progress"])
    assert code == 0
    capsys.readouterr()
    assert main(["--plugin", str(PLUGINS / "brightness.py"), "report", "--out", out, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    cost = {r["method"]: r["unet_evals_per_image"] for r in records if r["metric"] == "brightness:mean"}
    steps = 4  # the tiny backbone's default
    assert cost == {
        "sd": 2 * steps,
        "sld:strength=max": 3 * steps,  # SLD: uncond, prompt and safety concept at every step
        "speed": 2 * steps,
        "speed+sld:strength=max": 3 * steps,  # an edit composed with an inference method keeps the method's cost
        "safree": 2 * steps,
        "adavd": 2 * steps,
    }
    # The composition really applies both parts: its images differ from either part's alone.
    brightness = {r["method"]: r["value"] for r in records if r["metric"] == "brightness:mean"}
    assert brightness["speed+sld:strength=max"] not in (brightness["speed"], brightness["sld:strength=max"])
