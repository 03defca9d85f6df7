"""The ``checkpoint`` method: every accepted layout loads the weights it holds, and a misfit fails with one line."""

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from harness.api import ConceptSet, HarnessError
from harness.engine import ModelStates, pipeline_fingerprint
from harness.store import Store
from harness.testing import tiny_target
from methods.checkpoint import Checkpoint

CONCEPTS = ConceptSet(name="test", erase=("red",), guides=("gray",))
TO_K = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
TEXT_Q = "encoder.layers.0.self_attn.q_proj.weight"  # CLIPTextModel's own name under transformers 5


@pytest.fixture
def states(tiny, tmp_path):
    states = ModelStates(tiny, Store(tmp_path / "store"), pipeline_fingerprint(tiny), tiny_target(), show_progress=False)
    yield states
    states.reset()


def load(states, path, **params):
    method = Checkpoint(Checkpoint.Params(path=str(path), **params))
    return states.activate([(method, "ckpt")], CONCEPTS, "ckpt")


def edited_unet_state(tiny):
    state = {name: tensor.clone() for name, tensor in tiny.unet.state_dict().items()}
    state[TO_K] = state[TO_K] * 0.5 + 0.01
    return state


def test_a_unet_safetensors_file_changes_exactly_its_changed_weights(states, tiny, tmp_path):
    state = edited_unet_state(tiny)
    save_file(state, str(tmp_path / "unet.safetensors"))
    active = load(states, tmp_path / "unet.safetensors")
    assert torch.equal(tiny.unet.state_dict()[TO_K], state[TO_K])
    assert states.applied == {f"unet.{TO_K}"}  # the delta holds only the one weight that differs
    assert active.metadata[0]["provenance"].startswith("checkpoint ")
    assert active.metadata[0]["tensors_loaded"]["unet"] == len(dict(tiny.unet.named_parameters()))


def test_a_unet_only_folder_and_a_model_folder_load_the_same(states, tiny, tmp_path):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(tiny.unet.config)
    unet.load_state_dict(edited_unet_state(tiny))
    unet.save_pretrained(tmp_path / "only" / "unet")
    load(states, tmp_path / "only")
    assert states.applied == {f"unet.{TO_K}"}
    load(states, tmp_path / "only" / "unet")  # the model folder itself
    assert states.applied == {f"unet.{TO_K}"}


def test_a_text_encoder_only_file_edits_only_the_text_encoder(states, tiny, tmp_path):
    weight = tiny.text_encoder.state_dict()[TEXT_Q].clone()
    # Released text-encoder checkpoints (AdvUnlearn) were written by transformers 4, under "text_model.".
    save_file({f"text_model.{TEXT_Q}": weight + 1.0}, str(tmp_path / "te.safetensors"))
    load(states, tmp_path / "te.safetensors")
    assert states.applied == {f"text_encoder.{TEXT_Q}"}
    assert torch.equal(tiny.text_encoder.state_dict()[TEXT_Q], weight + 1.0)


@pytest.mark.parametrize("style", ["peft", "diffusers", "processor"])
def test_a_lora_is_merged_as_scale_alpha_over_rank_b_times_a(states, tiny, tmp_path, style):
    module = TO_K.removesuffix(".weight")
    out_features, in_features = tiny.unet.state_dict()[TO_K].shape
    generator = torch.Generator().manual_seed(0)
    down, up = torch.randn(2, in_features, generator=generator), torch.randn(out_features, 2, generator=generator)
    if style == "peft":
        tensors = {f"unet.{module}.lora_A.weight": down, f"unet.{module}.lora_B.weight": up, f"unet.{module}.alpha": torch.tensor(1.0)}
        expected_scale = 0.5 * 1.0 / 2  # lora_scale · alpha / rank
    elif style == "diffusers":
        tensors = {f"unet.{module}.lora.down.weight": down, f"unet.{module}.lora.up.weight": up}
        expected_scale = 0.5
    else:  # the attention-processor layout of diffusers' first LoRA scripts
        attention = module.removesuffix(".to_k")
        tensors = {f"{attention}.processor.to_k_lora.down.weight": down, f"{attention}.processor.to_k_lora.up.weight": up}
        expected_scale = 0.5
    (tmp_path / "lora").mkdir()
    save_file(tensors, str(tmp_path / "lora" / "pytorch_lora_weights.safetensors"))
    before = tiny.unet.state_dict()[TO_K].clone()
    active = load(states, tmp_path / "lora", lora_scale=0.5)
    torch.testing.assert_close(tiny.unet.state_dict()[TO_K], before + expected_scale * up @ down)
    assert active.metadata[0]["lora_modules_merged"] == 1


