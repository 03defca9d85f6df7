"""Fine-tuning erasure on the tiny backbone: ESD-u, ESD-x, TRCE-V and the TRCE composition.

Runs use few DDIM steps and optimiser steps so that the whole file takes seconds
per test; the maths does not depend on those counts.
"""

import json
import warnings

import pytest
import torch

import methods.finetune as finetune
from harness.api import ConceptSet
from harness.context import EditContext
from harness.engine import ModelStates
from harness.runner import expand_method
from harness.spec import parse_selections
from harness.store import Store
from harness.testing import tiny_target
from methods.esd import ESDU, ESDX
from methods.finetune import (
    TRAJECTORY_CACHE,
    TrajectoryRequest,
    module_fingerprint,
    parameter_group,
    sample_trajectories,
    train,
)
from methods.trce_v import TRCEV, regularizer_timestep, triplet_margin_loss

CONCEPTS = ConceptSet(
    name="tiny-nudity",
    erase=("nudity", "naked"),
    guides=(" ",),
    phrases=(("nudity", "a person wearing clothes"), ("nude", "clothes")),
    templates=("a photo of {}",),
    captions=("a cat on a mat", "a red bus", "two dogs in snow", "a bowl of fruit"),
)
# Few DDIM steps and optimiser steps: every code path runs, in seconds.
QUICK_TRCE_V = dict(num_steps=6, early_steps=2, samples_per_prompt=1, max_steps=3, regularizer_batch=2)
QUICK_ESD = dict(num_steps=6, max_steps=3)


def weights(pipe) -> dict:
    return {name: tensor.clone() for name, tensor in pipe.unet.state_dict().items()}


def changed(before: dict, after: dict) -> set:
    return {name for name in before if not torch.equal(before[name], after[name])}


# --------------------------------------------------------------------------- parameter groups


def test_parameter_groups_select_by_module_name(tiny):
    names = {name for name, _ in tiny.unet.named_parameters()}
    visual = set(parameter_group(tiny.unet, "self-attention+query"))
    cross = set(parameter_group(tiny.unet, "cross-attention"))
    cross_kv = set(parameter_group(tiny.unet, "cross-attention-key-value"))
    esd_u = set(parameter_group(tiny.unet, "non-cross-attention"))
    esd_u_new = set(parameter_group(tiny.unet, "non-cross-attention-diffusers"))

    assert visual == {n for n in names if ".attn1." in n or ".attn2.to_q." in n}
    assert cross == {n for n in names if ".attn2." in n}
    assert cross_kv == {n for n in cross if ".to_k." in n or ".to_v." in n} and len(cross_kv) < len(cross)
    # paper ESD-u: no cross-attention, no time embedding, no output layers; conv_in, norms and time_emb_proj train
    assert esd_u == names - cross - {n for n in names if n.startswith(("time_embedding.", "conv_norm_out.", "conv_out."))}
    assert "conv_in.weight" in esd_u and any("time_emb_proj" in n for n in esd_u) and any("norm" in n for n in esd_u)
    # 2025 ESD-u: Linear/Conv2d weights outside attn2, with conv_out and the time embedding, without norms
    assert {"conv_out.weight", "time_embedding.linear_1.weight"} <= esd_u_new
    assert not esd_u_new & cross and not any(".norm" in f".{n}" for n in esd_u_new)


# --------------------------------------------------------------------------- only the declared groups change


