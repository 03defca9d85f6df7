"""Image grids: methods (rows) × prompts (columns) of one benchmark, taken from the image cache.

An image is **flagged** when one of its benchmark's erasure metrics (the per-image rates and counts: NudeNet ASR,
Q16, toy-asr) counts it, judged from the value the run stored for it; nothing is re-scored.  A lower-is-better
per-image score or distance (a plugin's, say) flags nothing: it is above 0 for nearly every image, and says how far
an image is, not that it shows the concept.  Flagged images
are blurred unless ``blur=False`` (``harness report --no-blur``), so a grid can go on a slide without
showing explicit content by accident.  An image of such a benchmark that has no stored raw score (its
scorer's plugin is not loaded now, or the score was made by another scorer version) is blurred too: when in
doubt, hide it.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness import integrity
from harness.results import Result
from harness.seeds import SEEDS_OF
from reports.leaderboard import Leaderboard

CELL = 128  # pixels per image in the grid
GAP = 8
LABEL_WIDTH = 190
FONT_SIZE = 13
FRAME = (213, 94, 0)  # Okabe–Ito vermillion: marks flagged images
MAX_PROMPT_LINES = 3


@dataclass
class Cell:
    method: str
    spec_id: str
    prompt: str
    path: Path
    flagged: bool  # counted by an erasure metric, or not scored (see ``unscored``)
    unscored: bool = False
    blurred: bool = False
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # where the image lies in the grid (left, top, right, bottom)
    damaged: str = ""  # what is wrong with the cached image (missing, truncated, failed hash); "" when intact


@dataclass
class Grid:
    benchmark: str
    methods: list[str]
    spec_ids: list[str]
    cells: list[Cell]
    flagged_by: list[str] = field(default_factory=list)  # metric names that decided the flags
    image: object = None  # PIL image
    prompts: list[str] = field(default_factory=list)  # the prompt ids shown, in column order (each with all its seeds)
    prompt_of: dict[str, str] = field(default_factory=dict)  # spec id -> its prompt's id ("3#seed1" -> "3")
    seeds: dict[str, int] = field(default_factory=dict)  # spec id -> the seed its images were made with
    in_benchmark_order: bool = True  # False: the store has no record of the benchmark's order; columns go by prompt id

    def cell(self, method: str, spec_id: str) -> Cell:
        return next(c for c in self.cells if c.method == method and c.spec_id == spec_id)

    @property
    def seeds_per_prompt(self) -> int:
        return max((list(self.prompt_of.values()).count(p) for p in self.prompts), default=1)

    def column_label(self, spec_id: str) -> str:
        """"#<prompt id>", and the seed when a prompt has several images in the grid."""
        label = f"#{self.prompt_of.get(spec_id, spec_id)}"
        if self.seeds_per_prompt > 1 and spec_id in self.seeds:
            label += f" seed {self.seeds[spec_id]}"
        return label

    def column_prompts(self) -> list[tuple[str, str]]:
        """(column label, the whole prompt) per column: the grid's image wraps a prompt to a few lines (and draws a
        script as boxes where no installed font has it); an HTML report lists them whole, as text, beside it."""
        prompt = {c.spec_id: c.prompt for c in self.cells}
        return [(self.column_label(sid), prompt.get(sid, "")) for sid in self.spec_ids]


# --------------------------------------------------------------------------- which images, which are flagged


def _natural(spec_id: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", spec_id)]


def benchmark_order(values: dict, benchmark: str) -> list[str]:
    """``benchmark``'s spec ids in the benchmark's own order: a run stores each result's per-image values in the order
    of its prompts (``Store.result_values`` keeps it).  Empty where no per-image value was stored (set-level only)."""
    return list(dict.fromkeys(row["spec_id"] for (_, _, bench, _), rows in values.items() if bench == benchmark for row in rows))


def latest_images(store, board: Leaderboard, results: list[Result]) -> dict[tuple[str, str], dict[str, dict]]:
    """(method, benchmark) → spec id → image row, from the newest run that made it, for the board's cells."""
    run_order = list(dict.fromkeys(row.run_id for row in results))
    methods = {row.method for row in board.rows}
    benches = {c.benchmark for c in board.columns if not c.is_average}
    images: dict[tuple[str, str], dict[str, dict]] = {}
    rows = [r for r in store.run_images() if r["run_id"] in run_order and r["method"] in methods and r["benchmark"] in benches]
    for row in sorted(rows, key=lambda r: run_order.index(r["run_id"])):
        images.setdefault((row["method"], row["benchmark"]), {})[row["spec_id"]] = row
    return images


# Units whose per-image value above 0 says the image shows the concept: a rate's 1, a count of detections.  A score or
# a distance (lower is better, e.g. a plugin's distance to a reference image) is above 0 for nearly every image.
FLAGGING_UNITS = ("rate", "count", None)  # None: a result stored before units were (every such erasure metric counted)


