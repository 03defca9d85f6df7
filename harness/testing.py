"""Helpers for tests and plugin authors: the tiny pipeline (``harness.tiny``) and a plugin host with extra modules."""

from __future__ import annotations

from harness.tiny import TINY_IMAGE_SIZE, TINY_MAX_LENGTH, TINY_SEED, tiny_pipeline, write_char_tokenizer

__all__ = ["TINY_IMAGE_SIZE", "TINY_MAX_LENGTH", "TINY_SEED", "plugin_host", "tiny_pipeline", "tiny_target", "write_char_tokenizer"]


def plugin_host(*modules, entry_points: bool = True):
    """A ``PluginHost`` with the installed entry points plus the given modules or hookimpl objects."""
    from harness.plugins import PluginHost

    host = PluginHost(load_entry_points=entry_points)
    for index, module in enumerate(modules):
        host.add_module(module, name=getattr(module, "__name__", f"test-plugin-{index}"))
    return host


def tiny_target(dtype: str = "float32"):
    """The tiny backbone on the CPU, as ``harness run --model tiny`` resolves it (``harness.api.Target``)."""
    from harness.api import Target
    from harness.backbones import TinyBackbone

    return Target(backbone_name="tiny", backbone=TinyBackbone(), model=None, device="cpu", dtype=dtype)
