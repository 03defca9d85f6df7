"""The README's "Write your own erasure method" example, installed and loaded exactly as the README shows."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).parent / "plugins"


def readme_example(marker: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- example:{marker} -->\n```\w+\n(.*?)```", text, re.S)
    assert match, f"README lost its {marker} example"
    return match.group(1)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    root = tmp_path_factory.mktemp("example") / "my-erasure"
    root.mkdir()
    (root / "pyproject.toml").write_text(readme_example("pyproject"))
    (root / "my_erasure.py").write_text(readme_example("module"))
    return root


def harness(*args, pythonpath=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env, timeout=600)


def test_the_example_is_about_thirty_lines(package):
    lines = len((package / "my_erasure.py").read_text().splitlines()) + len((package / "pyproject.toml").read_text().splitlines())
    assert lines <= 45


@pytest.mark.slow
def test_installed_package_registers_through_its_entry_point_and_runs(package, tmp_path):
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site), str(package)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr
    listing = harness("list", "methods", pythonpath=site)
    assert "dampen" in listing.stdout and "(my_erasure)" in listing.stdout, listing.stderr
    result = harness("--plugin", str(PLUGINS / "brightness.py"), "run", "--model", "tiny", "--methods", "sd,dampen:strength=0.9",
                     "--bench", "fixed:count=3", "--out", str(tmp_path / "out"), "--no-progress", pythonpath=site)
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("dampen:strength=0.9 ") for line in result.stdout.splitlines())  # its leaderboard row


def test_one_file_route(package, tmp_path):
    result = harness("--plugin", str(package / "my_erasure.py"), "--plugin", str(PLUGINS / "brightness.py"), "run", "--model", "tiny",
                     "--methods", "dampen", "--bench", "fixed:count=2", "--out", str(tmp_path / "out"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("dampen ") for line in result.stdout.splitlines())
    # The edit really ran: its metadata is in the manifest.
    manifest = next((tmp_path / "out" / "runs").glob("*/manifest.json")).read_text()
    assert '"strength": 0.5' in manifest


def test_the_example_documents_its_parameter_through_list_params(package):
    result = harness("--plugin", str(package / "my_erasure.py"), "list", "--params", "dampen")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("strength "))
    assert "0.5" in line and "≥ 0 and ≤ 1" in line and "share of each value projection removed" in line


def test_the_scorer_and_benchmark_example_runs_as_a_one_file_plugin(tmp_path):
    """The README's second example, loaded with --plugin exactly as its first line says, on the tiny pipeline."""
    module = tmp_path / "my_scoring.py"
    module.write_text(readme_example("scorer"))
    first = readme_example("scorer").splitlines()[0]
    assert first.startswith("# my_scoring.py: harness --plugin my_scoring.py run")
    run = harness("--plugin", str(module), "run", "--model", "tiny", "--bench", "dark-or-light", "--out", str(tmp_path / "out"),
                  "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "light share" in run.stdout and "n=2" in run.stdout