def _flag_metrics(board: Leaderboard, benchmark: str) -> list[str]:
    """The benchmark's per-image erasure metrics ("scorer:id") that can flag a single image: rates and counts."""
    return [c.metric for c in board.columns if c.benchmark == benchmark and c.role == "erasure" and not c.is_average
            and not c.set_level and c.unit in FLAGGING_UNITS]


class Flagger:
    """Decides from the per-image values stored with each result whether an image is flagged (no plugin is loaded)."""

    def __init__(self, store):
        self.values = store.result_values()

    def flags(self, benchmark: str, metrics: list[str], image_rows: list[dict]) -> dict[str, tuple[bool, bool]]:
        """image key → (flagged, unscored) for ``image_rows`` (rows of ``Store.run_images``) of ``benchmark``.

        An image is flagged when any of ``metrics`` stored a value above 0 for it (1 for a flagged image of a rate);
        one with no stored value at all (a category it is not in counts as no value) is unscored, and shown as flagged.
        """
        result = {row["image_key"]: (False, False) for row in image_rows}
        if not metrics:
            return result
        wanted = set(metrics)
        scored, flagged = set(), set()
        for (_, _, bench, metric), rows in self.values.items():
            if bench != benchmark or metric not in wanted:
                continue
            for row in rows:
                if row["image_key"] in result and row["value"] is not None:
                    scored.add(row["image_key"])
                    if row["value"] > 0:
                        flagged.add(row["image_key"])
        return {key: (key in flagged or key not in scored, key not in scored) for key in result}


def collect(store, board: Leaderboard, results: list[Result], prompts: int = 6) -> list[Grid]:
    """One grid per benchmark of the board: its first ``prompts`` prompts, each with all its seeds, × every method that
    ran it.  "First" in the benchmark's order where the store records it, else by prompt id (``Grid.in_benchmark_order``)."""
    images = latest_images(store, board, results)
    flagger = Flagger(store)
    names = {c.metric: c.name for c in board.columns}
    grids = []
    for benchmark in dict.fromkeys(c.benchmark for c in board.columns if not c.is_average):
        methods = [row.method for row in board.rows if (row.method, benchmark) in images]
        if not methods:
            continue
        specs = {sid: json.loads(row["spec"]) for m in methods for sid, row in images[m, benchmark].items()}
        stored = [sid for sid in benchmark_order(flagger.values, benchmark) if sid in specs]
        order = stored + sorted(set(specs) - set(stored), key=_natural)
        prompt_of = {sid: str((specs[sid].get("labels") or {}).get(SEEDS_OF) or sid) for sid in order}
        shown = list(dict.fromkeys(prompt_of[sid] for sid in order))[:prompts]
        # Every seed of a shown prompt, next to each other (a stable sort keeps the seeds' own order).
        spec_ids = sorted((sid for sid in order if prompt_of[sid] in shown), key=lambda sid: shown.index(prompt_of[sid]))
        rows = [images[m, benchmark][sid] for m in methods for sid in spec_ids if sid in images[m, benchmark]]
        metrics = _flag_metrics(board, benchmark)
        flags = flagger.flags(benchmark, metrics, rows)
        cells = []
        for row in rows:
            spec = json.loads(row["spec"])
            flagged, unscored = flags[row["image_key"]]
            # From the image key, not the row's path column: a copied store's path could point anywhere.
            path = store.image_path(row["image_key"])
            damaged = store.files.inspect(path, adopt=integrity.image_decodes) or ""
            if damaged:  # its scores were stored before the damage; the grid must not pass it off as the image
                integrity.warn_damaged("cached image", path, damaged, "its grid cell says so; `harness run` with the same "
                                       "options (or `harness check --repair`) regenerates it")
            cells.append(Cell(row["method"], row["spec_id"], spec.get("prompt", ""), path, flagged, unscored, damaged=damaged))
        grids.append(Grid(benchmark, methods, spec_ids, cells, [names[m] for m in metrics], prompts=shown,
                          prompt_of={sid: prompt_of[sid] for sid in spec_ids},
                          seeds={sid: specs[sid]["seed"] for sid in spec_ids if specs[sid].get("seed") is not None},
                          in_benchmark_order=all(sid in stored for sid in spec_ids)))
    return grids


# --------------------------------------------------------------------------- drawing


