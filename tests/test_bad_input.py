"""Bad input never becomes a number: every parameter is validated before any work, and every error is one line."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from benchmarks.toyworld.paths import WEIGHTS_DIR as TOY_WEIGHTS_DIR
from harness.api import HarnessError, PromptSpec
from harness.cli import main
from harness.plugins import PluginHost
from harness.registry import Registry
from harness.runner import RunConfig, plan
from harness.validate import Bounds, check_field, param, validate_params

PLUGINS = Path(__file__).parent / "plugins"
BRIGHTNESS = str(PLUGINS / "brightness.py")


def write_csv(directory: Path, rows: str = "a cat,1\na dog,2\n", header: str = "prompt,evaluation_seed") -> Path:
    path = directory / "p.csv"
    path.write_text(f"{header}\n{rows}", encoding="utf-8")
    return path


def cli(capsys, *args):
    code = main(["--plugin", BRIGHTNESS, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------- the four bad CSV parameters


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("guidance=nan", "csv.guidance must be a finite number"),
        ("seed=-1", "csv.seed must be ≥ 0 and < 2**64; got -1"),
        ("size=100", "csv.size must be ≥ 8 and a multiple of 8; got 100"),
        ("guidance=-3", "csv.guidance must be ≥ 0"),
    ],
)
def test_a_bad_benchmark_parameter_exits_2_with_one_line_and_stores_nothing(tmp_path, capsys, item, says):
    path = write_csv(tmp_path)
    out = tmp_path / "out"
    code, stdout, stderr = cli(capsys, "run", "--model", "tiny", "--bench", f"csv:path={path},{item},metrics=brightness:mean",
                               "--out", str(out), "--no-progress")
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and says in stderr and "Traceback" not in stderr
    assert not out.exists()  # nothing stored, not even an empty database


@pytest.mark.parametrize("value", ["nan", "-1", "inf", "1e400"])
def test_set_goes_through_the_same_bounds(tmp_path, capsys, value):
    path = write_csv(tmp_path)
    code, _, stderr = cli(capsys, "run", "--model", "tiny", "--bench", f"csv:path={path},metrics=brightness:mean",
                          "--set", f"csv.guidance={value}", "--out", str(tmp_path / "out"), "--dry-run")
    assert code == 2 and stderr.startswith("harness: error: csv.guidance must be") and stderr.count("\n") == 1


def test_a_prompt_larger_than_the_backbone_makes_is_refused_at_plan_time(tmp_path, registry):
    path = write_csv(tmp_path)
    config = RunConfig(bench=f"csv:path={path},size=4096,metrics=brightness:mean", model="tiny", out=str(tmp_path / "out"))
    with pytest.raises(HarnessError, match=r"prompt 0: height must be within the backbone's range 8\.\.256; got 4096"):
        plan(config, registry)


def test_bounds_bind_plugin_defaults_and_presets_too():
    from harness.api import Method

    class Careless(Method):
        name = "careless"

        @dataclasses.dataclass
        class Params:
            strength: float = param(0.5, ge=0, le=1)
            steps: int = param(10, ge=1)

    assert Careless().params.strength == 0.5
    with pytest.raises(HarnessError, match=r"^careless\.strength must be ≥ 0 and ≤ 1; got 2\.0$"):
        Careless(Careless.Params(strength=2.0))  # what a preset could build
    with pytest.raises(HarnessError, match=r"^careless\.steps must be an integer; got 2\.5$"):
        Careless(Careless.Params(steps=2.5))
    with pytest.raises(HarnessError, match="careless.steps must be ≥ 1"):
        Careless(Careless.Params(steps=0))


def test_every_float_is_finite_even_without_declared_bounds():
    @dataclasses.dataclass
    class Params:
        lamb: float = 0.1
        scales: tuple[float, ...] = (1.0,)

    validate_params(Params(), "m")
    with pytest.raises(HarnessError, match=r"m\.lamb must be a finite number; got nan"):
        validate_params(Params(lamb=float("nan")), "m")
    with pytest.raises(HarnessError, match=r"m\.scales must be a finite number"):
        validate_params(Params(scales=(1.0, float("inf"))), "m")


def test_csv_cells_read_the_bounds_declared_on_prompt_spec():
    """The CSV reader does not repeat the limits: it asks PromptSpec's fields."""
    seed_bounds = next(f for f in dataclasses.fields(PromptSpec) if f.name == "seed").metadata
    assert Bounds(ge=0, lt=2**64) in seed_bounds.values()
    check_field(PromptSpec, "seed", 2**64 - 1, "row 1: seed")
    with pytest.raises(HarnessError, match=r"row 1: seed must be ≥ 0 and < 2\*\*64; got 18446744073709551616"):
        check_field(PromptSpec, "seed", 2**64, "row 1: seed")


