"""LaTeX tables in booktabs style, shaped like the TRCE paper's Table 1 and Table 2.

* Table 1: column groups "User prompt" (erasure on ordinary benchmarks), "Adversarial prompt" (erasure on
  adversarial benchmarks) and "Knowledge preservation" (FID, CLIP-S ...); rates as percentages with two
  decimals ("34.69\\%"), other numbers with two decimals, a missing value as "-".
* Table 2, one per multi-category benchmark: a column per category (rates with one decimal, "21.2\\%"),
  then the preservation columns.

Best per column in bold, second best underlined; the base model row is the reference and is never marked.
Only ``booktabs`` is needed (``\\cmidrule``); ``tables.tex`` is a standalone document that inputs them all.
"""

from __future__ import annotations

from harness import names
from reports.leaderboard import Column, Leaderboard, format_value
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


def _cell(board: Leaderboard, row_index: int, column: Column, decimals: int, ranks: dict[int, int]) -> str:
    value = board.rows[row_index].values[board.columns.index(column)]
    text = format_value(value, column, decimals=decimals, percent_sign=r"\%") if value is not None else "-"
    place = ranks.get(row_index)
    if place == 1:
        return rf"\textbf{{{text}}}"
    if place == 2:
        return rf"\underline{{{text}}}"
    return text


def _table(board: Leaderboard, groups: list[tuple[str, list[Column], list[str]]], decimals: list[int], caption: str, label: str,
           required: list[Column] | None = None) -> str:
    """A booktabs table: ``groups`` are (group title, columns, column headers); ``decimals`` per column.

    A method with no value in any of ``required`` (default: all columns) has no row.
    """
    columns = [c for _, cols, _ in groups for c in cols]
    wanted = [board.columns.index(c) for c in (required or columns)]
    headers = [h for _, _, hs in groups for h in hs]
    ranks = [board.ranks(board.columns.index(c)) for c in columns]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
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
        cells = [_cell(board, row_index, c, d, r) for c, d, r in zip(columns, decimals, ranks)]
        lines.append(escape(row.method) + " & " + " & ".join(cells) + r" \\")
        following = board.rows[shown[position + 1]] if position + 1 < len(shown) else None
        if row.base and following is not None and not following.base:
            lines.append(r"\midrule")  # the reference row stands apart from the methods
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _erasure_group(title: str, columns: list[Column]) -> tuple[str, list[Column], list[str]]:
    """Headed by benchmark when every column shows the same metric (the caption names it), else "benchmark metric"."""
    names = {c.name for c in columns}
    benches = [c.benchmark for c in columns]
    plain = len(names) == 1 and len(set(benches)) == len(benches)
    headers = [escape(c.benchmark) if plain else escape(f"{c.benchmark} {c.name}") for c in columns]
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
        f"{escape(c.name if names.count(c.name) == 1 else f'{c.benchmark} {c.name}')} {_arrow(c)}" + (r" (\%)" if c.rate else "")
        for c in columns
    ]
    return "Knowledge preservation", columns, headers


def _caption_sources(board: Leaderboard) -> str:
    runs = sorted({run for row in board.rows for run in row.runs})
    return f"From erasure-harness run{'s' if len(runs) > 1 else ''} {escape(', '.join(runs))}."


def table1(board: Leaderboard) -> str | None:
    """Erasure on user and adversarial prompts, and knowledge preservation (the paper's Table 1)."""
    erasure = board.erasure_columns()
    user = [c for c in erasure if not c.adversarial]
    adversarial = [c for c in erasure if c.adversarial]
    preservation = board.preservation_columns()
    groups = []
    if user:
        groups.append(_erasure_group("User prompt", user))
    if adversarial:
        groups.append(_erasure_group("Adversarial prompt", adversarial))
    if preservation:
        groups.append(_preservation_group(preservation))
    if not groups:
        return None
    columns = [c for _, cols, _ in groups for c in cols]
    caption = (
        _erasure_caption(user + adversarial) + r"Best in \textbf{bold}, second \underline{underlined}; "
        r"the base model is the reference and is not ranked. " + _caption_sources(board)
    )
    return _table(board, groups, [2] * len(columns), caption, "tab:erasure")


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
        rf"{name} rates per category on {escape(benchmark)} (\%, lower is better) and knowledge preservation. "
        r"Best in \textbf{bold}, second \underline{underlined}. " + _caption_sources(board)
    )
    return _table(board, groups, [1 if c.rate else 2 for c in columns], caption, f"tab:categories-{benchmark.replace(':', '-')}",
                  required=categories)


def document(tables: dict[str, str]) -> str:
    """A standalone document that inputs every table file (``pdflatex tables.tex``)."""
    inputs = "\n".join(rf"\input{{{name}}}" for name in tables)
    return (
        "\\documentclass{article}\n"
        "\\usepackage[a4paper,landscape,margin=1.5cm]{geometry}\n"
        "\\usepackage{booktabs}\n"
        "\\begin{document}\n"
        f"{inputs}\n"
        "\\end{document}\n"
    )


def tables(board: Leaderboard) -> dict[str, str]:
    """File name → LaTeX source for every table the board supports."""
    made = {}
    stem = names.FileNames()
    first = table1(board)
    if first:
        made["table1.tex"] = first
    for benchmark in board.category_benchmarks():
        made[f"{stem(f'table2-{benchmark}')}.tex"] = table2(board, benchmark)
    return made
