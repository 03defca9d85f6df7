"""A finished matrix costs no model loading; adding a benchmark generates only its images (harness/lazy.py)."""

import json
import os
from pathlib import Path

from harness.lazy import PipelineSource, folder_identity
from harness.plugins import PluginHost
from harness.registry import Registry
from harness.runner import RunConfig, Runner, plan
from harness.testing import tiny_target

PLUGINS = Path(__file__).parent / "plugins"


def _registry():
    return Registry(PluginHost([str(PLUGINS / "brightness.py"), str(PLUGINS / "edits.py")]))


def _run(out, bench, methods="sd,scale-keys"):
    runner = Runner(plan(RunConfig(methods=methods, bench=bench, model="tiny", out=str(out), show_progress=False), _registry()))
    runner.execute()
    return runner


def test_a_rerun_of_a_finished_matrix_loads_no_model(tmp_path):
    first = _run(tmp_path, "fixed:count=4")
    assert first.source.loads == 1 and first.states.edits_run == 1
    second = _run(tmp_path, "fixed:count=4")
    assert second.source.loads == 0 and second.engine.unet_calls == 0 and second.states.edits_run == 0
    assert second.store.results() == first.store.results()
    manifest = json.loads(next((tmp_path / "runs").glob("*/manifest.json")).read_text())
    assert manifest["pipeline_loaded"] is False
    # The model state's metadata is read back from the store, not lost because the edit did not run.
    assert manifest["model_states"]["scale-keys / colours"][0]["factor"] == 0.5


def test_adding_a_benchmark_generates_only_its_images(tmp_path):
    _run(tmp_path, "fixed:count=4")
    images = {p.name for p in (tmp_path / "cache" / "images").rglob("*.png")}
    grown = _run(tmp_path, "fixed:count=4,fixed:count=6,guidance=3")
    new = {p.name for p in (tmp_path / "cache" / "images").rglob("*.png")} - images
    assert grown.source.loads == 1
    assert len(new) == 2 * 6  # two methods × the new benchmark's 6 prompts; the 2 × 4 old images untouched
    assert grown.engine.unet_calls == 2 * 4  # one batch of 6 per method, 4 steps, CFG in one call
    assert grown.states.edits_run == 0  # the edit's delta comes from the cache


def test_the_fingerprint_comes_from_the_store_once_the_identity_was_seen(tmp_path):
    from harness.store import Store

    store = Store(tmp_path)
    first = PipelineSource(target=tiny_target(), store=store)
    fingerprint = first.fingerprint()
    second = PipelineSource(target=tiny_target(), store=store)
    assert second.fingerprint() == fingerprint and second.loads == 0 and first.loads == 1
    other_dtype = PipelineSource(target=tiny_target("bfloat16"), store=store)
    assert other_dtype.identity_key() != first.identity_key()


def test_folder_identity_changes_when_a_weight_file_is_rewritten(tmp_path):
    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"0" * 16)
    before = folder_identity(tmp_path)
    assert folder_identity(tmp_path) == before
    os.utime(weights, ns=(1, 1))
    assert folder_identity(tmp_path) != before
    touched = folder_identity(tmp_path)
    weights.write_bytes(b"0" * 17)
    os.utime(weights, ns=(1, 1))
    assert folder_identity(tmp_path) != touched  # same time, other size