@pytest.mark.parametrize(
    "method_cls, params, group",
    [
        (TRCEV, QUICK_TRCE_V, "self-attention+query"),
        (ESDU, QUICK_ESD, "non-cross-attention"),
        (ESDU, {**QUICK_ESD, "parameters": "diffusers"}, "non-cross-attention-diffusers"),
        (ESDX, QUICK_ESD, "cross-attention"),
        (ESDX, {**QUICK_ESD, "parameters": "strict"}, "cross-attention-key-value"),
    ],
)
def test_only_the_declared_parameter_group_changes(method_cls, params, group, pipe, ctx):
    before = weights(pipe)
    metadata = method_cls(method_cls.Params(**params)).edit(pipe, CONCEPTS, ctx)
    # every tensor of the group moved, every other tensor (buffers included) is bit for bit the same
    assert changed(before, weights(pipe)) == set(parameter_group(pipe.unet, group))
    assert metadata["method"] == method_cls.name and metadata["trainable_group"] == group
    assert metadata["steps"] == 3 and "quirks" in metadata and metadata["lr"] == method_cls.Params().lr
    assert metadata["written_back"] == {"dtype": "float32", "elements_changed": pytest.approx(1.0, abs=0.05), "surviving_share": 1.0}
    assert set(metadata) >= {"trainable_tensors", "trainable_parameters", "training", "seconds", "latent_size"}  # the template's keys
    json.dumps(metadata)  # stored with the model state


def test_esd_adamw_decays_the_weights_as_adamw_does(pipe, ctx):
    """``optimizer=adamw`` is AdamW with weight decay 0.01: one step from the same weights and the same gradient
    lands lr·0.01·W below Adam's step (decoupled decay).  Without the decay the two are the same optimiser."""
    params = {**QUICK_ESD, "max_steps": 1, "lr": 0.1}
    before = weights(pipe)
    results = {}
    for optimizer in ("adam", "adamw"):
        pipe.unet.load_state_dict(before)
        ESDX(ESDX.Params(**params, optimizer=optimizer)).edit(pipe, CONCEPTS, ctx)
        results[optimizer] = weights(pipe)
    trained = parameter_group(pipe.unet, "cross-attention")
    for name in trained:
        decay = results["adam"][name] - results["adamw"][name]
        torch.testing.assert_close(decay, 0.1 * 0.01 * before[name], atol=1e-6, rtol=1e-3)
    assert any(before[name].abs().max() > 0.01 for name in trained)  # the decay is visible, not lost in rounding
    # the key of an adamw state changed with the decay (a stored one trained as plain Adam is not reused); adam's did not
    assert ESDX(ESDX.Params(optimizer="adamw")).params_dict()["adamw_weight_decay"] == 0.01
    assert "adamw_weight_decay" not in ESDX(ESDX.Params()).params_dict()


# --------------------------------------------------------------------------- the targets each loss is built from


def stubbed_noise(values: dict[str, float], pipe, student):
    """A stand-in for ``predict``: the frozen models return, for each sample, the constant of the prompt its text rows
    are (``values``: prompt → constant); the trained copy returns zeros.  The targets a method builds are then
    numbers that can be written out by hand."""
    rows = {prompt: row for prompt, row in finetune.text_embeddings(pipe, list(values)).items()}

    def predict(unet, latents, timesteps, embeddings):
        if unet is student:
            return torch.zeros_like(latents)
        out = torch.empty_like(latents)
        for index, row in enumerate(embeddings):
            (prompt,) = [prompt for prompt, known in rows.items() if torch.equal(row.to(known.device), known)]
            out[index] = values[prompt]
        return out

    return predict


@pytest.mark.parametrize("eta", [1.0, 2.0])
def test_esd_regresses_onto_the_negatively_guided_target(pipe, ctx, monkeypatch, eta):
    """ESD (Gandikota et al., ICCV 2023; the paper's η convention, methods/esd.py): ε*(x, c) − η (ε*(x, c) − ε*(x)) is the
    unconditional prediction pushed away from the concept, ε∅ − η (ε_c − ε∅).  The student predicts 0, so the loss
    is the target squared: (1 − η·(3 − 1))² with ε∅ = 1 and ε_c = 3.  A flipped η gives (1 + 2η)²."""
    import methods.esd as esd

    method = ESDX(ESDX.Params(**QUICK_ESD, negative_guidance=eta))
    student = finetune.trainable_copy(pipe.unet, parameter_group(pipe.unet, method.trainable_group()))
    training = method.prepare(pipe, CONCEPTS, ctx, student)
    monkeypatch.setattr(esd, "predict", stubbed_noise({"": 1.0, "nudity": 3.0, "naked": 3.0}, pipe, student))
    for step in range(3):
        assert float(training.step_losses(step)["loss"]) == pytest.approx((1 - eta * 2) ** 2)