# --------------------------------------------------------------------------- property: accepted → finite image, or one line

BAD_NUMBER_TEXT = st.one_of(
    st.sampled_from(["nan", "-nan", "inf", "-inf", "1e400", "1001", "1e30", "-3", "abc", "4.5", "18446744073709551616", "-1"]),
    st.integers(min_value=-(2**65), max_value=2**65).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
GOOD_SEED_TEXT = st.one_of(st.integers(min_value=0, max_value=2**64 - 1).map(str), st.sampled_from(["0", "42.0", "18446744073709551615"]))
GOOD_GUIDANCE_TEXT = st.one_of(st.floats(min_value=0, max_value=1000).map(repr), st.sampled_from(["0", "-0", "7.5", "1000", "1e3"]))
GOOD_SIZE_TEXT = st.sampled_from(["8", "16", "24", "16.0", "64"])
BAD_SIZE_TEXT = st.sampled_from(["0", "-8", "4", "12", "100", "264", "4096", "x", "16.5"])


def mostly(good, bad):
    """Five draws in six valid, so that about a quarter of the specs get past every check and are generated."""
    return st.one_of(good, good, good, good, good, bad)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    guidance=mostly(st.none() | GOOD_GUIDANCE_TEXT, BAD_NUMBER_TEXT),
    seed=mostly(st.none() | GOOD_SEED_TEXT, BAD_NUMBER_TEXT),
    size=mostly(st.none() | GOOD_SIZE_TEXT, BAD_SIZE_TEXT),
    cell_seed=mostly(GOOD_SEED_TEXT, BAD_NUMBER_TEXT),
    cell_guidance=mostly(st.just("") | GOOD_GUIDANCE_TEXT, BAD_NUMBER_TEXT),
    cell_width=mostly(st.just("") | GOOD_SIZE_TEXT, BAD_SIZE_TEXT),
    set_guidance=mostly(st.none() | GOOD_GUIDANCE_TEXT, BAD_NUMBER_TEXT),
)
def test_random_specs_either_generate_a_finite_image_or_are_refused_in_one_line(
    tmp_path, tiny, guidance, seed, size, cell_seed, cell_guidance, cell_width, set_guidance
):
    from harness.engine import ActiveState, Defaults, Engine
    from harness.store import Store

    registry = Registry(PluginHost([BRIGHTNESS]))
    path = write_csv(tmp_path, header="prompt,evaluation_seed,evaluation_guidance,sd_image_width",
                     rows=f'"a cat","{cell_seed}","{cell_guidance}","{cell_width}"\n')
    items = [f"path={path}", "metrics=brightness:mean"]
    items += [f"{key}={value}" for key, value in (("guidance", guidance), ("seed", seed), ("size", size)) if value is not None]
    sets = [f"csv.guidance={set_guidance}"] if set_guidance is not None else []
    config = RunConfig(bench="csv:" + ",".join(items), sets=sets, model="tiny", out=str(tmp_path / "out"), show_progress=False)
    try:
        planned = plan(config, registry)
    except HarnessError as err:
        message = str(err)
        assert message and "\n" not in message and "Traceback" not in message
        event("refused")
        return
    event("generated")
    (spec,) = planned.benchmarks[0].specs
    assert math.isfinite(spec.guidance) and 0 <= spec.seed < 2**64
    engine = Engine(tiny, Store(tmp_path / "out"), "fingerprint", Defaults(1, 16, 16), "cpu", "float32", batch_size=1, show_progress=False)
    (image,) = engine.sample([engine.resolve(spec)], ActiveState(key="sd", label="sd"))  # raises on a non-finite image
    assert image.size == (engine.resolve(spec).width, engine.resolve(spec).height)


# --------------------------------------------------------------------------- every command fails in one line


def leaf_commands(parser, prefix=()):
    """Every runnable command path, e.g. ("run",), ("data", "check"), read from argparse itself."""
    import argparse

    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        return [prefix] if prefix else []
    leaves = []
    for name, child in subparsers[0].choices.items():
        leaves.extend(leaf_commands(child, (*prefix, name)) or [(*prefix, name)])
    return leaves


