"""LaTeX tables in booktabs style, shaped like the TRCE paper's Table 1 and Table 2, sized for a two-column page.

* Table 1 (``table1.tex``): column groups "User prompt" (erasure on ordinary benchmarks), "Adversarial prompt"
  (erasure on adversarial benchmarks), each with **one primary metric per benchmark** (the first erasure metric
  its plugin lists), and "Knowledge preservation" (FID, CLIP-S ...); rates as percentages with two decimals
  ("34.69\\%"), other numbers with the column's decimals; "--" where there is no value, and for the base
  model's set-level scores (its FID against its own images is 0 by construction: the paper prints "-").
* The other erasure metrics go to ``table1-secondary.tex``, in the same layout.
* Table 2, one per multi-category benchmark: a column per category (rates with one decimal, "21.2\\%"),
  then the preservation columns.

Names are the plugins' display names ("Ring-A-Bell", "TRCE (T+V)").  Every table is a ``table*`` (both columns of
a two-column paper) whose tabular is scaled down to the text width if, and only if, it is wider.  Best in bold
and second underlined only where a paired test separates them (``reports.leaderboard.RANK_RULE``, stated in
every caption); the base model row is the reference and is never marked.  Needs ``booktabs`` and ``graphicx``;
``tables.tex`` is a standalone two-column document that inputs them all.
"""

from __future__ import annotations

import hashlib
import re

from harness import names
from reports.leaderboard import Column, Leaderboard, format_value, n_range_text
from reports.plots import category_labels

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "–": "--",
    "↓": r"$\downarrow$",
    "↑": r"$\uparrow$",
}


def escape(text: str) -> str:
    """``text`` as LaTeX prints it literally."""
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text))


def _arrow(column: Column) -> str:
    return r"$\downarrow$" if column.lower_is_better else r"$\uparrow$"


def _cell(board: Leaderboard, row_index: int, column: Column, decimals: int, marks) -> str:
    row = board.rows[row_index]
    value = row.values[board.columns.index(column)]
    if value is None or (row.base and column.set_level):
        return "--"  # no value; or the base model's distance to its own images (0 by construction)
    text = format_value(value, column, decimals=decimals, percent_sign=r"\%")
    ranks, ties = marks
    place = ranks.get(row_index)
    if place == 1:
        return rf"\textbf{{{text}}}"
    if place == 2:
        return rf"\underline{{{text}}}"
    if row_index in ties:
        return rf"{text}$^{{\approx}}$"
    return text


RULE_CAPTION = (
    r"Best in \textbf{bold}, second \underline{underlined}, only where a paired test on the same prompts and seeds "
    r"(exact McNemar for rates with one image per prompt, otherwise Wilcoxon signed-rank, on per-prompt means when a "
    r"prompt has several seeds) separates a method from every method below it at $p<0.05$, in the direction of the "
    r"means, Holm-corrected over those comparisons; $^{\approx}$: not separable from the place's leader (tied); "
    r"set-level columns (FID) "
    r"are not marked. The base model is the reference and is not ranked. "
)


