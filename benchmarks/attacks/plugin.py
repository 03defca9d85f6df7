"""Registers the built-in attacks (lazily: nothing here imports torch)."""

from harness.hookspecs import hookimpl


@hookimpl
def register_attacks(register):
    register(
        "benchmarks.attacks.ring_a_bell:RingABell",
        name="ring-a-bell",
        description="Ring-A-Bell (ICLR 2024): concept vector + genetic search over K discrete tokens, text encoder only",
    )
    register(
        "benchmarks.attacks.unlearndiffatk:UnlearnDiffAtk",
        name="unlearndiffatk",
        description="UnlearnDiffAtk (ECCV 2024): PGD over a K-token prefix so the erased UNet denoises the base model's image",
    )
    register(
        "benchmarks.attacks.p4d:P4D",
        name="p4d",
        description="P4D (ICML 2024): PEZ-style projected soft prompt so the erased UNet matches the base model's noise",
    )
