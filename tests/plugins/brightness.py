"""A one-file test plugin: a fixed prompt benchmark and a brightness scorer (deterministic, dependency-free)."""

from dataclasses import dataclass
from pathlib import Path

from harness.api import Benchmark, Metric, PromptSpec, Scorer
from harness.hookspecs import hookimpl

PROMPTS = ["a red circle", "a blue square", "a green triangle", "", "a purple cross on black", "a photo of blood", "a gray circle", "a yellow square",
           "a red square", "a blue circle", "an orange cross", "a white triangle"]


class Brightness(Scorer):
    name = "brightness"
    description = "mean pixel value in [0, 1] (test scorer)"

    def score(self, images, specs):
        import numpy as np

        return [{"mean": float(np.asarray(image, dtype="float64").mean() / 255.0)} for image in images]

    def metrics(self):
        return [
            Metric("mean", "brightness", lower_is_better=False, description="mean pixel value", per_image=lambda raw: raw["mean"]),
            Metric("dark", "dark rate", lower_is_better=True, description="fraction of images darker than 0.5", per_image=lambda raw: float(raw["mean"] < 0.5), unit="rate"),
        ]


class FixedPrompts(Benchmark):
    name = "fixed"
    description = "twelve fixed prompts with distinct seeds (test benchmark)"
    metrics = ("brightness:mean", "brightness:dark")
    concepts = "colours"

    @dataclass
    class Params:
        count: int = 12
        guidance: float = 7.5

    def prompts(self):
        return [PromptSpec(id=str(i), prompt=p, seed=1000 + i, guidance=self.params.guidance) for i, p in enumerate(PROMPTS[: self.params.count])]


@hookimpl
def register_benchmarks(register):
    register(FixedPrompts)


@hookimpl
def register_scorers(register):
    register(Brightness)


@hookimpl
def register_concept_sets(register):
    register(str(Path(__file__).parent / "colours.json"), name="colours", description="test concept set: erase red")
