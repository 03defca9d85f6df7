"""The engine keeps the text embeddings of one model state only: device memory does not grow with methods × prompts."""

from pathlib import Path

import numpy as np
import torch

from harness.api import PromptSpec
from harness.engine import ActiveState, Defaults, Engine
from harness.plugins import PluginHost
from harness.registry import Registry
from harness.runner import RunConfig, Runner, plan
from harness.store import Store

PLUGINS = Path(__file__).parent / "plugins"
METHODS = "sd,scale-keys:factor=0.3,scale-keys:factor=0.7,shift-keys"


def run(methods: str, out: Path) -> Runner:
    registry = Registry(PluginHost([str(PLUGINS / "brightness.py"), str(PLUGINS / "edits.py")]))
    runner = Runner(plan(RunConfig(methods=methods, bench="fixed:count=4", model="tiny", out=str(out), show_progress=False), registry))
    runner.execute()
    return runner


def image_bytes(runner: Runner) -> dict[tuple[str, str], bytes]:
    rows = runner.store.db.execute("SELECT method, spec_id, image_key FROM run_images WHERE run_id=?", (runner.plan.run_id,))
    return {(row["method"], row["spec_id"]): runner.store.image_path(row["image_key"]).read_bytes() for row in rows}


def test_after_several_methods_only_the_last_states_embeddings_are_held_and_images_are_unchanged(tmp_path):
    together = run(METHODS, tmp_path / "together")
    engine = together.engine
    prompts = {spec.prompt for planned in together.plan.benchmarks for spec in planned.specs}
    last, (planned,) = together.plan.methods[-1], together.plan.benchmarks
    assert engine._embeddings_state == together.states.chain_keys(last.parts, planned.concepts)[-1]  # shift-keys's
    assert set(engine._embeddings) == prompts | {""}  # one state's prompts and the empty negative prompt, not 4 × that
    # Each method in a process of its own (nothing embedded before it) makes the same images, byte for byte.
    alone = {}
    for method in METHODS.split(","):
        alone.update(image_bytes(run(method, tmp_path / method.replace(":", "_"))))
    assert image_bytes(together) == alone and len(alone) == 4 * 4


def test_a_state_embedded_again_after_another_gives_the_same_images(tiny, tmp_path):
    """The text encoder differs between the states: a stale embedding would show, and a recomputed one must not."""
    engine = Engine(tiny, Store(tmp_path), "tiny-fp", Defaults(steps=4, height=32, width=32), "cpu", "float32", show_progress=False)
    specs = [engine.resolve(PromptSpec(id=str(i), prompt=f"a red thing {i % 2}", seed=5 + i)) for i in range(3)]
    base, edited = ActiveState(key="base", label="sd"), ActiveState(key="edited", label="edited")
    first = engine.sample(specs, base)
    weight = tiny.text_encoder.get_input_embeddings().weight
    original = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(0.5)
        other = engine.sample(specs, edited)
        assert set(engine._embeddings) == {"a red thing 0", "a red thing 1", ""} and engine._embeddings_state == "edited"
    finally:
        with torch.no_grad():
            weight.copy_(original)
    again = engine.sample(specs, base)
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, other))  # the edit is visible
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again))
