"""Built-in backbones: ``sd14`` (Stable Diffusion v1.4, or any SD-1.x diffusers folder/hub id) and ``tiny``.

Loading real weights is the one place where the network is touched.  When the
weights are neither on disk nor reachable, the user gets one line that says
what is missing and how to provide it, within a couple of seconds, instead of
a retry storm.
"""

from __future__ import annotations

import os
import shlex
import socket
from pathlib import Path

from harness.api import Backbone, HarnessError
from harness.hookspecs import hookimpl

SD14_HUB_ID = "CompVis/stable-diffusion-v1-4"
HUB_HOST = "huggingface.co"


def host_reachable(host: str, timeout: float = 1.5, port: int = 443) -> bool:
    """One TCP connect with a short timeout, so an offline machine gets its answer in about a second.

    Where an HTTPS proxy is configured for ``host`` (``HTTPS_PROXY``/``ALL_PROXY``, not bypassed by ``NO_PROXY``), as
    on a cluster whose only way out is the proxy, the proxy is what must answer: downloads go through it.
    """
    import urllib.parse
    import urllib.request

    proxy = urllib.request.getproxies().get("https") or urllib.request.getproxies().get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parts.hostname:
            host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hf_download_command(model: str, *, pipeline: bool) -> str:
    """The ``hf download`` line that fetches what ``from_pretrained`` loads here, and nothing else.

    A bare ``hf download`` takes every file of the repository: for SD v1.4 each UNet is there six times (float32,
    float16 and non-EMA, each as .bin and .safetensors; its unet folder alone holds 17.2 GB, of which one
    3.44 GB file is loaded), plus Flax weights; CLIP repositories carry PyTorch, TensorFlow, Flax and safetensors
    copies of one model.  The loaders read the float32 safetensors (diffusers and transformers prefer them) and the
    configs and tokenizer files (JSON and merges.txt); the safety checker is never loaded (``safety_checker=None``).
    ``hf download`` takes one pattern per ``--include``/``--exclude``.  (A repository that has .bin weights only
    needs ``*.bin`` in place of ``*.safetensors``; the hubs' SD 1.x and CLIP repositories all have safetensors.)
    """
    # A pipeline's weights lie in its component folders: "*/*.safetensors" leaves out single-file checkpoints at a
    # repository's root (SD v1.5 keeps two there, about 12 GB, which from_pretrained never reads).
    weights = "*/*.safetensors" if pipeline else "*.safetensors"
    include = " ".join(f"--include '{pattern}'" for pattern in ("*.json", "*.txt", weights))
    exclude = " --exclude '*fp16*' --exclude '*non_ema*' --exclude 'safety_checker/*'" if pipeline else ""
    return f"hf download {shlex.quote(model)} {include}{exclude}"


def hub_endpoint() -> tuple[str, int]:
    """The Hugging Face hub's host and port: ``HF_ENDPOINT`` (a mirror, perhaps on its own port) or huggingface.co.
    Every reachability probe of the hub (models, scorer weights, gated data sets) asks here."""
    import urllib.parse

    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT", f"https://{HUB_HOST}"))
    return endpoint.hostname or HUB_HOST, endpoint.port or (80 if endpoint.scheme == "http" else 443)


def _hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    host, port = hub_endpoint()
    return host_reachable(host, port=port)


