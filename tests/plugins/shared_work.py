"""A one-file test plugin for merging stores that did the same work (tests/test_merge_shared_work.py).

* ``nap-keys``: multiplies every cross-attention key projection by ``factor``, like ``scale-keys``, but first sleeps
  ``$NAP_KEYS_SECONDS`` seconds (so two stores that erase the same state record different erase times, also in the
  method's own ``seconds``) and reads a cached statistic with random content, as a GPU may recompute one with other
  bits on another node.  The statistic does not change the edit.
"""

import os
import time
from dataclasses import dataclass

from harness.api import Method
from harness.hookspecs import hookimpl


class NapKeys(Method):
    name = "nap-keys"
    description = "sleep, read a random cached statistic, multiply attn2.to_k by a factor (test edit)"

    @dataclass
    class Params:
        factor: float = 0.5

    def edit(self, pipe, concepts, ctx):
        import torch

        started = time.perf_counter()
        time.sleep(float(os.environ.get("NAP_KEYS_SECONDS", "0")))
        ctx.cached_tensors("nap-stats", {"what": "shared"}, lambda: {"noise": torch.tensor(list(os.urandom(8)), dtype=torch.float32)})
        with torch.no_grad():
            for name, module in pipe.unet.named_modules():
                if name.endswith("attn2.to_k"):
                    module.weight.mul_(self.params.factor)
        return {"factor": self.params.factor, "seconds": round(time.perf_counter() - started, 4)}


@hookimpl
def register_methods(register):
    register(NapKeys)
