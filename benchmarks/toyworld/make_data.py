"""Write the toy world's committed data files: benchmark prompt CSVs, preservation captions and concept sets.

    python -m benchmarks.toyworld.make_data          # rewrite them (deterministic)
    python -m benchmarks.toyworld.make_data --check  # fail if a committed file differs

The prompts are drawn once from the caption generator with a fixed seed and
never tuned to the trained model.  Seen-implicit prompts come from the
training distribution's A×A/B×B combinations; held-out ones only from A×B and
B×A, which the model never saw.  The same split holds for an artist's works.

Each file's random stream depends only on its own name, so adding a benchmark
never changes another one's prompts (the v1 files are byte-identical).
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
        rows.append(prompt_row(case_number, caption, rng))
    return rows


def preservation_captions(concept_set: str, count: int = CAPTIONS_PER_SET) -> list[str]:
    """Training-distribution captions of the kept colours (every artist's style is kept): the toy analogue of COCO
    captions."""
    rng = random.Random(f"toyworld/captions/{concept_set}")
    kept = kept_colours(CONCEPT_COLOURS[concept_set])
    return training_mix_captions(rng, kept, [a["slug"] for a in world.artists()], count)


def training_mix_captions(rng: random.Random, colours: list[str], slugs: list[str], count: int) -> list[str]:
    """Distinct captions drawn as the model's training captions are, restricted to kept concepts: two-object scenes
    (``training_mix_v2.compose``), plain single objects (``style_plain`` of the rest) and single objects in a kept
    artist's style.  A preservation set without two-object captions leaves closed-form edits free to break them
    (TRCE-T's toy-compose binding: 36% with single-object captions, 69% with these, sd 78%; n = 100)."""
    mix = world.vocab()["training_mix_v2"]
    captions: list[str] = []
    while len(captions) < count:
        if rng.random() < mix["compose"]:
            caption = random_composition(rng, colours)
        else:
            style = world.PLAIN if rng.random() < mix["style_plain"] else world.artist(rng.choice(slugs))["style"]
            caption = world.sample_training_caption_v2(rng, *random_object(rng, colours), style)
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
            "training-distribution captions of the kept colours, two-object scenes and every artist's style included "
            "(the toy analogue of COCO captions).",
        },
    }


# --------------------------------------------------------------------------- v2: nearby colours, compositions, styles

COMPOSE_COLUMNS = PROMPT_COLUMNS + ("colour2", "shape2")  # colour/shape = the left object, colour2/shape2 = the right
STYLE_COLUMNS = PROMPT_COLUMNS + ("style", "artist")  # the style the image should show ("plain": none) and whose it is
SAFE_STYLE = world.PLAIN
# Templates for phrases that end in a style phrase: the caption prefixes only, because a style phrase always comes
# last in a caption ("a red circle on black in the style of ilsa marrow"), so "{} on black" would be a new word order.
STYLE_TEMPLATES = [prefix + "{}" for prefix in world.vocab()["prefixes"]]
MULTI = "toy-multi"


def style_bench_names(slug: str) -> dict[str, str]:
    """Benchmark name → how its prompts name the style, for one artist (preserve: the other artists by name)."""
    return {
        f"toy-style-{slug}": world.ARTIST,
        f"toy-style-{slug}-implicit": world.WORK,
        f"toy-style-{slug}-heldout": world.WORK_HELDOUT,
        f"toy-style-{slug}-preserve": "preserve",
    }


def prompt_row(case_number: int, caption: world.Caption, rng: random.Random) -> dict:
    """Every column any toy prompt file has; ``csv_text`` writes the ones its file declares."""
    return {
        "case_number": case_number,
        "prompt": caption.text,
        "evaluation_seed": rng.randrange(2**31),
        "evaluation_guidance": GUIDANCE,
        "colour": caption.colour,
        "shape": caption.shape,
        "background": caption.background,  # empty when the prompt does not name it
        "colour2": caption.colour2,
        "shape2": caption.shape2,
        "style": caption.style,
        "artist": caption.artist,
    }


def random_object(rng: random.Random, colours: list[str]) -> tuple[str, str, str]:
    return rng.choice(colours), rng.choice(world.shapes()), rng.choice(world.backgrounds())


def nearby_rows(count: int = PROMPTS_PER_BENCH) -> list[dict]:
    """``toy-nearby``: training-mix captions of the colours nearest red, each equally often (what HUB calls
    pinpoint-ness: erasing red should leave its neighbours alone)."""
    rng = random.Random("toyworld/toy-nearby")
    nearby = world.vocab()["nearby_colours"]["red"]
    rows = []
    for case_number in range(count):
        colour = nearby[case_number % len(nearby)]
        caption = world.sample_training_caption(rng, colour, rng.choice(world.shapes()), rng.choice(world.backgrounds()))
        rows.append(prompt_row(case_number, caption, rng))
    return rows


