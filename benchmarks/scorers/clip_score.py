"""CLIP score: how well an image matches its prompt.

Per image, torchmetrics' ``CLIPScore``: ``max(100 · cos(E_image, E_prompt), 0)``.
Some repositories report the raw cosine (≈ 0.3) instead; multiply theirs by
100 to compare.  Prompts longer than CLIP's 77 tokens are truncated.

The model matters and papers differ: ``clip-score`` uses ViT-L/14 (torchmetrics'
default, UnlearnDiffAtk, RECE's torchmetrics variant); ``clip-score-b32`` uses
ViT-B/32 (RECE's default, MACE, TRCE's clip-score tool).  The paper's CLIP-S
(Table 1: ≈ 30–31 for SD v1.4 on COCO) is ViT-B/32's 100·cos, so it compares
with ``clip-score-b32`` (the ``coco`` benchmark's default), not with ViT-L/14's
scores, which are on another scale.  ``HARNESS_CLIP_SCORE_MODEL``
(``HARNESS_CLIP_SCORE_B32_MODEL``) or the ``model=`` argument picks any other CLIP checkpoint or a local folder;
the model is part of the cache version, so scores of different models never mix.
"""

from __future__ import annotations

from harness.api import Metric, PromptSpec, Scorer

from .weights import features, load_clip, local_identity, model_option, resolve_model


def _torchmetrics_compatible(clip):
    """torchmetrics 1.9 expects ``get_*_features`` to return tensors; transformers ≥ 5 returns ModelOutputs."""
    import torch

    class FeaturesAsTensors(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model
            self.config = model.config

        def get_image_features(self, *args, **kwargs):
            return features(self.model.get_image_features(*args, **kwargs))

        def get_text_features(self, *args, **kwargs):
            return features(self.model.get_text_features(*args, **kwargs))

    return FeaturesAsTensors(clip)


def pil_to_uint8_chw(image):
    import numpy as np
    import torch

    return torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)


class ClipScorer(Scorer):
    name = "clip-score"
    description = "CLIP score, max(100·cos, 0), torchmetrics CLIPScore with openai/clip-vit-large-patch14"
    default_model = "openai/clip-vit-large-patch14"
    model_env = "HARNESS_CLIP_SCORE_MODEL"

    def __init__(self, device: str = "cpu", model: str | None = None):
        super().__init__(device)
        self.model_name = model_option(model, self.model_env, self.default_model)
        self.version = f"1+{self.model_name}{local_identity(self.model_name)}"
        self._metric = None

    def check(self) -> None:
        resolve_model(self.model_name, f"the {self.name} scorer", self.model_env)

    def _load(self):
        if self._metric is None:
            clip, processor = load_clip(self.model_name, f"the {self.name} scorer", self.model_env, self.device)
            from torchmetrics.multimodal import CLIPScore

            # A callable is torchmetrics' documented way to supply one's own model and processor.
            self._metric = CLIPScore(model_name_or_path=lambda: (_torchmetrics_compatible(clip), processor)).to(self.device)
        return self._metric

    def score(self, images: list, specs: list[PromptSpec]) -> list[dict]:
        import torch

        metric = self._load()
        raws = []
        with torch.no_grad():
            for image, spec in zip(images, specs):
                # One image per update: the stored raw score is per image, CLIPScore.compute() averages.
                metric.reset()
                metric.update(pil_to_uint8_chw(image).to(self.device), [spec.prompt])
                raws.append({"clip_score": float(metric.compute())})
        return raws

    def metrics(self) -> list[Metric]:
        return [
            Metric(
                "clip-score",
                "CLIP-S",
                False,
                f"mean over images of max(100·cos(CLIP image, CLIP prompt), 0), torchmetrics CLIPScore, model {self.model_name}",
                per_image=lambda raw: raw["clip_score"],
            )
        ]


class ClipScorerB32(ClipScorer):
    name = "clip-score-b32"
    description = "CLIP score, max(100·cos, 0), torchmetrics CLIPScore with openai/clip-vit-base-patch32"
    default_model = "openai/clip-vit-base-patch32"
    model_env = "HARNESS_CLIP_SCORE_B32_MODEL"