def _table(board: Leaderboard, groups: list[tuple[str, list[Column], list[str]]], decimals: list[int], caption: str, label: str,
           required: list[Column] | None = None) -> str:
    """A booktabs ``table*``: ``groups`` are (group title, columns, column headers); ``decimals`` per column.

    A method with no value in any of ``required`` (default: all columns) has no row.  The tabular is scaled to the
    text width only when it is wider, so a small table keeps its natural size.
    """
    columns = [c for _, cols, _ in groups for c in cols]
    wanted = [board.columns.index(c) for c in (required or columns)]
    headers = [h for _, _, hs in groups for h in hs]
    marks = [(board.ranks(board.columns.index(c)), board.ties(board.columns.index(c))) for c in columns]
    lines = [
        r"\begin{table*}[t]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        r"\small",
        r"\setlength{\tabcolsep}{4pt}",
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        r"\begin{tabular}{l" + "c" * len(columns) + "}",
        r"\toprule",
    ]
    if any(title for title, _, _ in groups):
        spans, rules, start = [], [], 2
        for title, cols, _ in groups:
            spans.append(rf"\multicolumn{{{len(cols)}}}{{c}}{{{title}}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + len(cols) - 1}}}")
            start += len(cols)
        lines.append(" & " + " & ".join(spans) + r" \\")
        lines.append("".join(rules))
    lines.append("Method & " + " & ".join(headers) + r" \\")
    lines.append(r"\midrule")
    shown = [i for i, row in enumerate(board.rows) if any(row.values[j] is not None for j in wanted)]
    for position, row_index in enumerate(shown):
        row = board.rows[row_index]
        cells = [_cell(board, row_index, c, d, m) for c, d, m in zip(columns, decimals, marks)]
        lines.append(escape(row.display or row.method) + " & " + " & ".join(cells) + r" \\")
        following = board.rows[shown[position + 1]] if position + 1 < len(shown) else None
        if row.base and following is not None and not following.base:
            lines.append(r"\midrule")  # the reference row stands apart from the methods
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table*}"]
    return "\n".join(lines) + "\n"


def _erasure_group(title: str, columns: list[Column]) -> tuple[str, list[Column], list[str]]:
    """Headed by benchmark when every column shows the same metric (the caption names it), else "benchmark metric"."""
    names = {c.name for c in columns}
    benches = [c.benchmark for c in columns]
    plain = len(names) == 1 and len(set(benches)) == len(benches)
    headers = [escape(c.title) if plain else escape(f"{c.title} {c.name}") for c in columns]
    return title, columns, headers


def _erasure_caption(columns: list[Column]) -> str:
    described = []
    for name in dict.fromkeys(c.name for c in columns):
        sample = next(c for c in columns if c.name == name)
        unit = r"\%, " if sample.rate else ""
        described.append(f"{escape(name)} ({unit}lower is better)")
    return "Erasure: " + ", ".join(described) + ". " if described else ""


def _preservation_group(columns: list[Column]) -> tuple[str, list[Column], list[str]]:
    names = [c.name for c in columns]
    headers = [
        f"{escape(c.name if names.count(c.name) == 1 else f'{c.title} {c.name}')} {_arrow(c)}" + (r" (\%)" if c.rate else "")
        for c in columns
    ]
    return "Knowledge preservation", columns, headers


def _caption_n(columns: list[Column]) -> str:
    """The n behind the cells: once when every column shares it ("Each cell: n = 32 images"), else per column."""
    shown = [c for c in columns if c.n_range is not None]
    if not shown:
        return ""
    texts = {escape(n_range_text(c)) for c in shown}  # escape() writes the range dash as "--"
    if len(texts) == 1:
        return f"Each cell: $n$ = {texts.pop()} images. "  # the range dash "--" is an en dash only outside math mode
    return "Images per cell ($n$): " + ", ".join(f"{escape(c.title)} {escape(n_range_text(c))}" for c in shown) + ". "


def _caption_sources(board: Leaderboard) -> str:
    runs = sorted({run for row in board.rows for run in row.runs})
    return f"From erasure-harness run{'s' if len(runs) > 1 else ''} {escape(', '.join(runs))}." if runs else ""


def _erasure_table(board: Leaderboard, erasure: list[Column], attacked: list[Column], label: str, what: str) -> str | None:
    user = [c for c in erasure if not c.adversarial]
    adversarial = [c for c in erasure if c.adversarial]
    preservation = board.preservation_columns()
    groups = []
    if user:
        groups.append(_erasure_group("User prompt", user))
    if adversarial:
        groups.append(_erasure_group("Adversarial prompt", adversarial))
    if attacked:
        groups.append(_erasure_group("Attacked", attacked))
    if preservation:
        groups.append(_preservation_group(preservation))
    if not groups:
        return None
    columns = [c for _, cols, _ in groups for c in cols]
    caption = what + _erasure_caption(user + adversarial) + _caption_n(columns) + RULE_CAPTION + _caption_sources(board)
    return _table(board, groups, [2] * len(columns), caption, label)


