"""`harness run` / `harness report` end to end on the tiny backbone: results, resume after kill -9, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.api import HarnessError
from harness.cli import main
from harness.plugins import PluginHost
from harness.registry import Registry
from harness.runner import RunConfig, Runner, plan
from harness.store import Store

PLUGINS = Path(__file__).parent / "plugins"
BRIGHTNESS = str(PLUGINS / "brightness.py")
EDITS = str(PLUGINS / "edits.py")


def cli(capsys, *args):
    code = main(["--plugin", BRIGHTNESS, "--plugin", EDITS, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dry_run_counts_what_the_store_already_holds_without_loading_weights(tmp_path, capsys):
    out = str(tmp_path / "out")
    base = ["run", "--model", "tiny", "--bench", "fixed:count=6", "--out", out, "--no-progress"]
    code, stdout, _ = cli(capsys, *base, "--methods", "sd", "--dry-run")
    assert code == 0 and f"images: 6 (1 method × 6 each); no store at {out} yet" in stdout
    assert cli(capsys, *base, "--methods", "sd,scale-keys:factor=0.5")[0] == 0

    # the same plan plus one new method and one new parameter value: only theirs are to make
    code, stdout, _ = cli(capsys, *base, "--methods", "sd,scale-keys:factor=0.5,scale-keys:factor=0.25", "--dry-run")
    assert code == 0 and f"images: 18 (3 methods × 6 each); 12 already in the store at {out}, 6 to generate" in stdout
    assert ("erasures: scale-keys:factor=0.5 (colours): stored; "
            "scale-keys:factor=0.25 (colours): to compute (scale-keys:factor=0.25)") in stdout
    assert "attack cells" not in stdout  # said only when --attack is given
    # and it made nothing: a dry run writes no image and no model state
    store = Store(out, create=False)
    assert len(list((Path(out) / "cache" / "images").rglob("*.png"))) == 12 and len(store.db.execute("select key from model_states").fetchall()) == 1


def test_run_prints_a_leaderboard_and_report_reads_the_store(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = cli(capsys, "run", "--model", "tiny", "--methods", "sd,scale-keys:factor=0.5", "--bench", "fixed:count=6", "--out", str(out), "--no-progress")
    assert code == 0
    lines = stdout.splitlines()  # the terminal leaderboard: plain text, a benchmark line over a metric line
    assert "fixed:count=6" in lines[0] and "brightness ↑" in lines[1] and "dark rate (%) ↓" in lines[1] and "<ins>" not in stdout
    assert any(line.startswith("sd ") for line in lines) and any(line.startswith("scale-keys:factor=0.5 ") for line in lines)

    code, report, _ = cli(capsys, "report", "--out", str(out))
    assert code == 0 and stdout.strip() in report
    # erasure (lower-is-better rate) columns come before preservation columns
    assert "| method | fixed:count=6 dark rate (%) ↓ n=6 | fixed:count=6 brightness ↑ n=6 |" in (out / "report" / "leaderboard.md").read_text()
    assert (out / "report" / "leaderboard.csv").read_text().startswith("method,fixed:count=6/brightness:dark,fixed:count=6/brightness:mean")

    code, as_json, _ = cli(capsys, "report", "--out", str(out), "--json")
    records = json.loads(as_json)
    assert len(records) == 4  # 2 methods × 1 benchmark × 2 metrics
    record = next(r for r in records if r["method"] == "sd" and r["metric"] == "brightness:dark")
    assert record["n"] == 6 and record["lower_is_better"] is True and record["description"]
    assert record["unet_evals_per_image"] == 2 * 4  # CFG: two UNet evaluations per step, 4 steps

    manifest = json.loads(next((out / "runs").glob("*/manifest.json")).read_text())
    assert manifest["versions"]["torch"] and manifest["benchmarks"][0]["seeds"] == [1000 + i for i in range(6)]
    assert {p["name"] for p in manifest["plugins"]} >= {"methods", "brightness", "edits"}
    assert manifest["model_states"]["scale-keys:factor=0.5 / colours"][0]["factor"] == 0.5


def test_a_finished_run_does_no_work_when_repeated(tmp_path):
    registry = Registry(PluginHost([BRIGHTNESS, EDITS]))
    config = RunConfig(methods="sd,scale-keys", bench="fixed:count=4", model="tiny", out=str(tmp_path), show_progress=False)
    first = Runner(plan(config, registry))
    first.execute()
    assert first.engine.unet_calls > 0 and first.states.edits_run == 1
    second = Runner(plan(config, registry))
    second.execute()
    assert second.engine.unet_calls == 0 and second.states.edits_run == 0
    assert second.store.results() == first.store.results()


def test_kill_9_then_rerun_matches_an_uninterrupted_run(tmp_path):
    args = ["--plugin", BRIGHTNESS, "run", "--model", "tiny", "--methods", "sd", "--bench", "fixed:count=12,guidance=5",
            "--batch-size", "1", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", *args, "--out", str(killed)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    images = killed / "cache" / "images"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(images.glob("*/*.png"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = {p: p.stat().st_mtime_ns for p in images.glob("*/*.png")}
    assert 3 <= len(done_before) < 12, "the kill must land in the middle of generation"

    registry = Registry(PluginHost([BRIGHTNESS]))
    resumed = Runner(plan(RunConfig(methods="sd", bench="fixed:count=12,guidance=5", model="tiny", out=str(killed), batch_size=1,
                                    show_progress=False), registry))
    resumed.execute()
    assert resumed.engine.unet_calls == (12 - len(done_before)) * 4  # only the missing images were generated
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in done_before.items())

    clean = subprocess.run([sys.executable, "-m", "harness.cli", *args, "--out", str(tmp_path / "clean")], env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr

    def values(out):
        return sorted((r["metric"], r["value"], r["n"]) for r in Store(out).results())

    assert values(killed) == values(tmp_path / "clean")
    assert len(values(killed)) == 2


# --------------------------------------------------------------------------- bad input


def one_line_error(capsys, *args):
    code, _, err = cli(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["run", "--model", "tiny", "--methods", "scale-kyes", "--bench", "fixed"], "did you mean 'scale-keys'"),
        (["run", "--model", "tiny", "--bench", "fixd"], "did you mean 'fixed'"),
        (["run", "--model", "tiny", "--bench", "fixed", "--set", "lamb=0.1"], "NAME.PARAM=VALUE"),
        (["run", "--model", "tiny", "--bench", "fixed", "--set", "scale-keys.factr=2"], "did you mean 'factor'"),
        (["run", "--model", "tiny", "--bench", "fixed", "--set", "nosuch.x=2"], "neither a method nor a benchmark"),
        (["run", "--model", "tiny", "--methods", "scale-keys:factor=big", "--bench", "fixed"], "scale-keys.factor expects a number"),
        (["run", "--model", "tiny", "--bench", "fixed", "--limit", "0"], "--limit must be a positive number"),
        (["run", "--model", "/no/such/model/dir", "--bench", "fixed"], "does not exist"),
        (["run", "--bench", "fixed", "--concepts", "/no/such.json", "--model", "tiny"], "does not exist"),
        (["report", "--out", "/no/such/store"], "no results store"),
    ],
)
def test_bad_input_gets_one_line(capsys, tmp_path, args, expected):
    args = args + (["--out", str(tmp_path / "o")] if args[0] == "run" else [])
    assert expected in one_line_error(capsys, *args)


def test_unwritable_out_is_one_line(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    message = one_line_error(capsys, "run", "--model", "tiny", "--bench", "fixed", "--out", str(blocker / "sub"), "--no-progress")
    assert "cannot write to output directory" in message and "choose another --out" in message


def test_offline_hub_weights_fail_fast(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    message = one_line_error(capsys, "run", "--model", "someone/not-downloaded-model", "--bench", "fixed", "--out", str(tmp_path), "--no-progress")
    assert time.time() - start < 2
    assert "not in the local Hugging Face cache" in message and "--model /path/to/a/local/diffusers/folder" in message


def test_unreachable_hub_fails_fast_without_the_offline_flag(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.time()
    message = one_line_error(capsys, "run", "--model", "someone/not-downloaded-model", "--bench", "fixed", "--out", str(tmp_path), "--no-progress")
    assert time.time() - start < 2
    assert "hub cannot be reached" in message


def test_a_failing_command_keeps_finished_results(capsys, tmp_path):
    out = str(tmp_path / "out")
    assert cli(capsys, "run", "--model", "tiny", "--bench", "fixed:count=2", "--out", out, "--no-progress")[0] == 0
    one_line_error(capsys, "run", "--model", "tiny", "--methods", "nope", "--bench", "fixed", "--out", out)
    assert len(Store(out).results()) == 2


def test_csv_benchmark_errors_name_the_file_and_columns(capsys, tmp_path):
    bad = tmp_path / "prompts.csv"
    bad.write_text("text,evaluation_seed\nhello,1\n")
    message = one_line_error(capsys, "run", "--model", "tiny", "--bench", f"csv:path={bad}", "--out", str(tmp_path / "o"))
    assert str(bad) in message and "prompt" in message


def test_erase_exports_a_checkpoint_diffusers_loads(capsys, tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline

    concepts = tmp_path / "c.json"
    concepts.write_text(json.dumps({"name": "c", "erase": ["red"], "guides": ["gray"]}))
    save = tmp_path / "erased"
    code, stdout, err = cli(capsys, "erase", "--model", "tiny", "--method", "scale-keys:factor=0.5", "--concepts", str(concepts),
                            "--save", str(save), "--out", str(tmp_path / "o"))
    assert code == 0, err
    loaded = StableDiffusionPipeline.from_pretrained(save)
    from harness.testing import tiny_pipeline

    original = tiny_pipeline()
    for (name, new), (_, old) in zip(loaded.unet.named_parameters(), original.unet.named_parameters()):
        expected = old * 0.5 if "attn2.to_k" in name else old
        assert torch.equal(new, expected), name
    assert json.loads((save / "erasure.json").read_text())["metadata"][0]["factor"] == 0.5


def test_set_values_are_part_of_the_method_label_so_a_sweep_keeps_every_value(tmp_path, capsys):
    out = str(tmp_path / "out")
    base = ["run", "--model", "tiny", "--bench", "fixed:count=4", "--out", out, "--no-progress", "--methods", "sd,scale-keys"]
    assert cli(capsys, *base)[0] == 0
    assert cli(capsys, *base, "--set", "scale-keys.factor=3")[0] == 0  # once overwrote the first run's scale-keys results
    store = Store(out)
    labels = {(r["run_id"], r["method"]) for r in store.results()}
    runs = {run for run, _ in labels}
    assert len(runs) == 2 and {method for _, method in labels} == {"sd", "scale-keys", "scale-keys:factor=3"}
    states = {r["method"]: r["model_state"] for r in store.results() if r["method"] != "sd"}
    assert states["scale-keys"] != states["scale-keys:factor=3"]
    # written beside the name or given with --set: one label, one run id, one model state
    registry = Registry(PluginHost([BRIGHTNESS, EDITS]))
    config = dict(bench="fixed:count=4", model="tiny", out=out, show_progress=False)
    by_set = plan(RunConfig(methods="sd,scale-keys", sets=["scale-keys.factor=3"], **config), registry)
    written = plan(RunConfig(methods="sd,scale-keys:factor=3", **config), registry)
    assert by_set.run_id == written.run_id and [m.label for m in by_set.methods] == ["sd", "scale-keys:factor=3"]


def test_a_run_name_reused_for_another_configuration_is_said(tmp_path, capsys):
    """--run-name names what the user says it names: a second command under the same name with other methods or
    --limit replaced the first run's manifest without a word.  A resumed run (same command) says nothing."""
    out = str(tmp_path / "out")
    first = ["run", "--model", "tiny", "--bench", "fixed:count=2", "--out", out, "--no-progress", "--run-name", "mine", "--methods", "sd"]
    assert cli(capsys, *first)[0] == 0
    code, _, err = cli(capsys, *first)
    assert code == 0 and "started before with another configuration" not in err
    code, _, err = cli(capsys, *first[:-1], "sd,scale-keys")
    assert code == 0
    assert "run 'mine' was started before with another configuration (--methods 'sd' → 'sd,scale-keys')" in err and "new --run-name" in err
    # a run stored before a configuration field existed ran with that field's default: resuming it says nothing
    store = Store(out)
    config = json.loads(store.db.execute("SELECT config FROM runs WHERE id = 'mine'").fetchone()["config"])
    del config["seeds_per_prompt"], config["attack_budget"]
    store.db.execute("UPDATE runs SET config = ? WHERE id = 'mine'", (json.dumps(config),))
    store.close()
    code, _, err = cli(capsys, *first[:-1], "sd,scale-keys")
    assert code == 0 and "another configuration" not in err


