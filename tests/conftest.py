"""Shared fixtures.  Tests never touch the network: the hub is forced offline before anything imports it."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def pytest_addoption(parser):
    # Here, not in tests/perf/conftest.py: options must be known before collection starts.
    parser.addoption("--device", default="cpu", help="device for throughput benchmarks (cpu, cuda)")
    parser.addoption("--dtype", default="float32", help="dtype for throughput benchmarks (float32, float16)")

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
