"""The paper's benchmarks on small synthetic CSVs with the exact upstream headers (tests/fixtures/*_sample.csv)."""

import csv
import json
import warnings
from pathlib import Path

import pytest

from benchmarks.csvbench import EmptyPromptWarning, read_csv_table
from benchmarks.data import UPSTREAMS, UnpinnedDataWarning
from benchmarks.paper.art import ArtKelly, ArtVanGogh
from benchmarks.paper.coco import Coco, subset_csv_bytes, subset_positions
from benchmarks.paper.nudity import MMA, P4D, I2PSexual, RingABellText, UnlearnDiff
from benchmarks.paper.unsafe import I2PAll
from harness.api import HarnessError

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def quiet_and_isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnpinnedDataWarning)
        warnings.simplefilter("ignore", EmptyPromptWarning)
        yield


def bench(cls, fixture, **params):
    return cls(cls.Params(data=str(FIXTURES / fixture), **params))


def test_fixture_headers_are_the_upstream_headers():
    for key, fixture in [
        ("i2p", "i2p_sample.csv"),
        ("mma", "mma_sample.csv"),
        ("p4d", "p4d_sample.csv"),
        ("ring-a-bell", "ring_a_bell_sample.csv"),
        ("unlearndiff", "unlearndiff_sample.csv"),
        ("coco30k", "coco_sample.csv"),
        ("art-famous", "art_famous_sample.csv"),
        ("art-niche", "art_niche_sample.csv"),
    ]:
        assert tuple(read_csv_table(FIXTURES / fixture).header) == UPSTREAMS[key].header, key


# --------------------------------------------------------------------------- nudity


def test_i2p_sexual_subset_by_category_token():
    specs = bench(I2PSexual, "i2p_sample.csv").prompts()
    # rows 0, 2, 5, 7, 9 have "sexual" among their comma-separated categories
    assert [s.id for s in specs] == ["0", "2", "5", "7", "9"]
    assert all("sexual" in s.labels["categories"] for s in specs)
    two = specs[1]
    assert two.labels["categories"] == ["sexual", "harassment"]
    assert (two.seed, two.guidance) == (4290749014, 12.0)  # seed > 2**31
    assert (two.width, two.height) == (None, None) and two.labels["sd_image_height"] == "384"  # the backbone's size, as TRCE
    assert specs[3].seed == 2**31 - 1 and specs[3].guidance == 1.0
    assert I2PSexual.concepts == "sexual" and I2PSexual.metrics == ("nudenet:asr",)


def test_i2p_all_keeps_every_row_and_its_quirks():
    b = bench(I2PAll, "i2p_sample.csv")
    with pytest.warns(EmptyPromptWarning, match="1 empty prompt"):
        specs = b.prompts()
    assert len(specs) == 10
    empty = specs[3]
    assert empty.prompt == "" and empty.labels["categories"] == ["illegal activity"]  # legal, generated unconditioned
    newline = specs[4]
    assert newline.prompt == "a crowded street\nat night, photo"
    assert (newline.guidance, newline.seed, newline.width, newline.height) == (255.0, 2**31, None, None)
    assert specs[6].labels["categories"] == ["shocking", "self-harm"]
    assert b.concepts == "unsafe"
    assert "q16:inappropriate-illegal-activity" in b.metrics and b.metrics[-1] == "q16:inappropriate"


def test_i2p_crlf_copy_reads_the_same(tmp_path):
    crlf = tmp_path / "I2P_prompts_sexual.csv"  # TRCE ships the sexual subset with CRLF line ends
    crlf.write_bytes((FIXTURES / "i2p_sample.csv").read_bytes().replace(b"\n", b"\r\n"))
    lf_specs = bench(I2PSexual, "i2p_sample.csv").prompts()
    crlf_specs = I2PSexual(I2PSexual.Params(data=str(crlf))).prompts()
    assert [(s.id, s.seed, s.guidance, s.labels["categories"]) for s in crlf_specs] == [
        (s.id, s.seed, s.guidance, s.labels["categories"]) for s in lf_specs
    ]


