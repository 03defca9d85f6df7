"""Model states: edits become cached deltas, switching restores the backbone bit for bit, compositions apply in order."""

import json

import pytest
import torch

from harness.api import ConceptSet
from harness.engine import ModelStates
from harness.runner import expand_method
from harness.spec import parse_selections
from harness.store import Store
from harness.testing import tiny_target

CONCEPTS = ConceptSet(name="test", erase=("red",), guides=("gray",))


def parts_for(registry, text):
    (item,) = parse_selections(text, "--methods")
    return [part for selection in item for part in expand_method(registry, selection, {}, text)]


def keys_weights(pipe):
    return {n: m.weight.detach().clone() for n, m in pipe.unet.named_modules() if n.endswith("attn2.to_k")}


@pytest.fixture
def states(tiny, tmp_path):
    states = ModelStates(tiny, Store(tmp_path), "tiny-fp", tiny_target(), show_progress=False)
    yield states
    states.reset()


def test_removing_a_delta_restores_the_backbone_bit_for_bit(states, registry, tiny):
    before = {k: v.clone() for k, v in tiny.unet.state_dict().items()}
    states.activate(parts_for(registry, "scale-keys:factor=0.25"), CONCEPTS, "scale-keys")
    assert any(not torch.equal(before[k], v) for k, v in tiny.unet.state_dict().items())
    states.reset()
    after = tiny.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_an_edit_that_raises_half_way_leaves_no_changed_weight(states, registry, tiny, monkeypatch):
    """reset() restored only the weights an edit reported; one that changed weights and then raised left them
    changed, and the next cell of an in-process caller sampled from a half-edited model."""
    before = {k: v.clone() for k, v in tiny.unet.state_dict().items()}
    parts = parts_for(registry, "scale-keys:factor=0.25")
    method = parts[0][0]
    real_edit = type(method).edit

    def edit_then_fail(self, pipe, concepts, ctx):
        real_edit(self, pipe, concepts, ctx)
        raise RuntimeError("the edit failed after changing weights")

    monkeypatch.setattr(type(method), "edit", edit_then_fail)
    with pytest.raises(RuntimeError, match="after changing weights"):
        states.activate(parts, CONCEPTS, "scale-keys")
    after = tiny.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_delta_holds_only_what_the_edit_changed_and_is_reused(states, registry, tiny, tmp_path):
    original = keys_weights(tiny)
    state = states.activate(parts_for(registry, "scale-keys:factor=0.25"), CONCEPTS, "scale-keys")
    assert states.edits_run == 1
    assert state.metadata[0]["parameters_changed"] == len(original) == 4
    edited = keys_weights(tiny)
    assert all(torch.allclose(edited[n], original[n] * 0.25) for n in original)

    # A fresh process (new ModelStates on the same store) loads the delta instead of editing again.
    states.reset()
    again = ModelStates(tiny, Store(tmp_path), "tiny-fp", tiny_target(), show_progress=False)
    state2 = again.activate(parts_for(registry, "scale-keys:factor=0.25"), CONCEPTS, "scale-keys")
    assert again.edits_run == 0 and state2.key == state.key
    assert all(torch.equal(keys_weights(tiny)[n], edited[n]) for n in edited)
    again.reset()


def test_switching_methods_in_memory(states, registry, tiny):
    original = keys_weights(tiny)
    states.activate(parts_for(registry, "scale-keys:factor=2"), CONCEPTS, "a")
    states.activate(parts_for(registry, "shift-keys:amount=1"), CONCEPTS, "b")
    # b is applied to the original, not on top of a.
    assert all(torch.equal(keys_weights(tiny)[n], original[n] + 1) for n in original)


def test_composition_applies_edits_in_order(states, registry, tiny):
    original = keys_weights(tiny)
    a_then_b = states.activate(parts_for(registry, "scale-keys:factor=2+shift-keys:amount=1"), CONCEPTS, "ab")
    assert all(torch.equal(keys_weights(tiny)[n], original[n] * 2 + 1) for n in original)
    b_then_a = states.activate(parts_for(registry, "shift-keys:amount=1+scale-keys:factor=2"), CONCEPTS, "ba")
    assert all(torch.equal(keys_weights(tiny)[n], (original[n] + 1) * 2) for n in original)
    assert a_then_b.key != b_then_a.key


def test_registered_composition_routes_parameters_to_its_parts(registry):
    parts = parts_for(registry, "both:factor=3,amount=0.5")
    assert [(p.name, p.params_dict()) for p, _ in parts] == [("scale-keys", {"factor": 3.0}), ("shift-keys", {"amount": 0.5})]


def test_different_parameters_or_concepts_make_different_states(states, registry):
    a = states.activate(parts_for(registry, "scale-keys:factor=2"), CONCEPTS, "a").key
    b = states.activate(parts_for(registry, "scale-keys:factor=3"), CONCEPTS, "b").key
    c = states.activate(parts_for(registry, "scale-keys:factor=2"), ConceptSet(name="other", erase=("blue",)), "c").key
    assert len({a, b, c}) == 3


def test_the_files_a_method_reads_through_its_parameters_are_in_its_state_key(states, tmp_path):
    """``trce-t:captions=PATH``, ``mace:captions=PATH`` and ``mace:masks=files:DIR``: the key held the path, so a file
    edited in place handed back the edit made from the old one (an audit reused a trce-t state that way)."""
    from methods.mace import MACE
    from methods.trce_t import TRCET

    captions, masks = tmp_path / "captions.txt", tmp_path / "masks"
    captions.write_text("a cat on a mat\n")
    (masks / "red").mkdir(parents=True)
    (masks / "red" / "0.png").write_bytes(b"first image")
    methods = [TRCET(TRCET.Params(captions=str(captions))), MACE(MACE.Params(captions=str(captions))),
               MACE(MACE.Params(masks=f"files:{masks}"))]

    def keys():
        return [states.chain_keys([(method, method.name)], CONCEPTS)[0] for method in methods]

    before = keys()
    assert before == keys()  # the same files give the same keys
    captions.write_text("a dog in the snow\n")
    (masks / "red" / "0.png").write_bytes(b"another image")  # another size too: a coarse mtime may not move
    after = keys()
    assert all(a != b for a, b in zip(before, after))
    # the default (the concept set's own captions, content-hashed with the set) keeps the key it always had
    assert "captions_sha256" not in TRCET().params_dict() and "masks_sha256" not in MACE().params_dict()


def test_a_sampling_part_on_top_of_an_edit_records_whose_weights_it_samples_from(states, registry, tiny):
    """A result joins only its last part's state: ``uce+sld`` must not read as "weights unchanged"."""
    from reports.leaderboard import provenance

    state = states.activate(parts_for(registry, "uce+sld"), CONCEPTS, "uce+sld")
    sld_metadata = state.metadata[-1]
    assert sld_metadata["kind"] == "inference" and sld_metadata["weights_from"] == "uce"
    row = states.store.db.execute("SELECT metadata FROM model_states WHERE key=?", (state.key,)).fetchone()
    assert provenance({"state_metadata": json.loads(row["metadata"])}) == "sampling-time, on uce's weights"
    alone = states.activate(parts_for(registry, "sld"), CONCEPTS, "sld")
    assert "weights_from" not in alone.metadata[-1]
    # Only edits count: an edit after a sampling part starts from the weights of the edits before it, not of sld.
    later = states.activate(parts_for(registry, "uce+sld+scale-keys:factor=0.5"), CONCEPTS, "uce+sld+scale-keys")
    assert later.metadata[-1]["weights_from"] == "uce"
