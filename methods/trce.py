"""``trce``: the full TRCE method, stage 1 then stage 2 (paper §4, Table 1 "TRCE (T+V)").

A registered composition: the engine expands it into ``trce-t`` (closed-form
[EoT] edit, §4.1) followed by ``trce-v`` (trajectory steering, §4.2) on the
already-edited pipeline.  So stage 2 fine-tunes the stage-1 model, and the
stage-1 model is its regulariser's reference (Eq. 9), while the guidance-enhanced
targets and the trajectories still come from the original UNet.

``trce:param=value`` goes to the part whose ``Params`` declares it
(``preserve_scale`` → trce-t, ``max_steps`` → trce-v; ``num_phrases`` → both).
"""

from __future__ import annotations

from harness.api import Method


class TRCE(Method):
    name = "trce"
    display_name = "TRCE (T+V)"
    description = "TRCE (T+V): trce-t's closed-form [EoT] edit, then trce-v's trajectory fine-tuning on top of it"
    paper = "TRCE: Towards Reliable Malicious Concept Erasure in Text-to-Image Diffusion Models (2025)"
    version = "1"
    parts = ("trce-t", "trce-v")
