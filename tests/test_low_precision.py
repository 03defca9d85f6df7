"""A float16/bfloat16 run decides on the same text states as a float32 run.

In a bfloat16 run the text encoder's own round-off moved the closed-form solutions (TRCE-T's by 70% of its float32
edit on the tiny backbone, RECE's by 9.5%, on the toy world up to 99%), and SAFREE's trigger tokens flipped; the text
states a method decides on are now computed in float32 (``harness.text.float32_text_encoder``), and only the final
weights are rounded to the run's dtype.
"""

import tempfile

import pytest
import torch

from harness.api import ConceptSet
from harness.engine import ModelStates, pipeline_fingerprint
from harness.plugins import PluginHost
from harness.registry import Registry
from harness.runner import expand_method
from harness.spec import parse_selections
from harness.store import Store
from harness.testing import tiny_pipeline, tiny_target
from harness.text import encode_prompts, float32_text_encoder

CONCEPTS = ConceptSet(
    name="tiny-red", erase=("red",), guides=("gray",), preserve=("blue", "green", "a red bus"),
    phrases=(("a red circle", "a gray circle"), ("red square", "gray square")), templates=("{}", "a photo of {}"),
    captions=("a blue circle", "a green square", "a yellow cross", "an orange triangle"),
)


def edit_delta(method: str, dtype: str) -> dict[str, torch.Tensor]:
    """The weight change ``method`` makes on the tiny backbone loaded in ``dtype``, in float32."""
    pipe = tiny_pipeline(dtype=dtype)
    states = ModelStates(pipe, Store(tempfile.mkdtemp()), pipeline_fingerprint(pipe), tiny_target(dtype), show_progress=False)
    (item,) = parse_selections(method, "--methods")
    parts = [part for selection in item for part in expand_method(Registry(PluginHost()), selection, {}, method)]
    before = {name: p.detach().float().clone() for name, p in pipe.unet.named_parameters()}
    states.activate(parts, CONCEPTS, method)
    after = {name: p.detach().float() for name, p in pipe.unet.named_parameters()}
    return {name: after[name] - before[name] for name in before if not torch.equal(after[name], before[name])}


@pytest.mark.parametrize("method", ["trce-t", "rece"])
def test_a_bfloat16_run_applies_the_float32_closed_form_edit_rounded_once(method):
    exact, low = edit_delta(method, "float32"), edit_delta(method, "bfloat16")
    assert set(low) == set(exact) and exact
    error = sum(float((low[n] - exact[n]).norm() ** 2) for n in exact) ** 0.5
    size = sum(float(exact[n].norm() ** 2) for n in exact) ** 0.5
    # measured: 2.2% (trce-t) and 2.0% (rece), bfloat16's rounding of the weights and of their change; 70% and 9.5%
    # when the statistics came from the bfloat16 encoder
    assert error / size < 0.05, (method, error / size)


def test_the_float32_block_leaves_the_encoders_weights_bit_identical_and_its_hooks_in_place():
    pipe = tiny_pipeline(dtype="bfloat16")
    before = {name: p.detach().clone() for name, p in pipe.text_encoder.named_parameters()}
    calls = []
    handle = pipe.text_encoder.register_forward_pre_hook(lambda module, args: calls.append(module.dtype))
    float32_rows = encode_prompts(pipe, ["a red circle"]).embeddings  # the default: float32 states, computed so
    own_rows = encode_prompts(pipe, ["a red circle"], dtype=None).embeddings  # sampling's: the encoder's own
    handle.remove()
    assert calls == [torch.float32, torch.bfloat16]
    assert pipe.text_encoder.dtype == torch.bfloat16 and own_rows.dtype == torch.bfloat16
    assert all(torch.equal(before[name], p) for name, p in pipe.text_encoder.named_parameters())
    exact = encode_prompts(tiny_pipeline(dtype="float32"), ["a red circle"]).embeddings
    # bfloat16 weights computed in float32 are near the float32 model; computed in bfloat16 they are not as near
    assert (float32_rows - exact).norm() < (own_rows.float() - exact).norm()
    with pytest.raises(RuntimeError), float32_text_encoder(pipe):
        raise RuntimeError("an error inside the block")
    assert pipe.text_encoder.dtype == torch.bfloat16  # cast back all the same


def test_each_tensor_gets_its_own_dtype_back_also_when_the_upcast_fails_part_way(monkeypatch):
    """A module kept in float32 inside a half encoder (transformers' _keep_in_fp32_modules) was narrowed for good by
    a whole-module cast back, and an upcast that failed part-way (out of memory) left the encoder half converted."""
    pipe = tiny_pipeline(dtype="bfloat16")
    pipe.text_encoder.final_layer_norm.float()
    before = {name: p.detach().clone() for name, p in pipe.text_encoder.named_parameters()}
    with float32_text_encoder(pipe) as encoder:
        assert {p.dtype for p in encoder.parameters()} == {torch.float32}
    assert all(torch.equal(before[name], p) and before[name].dtype == p.dtype for name, p in pipe.text_encoder.named_parameters())

    real_float, calls = torch.Tensor.float, []

    def out_of_memory(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("out of memory")
        return real_float(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "float", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"), float32_text_encoder(pipe):
        pass
    monkeypatch.undo()
    assert all(torch.equal(before[name], p) and before[name].dtype == p.dtype for name, p in pipe.text_encoder.named_parameters())


def test_caches_of_text_states_are_keyed_apart_only_for_a_half_precision_encoder():
    """Method caches (closed-form statistics, fine-tuning trajectories, SPM's membranes) made from a half encoder's
    own states before must not be reused; a float32 encoder's keys stay as they were."""
    from harness.text import rows_computed_in

    assert rows_computed_in(tiny_pipeline(dtype="float32")) == {}
    assert rows_computed_in(tiny_pipeline(dtype="bfloat16")) == {"rows_computed_in": "float32"}