def test_a_prompt_file_edited_between_two_runs_of_one_command_is_said(tmp_path, capsys):
    """The run id comes from the command: an edited CSV re-run under it replaced the cells without a word."""
    prompts, out = tmp_path / "p.csv", str(tmp_path / "out")
    prompts.write_text("prompt,evaluation_seed\na cat,1\na dog,2\n", encoding="utf-8")
    command = ["run", "--model", "tiny", "--bench", f"csv:path={prompts},metrics=brightness:mean", "--out", out, "--no-progress"]
    assert cli(capsys, *command)[0] == 0
    code, _, err = cli(capsys, *command)
    assert code == 0 and "changed since run" not in err  # the same file: a plain resume
    prompts.write_text("prompt,evaluation_seed\na cat,1\na bird,2\n", encoding="utf-8")
    code, _, err = cli(capsys, *command)
    assert code == 0 and "the prompt file of csv:" in err and "changed since run" in err and "give --run-name to keep both" in err


def test_a_part_of_a_composition_set_with_set_is_labelled_part_dot_key_and_that_label_runs_again(tmp_path):
    registry = Registry(PluginHost([BRIGHTNESS, EDITS]))
    config = dict(bench="fixed:count=4", model="tiny", out=str(tmp_path / "out"), show_progress=False)
    by_set = plan(RunConfig(methods="trce", sets=["trce-t.lamb=0.02"], **config), registry)
    (method,) = by_set.methods
    assert method.label == "trce:trce-t.lamb=0.02"
    assert [(part.name, part.params.lamb) for part, _ in method.parts if part.name == "trce-t"] == [("trce-t", 0.02)]
    again = plan(RunConfig(methods=method.label, **config), registry)
    assert again.run_id == by_set.run_id and [p.params for p, _ in again.methods[0].parts] == [p.params for p, _ in method.parts]
    # a key written for every part beside the name that a part's --set (or PART.key) gives another value: one of the
    # two would be dropped while the label kept naming it, so it is refused; the same value twice drops nothing
    for methods, sets in (("trce:lamb=0.5", ["trce-t.lamb=0.02"]), ("trce:lamb=0.5,trce-t.lamb=0.02", [])):
        with pytest.raises(HarnessError, match=r"trce-t\.lamb is given twice, trce:lamb=0\.5 \(for every part\) and trce-t\.lamb=0\.02"):
            plan(RunConfig(methods=methods, sets=sets, **config), registry)
    both = plan(RunConfig(methods="trce:lamb=0.5", sets=["trce-t.lamb=0.5"], **config), registry)
    assert [part.params.lamb for part, _ in both.methods[0].parts if part.name == "trce-t"] == [0.5]
    # one value written two ways is one setting, not two values (a run stored with such a pair can be planned again)
    for methods, sets in (("trce:lamb=0.5", ["trce-t.lamb=0.50"]), ("trce:lamb=0.5,trce-t.lamb=5e-1", []),
                          ("trce:trce-t.lamb=0.50", ["trce-t.lamb=.5"])):
        spelled = plan(RunConfig(methods=methods, sets=sets, **config), registry)
        assert [part.params.lamb for part, _ in spelled.methods[0].parts if part.name == "trce-t"] == [0.5]


