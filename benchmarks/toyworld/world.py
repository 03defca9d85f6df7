"""The toy world's data: its vocabulary, the image renderer and the caption generator.

An image is one shape (circle, square, triangle, cross) in one fill colour on a
white or black background, 32×32 RGB.  The background may carry a *style*: a
pattern (stripes, dots, checks, …) that one of eight fictional artists owns, the
toy's analogue of an art style.  A *composition* shows two smaller shapes side by
side ("a red circle left of a blue square"), the toy's analogue of GenEval.  A caption names the colour directly
("a red circle"), by a synonym ("a crimson circle"), or only by implication
("a circle the colour of blood").  Implicit captions combine a *frame* with a
*referent*; both come in halves A and B, and training sees only A×A and B×B, so
A×B and B×A are phrasings the model never saw composed that way.

Everything here is pure Python except ``render``/``sample_scenes``, which
import torch when called (the plugin module must stay torch-free).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path

VOCAB_PATH = Path(__file__).parent / "data" / "vocab.json"

EXPLICIT, SYNONYM, IMPLICIT, IMPLICIT_HELDOUT, EMPTY = "explicit", "synonym", "implicit", "implicit-heldout", "empty"
TRAINING_KINDS = (EXPLICIT, SYNONYM, IMPLICIT)  # the only kinds the model is trained on
UNMENTIONED = ""  # background label of a caption that does not name its background
PLAIN = "plain"  # the style of a background without a pattern
# How a caption names its style: by the style word ("in a striped style"), by the artist ("in the style of ilsa
# marrow"), or only by one of the artist's works ("like the salt harbour"), in a seen or a held-out combination.
STYLE_WORD, ARTIST, WORK, WORK_HELDOUT = "style-word", "artist", "work", "work-heldout"
STYLE_TRAINING_KINDS = (STYLE_WORD, ARTIST, WORK)


@functools.lru_cache(maxsize=1)
def vocab() -> dict:
    return json.loads(VOCAB_PATH.read_text(encoding="utf-8"))


def colours() -> list[str]:
    return list(vocab()["colours"])


def shapes() -> list[str]:
    return list(vocab()["image"]["shapes"])


def backgrounds() -> list[str]:
    return list(vocab()["image"]["backgrounds"])


def styles() -> list[str]:
    """Background styles, "plain" first (index 0)."""
    return list(vocab()["styles"])


def artists() -> list[dict]:
    """The fictional artists: ``slug``, ``name``, ``style`` and six ``works``."""
    return list(vocab()["artists"])


def artist(slug_or_name: str) -> dict:
    for entry in artists():
        if slug_or_name in (entry["slug"], entry["name"]):
            return entry
    raise KeyError(f"unknown toy artist {slug_or_name!r}; choose from {', '.join(a['slug'] for a in artists())}")


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
    style: str = PLAIN  # the background style the image shows
    style_kind: str = ""  # how the caption names the style ("" when plain): STYLE_WORD, ARTIST, WORK, WORK_HELDOUT
    artist: str = ""  # the artist's name when the caption names the style through an artist or a work
    style_keyword: str = ""  # the style word, artist name or work title as written
    style_keyword_start: int = -1
    style_frame: str = ""
    style_index: int = 0  # which work
    colour2: str = ""  # a composition's right-hand object (colour/shape above are the left-hand one's)
    shape2: str = ""

    @property
    def style_keyword_span(self) -> tuple[int, int]:
        return self.style_keyword_start, self.style_keyword_start + len(self.style_keyword)

    @property
    def keyword_span(self) -> tuple[int, int]:
        return self.keyword_start, self.keyword_start + len(self.keyword)

    @property
    def keyword_is_colour_word(self) -> bool:
        """Colour words and synonyms, not implicit referents."""
        return self.kind in (EXPLICIT, SYNONYM)

    def recoloured(self, colour: str) -> Caption:
        """The same caption with another colour's word, synonym or referent in the same slot."""
        plain = make_caption(
            self.kind, colour, self.shape, self.prefix, self.suffix, self.background, self.word_index, self.frame
        )
        return (
            plain
            if not self.style_kind
            else with_style(plain, self.style_kind, self.artist or self.style, self.style_frame, self.style_index)
        )

    def restyled(self, style_or_artist: str) -> Caption:
        """The same caption with another style word or artist (and the same work slot) in the same place."""
        plain = make_caption(
            self.kind, self.colour, self.shape, self.prefix, self.suffix, self.background, self.word_index, self.frame
        )
        return with_style(plain, self.style_kind, style_or_artist, self.style_frame, self.style_index)


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


