"""Style judge for the art benchmarks: which artist painted this?

The paper (Table 9) asks GPT-4o.  This judge is CLIP zero-shot between the
artists of the benchmark file: each image is compared with
``"an artwork in the style of {artist}"`` for every artist in the file, and the
most similar one is its prediction.  Then

* ``acc-e``: fraction of the erased artist's images still recognised as that
  artist (lower is better: the style is gone);
* ``acc-u``: fraction of the other artists' images recognised as their own
  artist (higher is better: other styles survive).

The art benchmarks put what the judge needs into each prompt's labels:
``artist`` (the row's artist), ``artist_candidates`` (all artists of the file)
and ``erased_artist``.  The metrics only read ``raw["predicted"]``, so another
judge (a VLM, say) is a new scorer that subclasses ``StyleJudge`` and
implements ``score``; the metric definitions stay the same.
"""

from __future__ import annotations

from harness.api import HarnessError, Metric, PromptSpec, Scorer, sha256_json

from .weights import features, load_clip, local_identity, model_option, resolve_model

TEMPLATE = "an artwork in the style of {}"


def _hits(raws: list[dict], specs: list[PromptSpec], erased: bool) -> list[float | None]:
    """Per image: 1.0 when the judge names the prompt's own artist, 0.0 when not, ``None`` for the other group."""
    return [
        float(raw["predicted"] == spec.labels["artist"]) if (spec.labels["artist"] == spec.labels["erased_artist"]) == erased else None
        for raw, spec in zip(raws, specs)
    ]


def accuracy_erased(raws: list[dict], specs: list[PromptSpec]) -> list[float | None]:
    return _hits(raws, specs, erased=True)


def accuracy_unerased(raws: list[dict], specs: list[PromptSpec]) -> list[float | None]:
    return _hits(raws, specs, erased=False)


def candidates_of(spec: PromptSpec) -> list[str]:
    """The artists the judge chooses among: a list (the art benchmarks), or "a|b|c" text (a CSV file's column, such
    as an exported attack's prompts fed back with ``csv:path=``; ``list()`` of the text would be its letters)."""
    try:
        candidates = spec.labels["artist_candidates"]
    except KeyError:
        raise HarnessError(
            f"the style judge needs prompts labelled with artist_candidates (prompt {spec.id!r} has none)"
        ) from None
    return [c.strip() for c in candidates.split("|") if c.strip()] if isinstance(candidates, str) else list(candidates)


class StyleJudge(Scorer):
    """Base of style judges: ``score`` returns ``{"predicted": artist, ...}`` per image."""

    judge = "a style judge"

    def raw_version(self, spec: PromptSpec) -> str:
        """The prediction is one of the prompt's ``artist_candidates``, so another list is another verdict: keyed by
        the candidates as the judge reads them (a list and its "a|b" CSV form, an exported attack's prompts fed back
        with ``csv:``, are one list and judge alike), where ``Scorer.raw_labels`` would key the raw label."""
        return f"{self.version}+candidates-{sha256_json(candidates_of(spec))[:12]}"

    def metrics(self) -> list[Metric]:
        return [
            Metric(
                "acc-e",
                "Acc_e",
                True,
                f"fraction of the erased artist's images that {self.judge} still attributes to that artist",
                values=accuracy_erased,
                unit="rate",
                labels=("artist", "erased_artist", "artist_candidates"),
            ),
            Metric(
                "acc-u",
                "Acc_u",
                False,
                f"fraction of the other artists' images that {self.judge} attributes to their own artist",
                values=accuracy_unerased,
                unit="rate",
                labels=("artist", "erased_artist", "artist_candidates"),
            ),
        ]


class ClipStyleJudge(StyleJudge):
    name = "style"
    description = "CLIP zero-shot style judge between the benchmark's artists (Acc_e, Acc_u of the paper's Table 9)"
    default_model = "openai/clip-vit-large-patch14"
    model_env = "HARNESS_STYLE_MODEL"

    def __init__(self, device: str = "cpu", model: str | None = None):
        super().__init__(device)
        self.model_name = model_option(model, self.model_env, self.default_model)
        self.version = f"1+{self.model_name}{local_identity(self.model_name)}+{TEMPLATE}"
        self.judge = f"CLIP {self.model_name} zero-shot ({TEMPLATE.format('<artist>')!r}, argmax over the file's artists)"
        self._clip = None
        self._text_cache: dict[tuple[str, ...], object] = {}

    def check(self) -> None:
        resolve_model(self.model_name, "the style judge", self.model_env)

    def _load(self):
        if self._clip is None:
            self._clip, self._processor = load_clip(self.model_name, "the style judge", self.model_env, self.device)
        return self._clip, self._processor

    def _text_embeddings(self, candidates: tuple[str, ...]):
        import torch

        if candidates not in self._text_cache:
            clip, processor = self._load()
            tokens = processor(text=[TEMPLATE.format(c) for c in candidates], return_tensors="pt", padding=True, truncation=True)
            embeds = features(clip.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()}))
            self._text_cache[candidates] = torch.nn.functional.normalize(embeds.float(), dim=-1)
        return self._text_cache[candidates]

    def score(self, images: list, specs: list[PromptSpec]) -> list[dict]:
        import torch

        clip, processor = self._load()
        raws = []
        with torch.no_grad():
            for image, spec in zip(images, specs):
                candidates = tuple(candidates_of(spec))
                texts = self._text_embeddings(candidates)
                pixels = processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"].to(self.device, clip.dtype)
                embed = torch.nn.functional.normalize(features(clip.get_image_features(pixel_values=pixels)).float(), dim=-1)
                probs = (100.0 * embed @ texts.T).softmax(dim=-1)[0].tolist()
                best = max(range(len(candidates)), key=probs.__getitem__)
                raws.append({"predicted": candidates[best], "candidates": list(candidates), "probs": probs})
        return raws
