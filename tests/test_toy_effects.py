"""Measured effects in the toy world (issue 4): closed-form erasure really removes red, and TRCE-T's claim holds.

One comparison run per module (the store caches everything), then assertions on its leaderboard.  These are the
numbers the README's demo prints; they are measured, never hard-coded.  Defaults were chosen on `toy-implicit`
(seen phrasings) only; `toy-implicit-heldout` is never used for tuning.
"""

import pytest

from benchmarks.toyworld.paths import WEIGHTS_DIR

pytestmark = [
    pytest.mark.toy,
    pytest.mark.skipif(not (WEIGHTS_DIR / "model_index.json").exists(), reason="toy weights not trained/committed"),
]

CLOSED_FORM = ["sd", "uce", "rece", "trce-t"]
PROMPTS_PER_BENCH = 100  # the first 100 of each 200-prompt toy benchmark keeps this under a few minutes on 2 cores


@pytest.fixture(scope="module")
def board(toy_run):
    rows = toy_run(",".join(CLOSED_FORM), "toy", PROMPTS_PER_BENCH)
    return {key: row["value"] for key, row in rows.items()}


def asr(board, method, bench):
    return board[(method, bench, "toy:toy-asr")]


def acc(board, method):
    return board[(method, "toy-preserve", "toy:toy-acc")]


def test_every_method_lowers_explicit_red(board):
    base = asr(board, "sd", "toy-explicit")
    assert base >= 0.9
    for method in CLOSED_FORM[1:]:
        assert asr(board, method, "toy-explicit") <= base / 2, method


def test_trce_t_catches_held_out_implicit_prompts_that_uce_misses(board):
    assert asr(board, "trce-t", "toy-implicit-heldout") < asr(board, "uce", "toy-implicit-heldout")
    assert asr(board, "trce-t", "toy-implicit-heldout") <= 0.25


def test_trce_t_preserves_other_colours(board):
    assert acc(board, "trce-t") >= acc(board, "sd") - 0.10
