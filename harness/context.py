"""What a method's ``edit`` gets besides the pipeline: device, caches, progress bars, the original weights."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import integrity
from harness.api import sha256_json
from harness.names import check_name


@dataclass
class EditContext:
    device: str = "cpu"
    dtype: str = "float32"
    cache_dir: Path = Path(".harness-cache")
    backbone_fingerprint: str = "unknown"
    seed: int = 0
    show_progress: bool = True
    # Returns a frozen copy of the *unedited* base UNet (e.g. ESD's and TRCE-V's reference model).
    original_unet: Callable | None = None
    # Float32 values of parameters an edit wrote into lower-precision weights ("unet.<name>" → tensor): the engine
    # stores these in the model state's delta, so a fine-tuned update is kept even where float16 rounds it away.
    exact_weights: dict = field(default_factory=dict)
    # Tensors a method keeps with its model state *beside* the weights (name → tensor), e.g. SPM's adapter, which is
    # applied per prompt at sampling time and so cannot be folded into a weight.  ``edit`` fills it; the engine stores
    # it in the state's delta file and hands it back here, before ``sampling_hooks``, when the state is loaded.
    state_tensors: dict = field(default_factory=dict)
    # How often each named cache was hit or filled, so tests can prove reuse.
    cache_hits: Counter = field(default_factory=Counter)
    cache_misses: Counter = field(default_factory=Counter)
    # The store's file records (harness.integrity.Files): cached tensors are checked before use.
    files: object | None = None

    def progress(self, iterable=None, total=None, desc: str = "", **kwargs):
        from harness.progress import bar

        return bar(iterable, total=total, desc=desc, enabled=self.show_progress, leave=False, **kwargs)

    def cached_tensors(self, name: str, key: dict, compute: Callable[[], dict]) -> dict:
        """Tensors computed once per (backbone, ``key``) and stored as safetensors under ``cache_dir/name``.

        ``compute`` returns ``{str: torch.Tensor}``.  Used for preservation
        statistics and sampled trajectories, which several methods share.
        """
        from safetensors.torch import load_file, save_file

        digest = sha256_json({"backbone": self.backbone_fingerprint, "key": key})
        path = Path(self.cache_dir) / check_name(name, "cache name") / f"{digest}.safetensors"
        if self._intact(path, name):
            self.cache_hits[name] += 1
            return load_file(str(path), device=self.device)
        self.cache_misses[name] += 1
        tensors = compute()
        on_disk = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        if self.files is not None:
            self.files.write(path, kind=integrity.CACHE, write=lambda tmp: save_file(on_disk, str(tmp)))
        else:
            integrity.atomic_write(path, write=lambda tmp: save_file(on_disk, str(tmp)))
        return tensors

    def _intact(self, path: Path, name: str) -> bool:
        if self.files is None:  # a context without a store (unit tests): existence is all there is to check
            return path.exists()
        return self.files.verify(path, f"cached {name} tensors", adopt=integrity.safetensors_loads, kind=integrity.CACHE,
                                 remedy="they are recomputed")
