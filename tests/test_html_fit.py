"""The HTML leaderboard fits a 1280 px window in headless Chromium: the paper's 12-method Table 1 and a toy-shaped board
with secondary metrics, both with intervals under their values."""

import json
import re
import shutil
import subprocess

import pytest
from report_fixtures import paper_results, per_image_values, toy_results

from reports import html, leaderboard

PROBE = """<script>
window.addEventListener("load", () => {
  // The table box itself reports the container's width even when its cells overflow: measure the cells.
  const table = document.getElementById("leaderboard");
  const rows = [...table.querySelectorAll("tr")];
  const right = Math.max(...rows.map(row => row.lastElementChild.getBoundingClientRect().right));
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({right: right, left: table.getBoundingClientRect().left, window: window.innerWidth, rows: rows.length});
  document.body.appendChild(probe);
});
</script></body>"""


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None



def test_cells_carry_units_once_and_intervals():
    results = toy_results()
    board = leaderboard.build(results, values=per_image_values(results))
    table = html.leaderboard_table(board)
    assert "ASR (%) ↓" in table and "%</td>" not in table and "%<span" not in table  # the unit is in the header only
    assert table.count('class="ci"') == sum(1 for row in board.rows for i in row.intervals if i is not None and i.known)
    assert "Explicit" in table and "Held-out implicit" in table and ">SD<" in table  # display names
    assert "erasure time" in table and "UNet evals / image" in table


@pytest.mark.parametrize("make", [paper_results, toy_results], ids=["paper-table1", "toy-4x5"])
def test_leaderboard_fits_1280_px(make, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    results = make()
    board = leaderboard.build(results, values=per_image_values(results))
    page = tmp_path / "report.html"
    page.write_text(html.render(board, [], [], {"run-paper": None}).replace("</body>", PROBE))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1000", "--virtual-time-budget=5000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    assert probe["window"] == 1280 and probe["rows"] == len(board.rows) + 2
    assert probe["left"] >= 0 and probe["right"] <= 1280, probe  # the last column (provenance) is on screen


def test_every_format_gives_each_cell_its_n():
    """A uniform n goes in the header once; where one method was run on fewer prompts, the header gives the range and
    every cell of that column names its own n (a number without its n is not a result)."""
    import dataclasses

    from reports import latex

    results = [
        dataclasses.replace(r, n=48) if r.method == "uce" and r.benchmark == "toy-explicit" else r
        for r in toy_results(methods=("sd", "uce", "trce-t"))
    ]
    board = leaderboard.build(results, values=per_image_values(results))
    explicit = next(c for c in board.columns if c.benchmark == "toy-explicit" and c.metric == "toy:toy-asr")
    synonym = next(c for c in board.columns if c.benchmark == "toy-synonym" and c.metric == "toy:toy-asr")
    assert (explicit.n, explicit.n_range, synonym.n, synonym.n_range) == (None, (48, 100), 100, (100, 100))

    markdown = leaderboard.to_markdown(board)
    assert "| toy-explicit ASR (%) ↓ n=48–100 |" in markdown and "| toy-synonym ASR (%) ↓ n=100 |" in markdown
    uce_line = next(line for line in markdown.splitlines() if line.startswith("| uce |"))
    assert uce_line.split(" | ")[1].endswith("n=48") and "n=" not in uce_line.split(" | ")[3]  # synonym: header only
    terminal = leaderboard.to_terminal(board, width=400)
    assert "ASR (%) ↓ n=48–100" in terminal and "ASR (%) ↓ n=100" in terminal and " n=48 " in terminal + " "
    table = html.leaderboard_table(board)
    assert '<span class="n">n=48–100</span>' in table and '<span class="n">n=48</span>' in table
    rows = {row["method"]: row for row in json.loads(leaderboard.to_json(board, []))["rows"]}
    assert rows["uce"]["n"][explicit.key] == 48 and rows["sd"]["n"][explicit.key] == 100
    caption = latex.table1(board)
    assert "Images per cell ($n$): " in caption and "48--100" in caption
    assert "Each cell: $n$ = 100 images." in latex.table1(leaderboard.build(toy_results(), values=per_image_values(toy_results())))
