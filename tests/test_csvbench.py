"""The community prompt-CSV reader and the generic ``csv`` benchmark."""

import warnings

import pytest

from benchmarks.csvbench import Columns, CsvBenchmark, EmptyPromptWarning, read_prompt_csv
from harness.api import HarnessError

HEADER = "case_number,prompt,evaluation_seed,evaluation_guidance,sd_image_width,sd_image_height,categories,hard\n"


def write(tmp_path, text, name="prompts.csv", newline="\n"):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def read_quietly(path, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyPromptWarning)
        return read_prompt_csv(path, **options)


def test_reads_every_column(tmp_path):
    path = write(tmp_path, HEADER + '7,a photo of a cat,42,7,512,384,"sexual, violence",1\n8,a dog,43,12.5,,,hate,0\n')
    first, second = read_prompt_csv(path)
    assert (first.id, first.prompt, first.seed, first.guidance) == ("7", "a photo of a cat", 42, 7.0)
    assert (first.width, first.height, first.steps) == (512, 384, None)
    assert first.labels == {"row": 0, "case_number": 7, "categories": ["sexual", "violence"], "hard": "1"}
    assert (second.width, second.height, second.guidance) == (None, None, 12.5)  # empty size → backbone default
    assert second.labels["categories"] == ["hate"]


def test_missing_column_names_file_column_and_columns_found(tmp_path):
    path = write(tmp_path, "case_number,prompt,evaluation_guidance\n0,a cat,7\n")
    with pytest.raises(HarnessError) as info:
        read_prompt_csv(path)
    message = str(info.value)
    assert str(path) in message and "'evaluation_seed'" in message
    assert "['case_number', 'prompt', 'evaluation_guidance']" in message
    assert "\n" not in message


def test_missing_prompt_column(tmp_path):
    path = write(tmp_path, "text,evaluation_seed\nhello,1\n")
    with pytest.raises(HarnessError, match=r"no column 'prompt'; columns found: \['text', 'evaluation_seed'\]"):
        read_prompt_csv(path)


def test_malformed_row_gets_its_row_number(tmp_path):
    path = write(tmp_path, HEADER + "0,ok,1,7,512,512,sexual,0\n1,too,few\n")
    with pytest.raises(HarnessError, match=r"row 2 \(line 3\): malformed row with 3 cells where the header has 8"):
        read_prompt_csv(path)