def takes_json(parser, path) -> bool:
    import argparse

    for name in path:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return any("--json" in a.option_strings for a in parser._actions)


def assert_one_line_failure(code, stdout, stderr, as_json):
    assert code == 2, stderr
    assert stderr.startswith("harness: error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    if as_json:
        import json

        assert "error" in json.loads(stdout)


def all_commands():
    from harness.cli import build_parser

    registry = Registry(PluginHost([BRIGHTNESS]))
    parser = build_parser(registry)
    return [(path, takes_json(parser, path)) for path in leaf_commands(parser)]


@pytest.mark.parametrize(("path", "json_option"), all_commands(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v))
def test_every_command_refuses_an_unknown_option_in_one_line(capsys, path, json_option):
    extra = ["--json"] if json_option else []
    code, stdout, stderr = cli(capsys, *path, "--no-such-option", *extra)
    assert_one_line_failure(code, stdout, stderr, as_json=json_option)
    assert f"(see `harness {' '.join(path)} --help`)" in stderr
    assert "unrecognized arguments: --no-such-option" in stderr or "arguments are required" in stderr


def bad_inputs(tmp_path):
    """A bad input a user could give each command: (argv, what the one line must say)."""
    store = tmp_path / "no-store"
    return {
        ("run",): (["--model", "tiny", "--bench", "nosuch", "--out", str(tmp_path / "o")], "unknown benchmark 'nosuch'"),
        ("report",): (["--out", str(store)], "no results store"),
        ("list",): (["methdos"], "no kind 'methdos' of plugin; did you mean 'methods'?"),
        ("plugins",): (["--plugin", str(tmp_path / "missing.py")], "does not exist"),
        ("erase",): (["--model", "tiny", "--method", "nosuch", "--concepts", "colours", "--save", str(tmp_path / "s")], "nosuch"),
        ("compare",): (["--out", str(store), "sd", "uce"], "no results store"),
        ("export",): (["--out", str(store), "--per-image", str(tmp_path / "v.csv")], "no results store"),
        ("check",): (["--out", str(store)], "no results store"),
        ("merge",): ([str(store), "--into", str(tmp_path / "merged")], "no results store"),
        ("data", "fetch"): (["nosuch"], "unknown benchmark or data set 'nosuch'"),
        ("data", "check"): (["i2p"], "'i2p' is not downloaded"),
        ("toy", "train"): (["--quick", "--out", str(TOY_WEIGHTS_DIR)], "--quick learns nothing"),
        ("toy", "calibrate"): (["--model", str(tmp_path / "none")], "weights are missing"),
        ("toy", "finetune-decoder"): (
            ["--model", str(TOY_WEIGHTS_DIR), "--out", str(tmp_path / "copy"), "--set", "unet_steps=5"],
            "takes only the decoder settings, not unet_steps",
        ),
    }


@pytest.mark.parametrize(("path", "json_option"), all_commands(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v))
def test_every_command_refuses_a_bad_value_in_one_line(tmp_path, capsys, monkeypatch, path, json_option):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    known = bad_inputs(tmp_path)
    if path not in known:
        pytest.skip(f"no bad value listed for `harness {' '.join(path)}` yet: add one to bad_inputs")
    argv, says = known[path]
    for extra in ([], ["--json"]) if json_option else ([],):
        code, stdout, stderr = cli(capsys, *path, *argv, *extra)
        assert_one_line_failure(code, stdout, stderr, as_json=bool(extra))
        assert says in stderr


def test_device_cuda_on_a_cpu_only_torch_is_one_line(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.version, "cuda", None)  # what a CPU-only build reports
    path = write_csv(tmp_path)
    code, stdout, stderr = cli(capsys, "run", "--model", "tiny", "--bench", f"csv:path={path},metrics=brightness:mean", "--device", "cuda",
                               "--out", str(tmp_path / "out"), "--no-progress")
    assert_one_line_failure(code, stdout, stderr, as_json=False)
    assert "--device cuda: this torch" in stderr and "built without CUDA; use --device cpu" in stderr
    assert not (tmp_path / "out").exists()


def test_device_index_beyond_the_visible_gpus_is_one_line(monkeypatch):
    import torch

    from harness.validate import check_device

    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1")
    with pytest.raises(HarnessError, match=r"has 2 CUDA device\(s\), cuda:0\.\.cuda:1"):
        check_device("cuda:2")
    with pytest.raises(HarnessError, match="is not a device"):
        check_device("gpu")


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    assert main(["--plugin", BRIGHTNESS, "run", "--model", "tiny", "--bench", "fixed:count=3", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.mark.parametrize("dest", ["/proc/x", "/dev/null/x"])
def test_report_to_an_unwritable_destination_is_one_line(small_store, capsys, dest):
    capsys.readouterr()
    code, stdout, stderr = cli(capsys, "report", "--out", str(small_store), "--dest", dest)
    assert_one_line_failure(code, "", stderr, as_json=False)
    assert "/x" in stderr


def test_a_closed_pipe_is_one_line(small_store, tmp_path):
    """`harness report --json | head -c 1`: the reader leaves at once; the writer says so in one line."""
    import subprocess
    import sys

    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "harness.cli", "--plugin", BRIGHTNESS, "report", "--out", str(small_store), "--json"]
    writer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    writer.stdout.close()  # nobody reads: the first write that does not fit the pipe, or the final flush, fails
    stderr = writer.stderr.read().decode()
    assert writer.wait() == 2
    assert stderr == "harness: error: the output pipe was closed before everything was written (e.g. by `| head`)\n"


def test_data_check_json_is_valid_json_when_the_data_is_missing(tmp_path, capsys, monkeypatch):


    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "empty"))
    code, stdout, stderr = cli(capsys, "data", "check", "i2p", "--json")
    assert code == 2
    record = json.loads(stdout)
    assert set(record) == {"error"} and "harness data fetch i2p" in record["error"]


