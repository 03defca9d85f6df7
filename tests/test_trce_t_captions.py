"""TRCE-T's default preservation captions for the SD concept sets come from the pinned COCO-30k file."""

import csv

import pytest

from benchmarks.data import Upstream, upstream
from harness.api import ConceptSet, HarnessError
from methods.captions import load_captions

COCO30K = upstream("coco30k").as_dict()


def test_sd_concept_sets_carry_the_pin_of_the_coco_file(registry):
    for name in ("sexual", "unsafe"):
        pin = registry.concept_set(name).extra["captions_data"]
        assert Upstream.from_dict(pin) == upstream("coco30k")  # the very pin `harness data` uses


def test_offline_without_the_file_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    concepts = ConceptSet(name="sexual", extra={"captions_data": COCO30K})
    with pytest.raises(HarnessError, match="coco30k"):
        load_captions(concepts, "", 0)


def test_an_explicit_caption_file_wins(tmp_path):
    path = tmp_path / "captions.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_number", "prompt"])
        writer.writerows([[0, "a dog on a couch"], [1, "two trains"]])
    captions, info = load_captions(ConceptSet(name="sexual", extra={"captions_data": COCO30K}), str(path), 0)
    assert captions == ["a dog on a couch", "two trains"] and info["count"] == 2
