"""Throughput of trajectory preparation: our batched, early-stopping sampler against the official TRCE data preparation.

The official ``stage2_data_preparation.py`` samples each regulariser trajectory on its
own, runs all 50 steps with classifier-free guidance on the empty prompt (two UNet
calls per step, although both branches are equal) and keeps every step.  TRCE-V
needs one latent per regulariser sample, at a uniformly drawn step, so ours samples in
batches, skips the redundant branch and stops each batch at its last needed step.
Ratios are measured in the same run.  On a GPU pass ``--device cuda --dtype float16``.
"""

import random
import time

import pytest
import torch

from harness.testing import tiny_pipeline
from methods.finetune import TrajectoryRequest, ddim_scheduler, initial_noise, predict, sample_trajectories

SAMPLES, STEPS = 16, 20


@pytest.fixture(scope="module")
def pipe(perf_device, perf_dtype):
    return tiny_pipeline(device=perf_device, dtype=perf_dtype)


def requests():
    return [TrajectoryRequest("", seed, (random.Random(seed).randrange(STEPS),)) for seed in range(SAMPLES)]


@torch.no_grad()
def official_style(pipe):
    """One trajectory at a time, every step, CFG 7.5 on "" (two UNet calls per step)."""
    scheduler = ddim_scheduler(pipe, STEPS)
    null = pipe.encode_prompt("", pipe.unet.device, 1, False)[0]
    kept = []
    for request in requests():
        latents = initial_noise(request.seed, 4, 4)[None].to(pipe.unet.device)
        trajectory = []
        for t in scheduler.timesteps:
            eps_uncond, eps_cond = predict(pipe.unet, torch.cat([latents, latents]), t, torch.cat([null, null])).chunk(2)
            latents = scheduler.step(eps_uncond + 7.5 * (eps_cond - eps_uncond), t, latents).prev_sample
            trajectory.append(latents.cpu())
        kept.append(trajectory)
    return kept


def test_regulariser_pool_batched_vs_official_loop(benchmark, pipe, perf_device):
    def ours():
        out = sample_trajectories(pipe, pipe.unet, requests(), num_steps=STEPS, guidance=1.0, size=4, batch_size=16)
        if perf_device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    ours(), official_style(pipe)  # warm up both paths
    baseline = min(_timed(lambda: official_style(pipe)) for _ in range(2))
    benchmark.pedantic(ours, rounds=3, iterations=1)
    ratio = baseline / benchmark.stats.stats.min
    benchmark.extra_info.update({"official_style_s": baseline, "speedup": ratio, "samples": SAMPLES})
    print(
        f"\nregulariser pool of {SAMPLES}: ours {benchmark.stats.stats.min:.3f} s, official-style loop {baseline:.3f} s, speed-up {ratio:.1f}x"
    )
    assert ratio >= 3.0


def _timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start