def load_sd_pipeline(source: str, dtype: str, local_files_only: bool, device: str = "cpu"):
    """``StableDiffusionPipeline.from_pretrained`` without the safety checker, quietly, ready to sample with DDIM.

    The harness prints its own progress; diffusers' per-component loading bars and its notes about optional
    packages (accelerate) would bury it.  Errors still raise.  The papers sample with DDIM; the model's own beta
    schedule is kept.  Recent diffusers renamed ``torch_dtype`` to
    ``dtype`` and warn on the old name; older ones only know ``torch_dtype``.  The rename shipped together with
    ``deprecation_utils._resolve_dtype``, so its presence tells which keyword the installed version wants.
    """
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from diffusers.utils import deprecation_utils
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()  # the text encoder's "Loading weights" bar
    dtype_keyword = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    pipe = StableDiffusionPipeline.from_pretrained(
        source,
        safety_checker=None,
        requires_safety_checker=False,
        local_files_only=local_files_only,
        **{dtype_keyword: getattr(torch, dtype)},
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def looks_like_path(model: str) -> bool:
    """A local folder rather than a hub id (hub ids are exactly "owner/name")."""
    if model.startswith((".", "/", "~")) or Path(model).expanduser().exists():
        return True
    return model.count("/") != 1  # hub ids are exactly "owner/name"


def resolve_model_source(model: str) -> tuple[str, bool]:
    """Return (what to pass to ``from_pretrained``, local_files_only), or raise a one-line HarnessError."""
    expanded = os.path.expanduser(model)
    if looks_like_path(model):
        if Path(expanded).exists() and not Path(expanded).is_dir():
            raise HarnessError(f"{model!r} is a file, not a model; give a diffusers folder (with model_index.json) or a hub id "
                               "(a single-file .ckpt/.safetensors: convert it with diffusers' "
                               "StableDiffusionPipeline.from_single_file(...).save_pretrained(DIR); an erased UNet of "
                               "another tool: --methods checkpoint:path=FILE)")
        if not Path(expanded).is_dir():
            raise HarnessError(f"model path {model!r} does not exist; give a diffusers folder (with model_index.json) or a hub id")
        if not (Path(expanded) / "model_index.json").exists():
            raise HarnessError(f"{model!r} is not a diffusers pipeline folder (no model_index.json in it)")
        return expanded, True
    from huggingface_hub import snapshot_download

    try:  # already in the local Hugging Face cache?
        snapshot_download(model, local_files_only=True, allow_patterns=["model_index.json"])
        return model, True
    except Exception:
        pass
    if not _hub_reachable():
        raise HarnessError(
            f"weights for {model!r} are not in the local Hugging Face cache and the hub cannot be reached "
            f"(offline or HF_HUB_OFFLINE=1); download them on a connected machine "
            f"(`{hf_download_command(model, pipeline=True)}`) or pass --model /path/to/a/local/diffusers/folder"
        )
    return model, False


class DiffusersBackbone(Backbone):
    """Any Stable Diffusion 1.x pipeline: hub id or local diffusers folder; DDIM, safety checker off."""

    name = "sd14"
    description = "Stable Diffusion v1.4 (CompVis/stable-diffusion-v1-4), DDIM 30 steps, 512 px, safety checker off"
    default_model = SD14_HUB_ID
    steps = 30
    height = 512
    width = 512
    min_size = 64  # an 8x8 latent; SD-1.x was trained at 512, and 64..2048 covers every published protocol

    def check(self, model: str | None) -> None:
        resolve_model_source(model or self.default_model)

    def identity(self, model: str | None, dtype: str) -> dict | None:
        from harness.lazy import folder_identity

        source, local_only = resolve_model_source(model or self.default_model)
        if not local_only:
            return None  # not downloaded yet: it must be loaded anyway
        if not Path(source).is_dir():  # a hub id found in the local cache: its snapshot folder
            from huggingface_hub import snapshot_download

            source = snapshot_download(source, local_files_only=True)
        return folder_identity(source)

    def load(self, model: str | None, device: str, dtype: str):
        source, local_only = resolve_model_source(model or self.default_model)
        try:
            return load_sd_pipeline(source, dtype, local_only, device)
        except OSError as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            hint = ("check that each component's folder is there (unet/, vae/, text_encoder/, tokenizer/, scheduler/)"
                    if Path(source).is_dir() else "for gated repositories log in with `hf auth login` or set HF_TOKEN")
            raise HarnessError(f"could not load {source!r}: {first_line}; {hint}") from None
        except (KeyError, ValueError, TypeError, AttributeError) as err:  # a model_index.json diffusers cannot read
            if not Path(source).is_dir():
                raise  # a hub snapshot diffusers cannot read is a bug to see whole
            raise HarnessError(f"could not load {source!r} as a Stable Diffusion pipeline ({type(err).__name__}: {err}); "
                               "its model_index.json must name each component's class, as `save_pretrained` writes it") from None


class TinyBackbone(Backbone):
    name = "tiny"
    description = "random tiny SD-architecture pipeline built in code (tests and plugin development; knows nothing)"
    steps = 4
    height = 32
    width = 32
    max_size = 256  # it knows nothing at any size; larger only costs time

    def identity(self, model: str | None, dtype: str) -> dict | None:
        """Built in code from a fixed seed: the code that builds it is its identity."""
        from harness import tiny
        from harness.api import sha256_file

        return {"code": sha256_file(tiny.__file__), "seed": tiny.TINY_SEED}

    def load(self, model: str | None, device: str, dtype: str):
        from harness.tiny import tiny_pipeline

        return tiny_pipeline(device=device, dtype=dtype)


@hookimpl
def register_backbones(register):
    register(DiffusersBackbone)
    register(TinyBackbone)
