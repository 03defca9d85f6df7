"""``sd``: the base model, unchanged.  Every leaderboard needs this row."""

from harness.api import Method


class NoErasure(Method):
    name = "sd"
    description = "the unmodified base model (no erasure)"
    kind = "none"