# --------------------------------------------------------------------------- degrade loudly: a lost database


EDITS = str(PLUGINS / "edits.py")


def run_and_report(out: Path, dest: str):
    from harness.runner import Runner

    registry = Registry(PluginHost([BRIGHTNESS, EDITS]))
    config = RunConfig(methods="sd,scale-keys", bench="fixed:count=4", model="tiny", out=str(out), show_progress=False)
    runner = Runner(plan(config, registry))
    runner.execute()
    runner.store.close()
    assert main(["--plugin", BRIGHTNESS, "--plugin", EDITS, "report", "--out", str(out), "--dest", dest, "--format", "md,csv,png"]) == 0
    return runner


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_lost_database_is_rebuilt_from_the_cache_with_costs_and_grids(tmp_path, capsys):
    out = tmp_path / "out"
    first = run_and_report(out, "before")
    assert first.engine.unet_calls > 0 and first.states.edits_run == 1
    for path in out.glob("harness.db*"):
        path.unlink()
    second = run_and_report(out, "after")
    assert second.engine.unet_calls == 0 and second.states.edits_run == 0  # nothing regenerated, nothing re-erased
    before, after = files_under(out / "before"), files_under(out / "after")
    assert any(name.startswith("grids/") for name in before)
    assert after == before  # leaderboard (cost column and erase cost included), plots and grids
    assert "| 8 |" in (out / "after" / "leaderboard.md").read_text()  # 4 steps × 2 UNet evaluations, not 0
    capsys.readouterr()
    assert main(["check", "--out", str(out)]) == 0  # the rebuilt store is consistent: nothing damaged or orphaned
    assert "0 damaged, 0 unrecorded, 0 orphaned" in capsys.readouterr().out


def test_a_cached_image_without_a_record_gets_the_cost_its_key_determines_not_zero(tmp_path, capsys):
    from PIL import Image

    from harness.recover import read_png_record
    from harness.store import Store

    out = tmp_path / "out"
    run_and_report(out, "before")
    images = sorted((out / "cache" / "images").rglob("*.png"))
    assert {read_png_record(path)["unet_evals"] for path in images} == {8}
    for path in out.glob("harness.db*"):
        path.unlink()
    for path in images:  # as an older version cached them: pixels only
        with Image.open(path) as image:
            pixels = image.copy()
        pixels.save(path, format="PNG")
        assert read_png_record(path) is None
    second = run_and_report(out, "after")
    assert second.engine.unet_calls == 0
    costs = {row["method"]: row["unet_evals_per_image"] for row in Store(out).results()}
    assert costs == {"sd": 8.0, "scale-keys": 8.0}  # 4 steps x 2 (classifier-free guidance); the old bug stored 0.0


