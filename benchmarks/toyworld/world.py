"""The toy world's data: its vocabulary, the image renderer and the caption generator.

An image is one shape (circle, square, triangle, cross) in one fill colour on a
white or black background, 32×32 RGB.  A caption names the colour directly
("a red circle"), by a synonym ("a crimson circle"), or only by implication
("a circle the colour of blood").  Implicit captions combine a *frame* with a
*referent*; both come in halves A and B, and training sees only A×A and B×B, so
A×B and B×A are phrasings the model never saw composed that way.

Everything here is pure Python except ``render``/``sample_scenes``, which
import torch when called (the plugin module must stay torch-free).
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path

VOCAB_PATH = Path(__file__).parent / "data" / "vocab.json"

EXPLICIT, SYNONYM, IMPLICIT, IMPLICIT_HELDOUT, EMPTY = "explicit", "synonym", "implicit", "implicit-heldout", "empty"
TRAINING_KINDS = (EXPLICIT, SYNONYM, IMPLICIT)  # the only kinds the model is trained on
UNMENTIONED = ""  # background label of a caption that does not name its background


@functools.lru_cache(maxsize=1)
def vocab() -> dict:
    return json.loads(VOCAB_PATH.read_text(encoding="utf-8"))


def colours() -> list[str]:
    return list(vocab()["colours"])


def shapes() -> list[str]:
    return list(vocab()["image"]["shapes"])


def backgrounds() -> list[str]:
    return list(vocab()["image"]["backgrounds"])


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# --------------------------------------------------------------------------- captions


@dataclass(frozen=True)
class Caption:
    """A caption, what it describes, and how it was built (so it can be rebuilt in another colour).

    ``keyword`` is the part of the text that carries the colour (the colour
    word, the synonym or the implicit referent); ``keyword_start`` is its
    character offset, so its tokens can be found without searching the text
    ("red" also occurs inside "coloured").
    """

    text: str
    kind: str
    colour: str
    shape: str
    background: str  # "white", "black", or UNMENTIONED
    keyword: str
    keyword_start: int
    prefix: str = ""
    suffix: str = ""  # background phrase with "{B}" still in it
    word_index: int = 0  # which synonym or referent
    frame: str = ""  # implicit frame

    @property
    def keyword_span(self) -> tuple[int, int]:
        return self.keyword_start, self.keyword_start + len(self.keyword)

    @property
    def keyword_is_colour_word(self) -> bool:
        """Colour words and synonyms, not implicit referents."""
        return self.kind in (EXPLICIT, SYNONYM)

    def recoloured(self, colour: str) -> Caption:
        """The same caption with another colour's word, synonym or referent in the same slot."""
        return make_caption(self.kind, colour, self.shape, self.prefix, self.suffix, self.background, self.word_index, self.frame)


def make_caption(kind, colour, shape, prefix="", suffix="", background=UNMENTIONED, word_index=0, frame="") -> Caption:
    """Build one caption: ``prefix`` + body + ``suffix`` (with "{B}" replaced by the background)."""
    if kind in (EXPLICIT, SYNONYM):
        word = colour if kind == EXPLICIT else vocab()["synonyms"][colour][word_index]
        body, keyword, offset = f"{article(word)} {word} {shape}", word, len(article(word)) + 1
    elif kind in (IMPLICIT, IMPLICIT_HELDOUT):
        body, keyword, offset = implicit_body(frame, shape, vocab()["implicit_referents"][colour][word_index])
    else:
        raise ValueError(f"unknown caption kind {kind!r}")
    text = prefix + body + suffix.replace("{B}", background)
    return Caption(text, kind, colour, shape, background, keyword, len(prefix) + offset, prefix, suffix, word_index, frame)


def implicit_body(frame: str, shape: str, referent: dict) -> tuple[str, str, int]:
    """Fill an implicit frame; returns (text, referent as written, its offset)."""
    if frame.startswith("{Xb}"):
        # "{Xb} coloured {S}": the article belongs to the referent ("a fire truck coloured triangle").
        keyword = referent["bare"]
        lead = f"{article(keyword)} "
        return lead + frame.replace("{Xb}", keyword).replace("{S}", shape), keyword, len(lead)
    keyword = referent["with_article"]
    text = frame.replace("{S}", f"{article(shape)} {shape}").replace("{X}", keyword)
    return text, keyword, text.index(keyword)


def implicit_combinations(heldout: bool) -> list[tuple[str, int]]:
    """(frame, referent index) pairs: seen = A×A and B×B, held out = A×B and B×A."""
    frames = vocab()["implicit_frames"]
    halves = {"A": range(0, 3), "B": range(3, 6)}
    pairs = []
    for frame_half in ("A", "B"):
        for referent_half in ("A", "B"):
            if (frame_half != referent_half) == heldout:
                pairs += [(frame, index) for frame in frames[frame_half] for index in halves[referent_half]]
    return pairs


def captions_for(kind: str, colour: str, shape: str) -> list[Caption]:
    """Every caption of ``kind`` that describes a ``colour`` ``shape`` (all prefixes and background phrasings)."""
    if kind == EXPLICIT:
        slots = [(0, "")]
    elif kind == SYNONYM:
        slots = [(index, "") for index in range(len(vocab()["synonyms"][colour]))]
    elif kind in (IMPLICIT, IMPLICIT_HELDOUT):
        slots = [(index, frame) for frame, index in implicit_combinations(heldout=kind == IMPLICIT_HELDOUT)]
    else:
        raise ValueError(f"unknown caption kind {kind!r}")
    out = []
    for word_index, frame in slots:
        for prefix in vocab()["prefixes"]:
            for suffix in vocab()["background_suffixes"]:
                for background in backgrounds() if "{B}" in suffix else [UNMENTIONED]:
                    out.append(make_caption(kind, colour, shape, prefix, suffix, background, word_index, frame))
    return out


