"""The trajectory cache's key names everything the cached latents depend on, the text encoder included."""

import torch

from harness.context import EditContext
from methods.finetune import TRAJECTORY_CACHE, TrajectoryRequest, cached_trajectories, frozen_copy, sample_trajectories

REQUESTS = [TrajectoryRequest("red apple", 1, (3,))]
SAMPLING = dict(num_steps=5, guidance=3.0, size=4)


def test_an_edited_text_encoder_samples_its_own_trajectories(tiny, tmp_path):
    """checkpoint (an AdvUnlearn text encoder) before esd: the conditioning differs, so the plain run's latents do not fit."""
    ctx = EditContext(cache_dir=tmp_path / "cache", backbone_fingerprint="tinyfp", show_progress=False)
    reference = frozen_copy(tiny.unet)
    plain = cached_trajectories(ctx, tiny, lambda: reference, REQUESTS, **SAMPLING)
    saved = {name: tensor.clone() for name, tensor in tiny.text_encoder.state_dict().items()}
    try:
        with torch.no_grad():
            for parameter in tiny.text_encoder.parameters():
                parameter.mul_(1.5)
        edited = cached_trajectories(ctx, tiny, lambda: reference, REQUESTS, **SAMPLING)
        assert ctx.cache_misses[TRAJECTORY_CACHE] == 2 and ctx.cache_hits[TRAJECTORY_CACHE] == 0
        torch.testing.assert_close(edited, sample_trajectories(tiny, reference, REQUESTS, **SAMPLING))
        assert not torch.allclose(edited, plain)
    finally:
        tiny.text_encoder.load_state_dict(saved)
    again = cached_trajectories(ctx, tiny, lambda: reference, REQUESTS, **SAMPLING)  # the original text encoder: a hit
    assert ctx.cache_hits[TRAJECTORY_CACHE] == 1 and torch.equal(again, plain)