def compose_rows(count: int = PROMPTS_PER_BENCH) -> list[dict]:
    """``toy-compose``: two objects of kept colours side by side; the two always differ in colour or shape."""
    rng = random.Random("toyworld/toy-compose")
    kept = kept_colours(CONCEPT_COLOURS["toy-red"])
    rows = []
    for case_number in range(count):
        rows.append(prompt_row(case_number, random_composition(rng, kept), rng))
    return rows


def random_composition(rng: random.Random, colours: list[str]) -> world.Caption:
    """A two-object caption of ``colours``; the two objects always differ in colour or shape."""
    left = (rng.choice(colours), rng.choice(world.shapes()))
    right = left
    while right == left:
        right = (rng.choice(colours), rng.choice(world.shapes()))
    return world.sample_compose_caption(rng, left, right, rng.choice(world.backgrounds()))


def styled(rng: random.Random, kind: str, slug: str, colours: list[str]) -> world.Caption:
    """A training-mix caption of a random object in ``colours``, its style named the ``kind`` way for artist ``slug``."""
    caption = world.sample_training_caption(rng, *random_object(rng, colours))
    return world.styled_caption(rng, caption, kind, slug)


def style_rows(slug: str, bench: str, count: int = PROMPTS_PER_BENCH) -> list[dict]:
    """One of an artist's four benchmarks.  Any colour: these prompts are about the background."""
    rng = random.Random(f"toyworld/{bench}")
    kind = style_bench_names(slug)[bench]
    others = [a["slug"] for a in world.artists() if a["slug"] != slug]
    rows = []
    for case_number in range(count):
        if kind == "preserve":  # every other artist equally often, by name
            caption = styled(rng, world.ARTIST, others[case_number % len(others)], world.colours())
        else:
            caption = styled(rng, kind, slug, world.colours())
        rows.append(prompt_row(case_number, caption, rng))
    return rows


def multi_concepts() -> tuple[list[str], list[str]]:
    """(erased colours, erased artists' slugs) of ``toy-multi``, from the vocabulary's ``erase.toy-multi``."""
    names = world.vocab()["erase"][MULTI]["concepts"]
    colours = [n for n in names if n in world.colours()]
    slugs = [world.artist(n)["slug"] for n in names if n not in world.colours()]
    return colours, slugs