def test_unterminated_quote_is_a_one_line_error(tmp_path):
    path = write(tmp_path, 'prompt,evaluation_seed\n"a cat" x,1\n')
    with pytest.raises(HarnessError, match="line 2: malformed CSV") as info:
        read_prompt_csv(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("seed", ["4.5", "abc", "1e400", "-3", "nan"])
def test_non_integer_seed_gets_its_row_number(tmp_path, seed):
    path = write(tmp_path, f"prompt,evaluation_seed\nfine,1\nbad,{seed}\n")
    with pytest.raises(HarnessError, match=r"row 2 \(line 3\): seed"):
        read_prompt_csv(path)


def test_empty_seed_without_default_is_an_error(tmp_path):
    path = write(tmp_path, "prompt,evaluation_seed\na cat,\n")
    with pytest.raises(HarnessError, match="row 1 .*empty seed"):
        read_prompt_csv(path)


def test_integer_valued_float_seed_is_accepted(tmp_path):
    path = write(tmp_path, "prompt,evaluation_seed\na cat,42.0\n")
    assert read_prompt_csv(path)[0].seed == 42


def test_seeds_above_2_31_stay_exact_and_seed_torch(tmp_path):
    torch = pytest.importorskip("torch")
    big = 4290749014  # the largest seed in I2P
    path = write(tmp_path, f"prompt,evaluation_seed\na,{big}\nb,{2**31}\nc,{2**63 + 1}\n")
    specs = read_prompt_csv(path)
    assert [s.seed for s in specs] == [big, 2**31, 2**63 + 1]
    assert all(type(s.seed) is int for s in specs)
    # the generator is seeded with exactly this value (a float would round it)
    assert torch.Generator().manual_seed(specs[0].seed).initial_seed() == big
    draw = torch.randn(3, generator=torch.Generator().manual_seed(big))
    assert not torch.equal(draw, torch.randn(3, generator=torch.Generator().manual_seed(big + 1)))


def test_empty_prompt_is_legal_and_warned_once(tmp_path):
    path = write(tmp_path, "prompt,evaluation_seed\na cat,1\n,2\n   ,3\n")
    with pytest.warns(EmptyPromptWarning) as record:
        specs = read_prompt_csv(path)
    assert len(record) == 1
    assert "2 empty prompt(s)" in str(record[0].message) and "unconditioned" in str(record[0].message)
    assert [s.prompt for s in specs] == ["a cat", "", "   "]


def test_crlf_and_embedded_newlines(tmp_path):
    text = 'prompt,evaluation_seed,categories\n"first line\nsecond line",5,sexual\n"with ""quotes"", and comma",6,\nplain,7,x\n'
    for newline in ("\n", "\r\n"):
        specs = read_prompt_csv(write(tmp_path, text, newline=newline))
        expected_break = "\n" if newline == "\n" else "\r\n"  # a quoted newline is kept byte for byte
        assert specs[0].prompt == f"first line{expected_break}second line"
        assert specs[1].prompt == 'with "quotes", and comma'
        assert [s.seed for s in specs] == [5, 6, 7]
        assert specs[1].labels["categories"] == []


def test_error_line_counts_embedded_newlines(tmp_path):
    path = write(tmp_path, 'prompt,evaluation_seed\n"two\nlines",1\nbad,x\n')
    with pytest.raises(HarnessError, match=r"row 2 \(line 4\)"):
        read_prompt_csv(path)


def test_blank_lines_and_bom_are_ignored(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffprompt,evaluation_seed\na,1\n\nb,2\n\n".encode())
    assert [s.prompt for s in read_prompt_csv(path)] == ["a", "b"]


def test_guidance_up_to_255_passes_through(tmp_path):
    path = write(tmp_path, "prompt,evaluation_seed,evaluation_guidance\na,1,255\nb,2,13\n")
    assert [s.guidance for s in read_prompt_csv(path)] == [255.0, 13.0]


def test_empty_seed_or_guidance_cell_is_an_error_even_with_a_default(tmp_path):
    # A default is for files without the column; inside the column it would silently replace a value the file meant to give.
    path = write(tmp_path, "prompt,evaluation_seed,evaluation_guidance\na,5,7\nb,,7\n")
    with pytest.raises(HarnessError, match=r"row 2 \(line 3\): empty seed in column 'evaluation_seed'"):
        read_prompt_csv(path, default_seed=42)
    path = write(tmp_path, "prompt,evaluation_seed,evaluation_guidance\na,5,7\nb,6,\n")
    with pytest.raises(HarnessError, match=r"row 2 \(line 3\): empty guidance in column 'evaluation_guidance'") as info:
        read_prompt_csv(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["abc", "inf", "-1"])
def test_bad_guidance(tmp_path, value):
    path = write(tmp_path, f"prompt,evaluation_seed,evaluation_guidance\na,1,{value}\n")
    with pytest.raises(HarnessError, match="row 1 .*guidance"):
        read_prompt_csv(path)


@pytest.mark.parametrize("value", ["500", "0", "x", "512.5"])
def test_bad_size(tmp_path, value):
    path = write(tmp_path, f"prompt,evaluation_seed,sd_image_width\na,1,{value}\n")
    with pytest.raises(HarnessError, match="sd_image_width .* multiple of 8"):
        read_prompt_csv(path)


def test_forced_size_overrides_rows(tmp_path):
    path = write(tmp_path, HEADER + "0,a,1,7,448,512,,0\n")
    spec = read_prompt_csv(path, size=512)[0]
    assert (spec.width, spec.height) == (512, 512)


def test_ids_fall_back_to_row_position_when_case_numbers_repeat(tmp_path):
    # P4D repeats I2P case numbers; ids must stay unique
    path = write(tmp_path, ",prompt,evaluation_seed,case_number\n0,a,1,17\n1,b,1,17\n")
    specs = read_prompt_csv(path)
    assert [s.id for s in specs] == ["0", "1"]
    assert [s.labels["case_number"] for s in specs] == [17, 17]
    assert "" not in specs[0].labels  # pandas' unnamed index column is dropped


def test_default_seed_and_other_prompt_column(tmp_path):
    path = write(tmp_path, "target_prompt,adv_prompt\nx,<|startoftext|>a b\n")
    spec = read_prompt_csv(path, columns=Columns(prompt="adv_prompt"), default_seed=42)[0]
    assert (spec.prompt, spec.seed, spec.guidance, spec.id) == ("<|startoftext|>a b", 42, 7.5, "0")
    assert spec.labels == {"row": 0, "target_prompt": "x"}


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(HarnessError, match="does not exist"):
        read_prompt_csv(tmp_path / "nope.csv")
    with pytest.raises(HarnessError, match="is empty"):
        read_prompt_csv(write(tmp_path, ""))
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"prompt,evaluation_seed\ncaf\xe9,1\n")
    with pytest.raises(HarnessError, match="not UTF-8"):
        read_prompt_csv(bad)


# --------------------------------------------------------------------------- the benchmark


def test_csv_benchmark(tmp_path):
    path = write(tmp_path, HEADER + "3,a,1,7,512,512,sexual,0\n")
    bench = CsvBenchmark(CsvBenchmark.Params(path=str(path), concepts="sexual", metrics="nudenet:asr|nudenet:asr-rece"))
    assert bench.concepts == "sexual"
    assert bench.metrics == ("nudenet:asr", "nudenet:asr-rece")
    assert [s.id for s in bench.prompts()] == ["3"]
    source = bench.source()
    assert source["path"] == str(path.resolve()) and len(source["sha256"]) == 64


def test_csv_benchmark_defaults():
    bench = CsvBenchmark()
    assert bench.metrics == ("nudenet:asr",) and bench.concepts is None


def test_csv_benchmark_without_path_is_a_clear_error():
    with pytest.raises(HarnessError, match=r"csv:path=FILE"):
        CsvBenchmark().prompts()


def test_csv_benchmark_with_default_seed(tmp_path):
    path = write(tmp_path, "sensitive prompt,normal prompt\r\nnaked x,clothed x\r\n", newline="\n")
    bench = CsvBenchmark(CsvBenchmark.Params(path=str(path), prompt_column="sensitive prompt", seed=42))
    spec = bench.prompts()[0]
    assert (spec.prompt, spec.seed) == ("naked x", 42)


def test_registered_lazily():
    from harness.registry import Registry
    from harness.testing import plugin_host

    registry = Registry(plugin_host())
    assert registry.get("benchmarks", "csv") is CsvBenchmark
    assert registry.entry("scorers", "nudenet").description


# --------------------------------------------------------------------------- seeds and guidance of the generic benchmark

HF_I2P_HEADER = (
    "prompt,categories,hard,inappropriate_percentage,nudity_percentage,q16_percentage,sd_safety_percentage,"
    "prompt_toxicity,lexica_url,sd_seed,sd_guidance_scale,sd_image_width,sd_image_height,sd_model\n"
)


def hf_i2p(tmp_path, rows=("a,sexual,1,1,1,1,1,1,x,4261553411,13,512,512,v1.4", "b,hate,0,1,1,1,1,1,x,77,7,512,384,v1.4")):
    return write(tmp_path, HF_I2P_HEADER + "\n".join(rows) + "\n", name="i2p_benchmark.csv")


def csv_bench(path, **params):
    return CsvBenchmark(CsvBenchmark.Params(path=str(path), **params))


def test_csv_benchmark_reads_the_hugging_face_i2p_seed_and_guidance(tmp_path):
    first, second = csv_bench(hf_i2p(tmp_path)).prompts()
    assert (first.seed, first.guidance, second.seed, second.guidance) == (4261553411, 13.0, 77, 7.0)
    assert (second.width, second.height) == (512, 384) and [first.id, second.id] == ["0", "1"]
    assert "sd_seed" not in first.labels and first.labels["categories"] == ["sexual"]


def test_csv_benchmark_refuses_a_default_the_file_overrides(tmp_path):
    path = hf_i2p(tmp_path)
    with pytest.raises(HarnessError, match=r"per-row seeds \(column 'sd_seed'\); seed= is for files without one"):
        csv_bench(path, seed=42).prompts()
    with pytest.raises(HarnessError, match=r"per-row guidance \(column 'sd_guidance_scale'\)"):
        csv_bench(path, guidance=7.5).prompts()
    esd = write(tmp_path, "prompt,evaluation_seed\na,5\nb,6\n")
    with pytest.raises(HarnessError, match="column 'evaluation_seed'"):
        csv_bench(esd, seed=42).prompts()
    assert [(s.seed, s.guidance) for s in csv_bench(esd, guidance=3.0).prompts()] == [(5, 3.0), (6, 3.0)]


def test_csv_benchmark_empty_cells_and_missing_or_ambiguous_columns(tmp_path):
    empty = hf_i2p(tmp_path, rows=("a,sexual,1,1,1,1,1,1,x,5,13,512,512,v1.4", "b,hate,0,1,1,1,1,1,x,6,,512,512,v1.4"))
    with pytest.raises(HarnessError, match=r"row 2 \(line 3\): empty guidance in column 'sd_guidance_scale'"):
        csv_bench(empty).prompts()
    bare = write(tmp_path, "prompt,guidance\na,7\n")
    with pytest.raises(HarnessError, match=r"no seed column \('evaluation_seed' or 'sd_seed'\).*csv:seed=N"):
        csv_bench(bare).prompts()
    assert csv_bench(bare, seed_column="guidance").prompts()[0].seed == 7  # any column, when named
    both = write(tmp_path, "prompt,evaluation_seed,sd_seed\na,1,2\n")
    with pytest.raises(HarnessError, match="both 'evaluation_seed' and 'sd_seed'.*csv:seed_column=NAME"):
        csv_bench(both).prompts()
    assert csv_bench(both, seed_column="sd_seed").prompts()[0].seed == 2


def test_reports_name_a_csv_benchmark_by_its_file_or_its_label(registry):
    """The full selection (folders, metrics list) made a LaTeX header and a plot axis label of several lines."""
    from harness.runner import display_label

    selection = "csv:concepts=toy-red,metrics=toy:toy-asr|toy:toy-asr-any,path=runs/attacks/ring-a-bell_generations_2.csv"
    assert display_label(registry, "benchmarks", selection) == (
        "csv ring-a-bell_generations_2.csv (concepts=toy-red,metrics=toy:toy-asr|toy:toy-asr-any)")
    assert display_label(registry, "benchmarks", selection + ",label=RAB on uce") == "RAB on uce"
    assert CsvBenchmark(CsvBenchmark.Params(path="p.csv", label="mine")).params.label == "mine"


@pytest.mark.parametrize(("header", "says"), [
    ("prompt;evaluation_seed", "the header looks semicolon-separated: save the file comma-separated"),
    ("prompt\tevaluation_seed", "the header looks tab-separated"),
    ("prompt, evaluation_seed ", "' evaluation_seed ' is 'evaluation_seed' but for spaces (rename the column)"),
    ("prompt,Evaluation_Seed", "'Evaluation_Seed' is 'evaluation_seed' but for case (rename the column)"),
    ("Prompt,evaluation_seed", "'Prompt' is 'prompt' but for case"),
])
def test_a_header_that_almost_has_the_columns_says_why_it_does_not(tmp_path, header, says):
    """A spreadsheet's ;-export, a padded or capitalised name all ended in a bare "has no seed column"."""
    path = tmp_path / "p.csv"
    separator = ";" if ";" in header else "\t" if "\t" in header else ","
    path.write_text(f"{header}\na cat{separator}1\n", encoding="utf-8")
    with pytest.raises(HarnessError) as raised:
        CsvBenchmark(CsvBenchmark.Params(path=str(path))).prompts()
    assert says in str(raised.value)
