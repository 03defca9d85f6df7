"""The engine on the tiny backbone: batching never changes an image, nothing is generated twice."""

import numpy as np
import pytest

from harness.api import PromptSpec
from harness.engine import ActiveState, Defaults, Engine
from harness.store import Store

BASE = ActiveState(key="base", label="sd")


@pytest.fixture
def engine(tiny, tmp_path):
    return Engine(tiny, Store(tmp_path), "tiny-fp", Defaults(steps=4, height=32, width=32), "cpu", "float32", batch_size=8, show_progress=False)


def specs(count, guidance=7.5):
    return [PromptSpec(id=str(i), prompt=f"prompt number {i % 5}", seed=17 + 7919 * i, guidance=guidance + (i % 3)) for i in range(count)]


def test_an_image_in_a_batch_of_8_equals_the_same_prompt_and_seed_alone(engine):
    batch = [engine.resolve(s) for s in specs(8)]
    together = engine.sample(batch, BASE)
    for spec, image in zip(batch, together):
        (alone,) = engine.sample([spec], BASE)
        difference = np.abs(np.asarray(alone, dtype=np.int16) - np.asarray(image, dtype=np.int16))
        assert difference.max() <= 1  # float tolerance, after rounding to 8 bits
    # Different seeds really give different images (the comparison above is not vacuous).
    assert not np.array_equal(np.asarray(together[0]), np.asarray(together[1]))


def test_rerunning_finished_work_calls_the_unet_zero_times(engine):
    work = specs(10)
    keys = engine.generate(work, BASE)
    calls = engine.unet_calls
    assert calls == 2 * 4  # two batches (8 + 2) of 4 steps
    assert engine.generate(work, BASE) == keys
    assert engine.unet_calls == calls
    assert all(engine.store.image_path(k).exists() for k in keys)


def test_stored_png_is_lossless(engine):
    spec = engine.resolve(specs(1)[0])
    (key,) = engine.generate([spec], BASE)
    (image,) = engine.sample([spec], BASE)
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(engine.store.image_path(key))), np.asarray(image))


def test_text_embeddings_are_computed_once_per_unique_prompt(engine, tiny):
    seen = []
    handle = tiny.text_encoder.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    try:
        engine.generate(specs(10), BASE)  # 5 distinct prompts, plus the empty negative prompt
    finally:
        handle.remove()
    assert sum(seen) == 6


def test_seeds_above_two_to_the_31_are_exact_and_distinct(engine):
    # I2P seeds reach 4,290,749,014 (> 2**31, < 2**32); torch's CPU generator takes them as they are.
    big = [PromptSpec("a", "x", seed=2**31 + 5), PromptSpec("b", "x", seed=4_290_749_014), PromptSpec("c", "x", seed=5)]
    latents = engine.initial_latents([engine.resolve(s) for s in big])
    assert not any(np.allclose(latents[i], latents[j]) for i in range(3) for j in range(i + 1, 3))
    import torch

    expected = torch.randn((1, 4, 4, 4), generator=torch.Generator().manual_seed(4_290_749_014))
    assert torch.equal(latents[1:2], expected)


def test_image_key_names_every_setting(engine):
    spec = engine.resolve(specs(1)[0])
    from dataclasses import replace

    variants = [replace(spec, seed=1), replace(spec, guidance=1.0), replace(spec, steps=5), replace(spec, negative_prompt="x"), replace(spec, width=64)]
    keys = {engine.image_key(v, "s") for v in variants} | {engine.image_key(spec, "s"), engine.image_key(spec, "other-state")}
    assert len(keys) == 7


def test_the_progress_bar_moves_per_denoising_step_in_whole_images():
    import io

    from tqdm import tqdm

    from harness.engine import _whole_images

    with tqdm(total=64, file=io.StringIO()) as bar:
        bar.update(32)  # an earlier batch
        on_step = _whole_images(bar)
        seen = []
        for _ in range(20):  # a batch of 32 images, 20 denoising steps: 1.6 images a step
            on_step(32 / 20)
            seen.append(bar.n)
        assert all(isinstance(n, int) for n in seen) and seen == sorted(seen)
        assert seen[0] == 33 and seen[-1] == 64  # floor of the fraction made so far, the whole batch at the end
        assert "/64" in bar.__str__() and "." not in bar.__str__().split("/")[0].split()[-1]


def test_guidance_is_applied_at_full_precision_in_a_bfloat16_run(tmp_path):
    """The guidance tensor was built in the UNet's dtype: in bfloat16, 7.3 became 7.3125, the two gave the same
    image, and the key recorded 7.3.  diffusers keeps the Python float; so does the engine now."""
    from harness.testing import tiny_pipeline

    pipe = tiny_pipeline(dtype="bfloat16")
    engine = Engine(pipe, Store(tmp_path), "tiny-fp", Defaults(steps=4, height=32, width=32), "cpu", "bfloat16", batch_size=8,
                    show_progress=False)
    images = [engine.sample([engine.resolve(PromptSpec(id="0", prompt="a red cat", seed=5, guidance=g))], BASE)[0] for g in (7.3, 7.3125)]
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))


def test_a_sampler_that_adds_noise_draws_it_from_each_samples_own_seed(tiny, tmp_path):
    """An ancestral sampler drew its per-step noise from the global RNG: one seed, other images in other runs, and in
    other batch positions.  It draws from each sample's generator now, as diffusers does for a list of generators."""
    import copy

    import torch
    from diffusers import EulerAncestralDiscreteScheduler

    pipe = copy.copy(tiny)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(tiny.scheduler.config)
    engine = Engine(pipe, Store(tmp_path), "tiny-fp", Defaults(steps=4, height=32, width=32), "cpu", "float32", batch_size=8, show_progress=False)
    batch = [engine.resolve(s) for s in specs(3)]
    torch.manual_seed(1)
    first = [np.asarray(image, dtype=np.int16) for image in engine.sample(batch, BASE)]
    torch.manual_seed(2)  # another global RNG state, and the sample alone
    (alone,) = engine.sample([batch[2]], BASE)
    assert np.abs(np.asarray(alone, dtype=np.int16) - first[2]).max() <= 1  # from the global RNG: 38 levels apart
