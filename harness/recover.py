"""What the cache can prove when ``harness.db`` is lost: each cached file carries its own database row.

Every generated PNG holds, in a ``tEXt`` chunk, the row the ``images`` table has for it (model state, resolved
prompt spec, UNet evaluations); every safetensors delta holds its ``model_states`` row in its header.  When the
database is deleted and ``cache/`` kept, a re-run finds the files, reads the rows back and stores them again, so
the cost column, the image grids and the erase cost come out as before, without regenerating or re-erasing.
A file from before these records existed proves nothing about its cost: its cost is stored as unknown, with a
warning, never as 0.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

PNG_KEY = "harness"  # the tEXt chunk's keyword
DELTA_KEY = "harness.model_state"  # the safetensors header's metadata key


# --------------------------------------------------------------------------- images


def png_info(state_key: str, spec: dict, unet_evals: int):
    """The PNG text chunk that records an image's database row."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PNG_KEY, json.dumps({"model_state": state_key, "spec": spec, "unet_evals": unet_evals}, default=str))
    return info


def read_png_record(path: Path) -> dict | None:
    """The row recorded in a cached PNG, or None if it has none (or cannot be read)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            text = getattr(image, "text", {}).get(PNG_KEY)
    except OSError:
        return None
    try:
        record = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("unet_evals"), int) or "spec" not in record:
        return None
    return record


def restore_image_rows(store, found: dict[str, tuple[str, dict]]) -> int:
    """Store the rows of cached images the database does not know.  ``found``: key → (state key, resolved spec dict).

    Returns how many images proved nothing about their cost (stored with an unknown cost).
    """
    known = store.image_unet_evals(list(found))
    missing = [key for key in found if key not in known]
    if not missing:
        return 0
    rows, unproven = [], 0
    for key in missing:
        record = read_png_record(store.image_path(key))
        state_key, spec = found[key]
        if record is not None and record.get("model_state") == state_key:
            rows.append((key, state_key, record["spec"], record["unet_evals"]))
        else:
            rows.append((key, state_key, spec, None))  # the spec is what the key was computed from; the cost is not
            unproven += 1
    store.add_images(rows)
    if unproven:
        warnings.warn(
            f"{unproven} cached image(s) were not in {store.root / 'harness.db'} and carry no record of their cost "
            "(cached by an older version); their UNet evaluations are reported as unknown. Delete them from "
            f"{store.cache / 'images'} to regenerate and measure them",
            stacklevel=2,
        )
    return unproven


# --------------------------------------------------------------------------- model states


def delta_metadata(*, backbone: str, method: str, params: dict, concepts: str, metadata: dict) -> dict[str, str]:
    """The safetensors header entry that records a delta's ``model_states`` row (header values must be strings)."""
    row = {"backbone": backbone, "method": method, "params": params, "concepts": concepts, "metadata": metadata}
    return {DELTA_KEY: json.dumps(row, default=str)}


def restore_model_state(store, key: str) -> bool:
    """Store the row of a cached delta the database does not know; False if the delta records none."""
    path = store.delta_path(key)
    if not path.is_file():
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get(DELTA_KEY)
        row = json.loads(text) if text else None
    except (OSError, ValueError, json.JSONDecodeError):
        return False
    if not isinstance(row, dict):
        return False
    store.add_model_state(key, row["backbone"], row["method"], row["params"], row["concepts"], str(path), row["metadata"])
    return True
