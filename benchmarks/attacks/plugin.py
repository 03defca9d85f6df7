"""Registers the built-in attacks (lazily: nothing here imports torch)."""

from harness.hookspecs import hookimpl


@hookimpl
def register_attacks(register):
    register(
        "benchmarks.attacks.ring_a_bell:RingABell",
        name="ring-a-bell",
        description="Ring-A-Bell (ICLR 2024): concept vector + genetic search over K discrete tokens, text encoder only",
    )
