"""A set-level score (drift, FID's stand-in) follows its images' contents: an image generated again with other bytes
(another GPU, a repaired file) must not keep the score computed from the old ones."""

from pathlib import Path

import numpy as np
from PIL import Image

from harness.engine import Engine
from harness.plugins import PluginHost
from harness.registry import Registry
from harness.runner import RunConfig, Runner, plan

KIT = str(Path(__file__).parent / "plugins" / "report_kit.py")


def run(out):
    registry = Registry(PluginHost([KIT]))
    runner = Runner(plan(RunConfig(methods="tint", bench="keep:count=4", model="tiny", out=str(out), show_progress=False), registry))
    runner.execute()
    row = runner.store.db.execute("SELECT value FROM results WHERE run_id=? AND metric='drift:drift'", (runner.plan.run_id,)).fetchone()
    keys = [r["image_key"] for r in runner.store.db.execute("SELECT image_key FROM run_images WHERE run_id=? ORDER BY spec_id", (runner.plan.run_id,))]
    runner.store.close()
    return row["value"], keys


def test_a_regenerated_image_with_other_bytes_changes_the_set_score(tmp_path, monkeypatch):
    first, keys = run(tmp_path)
    image = tmp_path / "cache" / "images" / keys[0][:2] / f"{keys[0]}.png"
    image.write_bytes(b"damaged")  # found damaged on the next run: generated again

    original = Engine.sample

    def other_gpu(self, specs, state):  # not bit for bit: here, inverted pixels
        return [Image.fromarray(255 - np.asarray(picture)) for picture in original(self, specs, state)]

    monkeypatch.setattr(Engine, "sample", other_gpu)
    second, _ = run(tmp_path)
    monkeypatch.undo()
    assert second != first  # the drift of the new images, not the stored one of the old


def test_an_unchanged_rerun_reuses_the_stored_set_score(tmp_path):
    from harness.store import Store

    first, _ = run(tmp_path)
    count = Store(tmp_path).db.execute("SELECT COUNT(*) FROM set_scores").fetchone()[0]
    second, _ = run(tmp_path)
    assert second == first and Store(tmp_path).db.execute("SELECT COUNT(*) FROM set_scores").fetchone()[0] == count
