"""Ring-A-Bell on the tiny pipeline: the concept vector is the mean paired difference, the genetic search lowers
its own objective ‖f(P̂) − (f(P) + η·ĉ)‖², keeps its best prompt (elitism), is reproducible per prompt seed, and
returns K tokens from the allowed vocabulary."""

import json
from pathlib import Path

import pytest
import torch

from benchmarks.attacks.ring_a_bell import RingABell
from harness.api import ConceptSet, HarnessError, PromptSpec
from harness.attacking import AttackContext

CONCEPTS = ConceptSet(name="colours", erase=("red",), phrases=(("a red circle", "a gray circle"), ("red square", "gray square")))
SPEC = PromptSpec(id="0", prompt="a circle on black", seed=7)


def search(tiny, **params):
    attack = RingABell(RingABell.Params(**{"population": 16, "generations": 1, "length": 6, "eta": 1.0, **params}))
    ctx = AttackContext(show_progress=False)
    attack.prepare(tiny, CONCEPTS, ctx)
    ctx._spec_seed = SPEC.seed
    return attack, attack.attack(tiny, CONCEPTS, SPEC, ctx), ctx


def encode(tiny, texts):
    ids = tiny.tokenizer(texts, padding="max_length", max_length=tiny.tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return tiny.text_encoder(ids)[0]


def test_concept_vector_is_the_mean_paired_difference(tiny):
    attack, _, _ = search(tiny)
    with_concept, without = encode(tiny, ["a red circle", "red square"]), encode(tiny, ["a gray circle", "gray square"])
    assert torch.allclose(attack.concept_vector, (with_concept - without).mean(0), atol=1e-6)


def test_template_pairs_put_every_phrase_pair_in_every_template(tiny):
    templated = ConceptSet(name="colours", erase=("red",), phrases=CONCEPTS.phrases, templates=("a photo of {}", "{} on black"))
    attack = RingABell(RingABell.Params(length=6, pairs="templates"))
    attack.prepare(tiny, templated, AttackContext(show_progress=False))
    with_concept = encode(tiny, ["a photo of a red circle", "a photo of red square", "a red circle on black", "red square on black"])
    without = encode(tiny, ["a photo of a gray circle", "a photo of gray square", "a gray circle on black", "gray square on black"])
    assert torch.allclose(attack.concept_vector, (with_concept - without).mean(0), atol=1e-6)
    bare, _, _ = search(tiny)
    assert not torch.allclose(attack.concept_vector, bare.concept_vector, atol=1e-3)
    # A concept set without templates has only its phrase pairs.
    attack.prepare(tiny, CONCEPTS, AttackContext(show_progress=False))
    assert torch.allclose(attack.concept_vector, bare.concept_vector, atol=1e-6)


def test_the_search_lowers_its_objective_and_keeps_its_best(tiny):
    attack, first, _ = search(tiny, generations=1)
    _, longer, ctx = search(tiny, generations=25)
    assert ctx.steps == 25
    assert longer.loss < first.loss  # same seed, same initial population: elitism never loses the best
    # The reported loss is the objective of the returned tokens.
    ids = torch.full((1, tiny.tokenizer.model_max_length), tiny.tokenizer.eos_token_id)
    ids[0, 0] = tiny.tokenizer.bos_token_id
    ids[0, 1:7] = torch.tensor(longer.token_ids)
    with torch.no_grad():
        target = encode(tiny, [SPEC.prompt])[0] + attack.concept_vector
        objective = float(((tiny.text_encoder(ids)[0][0] - target) ** 2).sum())
    assert objective == pytest.approx(longer.loss, rel=1e-5)
    assert len(longer.token_ids) == 6 and all(int(t) in set(attack.vocabulary.tolist()) for t in longer.token_ids)
    assert longer.text == tiny.tokenizer.decode(list(longer.token_ids)).strip()


def test_the_search_is_reproducible(tiny):
    _, one, _ = search(tiny, generations=3)
    _, again, _ = search(tiny, generations=3)
    assert one.token_ids == again.token_ids and one.loss == again.loss


def test_official_quirk_mutates_survivors(tiny):
    _, quirk, _ = search(tiny, generations=10, mutate_survivors=True)
    _, plain, _ = search(tiny, generations=10)
    assert quirk.token_ids != plain.token_ids  # a different search, as the official notebook's is


def test_bad_settings_are_one_line_errors(tiny):
    with pytest.raises(HarnessError, match="length K=40"):
        search(tiny, length=40)
    attack = RingABell()
    with pytest.raises(HarnessError, match="phrase pairs"):
        attack.prepare(tiny, ConceptSet(name="bare", erase=("red",)), AttackContext(show_progress=False))


def test_toy_scorer_reads_erased_colours_from_an_exported_csv_cell():
    from benchmarks.toyworld.scorer import _has_erased_pixels, _shows_erased

    raw = {"colour": "red", "counts": {"red": 20, "gray": 40}}
    for erased in (["red"], "red", "orange|red"):  # a benchmark's list; the CSV text an attack export writes for it
        spec = PromptSpec(id="0", prompt="x", seed=0, labels={"erased": erased})
        assert _shows_erased(raw, spec) and _has_erased_pixels(raw, spec, 12)
    spec = PromptSpec(id="0", prompt="x", seed=0, labels={"erased": "ed"})  # no substring matches
    assert not _shows_erased(raw, spec) and not _has_erased_pixels(raw, spec, 12)


def test_the_search_shows_its_generations_in_a_progress_bar(tiny, capsys):
    attack = RingABell(RingABell.Params(population=16, generations=12, length=6, eta=1.0))
    ctx = AttackContext(show_progress=True)
    attack.prepare(tiny, CONCEPTS, ctx)
    ctx._spec_seed = SPEC.seed
    attack.attack(tiny, CONCEPTS, SPEC, ctx)
    shown = capsys.readouterr().err
    assert "ring-a-bell generations" in shown and "/12" in shown  # a bar over this prompt's 12 generations
    attack.attack(tiny, CONCEPTS, SPEC, AttackContext(show_progress=False))
    assert capsys.readouterr().err == ""  # --no-progress shows none


@pytest.mark.parametrize("attack, says", [
    ("ring-a-bell:length=15", "ring-a-bell: length K=15 leaves no room for BOS and EOS in this tokenizer's 16 positions; "
                              "choose ring-a-bell:length ≤ 14"),
    ("unlearndiffatk:prefix_length=15", "unlearndiffatk: prefix_length K=15 leaves no room for BOS and EOS in this tokenizer's 16 positions"),
])
def test_a_k_the_tokenizer_cannot_hold_is_refused_at_plan_time(tmp_path, capsys, attack, says):
    """tiny's tokenizer has 16 positions: K = 15 tokens with BOS and EOS do not fit, and `run --dry-run` says so in one
    line, before any base image is generated; K = 14 plans."""
    from one_line import one_line

    from harness.cli import main

    plugins = Path(__file__).parent / "plugins"
    args = ["--plugin", str(plugins / "brightness.py"), "run", "--model", "tiny", "--methods", "sd", "--bench", "fixed:count=2",
            "--out", str(tmp_path), "--dry-run", "--attack"]
    code = main([*args, attack])
    one_line(code, capsys.readouterr().err, says)
    assert main([*args, attack.replace("=15", "=14")]) == 0


def test_tokenizer_positions_are_read_from_a_model_folder_without_loading_it(tmp_path):
    from harness.attacking import tokenizer_positions
    from harness.backbones import DiffusersBackbone, TinyBackbone

    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "model_index.json").write_text("{}")
    config = tmp_path / "tokenizer" / "tokenizer_config.json"
    config.write_text(json.dumps({"model_max_length": 77}))
    assert tokenizer_positions(DiffusersBackbone(), str(tmp_path)) == 77
    config.write_text(json.dumps({"model_max_length": int(1e30)}))  # transformers' "no limit" sentinel: unknown
    assert tokenizer_positions(DiffusersBackbone(), str(tmp_path)) is None
    assert tokenizer_positions(TinyBackbone(), None) == 16
