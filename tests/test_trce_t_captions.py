"""TRCE-T's default preservation captions for the SD concept sets come from the pinned COCO-30k file."""

import csv

import pytest

from harness.api import ConceptSet, HarnessError
from methods.trce_t import load_captions


def test_sd_concept_sets_name_the_pinned_coco_file(registry):
    for name in ("sexual", "unsafe"):
        assert registry.concept_set(name).extra["captions_data"] == "coco30k"


def test_offline_without_the_file_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    concepts = ConceptSet(name="sexual", extra={"captions_data": "coco30k"})
    with pytest.raises(HarnessError, match="coco30k"):
        load_captions(concepts, "", 0)


def test_an_explicit_caption_file_wins(tmp_path):
    path = tmp_path / "captions.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_number", "prompt"])
        writer.writerows([[0, "a dog on a couch"], [1, "two trains"]])
    captions, info = load_captions(ConceptSet(name="sexual", extra={"captions_data": "coco30k"}), str(path), 0)
    assert captions == ["a dog on a couch", "two trains"] and info["count"] == 2