def test_a_method_named_twice_is_refused_and_a_benchmark_named_twice_runs_once(tmp_path, capsys):
    out = str(tmp_path / "out")
    code, _, err = cli(capsys, "run", "--model", "tiny", "--bench", "fixed", "--out", out, "--methods", "sd,sd", "--dry-run")
    assert code == 2 and "names the same method twice ('sd'" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "run", "--model", "tiny", "--bench", "fixed", "--out", out, "--methods", "scale-keys:factor=3,scale-keys",
                       "--set", "scale-keys.factor=3", "--dry-run")
    assert code == 2 and "'scale-keys:factor=3'" in err
    code, stdout, _ = cli(capsys, "run", "--model", "tiny", "--bench", "fixed:count=4,fixed:count=4", "--out", out, "--methods", "sd", "--dry-run")
    assert code == 0 and "images: 4 (1 method × 4 each)" in stdout


def test_the_offline_hint_downloads_only_what_the_loaders_read():
    """The suggested `hf download` patterns, applied by huggingface_hub's own filter to the published file layout of
    CompVis/stable-diffusion-v1-4 (a bare download takes every weight variant: its unet folder holds 17.2 GB of which
    3.44 GB is loaded) and of a CLIP repository, keep the float32 safetensors, configs and tokenizer files only."""
    import shlex

    from huggingface_hub.utils import filter_repo_objects

    from harness.backbones import hf_download_command

    def kept(command: str, files: list[str]) -> set[str]:
        words = shlex.split(command)
        include = [words[i + 1] for i, word in enumerate(words) if word == "--include"]
        exclude = [words[i + 1] for i, word in enumerate(words) if word == "--exclude"]
        return set(filter_repo_objects(files, allow_patterns=include, ignore_patterns=exclude))

    weights = ["diffusion_pytorch_model" + variant + suffix for variant in ("", ".fp16", ".non_ema") for suffix in (".bin", ".safetensors")]
    # (a single-file checkpoint at the root, as SD v1.5 keeps two, is not what from_pretrained reads)
    sd_files = ["model_index.json", "README.md", "v1-variants-scores.jpg", "v1-5-pruned.safetensors", "v1-5-pruned-emaonly.ckpt",
                "scheduler/scheduler_config.json",
                "feature_extractor/preprocessor_config.json", "safety_checker/config.json", "safety_checker/model.safetensors",
                "safety_checker/pytorch_model.bin", "text_encoder/config.json", "text_encoder/model.safetensors",
                "text_encoder/model.fp16.safetensors", "text_encoder/pytorch_model.bin", "text_encoder/flax_model.msgpack",
                "tokenizer/merges.txt", "tokenizer/vocab.json", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
                *(f"{folder}/{name}" for folder in ("unet", "vae") for name in [*weights, "config.json", "diffusion_flax_model.msgpack"])]
    assert kept(hf_download_command("CompVis/stable-diffusion-v1-4", pipeline=True), sd_files) == {
        "model_index.json", "scheduler/scheduler_config.json", "feature_extractor/preprocessor_config.json",
        "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/merges.txt", "tokenizer/vocab.json",
        "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors"}
    clip_files = ["config.json", "merges.txt", "vocab.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                  "preprocessor_config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "README.md"]
    assert kept(hf_download_command("openai/clip-vit-large-patch14", pipeline=False), clip_files) == set(clip_files) - {
        "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "README.md"}


def test_the_offline_message_gives_the_filtered_download(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = one_line_error(capsys, "run", "--model", "someone/not-downloaded-model", "--bench", "fixed", "--out", str(tmp_path), "--no-progress")
    assert "hf download someone/not-downloaded-model --include '*.json'" in message and "--exclude '*fp16*'" in message
    from harness.backbones import hf_download_command

    assert hf_download_command("a;touch x/y", pipeline=False).startswith("hf download 'a;touch x/y' ")  # quoted for a shell


def test_planning_makes_each_scorer_once(registry, monkeypatch, tmp_path):
    """The plan's checks (every metric's labels, the scorer's weights, what --attack would score) share one instance
    of each scorer: a plugin whose constructor loads a model loads it once while planning, not once per metric."""
    from harness.runner import RunConfig, plan

    brightness = registry.get("scorers", "brightness")
    made = []
    original_init = brightness.__init__
    monkeypatch.setattr(brightness, "__init__", lambda self, *a, **k: (made.append(1), original_init(self, *a, **k))[1])
    config = RunConfig(model="tiny", methods="sd", bench="fixed,fixed:count=3", attacks="ring-a-bell:length=8", out=str(tmp_path),
                       show_progress=False)
    plan(config, registry)
    assert len(made) == 1  # two benchmarks × two metrics, the weights check and the attack check: one instance
