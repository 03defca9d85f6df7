"""The plugin host: entry points, one-file plugins, broken plugins, listing without torch."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.api import HarnessError
from harness.plugins import PluginHost
from harness.registry import Registry

PLUGINS = Path(__file__).parent / "plugins"


def run_cli(*args, env_extra=None, cwd=None):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_builtins_load_through_entry_points():
    host = PluginHost()
    sources = {info.name: info.source for info in host.infos}
    assert {"backbones", "methods", "benchmarks"} <= set(sources)
    assert all(source.startswith("entry point ") for source in sources.values())
    registry = Registry(host)
    assert "sd" in registry.names("methods")
    assert {"tiny", "sd14"} <= set(registry.names("backbones"))


def test_one_file_plugin_registers_its_classes(registry):
    assert "fixed" in registry.names("benchmarks")
    assert registry.get("scorers", "brightness").name == "brightness"
    info = next(i for i in registry.host.infos if i.name == "brightness")
    assert info.source.endswith("brightness.py")
    assert info.hooks == ["register_benchmarks", "register_concept_sets", "register_scorers"]


def test_unknown_names_get_did_you_mean(registry):
    with pytest.raises(HarnessError, match="did you mean 'scale-keys'"):
        registry.get("methods", "scale-key")
    with pytest.raises(HarnessError, match="did you mean 'brightness'"):
        registry.get("scorers", "brigthness")


def test_plugin_file_with_syntax_error_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def broken(:\n")
    result = run_cli("--plugin", str(bad), "list")
    assert result.returncode == 2
    assert "plugin file" in result.stderr and "SyntaxError" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def broken_distribution(tmp_path):
    """An installed distribution whose plugin module raises on import."""
    site = tmp_path / "site"
    (site / "broken_dist-1.0.dist-info").mkdir(parents=True)
    (site / "broken_dist-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-dist\nVersion: 1.0\n")
    (site / "broken_dist-1.0.dist-info" / "entry_points.txt").write_text("[harness]\nbroken = broken_plugin\n")
    (site / "broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    return site


def test_plugin_that_raises_on_import_is_skipped_with_one_warning(broken_distribution):
    result = run_cli("list", "methods", env_extra={"PYTHONPATH": str(broken_distribution)})
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "'broken'" in warnings[0] and "boom at import" in warnings[0]
    assert "sd" in result.stdout


def test_strict_mode_makes_a_broken_plugin_fatal(broken_distribution):
    result = run_cli("list", env_extra={"PYTHONPATH": str(broken_distribution), "HARNESS_STRICT_PLUGINS": "1"})
    assert result.returncode == 2
    assert "boom at import" in result.stderr and "Traceback" not in result.stderr


def test_list_does_not_import_torch_or_diffusers():
    code = textwrap.dedent(
        f"""
        import sys
        from harness.cli import main
        assert main(["--plugin", {str(PLUGINS / "brightness.py")!r}, "list"]) == 0
        heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
        print("HEAVY", heavy)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    assert "fixed" in result.stdout  # the listing really happened


def test_list_and_plugins_json(registry):
    result = run_cli("--plugin", str(PLUGINS / "brightness.py"), "list", "benchmarks", "--json")
    records = json.loads(result.stdout)
    fixed = next(r for r in records if r["name"] == "fixed")
    assert fixed["plugin"] == "brightness" and fixed["description"]
    result = run_cli("plugins", "--json")
    plugins = json.loads(result.stdout)
    methods = next(p for p in plugins if p["name"] == "methods")
    assert methods["version"] == "0.1.0" and "register_methods" in methods["hooks"]


def test_registering_a_name_twice_is_an_error():
    from harness.hookspecs import hookimpl

    class Twice:
        @hookimpl
        def register_methods(self, register):
            register("methods.sd:NoErasure", name="sd", description="again")

    host = PluginHost()
    host.add_module(Twice(), name="twice")
    with pytest.raises(HarnessError, match="registered twice"):
        Registry(host)
