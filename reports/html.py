"""``report.html``: one self-contained file (images inlined as data URIs, no scripts, no external requests)
with the leaderboard, the metric definitions, the plots, the image grids and each run's manifest."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json

from harness import names
from reports.leaderboard import (
    Leaderboard,
    cell_n_text,
    format_cost,
    format_erase_cost,
    format_interval,
    format_value,
    interval_of,
    n_range_text,
    n_text,
    rule_text,
)

CSS = """
body { font: 14px/1.45 "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color: #222; margin: 0 auto; max-width: 1280px; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 20px 0 6px; }
.meta, .note { color: #555; font-size: 13px; }
nav a { margin-right: 14px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { padding: 4px 9px; border-bottom: 1px solid #e4e4e4; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; border-bottom: 2px solid #999; vertical-align: bottom; }
#leaderboard { font-size: 12.5px; }
#leaderboard th { white-space: normal; max-width: 92px; overflow-wrap: break-word; padding: 4px 5px; }
#leaderboard td { padding: 3px 5px; }
#leaderboard td .ci { font-size: 10.5px; }
#leaderboard td.method { white-space: normal; max-width: 150px; }
#leaderboard td.text { max-width: 150px; font-size: 12px; }
#leaderboard td.cost { white-space: normal; min-width: 70px; max-width: 96px; }
.caveats { color: #8a4b00; font-size: 13px; padding-left: 20px; }
.ci, .n { display: block; color: #666; font-size: 11px; font-weight: 400; }
.tie::after { content: " ≈"; color: #666; }
th.group { text-align: center; border-bottom: 1px solid #bbb; background: #fafafa; }
td.method, th.method { text-align: left; font-weight: 600; }
td.text, th.text { text-align: left; white-space: normal; }
tr.base td { background: #f7f7f7; font-style: italic; }
.start { border-left: 1px solid #ccc; }
.best { font-weight: 700; } .second { text-decoration: underline; }
figure { margin: 12px 0 24px; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 13px; max-width: 900px; }
details.prompts { max-width: 900px; font-size: 13px; } details.prompts td:first-child { white-space: nowrap; color: #444; padding-right: 12px; }
pre { background: #f7f7f7; padding: 8px; font-size: 12px; overflow-x: auto; max-height: 420px; }
details { margin: 6px 0 14px; }
"""


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150)
    return buffer.getvalue()


def image_png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _header(column, label: str) -> str:
    arrow = "↓" if column.lower_is_better else "↑"
    unit = " (%)" if column.rate else ""  # the unit once, in the header: cells carry none
    n = n_text(column)
    return f"{_e(label)}{unit} {arrow}" + (f'<span class="n">{_e(n)}</span>' if n else "")


def column_groups(board: Leaderboard) -> list[tuple[str, list[int], list[str]]]:
    """(group title, column indices, header HTML) in the paper's order: user prompts, adversarial prompts
    with their "Adv" average, each multi-category benchmark (one column per category), knowledge preservation."""
    from reports.plots import category_labels, common_prefix

    index = {id(c): i for i, c in enumerate(board.columns)}

    def plain(columns):
        return [index[id(c)] for c in columns], [f"{_e(c.title)}<br>{_header(c, c.name)}" for c in columns]

    erasure = board.erasure_columns()
    adversarial = [c for c in erasure if c.adversarial] + [c for c in board.columns if c.is_average and not c.attack]
    groups = [("User prompt", *plain([c for c in erasure if not c.adversarial])), ("Adversarial prompt", *plain(adversarial)),
              ("Attacked (prompts found against each method)", *plain(board.attack_columns()))]
    for bench in board.category_benchmarks():
        columns = board.category_columns(bench)
        scorer = common_prefix([c.name for c in columns]).strip()
        groups.append((f"{columns[0].title}{': ' + scorer if scorer else ''} per category", [index[id(c)] for c in columns],
                       [_header(c, label) for c, label in zip(columns, category_labels(columns))]))
    groups.append(("Knowledge preservation", *plain(board.preservation_columns())))
    return [group for group in groups if group[1]]


def _cell(board: Leaderboard, row_index: int, index: int, start: bool) -> str:
    row, column = board.rows[row_index], board.columns[index]
    place = board.ranks(index).get(row_index)
    css = {1: "best", 2: "second"}.get(place, "tie" if row_index in board.ties(index) else "")
    value = "–" if row.base and column.set_level else format_value(row.values[index], column, percent_sign="")
    interval = format_interval(interval_of(row, index), column, row.values[index])
    inner = f'<span class="{css}">{_e(value)}</span>' if css else _e(value)
    if interval:
        inner += f'<span class="ci">{_e(interval)}</span>'
    own_n = cell_n_text(row, column)
    if own_n:
        inner += f'<span class="n">{_e(own_n)}</span>'
    return f'<td class="{"start" if start else ""}">{inner}</td>'


def leaderboard_table(board: Leaderboard) -> str:
    """The leaderboard with the paper's column groups; it fits a 1280 px window (headers wrap, intervals below values)."""
    groups = column_groups(board)
    out = ['<div class="scroll"><table id="leaderboard">', '<thead><tr><th class="method"></th>']
    out += [f'<th class="group start" colspan="{len(indices)}">{_e(title)}</th>' for title, indices, _ in groups]
    out.append('<th class="group start" colspan="3">Cost</th></tr><tr><th class="method">method</th>')
    starts = {indices[0] for _, indices, _ in groups}  # a rule between column groups
    for _, indices, headers in groups:
        out += [f'<th class="{"start" if i in starts else ""}" title="{_e(board.columns[i].description)}">{header}</th>'
                for i, header in zip(indices, headers)]
    out.append('<th class="start" title="UNet forward passes per image; plain classifier-free guidance costs 2 per step">'
               'UNet evals / image</th><th title="wall time of the erasure when it was computed, and its device">erasure time</th>'
               '<th class="text">provenance</th></tr></thead><tbody>')
    order = [i for _, indices, _ in groups for i in indices]
    for row_index, row in enumerate(board.rows):
        out.append(f'<tr class="{"base" if row.base else ""}"><td class="method" title="{_e(row.method)}">{_e(row.display or row.method)}</td>')
        out += [_cell(board, row_index, i, i in starts) for i in order]
        time_text, _, evals = format_erase_cost(row).partition(", ")
        device = f" ({row.erase_device})" if row.erase_device and row.erase_seconds is not None else ""
        erase = _e(time_text + device) + (f'<span class="ci">{_e(evals)}</span>' if evals else "")
        out.append(f'<td class="start">{format_cost(row)}</td><td class="cost">{erase}</td>'
                   f'<td class="text">{_e(row.provenance)}</td></tr>')
    out.append("</tbody></table></div>")
    out.append(f'<p class="note">{_e(rule_text(board))} The base model (grey row) is the reference. Rates are percentages of '
               "images; hover a header for the metric's definition.</p>")
    return "".join(out)


def metrics_table(board: Leaderboard) -> str:
    out = ['<div class="scroll"><table id="metrics"><thead><tr><th class="text">benchmark</th><th class="text">metric</th>'
           '<th>images</th><th>better</th><th class="text">kind</th><th class="text">definition</th></tr></thead><tbody>']
    for column in board.columns:
        kind = "average" if column.is_average else f"{column.role}{', adversarial' if column.adversarial else ''}"
        out.append(
            f'<tr><td class="text">{_e(column.benchmark)}</td><td class="text">{_e(column.name)} <code>{_e(column.metric)}</code></td>'
            f'<td>{_e(n_range_text(column))}</td><td>{"lower" if column.lower_is_better else "higher"}</td>'
            f'<td class="text">{_e(kind)}</td><td class="text">{_e(column.description)}</td></tr>'
        )
    out.append("</tbody></table></div>")
    return "".join(out)


def _seeds(seeds: list) -> str:
    if not seeds:
        return ""
    distinct = sorted(set(seeds))
    if len(distinct) == 1:
        return f"{distinct[0]} (all {len(seeds)})"
    # A contiguous run is recognised from its span alone: building range(first, last) would allocate gigabytes for
    # a benchmark whose seeds are spread over 2**32 (the toy world's are).
    contiguous = distinct[-1] - distinct[0] + 1 == len(distinct)
    if contiguous and len(distinct) == len(seeds):
        return f"{distinct[0]}–{distinct[-1]}"
    return f"{len(distinct)} distinct, {distinct[0]}–{distinct[-1]}"


def run_section(run_id: str, manifest: dict | None, anchor: str = "") -> str:
    out = [f'<h3 id="run-{_e(anchor or names.slug(run_id))}">Run {_e(run_id)}</h3>']
    if manifest is None:
        return out[0] + '<p class="note">No manifest.json in the store for this run.</p>'
    backbone = manifest.get("backbone", {})
    versions = manifest.get("versions", {})
    out.append(
        f'<p class="meta">backbone {_e(backbone.get("name", "?"))} ({_e(backbone.get("model") or "built in")}, fingerprint '
        f'<code>{_e(backbone.get("fingerprint", "?"))}</code>) on {_e(manifest.get("device", "?"))}/{_e(manifest.get("dtype", "?"))}<br>'
        + ", ".join(f"{_e(k)} {_e(v)}" for k, v in versions.items() if v) + "</p>"
    )
    out.append('<div class="scroll"><table><thead><tr><th class="text">benchmark</th><th>prompts</th><th class="text">seeds</th>'
               '<th class="text">prompt file sha256</th><th class="text">metrics</th></tr></thead><tbody>')
    for bench in manifest.get("benchmarks", []):
        source = bench.get("source") or {}
        out.append(
            f'<tr><td class="text">{_e(bench.get("label", ""))}</td><td>{_e(bench.get("prompts", ""))}</td>'
            f'<td class="text">{_e(_seeds(bench.get("seeds", [])))}</td><td class="text"><code>{_e(source.get("sha256", "–"))}</code></td>'
            f'<td class="text">{_e(", ".join(bench.get("metrics", [])))}</td></tr>'
        )
    out.append("</tbody></table></div>")
    out.append(f"<details><summary>manifest.json</summary><pre>{_e(json.dumps(manifest, indent=2, sort_keys=True))}</pre></details>")
    return "".join(out)


def grid_prompts(prompts: list[tuple[str, str]]) -> str:
    """The grid's columns as text: each column's label and its whole prompt (selectable, searchable, any script)."""
    if not prompts:
        return ""
    rows = "".join(f"<tr><td>{_e(label)}</td><td>{_e(text) if text else '<i>(empty prompt)</i>'}</td></tr>" for label, text in prompts)
    return f'<details class="prompts"><summary>Prompts, left to right</summary><table><tbody>{rows}</tbody></table></details>'


def render(board: Leaderboard, figures: list[tuple[str, str, bytes]], grids: list[tuple], manifests: dict[str, dict | None],
           title: str = "erasure-harness report", filters: str = "", caveats: list[str] = ()) -> str:
    """The whole report; ``figures`` are (title, caption, PNG bytes), ``grids`` the same and optionally each column's
    (label, prompt) (``Grid.column_prompts``); ``caveats`` (``reports.caveats``) go right under the leaderboard, as in
    the terminal and leaderboard.md."""
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    notes = f'<ul class="caveats">{"".join(f"<li>{_e(note)}</li>" for note in caveats)}</ul>' if caveats else ""
    # Ids from labels go through names.FileNames: safe characters only, and two labels that clean up alike still
    # get distinct ids.  The tables keep the plain ids "leaderboard" and "metrics"; their sections are "section-*".
    anchors = names.FileNames()
    sections = [
        ("leaderboard", "Leaderboard", leaderboard_table(board) + notes),
        ("metrics", "Metrics", metrics_table(board)),
    ]
    if figures:
        sections.append(("plots", "Plots", "".join(
            f'<figure id="plot-{anchors(name)}"><img alt="{_e(name)}" src="{data_uri(png)}"><figcaption>{_e(caption)}</figcaption></figure>'
            for name, caption, png in figures)))
    if grids:
        sections.append(("images", "Images", "".join(
            f'<figure id="grid-{anchors(name)}"><h3>{_e(name)}</h3><img alt="images of {_e(name)}" src="{data_uri(png)}">'
            f"<figcaption>{_e(caption)}</figcaption>{grid_prompts(prompts[0] if prompts else [])}</figure>"
            for name, caption, png, *prompts in grids)))
    sections.append(("runs", "Runs", "".join(run_section(run, manifest, anchors(run)) for run, manifest in manifests.items())))
    nav = "".join(f'<a href="#section-{key}">{_e(heading)}</a>' for key, heading, _ in sections)
    body = "".join(f'<section id="section-{key}"><h2>{_e(heading)}</h2>{content}</section>' for key, heading, content in sections)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><p class=\"meta\">{len(board.rows)} methods × {len(board.columns)} metric columns, "
        f"runs {_e(', '.join(manifests))}; generated {generated} from the store alone{_e(filters)}.</p>"
        f"<nav>{nav}</nav>{body}</body></html>\n"
    )
