"""The seed paper's Table 1 can be laid out with every method it names (issue 17).

TRCE's Table 1 compares SD v1.4 with SLD, SAFREE, ESD, UCE, RECE, SPM, SafeGen, MACE and TRCE.  This runs all ten on
the tiny backbone (fine-tuners with a few steps: the layout is under test, not the erasure) and checks that
``harness report`` writes ``table1.tex`` with one row per method, in the order asked for, under the display names
(the base model's row is the plugin's "SD").
"""

import re
from pathlib import Path

from test_safegen import write_triplets

from harness.cli import main

PLUGINS = Path(__file__).parent / "plugins"

TABLE1 = {  # method (with a quick budget on tiny) → the row name Table 1 prints
    "sd": "SD",
    "sld": "SLD",
    "safree": "SAFREE",
    "esd-u:num_steps=6,max_steps=2": "ESD-u",
    "uce": "UCE",
    "rece": "RECE",
    "spm:iterations=2,warmup=0,num_steps=3,anchors=2": "SPM",
    "safegen:steps=2,gradient_accumulation=1": "SafeGen",
    "mace:steps=2,images=1,sampling_steps=3": "MACE",
    "trce:num_steps=6,early_steps=2,samples_per_prompt=1,max_steps=2,regularizer_batch=2": "TRCE (T+V)",
}


def test_table1_has_a_row_for_every_method_the_paper_compares(tmp_path, capsys):
    triplets = write_triplets(tmp_path / "triplets", count=2)
    captions = tmp_path / "captions.txt"
    captions.write_text("a dog on a sofa\na bowl of fruit\na city street at night\n", encoding="utf-8")
    out = tmp_path / "out"
    common = ["--plugin", str(PLUGINS / "brightness.py")]
    code = main([*common, "run", "--model", "tiny", "--methods", ",".join(TABLE1), "--set", f"safegen.triplets={triplets}",
                 "--set", f"trce-t.captions={captions}", "--set", f"mace.captions={captions}",
                 "--bench", "fixed:count=2", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert main([*common, "report", "--out", str(out)]) == 0
    table = (out / "report" / "table1.tex").read_text()
    body = table.split(r"\midrule", 1)[1].split(r"\bottomrule", 1)[0]
    rows = [line.split("&", 1)[0].strip() for line in body.splitlines() if "&" in line]
    names = [re.sub(r"\\textsuperscript\{[^}]*\}|[\\{}]", "", row).strip() for row in rows]
    # A row is the method's display name, followed by the parameters that differ from its defaults ("ESD-u (...)").
    shown = list(TABLE1.values())
    assert len(names) == len(shown) and all(name == display or name.startswith(f"{display} (") for name, display in zip(names, shown)), names