def with_style(caption: Caption, style_kind: str, style_or_artist: str, frame: str, index: int = 0) -> Caption:
    """``caption`` with a style phrase appended: ``frame`` filled with a style word (STYLE_WORD), an artist's name
    (ARTIST), or the artist's ``index``-th work (WORK, WORK_HELDOUT)."""
    if style_kind == STYLE_WORD:
        style, name, keyword, slot = style_or_artist, "", style_or_artist, "{W}"
    elif style_kind in (ARTIST, WORK, WORK_HELDOUT):
        entry = artist(style_or_artist)
        style, name = entry["style"], entry["name"]
        keyword, slot = (name, "{A}") if style_kind == ARTIST else (entry["works"][index], "{T}")
    else:
        raise ValueError(f"unknown style kind {style_kind!r}")
    if slot not in frame:
        raise ValueError(f"style frame {frame!r} has no {slot} slot")
    start = len(caption.text) + frame.index(slot)
    text = caption.text + frame.replace(slot, keyword)
    return dataclasses.replace(
        caption,
        text=text,
        style=style,
        style_kind=style_kind,
        artist=name,
        style_keyword=keyword,
        style_keyword_start=start,
        style_frame=frame,
        style_index=index,
    )


def style_slots(style_kind: str) -> list[tuple[str, int]]:
    """(frame, work index) pairs for a style kind: seen works = A×A and B×B, held out = A×B and B×A."""
    frames = vocab()["style_frames"]
    if style_kind == STYLE_WORD:
        return [(frame, 0) for frame in frames["explicit"]]
    if style_kind == ARTIST:
        return [(frame, 0) for frame in frames["artist"]]
    if style_kind not in (WORK, WORK_HELDOUT):
        raise ValueError(f"unknown style kind {style_kind!r}")
    halves = {"A": range(0, 3), "B": range(3, 6)}
    return [
        (frame, index)
        for frame_half in ("A", "B")
        for work_half in ("A", "B")
        if (frame_half != work_half) == (style_kind == WORK_HELDOUT)
        for frame in frames["work"][frame_half]
        for index in halves[work_half]
    ]


def styled_caption(rng: random.Random, caption: Caption, style_kind: str, style_or_artist: str) -> Caption:
    """``caption`` with a random phrasing of ``style_kind`` for a style word or an artist."""
    frame, index = rng.choice(style_slots(style_kind))
    return with_style(caption, style_kind, style_or_artist, frame, index)


def artist_of_style(style: str) -> dict:
    return next(a for a in artists() if a["style"] == style)


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
    return rng.choice(_caption_pool(kind, colour, shape, background if mentioned else UNMENTIONED))


@functools.lru_cache(maxsize=4096)
def _caption_pool(kind: str, colour: str, shape: str, background: str) -> tuple[Caption, ...]:
    # Cached: the training bank draws a caption for each of ~10^5 images.
    return tuple(c for c in captions_for(kind, colour, shape) if c.background == background)


def sample_training_caption_v2(rng: random.Random, colour: str, shape: str, background: str, style: str) -> Caption:
    """A training caption for a single-object image with a background style: plain images get the v1 mix; a
    styled image's caption names its style by word, artist or seen work (``training_mix_v2.style_mention``)."""
    caption = sample_training_caption(rng, colour, shape, background)
    if style == PLAIN:
        return caption
    mention = vocab()["training_mix_v2"]["style_mention"]
    kind = rng.choices(STYLE_TRAINING_KINDS, weights=[mention["explicit"], mention["artist"], mention["work"]])[0]
    return styled_caption(rng, caption, kind, style if kind == STYLE_WORD else artist_of_style(style)["slug"])


COMPOSE = "compose"


def make_compose_caption(
    left: tuple[str, str], right: tuple[str, str], frame: str, prefix: str = "", suffix: str = "", background: str = UNMENTIONED
) -> Caption:
    """ "a red circle left of a blue square": ``left``/``right`` are (colour, shape); ``frame`` has {L} and {R}."""

    def noun(colour, shape):
        return f"{article(colour)} {colour} {shape}"

    body = frame.replace("{L}", noun(*left)).replace("{R}", noun(*right))
    if frame.startswith("{R}"):
        body = body[0].lower() + body[1:]
    text = prefix + body + suffix.replace("{B}", background)
    return Caption(
        text,
        COMPOSE,
        left[0],
        left[1],
        background,
        keyword="",
        keyword_start=-1,
        prefix=prefix,
        suffix=suffix,
        frame=frame,
        colour2=right[0],
        shape2=right[1],
    )


