"""SPM's maths on the tiny backbone: the membrane (SPM), its training (L_erase, LA), facilitated transport (FT), storage."""

import copy
import random
from pathlib import Path

import pytest
import torch

from harness.api import ConceptSet, HarnessError, PromptSpec
from harness.testing import tiny_target
from methods.spm import (
    SPM,
    FacilitatedTransport,
    Membrane,
    adapted_modules,
    anchor_rows,
    cosine_with_restarts,
    sample_anchors,
    token_sets,
    train_membrane,
    transport_gamma,
)
from methods.text import encode_prompts

CONCEPTS = ConceptSet(name="colours", erase=("red",), guides=("gray",))


def unet_output(unet, prompt_embeddings, seed=0):
    latents = torch.randn(len(prompt_embeddings), 4, 4, 4, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return unet(latents, 10, encoder_hidden_states=prompt_embeddings).sample


def randomised(membrane: Membrane, seed=1):
    """A trained-looking membrane: U no longer zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in membrane.layers:
            layer.up.copy_(torch.randn(layer.up.shape, generator=generator) * 0.1)
    return membrane


def test_the_membrane_sits_on_every_linear_and_conv_of_each_transformer_block_and_nowhere_else(tiny):
    names = [name for name, _ in adapted_modules(tiny.unet)]
    assert any(name.endswith("attn1.to_q") for name in names) and any(name.endswith("attn2.to_v") for name in names)
    assert any(name.endswith("proj_in") for name in names) and any(".ff." in name for name in names)
    assert any(name.endswith("attn2.to_out.0") for name in names)
    transformer_layers = {
        name
        for name, module in tiny.unet.named_modules()
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and ".attentions." in name
    }
    assert set(names) == transformer_layers  # every one of them, and no resnet/time-embedding layer
    assert not any("resnets" in name or "time_embedding" in name for name in names)


def test_a_fresh_membrane_is_the_identity_and_each_layers_delta_is_rank_one(tiny):
    unet = copy.deepcopy(tiny.unet)
    prompts = encode_prompts(tiny, ["a red circle", "a blue square"]).embeddings
    before = unet_output(unet, prompts)
    membrane = Membrane.create(unet, rank=1, alpha=1.0, seed=0)
    assert all(float(layer.up.detach().abs().max()) == 0 for layer in membrane.layers)  # U = 0
    with membrane:
        assert torch.equal(unet_output(unet, prompts), before)
    randomised(membrane)
    with membrane:
        changed = unet_output(unet, prompts)
    assert not torch.allclose(changed, before)
    assert torch.equal(unet_output(unet, prompts), before)  # hooks removed: the weights were never touched
    for layer in membrane.layers:
        singular = torch.linalg.svdvals(layer.delta_weight().detach().flatten(1).double())
        assert float(singular[0]) > 0 and float(singular[1]) <= 1e-5 * float(singular[0])  # rank 1 (to float32 round-off)


def test_the_hook_adds_m_alpha_over_r_times_u_d_x_for_linear_and_conv(tiny):
    unet = copy.deepcopy(tiny.unet)
    membrane = randomised(Membrane.create(unet, rank=1, alpha=2.0, seed=0))
    membrane.multiplier = 0.7
    checked = set()
    for module, layer in zip(membrane.modules_, membrane.layers):
        if isinstance(module, torch.nn.Linear) and "linear" not in checked:
            x = torch.randn(2, 5, module.in_features)
            expected = module(x) + 0.7 * 2.0 * torch.nn.functional.linear(x, layer.delta_weight())
            checked.add("linear")
        elif isinstance(module, torch.nn.Conv2d) and "conv" not in checked:
            x = torch.randn(2, module.in_channels, 4, 4)
            weight = module.weight + 0.7 * 2.0 * layer.delta_weight()
            expected = torch.nn.functional.conv2d(x, weight, module.bias, module.stride, module.padding)
            checked.add("conv")
        else:
            continue
        with membrane, torch.no_grad():
            torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
    assert "linear" in checked
    if any(isinstance(module, torch.nn.Conv2d) for module in membrane.modules_):
        assert "conv" in checked


def test_per_sample_multipliers_scale_each_samples_rows_in_every_branch(tiny):
    unet = copy.deepcopy(tiny.unet)
    membrane = randomised(Membrane.create(unet, rank=1, alpha=1.0, seed=0))
    prompts = encode_prompts(tiny, ["a red circle", "a blue square"]).embeddings
    both = torch.cat([prompts, prompts])  # two branches of two samples
    outputs = {}
    for gamma in (0.0, 1.0):
        membrane.multiplier = gamma
        with membrane:
            outputs[gamma] = unet_output(unet, both)
    membrane.multiplier = torch.tensor([1.0, 0.0])  # sample 0 fully on, sample 1 off
    with membrane:
        mixed = unet_output(unet, both)
    for row, gamma in enumerate([1.0, 0.0, 1.0, 0.0]):
        torch.testing.assert_close(mixed[row], outputs[gamma][row], rtol=1e-5, atol=1e-6)


def test_gamma_is_one_for_the_concept_itself_and_counts_the_concepts_tokens_in_a_prompt(tiny):
    words = ["red"]
    concept = encode_prompts(tiny, words).embeddings
    prompts = ["red", "a red circle", "a blue square"]
    embeddings = encode_prompts(tiny, prompts).embeddings
    gamma = transport_gamma(embeddings, token_sets(tiny.tokenizer, prompts), concept, token_sets(tiny.tokenizer, words))
    torch.testing.assert_close(gamma[0], torch.tensor(1.0))
    assert float(gamma[1]) == pytest.approx(1.0)  # every token of "red" is in the prompt
    cosine = torch.nn.functional.cosine_similarity(embeddings[2].flatten(), concept[0].flatten(), dim=0)
    assert float(gamma[2]) == pytest.approx(max(float(cosine), 0.0), abs=1e-6)  # no shared token: the cosine
    assert float(gamma[2]) < 1


def test_gamma_squared_scales_the_effective_delta_by_gamma_squared_instead_of_gamma(tiny):
    unet = copy.deepcopy(tiny.unet)
    membrane = randomised(Membrane.create(unet, rank=1, alpha=1.0, seed=0))
    prompts = encode_prompts(tiny, ["a blue square"]).embeddings
    base = unet_output(unet, prompts)
    results = {}
    for squared in (False, True):
        hooks = FacilitatedTransport(tiny, membrane, ["red"], SPM.Params(gamma_squared=squared))
        cond, _ = hooks.transform_embeddings(prompts, prompts, [PromptSpec(id="0", prompt="a blue square", seed=0)])
        gamma = float(hooks.gamma[0])
        hooks.install(unet)
        results[squared] = unet_output(unet, prompts)
        hooks.uninstall(unet)
    assert 0 < gamma < 1
    for squared, expected_m in ((False, gamma), (True, gamma**2)):
        membrane.multiplier = expected_m
        with membrane:
            torch.testing.assert_close(results[squared], unet_output(unet, prompts), rtol=1e-5, atol=1e-6)
        membrane.multiplier = 1.0
    assert not torch.allclose(results[False], results[True]) and not torch.allclose(results[False], base)


def test_anchors_are_far_from_the_target_and_keep_its_norm_within_20_percent():
    target = torch.randn(16, 32, generator=torch.Generator().manual_seed(3)) + 2.0  # a direction with a mean
    anchors = sample_anchors(target, 64, torch.Generator().manual_seed(0), random.Random(0))
    assert anchors.shape == (64, 16, 32)
    ratio = anchors.flatten(1).norm(dim=1) / target.norm()
    assert float(ratio.min()) >= 0.8 and float(ratio.max()) <= 1.2
    cosine = torch.nn.functional.cosine_similarity(anchors.flatten(1), target.flatten()[None], dim=1)
    assert float(cosine.abs().max()) < 0.2  # random directions in 512 dimensions: nearly orthogonal to the target


def test_the_official_anchor_layout_is_the_second_half_of_the_interleaved_batch():
    anchors = torch.arange(4.0).view(4, 1, 1) + 1
    null = torch.zeros(1, 1)
    assert anchor_rows(anchors, null, official=False).flatten().tolist() == [1, 2, 3, 4]
    assert anchor_rows(anchors, null, official=True).flatten().tolist() == [0, 3, 0, 4]  # [∅, a_3, ∅, a_4]


def test_the_lr_schedule_warms_up_then_restarts_its_cosine_three_times():
    factors = [cosine_with_restarts(step, warmup=10, total=70, cycles=3) for step in range(70)]
    assert factors[0] == 0 and factors[5] == 0.5 and factors[10] == 1.0
    assert factors[30] == pytest.approx(1.0) and factors[50] == pytest.approx(1.0)  # restarts at 1/3 and 2/3
    assert factors[29] < 0.05 and factors[69] < 0.05


def test_training_lowers_the_erase_loss_keeps_anchors_in_place_and_changes_only_the_membrane(tiny):
    unet = copy.deepcopy(tiny.unet).requires_grad_(False).float()
    before = {name: tensor.clone() for name, tensor in unet.state_dict().items()}

    def held_out_losses(membrane, params):
        """The mean loss terms over the same 16 fixed draws (another seed), evaluated without training (lr ≈ 0)."""
        probe = SPM.Params(**{**params.__dict__, "iterations": 16, "lr": 1e-30, "seed": 99})
        clone = Membrane.create(unet, rank=1, alpha=1.0, seed=0)  # hooked on the same modules, holding the same values
        with torch.no_grad():
            for mine, theirs in zip(clone.layers, membrane.layers):
                mine.down.copy_(theirs.down)
                mine.up.copy_(theirs.up)
        return train_membrane(tiny, unet, clone, ["red"], probe)["mean_losses"]

    results = {}
    for strength in (0.0, 1000.0):  # L_erase alone, then L_erase + 1000 · L_LA (the paper's)
        params = SPM.Params(iterations=40, lr=1e-2, warmup=0, num_steps=4, seed=0, anchor_strength=strength)
        membrane = Membrane.create(unet, rank=1, alpha=1.0, seed=0)
        initial = held_out_losses(membrane, params)
        history = train_membrane(tiny, unet, membrane, ["red"], params)
        results[strength] = (initial, held_out_losses(membrane, params), history)
        assert any(float(layer.up.detach().abs().max()) > 0 for layer in membrane.layers)
    initial, trained, _ = results[0.0]
    assert trained["loss"] < 0.5 * initial["loss"], (initial, trained)
    initial, trained, history = results[1000.0]
    assert set(history["mean_losses"]) == {"loss", "erase", "anchoring"} and initial["anchoring"] == 0  # U = 0 at start
    assert trained["erase"] < 0.9 * initial["erase"], (initial, trained)
    assert trained["anchoring"] < trained["erase"] / 100, trained  # the anchors' predictions barely move
    assert all(torch.equal(before[name], tensor) for name, tensor in unet.state_dict().items())


def test_the_adapter_round_trips_through_state_tensors_and_a_missing_layer_is_one_line(tiny):
    unet = copy.deepcopy(tiny.unet)
    membrane = randomised(Membrane.create(unet, rank=1, alpha=1.0, seed=0))
    restored = Membrane.from_state_tensors(unet, membrane.state_tensors(), alpha=1.0)
    prompts = encode_prompts(tiny, ["a red circle"]).embeddings
    with membrane:
        expected = unet_output(unet, prompts)
    with restored:
        torch.testing.assert_close(unet_output(unet, prompts), expected)
    partial = dict(list(membrane.state_tensors().items())[2:])
    with pytest.raises(HarnessError, match="has no layer"):
        Membrane.from_state_tensors(unet, partial, alpha=1.0)


def test_the_engine_stores_the_adapter_with_the_state_and_reloads_it_without_retraining(tiny, tmp_path):
    from harness.engine import ModelStates
    from harness.store import Store

    method = SPM(SPM.Params(iterations=3, warmup=0, num_steps=3, anchors=2))
    store = Store(tmp_path / "store")
    first = ModelStates(tiny, store, "tinyfp", tiny_target(), show_progress=False)
    state = first.activate([(method, "spm")], CONCEPTS, "spm")
    assert first.edits_run == 1 and len(state.hooks) == 1
    assert state.metadata[0]["parameters_changed"] == 0  # the weights are untouched: the state is the adapter
    adapter = state.hooks[0].membrane.state_tensors()
    second = ModelStates(tiny, store, "tinyfp", tiny_target(), show_progress=False)
    again = second.activate([(method, "spm")], CONCEPTS, "spm")
    assert second.edits_run == 0 and again.key == state.key
    reloaded = again.hooks[0].membrane.state_tensors()
    assert reloaded.keys() == adapter.keys() and all(torch.equal(reloaded[k], adapter[k]) for k in adapter)


def test_export_of_spm_is_refused_with_one_line(registry):
    from harness.runner import plan_erase

    with pytest.raises(HarnessError, match="changes sampling"):
        plan_erase(registry, method="spm", sets=[], model="tiny", device="cpu", dtype="float32")


def test_an_empty_concept_set_is_one_line(tiny, ctx):
    with pytest.raises(HarnessError, match="names nothing to erase"):
        SPM().edit(tiny, ConceptSet(name="empty"), ctx)


def test_a_composition_keeps_the_adapter_in_the_later_parts_delta_and_reloads_both(tiny, tmp_path):
    """spm then a weight edit: the second part's stored delta carries spm's adapter (cumulative, like the weights)."""
    from harness.engine import ModelStates
    from harness.plugins import load_file_module
    from harness.store import Store

    edits = load_file_module(Path(__file__).parent / "plugins" / "edits.py")
    parts = [(SPM(SPM.Params(iterations=2, warmup=0, num_steps=3, anchors=2)), "spm"), (edits.ScaleKeys(), "scale-keys")]
    store = Store(tmp_path / "store")
    first = ModelStates(tiny, store, "tinyfp", tiny_target(), show_progress=False)
    second = ModelStates(tiny, store, "tinyfp", tiny_target(), show_progress=False)
    try:
        state = first.activate(parts, CONCEPTS, "spm+scale-keys")
        adapter = state.hooks[0].membrane.state_tensors()
        assert first.edits_run == 2 and state.metadata[1]["parameters_changed"] > 0
        first.reset()
        again = second.activate(parts, CONCEPTS, "spm+scale-keys")  # loads only the last part's delta
        assert second.edits_run == 0 and len(again.hooks) == 1
        reloaded = again.hooks[0].membrane.state_tensors()
        assert all(torch.equal(reloaded[k], adapter[k]) for k in adapter)
    finally:
        first.reset()
        second.reset()


def test_the_sampling_only_switches_keep_their_own_state_but_reuse_the_trained_membrane(tiny, tmp_path, monkeypatch):
    """facilitated_transport and gamma_squared act only in FacilitatedTransport: their ablations get their own model
    state (the engine keys images by it) but not another 3000 training iterations."""
    import methods.spm as spm
    from harness.engine import ModelStates
    from harness.store import Store

    calls = []
    real = spm.train_membrane
    monkeypatch.setattr(spm, "train_membrane", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    base = dict(iterations=2, warmup=0, num_steps=3, anchors=2)
    states = ModelStates(tiny, Store(tmp_path / "store"), "tinyfp", tiny_target(), show_progress=False)
    keys, adapters = [], []
    for params in (base, {**base, "facilitated_transport": False}, {**base, "gamma_squared": True}, {**base, "seed": 1}):
        state = states.activate([(SPM(SPM.Params(**params)), "spm")], CONCEPTS, "spm")
        keys.append(state.key)
        adapters.append(state.hooks[0].membrane.state_tensors())
        states.reset()
    assert len(set(keys)) == 4 and states.edits_run == 4  # four states, so four sets of images
    assert len(calls) == 2  # trained for the defaults and for seed=1 only
    for reused in adapters[1:3]:
        assert all(torch.equal(reused[k], adapters[0][k]) for k in adapters[0])
    assert not all(torch.equal(adapters[3][k], adapters[0][k]) for k in adapters[0])


def test_the_membrane_cache_follows_the_unet_it_trains_on(tiny, ctx):
    """After an earlier part of a composition changed the UNet, the membrane is trained again, not reused."""
    method = SPM(SPM.Params(iterations=1, warmup=0, num_steps=3, anchors=0))
    first = method.membrane_key(tiny, ["red"], ctx)
    weight = tiny.unet.conv_in.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.add_(1.0)
        assert method.membrane_key(tiny, ["red"], ctx) != first
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert method.membrane_key(tiny, ["red"], ctx) == first
    assert SPM(SPM.Params(iterations=1, warmup=0, num_steps=3, anchors=0, gamma_squared=True)).membrane_key(tiny, ["red"], ctx) == first
