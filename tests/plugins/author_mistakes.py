"""A one-file plugin with the mistakes a plugin author makes (tests/test_plugin_mistakes.py): scorers that return
too few, too many or no results, a method whose edit raises, a benchmark, scorer, metric and attack with a bug, a benchmark whose prompts share an id or are not PromptSpecs, one with no metrics."""

from dataclasses import dataclass

from harness.api import AdversarialPrompt, Attack, Benchmark, Method, Metric, PromptSpec, Scorer
from harness.hookspecs import hookimpl


class Counted(Scorer):
    """Mean pixel value, one result per image."""

    name = "counted"
    description = "mean pixel value"

    def score(self, images, specs):
        return [{"mean": sum(image.convert("L").getdata()) / (255.0 * image.width * image.height)} for image in images]

    def metrics(self):
        return [Metric("mean", "brightness", lower_is_better=False, description="mean pixel value", per_image=lambda raw: raw["mean"]),
                Metric("rate", "dark rate", lower_is_better=True, description="share of dark images", per_image=lambda raw: float(raw["mean"] < 0.5)),
                Metric("broken", "broken", lower_is_better=False, description="a metric with a bug", per_image=_bug)]


def _bug(*args):
    raise ValueError("a plugin's own bug")


class RaisingScorer(Counted):
    name = "raising-scorer"
    description = "a scorer with a bug"

    def score(self, images, specs):
        _bug()


class TooFew(Counted):
    name = "too-few"
    description = "one result short"

    def score(self, images, specs):
        return super().score(images, specs)[:-1]


class TooMany(Counted):
    name = "too-many"
    description = "one result too many"

    def score(self, images, specs):
        raws = super().score(images, specs)
        return raws + raws[:1]


class NumpyValues(Counted):
    name = "numpy-values"
    description = "returns numpy floats"

    def score(self, images, specs):
        import numpy as np

        return [{"mean": np.float32(raw["mean"])} for raw in super().score(images, specs)]


class SetValues(Counted):
    name = "set-values"
    description = "returns a Python set, which JSON has no form for"

    def score(self, images, specs):
        return [{"mean": {raw["mean"]}} for raw in super().score(images, specs)]


class Nothing(Counted):
    name = "nothing"
    description = "returns None"

    def score(self, images, specs):
        return None


class Mistaken(Benchmark):
    name = "mistaken"
    description = "three prompts, with one mistake chosen by `mistake`"
    metrics = ("counted:mean",)

    @dataclass
    class Params:
        mistake: str = "none"  # none, duplicate-ids, strings, raises

    def prompts(self):
        specs = [PromptSpec(id=str(i), prompt=text, seed=i) for i, text in enumerate(["a cat", "a dog", "a bird"])]
        if self.params.mistake == "duplicate-ids":
            return [specs[0], specs[1], PromptSpec(id="0", prompt="a bird", seed=2)]
        if self.params.mistake == "strings":
            return ["a cat", "a dog"]
        if self.params.mistake == "raises":
            _bug()
        return specs


class NoMetrics(Benchmark):
    name = "no-metrics"
    description = "prompts, but no metrics listed"

    def prompts(self):
        return [PromptSpec(id="0", prompt="a cat", seed=0)]


class Boom(Method):
    name = "boom"
    description = "a method with a bug in its edit"

    def edit(self, pipe, concepts, ctx):
        raise ValueError("my bug")


class MisnamedBudget(Attack):
    name = "misnamed-budget"
    description = "an attack whose budget_param names no parameter"
    budget_param = "iters"  # the field is called iterations

    @dataclass
    class Params:
        iterations: int = 10

    def attack(self, pipe, concepts, spec, ctx):
        return AdversarialPrompt(text=spec.prompt)


class ReadsNothing(Attack):
    name = "reads-nothing"
    description = "an attack whose reads names no component"
    reads = ()

    def attack(self, pipe, concepts, spec, ctx):
        return AdversarialPrompt(text=spec.prompt)


class RaisingAttack(Attack):
    name = "raising-attack"
    description = "an attack with a bug"

    def attack(self, pipe, concepts, spec, ctx):
        _bug()


@hookimpl
def register_attacks(register):
    register(MisnamedBudget)
    register(RaisingAttack)
    register(ReadsNothing)


@hookimpl
def register_methods(register):
    register(Boom)


@hookimpl
def register_benchmarks(register):
    register(Mistaken)
    register(NoMetrics)


@hookimpl
def register_scorers(register):
    for scorer in (Counted, TooFew, TooMany, Nothing, NumpyValues, SetValues, RaisingScorer):
        register(scorer)