def table1(board: Leaderboard) -> str | None:
    """Erasure on user and adversarial prompts (one primary metric per benchmark) and knowledge preservation."""
    return _erasure_table(board, [c for c in board.erasure_columns() if c.primary],
                          [c for c in board.attack_columns() if c.primary], "tab:erasure", "")


def table1_secondary(board: Leaderboard) -> str | None:
    """The erasure metrics that are not their benchmark's primary one, in Table 1's layout."""
    # An attack cell's other metrics too: Table 1 shows each cell's primary one, as for its source benchmark.
    secondary = [c for c in board.erasure_columns() if not c.primary]
    attacked = [c for c in board.attack_columns() if not c.primary]
    if not secondary and not attacked:
        return None
    return _erasure_table(board, secondary, attacked, "tab:erasure-secondary", "Secondary erasure metrics. ")


def table2(board: Leaderboard, benchmark: str) -> str:
    """Per-category rates of a multi-category benchmark, then preservation (the paper's Table 2)."""
    categories = board.category_columns(benchmark)
    labels = [escape(label[:1].upper() + label[1:]) for label in category_labels(categories)]
    groups = [("", categories, labels)]
    preservation = board.preservation_columns()
    if preservation:
        _, cols, headers = _preservation_group(preservation)
        groups.append(("", cols, headers))
    columns = [c for _, cols, _ in groups for c in cols]
    name = escape(categories[0].name.split(" ")[0]) if categories else ""
    caption = (
        rf"{name} rates per category on {escape(categories[0].title if categories else benchmark)} (\%, lower is better) and knowledge "
        r"preservation. " + _caption_n(columns) + RULE_CAPTION + _caption_sources(board)
    )
    return _table(board, groups, [1 if c.rate else 2 for c in columns], caption, f"tab:categories-{label_safe(benchmark)}",
                  required=categories)


def label_safe(name: str) -> str:
    """A benchmark label as part of a ``\\label`` key: a CSV benchmark's label may hold ``%``, ``#``, braces or
    backslashes, which end or break the command; everything but letters, digits, ``-`` and ``.`` becomes ``-``, and
    a name that had to change gets 8 hex digits of its sha256, so two labels never share a key (``a b``, ``a-b``)."""
    safe = re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") or "benchmark"
    return safe if safe == name else f"{safe}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"


def document(tables: dict[str, str]) -> str:
    """A standalone two-column document (a CVPR-sized text block) that inputs every table file (``pdflatex tables.tex``)."""
    inputs = "\n".join(rf"\input{{{name}}}" for name in tables)
    return (
        "\\documentclass[twocolumn,10pt]{article}\n"
        "\\usepackage[letterpaper,textwidth=6.875in,textheight=8.875in,columnsep=0.3125in]{geometry}\n"
        "\\usepackage{booktabs}\n"
        "\\usepackage{graphicx}\n"
        "\\begin{document}\n"
        f"{inputs}\n"
        "\\end{document}\n"
    )


def tables(board: Leaderboard, caveats: list[str] = ()) -> dict[str, str]:
    """File name → LaTeX source for every table the board supports; the ``caveats`` (``reports.caveats``) head each
    file as comments, for the author to see and word for the paper, without changing what the table prints."""
    made = {}
    stem = names.FileNames()
    first = table1(board)
    if first:
        made["table1.tex"] = first
    secondary = table1_secondary(board)
    if secondary:
        made["table1-secondary.tex"] = secondary
    for benchmark in board.category_benchmarks():
        made[f"{stem(f'table2-{benchmark}')}.tex"] = table2(board, benchmark)
    comments = "".join(f"% {' '.join(note.split())}\n" for note in caveats)  # one line each: a newline would end the comment
    return {name: comments + source for name, source in made.items()}