def test_trce_v_contrasts_the_guided_safe_target_against_the_guided_unsafe_one(pipe, ctx, monkeypatch):
    """TRCE-V (paper §4.2, Eq. 6–8; official run_trce_stage2.py): ε⁻ = ε*(c⁻) + g (ε*(c⁻) − ε*(∅)) is what to move
    away from, ε⁺ = ε*(c⁺) + g (ε*(c⁺) − ε*(∅)) what to move towards, with g = 15 by default.  With ε*(∅) = 1,
    ε*(c⁻) = 3 and ε*(c⁺) = 7: ε⁻ = 33 and ε⁺ = 97; swapping them would still train, the other way."""
    import methods.trce_v as trce_v

    method = TRCEV(TRCEV.Params(**QUICK_TRCE_V))
    student = finetune.trainable_copy(pipe.unet, parameter_group(pipe.unet, method.trainable_group()))
    training = method.prepare(pipe, CONCEPTS, ctx, student)
    values = {"": 1.0, **{f"a photo of {bad}": 3.0 for bad, _ in CONCEPTS.phrases}, **{f"a photo of {good}": 7.0 for _, good in CONCEPTS.phrases}}
    monkeypatch.setattr(trce_v, "predict", stubbed_noise(values, pipe, student))
    seen = []

    def recording(prediction, positive, negative, params):
        seen.append((positive, negative))
        return prediction.sum() * 0

    monkeypatch.setattr(trce_v, "contrastive_loss", recording)
    training.step_losses(0)
    assert seen and all(torch.all(positive == 97.0) and torch.all(negative == 33.0) for positive, negative in seen)


# --------------------------------------------------------------------------- the TRCE-V loss (Eq. 8)


@pytest.mark.parametrize("distance", ["mse", "l2"])
def test_triplet_loss_is_zero_at_the_safe_target_and_positive_at_the_unsafe_one(distance):
    generator = torch.Generator().manual_seed(0)
    positive = torch.randn(2, 4, 8, 8, generator=generator)  # ε⁺
    negative = positive + 1.0  # ε⁻, far from ε⁺: d(ε⁺, ε⁻) = 1 (mse) or 16 (l2) ≫ margin
    margin = 0.01

    assert triplet_margin_loss(positive, positive, negative, margin, distance).item() == 0.0
    at_negative = triplet_margin_loss(negative, positive, negative, margin, distance)
    gap = 1.0 if distance == "mse" else 16.0
    assert at_negative.item() == pytest.approx(gap + margin)
    # at ε⁺ but with ε⁻ closer than the margin, the loss stays positive
    assert triplet_margin_loss(positive, positive, positive + 1e-4, margin, distance).item() > 0


def test_quirk_timestep_is_drawn_inside_the_steps_interval():
    import random

    timesteps = torch.arange(981, 0, -20)  # SD's 50 DDIM steps
    exact = TRCEV.Params()
    quirk = TRCEV.Params(random_timestep_in_interval=True)
    rng = random.Random(0)
    assert int(regularizer_timestep(3, timesteps, 1000, exact, rng)) == 921
    draws = {int(regularizer_timestep(3, timesteps, 1000, quirk, rng)) for _ in range(200)}
    assert min(draws) >= 920 and max(draws) < 940 and len(draws) > 5  # official: [(49−k)·20, (50−k)·20)


# --------------------------------------------------------------------------- trajectories


