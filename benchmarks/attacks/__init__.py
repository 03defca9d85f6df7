"""Red-teaming attacks: each module reads top to bottom against its paper; registered in ``plugin.py``."""