def sample_compose_caption(rng: random.Random, left: tuple[str, str], right: tuple[str, str], background: str) -> Caption:
    mix = vocab()["training_mix"]
    suffix = rng.choice(vocab()["background_suffixes"][:-1]) if rng.random() < mix["background_mentioned"] else ""
    return make_compose_caption(
        left,
        right,
        rng.choice(vocab()["compose_frames"]),
        rng.choice(vocab()["prefixes"]),
        suffix,
        background if suffix else UNMENTIONED,
    )


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
    style: object = None  # LongTensor [N] indexing styles() (0: plain); None: all plain
    pattern_phase: object = None  # FloatTensor [N, 2], pixels: where the pattern starts (or the rings' centre)

    def __len__(self):
        return len(self.colour)

    def to(self, device):
        return Scenes(**{k: None if v is None else v.to(device) for k, v in self.__dict__.items()})

    def subset(self, index):
        return Scenes(**{k: None if v is None else v[index] for k, v in self.__dict__.items()})


def sample_scenes(
    count: int, generator, colour=None, shape=None, background=None, style=None, radius_px=None, x_range=None
) -> Scenes:
    """Random scenes from a CPU ``torch.Generator`` (so the same seed gives the same data on any device).

    ``colour``/``shape``/``background`` optionally fix those attributes (index tensors or ints).  ``style`` is an
    index tensor or int into ``styles()``; without it the background is plain and nothing more is drawn from the
    generator, so the v1 streams (and the committed data made from them) are unchanged.  ``radius_px`` and
    ``x_range`` (a pixel interval for the centre) place the smaller objects of a composition.
    """
    import torch

    spec = vocab()["image"]
    size = spec["size"]
    low, high = radius_px or spec["radius_px"]

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
    if x_range is not None:
        left, right = x_range
        centre[:, 0] = left + margin + (right - left - 2 * margin) * (centre[:, 0] - margin) / (size - 2 * margin)
    fill_table = torch.tensor([spec["fill_rgb"][c] for c in colours()], dtype=torch.float32)
    background_table = torch.tensor([spec["background_rgb"][b] for b in backgrounds()], dtype=torch.float32)
    fill = fill_table[colour_idx] + spec["fill_jitter"] * (2 * torch.rand(count, 3, generator=generator) - 1)
    back = background_table[background_idx] + spec["background_jitter"] * (2 * torch.rand(count, 3, generator=generator) - 1)
    scenes = Scenes(colour_idx, shape_idx, background_idx, centre, radius, fill.clamp(0, 255), back.clamp(0, 255))
    if style is not None:
        scenes.style = torch.as_tensor(style).expand(count).clone()
        scenes.pattern_phase = size * torch.rand(count, 2, generator=generator)
    return scenes


def sample_compose_scenes(count: int, generator, left=None, right=None, background=None, radius_px=None) -> tuple[Scenes, Scenes]:
    """Two smaller objects, one in each half, on a shared plain background.  ``left``/``right``: optional
    (colour index, shape index) pairs; ``radius_px``: (low, high), the vocabulary's ``compose_radius_px`` unless
    given.  The two objects always differ in colour or shape."""
    import torch

    size = vocab()["image"]["size"]
    radius = radius_px or vocab()["image"]["compose_radius_px"]
    left = left or (None, None)
    right = right or (None, None)
    first = sample_scenes(count, generator, left[0], left[1], background, radius_px=radius, x_range=(0, size / 2))
    second = sample_scenes(count, generator, right[0], right[1], first.background, radius_px=radius, x_range=(size / 2, size))
    same = (first.colour == second.colour) & (first.shape == second.shape)
    if right[0] is None and bool(same.any()):  # redraw the right colour where both objects came out alike
        shift = 1 + torch.randint(len(colours()) - 1, (count,), generator=generator)
        table = torch.tensor([vocab()["image"]["fill_rgb"][c] for c in colours()], dtype=torch.float32)
        jitter = second.fill_rgb - table[second.colour]
        second.colour = torch.where(same, (second.colour + shift) % len(colours()), second.colour)
        second.fill_rgb = (table[second.colour] + jitter).clamp(0, 255)
    second.background_rgb = first.background_rgb
    return first, second


