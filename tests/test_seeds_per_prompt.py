"""--seeds-per-prompt K: K images per prompt with derived seeds; intervals and paired tests then work on prompts."""

import json
from pathlib import Path

import pytest

from harness import stats
from harness.api import HarnessError, PromptSpec
from harness.cli import main
from harness.seeds import SEEDS_OF, derived_seed, repeat_seeds
from harness.store import Store
from reports import uncertainty

BRIGHTNESS_PATH = str(Path(__file__).parent / "plugins" / "brightness.py")


def test_repeat_seeds_keeps_the_benchmark_seed_first_and_derives_the_rest():
    specs = [PromptSpec(id="a", prompt="x", seed=7), PromptSpec(id="b", prompt="y", seed=8)]
    assert repeat_seeds(specs, 1) == specs
    repeated = repeat_seeds(specs, 3)
    assert [s.id for s in repeated] == ["a", "a#seed1", "a#seed2", "b", "b#seed1", "b#seed2"]
    assert [s.seed for s in repeated[:3]] == [7, derived_seed(7, 1), derived_seed(7, 2)]
    assert len({s.seed for s in repeated}) == 6 and all(0 <= s.seed < 2**32 for s in repeated)
    assert {s.labels[SEEDS_OF] for s in repeated} == {"a", "b"}
    assert repeat_seeds(specs[:1], 3)[1].seed == repeated[1].seed  # independent of position and --limit
    with pytest.raises(HarnessError):
        repeat_seeds(specs, 0)


def values(prompt_values: dict[str, list[float]]) -> list[dict]:
    return [{"prompt_id": p, "seed": k, "value": v, "spec_id": f"{p}#{k}", "image_key": f"{p}{k}"}
            for p, vs in prompt_values.items() for k, v in enumerate(vs)]


def test_with_several_seeds_per_prompt_rates_use_the_effective_n_and_tests_use_prompt_means():
    a = values({str(i): [1.0, 1.0, 0.0] if i < 20 else [0.0, 0.0, 0.0] for i in range(40)})
    b = values({str(i): [0.0, 0.0, 0.0] for i in range(40)})
    found = uncertainty.interval(40 / 120, a)
    # deff = [40/39 · 40 · 1² / 120²] / [(1/3)(2/3)/120] = 1.538…, so the 120 images are worth 78.
    assert found.method.startswith("Wilson score interval on the effective n 78 of 120") and "3 seeds per prompt" in found.method
    assert (found.low, found.high) == pytest.approx(stats.wilson(40 / 120 * 78.0, 78.0), abs=1e-3)
    wilson = uncertainty.interval(40 / 120, [dict(v, prompt_id=f"{v['prompt_id']}/{v['seed']}") for v in a])
    assert wilson.method == "Wilson score interval" and (found.high - found.low) > (wilson.high - wilson.low)  # clusters widen it
    record = uncertainty.compare(a, b)
    assert record["test"].startswith("Wilcoxon signed-rank on per-prompt means") and "discordant" not in record
    assert record["n_pairs"] == 120 and record["p_value"] < 1e-3


