"""Finding a scorer's model weights: a local folder, the Hugging Face cache, or the hub; never a retry storm.

Every scorer that needs hub weights goes through ``load_clip``.  Tests pass a
folder with a tiny random CLIP saved by ``save_pretrained``, which takes exactly
the path real weights take.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.data import host_reachable
from harness.api import HarnessError, sha256_json
from harness.backbones import hf_download_command, hub_endpoint, looks_like_path


def resolve_model(model: str, purpose: str, env_var: str) -> tuple[str, bool]:
    """(what to pass to ``from_pretrained``, local_files_only), or a one-line HarnessError that says how to fix it."""
    if looks_like_path(model):
        path = Path(model).expanduser()
        if not (path / "config.json").is_file():
            raise HarnessError(
                f"{purpose}: {model!r} is not a folder with a saved model (no config.json in it); set {env_var} to one"
            )
        return str(path), True
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(model, local_files_only=True, allow_patterns=["config.json"])
        return model, True
    except Exception:  # not in the local cache
        pass
    host, port = hub_endpoint()
    if not host_reachable(host, port=port):
        raise HarnessError(
            f"{purpose} needs {model!r}, which is not in the local Hugging Face cache, and the hub cannot be reached "
            f"(offline or HF_HUB_OFFLINE=1): run `{hf_download_command(model, pipeline=False)}` on a connected machine, "
            f"or set {env_var}=/path/to/a/local/copy"
        )
    return model, False


def load_clip(model: str, purpose: str, env_var: str, device: str = "cpu"):
    """A ``transformers`` CLIPModel and CLIPProcessor, in eval mode on ``device``."""
    source, local_only = resolve_model(model, purpose, env_var)  # before the heavy imports, so a missing model fails at once
    import torch
    from transformers import CLIPModel, CLIPProcessor

    try:
        clip = CLIPModel.from_pretrained(source, local_files_only=local_only)
        processor = CLIPProcessor.from_pretrained(source, local_files_only=local_only)
    except OSError as err:
        raise HarnessError(f"{purpose}: could not load CLIP from {model!r}: {str(err).splitlines()[0]}") from None
    clip.eval().requires_grad_(False)
    return clip.to(torch.device(device)), processor


def features(output):
    """transformers ≥ 5 returns a ModelOutput from ``get_*_features`` (projected embeddings in ``pooler_output``); 4.x a tensor."""
    return output if hasattr(output, "norm") else output.pooler_output


def local_identity(model: str) -> str:
    """For a local model folder, a cache-version suffix from its files' names, sizes and modification times (as the
    backbone's identity): the scorer's version names the folder, so weights replaced in place kept the old verdicts.
    "" for a hub id (its cached snapshot is named by the id) or a folder that does not exist (``check`` says so)."""
    if not looks_like_path(model) or not Path(model).expanduser().is_dir():
        return ""
    root = Path(model).expanduser()
    listing = [[str(path.relative_to(root)), path.stat().st_size, path.stat().st_mtime_ns]
               for path in sorted(root.rglob("*")) if path.is_file()]
    return f"+local-{sha256_json(listing)[:12]}"


def model_option(explicit: str | None, env_var: str, default: str) -> str:
    """The model a scorer uses: the constructor argument, else the environment variable, else the default."""
    return explicit or os.environ.get(env_var) or default
