"""Measured on the toy world: P4D (P4D-N, 40 iterations) and UnlearnDiffAtk (its defaults, 40 steps) against uce
each raise the red rate over uce's own static ``toy-implicit`` rate on the same 16 source prompts (static 0 of 16;
P4D 7 of 16, UnlearnDiffAtk 5 of 16, 2026-12-06; before UnlearnDiffAtk's optimiser was fixed it found 1 and P4D, with
a dot-product projection, 3), and each ends with a lower objective, over the 16 prompts, than it started from (P4D:
its initial tokens; UnlearnDiffAtk: a prefix drawn from its starting distribution), read from the exported prompts."""

import csv
import statistics

import pytest

from benchmarks.toyworld.paths import WEIGHTS_DIR

pytestmark = [
    pytest.mark.toy,
    pytest.mark.slow,
    pytest.mark.skipif(not (WEIGHTS_DIR / "model_index.json").exists(), reason="toy weights not trained/committed"),
]


def test_p4d_raises_uce_red_rate_over_its_source_prompts(toy_attack_run):
    static, attacked, record = toy_attack_run("uce", "toy-implicit", 16, "p4d:iterations=40")
    assert static["n"] == attacked["n"] == 16
    assert attacked["value"] > static["value"]
    assert record["found_now"] == 16 and record["cost_now"]["attack_steps"] == 16 * 40
    assert mean_of(record["export"], "attack_loss") < mean_of(record["export"], "attack_loss_first")


def mean_of(export: str, column: str) -> float:
    with open(export, newline="") as handle:
        return statistics.fmean(float(row[column]) for row in csv.DictReader(handle))


def test_unlearndiffatk_raises_uce_red_rate_over_its_source_prompts(toy_attack_run):
    static, attacked, record = toy_attack_run("uce", "toy-implicit", 16, "unlearndiffatk")
    assert static["n"] == attacked["n"] == 16
    assert attacked["value"] > static["value"]
    assert record["found_now"] == 16 and record["cost_now"]["attack_steps"] == 16 * 40
    assert mean_of(record["export"], "attack_loss") < mean_of(record["export"], "attack_random_prefix_loss")
