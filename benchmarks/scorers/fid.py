"""FID between a model's images and the base model's own images for the same prompts and seeds.

As in the TRCE paper (App. A.2), the reference is SD v1.4's own generations,
not real COCO photos, so FID measures how far an erasure moved the model.  The
engine generates (and caches) the reference images with the unedited backbone
and calls ``score_set(images, reference_images, specs)``.

Computed by torchmetrics' ``FrechetInceptionDistance`` with the standard FID
Inception-v3 (TF-ported weights ``weights-inception-2015-12-05-6726825d.pth``,
2048-d pool features; needs ``torch-fidelity``).  **Resize:** images are
resized to 299×299 with ``antialias=False``, i.e. torch-fidelity's
TensorFlow-1.x-compatible bilinear resize that the reference FID uses
(torchmetrics' own default, ``antialias=True``, gives slightly different
numbers).  Input is uint8 RGB at the generated size.

Offline use: put the weights file in ``$TORCH_HOME/hub/checkpoints/`` or point
``HARNESS_FID_WEIGHTS`` (or ``weights=``) at it.  Without it, an offline machine
gets a one-line error at once instead of a download attempt.  Tests inject a
tiny feature extractor through ``feature_extractor=``; everything after the
extractor is the same code.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.data import host_reachable
from harness.api import HarnessError, Metric, PromptSpec, Scorer

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
WEIGHTS_ENV = "HARNESS_FID_WEIGHTS"
BATCH = 32


def default_weights_path() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def inception_extractor(weights: str | None):
    """torchmetrics' FID Inception-v3 (2048-d), with the TF-style resize, from local weights when there are some."""
    path = Path(weights).expanduser() if weights else default_weights_path()
    if weights and not path.is_file():
        raise HarnessError(f"FID Inception weights {path} do not exist (set {WEIGHTS_ENV} to the {WEIGHTS_FILE} file)")
    if not path.is_file() and not host_reachable("github.com"):
        raise HarnessError(
            f"FID needs the Inception weights {WEIGHTS_FILE}, which are not in {path.parent} and cannot be downloaded "
            f"(offline): fetch {WEIGHTS_URL} on a connected machine and set {WEIGHTS_ENV}=/path/to/{WEIGHTS_FILE}"
        )
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except (ImportError, ModuleNotFoundError):
        raise HarnessError("the fid scorer needs torch-fidelity: pip install torch-fidelity==0.4.0") from None
    try:
        return NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=["2048"],
            feature_extractor_weights_path=str(path) if path.is_file() else None,
            antialias=False,
        )
    except ModuleNotFoundError as err:  # torch-fidelity is missing
        raise HarnessError(f"the fid scorer needs torch-fidelity: pip install torch-fidelity==0.4.0 ({err})") from None


def _uint8_batches(images: list):
    """Consecutive images of one size, stacked as uint8 NCHW tensors (I2P mixes sizes; a batch cannot)."""
    import numpy as np
    import torch

    batch, size = [], None
    for image in images:
        array = np.array(image.convert("RGB"), dtype=np.uint8)
        if batch and (array.shape != size or len(batch) == BATCH):
            yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
            batch = []
        batch.append(array)
        size = array.shape
    if batch:
        yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)


class FidScorer(Scorer):
    name = "fid"
    description = (
        "FID (torchmetrics, FID Inception-v3, TF-style resize) against the base model's images for the same prompts and seeds"
    )
    version = "1"
    needs_reference = True

    def __init__(self, device: str = "cpu", weights: str | None = None, feature_extractor=None):
        super().__init__(device)
        self.weights = weights or os.environ.get(WEIGHTS_ENV)
        self.feature_extractor = feature_extractor
        if feature_extractor is not None:
            self.version = f"1+{type(feature_extractor).__name__}"  # never mix with real Inception scores

    def _metric(self):
        from torchmetrics.image.fid import FrechetInceptionDistance

        extractor = self.feature_extractor if self.feature_extractor is not None else inception_extractor(self.weights)
        # A module as `feature` is torchmetrics' documented way to bring one's own extractor; for the
        # real Inception this is the same network torchmetrics would build, with antialias=False.
        return FrechetInceptionDistance(feature=extractor, normalize=False).to(self.device)

    def score_set(self, images: list, reference_images: list, specs: list[PromptSpec]) -> dict:
        import torch

        if len(images) < 2 or len(reference_images) < 2:
            raise HarnessError(
                f"FID needs at least 2 images per set; got {len(images)} and {len(reference_images)} reference images"
            )
        metric = self._metric()
        with torch.no_grad():
            for batch in _uint8_batches(reference_images):
                metric.update(batch.to(self.device), real=True)
            for batch in _uint8_batches(images):
                metric.update(batch.to(self.device), real=False)
            value = float(metric.compute())
        return {"fid": value, "n": len(images), "n_reference": len(reference_images)}

    def metrics(self) -> list[Metric]:
        return [
            Metric(
                "fid",
                "FID",
                True,
                "FID (torchmetrics FrechetInceptionDistance, FID Inception-v3 2048-d, resize to 299 with antialias=False) "
                "between this model's images and the base model's images for the same prompts and seeds",
                aggregate=lambda raws, specs: raws[0]["fid"],
                unit="distance",
            )
        ]