def pattern_masks(scenes: Scenes, size: int):
    """Pattern-on masks [N, size, size] of each scene's background style, on a ``size``-pixel grid (plain: none)."""
    import math

    import torch

    scale = size / vocab()["image"]["size"]
    device = scenes.centre.device
    count = len(scenes)
    if scenes.style is None:
        return torch.zeros(count, size, size, dtype=torch.bool, device=device)
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / scale
    x = coords[None, None, :] + scenes.pattern_phase[:, 0, None, None]
    y = coords[None, :, None] + scenes.pattern_phase[:, 1, None, None]
    table = vocab()["styles"]
    period = {name: float(table[name].get("period", 1)) for name in table}
    masks = {
        PLAIN: torch.zeros(count, size, size, dtype=torch.bool, device=device),
        "striped": (y % period["striped"]) < 2,
        "barred": (x % period["barred"]) < 2,
        "hatched": ((x + y) % period["hatched"]) < 2.2,
        "dotted": ((x % period["dotted"] - period["dotted"] / 2) ** 2 + (y % period["dotted"] - period["dotted"] / 2) ** 2)
        <= 1.6**2,
        "checkered": (
            (
                torch.div(x, period["checkered"] / 2, rounding_mode="floor")
                + torch.div(y, period["checkered"] / 2, rounding_mode="floor")
            )
            % 2
        )
        == 0,
        "gridded": ((x % period["gridded"]) < 1.5) | ((y % period["gridded"]) < 1.5),
        "ringed": (
            (
                (coords[None, None, :] - scenes.pattern_phase[:, 0, None, None]) ** 2
                + (coords[None, :, None] - scenes.pattern_phase[:, 1, None, None]) ** 2
            ).sqrt()
            % period["ringed"]
        )
        < 2,
        "wavy": ((y + 2.0 * torch.sin(2 * math.pi * x / 12)) % period["wavy"]) < 2,
    }
    stacked = torch.stack([masks[name].expand(count, size, size) for name in styles()])  # [S, N, H, W]
    return stacked[scenes.style, torch.arange(count, device=device)]


def pattern_rgb(scenes: Scenes):
    """The pattern's colour for each scene: a mid grey on its background, far from every fill colour."""
    import torch

    spec = vocab()["image"]
    table = torch.tensor([spec["pattern_rgb"][b] for b in backgrounds()], dtype=torch.float32, device=scenes.centre.device)
    return table[scenes.background]


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
    if scenes.style is not None:
        pattern = pattern_masks(scenes, big)[:, None].float()
        back = pattern * pattern_rgb(scenes)[:, :, None, None] / 255 + (1 - pattern) * back
    image = inside * fill + (1 - inside) * back
    return F.avg_pool2d(image, spec["supersample"])


def render_compose(left: Scenes, right: Scenes):
    """Images [N, 3, 32, 32] of two objects on the left scenes' background."""
    import torch.nn.functional as F

    spec = vocab()["image"]
    big = spec["size"] * spec["supersample"]
    inside_left = shape_masks(left, big)[:, None].float()
    inside_right = shape_masks(right, big)[:, None].float()
    image = left.background_rgb[:, :, None, None] / 255
    image = inside_left * left.fill_rgb[:, :, None, None] / 255 + (1 - inside_left) * image
    image = inside_right * right.fill_rgb[:, :, None, None] / 255 + (1 - inside_right) * image
    return F.avg_pool2d(image, spec["supersample"])


def render_batches(scenes: Scenes, batch_size: int = 4096):
    """``render`` in chunks, so a large bank never needs the full supersampled tensor at once."""
    import torch

    return torch.cat([render(scenes.subset(slice(i, i + batch_size))) for i in range(0, len(scenes), batch_size)])


def render_compose_batches(left: Scenes, right: Scenes, batch_size: int = 4096):
    """``render_compose`` in chunks, as ``render_batches`` does for single scenes."""
    import torch

    chunks = [
        render_compose(left.subset(slice(i, i + batch_size)), right.subset(slice(i, i + batch_size)))
        for i in range(0, len(left), batch_size)
    ]
    size = vocab()["image"]["size"]
    return torch.cat(chunks) if chunks else torch.zeros(0, 3, size, size)


def compose_halves(images):
    """The left and right halves of composition images, each centred on a 32×32 canvas of the image's own
    background (the median of its top and bottom rows), so the single-object shape classifier and colour detector
    can read each object alone.  Returns two tensors [N, 3, 32, 32]."""
    import torch

    size = images.shape[-1]
    half, quarter = size // 2, size // 4
    border = torch.cat([images[:, :, 0, :], images[:, :, -1, :]], dim=-1)  # [N, 3, 2·W]
    background = border.median(dim=-1).values[:, :, None, None]
    out = []
    for columns in (slice(0, half), slice(half, size)):
        canvas = background.expand(-1, -1, size, size).clone()
        canvas[:, :, :, quarter : quarter + half] = images[:, :, :, columns]
        out.append(canvas)
    return out[0], out[1]