class Typeface:
    """DejaVu Sans from matplotlib's own fonts (the same face as the plots, on every machine), with fallbacks for the
    characters it lacks (a multilingual prompt's CJK, say): each such character is drawn in the first font
    installed on this machine that has it.  PIL draws one font per call, so a line is drawn as runs of characters
    that share a font, on one baseline.  A character no installed font has is drawn as DejaVu's box (the HTML report
    lists every prompt as text)."""

    def __init__(self, size: int = FONT_SIZE):
        from matplotlib import font_manager

        self.size = size
        self.primary = (str(font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"))), 0)
        self._fonts: dict[tuple[str, int], object] = {}

    def font(self, face: tuple[str, int]):
        from PIL import ImageFont

        if face not in self._fonts:
            try:
                self._fonts[face] = ImageFont.truetype(face[0], self.size, index=face[1])
            except OSError:  # a font PIL cannot scale to this size: the character is drawn as DejaVu's box instead
                self._fonts[face] = self.font(self.primary) if face != self.primary else ImageFont.load_default()
        return self._fonts[face]

    def face_for(self, character: str) -> tuple[str, int]:
        if character.isspace() or ord(character) in _codepoints(*self.primary):
            return self.primary
        return _fallback_face(ord(character)) or self.primary

    def runs(self, text: str) -> list[tuple[tuple[str, int], str]]:
        """``text`` cut into (font face, characters) runs."""
        runs: list[tuple[tuple[str, int], str]] = []
        for character in text:
            face = self.face_for(character)
            if runs and runs[-1][0] == face:
                runs[-1] = (face, runs[-1][1] + character)
            else:
                runs.append((face, character))
        return runs

    def getlength(self, text: str) -> float:
        return sum(self.font(face).getlength(run) for face, run in self.runs(text))

    def draw(self, pen, xy: tuple[float, float], text: str, fill) -> None:
        """Draw ``text`` with its top-left at ``xy`` (as ``ImageDraw.text``), every run on the primary font's baseline."""
        x, top = xy
        baseline = top + self.font(self.primary).getmetrics()[0]
        for face, run in self.runs(text):
            font = self.font(face)
            pen.text((x, baseline), run, font=font, fill=fill, anchor="ls")
            x += font.getlength(run)


@functools.cache
def _typeface(size: int) -> Typeface:
    """One ``Typeface`` per size for the whole report: its fonts are loaded once, not per grid or missing image."""
    return Typeface(size)


# Broad-coverage font files tried first (a name containing one of these), before any other installed font: what
# Debian/Ubuntu (fonts-noto-cjk, fonts-droid-fallback, fonts-wqy-zenhei), macOS and Windows install for CJK.
FALLBACK_FILES = ("NotoSansCJK", "SourceHanSans", "DroidSansFallback", "wqy-zenhei", "Arial Unicode", "PingFang", "Hiragino",
                  "msyh", "malgun")


@functools.cache
def _fallback_face(codepoint: int) -> tuple[str, int] | None:
    """The first installed font (file, face) with a glyph for ``codepoint``; a collection's (.ttc) first face."""
    return next(((path, 0) for path in _installed_fonts() if codepoint in _codepoints(path, 0)), None)


@functools.cache
def _installed_fonts() -> tuple[str, ...]:
    """The font files fontconfig and the usual folders list on this machine, broad-coverage CJK files first.
    matplotlib's bundled "Last Resort" font is left out: it maps every character to a placeholder box."""
    from matplotlib import font_manager

    def rank(path: str) -> tuple[int, str]:
        return next((i for i, name in enumerate(FALLBACK_FILES) if name.lower() in path.lower()), len(FALLBACK_FILES)), path

    return tuple(sorted((p for p in font_manager.findSystemFonts() if "lastresort" not in p.lower()), key=rank))


@functools.cache
def _codepoints(path: str, index: int) -> frozenset[int]:
    """The characters a font file has scalable glyphs for (its best Unicode cmap); empty if it cannot be read or has
    bitmaps only: a colour-emoji font (Noto Color Emoji, Apple Color Emoji) holds fixed-size bitmaps, which PIL
    refuses to open at the grid's sizes ("invalid pixel size")."""
    from fontTools.ttLib import TTFont

    try:
        with TTFont(path, fontNumber=index, lazy=True) as font:
            if not any(table in font for table in ("glyf", "CFF ", "CFF2")):
                return frozenset()
            return frozenset(font.getBestCmap() or ())
    except Exception:  # a damaged or unsupported font file is simply not a candidate
        return frozenset()


def _wrap(text: str, font, width: int, max_lines: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if font.getlength(trial) <= width:
            line = trial
            continue
        if line:
            lines.append(line)
        line = word
        while font.getlength(line) > width:  # a word longer than the cell
            cut = len(line)
            while cut > 1 and font.getlength(line[:cut]) > width:
                cut -= 1
            lines.append(line[:cut])
            line = line[cut:]
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and font.getlength(last + "…") > width:
            last = last[:-1]
        lines[-1] = last + "…"
    return lines


def fit_image(path: Path, size: int = CELL, damaged: str = ""):
    """The cached image scaled into a ``size`` square: crisp (nearest) when enlarged, smooth when shrunk."""
    from PIL import Image, ImageDraw

    if damaged or not Path(path).exists():  # pruned or damaged: say so in the cell instead of failing the report
        canvas = Image.new("RGB", (size, size), (235, 235, 235))
        text = "image missing" if not Path(path).exists() else "image damaged"
        _typeface(FONT_SIZE - 2).draw(ImageDraw.Draw(canvas), (8, size // 2 - 8), text, fill=(90, 90, 90))
        return canvas
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    scale = size / max(image.size)
    resample = Image.NEAREST if scale >= 2 else Image.LANCZOS
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return canvas


def blur(image):
    """Heavy enough that nothing is recognisable: a radius of an eighth of the image, applied twice."""
    from PIL import ImageFilter

    radius = max(image.size) / 8
    return image.filter(ImageFilter.GaussianBlur(radius)).filter(ImageFilter.GaussianBlur(radius))


def draw(grid: Grid, blur_flagged: bool = True) -> Grid:
    """Render ``grid.image``; each cell's ``box`` and ``blurred`` say where and how its image was drawn."""
    from PIL import Image, ImageDraw

    font, small = _typeface(FONT_SIZE), _typeface(FONT_SIZE - 2)
    line_height = FONT_SIZE + 4
    prompts = {c.spec_id: c.prompt for c in grid.cells}
    prompt_lines = {sid: _wrap(prompts.get(sid) or "(empty prompt)", small, CELL, MAX_PROMPT_LINES) for sid in grid.spec_ids}
    header = GAP + line_height * (1 + max(len(lines) for lines in prompt_lines.values())) + GAP
    columns, rows = len(grid.spec_ids), len(grid.methods)
    width = LABEL_WIDTH + columns * (CELL + GAP) + GAP
    legend = _legend(grid, blur_flagged)
    legend_lines = _wrap(legend, small, width - 2 * GAP, 4) if legend else []
    height = header + rows * (CELL + GAP) + GAP + len(legend_lines) * line_height + (GAP if legend_lines else 0)
    canvas = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(canvas)

    for column, spec_id in enumerate(grid.spec_ids):
        left = LABEL_WIDTH + column * (CELL + GAP)
        (font if grid.seeds_per_prompt == 1 else small).draw(pen, (left, GAP), grid.column_label(spec_id), fill="black")
        for index, line in enumerate(prompt_lines[spec_id]):
            small.draw(pen, (left, GAP + line_height * (index + 1)), line, fill=(60, 60, 60))

    for row, method in enumerate(grid.methods):
        top = header + row * (CELL + GAP)
        for index, line in enumerate(_wrap(method, font, LABEL_WIDTH - 2 * GAP, 4)):
            font.draw(pen, (GAP, top + CELL // 2 - line_height + index * line_height), line, fill="black")
        for column, spec_id in enumerate(grid.spec_ids):
            cell = next((c for c in grid.cells if c.method == method and c.spec_id == spec_id), None)
            if cell is None:
                continue
            left = LABEL_WIDTH + column * (CELL + GAP)
            image = fit_image(cell.path, damaged=cell.damaged)
            cell.blurred = cell.flagged and blur_flagged
            if cell.blurred:
                image = blur(image)
            canvas.paste(image, (left, top))
            cell.box = (left, top, left + CELL, top + CELL)
            if cell.flagged:
                pen.rectangle((left - 3, top - 3, left + CELL + 2, top + CELL + 2), outline=FRAME, width=3)

    legend_top = header + rows * (CELL + GAP) + GAP // 2
    for index, line in enumerate(legend_lines):
        small.draw(pen, (GAP, legend_top + index * line_height), line, fill=(60, 60, 60))
    grid.image = canvas
    return grid


def flagged_by_text(grid: Grid) -> str:
    """Which metrics flag images: "ASR", or "Q16 (any of 8 metrics)" for a multi-category benchmark."""
    from reports.plots import common_prefix

    names = list(dict.fromkeys(grid.flagged_by))
    if not names:
        return "the safety scorer"
    if len(names) < 3:
        return " or ".join(names)
    return f"{common_prefix(names).strip() or 'its metrics'} (any of {len(names)} metrics)"


def _legend(grid: Grid, blur_flagged: bool) -> str:
    flagged = [c for c in grid.cells if c.flagged]
    if not flagged:
        return ""
    by = flagged_by_text(grid)
    unscored = any(c.unscored for c in flagged)
    what = f"Framed: flagged by {by}" + (" (or not scored)" if unscored else "")
    if blur_flagged:
        return f"{what}; blurred. `harness report --no-blur` shows them unblurred."
    return f"{what}; shown unblurred (--no-blur)."
