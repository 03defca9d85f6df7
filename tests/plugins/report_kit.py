"""A one-file test plugin shaped like the paper's evaluation, for report tests on the tiny backbone.

* ``tint``: an edit that shifts the UNet's output bias, so images (and scores) really change with ``amount``;
* ``pixels``: a per-image scorer whose "bright rate" plays the part of NudeNet's ASR (an image is flagged
  when its mean pixel value passes a threshold) and whose per-category rates play Q16's;
* ``drift``: a set-level scorer against the base model's images, the part of FID;
* benchmarks ``plain`` (user prompts), ``attack-a`` / ``attack-b`` (adversarial), ``multi`` (three
  categories, like I2P's seven) and ``keep`` (preservation, like COCO).
"""

from dataclasses import dataclass
from pathlib import Path

from harness.api import Benchmark, Method, Metric, PromptSpec, Scorer
from harness.hookspecs import hookimpl

BRIGHT = 0.455  # tiny-backbone images have a mean pixel value of about 0.44-0.47: some pass, some do not
CATEGORIES = ("warm", "cool", "plain words")
WORDS = ["a red circle", "a blue square", "a green triangle", "a purple cross", "a photo of blood", "a gray circle", "a yellow square",
         "an orange cross", "a white triangle", "a tiny black dot", "two blue squares", "a sunset"]


class Tint(Method):
    name = "tint"
    description = "add a constant to the UNet's output bias (test edit with a visible effect)"

    @dataclass
    class Params:
        amount: float = 0.05

    def edit(self, pipe, concepts, ctx):
        import torch

        with torch.no_grad():
            pipe.unet.conv_out.bias.add_(self.params.amount)
        return {"amount": self.params.amount}


def _in_category(category):
    def values(raws, specs):
        return [float(raw["mean"] > BRIGHT) if category in spec.labels.get("categories", ()) else None for raw, spec in zip(raws, specs)]

    return values


class Pixels(Scorer):
    name = "pixels"
    description = "mean pixel value and contrast (test scorer)"

    def score(self, images, specs):
        import numpy as np

        return [{"mean": float(np.asarray(i, dtype="float64").mean() / 255), "std": float(np.asarray(i, dtype="float64").std() / 255)}
                for i in images]

    def metrics(self):
        views = [
            Metric("bright", "bright rate", True, f"fraction of images with mean pixel value > {BRIGHT}", per_image=lambda raw: float(raw["mean"] > BRIGHT), unit="rate"),
            Metric("contrast", "contrast", False, "mean over images of the pixel standard deviation, in [0, 1]", per_image=lambda raw: raw["std"]),
        ]
        for category in CATEGORIES:
            views.append(Metric(f"bright-{category.replace(' ', '-')}", f"bright {category}", True,
                                f"fraction of images with mean pixel value > {BRIGHT} among prompts of category {category!r}",
                                values=_in_category(category), unit="rate"))
        return views


class Drift(Scorer):
    name = "drift"
    description = "mean absolute pixel difference to the base model's image for the same prompt and seed, × 100 (test set-level scorer)"
    needs_reference = True

    def score_set(self, images, reference_images, specs):
        import numpy as np

        diffs = [np.abs(np.asarray(a, dtype="float64") - np.asarray(b, dtype="float64")).mean() / 255 for a, b in zip(images, reference_images)]
        return {"drift": 100 * float(np.mean(diffs))}

    def metrics(self):
        return [Metric("drift", "Drift", True, "mean absolute pixel difference to the base model's images, × 100",
                       aggregate=lambda raws, specs: raws[0]["drift"], unit="distance")]


class Prompts(Benchmark):
    concepts = "kit-colours"
    metrics = ("pixels:bright",)
    first_seed = 0

    @dataclass
    class Params:
        count: int = 4

    def prompts(self):
        return [PromptSpec(id=str(i), prompt=WORDS[i % len(WORDS)], seed=self.first_seed + i,
                           labels={"categories": [CATEGORIES[i % len(CATEGORIES)]]}) for i in range(self.params.count)]


class Plain(Prompts):
    name = "plain"
    description = "user prompts (test)"


class AttackA(Prompts):
    name = "attack-a"
    description = "adversarial prompts, set A (test)"
    adversarial = True
    first_seed = 100


class AttackB(Prompts):
    name = "attack-b"
    description = "adversarial prompts, set B (test)"
    adversarial = True
    first_seed = 200


class Multi(Prompts):
    name = "multi"
    description = "three categories (test, like I2P's seven)"
    metrics = tuple(f"pixels:bright-{c.replace(' ', '-')}" for c in CATEGORIES) + ("pixels:bright",)
    first_seed = 300


class Keep(Prompts):
    name = "keep"
    description = "preservation prompts (test, like COCO)"
    metrics = ("drift:drift", "pixels:contrast")
    first_seed = 400


@hookimpl
def register_methods(register):
    register(Tint)


@hookimpl
def register_benchmarks(register):
    for bench in (Plain, AttackA, AttackB, Multi, Keep):
        register(bench)


@hookimpl
def register_scorers(register):
    register(Pixels)
    register(Drift)


@hookimpl
def register_concept_sets(register):
    register(str(Path(__file__).parent / "colours.json"), name="kit-colours", description="test concept set: erase red")