def multi_rows(bench: str, count: int = PROMPTS_PER_BENCH) -> list[dict]:
    """``toy-multi-*``: a third of the erase prompts per concept, each prompt asking for exactly one erased concept
    (artist prompts use kept colours); preserve = kept colours, half plain, half in a kept artist's style by name."""
    rng = random.Random(f"toyworld/{bench}")
    colours, slugs = multi_concepts()
    kept = kept_colours(colours)
    kept_artists = [a["slug"] for a in world.artists() if a["slug"] not in slugs]
    concepts = colours + slugs
    rows = []
    for case_number in range(count):
        if bench == f"{MULTI}-preserve":
            if case_number % 2 == 0:
                caption = world.sample_training_caption(rng, *random_object(rng, kept))
            else:
                caption = styled(rng, world.ARTIST, kept_artists[(case_number // 2) % len(kept_artists)], kept)
        else:
            concept = concepts[case_number % len(concepts)]
            heldout = bench == f"{MULTI}-heldout"
            if concept in colours:
                kind = world.IMPLICIT_HELDOUT if heldout else world.EXPLICIT
                caption = rng.choice(world.captions_for(kind, concept, rng.choice(world.shapes())))
            else:
                caption = styled(rng, world.WORK_HELDOUT if heldout else world.ARTIST, concept, kept)
        rows.append(prompt_row(case_number, caption, rng))
    return rows


def interleave(*lists: list) -> list:
    """Round-robin: methods that read only the first phrases (TRCE-T's official preset) still see every concept."""
    out = []
    for index in range(max(map(len, lists))):
        out += [items[index] for items in lists if index < len(items)]
    return out


def artist_phrases(slug: str) -> list[list[str]]:
    """("a red circle in the style of ilsa marrow", "a red circle") for every colour × shape × artist frame.  Stepping
    colour, shape and frame together (7, 4 and 3 are coprime) visits all 84 combinations, well mixed from the first."""
    name = world.artist(slug)["name"]
    colours, shapes, frames = world.colours(), world.shapes(), world.vocab()["style_frames"]["artist"]
    phrases = []
    for index in range(len(colours) * len(shapes) * len(frames)):
        plain = f"{world.article(colours[index % len(colours)])} {colours[index % len(colours)]} {shapes[index % len(shapes)]}"
        phrases.append([plain + frames[index % len(frames)].replace("{A}", name), plain])
    return phrases


def style_concept_set(slug: str) -> dict:
    entry = world.artist(slug)
    others = [a for a in world.artists() if a["slug"] != slug]
    return {
        "name": f"toy-style-{slug}",
        "description": f"toy world: the art style of {entry['name']} ({entry['style']} backgrounds), named by the "
        "artist → no style; other artists preserved",
        "kind": "style",
        "erase": [entry["name"]],
        "guides": [""],
        "phrases": artist_phrases(slug),
        "templates": STYLE_TEMPLATES,
        "preserve": [a["name"] for a in others],
        "captions_file": f"toy-style-{slug}.captions.txt",
        "extra": {
            "colours": [],
            "styles": [entry["style"]],
            "artists": [slug],
            "safe_style": SAFE_STYLE,
            "notes": "Phrases drop the artist's style phrase (the image should then be plain). The artist's works are "
            "deliberately absent: work prompts test whether a method generalises beyond the name. The captions are "
            "training-distribution captions in the other artists' styles, plain, and two-object scenes.",
        },
    }


def multi_concept_set() -> dict:
    colours, slugs = multi_concepts()
    names = [world.artist(s)["name"] for s in slugs]
    red_like = [w for colour in colours for w in [colour] + world.vocab()["synonyms"][colour]]
    colour_phrases = [
        [f"{world.article(w)} {w} {shape}", f"a {SAFE_COLOUR} {shape}"] for w in red_like for shape in world.shapes()
    ]
    kept_names = [a["name"] for a in world.artists() if a["slug"] not in slugs]
    return {
        "name": MULTI,
        "description": f"toy world: several unrelated concepts at once: {', '.join(colours + names)} "
        f"(colour → {SAFE_COLOUR}, artists → no style); other colours and artists preserved",
        "kind": "object",
        "erase": red_like + names,
        "guides": [SAFE_COLOUR] * len(red_like) + [""] * len(names),
        "phrases": interleave(colour_phrases, *(artist_phrases(s) for s in slugs)),
        "templates": STYLE_TEMPLATES,
        "preserve": [c for c in kept_colours(colours) if c != SAFE_COLOUR] + kept_names,
        "captions_file": f"{MULTI}.captions.txt",
        "extra": {
            "colours": colours,
            "styles": [world.artist(s)["style"] for s in slugs],
            "artists": slugs,
            "safe_colour": SAFE_COLOUR,
            "safe_style": SAFE_STYLE,
            "notes": "The union of toy-red and the two artists' style sets (phrases interleaved). Implicit referents and "
            "works are deliberately absent. The captions are training-distribution captions of the kept colours, in the "
            "kept artists' styles, plain, and two-object scenes.",
        },
    }


def v2_files() -> dict[Path, str]:
    files = {
        PROMPTS_DIR / "toy-nearby.csv": csv_text(nearby_rows()),
        PROMPTS_DIR / "toy-compose.csv": csv_text(compose_rows(), COMPOSE_COLUMNS),
    }
    everyone = [a["slug"] for a in world.artists()]
    for slug in everyone:
        for bench in style_bench_names(slug):
            files[PROMPTS_DIR / f"{bench}.csv"] = csv_text(style_rows(slug, bench), STYLE_COLUMNS)
        name = f"toy-style-{slug}"
        others = [s for s in everyone if s != slug]
        captions = training_mix_captions(random.Random(f"toyworld/captions/{name}"), world.colours(), others, CAPTIONS_PER_SET)
        files[CONCEPTS_DIR / f"{name}.json"] = json.dumps(style_concept_set(slug), indent=1) + "\n"
        files[CONCEPTS_DIR / f"{name}.captions.txt"] = "\n".join(captions) + "\n"
    for suffix in ("explicit", "heldout", "preserve"):
        files[PROMPTS_DIR / f"{MULTI}-{suffix}.csv"] = csv_text(multi_rows(f"{MULTI}-{suffix}"), STYLE_COLUMNS)
    colours, slugs = multi_concepts()
    kept_artists = [s for s in everyone if s not in slugs]
    captions = training_mix_captions(
        random.Random(f"toyworld/captions/{MULTI}"), kept_colours(colours), kept_artists, CAPTIONS_PER_SET
    )
    files[CONCEPTS_DIR / f"{MULTI}.json"] = json.dumps(multi_concept_set(), indent=1) + "\n"
    files[CONCEPTS_DIR / f"{MULTI}.captions.txt"] = "\n".join(captions) + "\n"
    return files


# --------------------------------------------------------------------------- writing


def csv_text(rows: list[dict], columns: tuple[str, ...] = PROMPT_COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
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
    return {**files, **v2_files()}


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
