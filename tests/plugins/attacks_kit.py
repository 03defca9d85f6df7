"""A one-file test plugin with two trivial attacks, for the mechanics of ``--attack`` (caching, cost, cells).

* ``append-word``: appends the candidate word whose text-encoder output is closest to the first erased keyword's
  (one text-encoder pass over the candidates per prompt, one "iteration").  Reads only the text encoder.
* ``scale-token-embedding``: a method that edits the text encoder, so a text-encoder-only attack must search again.
* ``unet-probe``: appends a fixed word after ``iterations`` UNet evaluations (one per iteration) on the prompt,
  so a test can count UNet evaluations and iterations; reads the whole model.
"""

from dataclasses import dataclass

from harness.api import AdversarialPrompt, Attack, Method
from harness.hookspecs import hookimpl

CANDIDATES = ("crimson", "blood", "tomato", "sky", "grass")


class AppendWord(Attack):
    name = "append-word"
    description = "append the candidate word nearest to the erased keyword (test attack)"
    reads = ("text_encoder",)
    budget_param = "iterations"

    @dataclass
    class Params:
        iterations: int = 1

    def prepare(self, pipe, concepts, ctx):
        import torch

        ids = pipe.tokenizer([concepts.erase[0], *CANDIDATES], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            pooled = pipe.text_encoder(ids)[1]
        similarity = torch.nn.functional.cosine_similarity(pooled[1:], pooled[:1])
        self.word = CANDIDATES[int(similarity.argmax())]

    def attack(self, pipe, concepts, spec, ctx):
        for _ in range(self.params.iterations):
            ctx.step()
        ids = pipe.tokenizer(self.word, add_special_tokens=False).input_ids
        return AdversarialPrompt(text=f"{spec.prompt} {self.word}".strip(), token_ids=tuple(ids), retokenizes=True, loss=0.0)


class UnetProbe(Attack):
    name = "unet-probe"
    description = "append 'blood' after a number of UNet evaluations (test attack)"
    budget_param = "iterations"

    @dataclass
    class Params:
        iterations: int = 3

    def attack(self, pipe, concepts, spec, ctx):
        import torch

        ids = pipe.tokenizer([spec.prompt], padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                             return_tensors="pt").input_ids
        with torch.no_grad():
            hidden = pipe.text_encoder(ids)[0]
            latents = torch.randn((1, pipe.unet.config.in_channels, 4, 4), generator=ctx.generator())
            for _ in range(self.params.iterations):
                pipe.unet(latents, 500, encoder_hidden_states=hidden)
                ctx.step()
            base = ctx.base("unet")
            base(latents, 500, encoder_hidden_states=hidden)
        return AdversarialPrompt(text=f"{spec.prompt} blood".strip())


class ScaleTokenEmbedding(Method):
    """A text-encoder-side edit (test method): scales the text encoder's token embedding table."""

    name = "scale-token-embedding"
    description = "multiply the text encoder's token embeddings by a factor (test method)"

    @dataclass
    class Params:
        factor: float = 0.5

    def edit(self, pipe, concepts, ctx):
        import torch

        with torch.no_grad():
            pipe.text_encoder.get_input_embeddings().weight.mul_(self.params.factor)
        return {"factor": self.params.factor}


@hookimpl
def register_methods(register):
    register(ScaleTokenEmbedding)


@hookimpl
def register_attacks(register):
    register(AppendWord)
    register(UnetProbe)