def test_forced_size_and_row_sizes():
    specs = bench(I2PSexual, "i2p_sample.csv", size=512).prompts()
    assert {(s.width, s.height) for s in specs} == {(512, 512)}
    rows = bench(I2PAll, "i2p_sample.csv", row_sizes=True).prompts()  # RECE's protocol: each row at its own size
    assert [(s.width, s.height) for s in rows][2:7] == [(512, 384), (512, 512), (448, 512), (512, 512), (128, 128)]
    with pytest.raises(HarnessError, match="size= and row_sizes=true contradict"):
        bench(I2PSexual, "i2p_sample.csv", size=512, row_sizes=True)


def test_mma_adv_prompts_verbatim_with_seed_42():
    specs = bench(MMA, "mma_sample.csv").prompts()
    assert [s.prompt for s in specs][:2] == [
        "<|startoftext|>beach sunny ok tokens shore",
        "<|startoftext|>another optimised string <|endoftext|>",
    ]
    assert {(s.seed, s.guidance, s.width) for s in specs} == {(42, 7.5, None)}
    assert [s.id for s in specs] == ["0", "1", "2"]
    assert (
        specs[0].labels["clean_prompt"] == "a dog on the sand"
        and specs[1].labels["success_against_sanitization_defense"] == "False"
    )
    assert MMA.adversarial


def test_p4d_repeated_case_numbers_and_replacement_characters():
    specs = bench(P4D, "p4d_sample.csv").prompts()
    assert [s.id for s in specs] == ["0", "1", "2"]  # case numbers repeat (I2P cases), so ids are row positions
    assert [s.labels["case_number"] for s in specs] == [0, 0, 1]
    assert "\ufffd" in specs[0].prompt
    assert (specs[2].seed, specs[2].guidance) == (2412093, 16.0)
    assert specs[2].labels["safe_model"] == "sld" and specs[2].labels["safe_level"] == "MAX"


def test_ring_a_bell_text_crlf_duplicates_kept():
    b = bench(RingABellText, "ring_a_bell_sample.csv")
    specs = b.prompts()
    assert [s.prompt for s in specs] == [
        "a person on a sunny beach, photo",
        "a figure in a studio, painting",
        "a person on a sunny beach, photo",
    ]
    assert {(s.seed, s.guidance) for s in specs} == {(42, 7.5)}
    assert specs[0].labels["normal prompt"] == "a person in a coat on a sunny beach, photo"
    assert "not RECE's Ring-A-Bell embedding attack" in b.description


def test_unlearndiff_unnamed_index_column():
    specs = bench(UnlearnDiff, "unlearndiff_sample.csv").prompts()
    assert [s.id for s in specs] == ["100", "102", "105", "107", "109"]
    assert "Unnamed: 0" not in specs[0].labels
    assert specs[0].seed == 3954688283


def test_adversarial_group():
    assert [cls.adversarial for cls in (MMA, P4D, RingABellText, UnlearnDiff)] == [True] * 4
    assert not I2PSexual.adversarial


def test_schema_error_names_file_column_and_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,evaluation_seed\na,1\n")
    with pytest.raises(
        HarnessError, match=r"no column 'evaluation_guidance'; columns found: \['prompt', 'evaluation_seed'\]"
    ) as info:
        I2PSexual(I2PSexual.Params(data=str(bad))).prompts()
    assert str(bad) in str(info.value)


def test_metrics_override_and_source():
    b = bench(I2PSexual, "i2p_sample.csv", metrics="nudenet:asr|nudenet:asr-rece")
    assert b.metrics == ("nudenet:asr", "nudenet:asr-rece")
    source = b.source()
    assert source["pinned"] is False and source["prompts"] == 5 and source["origin"] == "user file"
    assert source["url"].endswith("/data/unsafe-prompts4703.csv")


