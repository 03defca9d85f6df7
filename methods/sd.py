"""``sd``: the base model, unchanged.  Every leaderboard needs this row."""

from harness.api import Method, MethodKind


class NoErasure(Method):
    name = "sd"
    display_name = "SD"
    description = "the unmodified base model (no erasure)"
    kind = MethodKind.NONE