def test_a_legacy_pt_state_dict_loads_with_weights_only(states, tiny, tmp_path):
    state = edited_unet_state(tiny)
    torch.save({"state_dict": state}, tmp_path / "erased.pt")
    load(states, tmp_path / "erased.pt")
    assert states.applied == {f"unet.{TO_K}"}


class NotATensor:  # a pickled Python object: only unrestricted unpickling could build it
    pass


def test_a_checkpoint_needing_unrestricted_unpickling_is_refused_with_a_conversion_hint(states, tiny, tmp_path):
    with open(tmp_path / "model.ckpt", "wb") as handle:
        pickle.dump({"model": NotATensor(), TO_K: torch.zeros(1)}, handle)
    before = {k: v.clone() for k, v in tiny.unet.state_dict().items()}
    with pytest.raises(HarnessError) as err:
        load(states, tmp_path / "model.ckpt")
    message = str(err.value)
    assert "\n" not in message and "weights_only=True" in message and "save_file" in message
    assert all(torch.equal(before[k], v) for k, v in tiny.unet.state_dict().items())


def test_wrong_shapes_fail_with_one_line_before_any_weight_changes(states, tiny, tmp_path):
    state = edited_unet_state(tiny)
    state[TO_K] = torch.zeros(7, 3)
    state["an.unknown.key"] = torch.zeros(1)
    save_file(state, str(tmp_path / "other.safetensors"))
    before = {k: v.clone() for k, v in tiny.unet.state_dict().items()}
    with pytest.raises(HarnessError) as err:
        load(states, tmp_path / "other.safetensors")
    message = str(err.value)
    assert "\n" not in message and "1 shape mismatches" in message and "[7, 3]" in message and "'an.unknown.key'" in message
    assert all(torch.equal(before[k], v) for k, v in tiny.unet.state_dict().items())


def test_an_ldm_layout_file_is_refused_with_the_conversion_script(states, tmp_path):
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(tmp_path / "sd.safetensors"))
    with pytest.raises(HarnessError, match="convert_original_stable_diffusion_to_diffusers"):
        load(states, tmp_path / "sd.safetensors")


def test_a_missing_path_is_refused_when_the_parameters_are_built(tmp_path):
    with pytest.raises(HarnessError, match="does not exist"):
        Checkpoint.Params(path=str(tmp_path / "nothing"))
    with pytest.raises(HarnessError, match="needs path="):
        Checkpoint.Params()


def test_the_cache_key_follows_the_file_content(tiny, tmp_path):
    path = tmp_path / "unet.safetensors"
    save_file({TO_K: tiny.unet.state_dict()[TO_K] + 1}, str(path))
    first = Checkpoint(Checkpoint.Params(path=str(path))).params_dict()["sha256"]
    save_file({TO_K: tiny.unet.state_dict()[TO_K] + 2}, str(path))
    assert Checkpoint(Checkpoint.Params(path=str(path))).params_dict()["sha256"] != first


def test_a_pipeline_with_another_vae_is_refused(states, tiny, tmp_path):
    from harness.testing import tiny_pipeline

    other = tiny_pipeline(seed=5)  # same architecture, different weights everywhere: another base model
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(HarnessError, match="VAE that differs"):
        load(states, tmp_path / "other")


