"""How many UNet evaluations one ``trce`` erasure costs at the paper's settings, against the official pipeline.

Counted, not timed: every forward pass of any ``UNet2DConditionModel`` adds its batch size, while ``trce-v`` runs
with its defaults (A.3: 20 phrase pairs × 5 trajectories, 50 DDIM steps, steps 0–25 trained, 3 epochs, batch 1,
4 regulariser latents per step, a pool of at most 2000).  The count does not depend on the model's size, so the
tiny backbone stands in for SD.  ``trce-t`` (stage 1) is closed form and evaluates no UNet.

The official pipeline (ddgoodgood/TRCE @ 0da9b71, ``run_trce_stage2.py``) samples every trajectory in full with
classifier-free guidance: 2000 regulariser trajectories × 50 steps × 2, plus 100 malicious trajectories × 50 × 2,
plus per training step 3 reference predictions (c⁻, c⁺, ∅), 2 student predictions and 4 + 4 regulariser
predictions (student and reference): about 2.1e5.  Ours samples only the early window of the malicious
trajectories, and each regulariser latent only up to its own step, unguided (it is unconditional).
"""

import pytest

from harness.engine import ModelStates
from harness.plugins import PluginHost
from harness.registry import Registry
from harness.runner import expand_method
from harness.spec import Selection
from harness.store import Store
from harness.testing import tiny_target
from harness.tiny import tiny_pipeline


def official_unet_evaluations(params, trajectories: int, training_steps: int) -> int:
    sampling = (params["regularizer_samples"] + trajectories) * params["num_steps"] * 2
    per_step = 3 * params["batch_size"] + 2 * params["batch_size"] + 2 * params["regularizer_batch"]
    return sampling + training_steps * per_step


@pytest.fixture
def count_unet(monkeypatch):
    from diffusers import UNet2DConditionModel

    counts = {"calls": 0, "samples": 0}
    forward = UNet2DConditionModel.forward

    def counting(self, sample, *args, **kwargs):
        counts["calls"] += 1
        counts["samples"] += sample.shape[0]
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", counting)
    return counts


def test_trce_erasure_unet_evaluations_vs_official(benchmark, count_unet, tmp_path):
    registry = Registry(PluginHost())
    concepts = registry.concept_set("sexual")
    parts = expand_method(registry, Selection("trce-v"), {}, "trce-v")
    states = ModelStates(tiny_pipeline(), Store(tmp_path), "tiny-fp", tiny_target(), show_progress=False)
    state = benchmark.pedantic(lambda: states.activate(parts, concepts, "trce-v"), rounds=1, iterations=1)
    metadata = state.metadata[0]
    assert metadata["trajectories"] == 100 and metadata["steps"] == 300  # the paper's 20 × 5, 3 epochs
    official = official_unet_evaluations(parts[0][0].params_dict(), metadata["trajectories"], metadata["steps"])
    ratio = official / count_unet["samples"]
    benchmark.extra_info.update({"unet_sample_evaluations": count_unet["samples"], "unet_forward_calls": count_unet["calls"],
                                 "official_unet_sample_evaluations": official, "fewer_than_official": ratio})
    print(f"\ntrce erasure at paper settings: {count_unet['samples']} UNet sample-evaluations in {count_unet['calls']} forward calls; "
          f"official pipeline {official} ({ratio:.2f}x fewer)")
    assert ratio >= 5.0  # the goal set for this harness
