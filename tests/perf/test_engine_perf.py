"""Throughput: the engine against the reference repos' loop (one pipeline call per prompt, reseeded each time).

Ratios are measured in the same run, never against a stored number.  Run with
``tox -e perf`` (or ``pytest tests/perf --benchmark-only``); on a GPU pass
``--device cuda --dtype float16``.
"""

import subprocess
import sys
import time

import pytest

from harness.api import PromptSpec
from harness.engine import ActiveState, Defaults, Engine, authors_style_loop
from harness.store import Store
from harness.testing import tiny_pipeline

PROMPTS = 16


@pytest.fixture(scope="module")
def setup(perf_device, perf_dtype):
    pipe = tiny_pipeline(device=perf_device, dtype=perf_dtype)
    specs = [PromptSpec(str(i), f"a photo of thing number {i % 7}", seed=1000 + i, guidance=7.5, steps=10, height=32, width=32) for i in range(PROMPTS)]
    return pipe, specs


def _sync(device):
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def test_engine_batch_8_vs_authors_loop(benchmark, setup, tmp_path, perf_device, perf_dtype):
    pipe, specs = setup
    engine = Engine(pipe, Store(tmp_path), "fp", Defaults(10, 32, 32), perf_device, perf_dtype, batch_size=8, show_progress=False)
    state = ActiveState("k", "sd")

    def engine_run():
        for start in range(0, len(specs), 8):
            engine.sample(specs[start : start + 8], state)
        _sync(perf_device)

    def authors_run():
        authors_style_loop(pipe, specs, steps=10, height=32, width=32)
        _sync(perf_device)

    engine_run(), authors_run()  # warm up both paths
    baseline = min(_timed(authors_run) for _ in range(3))
    benchmark.pedantic(engine_run, rounds=3, iterations=1)
    ratio = baseline / benchmark.stats.stats.min
    benchmark.extra_info.update({"authors_loop_s": baseline, "speedup_vs_authors_loop": ratio, "images": len(specs)})
    print(f"\nengine batch 8: {len(specs) / benchmark.stats.stats.min:.1f} img/s; authors' loop {len(specs) / baseline:.1f} img/s; speed-up {ratio:.2f}x")
    assert ratio >= 2.0


def _timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def test_harness_list_wall_time(benchmark):
    def listing():
        subprocess.run([sys.executable, "-m", "harness.cli", "list"], check=True, capture_output=True)

    benchmark.pedantic(listing, rounds=5, iterations=1)
    python_start = min(_timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True)) for _ in range(3))
    benchmark.extra_info["python_startup_s"] = python_start
    print(f"\nharness list: {benchmark.stats.stats.min:.3f} s (bare python start-up {python_start:.3f} s)")
    assert benchmark.stats.stats.min < 0.5
