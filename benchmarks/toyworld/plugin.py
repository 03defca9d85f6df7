"""Registers the toy world's backbone, benchmarks, scorer, concept sets and the `harness toy` command."""

from harness.hookspecs import hookimpl  # noqa: F401
