"""Shared fixtures.  Tests never touch the network: the hub is forced offline before anything imports it."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# Under pytest-xdist (`-n auto`, as tox runs the suite) each worker gets its share of the CPUs as torch threads, set
# before torch is imported, so that N workers do not each start one thread per core and wait on each other.  On 2
# cores two 1-thread workers finish the suite far sooner than one 2-thread process: a toy-world run measured here
# took 117 s with 1 thread against 99 s with 2.  Toy values of fine-tuned methods depend on the thread count (as on
# the CPU: floating-point sums in another order); the toy-effect tests assert effects with room for that.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    from harness.threads import choose as _choose_threads

    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ["OMP_NUM_THREADS"] = str(max(1, _choose_threads({})["cpus_available"] // _workers))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def pytest_addoption(parser):
    # Here, not in tests/perf/conftest.py: options must be known before collection starts.
    parser.addoption("--device", default="cpu", help="device for throughput benchmarks (cpu, cuda)")
    parser.addoption("--dtype", default="float32", help="dtype for throughput benchmarks (float32, float16)")

@pytest.hookimpl(optionalhook=True)  # without pytest-xdist installed, pytest must not call this an unknown hook
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per CPU this process may use (affinity and cgroup quota), not per core of the host: a
    2-CPU container on a 64-core machine gets 2 workers, not 64."""
    from harness.threads import choose

    return choose({})["cpus_available"]


# The costliest modules (a toy fixture that trains several methods, minutes each), scheduled first so that under
# `--dist loadfile` the workers end together instead of one starting the longest module last.  Measured with
# --durations on 2 CPU cores; the order of the rest is pytest's.
COSTLIEST_FIRST = [
    "test_toy_finetune.py",
    "test_toy_style_erasure.py",
    "test_toy_ring_a_bell.py",
    "test_toy_seed_rows.py",
    "test_toy_sampling_time.py",
    "test_toy_effects.py",
    "test_toy_white_box_attacks.py",
    "test_toyworld.py",
    "test_toyworld_v2.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {name: position for position, name in enumerate(COSTLIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module keeps its own order


PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture(scope="session")
def tiny():
    """One tiny random pipeline per session; tests that edit it must undo their edits."""
    from harness.testing import tiny_pipeline

    return tiny_pipeline()


@pytest.fixture
def pipe(tiny):
    """The session's tiny pipeline, with its UNet restored after the test (for tests that edit weights)."""
    state = {name: tensor.clone() for name, tensor in tiny.unet.state_dict().items()}
    yield tiny
    tiny.unet.load_state_dict(state)


@pytest.fixture
def ctx(tmp_path):
    from harness.context import EditContext

    return EditContext(cache_dir=tmp_path / "cache", show_progress=False)


@pytest.fixture
def registry():
    from harness.plugins import PluginHost
    from harness.registry import Registry

    return Registry(PluginHost([str(PLUGINS / "brightness.py"), str(PLUGINS / "edits.py")]))


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
    """Run methods on toy benchmarks in one store shared by the whole session, and return the results as a dict.

    The toy-effect modules share the store, so the base model's images (and those of any method two modules both
    compare) are generated once per session.  ``toy_run(methods, bench, limit, sets)`` returns the stored result
    rows of that run as ``{(method, benchmark, metric): row}``; ``row["value"]`` is the number,
    ``row["state_metadata"]`` the edit's metadata and ``row["per_image"]`` the per-image values by spec id (for
    paired tests: two methods' images of one spec share its prompt and seed).
    """
    from harness.plugins import PluginHost
    from harness.registry import Registry
    from harness.runner import RunConfig, Runner, plan

    out = tmp_path_factory.mktemp("toy-store")
    registry = Registry(PluginHost())

    def run(methods: str, bench: str, limit: int, sets: tuple[str, ...] = ()) -> dict:
        config = RunConfig(methods=methods, bench=bench, limit=limit, sets=list(sets), out=str(out), show_progress=False)
        runner = Runner(plan(config, registry))
        runner.execute()
        rows = _rows_with_values(runner.store, runner.plan.run_id)
        _record_toy_values(methods, bench, limit, sets, rows)
        return rows

    return run


@pytest.fixture(scope="session")
def toy_attack_run(tmp_path_factory):
    """Run one method on a toy benchmark with ``--attack`` into a fresh store each call (so the attack really searches).

    ``toy_attack_run(method, bench, limit, attack)`` returns the static cell's ``toy:toy-asr`` row, the attack cell's
    row (``attack(bench)``), each with ``per_image`` values by spec id as in ``toy_run`` (an attack prompt keeps its
    source's id and seed, so the two pair up), and the attack's log record (``found_now``, ``cost_now``).
    """
    from harness.plugins import PluginHost
    from harness.registry import Registry
    from harness.runner import RunConfig, Runner, plan

    def run(method: str, bench: str, limit: int, attack: str) -> tuple[dict, dict, dict]:
        out = tmp_path_factory.mktemp("toy-attack")
        config = RunConfig(methods=method, bench=bench, model="toy", limit=limit, out=str(out), show_progress=False,
                           attacks=attack)
        runner = Runner(plan(config, Registry(PluginHost())))
        runner.execute()
        rows = {(benchmark, metric): row for (_, benchmark, metric), row in _rows_with_values(runner.store, runner.plan.run_id).items()}
        (record,) = runner.attack_log
        return rows[(bench, "toy:toy-asr")], rows[(f"{attack}({bench})", "toy:toy-asr")], record

    return run


def _rows_with_values(store, run_id: str) -> dict:
    """One run's stored results as ``{(method, benchmark, metric): row dict}``, each row with ``per_image``."""
    rows = {(r["method"], r["benchmark"], r["metric"]): dict(r) for r in store.results([run_id])}
    for (_, method, benchmark, metric), per_image in store.result_values([run_id]).items():
        rows[(method, benchmark, metric)]["per_image"] = {v["spec_id"]: v["value"] for v in per_image}
    return rows


def _record_toy_values(methods: str, bench: str, limit: int, sets, rows: dict) -> None:
    """With ``HARNESS_TOY_RECORD=FILE``, append every toy-effect run's values to FILE (JSON lines).

    A refactoring that must not change a number is checked by diffing two such files, one recorded before it.
    """
    import json

    target = os.environ.get("HARNESS_TOY_RECORD")
    if not target:
        return
    values = {" | ".join(key): row["value"] for key, row in sorted(rows.items())}
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"methods": methods, "bench": bench, "limit": limit, "sets": list(sets), "values": values}) + "\n")
