"""Speed of intervals and paired tests at a large store's size (issue 14: < 5 s).

A synthetic store of 12 methods × 10 benchmarks × 1000 prompts, written through the Store API: 8 benchmarks carry a
rate (0/1 per image: Wilson intervals, exact McNemar), 2 a per-image score (CLIP-S-like: prompt bootstrap with 2000
resamples, Wilcoxon).  Timed: reading the per-image values back, every cell's interval, and every column's
Holm-corrected paired tests behind the best/second marks — what `harness report` does before it formats anything.
The first round pays for importing scipy.stats (Wilcoxon); the check takes the best of three.
"""

import time

import numpy as np
import pytest

from harness.store import Store
from reports import leaderboard
from reports.uncertainty import intervals

METHODS, BENCHMARKS, PROMPTS = 12, 10, 1000
RATE_BENCHMARKS = 8
LIMIT_S = 5.0


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    rng = np.random.default_rng(0)
    store = Store(tmp_path_factory.mktemp("big") / "store")
    store.start_run("run-big", {})
    for m in range(METHODS):
        method = "sd" if m == 0 else f"method-{m}"
        for b in range(BENCHMARKS):
            rate = b < RATE_BENCHMARKS
            if rate:
                values = (rng.random(PROMPTS) < 0.9 - 0.07 * m).astype(float)
                metric, unit, name, lower = "kit:asr", "rate", "ASR", True
            else:
                values = rng.normal(30 - 0.1 * m, 2.0, PROMPTS)
                metric, unit, name, lower = "kit:clip", "score", "CLIP-S", False
            store.add_result(run_id="run-big", method=method, benchmark=f"bench-{b}", metric=metric, value=float(values.mean()), n=PROMPTS,
                             lower_is_better=lower, name=name, description="fraction of images flagged" if rate else "mean CLIP score",
                             unit=unit, adversarial=b % 2 == 1, needs_reference=False, model_state=None if m == 0 else method,
                             unet_evals_per_image=60.0)
            store.set_result_values("run-big", method, f"bench-{b}", metric,
                                    [(str(i), str(i), 1000 + i, f"{method}-{b}-{i}", float(v)) for i, v in enumerate(values)])
        if m:
            store.add_model_state(method, "tiny", method, {}, "c", None, {"provenance": "erased here"})
    store.finish_run("run-big")
    return store


def test_intervals_and_paired_tests_of_12_methods_10_benchmarks_1000_prompts(big_store, benchmark):
    seconds = []

    def everything():
        start = time.perf_counter()
        results = big_store.results()
        values = big_store.result_values()
        cell_intervals = intervals(results, values)
        board = leaderboard.build(results, values=values, cell_intervals=cell_intervals)
        marks = [board.marks(i) for i in range(len(board.columns))]
        seconds.append(time.perf_counter() - start)
        return cell_intervals, board, marks

    cell_intervals, board, marks = benchmark.pedantic(everything, rounds=3, iterations=1)
    assert len(cell_intervals) == METHODS * BENCHMARKS and all(found.known for found in cell_intervals.values())
    tested = [m for m in marks if m.tested]
    assert len(tested) == BENCHMARKS and all(len(m.adjusted_p) == METHODS - 2 for m in tested)  # 11 contenders, 10 neighbour pairs
    print(f"\nintervals + paired tests, {METHODS}x{BENCHMARKS}x{PROMPTS}: best {min(seconds):.2f} s, worst {max(seconds):.2f} s")
    assert min(seconds) < LIMIT_S  # best of 3: the CPUs are shared