def test_a_run_with_two_seeds_per_prompt_reuses_the_first_seeds_images(tmp_path, capsys):
    out = str(tmp_path / "out")
    common = ["--plugin", BRIGHTNESS_PATH, "run", "--model", "tiny", "--methods", "sd", "--bench", "fixed:count=3", "--out", out, "--no-progress"]
    assert main(common) == 0
    store = Store(out)
    before = store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    capsys.readouterr()
    assert main([*common, "--seeds-per-prompt", "2"]) == 0
    printed = capsys.readouterr()
    assert "fixed:count=3: 3 prompts × 2 seeds," in printed.out + printed.err  # the plan counts prompts, not images
    after = store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    assert (before, after) == (3, 6)  # only the three new seeds were generated
    runs = [r[0] for r in store.db.execute("SELECT id FROM runs ORDER BY created")]
    assert len(set(runs)) == 2  # K is part of the run's identity (K = 1 keeps its old id)
    capsys.readouterr()
    assert main(["--plugin", BRIGHTNESS_PATH, "report", "--out", out, "--runs", runs[-1], "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    dark = next(r for r in records if r["metric"] == "brightness:dark")
    assert dark["n"] == 6 and "2 seeds per prompt" in dark["interval"]
    stored = store.result_values(runs=[runs[-1]])
    prompts = [v["prompt_id"] for v in next(iter(stored.values()))]
    assert sorted(prompts) == ["0", "0", "1", "1", "2", "2"]


def test_a_rate_at_zero_with_several_seeds_counts_each_prompt_once_and_never_collapses_to_a_point():
    zero = values({str(i): [0.0] * 4 for i in range(100)})
    found = uncertainty.interval(0.0, zero)
    assert (found.low, found.high) == pytest.approx(stats.wilson(0, 100)) and found.high > 0.03  # [0, 3.7%], not [0, 0]
    full = uncertainty.interval(1.0, values({str(i): [1.0] * 4 for i in range(100)}))
    assert (full.low, full.high) == pytest.approx(stats.wilson(100, 100))


def test_the_effective_n_lies_between_the_prompts_and_the_images():
    identical = [1.0] * 30 + [0.0] * 90  # 40 prompts × 3 identical seeds: worth 40 images
    prompts = [str(i // 3) for i in range(120)]
    assert stats.effective_sample_size(identical, prompts) == pytest.approx(40.0)
    alternating = [float(i % 3 == 0) for i in range(120)]  # every prompt 1 of 3: less spread than independent images
    assert stats.effective_sample_size(alternating, prompts) == pytest.approx(120.0)  # deff floored at 1
    assert stats.effective_sample_size(identical, [str(i) for i in range(120)]) == 120.0  # one seed each


def test_the_trade_off_interval_of_several_benchmarks_counts_prompts_not_seeds():
    # 10 prompts × 10 identical seeds, 3 unsafe, as two benchmarks: each is worth 10 images, the equal-weight mean 20.
    bench = values({str(i): [float(i < 3)] * 10 for i in range(10)})
    found = uncertainty.mean_of_benchmarks_interval([bench, bench])
    assert (found.low, found.high) == pytest.approx(stats.wilson(0.3 * 20, 20)) and "effective n 20" in found.method
    one_seed = values({str(i): [float(i < 30)] for i in range(100)})
    wider = uncertainty.mean_of_benchmarks_interval([bench, bench])
    narrower = uncertainty.mean_of_benchmarks_interval([one_seed, one_seed])
    assert narrower.high - narrower.low < wider.high - wider.low
    zeros = uncertainty.mean_of_benchmarks_interval([values({str(i): [0.0] for i in range(32)})] * 3)
    assert zeros.low == 0.0 and zeros.high == pytest.approx(stats.wilson(0, 96)[1])  # 3 × 32 prompts, never [0, 0]
    scores = [values({str(i): [0.1 * i + 0.01 * k for k in range(5)] for i in range(10)})] * 2
    assert uncertainty.mean_of_benchmarks_interval(scores).method.startswith("stratified bootstrap over prompts")


def test_a_prompt_id_column_in_a_csv_is_a_plain_label_not_a_grouping_of_seeds(tmp_path, capsys):
    path = tmp_path / "prompts.csv"
    path.write_text("prompt,evaluation_seed,evaluation_guidance,case_number,prompt_id\n"
                    + "".join(f"prompt number {i},{i},7.5,{i},7\n" for i in range(4)))
    out = str(tmp_path / "out")
    assert main(["--plugin", BRIGHTNESS_PATH, "run", "--model", "tiny", "--methods", "sd", "--bench",
                 f"csv:path={path},metrics=brightness:dark", "--out", out, "--no-progress"]) == 0
    (values_of_cell,) = Store(out).result_values().values()
    assert len({v["prompt_id"] for v in values_of_cell}) == 4  # four prompts, not four seeds of prompt "7"
    capsys.readouterr()
    assert main(["--plugin", BRIGHTNESS_PATH, "report", "--out", out, "--json"]) == 0
    (record,) = [r for r in json.loads(capsys.readouterr().out) if r["metric"] == "brightness:dark"]
    assert record["interval"] == "Wilson score interval"


def test_compare_with_several_seeds_prints_rates_in_percent_and_counts_the_prompts(tmp_path, capsys):
    out = str(tmp_path / "out")
    edits = str(Path(__file__).parent / "plugins" / "edits.py")
    assert main(["--plugin", BRIGHTNESS_PATH, "--plugin", edits, "run", "--model", "tiny", "--methods", "sd,scale-keys", "--bench",
                 "fixed:count=3", "--seeds-per-prompt", "2", "--out", out, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["--plugin", BRIGHTNESS_PATH, "--plugin", edits, "compare", "--out", out, "sd", "scale-keys"]) == 0
    (line,) = [text for text in capsys.readouterr().out.splitlines() if text.startswith("fixed:count=3") and "↓" in text and "%" in text]
    assert " pp" in line and "6 pairs of 3 prompts" in line and "Wilcoxon signed-rank on per-prompt means" in line
