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


def test_the_fingerprint_tells_apart_a_sampler_class_and_a_tokenizer_the_weights_and_configs_do_not():
    """A plugin backbone with the same weights and another scheduler class sharing the config (or another tokenizer)
    draws other images; the fingerprint, and so every image key under it, named them alike."""
    import copy

    from diffusers import DDIMScheduler

    from harness.engine import pipeline_fingerprint, public_config
    from harness.tiny import tiny_pipeline

    pipe = tiny_pipeline()
    base = pipeline_fingerprint(pipe)
    assert pipeline_fingerprint(tiny_pipeline()) == base  # the same pipeline, loaded again

    class AnotherSampler(DDIMScheduler):  # same config, other steps
        pass

    other_sampler = copy.copy(pipe)
    other_sampler.scheduler = AnotherSampler.from_config(pipe.scheduler.config)
    assert public_config(other_sampler.scheduler.config) == public_config(pipe.scheduler.config)
    assert pipeline_fingerprint(other_sampler) != base

    other_tokenizer = copy.copy(pipe)
    other_tokenizer.tokenizer = copy.deepcopy(pipe.tokenizer)
    other_tokenizer.tokenizer.model_max_length -= 1
    assert pipeline_fingerprint(other_tokenizer) != base
    other_tokenizer.tokenizer = copy.deepcopy(pipe.tokenizer)
    other_tokenizer.tokenizer.add_tokens(["<a-learned-word>"])  # as textual inversion does
    assert pipeline_fingerprint(other_tokenizer) != base
    assert pipeline_fingerprint(pipe) == base  # the copies changed nothing of the original


def test_a_slow_bpe_tokenizer_is_fingerprinted_by_its_vocabulary_and_merges():
    """transformers < 5 loads CLIP's slow tokenizer (no backend_tokenizer): its vocabulary and merge ranks count."""
    from harness.engine import tokenizer_fingerprint

    class SlowBPE:
        model_max_length = 77

        def __init__(self, vocab, merges):
            self.vocab, self.bpe_ranks = vocab, merges

        def get_vocab(self):
            return dict(self.vocab)

    base = tokenizer_fingerprint(SlowBPE({"a": 0, "b": 1}, {("a", "b"): 0}))
    assert tokenizer_fingerprint(SlowBPE({"a": 0, "b": 1}, {("a", "b"): 0})) == base
    assert tokenizer_fingerprint(SlowBPE({"a": 0, "b": 2}, {("a", "b"): 0})) != base
    assert tokenizer_fingerprint(SlowBPE({"a": 0, "b": 1}, {("b", "a"): 0})) != base