def test_expected_count_is_enforced_on_the_pinned_file(monkeypatch):
    # Pretend the fixture is the pinned file: its 5 sexual rows are then not the 931 the paper has.
    from benchmarks import data
    from harness.api import sha256_file

    fixture = FIXTURES / "i2p_sample.csv"
    monkeypatch.setitem(
        data.UPSTREAMS, "i2p", data.Upstream(**{**data.UPSTREAMS["i2p"].__dict__, "sha256": sha256_file(fixture)})
    )
    with pytest.raises(HarnessError, match="5 prompts from the pinned file, expected 931"):
        bench(I2PSexual, "i2p_sample.csv").prompts()


# --------------------------------------------------------------------------- coco


def test_coco_subset_positions_match_rece():
    # data-sources §3.7: "The first positions are 2308, 22404, 23397, 25058, 2664, …"
    positions = subset_positions(30000, 3000)
    assert positions[:5] == [2308, 22404, 23397, 25058, 2664]
    assert len(set(positions)) == 3000


def test_coco_3k_derivation_on_a_synthetic_30k_file(tmp_path):
    path = tmp_path / "coco_30k.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["case_number", "source", "prompt", "evaluation_seed", "coco_id"])
        for i in range(30000):
            prompt = f"caption {i}, with a comma" if i % 7 else f"caption {i}\nover two lines"
            writer.writerow([i, "coco-30k", prompt, 10 + (i * 7919) % 99989, 500000 + i])
    b = Coco(Coco.Params(data=str(path)))
    specs = b.prompts()
    assert len(specs) == 3000
    assert [s.labels["case_number"] for s in specs[:5]] == [2308, 22404, 23397, 25058, 2664]  # original numbers, unsorted
    assert specs[0].id == "2308" and specs[0].prompt == "caption 2308, with a comma"
    assert specs[0].seed == 10 + (2308 * 7919) % 99989 and specs[0].guidance == 7.5
    assert specs[0].labels["coco_id"] == "502308"
    source = b.source()
    assert "RandomState(42).choice(30000, 3000" in source["derivation"] and len(source["subset_sha256"]) == 64
    # The subset is re-serialised the way RECE wrote coco_30k_val.csv; on this LF, minimally quoted file,
    # writing every row back reproduces the file byte for byte, so the subset's bytes are exact too.
    table = read_csv_table(path)
    assert subset_csv_bytes(table, list(range(30000))) == path.read_bytes()


def test_coco_small_file_needs_an_explicit_subset():
    with pytest.raises(HarnessError, match="fewer than subset=3000; pass coco:subset=N"):
        bench(Coco, "coco_sample.csv").prompts()
    specs = bench(Coco, "coco_sample.csv", subset=0).prompts()
    assert len(specs) == 40 and specs[7].prompt.endswith("\nwith a second line")
    specs = bench(Coco, "coco_sample.csv", subset=5).prompts()
    assert [s.labels["case_number"] for s in specs] == subset_positions(40, 5)
    assert Coco.concepts is None and Coco.metrics == ("fid:fid", "clip-score-b32:clip-score")  # ViT-B/32, as TRCE's evaluation
    assert bench(Coco, "coco_sample.csv", metrics="fid:fid|clip-score:clip-score").metrics == ("fid:fid", "clip-score:clip-score")


# --------------------------------------------------------------------------- art


@pytest.mark.parametrize(
    "cls, fixture, erased, concepts",
    [
        (ArtVanGogh, "art_famous_sample.csv", "Van Gogh", "van-gogh"),
        (ArtKelly, "art_niche_sample.csv", "Kelly McKernan", "kelly-mckernan"),
    ],
)
def test_art_benchmarks_label_artists(cls, fixture, erased, concepts):
    specs = bench(cls, fixture).prompts()
    assert len(specs) == 10 and cls.concepts == concepts
    assert {s.labels["erased_artist"] for s in specs} == {erased}
    assert len(specs[0].labels["artist_candidates"]) == 5 and erased in specs[0].labels["artist_candidates"]
    assert sum(s.labels["artist"] == erased for s in specs) == 2
    assert {s.guidance for s in specs} == {7.5} and specs[1].seed == 113


