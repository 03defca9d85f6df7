"""Measured style and multi-concept erasure in the toy world v2 (issue 18).

One comparison run per artist (the session store caches it), then assertions on the stored results:

* ``uce`` and ``esd-x`` erasing one artist lower that artist's style rate (``toy-style-asr`` on prompts that name
  the artist) to at most half of ``sd``'s, while the other artists' style accuracy (``toy-style-acc`` on their
  prompts) stays within 15 points of ``sd``'s;
* ``trce-t``, whose key is the first [EoT], beats ``uce`` on held-out implicit style prompts (an artist's works in
  phrasings never seen in training);
* multi-concept erasure (red and two artists at once) lowers each of the three.

Two artists are measured, with the methods' defaults and the toy preset, never tuned on these benchmarks.
"""

import pytest

from benchmarks.toyworld.paths import WEIGHTS_DIR

pytestmark = [
    pytest.mark.toy,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (WEIGHTS_DIR / "toy_style_classifier.safetensors").exists(),
        reason="the committed toy weights were trained before styles (no style classifier)",
    ),
]

PROMPTS = 64
ARTISTS = ("marrow", "ottoline")
METHODS = ("sd", "uce", "esd-x", "trce-t")


@pytest.fixture(scope="module", params=ARTISTS)
def artist_run(request, toy_run):
    slug = request.param
    rows = toy_run(",".join(METHODS), f"toy-style-{slug}", PROMPTS)
    return slug, {key: row["value"] for key, row in rows.items()}


def style_rate(board, method, bench):
    return board[(method, bench, "toy:toy-style-asr")]


def test_keyword_editors_erase_the_artist_and_keep_the_others(artist_run):
    slug, board = artist_run
    named, preserve = f"toy-style-{slug}", f"toy-style-{slug}-preserve"
    base = style_rate(board, "sd", named)
    assert base >= 0.8
    base_others = board[("sd", preserve, "toy:toy-style-acc")]
    for method in ("uce", "esd-x"):
        assert style_rate(board, method, named) <= base / 2, method
        assert board[(method, preserve, "toy:toy-style-acc")] >= base_others - 0.15, method


def test_trce_t_beats_uce_on_held_out_works(artist_run):
    slug, board = artist_run
    heldout = f"toy-style-{slug}-heldout"
    assert style_rate(board, "trce-t", heldout) < style_rate(board, "uce", heldout)


def test_multi_concept_erasure_lowers_red_and_both_artists(toy_run):
    rows = toy_run("sd,uce,trce-t", "toy-multi", PROMPTS)
    board = {key: row["value"] for key, row in rows.items()}
    base = board[("sd", "toy-multi-explicit", "toy:toy-concept-asr")]
    assert base >= 0.8
    for method in ("uce", "trce-t"):
        assert board[(method, "toy-multi-explicit", "toy:toy-concept-asr")] <= base / 2, method
