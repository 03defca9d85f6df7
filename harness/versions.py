"""Versions of the installed packages, for manifests and cache keys: read from package metadata, so nothing heavy
(torch) is imported to learn them."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

# What a run's manifest records.
RUN_PACKAGES = ("erasure-harness", "torch", "diffusers", "transformers", "nudenet", "torchmetrics", "pluggy")


def package_versions(*names: str) -> dict[str, str | None]:
    """``{distribution: version}`` for each name; None for one that is not installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment_versions(names: tuple[str, ...] = RUN_PACKAGES) -> dict[str, str | None]:
    """Python, platform and the versions of ``names``: what a manifest records to reproduce a run."""
    return {"python": sys.version.split()[0], "platform": platform.platform(), **package_versions(*names)}