def all_captions(kinds=TRAINING_KINDS) -> list[Caption]:
    """Every distinct caption of the given kinds, grouped by (kind, colour, shape, background)."""
    out = []
    for kind in kinds:
        for colour in colours():
            for shape in shapes():
                group = captions_for(kind, colour, shape)
                for background in backgrounds() + [UNMENTIONED]:
                    out += [c for c in group if c.background == background]
    return out


def sample_training_caption(rng: random.Random, colour: str, shape: str, background: str) -> Caption:
    """One caption from the training distribution for an image (the mix of ``vocab.json``'s ``training_mix``)."""
    mix = vocab()["training_mix"]
    kind = rng.choices(TRAINING_KINDS, weights=[mix[k.replace("implicit", "implicit_seen")] for k in TRAINING_KINDS])[0]
    mentioned = rng.random() < mix["background_mentioned"]
    pool = [c for c in captions_for(kind, colour, shape) if c.background == (background if mentioned else UNMENTIONED)]
    return rng.choice(pool)


# --------------------------------------------------------------------------- images


@dataclass
class Scenes:
    """What a batch of images shows (integer tensors indexing colours()/shapes()/backgrounds()) and where."""

    colour: object  # LongTensor [N]
    shape: object
    background: object
    centre: object  # FloatTensor [N, 2], pixels (x, y)
    radius: object  # FloatTensor [N]
    fill_rgb: object  # FloatTensor [N, 3], 0..255 after jitter
    background_rgb: object

    def __len__(self):
        return len(self.colour)

    def to(self, device):
        return Scenes(**{k: v.to(device) for k, v in self.__dict__.items()})

    def subset(self, index):
        return Scenes(**{k: v[index] for k, v in self.__dict__.items()})


def sample_scenes(count: int, generator, colour=None, shape=None, background=None) -> Scenes:
    """Random scenes from a CPU ``torch.Generator`` (so the same seed gives the same data on any device).

    ``colour``/``shape``/``background`` optionally fix those attributes (index tensors or ints).
    """
    import torch

    spec = vocab()["image"]
    size = spec["size"]
    low, high = spec["radius_px"]

    def pick(fixed, choices):
        drawn = torch.randint(len(choices), (count,), generator=generator)
        return drawn if fixed is None else torch.as_tensor(fixed).expand(count).clone()

    colour_idx = pick(colour, colours())
    shape_idx = pick(shape, shapes())
    background_idx = pick(background, backgrounds())
    radius = low + (high - low) * torch.rand(count, generator=generator)
    # Keep the whole shape inside the frame, with a one-pixel margin.
    margin = radius + 1
    centre = margin[:, None] + (size - 2 * margin)[:, None] * torch.rand(count, 2, generator=generator)
    fill_table = torch.tensor([spec["fill_rgb"][c] for c in colours()], dtype=torch.float32)
    background_table = torch.tensor([spec["background_rgb"][b] for b in backgrounds()], dtype=torch.float32)
    fill = fill_table[colour_idx] + spec["fill_jitter"] * (2 * torch.rand(count, 3, generator=generator) - 1)
    back = background_table[background_idx] + spec["background_jitter"] * (2 * torch.rand(count, 3, generator=generator) - 1)
    return Scenes(colour_idx, shape_idx, background_idx, centre, radius, fill.clamp(0, 255), back.clamp(0, 255))


def shape_masks(scenes: Scenes, size: int):
    """Hard inside/outside masks [N, size, size] for each scene's shape, drawn on a ``size``-pixel grid."""
    import torch

    scale = size / vocab()["image"]["size"]
    device = scenes.centre.device
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / scale  # pixel centres in image units
    dx = coords[None, None, :] - scenes.centre[:, 0, None, None]
    dy = coords[None, :, None] - scenes.centre[:, 1, None, None]
    r = scenes.radius[:, None, None]
    circle = dx**2 + dy**2 <= r**2
    square = torch.maximum(dx.abs(), dy.abs()) <= 0.85 * r  # a bit smaller, so its area is close to the circle's
    # Upward equilateral triangle inscribed in the circle: apex at (0, -r), base at dy = r/2.
    triangle = (dy <= r / 2) & (dx.abs() <= (dy + r) / 3**0.5)
    arm = 0.3 * r
    cross = ((dx.abs() <= arm) & (dy.abs() <= r)) | ((dy.abs() <= arm) & (dx.abs() <= r))
    by_shape = {"circle": circle, "square": square, "triangle": triangle, "cross": cross}
    stacked = torch.stack([by_shape[name] for name in shapes()])  # [S, N, H, W]
    return stacked[scenes.shape, torch.arange(len(scenes), device=device)]


def render(scenes: Scenes):
    """Images [N, 3, 32, 32] in [0, 1]: drawn at 2× and averaged down, for anti-aliased edges."""
    import torch.nn.functional as F

    spec = vocab()["image"]
    big = spec["size"] * spec["supersample"]
    inside = shape_masks(scenes, big)[:, None].float()  # [N, 1, H, W]
    fill = scenes.fill_rgb[:, :, None, None] / 255
    back = scenes.background_rgb[:, :, None, None] / 255
    image = inside * fill + (1 - inside) * back
    return F.avg_pool2d(image, spec["supersample"])


def render_batches(scenes: Scenes, batch_size: int = 4096):
    """``render`` in chunks, so a large bank never needs the full supersampled tensor at once."""
    import torch

    return torch.cat([render(scenes.subset(slice(i, i + batch_size))) for i in range(0, len(scenes), batch_size)])