def test_trajectories_match_the_diffusers_ddim_pipeline(pipe):
    """Our batched sampler is the pipeline's DDIM with guidance, and a sample does not depend on its batch-mates."""
    requests = [TrajectoryRequest("a photo of nudity", 7, (0, 3, 5)), TrajectoryRequest("a red bus", 8, (0, 3, 5))]
    together = sample_trajectories(pipe, pipe.unet, requests, num_steps=5, guidance=3.0, size=4, batch_size=2)
    alone = sample_trajectories(pipe, pipe.unet, requests[:1], num_steps=5, guidance=3.0, size=4, batch_size=1)
    torch.testing.assert_close(together[:1], alone, rtol=1e-5, atol=1e-5)

    generator = torch.Generator().manual_seed(7)
    reference = pipe(
        "a photo of nudity", num_inference_steps=5, guidance_scale=3.0, generator=generator, output_type="latent"
    ).images
    torch.testing.assert_close(together[0, 0], torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(7))[0])
    torch.testing.assert_close(together[0, 2], reference[0], rtol=1e-4, atol=1e-4)  # step 5 of 5 = the final latent


def test_trajectory_cache_is_hit_on_the_second_run(pipe, tmp_path, monkeypatch):
    before = weights(pipe)
    first = EditContext(cache_dir=tmp_path / "cache", show_progress=False)
    TRCEV(TRCEV.Params(**QUICK_TRCE_V)).edit(pipe, CONCEPTS, first)
    after_first = weights(pipe)
    assert first.cache_misses[TRAJECTORY_CACHE] == 2 and first.cache_hits[TRAJECTORY_CACHE] == 0  # malicious + regulariser

    def no_sampling(*args, **kwargs):
        raise AssertionError("the second run must not sample")

    monkeypatch.setattr(finetune, "sample_trajectories", no_sampling)
    pipe.unet.load_state_dict(before)
    second = EditContext(cache_dir=tmp_path / "cache", show_progress=False)
    TRCEV(TRCEV.Params(**QUICK_TRCE_V)).edit(pipe, CONCEPTS, second)
    assert second.cache_misses[TRAJECTORY_CACHE] == 0 and second.cache_hits[TRAJECTORY_CACHE] == 2
    # same trajectories, same seeds: the same model comes out
    assert not changed(after_first, weights(pipe))

    # an ablation of a training setting (g, α, λ, lr, the zero_grad quirk) reuses the trajectories too
    pipe.unet.load_state_dict(before)
    third = EditContext(cache_dir=tmp_path / "cache", show_progress=False)
    ablation = {**QUICK_TRCE_V, "guidance_enhancement": 5.0, "margin": 0.1, "regularization_scale": 10.0, "skip_zero_grad": True}
    TRCEV(TRCEV.Params(**ablation)).edit(pipe, CONCEPTS, third)
    assert third.cache_misses[TRAJECTORY_CACHE] == 0


def test_esd_trajectories_are_cached_and_shorter_runs_reuse_them(pipe, tmp_path, monkeypatch):
    ctx = EditContext(cache_dir=tmp_path / "cache", show_progress=False)
    ESDX(ESDX.Params(**{**QUICK_ESD, "max_steps": 4})).edit(pipe, CONCEPTS, ctx)
    assert ctx.cache_misses[TRAJECTORY_CACHE] == 1
    monkeypatch.setattr(finetune, "sample_trajectories", lambda *a, **k: pytest.fail("sampled again"))
    again = EditContext(cache_dir=tmp_path / "cache", show_progress=False)
    ESDX(ESDX.Params(**{**QUICK_ESD, "max_steps": 4, "negative_guidance": 2.0})).edit(pipe, CONCEPTS, again)
    assert again.cache_hits[TRAJECTORY_CACHE] == 1 and again.cache_misses[TRAJECTORY_CACHE] == 0


# --------------------------------------------------------------------------- the zero_grad quirk


