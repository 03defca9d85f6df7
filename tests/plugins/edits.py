"""A one-file test plugin with two simple weight edits, to test model states without any real method."""

from dataclasses import dataclass

from harness.api import Method
from harness.hookspecs import hookimpl


class ScaleKeys(Method):
    """Multiplies every cross-attention key projection by ``factor``."""

    name = "scale-keys"
    description = "multiply attn2.to_k by a factor (test edit)"

    @dataclass
    class Params:
        factor: float = 0.5

    def edit(self, pipe, concepts, ctx):
        import torch

        with torch.no_grad():
            for name, module in pipe.unet.named_modules():
                if name.endswith("attn2.to_k"):
                    module.weight.mul_(self.params.factor)
        return {"factor": self.params.factor}


class ShiftKeys(Method):
    """Adds ``amount`` to every cross-attention key projection: with ScaleKeys, order matters."""

    name = "shift-keys"
    description = "add a constant to attn2.to_k (test edit)"

    @dataclass
    class Params:
        amount: float = 0.1

    def edit(self, pipe, concepts, ctx):
        import torch

        with torch.no_grad():
            for name, module in pipe.unet.named_modules():
                if name.endswith("attn2.to_k"):
                    module.weight.add_(self.params.amount)
        return {"amount": self.params.amount}


class Both(Method):
    name = "both"
    description = "scale-keys then shift-keys (test composition)"
    parts = ("scale-keys", "shift-keys")


@hookimpl
def register_methods(register):
    register(ScaleKeys)
    register(ShiftKeys)
    register(Both)
