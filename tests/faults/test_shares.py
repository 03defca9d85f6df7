"""Data-parallel ranks deal batches out by counting the batches of every generate call: a rank that finds a cell
already made must count it too, or from then on the ranks' shares overlap and leave gaps (harness/distributed.py)."""

from harness.api import PromptSpec
from harness.distributed import ShardStore, World, _engine_class
from harness.engine import ActiveState, Defaults


def test_a_rank_with_nothing_to_make_still_counts_the_cells_batches(tmp_path):
    engine = _engine_class()(None, ShardStore(tmp_path, image_rows={}, model_states={}), "fingerprint", Defaults(2, 8, 8), "cpu",
                             "float32", batch_size=2, show_progress=False, scheduler_config={}, world=World(1, 2, 1),
                             finished_at_start=set())
    state = ActiveState(key="state", label="m")
    specs = [PromptSpec(id=str(i), prompt=f"prompt {i}", seed=i) for i in range(6)]
    keys = [engine.image_key(engine.resolve(spec), state.key) for spec in specs]
    for key in keys:  # every image on disk and with its row when the run started: this rank finds nothing to make
        engine.store.image_path(key).parent.mkdir(parents=True, exist_ok=True)
        engine.store.image_path(key).write_bytes(b"png")
    engine.finished_at_start = set(keys)
    assert engine.generate(specs, state) == keys
    assert engine.batches_shared == 3 and engine.shared_out == set(keys)  # as on a rank that had images to make