def test_a_file_given_as_model_is_called_a_file(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# not a model\n")
    code, stdout, stderr = cli(capsys, "run", "--model", str(readme), "--bench", "fixed", "--dry-run")
    assert_one_line_failure(code, stdout, stderr, as_json=False)
    assert "is a file, not a model" in stderr and "does not exist" not in stderr


# --------------------------------------------------------------------------- degrade loudly: unfinished runs, truncated prompts


def test_a_report_on_an_unfinished_run_says_so_under_the_table(small_store, capsys, tmp_path):
    from harness.store import Store

    store = Store(small_store)
    (run_id,) = store.run_status()
    capsys.readouterr()
    assert cli(capsys, "report", "--out", str(small_store), "--dest", str(tmp_path / "done"), "--format", "md")[0] == 0
    assert "Unfinished" not in (tmp_path / "done" / "leaderboard.md").read_text()
    store.start_run(run_id, {})  # what a re-run killed before its end leaves behind
    store.close()
    code, stdout, _ = cli(capsys, "report", "--out", str(small_store), "--dest", str(tmp_path / "killed"), "--format", "md")
    assert code == 0
    note = f"Unfinished: run {run_id} did not finish (killed, or still running)"
    assert note in stdout
    table, _, below = (tmp_path / "killed" / "leaderboard.md").read_text().partition(note)
    assert "| method |" in table and below  # under the table


def test_prompts_cut_by_the_text_encoder_are_counted_per_benchmark(tmp_path, capsys):
    """The tiny text encoder holds 16 tokens (14 characters between [SoT] and [EoT])."""
    path = write_csv(tmp_path, rows="a cat,1\na very long prompt that the tiny encoder cuts,2\nanother long prompt that is cut,3\n")
    path = path.rename(tmp_path / "a<i>b*c*.csv")  # a legal file name that markdown would render as HTML and emphasis
    out = tmp_path / "out"
    code, stdout, stderr = cli(capsys, "run", "--model", "tiny", "--bench", f"csv:path={path},metrics=brightness:mean",
                               "--out", str(out), "--no-progress")
    assert code == 0
    assert "harness: warning: benchmark 'csv:metrics=brightness:mean,path=" in stderr
    assert "2 of 3 prompts are longer than the text encoder's 16 tokens and were cut to 16" in stderr
    manifest = json.loads(next((out / "runs").glob("*/manifest.json")).read_text())
    assert list(manifest["truncated_prompts"].values()) == [{"count": 2, "of": 3, "limit": 16}]
    code, report, _ = cli(capsys, "report", "--out", str(out), "--format", "md")
    assert "Truncated: 2 of 3 prompts of csv:metrics=brightness:mean" in report
    markdown = (out / "report" / "leaderboard.md").read_text()
    assert "Truncated: 2 of 3" in markdown
    assert "a&lt;i&gt;b\\*c\\*.csv" in markdown.splitlines()[0] and "<i>" not in markdown  # the name, escaped



# --------------------------------------------------------------------------- feedback


def test_the_progress_bar_moves_with_every_denoising_step(tiny, tmp_path, monkeypatch):
    import tqdm.auto

    from harness.engine import ActiveState, Defaults, Engine
    from harness.store import Store

    updates = []
    original = tqdm.auto.tqdm.update
    monkeypatch.setattr(tqdm.auto.tqdm, "update", lambda bar, n=1: (updates.append(n), original(bar, n))[1])
    engine = Engine(tiny, Store(tmp_path / "out"), "fingerprint", Defaults(4, 16, 16), "cpu", "float32", batch_size=8, show_progress=True)
    specs = [PromptSpec(id=str(i), prompt="a cat", seed=i) for i in range(8)]
    engine.generate(specs, ActiveState(key="sd", label="sd"))
    steps = [n for n in updates if n]
    assert steps[:4] == [2.0, 2.0, 2.0, 2.0]  # one batch of 8 images, 4 steps: the bar moves 4 times, not once
    assert sum(updates) == 8


def test_planning_imports_no_torch(tmp_path):
    """The plan prints before torch is imported (seconds on a loaded machine), so a typo is answered at once."""
    import subprocess
    import sys

    path = write_csv(tmp_path)
    code = (
        "import sys\n"
        "from harness.plugins import PluginHost\nfrom harness.registry import Registry\nfrom harness.runner import RunConfig, plan, describe_plan\n"
        f"registry = Registry(PluginHost([{BRIGHTNESS!r}]))\n"
        f"planned = plan(RunConfig(bench='csv:path={path},metrics=brightness:mean', model='tiny', device='cpu', out={str(tmp_path / 'o')!r}), registry)\n"
        "print(describe_plan(planned))\nprint('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False" and "2 prompts" in result.stdout


# --------------------------------------------------------------------------- fail fast


def test_limit_stops_reading_the_csv_after_n_rows(tmp_path, registry):
    """Rows after the limit are never parsed: a malformed row there does not matter with --limit 2, and does without."""
    path = write_csv(tmp_path, rows="a cat,1\na dog,2\na cow,3\n" + '"unclosed,4\n' * 1000)
    config = RunConfig(bench=f"csv:path={path},metrics=brightness:mean", model="tiny", device="cpu", out=str(tmp_path / "out"), limit=2)
    assert [spec.prompt for spec in plan(config, registry).benchmarks[0].specs] == ["a cat", "a dog"]
    with pytest.raises(HarnessError, match="malformed"):
        plan(dataclasses.replace(config, limit=None), registry)


def test_a_metric_that_needs_labels_the_csv_lacks_fails_at_plan_time(tmp_path, registry, monkeypatch):
    from benchmarks.scorers.q16 import Q16Scorer

    monkeypatch.setattr(Q16Scorer, "check", lambda self: None)  # its weights are not the point here (offline)
    path = write_csv(tmp_path)
    config = RunConfig(bench=f"csv:path={path},metrics=q16:inappropriate|q16:inappropriate-sexual", model="tiny", device="cpu",
                       out=str(tmp_path / "out"))
    with pytest.raises(HarnessError, match=r"metric q16:inappropriate-sexual needs the label 'categories' on every prompt; .* has none on 2 of 2"):
        plan(config, registry)
    labelled = write_csv(tmp_path, header="prompt,evaluation_seed,categories", rows='a cat,1,"sexual, violence"\na dog,2,\n')
    assert plan(dataclasses.replace(config, bench=f"csv:path={labelled},metrics=q16:inappropriate-sexual"), registry).benchmarks[0].specs


def test_fetching_a_gated_set_with_the_hub_unreachable_fails_at_once_without_retries(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    from harness import backbones

    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    for name in ("HF_HUB_OFFLINE", "HARNESS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    probes = []
    monkeypatch.setattr(backbones, "host_reachable", lambda host, timeout=1.5, port=443: probes.append(host) and False)

    def no_hub_call(*args, **kwargs):  # the hub client retries for ~25 s, printing each retry
        raise AssertionError("the hub must not be called when its host is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub_call)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", no_hub_call)
    code, stdout, stderr = cli(capsys, "data", "fetch", "mma")
    assert_one_line_failure(code, stdout, stderr, as_json=False)
    assert probes == ["huggingface.co"] and "(huggingface.co unreachable)" in stderr and "--data PATH" in stderr


@pytest.mark.parametrize(("option", "says"), [
    (["--methods", "uce:lamb=-1"], "uce.lamb must be ≥ 0; got -1.0"),
    (["--methods", "sld:sld_mom_beta=1.5"], "sld.sld_mom_beta must be ≥ 0 and ≤ 1; got 1.5"),
    (["--set", "esd-u.lr=0"], "esd-u.lr must be > 0; got 0.0"),
    (["--set", "esd-u.iterations=0"], "esd-u.iterations must be ≥ 1; got 0"),
    (["--methods", "esd-u:resolution=500"], "esd-u.resolution must be ≥ 0 and a multiple of 8; got 500"),
])
def test_method_parameters_are_bounded_too(capsys, option, says):
    code, stdout, stderr = cli(capsys, "run", "--model", "tiny", "--bench", "fixed", *option, "--dry-run")
    assert_one_line_failure(code, stdout, stderr, as_json=False)
    assert says in stderr


# --------------------------------------------------------------------------- malformed concept sets


@pytest.mark.parametrize(("text", "says"), [
    ('["red"]', "a concept set must be a JSON object, got the list [\"red\"]"),
    ("5", "a concept set must be a JSON object, got the number 5"),
    ('{"name": "x", "erase": 5}', "'erase' must be a list of strings, got the number 5"),
    ('{"name": "x", "erase": ["red"], "extra": []}', "'extra' must be a JSON object, got the list []"),
    ('{"name": ["x"], "erase": ["red"]}', "'name' must be a string, got the list [\"x\"]"),
    ('{"name": "x", "erase": "red", "guides": ["gray"]}', "'erase' must be a list of strings, got the string \"red\" (write [\"red\"])"),
    ('{"name": "x", "erase": ["red"], "guides": "gray"}', "'guides' must be a list of strings, got the string \"gray\" (write [\"gray\"])"),
    ('{"name": "x", "erase": ["red", 3]}', "'erase' must be a list of strings; item 2 is the number 3"),
    ('{"name": "x", "erase": ["red"], "phrases": ["ab"]}', "'phrases' must be a list of [malicious, safe] pairs of strings; item 1 is the string \"ab\""),
    ('{"name": "x", "erase": ["red"], "kind": "Style"}', "'kind' must be \"object\" or \"style\", got the string \"Style\""),
    ('{"name": "x", "erase": ["red"], "captions_file": 3}', "'captions_file' must be a string"),
])
def test_a_malformed_concept_file_is_one_line_naming_the_field(tmp_path, capsys, text, says):
    """Not a traceback, and never a string split into letters ("erase": "red" erasing 'r', 'e' and 'd')."""
    path = tmp_path / "concepts.json"
    path.write_text(text, encoding="utf-8")
    code, stdout, stderr = cli(capsys, "run", "--model", "tiny", "--bench", "fixed:count=2", "--methods", "uce",
                               "--concepts", str(path), "--out", str(tmp_path / "out"), "--dry-run")
    assert_one_line_failure(code, stdout, stderr, as_json=False)
    assert f"{path}: {says}" in stderr


def test_a_well_formed_concept_set_still_loads():
    from harness.api import ConceptSet

    concepts = ConceptSet.from_dict({"name": "x", "kind": "style", "erase": ["red", "crimson"], "guides": ["gray"],
                                     "phrases": [["a red cat", "a gray cat"]], "extra": {"notes": "n"}})
    assert concepts.erase == ("red", "crimson") and concepts.phrases == (("a red cat", "a gray cat"),)
    with pytest.raises(HarnessError, match=r"^<dict>: a concept set must be a JSON object, got the string \"red\"$"):
        ConceptSet.from_dict("red")


# --------------------------------------------------------------------------- a damaged database


def test_a_file_that_is_not_sqlite_is_one_line_and_left_as_it_was(tmp_path, capsys):
    out = tmp_path / "junk"
    out.mkdir()
    (out / "harness.db").write_bytes(b"not a database\n")
    for command in (["report", "--out", str(out)], ["run", "--model", "tiny", "--bench", "fixed:count=2", "--out", str(out), "--no-progress"]):
        code, stdout, stderr = cli(capsys, *command)
        assert_one_line_failure(code, stdout, stderr, as_json=False)
        assert (f"{out / 'harness.db'} is not a readable results database (file is not a database); "
                "restore it from a copy or choose another --out") in stderr
    assert files_under(out) == {"harness.db": b"not a database\n"}  # nothing written beside it either


def test_a_truncated_store_is_one_line(tmp_path, capsys):
    """What a copy cut short (rsync, NFS) looks like: SQLite finds the damage when the store is opened."""
    import sqlite3

    from harness.store import Store

    whole = tmp_path / "whole"
    Store(whole).close()
    db = sqlite3.connect(whole / "harness.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into harness.db itself, as a copy would have it
    db.close()
    data = (whole / "harness.db").read_bytes()
    out = tmp_path / "cut"
    out.mkdir()
    (out / "harness.db").write_bytes(data[: len(data) // 2])
    code, stdout, stderr = cli(capsys, "report", "--out", str(out))
    assert_one_line_failure(code, stdout, stderr, as_json=False)
    assert "is not a readable results database (database disk image is malformed)" in stderr


def test_damage_found_after_opening_is_one_line_but_sqlite_bugs_keep_their_traceback():
    import sqlite3

    from harness import failures

    assert "results database (harness.db) is damaged (database disk image is malformed)" in failures.user_error(
        sqlite3.DatabaseError("database disk image is malformed"))
    assert failures.user_error(sqlite3.IntegrityError("UNIQUE constraint failed")) is None
    assert failures.user_error(sqlite3.ProgrammingError("Cannot operate on a closed database.")) is None


def test_toy_train_writes_a_new_folder_unless_told_to_replace_the_committed_model(capsys):
    from benchmarks.toyworld import plugin
    from harness.cli import build_parser
    from harness.registry import Registry

    args = build_parser(Registry(PluginHost())).parse_args(["toy", "train"])
    assert args.out == "toy-model" and Path(args.out).resolve() != TOY_WEIGHTS_DIR.resolve()
    assert args.handler is plugin._train


@pytest.mark.parametrize(("index", "says"), [
    ({}, "its model_index.json must name each component's class"),
    ({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}, "check that each component's folder is there"),
])
def test_a_local_model_folder_diffusers_cannot_read_is_one_line(tmp_path, capsys, index, says):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps(index))
    path = write_csv(tmp_path)
    code, stdout, stderr = cli(capsys, "run", "--model", str(folder), "--bench", f"csv:path={path},metrics=brightness:mean",
                               "--out", str(tmp_path / "out"), "--no-progress")
    assert code == 2 and "Traceback" not in stderr, stderr  # the plan is printed first; then one line says what is wrong
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("harness: error: could not load") and says in last, stderr


@pytest.mark.parametrize(("bench", "says"), [
    ("coco:data={coco},subset=4", "FID needs the Inception weights"),
    ("csv:path={csv},metrics=q16:inappropriate", "the q16 scorer needs its prompts file prompts.p"),
    ("csv:path={csv},metrics=clip-score:clip-score", "the clip-score scorer needs 'openai/clip-vit-large-patch14'"),
])
def test_a_scorer_whose_weights_are_missing_offline_fails_at_plan_time(tmp_path, capsys, monkeypatch, bench, says):
    """Found by --dry-run, before the model loads: the real run used to make a whole benchmark's images first."""
    from benchmarks.scorers import fid

    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hugging Face cache
    monkeypatch.setattr(fid, "default_weights_path", lambda: tmp_path / "torch" / fid.WEIGHTS_FILE)
    for name in ("HARNESS_FID_WEIGHTS", "HARNESS_Q16_PROMPTS", "HARNESS_Q16_MODEL", "HARNESS_CLIP_SCORE_MODEL"):
        monkeypatch.delenv(name, raising=False)
    fixtures = Path(__file__).parent / "fixtures"
    bench = bench.format(coco=fixtures / "coco_sample.csv", csv=write_csv(tmp_path))
    code, stdout, stderr = cli(capsys, "run", "--model", "tiny", "--bench", bench, "--out", str(tmp_path / "out"), "--dry-run")
    errors = [line for line in stderr.splitlines() if not line.startswith("harness: warning:")]  # the sample isn't the pin
    assert code == 2 and len(errors) == 1 and errors[0].startswith("harness: error: ") and "Traceback" not in stderr, stderr
    assert says in errors[0] and stdout == ""


@pytest.mark.parametrize("command", ["run", "erase"])
def test_trce_t_without_its_pinned_captions_offline_fails_before_the_model_loads(tmp_path, capsys, monkeypatch, command):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))  # an empty data cache: coco30k is not there
    if command == "run":
        path = write_csv(tmp_path)
        argv = ["run", "--model", "tiny", "--methods", "trce-t", "--bench", f"csv:path={path},metrics=brightness:mean",
                "--concepts", "sexual", "--out", str(tmp_path / "out"), "--dry-run"]
    else:
        argv = ["erase", "--model", "tiny", "--method", "trce-t", "--concepts", "sexual", "--save", str(tmp_path / "saved")]
    code, stdout, stderr = cli(capsys, *argv)
    assert_one_line_failure(code, stdout, stderr, as_json=False)
    assert "trce-t preserves the captions of 'coco30k', which is not downloaded and cannot be (offline)" in stderr
    assert "--set trce-t.captions=PATH" in stderr


def test_data_fetch_takes_several_targets_and_groups_and_names_what_failed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    fixture = Path(__file__).parent / "fixtures" / "ring_a_bell_sample.csv"
    code, stdout, stderr = cli(capsys, "data", "fetch", "paper", "coco30k")  # offline: every download fails, each is named
    assert code == 2 and "Traceback" not in stderr
    *warnings_, last = stderr.strip().splitlines()
    assert last.startswith("harness: error: 8 of 8 could not be fetched (") and "i2p" in last and "coco30k" in last
    assert len(warnings_) == 8 and all(line.startswith("harness: warning: ") for line in warnings_)  # coco30k once
    code, stdout, stderr = cli(capsys, "data", "fetch", "i2p", "mma", "--data", str(fixture))
    assert_one_line_failure(code, stdout, stderr, as_json=False)
    assert "--data names one file, for one TARGET; got 2 (i2p, mma)" in stderr
