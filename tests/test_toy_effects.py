"""Measured effects in the toy world (issue 4): closed-form erasure really removes red, TRCE-T's edit reaches implicit
prompts, and it keeps the other colours.

Runs of only the cells the tests read (the session store caches every state and image), then assertions on them; the numbers are
measured, never hard-coded.  Defaults were chosen on `toy-implicit`
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
    # Only the benchmarks asserted on: the README's full table (all seven toy benchmarks, every method) is one
    # `harness run` of its own, so CI time goes to assertions.
    rows = toy_run(",".join(CLOSED_FORM), "toy-explicit", PROMPTS_PER_BENCH)
    rows |= toy_run("sd,trce-t", "toy-implicit-heldout,toy-preserve", PROMPTS_PER_BENCH)  # the cells read below
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


def test_trce_t_catches_held_out_implicit_prompts(board):
    """TRCE-T's edit, keyed on the first [EoT], reaches implicit phrasings never seen in training (the paper's §3.2
    claim).  This test also asserted that UCE misses more of them, which held on the first toy model; on the committed
    one UCE catches them all (0% vs trce-t's 15%, n = 100), because its token block (official UCE: the keyword *and*
    every position after it) edits the [EoT] rows, which carry the implicit colour in this model.  So the two are no
    longer ordered here; the README's toy table shows both."""
    base = asr(board, "sd", "toy-implicit-heldout")
    assert base >= 0.6
    assert asr(board, "trce-t", "toy-implicit-heldout") <= min(0.25, base / 2)


def test_trce_t_preserves_other_colours(board):
    assert acc(board, "trce-t") >= acc(board, "sd") - 0.10
