"""Where the toy world's trained weights live (torch-free, so the plugin module can import it)."""

from __future__ import annotations

import os
from pathlib import Path

from harness.api import HarnessError

# The committed model.  HARNESS_TOY_WEIGHTS points the backbone and the scorers at another trained folder.
WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_ENV = "HARNESS_TOY_WEIGHTS"


def weights_dir() -> Path:
    return Path(os.environ.get(WEIGHTS_ENV) or WEIGHTS_DIR)


def require_weights(directory: str | Path | None = None, what: str = "toy-world model") -> Path:
    """The weights folder, or a one-line HarnessError that says how to make it."""
    directory = Path(directory) if directory else weights_dir()
    if not (directory / "model_index.json").exists():
        raise HarnessError(
            f"the {what} weights are missing ({directory} has no model_index.json); "
            f"train them with `harness toy train --out {directory}` (minutes on a GPU) or set {WEIGHTS_ENV}"
        )
    return directory
