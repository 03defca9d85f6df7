"""The backbone's pipeline, loaded only when something must be generated or erased.

Image keys and model-state keys are derived from the backbone's fingerprint (a
hash over every weight), not from the loaded modules, so a re-run only needs
the fingerprint to find out that everything is already in the store.  Hashing
the weights needs them loaded; instead, a backbone may describe where its
weights come from without loading them (``Backbone.identity``: e.g. the files'
names, sizes and modification times), and the store remembers which
fingerprint and scheduler configuration that identity produced the first time.
A backbone that cannot describe itself (``identity`` returns ``None``) is
always loaded, as before.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.api import Target, sha256_json
from harness.versions import package_versions


def folder_identity(folder: str | Path) -> dict:
    """Every file under ``folder`` by relative path, size and modification time (nanoseconds), plus the
    target name of symlinks (the Hugging Face cache links snapshot files to blobs named by their hash).

    Cheap (no file is read) and changes whenever a weight file is rewritten; a file replaced by one of the
    same size with its modification time forged back would go unnoticed, as it would for ``make``.
    """
    folder = Path(folder).expanduser().resolve()
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(root) / name
            stat = path.stat()
            target = os.path.basename(os.path.realpath(path)) if path.is_symlink() else None
            files.append([str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns, target])
    return {"folder": str(folder), "files": files}


class PipelineSource:
    """Loads the backbone's pipeline on first ``pipeline()``; knows its fingerprint, cached by identity."""

    def __init__(self, *, target: Target, store):
        self.target = target
        self.store = store
        self.loads = 0  # how many times the weights were loaded (0 on a re-run of a finished matrix)
        self._pipe = None
        self._fingerprint: tuple[str, dict] | None = None

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    def pipeline(self):
        if self._pipe is None:
            target = self.target
            self._pipe = target.backbone.load(target.model, target.device, target.dtype)
            self.loads += 1
        return self._pipe

    def identity_key(self) -> str | None:
        identity = self.target.backbone.identity(self.target.model, self.target.dtype)
        if identity is None:
            return None
        return sha256_json({"backbone": self.target.backbone_name, "dtype": self.target.dtype, "identity": identity,
                            "versions": package_versions("diffusers", "transformers", "torch")})[:32]

    def fingerprint(self) -> tuple[str, dict]:
        """(backbone fingerprint, public scheduler config): from the store when this identity was seen before."""
        from harness.engine import pipeline_fingerprint, public_config

        if self._fingerprint is not None:
            return self._fingerprint
        identity = self.identity_key()
        cached = self.store.backbone_fingerprint(identity) if identity else None
        if cached is not None:
            self._fingerprint = cached
        else:
            pipe = self.pipeline()
            self._fingerprint = (pipeline_fingerprint(pipe), public_config(pipe.scheduler.config))
            if identity:
                self.store.add_backbone_fingerprint(identity, *self._fingerprint)
        return self._fingerprint


def resolve_pipeline(pipe_or_source):
    """The loaded pipeline, whether given directly or as a ``PipelineSource`` (loaded now, if it was not)."""
    return pipe_or_source.pipeline() if isinstance(pipe_or_source, PipelineSource) else pipe_or_source
