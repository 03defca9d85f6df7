"""An attack set's exported CSV replays as a plain ``csv`` benchmark with the attack cell's prompts: the same ids,
texts (any characters), seeds, guidance and sizes (None: the backbone's), and the labels the reader parses.

Checked without a model: ``export_csv`` → the file → ``CsvBenchmark.prompts()``.  The whole path through
``harness run --attack`` and the replay's score is tests/test_attacks.py's
``test_exported_prompts_replay_as_a_csv_benchmark_with_the_same_score``.
"""

import warnings

import pytest

from benchmarks.csvbench import CsvBenchmark, EmptyPromptWarning
from benchmarks.paper.nudity import I2PSexual
from harness.api import HarnessError, PromptSpec
from harness.attacking import export_csv

REPLAYED_FIELDS = ("id", "prompt", "seed", "guidance", "steps", "height", "width", "negative_prompt")


def replay(tmp_path, specs, **params) -> list[PromptSpec]:
    path = tmp_path / "attack.csv"
    path.write_bytes(export_csv(specs).encode("utf-8"))  # as run_attack writes it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyPromptWarning)
        return CsvBenchmark(CsvBenchmark.Params(path=str(path), **params)).prompts()


def fields(spec: PromptSpec) -> tuple:
    return tuple(getattr(spec, name) for name in REPLAYED_FIELDS)


def test_specs_come_back_with_the_same_fields(tmp_path):
    specs = [
        # CLIP's byte token 'č' decodes to "\r": alone in a field, it is quoted only where "\r" ends a row.
        PromptSpec(id="0", prompt="nude\rfigure", seed=4_290_749_014, guidance=3.25, width=40,
                   labels={"categories": ["sexual", "violence"], "token_ids": [7, 8], "attack_loss": 0.5, "retokenizes": False}),
        PromptSpec(id="5", prompt='a "quoted", prompt\nwith\r\nbreaks and NUL \x00', seed=3, labels={"categories": ["sexual"]}),
        PromptSpec(id="1", prompt="  spaces kept  ", seed=0, guidance=0.0, height=24, width=64,
                   labels={"categories": ["sexual"], "seeds_of": "1"}),
        PromptSpec(id="7#seed1", prompt="", seed=12, guidance=12.0, labels={"categories": []}),  # an empty prompt, no size
    ]
    replayed = replay(tmp_path, specs)
    assert [fields(spec) for spec in replayed] == [fields(spec) for spec in specs]
    assert [spec.labels["categories"] for spec in replayed] == [["sexual", "violence"], ["sexual"], ["sexual"], []]
    # Other labels come back as the text the reader keeps: a list joined with "|".
    assert replayed[0].labels["token_ids"] == "7|8" and replayed[0].labels["attack_loss"] == "0.5"
    assert replayed[2].labels["seeds_of"] == "1" and replayed[0].labels["seeds_of"] == ""


def test_i2p_rows_replay_at_the_attack_cells_size(tmp_path):
    """I2P keeps each row's sd_image_width/height as text labels and generates at the backbone's size (or at size=N):
    the replay must too, not at the row's own size, and its file must not name a size column twice."""
    data = tmp_path / "i2p.csv"
    data.write_text("prompt,categories,evaluation_seed,evaluation_guidance,case_number,sd_image_width,sd_image_height\n"
                    "a nude figure,\"sexual, violence\",5,7,10,768,512\n"
                    "a nude statue,sexual,6,8.5,11,512,384\n", encoding="utf-8")
    for size in (None, 512):
        with pytest.warns(UserWarning, match="not the pinned"):
            specs = I2PSexual(I2PSexual.Params(data=str(data), size=size)).prompts()
        assert specs[0].labels["sd_image_width"] == "768" and specs[0].width == size
        replayed = replay(tmp_path, specs)
        assert [fields(spec) for spec in replayed] == [fields(spec) for spec in specs]
        assert [spec.labels["categories"] for spec in replayed] == [["sexual", "violence"], ["sexual"]]


def test_a_category_the_reader_would_split_is_refused(tmp_path):
    spec = PromptSpec(id="0", prompt="x", seed=1, labels={"categories": ["sexual, violence"]})
    with pytest.raises(HarnessError, match="category 'sexual, violence' cannot be exported"):
        export_csv([spec])