def test_erase_save_round_trips_into_identical_results_and_images(tmp_path, capsys):
    """`harness erase --save D` then `checkpoint:path=D` gives the method's own numbers and the same pixels."""
    from pathlib import Path

    from harness.cli import main

    plugins = Path(__file__).parent / "plugins"
    args = ["--plugin", str(plugins / "brightness.py"), "--plugin", str(plugins / "edits.py")]
    concepts = tmp_path / "c.json"
    concepts.write_text(json.dumps({"name": "c", "erase": ["red"], "guides": ["gray"]}))
    save, out = tmp_path / "erased", tmp_path / "out"
    assert main([*args, "erase", "--model", "tiny", "--method", "scale-keys:factor=0.5", "--concepts", str(concepts),
                 "--save", str(save), "--out", str(out)]) == 0
    assert "Writing model shards" not in capsys.readouterr().err  # transformers' per-component bar is kept quiet
    assert main([*args, "run", "--model", "tiny", "--methods", f"ckpt:path={save},label=mine,scale-keys:factor=0.5", "--bench", "fixed:count=6",
                 "--concepts", str(concepts), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    # the terminal table names the row as the user did, not by its typed selection clipped in the middle
    assert any(line.startswith("mine ") for line in printed.splitlines()), printed
    assert not any(line.startswith("ckpt:") for line in printed.splitlines()), printed
    assert f"mine = ckpt:label=mine,path={save}" in printed  # the typed selection, whole, under the table
    store = Store(out)
    by_method, shown = {}, {}
    for row in store.results():
        by_method.setdefault(row["method"], {})[row["metric"]] = row["value"]
        shown[row["method"]] = row["method_display"]
    mine = f"ckpt:label=mine,path={save}"
    assert set(by_method) == {mine, "scale-keys:factor=0.5"}
    assert shown[mine] == "mine"  # label= names the leaderboard row; the stored label stays the full selection
    assert by_method[mine] == by_method["scale-keys:factor=0.5"]
    images = {}
    for method in by_method:
        keys = [row["image_key"] for row in store.db.execute("SELECT image_key FROM run_images WHERE method = ? ORDER BY spec_id", (method,))]
        images[method] = [np.asarray(Image.open(store.image_path(key)).convert("RGB")) for key in keys]
    assert len(images[mine]) == 6  # the same pixels (the PNGs differ only in the model-state key they record)
    assert all(np.array_equal(a, b) for a, b in zip(images[mine], images["scale-keys:factor=0.5"]))


@pytest.mark.toy
@pytest.mark.slow
def test_toy_trce_t_checkpoint_gives_the_same_values_as_trce_t(tmp_path, capsys):
    """The issue's done-when: erase --save on the toy world, then both rows of one run agree exactly (16 prompts)."""
    from harness.cli import main

    save, out = tmp_path / "D", tmp_path / "out"
    assert main(["erase", "--model", "toy", "--method", "trce-t", "--concepts", "toy-red", "--save", str(save), "--out", str(out)]) == 0
    assert main(["run", "--model", "toy", "--methods", f"checkpoint:path={save},trce-t", "--bench", "toy-explicit", "--limit", "16",
                 "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    values = {}
    for row in Store(out).results():
        values.setdefault(row["method"], {})[row["metric"]] = (row["value"], row["n"])
    assert set(values) == {f"checkpoint:path={save}", "trce-t"}
    assert values[f"checkpoint:path={save}"] == values["trce-t"] and values["trce-t"]["toy:toy-asr"][1] == 16


def test_safegens_float16_vae_and_text_encoder_are_the_backbones_not_another_model_or_an_edit(states, tiny, tmp_path):
    """SafeGen's official script (LetterLiGo/SafeGen_CCS2024@44c7310, run_adjust_SD.sh: --mixed_precision=fp16) saves the
    pipeline with its trained UNet in float32 and the frozen VAE and text encoder cast to float16."""
    import copy

    saved = copy.deepcopy(tiny)
    with torch.no_grad():
        saved.unet.get_parameter(TO_K).mul_(0.5)
    saved.vae.to(torch.float16)
    saved.text_encoder.to(torch.float16)
    saved.save_pretrained(tmp_path / "safegen")
    text_before = {k: v.clone() for k, v in tiny.text_encoder.state_dict().items()}
    active = load(states, tmp_path / "safegen")
    assert states.applied == {f"unet.{TO_K}"}  # float16 rounding of the text encoder is not an edit
    assert all(torch.equal(text_before[k], v) for k, v in tiny.text_encoder.state_dict().items())
    metadata = active.metadata[0]
    assert metadata["vae_matches_backbone"] is True
    assert metadata["tensors_loaded"]["text_encoder"] == 0
    assert metadata["tensors_unchanged"]["text_encoder"] == len(dict(tiny.text_encoder.named_parameters()))
    assert metadata["checkpoint_dtypes"] == {"unet": ["float32"], "text_encoder": ["float16"]}


def test_a_lower_precision_tensor_that_differs_is_still_loaded(states, tiny, tmp_path):
    weight = tiny.text_encoder.state_dict()[TEXT_Q]
    edited = (weight + 1.0).to(torch.bfloat16)  # a fine-tune saved in bf16: these are its weights, rounding and all
    save_file({f"text_model.{TEXT_Q}": edited}, str(tmp_path / "te.safetensors"))
    load(states, tmp_path / "te.safetensors")
    assert states.applied == {f"text_encoder.{TEXT_Q}"}
    assert torch.equal(tiny.text_encoder.state_dict()[TEXT_Q], edited.float())


def test_a_float16_vae_of_another_model_is_still_refused(states, tiny, tmp_path):
    from harness.testing import tiny_pipeline

    other = tiny_pipeline(seed=5)
    other.vae.to(torch.float16)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(HarnessError, match="VAE that differs"):
        load(states, tmp_path / "other")


def test_a_float16_copy_of_the_text_encoder_changes_nothing(states, tiny, tmp_path):
    import copy

    copy.deepcopy(tiny.text_encoder).to(torch.float16).save_pretrained(tmp_path / "te16" / "text_encoder")
    active = load(states, tmp_path / "te16")
    assert states.applied == set()
    assert active.metadata[0]["tensors_unchanged"]["text_encoder"] == len(dict(tiny.text_encoder.named_parameters()))


def test_a_pre_zip_legacy_pt_file_loads_weights_only_without_mmap(states, tiny, tmp_path):
    # torch < 1.6's format: mmap cannot read it, but weights_only=True can, so it is not "unrestricted unpickling".
    torch.save(edited_unet_state(tiny), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    load(states, tmp_path / "legacy.pt")
    assert states.applied == {f"unet.{TO_K}"}


def test_a_corrupt_pt_file_is_refused_without_suggesting_unrestricted_unpickling(states, tiny, tmp_path):
    torch.save(edited_unet_state(tiny), tmp_path / "whole.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:1000])
    with pytest.raises(HarnessError) as err:
        load(states, tmp_path / "cut.pt")
    message = str(err.value)
    assert "\n" not in message and "not a readable torch file" in message
    assert "weights_only=False" not in message and "unrestricted" not in message


@pytest.mark.parametrize("step, warned", [(1e-6, True), (0.05, False)], ids=["updates-below-half-ulp", "large-updates"])
def test_a_float32_checkpoint_in_a_float16_pipeline_reports_what_the_cast_kept(tiny, tmp_path, step, warned):
    """A float32 fine-tune run with --dtype float16: updates below half a float16 unit round away.  The metadata says
    what share of the edited elements moved, a warning says so when fewer than half did, and the stored delta keeps the
    checkpoint's float32 values (not their rounded copies)."""
    import copy
    import warnings

    from safetensors.torch import load_file

    half = copy.deepcopy(tiny).to(torch.float16)
    states = ModelStates(half, Store(tmp_path / "store"), pipeline_fingerprint(half), tiny_target("float16"), show_progress=False)
    state = {name: tensor.float().clone() for name, tensor in half.unet.state_dict().items()}
    state[TO_K] = state[TO_K] + step
    save_file(state, str(tmp_path / "unet.safetensors"))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            active = load(states, tmp_path / "unet.safetensors")
        lost = [w for w in caught if "round away" in str(w.message)]
        metadata = active.metadata[0]
        assert metadata["cast_to"] == "float16"
        if warned:
            assert len(lost) == 1 and "--dtype float32" in str(lost[0].message)
            assert metadata["edited_elements_moved_share"] < 0.5
        else:
            assert not lost and metadata["edited_elements_moved_share"] > 0.9
            assert metadata["edited_tensors_narrowed"] == 1  # the untouched float32 tensors round back: not edits
        if metadata["edited_tensors_narrowed"]:
            delta = load_file(str(next((tmp_path / "store").rglob("*.safetensors"))))
            assert set(delta) == {f"unet.{TO_K}"}
            assert delta[f"unet.{TO_K}"].dtype == torch.float32 and torch.equal(delta[f"unet.{TO_K}"], state[TO_K])
    finally:
        states.reset()


def test_the_convert_hint_is_one_safe_command_for_any_file_name(tmp_path):
    """The printed command is pasted into a shell: a file name with quotes or $(...) must stay a file name."""
    import ast
    import shlex

    from methods.checkpoint import convert_hint

    hostile = tmp_path / "a'$(touch pwned)'\"b.pt"
    words = shlex.split(convert_hint(hostile).split(": ", 1)[1])
    assert words[:2] == ["python", "-c"] and len(words) == 3
    calls = [node for node in ast.walk(ast.parse(words[2])) if isinstance(node, ast.Call)]
    load = next(c for c in calls if getattr(c.func, "attr", "") == "load")
    save = next(c for c in calls if getattr(c.func, "id", "") == "save_file")
    assert load.args[0].value == str(hostile) and save.args[1].value == str(hostile.with_suffix(".safetensors"))


def test_erase_save_that_fails_half_way_leaves_nothing_and_the_rerun_succeeds(tmp_path, capsys, monkeypatch):
    """A full disk while safetensors writes (its own error type, not an OSError) was a traceback that left a partial
    pipeline under --save, which then refused the re-run as "not empty".  Now: one line, nothing left, re-run works."""
    from pathlib import Path

    from harness import cli
    from harness.cli import main

    plugins = Path(__file__).parent / "plugins"
    args = ["--plugin", str(plugins / "edits.py")]
    concepts = tmp_path / "c.json"
    concepts.write_text(json.dumps({"name": "c", "erase": ["red"], "guides": ["gray"]}))
    save, out = tmp_path / "erased", tmp_path / "out"
    command = [*args, "erase", "--model", "tiny", "--method", "scale-keys:factor=0.5", "--concepts", str(concepts),
               "--save", str(save), "--out", str(out)]

    class SafetensorError(Exception):  # what safetensors raises, by its message
        pass

    def full_disk(pipe, folder):
        (Path(folder) / "vae").mkdir(parents=True)
        (Path(folder) / "vae" / "config.json").write_text("{}")
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left on device\" })")

    monkeypatch.setattr(cli, "_save_quietly", full_disk)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on device" in err and "Traceback" not in err
    assert not save.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    save.mkdir()  # an empty folder made beforehand (a mounted volume, or --save .): staged inside, left empty on failure
    assert main(command) == 2 and "no space left on device" in capsys.readouterr().err
    assert list(save.iterdir()) == []
    monkeypatch.undo()
    assert main(command) == 0
    assert (save / "erasure.json").exists() and (save / "unet").is_dir() and not [p for p in save.iterdir() if p.name.startswith(".")]


def test_a_lora_into_a_bfloat16_pipeline_is_merged_in_float32_and_its_rounding_said(tmp_path):
    """W + B·A is formed in float32 and rounded once (it was added in bfloat16, rounding the update as well); the
    model state keeps the exact float32 sum, and the share of elements that moved is recorded, as for a full file."""
    from safetensors.torch import load_file

    from harness.testing import tiny_pipeline

    pipe = tiny_pipeline(dtype="bfloat16")
    states = ModelStates(pipe, Store(tmp_path / "store"), pipeline_fingerprint(pipe), tiny_target("bfloat16"), show_progress=False)
    module = TO_K.removesuffix(".weight")
    out_features, in_features = pipe.unet.state_dict()[TO_K].shape
    generator = torch.Generator().manual_seed(0)
    down, up = torch.randn(2, in_features, generator=generator), 2e-4 * torch.randn(out_features, 2, generator=generator)
    (tmp_path / "lora").mkdir()
    save_file({f"unet.{module}.lora.down.weight": down, f"unet.{module}.lora.up.weight": up}, str(tmp_path / "lora" / "pytorch_lora_weights.safetensors"))
    before = pipe.unet.state_dict()[TO_K].float().clone()
    exact = before + up @ down
    with pytest.warns(UserWarning, match="round away"):
        active = load(states, tmp_path / "lora")
    merged = pipe.unet.state_dict()[TO_K]
    assert torch.equal(merged, exact.to(torch.bfloat16))  # rounded once
    metadata = active.metadata[0]
    moved = float((merged.float() != before).float().mean())
    assert metadata["cast_to"] == "bfloat16" and metadata["edited_elements_moved_share"] == pytest.approx(moved, abs=1e-4) and moved < 0.9
    delta = load_file(str(states.store.delta_path(active.key)))
    assert torch.equal(delta[f"unet.{TO_K}"], exact)  # the stored weight is the float32 sum, not its rounding
    states.reset()
