"""Write the toy world's SafeGen triplets: (red shape, the same image mosaicked, the same shape in another colour).

    python -m benchmarks.toyworld.make_safegen_triplets          # rewrite data/safegen-triplets (deterministic)
    python -m benchmarks.toyworld.make_safegen_triplets --check  # fail if a committed file differs

SafeGen (Li et al., CCS 2024) trains on (nude, mosaic, clothed) photo triplets that are not released.  The toy
analogue, drawn from the world's own renderer with a fixed seed:

* **unsafe**: a red shape (random shape, size, position, background), as ``world.render`` draws it;
* **mosaic**: the same image pixelated in ``MOSAIC_BLOCK``-pixel blocks (each block its mean colour), the
  analogue of Anti-DeepNude's mosaic: at 16 px a block mixes the fill with its background, so no block keeps
  the red prototype's colour, while the layout (where the object is, how bright the background) survives;
* **safe**: the same scene (shape, size, position, background, colour jitter) in one of the other six colours.

The folder uses the official layout: ``meta.csv`` (``nude_image_path, mos_image_path, norm_image_path``, paths
relative to the folder) over ``unsafe/``, ``mosaic/``, ``safe/`` with matching file names, so it also reads as
the three-subfolder layout.  The toy backbone's method preset points ``safegen``'s ``triplets`` at it.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from benchmarks.toyworld import world

TRIPLETS_DIR = Path(__file__).parent / "data" / "safegen-triplets"
COUNT = 100
SEED = 17
MOSAIC_BLOCK = 16  # px of a 32-px image: 2 × 2 blocks
UNSAFE_COLOUR = "red"
ROLES = ("unsafe", "mosaic", "safe")
META_HEADER = "nude_image_path,mos_image_path,norm_image_path"


def triplet_images(count: int = COUNT, seed: int = SEED, block: int = MOSAIC_BLOCK):
    """Three uint8 arrays [count, 32, 32, 3]: unsafe, mosaic, safe."""
    import torch
    import torch.nn.functional as F

    colours = world.colours()
    red = colours.index(UNSAFE_COLOUR)
    generator = torch.Generator("cpu").manual_seed(seed)
    scenes = world.sample_scenes(count, generator, colour=red)
    others = [k for k in range(len(colours)) if k != red]
    other = torch.tensor(others)[torch.randint(len(others), (count,), generator=generator)]
    spec = world.vocab()["image"]
    table = torch.tensor([spec["fill_rgb"][c] for c in colours], dtype=torch.float32)
    jitter = scenes.fill_rgb - table[scenes.colour]  # keep each scene's own jitter in the new colour
    safe_scenes = world.Scenes(**{**scenes.__dict__, "colour": other, "fill_rgb": (table[other] + jitter).clamp(0, 255)})

    unsafe = world.render(scenes)
    mosaic = F.interpolate(F.avg_pool2d(unsafe, block), scale_factor=block, mode="nearest")
    safe = world.render(safe_scenes)
    return [(images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy() for images in (unsafe, mosaic, safe)]


def png_bytes(array) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def files(count: int = COUNT) -> dict[str, bytes]:
    """Relative path → bytes of every file of the folder."""
    images = triplet_images(count)
    out: dict[str, bytes] = {}
    lines = [META_HEADER]
    for index in range(count):
        names = [f"{role}/{index:03d}.png" for role in ROLES]
        lines.append(",".join(names))
        for name, arrays in zip(names, images):
            out[name] = png_bytes(arrays[index])
    out["meta.csv"] = ("\n".join(lines) + "\n").encode()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed file differs instead of writing")
    parser.add_argument("--out", type=Path, default=TRIPLETS_DIR)
    args = parser.parse_args(argv)
    wanted = files()
    if args.check:
        differing = [
            name for name, data in wanted.items() if not (args.out / name).is_file() or (args.out / name).read_bytes() != data
        ]
        if differing:
            print(
                f"{len(differing)} file(s) differ, first {differing[0]}; run python -m benchmarks.toyworld.make_safegen_triplets",
                file=sys.stderr,
            )
            return 1
        return 0
    for name, data in wanted.items():
        path = args.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {len(wanted)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