@pytest.mark.parametrize("skip_zero_grad, expected_grad, expected_weight", [(False, 1.0, -3.0), (True, 3.0, -6.0)])
def test_skip_zero_grad_accumulates_gradients(skip_zero_grad, expected_grad, expected_weight):
    """Loss w·1 has gradient 1 each step.  Cleared, three SGD steps move w by 3; accumulated, by 1 + 2 + 3."""
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=1.0)
    history = train(lambda step: {"loss": weight.sum()}, optimizer, 3, skip_zero_grad=skip_zero_grad)
    assert weight.grad.item() == expected_grad
    assert weight.item() == expected_weight
    assert history["steps"] == 3


# --------------------------------------------------------------------------- TRCE = trce-t + trce-v


def parts_for(registry, text):
    (item,) = parse_selections(text, "--methods")
    return [part for selection in item for part in expand_method(registry, selection, {}, text)]


@pytest.fixture
def states(tiny, tmp_path):
    states = ModelStates(tiny, Store(tmp_path), "tiny-fp", tiny_target(), show_progress=False)
    yield states
    states.reset()


QUICK_TEXT = ",".join(f"{k}={v}" for k, v in QUICK_TRCE_V.items())


def test_trce_is_trce_t_then_trce_v_and_stage_two_regularises_towards_stage_one(states, registry, tiny):
    base = module_fingerprint(tiny.unet)
    parts = parts_for(registry, f"trce:preserve_scale=0.02,{QUICK_TEXT}")
    assert [method.name for method, _ in parts] == ["trce-t", "trce-v"]
    assert parts[0][0].params.preserve_scale == 0.02 and parts[1][0].params.max_steps == 3  # routed to their owners
    assert parts[1][0].params.regularization_scale == 100.0

    states.activate(parts_for(registry, "trce-t:preserve_scale=0.02"), CONCEPTS, "trce-t")
    stage_one = module_fingerprint(tiny.unet)
    assert stage_one != base

    state = states.activate(parts, CONCEPTS, "trce")
    stage_two = state.metadata[1]
    assert stage_two["method"] == "trce-v"
    assert stage_two["regularizer_unet"] == stage_one  # Eq. 9's reference: the stage-1 model
    assert stage_two["reference_unet"] == base  # Eq. 6–7 and the trajectories: the original model

    alone = states.activate(parts_for(registry, f"trce-v:{QUICK_TEXT}"), CONCEPTS, "trce-v").metadata[0]
    assert alone["regularizer_unet"] == alone["reference_unet"] == base  # the paper's "TRCE (V)" row