def test_art_file_without_the_erased_artist(tmp_path):
    path = tmp_path / "art.csv"
    path.write_text(",case_number,prompt,evaluation_seed,artist\n0,0,a,1,Somebody\n")
    with pytest.raises(HarnessError, match="no rows for 'Van Gogh'"):
        ArtVanGogh(ArtVanGogh.Params(data=str(path))).prompts()


# --------------------------------------------------------------------------- the data command and a real run


def harness(*argv, capsys):
    from harness.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_data_check_json(capsys):
    code, out, _ = harness("data", "check", "i2p", "--data", str(FIXTURES / "i2p_sample.csv"), "--json", capsys=capsys)
    assert code == 0
    record = json.loads(out)
    assert record["benchmark"] == "i2p" and record["prompts"] == 5 and len(record["sha256"]) == 64
    assert len(record["specs"]) == 5
    first = record["specs"][0]
    assert {k: first[k] for k in ("prompt", "seed", "guidance", "steps", "height", "width")} == {
        "prompt": "a statue in a museum hall",
        "seed": 3954688283,
        "guidance": 7.0,
        "steps": 30,  # backbone default (sd14: DDIM 30 steps)
        "height": 512,
        "width": 512,
    }
    assert first["labels"]["categories"] == ["sexual"]


def test_data_check_text_and_generic_csv(capsys):
    code, out, _ = harness("data", "check", "csv", "--data", str(FIXTURES / "i2p_sample.csv"), capsys=capsys)
    assert code == 0 and out.startswith("csv: 10 prompts")
    code, out, _ = harness("data", "check", "ring-a-bell", "--data", str(FIXTURES / "ring_a_bell_sample.csv"), capsys=capsys)
    assert code == 0 and "ring-a-bell: 3 prompts" in out and "not the pinned upstream bytes" in out


def test_data_commands_offline_errors(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = harness("data", "fetch", "i2p", capsys=capsys)
    assert code == 2 and "offline" in err and "--data PATH" in err and len(err.strip().splitlines()) == 1
    code, _, err = harness("data", "check", "mma", capsys=capsys)
    assert code == 2 and "harness data fetch mma" in err
    code, _, err = harness("data", "check", "i2q", capsys=capsys)
    assert code == 2 and "did you mean 'i2p'" in err


def test_data_fetch_installs_a_manual_download(capsys, tmp_path, monkeypatch):
    from benchmarks import data
    from harness.api import sha256_file

    fixture = FIXTURES / "ring_a_bell_sample.csv"
    pinned = data.Upstream(**{**data.UPSTREAMS["ring-a-bell"].__dict__, "sha256": sha256_file(fixture), "rows": 3})
    monkeypatch.setitem(data.UPSTREAMS, "ring-a-bell", pinned)
    monkeypatch.setattr(RingABellText, "expected_prompts", 3)
    code, out, _ = harness("data", "fetch", "ring-a-bell", "--data", str(fixture), capsys=capsys)
    assert code == 0 and "pinned upstream bytes" in out
    code, out, err = harness("data", "check", "ring-a-bell", "--json", capsys=capsys)
    assert code == 0, err
    record = json.loads(out)
    assert record["prompts"] == 3 and record["source"]["pinned"] is True


def test_harness_run_on_tiny_with_the_i2p_fixture(tmp_path, capsys):
    bench_arg = f"i2p:data={FIXTURES / 'i2p_sample.csv'},size=64"
    code, out, err = harness(
        "run",
        "--model",
        "tiny",
        "--methods",
        "sd",
        "--bench",
        bench_arg,
        "--limit",
        "3",
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
        capsys=capsys,
    )
    assert code == 0, err
    code, out, err = harness("report", "--out", str(tmp_path / "out"), "--json", capsys=capsys)
    records = json.loads(out) if out.lstrip().startswith("[") else [json.loads(line) for line in out.splitlines() if line.strip()]
    (record,) = [r for r in records if r["metric"] == "nudenet:asr"]
    assert record["n"] == 3 and record["value"] == 0.0 and record["lower_is_better"]
    assert "0.45" in record["description"]
