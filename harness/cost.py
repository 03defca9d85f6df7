"""What an erasure costs: model evaluations counted while a method's ``edit`` runs.

A global forward hook counts every forward call of a UNet or a CLIP text encoder, whichever object it is (the
pipeline's, or a frozen copy a method made), so a method that embeds 300 prompts or samples 100 trajectories is
charged for it.  The counts are stored in the model state's metadata when the edit is computed, so a cached
erasure keeps the cost it had then.
"""

from __future__ import annotations

from contextlib import contextmanager

UNET_CLASSES = ("UNet2DConditionModel",)
TEXT_ENCODER_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")


@contextmanager
def counted_evaluations():
    """Yield ``{"unet": n, "text_encoder": m}``, updated with every forward call while the block runs."""
    import torch

    counts = {"unet": 0, "text_encoder": 0}

    def count(module, args, output):
        name = type(module).__name__
        if name in UNET_CLASSES:
            counts["unet"] += 1
        elif name in TEXT_ENCODER_CLASSES:
            counts["text_encoder"] += 1

    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        yield counts
    finally:
        handle.remove()
