"""Prompt CSVs in the community's layout, and the generic ``csv`` benchmark.

Most erasure papers ship prompts as CSV files with ESD's columns::

    prompt, evaluation_seed, evaluation_guidance, case_number,
    [sd_image_width, sd_image_height], [categories], ...anything else

The Hugging Face copy of I2P (AIML-TUDA/i2p, ``i2p_benchmark.csv``) names the
per-row seed and guidance ``sd_seed`` and ``sd_guidance_scale``; the generic
``csv`` benchmark reads those too.

``read_prompt_csv`` turns such a file into ``PromptSpec``s.  It uses the stdlib
``csv`` module rather than pandas on purpose: pandas would turn the empty I2P
prompt into NaN and integer columns with a gap into floats, while ``csv`` hands
back every cell as the exact text in the file.  Quoted fields with embedded
newlines and CRLF line ends are handled by opening the file with
``newline=""``, as the ``csv`` documentation requires.

Every problem is a ``HarnessError`` with a one-line message that names the
file and, for a bad cell, the row (1-based, not counting the header) and the
file line it starts on.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from harness.api import MAX_GUIDANCE, MAX_SEED, Benchmark, HarnessError, PromptSpec, sha256_file
from harness.validate import check_field, param

DEFAULT_GUIDANCE = 7.5


class EmptyPromptWarning(UserWarning):
    """An empty prompt is legal (I2P case 2260 has one); it is generated unconditioned."""


@dataclass(frozen=True)
class Columns:
    """Which column of the file holds what.  ``None``: the file has no such column, the default applies."""

    prompt: str = "prompt"
    seed: str | None = "evaluation_seed"
    guidance: str | None = "evaluation_guidance"
    case_number: str | None = "case_number"
    width: str | None = "sd_image_width"
    height: str | None = "sd_image_height"
    categories: str | None = "categories"


@dataclass(frozen=True)
class CsvTable:
    """The raw cells of a CSV file, with the line on which each row starts (for error messages)."""

    path: Path
    header: list[str]
    rows: list[dict[str, str]]
    start_lines: list[int]

    def where(self, index: int) -> str:
        return f"{self.path}, row {index + 1} (line {self.start_lines[index]})"


def read_csv_table(path: str | Path, max_rows: int | None = None) -> CsvTable:
    """Read every cell as text.  A row with the wrong number of cells is an error, blank lines are skipped.

    ``max_rows``: stop after that many rows (the file is read as a stream, so the rest is never parsed).
    """
    path = Path(path)
    try:
        handle = open(path, encoding="utf-8-sig", newline="")  # utf-8-sig drops a byte-order mark if there is one
    except FileNotFoundError:
        raise HarnessError(f"prompt file {path} does not exist") from None
    except IsADirectoryError:
        raise HarnessError(f"prompt file {path} is a directory, not a CSV file") from None
    rows: list[dict[str, str]] = []
    start_lines: list[int] = []
    with handle:
        reader = csv.reader(handle, strict=True)
        previous_line = 0
        try:
            header = next(reader, None)
            if header is None:
                raise HarnessError(f"prompt file {path} is empty (no header line)")
            duplicated = sorted({name for name in header if name and header.count(name) > 1})
            if duplicated:
                raise HarnessError(f"{path}: column(s) {duplicated} appear more than once in the header {header}")
            previous_line = reader.line_num
            for cells in reader:
                if max_rows is not None and len(rows) >= max_rows:
                    break
                start_line = previous_line + 1
                previous_line = reader.line_num
                if not cells:  # a blank line
                    continue
                if len(cells) != len(header):
                    raise HarnessError(
                        f"{path}, row {len(rows) + 1} (line {start_line}): malformed row with {len(cells)} cells "
                        f"where the header has {len(header)}"
                    )
                rows.append(dict(zip(header, cells)))
                start_lines.append(start_line)
        except csv.Error as err:
            raise HarnessError(f"{path}, line {previous_line + 1}: malformed CSV: {err}") from None
        except UnicodeDecodeError as err:
            raise HarnessError(f"{path} is not UTF-8 text: {err}") from None
    return CsvTable(path=path, header=header, rows=rows, start_lines=start_lines)


def require_columns(table: CsvTable, required: Iterable[str]) -> None:
    for column in required:
        if column not in table.header:
            raise HarnessError(f"{table.path} has no column {column!r}; columns found: {table.header}{header_hint(table.header, [column])}")


SEPARATORS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def header_hint(header: list[str], wanted: Iterable[str]) -> str:
    """Why a header that lacks the ``wanted`` columns may still hold them: another separator than the comma (a
    spreadsheet's export), spaces around a name, or other case; "" when none of these."""
    if len(header) == 1:
        for separator, name in SEPARATORS.items():
            if separator in header[0]:
                return f"; the header looks {name}-separated: save the file comma-separated"
    hints = []
    for column in wanted:
        near = [name for name in header if name != column and name.strip().lower() == column.lower()]
        if near:
            hints.append(f"{near[0]!r} is {column!r} but for {'spaces' if near[0].strip() != near[0] else 'case'}")
    return "; " + "; ".join(hints) + " (rename the column)" if hints else ""


# --------------------------------------------------------------------------- cell parsers


def parse_seed(text: str, where: str) -> int:
    """An exact integer.  ``"42.0"`` (pandas writes integer columns with gaps that way) is accepted, ``"4.5"`` is not.

    Seeds above 2**31 are common in I2P (up to 4,290,749,014); they stay Python
    ints, never pass through a float, and seed ``torch.Generator`` correctly.
    """
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise HarnessError(f"{where}: seed {text!r} is not an integer") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise HarnessError(f"{where}: seed {text!r} is not an integer")
    seed = int(value)
    check_field(PromptSpec, "seed", seed, f"{where}: seed")  # [0, 2**64): torch.Generator takes any uint64
    return seed


def parse_guidance(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise HarnessError(f"{where}: guidance {text!r} is not a number") from None
    check_field(PromptSpec, "guidance", value, f"{where}: guidance")
    return value


def parse_size(text: str, column: str, where: str) -> int:
    try:
        value = int(Decimal(text.strip()))
        exact = Decimal(text.strip()) == value
    except (InvalidOperation, ValueError):
        exact = False
    if not exact:
        raise HarnessError(f"{where}: {column} {text!r} must be a whole number of pixels (a multiple of 8)")
    check_field(PromptSpec, "width", value, f"{where}: {column}")  # the VAE downsamples by 8
    return value


def parse_categories(text: str) -> list[str]:
    """I2P joins categories with ", "; splitting on "," and stripping also accepts "a,b"."""
    return [token.strip() for token in text.split(",") if token.strip()]


def _int_or_text(text: str):
    try:
        return int(text)
    except ValueError:
        return text


def is_index_column(name: str) -> bool:
    """pandas writes its index as an unnamed first column ("" or "Unnamed: 0"); it carries no information."""
    return name == "" or name.startswith("Unnamed: ")


# --------------------------------------------------------------------------- rows → prompt specs


def specs_from_table(
    table: CsvTable,
    columns: Columns = Columns(),
    *,
    default_seed: int | None = None,
    default_guidance: float = DEFAULT_GUIDANCE,
    steps: int | None = None,
    size: int | None = None,
) -> list[PromptSpec]:
    """One ``PromptSpec`` per row.

    * seed and guidance come from the row when the file has the column, and
      an empty cell there is an error (a default would silently replace a value
      the file meant to give); ``default_seed`` (required then) and
      ``default_guidance`` are for files without the column.  Size comes from
      the row, an empty size cell or no column giving the backbone's default;
      ``size`` forces a square size for every row (TRCE's generator forces 512).
    * ``id`` is the row's ``case_number`` when the file's case numbers are all
      distinct, else the 0-based row position (P4D repeats case numbers).
    * ``labels`` hold the row position, the case number, ``categories`` as a
      list, and every other column as its text, so nothing in the file is lost.
    """
    used = {c for c in (columns.prompt, columns.seed, columns.guidance, columns.width, columns.height) if c}
    require_columns(table, [columns.prompt])
    has = {
        name: bool(name) and name in table.header
        for name in (columns.seed, columns.guidance, columns.width, columns.height, columns.case_number, columns.categories)
    }
    if not has[columns.seed] and default_seed is None:
        require_columns(table, [columns.seed or "evaluation_seed"])

    case_numbers = [row[columns.case_number] for row in table.rows] if has[columns.case_number] else []
    ids_from_case_numbers = bool(case_numbers) and len(set(case_numbers)) == len(case_numbers) and all(case_numbers)

    specs: list[PromptSpec] = []
    empty_rows: list[int] = []
    for index, row in enumerate(table.rows):
        where = table.where(index)
        prompt = row[columns.prompt]
        if not prompt.strip():
            empty_rows.append(index + 1)

        if has[columns.seed]:
            seed_text = row[columns.seed].strip()
            if not seed_text:
                raise HarnessError(f"{where}: empty seed in column {columns.seed!r} (every row of a seed column needs one)")
            seed = parse_seed(seed_text, where)
        else:
            seed = default_seed

        if has[columns.guidance]:
            guidance_text = row[columns.guidance].strip()
            if not guidance_text:
                raise HarnessError(
                    f"{where}: empty guidance in column {columns.guidance!r} (every row of a guidance column needs one)"
                )
            guidance = parse_guidance(guidance_text, where)
        else:
            guidance = float(default_guidance)

        height = width = None
        if size is not None:
            height = width = size
        else:
            if has[columns.width] and row[columns.width].strip():
                width = parse_size(row[columns.width], columns.width, where)
            if has[columns.height] and row[columns.height].strip():
                height = parse_size(row[columns.height], columns.height, where)

        labels: dict = {"row": index}
        if has[columns.case_number]:
            labels["case_number"] = _int_or_text(row[columns.case_number])
        if has[columns.categories]:
            labels["categories"] = parse_categories(row[columns.categories])
        for name, value in row.items():
            if name in used or name in labels or is_index_column(name) or name in (columns.case_number, columns.categories):
                continue
            labels[name] = value

        spec_id = case_numbers[index] if ids_from_case_numbers else str(index)
        specs.append(
            PromptSpec(
                id=spec_id, prompt=prompt, seed=seed, guidance=guidance, steps=steps, height=height, width=width, labels=labels
            )
        )

    if empty_rows:
        shown = ", ".join(map(str, empty_rows[:5])) + (", …" if len(empty_rows) > 5 else "")
        warnings.warn(
            f"{table.path}: {len(empty_rows)} empty prompt(s) (row {shown}); generated unconditioned",
            EmptyPromptWarning,
            stacklevel=2,
        )
    return specs


def read_prompt_csv(path: str | Path, columns: Columns = Columns(), required: Iterable[str] = (), max_rows: int | None = None,
                    **options) -> list[PromptSpec]:
    """Read a prompt CSV into specs.  ``required`` lists columns that must exist beyond the prompt (and seed)."""
    table = read_csv_table(path, max_rows=max_rows)
    require_columns(table, required)
    return specs_from_table(table, columns, **options)


# --------------------------------------------------------------------------- the generic benchmark


# Per-row seed and guidance columns, in the order they are looked for: ESD's layout, then the Hugging Face I2P layout.
SEED_COLUMNS = ("evaluation_seed", "sd_seed")
GUIDANCE_COLUMNS = ("evaluation_guidance", "sd_guidance_scale")


def find_column(table: CsvTable, chosen: str | None, candidates: tuple[str, ...], what: str) -> str | None:
    """The file's ``what`` column: the one the user named, else the one of ``candidates`` it has (two is ambiguous)."""
    if chosen:
        require_columns(table, [chosen])
        return chosen
    present = [name for name in candidates if name in table.header]
    if len(present) > 1:
        raise HarnessError(f"{table.path} has both {present[0]!r} and {present[1]!r}: say which with csv:{what}_column=NAME")
    return present[0] if present else None


def split_list(text: str | None) -> tuple[str, ...]:
    """``"a|b"`` → ``("a", "b")``: lists inside ``--bench name:key=value`` use ``|`` because ``,`` separates keys."""
    return tuple(part.strip() for part in (text or "").split("|") if part.strip())


class CsvBenchmark(Benchmark):
    """Any prompt CSV in the community's layout: ``--bench csv:path=FILE[,concepts=sexual][,metrics=nudenet:asr|nudenet:asr-rece]``.

    Per-row seeds and guidance are read from ``evaluation_seed`` / ``evaluation_guidance``, else from the Hugging Face
    I2P layout's ``sd_seed`` / ``sd_guidance_scale``; ``seed=`` and ``guidance=`` are only for a file without such a
    column.  Reports name the benchmark by ``label=``, else by the file's name (the full selection stays in the
    stored label, the CSV and JSON outputs).
    """

    name = "csv"
    description = (
        "any prompt CSV with the community's columns (prompt, evaluation_seed, evaluation_guidance, case_number, ...) "
        "or the Hugging Face I2P layout (sd_seed, sd_guidance_scale)"
    )
    metrics = ("nudenet:asr",)

    @dataclass
    class Params:
        path: str | None = None  # the CSV file (required)
        concepts: str | None = None  # the concept set this file tests, e.g. "sexual"
        metrics: str = "nudenet:asr"  # "<scorer>:<metric>" joined by "|"
        prompt_column: str = "prompt"  # e.g. "adv_prompt" for MMA's file
        seed: int | None = param(None, ge=0, lt=MAX_SEED + 1)  # seed for every row of a file without a seed column (MMA, Ring-A-Bell use 42)
        guidance: float | None = param(None, ge=0, le=MAX_GUIDANCE)  # guidance for every row of a file without a guidance column (unset: 7.5)
        seed_column: str | None = None  # the per-row seed column (unset: evaluation_seed, else sd_seed)
        guidance_column: str | None = None  # the per-row guidance column (unset: evaluation_guidance, else sd_guidance_scale)
        size: int | None = param(None, ge=8, multiple_of=8)  # force a square size for every row instead of the row's sd_image_width/height
        label: str = ""  # the name reports show for this benchmark (default: the file's name without its folder)

    def __init__(self, params=None):
        super().__init__(params)
        # Instance attributes shadow the class defaults, so the engine reads them the same way.
        self.concepts = self.params.concepts
        self.metrics = split_list(self.params.metrics) or type(self).metrics

    def _path(self) -> Path:
        if not self.params.path:
            raise HarnessError("benchmark 'csv' needs a file: --bench csv:path=FILE.csv")
        return Path(self.params.path).expanduser()

    def prompts(self) -> list[PromptSpec]:
        p = self.params
        table = read_csv_table(self._path(), max_rows=self.prompt_limit)
        seed_column = find_column(table, p.seed_column, SEED_COLUMNS, "seed")
        guidance_column = find_column(table, p.guidance_column, GUIDANCE_COLUMNS, "guidance")
        # A value given here never silently replaces the file's own, nor is silently ignored for them.
        if seed_column and p.seed is not None:
            raise HarnessError(f"{table.path} has per-row seeds (column {seed_column!r}); seed= is for files without one: drop it")
        if guidance_column and p.guidance is not None:
            raise HarnessError(
                f"{table.path} has per-row guidance (column {guidance_column!r}); guidance= is for files without one: drop it"
            )
        if not seed_column and p.seed is None:
            raise HarnessError(
                f"{table.path} has no seed column ({' or '.join(map(repr, SEED_COLUMNS))}); columns found: {table.header}"
                f"{header_hint(table.header, SEED_COLUMNS)}; "
                "give every row one seed with csv:seed=N, or name the column with csv:seed_column=NAME"
            )
        columns = Columns(prompt=p.prompt_column, seed=seed_column, guidance=guidance_column)
        return specs_from_table(
            table, columns, default_seed=p.seed, default_guidance=DEFAULT_GUIDANCE if p.guidance is None else p.guidance, size=p.size
        )

    def source(self) -> dict:
        path = self._path()
        if not path.is_file():
            raise HarnessError(f"prompt file {path} does not exist")
        return {"path": str(path.resolve()), "sha256": sha256_file(path)}