def test_write_back_warns_when_half_precision_rounds_the_updates_away():
    """fp16 weights keep only updates above half an ulp: at lr-1e-6 sizes most vanish, and the user is told so."""
    torch.manual_seed(0)
    half = torch.nn.Linear(64, 64).half()
    student = torch.nn.Linear(64, 64)
    student.load_state_dict({k: v.float() for k, v in half.state_dict().items()})
    with torch.no_grad():
        student.weight.add_(1e-6)  # far below fp16's resolution near these weights
    exact = {}
    with pytest.warns(UserWarning, match="--dtype float32"):
        info = finetune.write_back(half, student, ["weight"], exact=exact)
    assert info["dtype"] == "float16" and info["surviving_share"] < 0.5 and info["elements_changed"] < 0.5
    assert torch.equal(exact["unet.weight"], student.weight.detach())  # the float32 values are handed on, unrounded
    full = torch.nn.Linear(64, 64)
    student.load_state_dict(full.state_dict())
    with torch.no_grad():
        student.weight.add_(1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = finetune.write_back(full, student, ["weight"])
    assert info == {"dtype": "float32", "elements_changed": pytest.approx(1.0, abs=0.01), "surviving_share": 1.0}


# --------------------------------------------------------------------------- precision of the stored model state


def test_trce_v_at_paper_lr_stores_a_float32_delta_that_survives_a_round_trip_exactly(states, registry, tiny):
    from safetensors.torch import load_file

    base = {name: tensor.clone() for name, tensor in tiny.unet.state_dict().items()}
    state = states.activate(parts_for(registry, f"trce-v:lr=1e-6,{QUICK_TEXT}"), CONCEPTS, "trce-v")
    trained = {f"unet.{name}": tensor.clone() for name, tensor in tiny.unet.state_dict().items()}
    delta = load_file(str(states.store.delta_path(state.key)))
    assert delta and all(tensor.dtype == torch.float32 for tensor in delta.values())
    assert set(delta) == {f"unet.{name}" for name in parameter_group(tiny.unet, "self-attention+query")}
    assert state.metadata[0]["written_back"]["surviving_share"] == 1.0
    # lr 1e-6 moves the weights by about 1e-6: small, but every bit of it is stored and re-applied
    assert max(float((delta[name] - base[name[len("unet.") :]]).abs().max()) for name in delta) < 1e-4
    states.reset()
    assert all(torch.equal(tensor, base[name]) for name, tensor in tiny.unet.state_dict().items())
    states.apply_delta(delta)
    for name, tensor in delta.items():
        assert torch.equal(trained[name], tensor) and torch.equal(states.parameters[name], tensor)


def test_a_float16_pipeline_keeps_the_float32_delta_and_records_the_surviving_share(registry, tmp_path):
    """``--dtype float16``: the update is trained in float32, stored in float32, and rounded only when applied."""
    from harness.testing import tiny_pipeline

    half = tiny_pipeline(dtype="float16")
    states = ModelStates(half, Store(tmp_path), "tiny-fp", tiny_target("float16"), show_progress=False)
    parts = parts_for(registry, f"trce-v:lr=1e-6,{QUICK_TEXT}")
    with pytest.warns(UserWarning, match="survive the cast to float16"):
        state = states.activate(parts, CONCEPTS, "trce-v")
    written = state.metadata[0]["written_back"]
    assert written["dtype"] == "float16" and 0 < written["surviving_share"] < 0.5  # most lr-1e-6 updates round away
    from safetensors.torch import load_file

    delta = load_file(str(states.store.delta_path(state.key)))
    group = parameter_group(half.unet, "self-attention+query")
    assert set(delta) == {f"unet.{name}" for name in group} and all(t.dtype == torch.float32 for t in delta.values())
    originals = {f"unet.{name}": states.originals[f"unet.{name}"].float() for name in group}
    learned = sum(int((delta[n] != originals[n]).sum()) for n in delta)
    survived = sum(int((delta[n].half() != originals[n].half()).sum()) for n in delta)
    assert written["surviving_share"] == pytest.approx(survived / learned)
    # the float16 model state has its own key: a float32 run does not reuse the rounded one
    full = ModelStates(tiny_pipeline(), Store(tmp_path), "tiny-fp", tiny_target(), show_progress=False)
    assert full.activate(parts, CONCEPTS, "trce-v").key != state.key


def test_float32_with_tf32_is_the_cuda_default_and_float16_is_left_alone():
    import torch

    from harness.runner import matmul_precision

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        assert matmul_precision("cpu", "float32") == "float32" and not torch.backends.cuda.matmul.allow_tf32
        assert matmul_precision("cuda", "float16") == "float16" and not torch.backends.cuda.matmul.allow_tf32
        assert matmul_precision("cuda", "float32") == "tf32"
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_a_float16_run_shows_the_surviving_share_in_the_provenance_column(tmp_path, capsys):
    """`harness run --dtype float16` with a fine-tuned method at lr 1e-6: the leaderboard says how much survived."""
    from pathlib import Path

    from harness.cli import main

    plugins = Path(__file__).parent / "plugins"
    method = "trce-v:lr=1e-6,num_steps=6,early_steps=2,samples_per_prompt=1,max_steps=3,regularizer_batch=2"
    code = main(["--plugin", str(plugins / "brightness.py"), "--plugin", str(plugins / "edits.py"), "run", "--model", "tiny",
                 "--dtype", "float16", "--methods", method, "--bench", "fixed:count=2", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "erased here" in line)
    share = int(line.split("float16: ")[1].split("%")[0])
    assert 0 <= share < 50 and "of fine-tuned changes kept" in line
