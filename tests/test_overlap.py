"""Scoring overlapped with generation (harness/overlap.py): every generated image is scored by the thread."""

import json
import threading
from pathlib import Path

import pytest

from harness.overlap import Overlap
from harness.plugins import PluginHost
from harness.registry import Registry
from harness.runner import RunConfig, Runner, plan

PLUGINS = Path(__file__).parent / "plugins"


def _runner(out, **config):
    registry = Registry(PluginHost([str(PLUGINS / "brightness.py"), str(PLUGINS / "edits.py")]))
    return Runner(plan(RunConfig(model="tiny", out=str(out), show_progress=False, **config), registry))


def test_images_are_scored_while_the_next_batch_is_generated(tmp_path, monkeypatch):
    runner = _runner(tmp_path, methods="sd,scale-keys", bench="fixed:count=12", batch_size=2)
    scored_in = []
    original = type(runner.scorer("brightness")).score

    def recording(self, images, specs):
        scored_in.append(threading.current_thread().name)
        return original(self, images, specs)

    monkeypatch.setattr(type(runner.scorer("brightness")), "score", recording)
    runner.execute()
    # Every batch was scored by the scorer thread; the scoring pass after generation found nothing left to score.
    assert scored_in == ["harness-scorer"] * 12  # 2 methods × 6 batches of 2
    manifest = json.loads(next((tmp_path / "runs").glob("*/manifest.json")).read_text())
    overlap = manifest["overlap"]
    assert overlap["images_scored_during_generation"] == 24
    assert 0 <= overlap["hidden_s"] <= overlap["scoring_s"] and 0 <= overlap["hidden_share"] <= 1
    # The values are those of scoring afterwards: a fresh store scored without the thread agrees.
    again = _runner(tmp_path / "plain", methods="sd,scale-keys", bench="fixed:count=12", batch_size=2)
    monkeypatch.setattr("harness.overlap.Overlap.submit", lambda self, batch: None)
    again.execute()
    values = lambda store: sorted((r["method"], r["metric"], r["value"]) for r in store.results())  # noqa: E731
    assert values(again.store) == values(runner.store)


def test_an_error_in_the_scorer_thread_is_raised_in_the_run(tmp_path):
    from harness.api import Scorer

    class Failing(Scorer):  # registered scorers are Scorer subclasses (the registry refuses others)
        name, version = "failing", "1"

        def score(self, images, specs):
            raise ValueError("detector weights are corrupt")

    from PIL import Image

    from harness.store import Store

    store = Store(tmp_path)
    store.image_path("0" * 64).parent.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(store.image_path("0" * 64))
    store.close()
    with pytest.raises(ValueError, match="detector weights are corrupt"):
        with Overlap(tmp_path, [Failing()]) as overlap:
            for _ in range(8):  # more than the queue holds: a failed thread must not block the generating side
                overlap.submit([("0" * 64, None)])


@pytest.mark.parametrize("batches", [1, 8], ids=["one batch", "more than the queue holds"])
def test_a_scorer_thread_that_cannot_open_the_store_fails_the_block_with_its_cause(tmp_path, monkeypatch, batches):
    """Its error surfaced as "threads can only be started once" (a second start of the dead thread), or not at all
    with a single batch."""
    import sqlite3

    from harness.api import HarnessError
    from harness.store import Store

    class Scorer:
        name, version = "unused", "1"

        def score(self, images, specs):
            raise AssertionError("nothing can be scored without the store")

    original = Store.__init__

    def locked_in_the_thread(self, *args, **kwargs):
        if threading.current_thread().name == "harness-scorer":
            raise sqlite3.OperationalError("database is locked")
        original(self, *args, **kwargs)

    monkeypatch.setattr(Store, "__init__", locked_in_the_thread)
    with pytest.raises(HarnessError, match="could not open the store .*database is locked") as caught:
        with Overlap(tmp_path, [Scorer()]) as overlap:
            for _ in range(batches):
                overlap.submit([("0" * 64, None)])
    assert "\n" not in str(caught.value)
