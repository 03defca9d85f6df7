"""Write the toy world's committed data files: benchmark prompt CSVs, preservation captions and concept sets.

    python -m benchmarks.toyworld.make_data          # rewrite them (deterministic)
    python -m benchmarks.toyworld.make_data --check  # fail if a committed file differs

The prompts are drawn once from the caption generator with a fixed seed and
never tuned to the trained model.  Seen-implicit prompts come from the
training distribution's A×A/B×B combinations; held-out ones only from A×B and
B×A, which the model never saw.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
from pathlib import Path

from benchmarks.toyworld import world

HERE = Path(__file__).parent
PROMPTS_DIR = HERE / "prompts"
CONCEPTS_DIR = HERE / "concepts"
PROMPT_COLUMNS = ("case_number", "prompt", "evaluation_seed", "evaluation_guidance", "colour", "shape", "background")
PROMPTS_PER_BENCH = 200
CAPTIONS_PER_SET = 400
GUIDANCE = 7.5
SAFE_COLOUR = "gray"

# concept set → the colours it erases (the safe colour is always gray)
CONCEPT_COLOURS = {"toy-red": ("red",), "toy-warm": ("red", "orange", "yellow")}
# bench suffix → caption kind (None: the training mix, for the colours that are kept)
BENCH_KINDS = {
    "explicit": world.EXPLICIT,
    "synonym": world.SYNONYM,
    "implicit": world.IMPLICIT,
    "implicit-heldout": world.IMPLICIT_HELDOUT,
    "preserve": None,
}


def bench_name(concept_set: str, suffix: str) -> str:
    """toy-red → toy-explicit, …; toy-warm → toy-warm-explicit, …"""
    return f"toy-{suffix}" if concept_set == "toy-red" else f"{concept_set}-{suffix}"


def kept_colours(erased) -> list[str]:
    return [c for c in world.colours() if c not in erased]


def bench_rows(concept_set: str, suffix: str, count: int = PROMPTS_PER_BENCH) -> list[dict]:
    """Rows of one benchmark's prompt file; the random stream depends only on the file's name."""
    rng = random.Random(f"toyworld/{bench_name(concept_set, suffix)}")
    erased = CONCEPT_COLOURS[concept_set]
    kind = BENCH_KINDS[suffix]
    rows = []
    for case_number in range(count):
        shape = rng.choice(world.shapes())
        background = rng.choice(world.backgrounds())
        if kind is None:
            colour = rng.choice(kept_colours(erased))
            caption = world.sample_training_caption(rng, colour, shape, background)
        else:
            colour = erased[case_number % len(erased)]  # every erased colour equally often
            caption = rng.choice(world.captions_for(kind, colour, shape))
        rows.append(
            {
                "case_number": case_number,
                "prompt": caption.text,
                "evaluation_seed": rng.randrange(2**31),
                "evaluation_guidance": GUIDANCE,
                "colour": caption.colour,
                "shape": caption.shape,
                "background": caption.background,  # empty when the prompt does not name it
            }
        )
    return rows


def preservation_captions(concept_set: str, count: int = CAPTIONS_PER_SET) -> list[str]:
    """Training-distribution captions of the kept colours: the toy analogue of COCO captions."""
    rng = random.Random(f"toyworld/captions/{concept_set}")
    kept = kept_colours(CONCEPT_COLOURS[concept_set])
    captions: list[str] = []
    while len(captions) < count:
        caption = world.sample_training_caption(
            rng, rng.choice(kept), rng.choice(world.shapes()), rng.choice(world.backgrounds())
        )
        if caption.text not in captions:
            captions.append(caption.text)
    return captions


def concept_set(name: str) -> dict:
    erased = CONCEPT_COLOURS[name]
    words = [w for colour in erased for w in [colour] + world.vocab()["synonyms"][colour]]
    phrases = [[f"{world.article(w)} {w} {shape}", f"a {SAFE_COLOUR} {shape}"] for w in words for shape in world.shapes()]
    colours_text = ", ".join(erased)
    return {
        "name": name,
        "description": f"toy world: the colour(s) {colours_text} and their synonyms → {SAFE_COLOUR}; other colours preserved",
        "kind": "object",
        "erase": words,
        "guides": [SAFE_COLOUR],
        "phrases": phrases,
        "templates": [
            "{}",
            "a photo of {}",
            "a picture of {}",
            "an image of {}",
            "a drawing of {}",
            "{} on a white background",
            "{} on black",
        ],
        "preserve": [c for c in kept_colours(erased) if c != SAFE_COLOUR],
        "captions_file": f"{name}.captions.txt",
        "extra": {
            "colours": list(erased),
            "safe_colour": SAFE_COLOUR,
            "notes": "Phrases pair every erased word and shape with the gray shape. Implicit referents are deliberately "
            "absent: implicit prompts test whether a method generalises beyond its keywords. The captions are "
            "training-distribution captions of the kept colours (the toy analogue of COCO captions).",
        },
    }


def csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=PROMPT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def all_files() -> dict[Path, str]:
    files = {}
    for name in CONCEPT_COLOURS:
        for suffix in BENCH_KINDS:
            files[PROMPTS_DIR / f"{bench_name(name, suffix)}.csv"] = csv_text(bench_rows(name, suffix))
        files[CONCEPTS_DIR / f"{name}.json"] = json.dumps(concept_set(name), indent=1) + "\n"
        files[CONCEPTS_DIR / f"{name}.captions.txt"] = "\n".join(preservation_captions(name)) + "\n"
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    args = parser.parse_args(argv)
    stale = []
    for path, text in all_files().items():
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        sys.exit("out of date: " + ", ".join(map(str, stale)))


if __name__ == "__main__":
    main()
