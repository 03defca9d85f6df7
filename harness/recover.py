"""What the cache can prove when ``harness.db`` is lost: each cached file carries its own database row.

Every generated PNG holds, in a ``tEXt`` chunk, the row the ``images`` table has for it (model state, resolved
prompt spec, UNet evaluations); every safetensors delta has its ``model_states`` row in ``cache/states/<key>.json``.  When the
database is deleted and ``cache/`` kept, a re-run finds the files, reads the rows back and stores them again, so
the cost column, the image grids and the erase cost come out as before, without regenerating or re-erasing.
An image from before these records existed gets the cost its key determines (see ``adopted_image_rows``).
"""

from __future__ import annotations

import json
from pathlib import Path

PNG_KEY = "harness"  # the tEXt chunk's keyword


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


def adopted_image_rows(store, state_key: str, adopted: dict, evals_per_image) -> list[tuple[str, str, dict, int]]:
    """``images`` rows for cached images the database does not know (``adopted``: key → resolved spec).

    The row recorded in the PNG wins: it is what was measured when the image was made.  An image without one
    (cached by an older version) gets ``evals_per_image(spec)``, which its key determines: the key names the model
    state, hence the method, its version and parameters, hence its extra branches, and the spec names the steps.
    """
    rows = []
    for key, spec in adopted.items():
        record = read_png_record(store.image_path(key))
        if record is not None and record.get("model_state") == state_key:
            rows.append((key, state_key, record["spec"], record["unet_evals"]))
        else:
            rows.append((key, state_key, spec.as_dict(), evals_per_image(spec)))
    return rows


# --------------------------------------------------------------------------- model states


def state_record_path(store, key: str) -> Path:
    """Not in ``cache/deltas``: the record holds the erase time, which differs between two stores that erased the
    same state, and ``harness merge`` must not see that as a conflict (nor a recomputed delta as other bytes)."""
    return store.cache / "states" / f"{key}.json"


def write_state_record(store, key: str, *, backbone: str, method: str, params: dict, concepts: str, metadata: dict) -> None:
    """A delta's ``model_states`` row, in a JSON file of its own."""
    from harness.integrity import CACHE

    row = {"backbone": backbone, "method": method, "params": params, "concepts": concepts, "metadata": metadata}
    store.files.write(state_record_path(store, key), json.dumps(row, indent=1, default=str).encode("utf-8"), kind=CACHE)


def restore_model_state(store, key: str) -> bool:
    """Store the row of a cached delta the database does not know; False if the delta has no readable record."""
    delta_path = store.delta_path(key)
    if not delta_path.is_file():
        return False
    try:
        row = json.loads(state_record_path(store, key).read_text(encoding="utf-8"))
        store.add_model_state(key, row["backbone"], row["method"], row["params"], row["concepts"], str(delta_path), row["metadata"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    write_state_record(store, key, **row)  # the same bytes, now recorded again (`harness check` finds no orphan)
    return True
