"""The plugin host: entry points, one-file plugins, broken plugins, listing without torch."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.api import HarnessError
from harness.plugins import PluginHost, PluginLoadWarning
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


def installed(site: Path, distribution: str, version: str, entry_point: str, module: str, source: str) -> Path:
    """A distribution "installed" in ``site`` (put it on PYTHONPATH): its metadata, one ``harness`` entry point
    ``entry_point = module``, and the module's source."""
    info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[harness]\n{entry_point} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    return site


@pytest.fixture
def broken_distribution(tmp_path):
    """An installed distribution whose plugin module raises on import."""
    return installed(tmp_path / "site", "broken-dist", "1.0", "broken", "broken_plugin", "raise RuntimeError('boom at import')\n")


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


@pytest.fixture
def raising_hook_distribution(tmp_path):
    """An installed distribution whose register_methods hook registers one method, then raises."""
    return installed(tmp_path / "site", "raising-dist", "1.0", "raising", "raising_plugin", """
        from harness.hookspecs import hookimpl

        @hookimpl
        def register_methods(register):
            register("raising_plugin:Half", name="half-registered")
            raise ValueError("kaboom inside register_methods")
        """)


def test_an_installed_plugin_whose_hook_raises_is_skipped_not_fatal_to_every_command(raising_hook_distribution):
    """It took every command down, `--help`, `report` and `check` included, until it was uninstalled."""
    env = {"PYTHONPATH": str(raising_hook_distribution)}
    result = run_cli("list", "methods", env_extra=env)
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if "warning" in line]
    assert "'raising'" in warning and "raising-dist" in warning and "register_methods" in warning and "kaboom" in warning
    assert "sd" in result.stdout and "half-registered" not in result.stdout  # nothing of the failed hook is kept
    shown = run_cli("plugins", env_extra=env)
    assert shown.returncode == 0 and "FAILED in register_methods" in shown.stdout and "kaboom" in shown.stdout
    strict = run_cli("list", env_extra={**env, "HARNESS_STRICT_PLUGINS": "1"})
    assert strict.returncode == 2 and "kaboom" in strict.stderr and "Traceback" not in strict.stderr


def test_a_plugin_file_whose_hook_raises_is_still_an_error(tmp_path, capsys):
    """A --plugin file was asked for by name: its failure stops the command, in one line."""
    from harness.cli import main

    plugin = tmp_path / "raises.py"
    plugin.write_text("from harness.hookspecs import hookimpl\n\n@hookimpl\ndef register_methods(register):\n    raise ValueError('kaboom')\n")
    assert main(["--plugin", str(plugin), "list"]) == 2
    err = capsys.readouterr().err
    assert "failed in register_methods: ValueError: kaboom" in err and err.count("\n") == 1


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


def _twice_plugin():
    from harness.hookspecs import hookimpl

    class Twice:
        @hookimpl
        def register_methods(self, register):
            register("methods.sd:NoErasure", name="sd", description="again")

    return Twice()


def test_a_name_registered_twice_is_skipped_with_one_warning_and_the_builtin_wins(monkeypatch):
    monkeypatch.delenv("HARNESS_STRICT_PLUGINS", raising=False)
    host = PluginHost()
    host.add_module(_twice_plugin(), name="twice", source="in process")
    with pytest.warns(PluginLoadWarning) as caught:
        registry = Registry(host)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "method 'sd' is registered twice" in message
    assert "skipping the one from plugin 'twice' (in process)" in message and "keeping plugin 'methods' (entry point" in message
    assert registry.entry("methods", "sd").plugin == "methods"


def test_strict_mode_makes_a_name_registered_twice_fatal(monkeypatch):
    monkeypatch.setenv("HARNESS_STRICT_PLUGINS", "1")
    host = PluginHost()
    host.add_module(_twice_plugin(), name="twice")
    with pytest.raises(HarnessError, match="method 'sd' is registered twice"):
        Registry(host)


@pytest.fixture
def duplicate_distribution(tmp_path):
    """An installed distribution that registers its own ``uce`` (a different class) and reuses the plugin name ``paper``."""
    return installed(tmp_path / "site", "dup-dist", "2.0", "abc_first", "dup_plugin", """
        from harness.api import Method
        from harness.hookspecs import hookimpl

        class OtherUCE(Method):
            name = "uce"
            description = "a third-party method that reuses the name uce"

        @hookimpl
        def register_methods(register):
            register(OtherUCE)
        """)


def test_an_installed_duplicate_name_leaves_the_cli_working(duplicate_distribution, tmp_path):
    env = {"PYTHONPATH": str(duplicate_distribution)}
    for args in (["--help"], ["plugins"], ["list", "methods", "--json"]):
        result = run_cli(*args, env_extra=env)
        assert result.returncode == 0, (args, result.stderr)
        warnings = [line for line in result.stderr.splitlines() if "warning" in line]
        assert len(warnings) == 1, (args, result.stderr)
        assert "'uce' is registered twice" in warnings[0]
        assert "plugin 'abc_first' (entry point dup_plugin (dup-dist))" in warnings[0]
        assert "plugin 'methods' (entry point methods.plugin (erasure-harness))" in warnings[0]
    uce = next(record for record in json.loads(result.stdout) if record["name"] == "uce")
    assert uce["plugin"] == "methods"  # the built-in won, although 'abc_first' sorts (and loads) first

    out = tmp_path / "out"
    result = run_cli("--plugin", str(PLUGINS / "brightness.py"), "run", "--model", "tiny", "--methods", "uce", "--bench", "fixed:count=2",
                     "--out", str(out), "--no-progress", env_extra=env)
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("uce ") for line in result.stdout.splitlines())  # the terminal leaderboard row

    strict = run_cli("plugins", env_extra={**env, "HARNESS_STRICT_PLUGINS": "1"})
    assert strict.returncode == 2 and "'uce' is registered twice" in strict.stderr and "Traceback" not in strict.stderr


def test_a_second_plugin_with_a_taken_plugin_name_is_skipped_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_STRICT_PLUGINS", raising=False)
    import types

    host = PluginHost()
    other = types.ModuleType("mine")  # registered in process under the built-in plugin's name
    with pytest.warns(PluginLoadWarning, match=r"skipping plugin 'methods' \(in process\): the name is taken by entry point methods.plugin"):
        host.add_module(other, name="methods")
    assert host.info("methods").builtin
    # A one-file plugin is named after its file, unless another plugin has that name: then after its path.
    named_alike = tmp_path / "methods.py"
    named_alike.write_text("")
    host.add_file(named_alike)
    assert host.info("methods").builtin and host.info(str(named_alike.resolve())) is not None


MISSPELT = """
from harness.hookspecs import hookimpl

@hookimpl
def register_method(register):  # the hook is register_methods: pluggy accepts this and never calls it
    raise AssertionError("never called")
"""


def test_a_misspelt_hook_gives_one_warning_naming_the_hook_and_the_plugin(tmp_path):
    plugin = tmp_path / "misspelt.py"
    plugin.write_text(MISSPELT)
    result = run_cli("--plugin", str(plugin), "plugins")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, result.stderr
    assert "plugin 'misspelt'" in warnings[0] and "unknown hook 'register_method'" in warnings[0]
    assert "did you mean 'register_methods'?" in warnings[0]

    strict = run_cli("--plugin", str(plugin), "plugins", env_extra={"HARNESS_STRICT_PLUGINS": "1"})
    assert strict.returncode == 2
    assert "unknown hook 'register_method'" in strict.stderr and "Traceback" not in strict.stderr


def test_a_misspelt_hook_is_recorded_on_the_plugin(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_STRICT_PLUGINS", raising=False)
    plugin = tmp_path / "misspelt.py"
    plugin.write_text(MISSPELT)
    host = PluginHost([str(plugin)], load_entry_points=False)
    with pytest.warns(PluginLoadWarning):
        Registry(host)
    assert host.info("misspelt").unknown_hooks == ["register_method"]
    assert Registry(host).names("methods") == []  # the warning is given once; the hook was never called


def test_every_lazy_registration_matches_its_class_name_and_description():
    """A lazy entry repeats its class's name and description (so `harness list` imports nothing); they must not drift."""
    registry = Registry(PluginHost())
    checked = 0
    for kind in ("methods", "benchmarks", "scorers", "backbones"):
        for name, entry in registry.entries[kind].items():
            cls = registry.get(kind, name)  # raises if the class's name differs from the registration's
            assert cls.name == name
            assert entry.description == cls.description, f"{kind} {name!r}: registration and class descriptions differ"
            checked += 1
    assert checked >= 30


def test_a_lazy_registration_under_another_name_than_its_class_fails_on_load():
    from harness.hookspecs import hookimpl

    class Misnamed:
        @hookimpl
        def register_methods(self, register):
            register("methods.uce:UCE", name="uce-2", description="UCE under a second name")

    host = PluginHost()
    host.add_module(Misnamed(), name="misnamed")
    registry = Registry(host)
    with pytest.raises(HarnessError, match="registers method 'uce-2' as methods.uce:UCE, whose class is named 'uce'"):
        registry.get("methods", "uce-2")


def test_close_names_are_what_a_typo_most_likely_meant():
    from harness.api import close_names, did_you_mean

    methods = ["esd-u", "esd-x", "sd", "trce", "trce-t", "trce-v", "uce"]
    assert close_names("TRCE", methods) == ["trce"]  # the same name in other case first
    assert close_names("esd", methods) == ["esd-u", "esd-x"]  # the names it begins, not 'sd'
    assert close_names("ucee", methods) == ["uce"]  # else the closest spelling
    assert close_names("zzz", methods) == []
    assert did_you_mean("zzz", methods) == "; choose from " + ", ".join(methods)  # nothing close: the valid names


METHOD_PLUGIN = '''
from dataclasses import dataclass

from harness.api import Method
from harness.hookspecs import hookimpl


class Dampen(Method):
    name = "dampen-{tag}"
    description = "test method"

    {params}

    def edit(self, pipe, concepts, ctx):
        return {{}}


{decorator}
def register_methods(register):
    register(Dampen)
'''


def method_plugin(path, tag="x", params="@dataclass\n    class Params:\n        strength: float = 0.5", decorator="@hookimpl"):
    path.write_text(METHOD_PLUGIN.format(tag=tag, params=params, decorator=decorator))
    return str(path)


def test_a_plugin_file_named_like_a_built_in_plugin_still_loads(tmp_path):
    """The built-in plugins are called attacks, methods, benchmarks, ...: a user's attacks.py must not be skipped."""
    plugin = method_plugin(tmp_path / "methods.py", tag="named-like-builtin")
    result = run_cli("--plugin", plugin, "list", "methods")
    assert result.returncode == 0, result.stderr
    assert "dampen-named-like-builtin" in result.stdout and "skipping" not in result.stderr


def test_the_same_plugin_file_named_twice_loads_once_without_a_warning(tmp_path):
    """It warned that the name was taken, by the very same file."""
    for stem in ("mine", "methods"):  # methods.py: named like a built-in plugin, so it is registered under its path
        plugin = method_plugin(tmp_path / f"{stem}.py", tag=f"twice-{stem}")
        result = run_cli("--plugin", plugin, "--plugin", str(Path(plugin).resolve()), "list", "methods")
        assert result.returncode == 0, result.stderr
        assert f"dampen-twice-{stem}" in result.stdout and result.stderr == ""


def test_a_hook_without_hookimpl_is_flagged_not_silently_ignored(tmp_path):
    plugin = method_plugin(tmp_path / "forgot.py", tag="forgot", decorator="")
    result = run_cli("--plugin", plugin, "list", "methods")
    assert "defines register_methods without @hookimpl, so it is never called" in result.stderr
    strict = run_cli("--plugin", plugin, "list", "methods", env_extra={"HARNESS_STRICT_PLUGINS": "1"})
    assert strict.returncode == 2 and strict.stderr.count("\n") == 1 and "without @hookimpl" in strict.stderr


def test_params_that_are_not_a_dataclass_are_one_line(tmp_path):
    plugin = method_plugin(tmp_path / "plain.py", tag="plain", params="class Params:\n        strength = 0.5")
    result = run_cli("--plugin", plugin, "list", "--params", "dampen-plain")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "Dampen.Params must be a dataclass" in result.stderr


def test_a_one_file_plugins_cached_work_is_redone_when_the_file_changes(tmp_path, capsys):
    """Edits, raw scores and attack prompts are cached by name, parameters and version; a plugin file being written
    would give back the old cached edit after its code changed, unless the file's content is part of the version."""
    from harness.cli import main

    plugin = tmp_path / "mine.py"
    source = METHOD_PLUGIN.replace("return {{}}", "pipe.unet.conv_in.weight.data.mul_({scale}); return {{}}")
    prompts = tmp_path / "p.csv"
    prompts.write_text("prompt,evaluation_seed\na cat,1\na dog,2\n", encoding="utf-8")
    concepts = tmp_path / "red.json"
    concepts.write_text('{"name": "red", "erase": ["red"]}')

    def run(scale: str) -> float:
        plugin.write_text(source.format(tag="v", params="@dataclass\n    class Params:\n        strength: float = 0.5",
                                        decorator="@hookimpl", scale=scale))
        os.utime(plugin, (1_700_000_000, 1_700_000_000))  # the same mtime and size both times: a stale .pyc would pass
        code = main(["--plugin", str(plugin), "--plugin", str(PLUGINS / "brightness.py"), "run", "--model", "tiny", "--methods", "dampen-v",
                     "--bench", f"csv:path={prompts},metrics=brightness:mean", "--concepts", str(concepts),
                     "--out", str(tmp_path / "out"), "--no-progress", "--run-name", f"scale-{scale}"])
        assert code == 0, capsys.readouterr().err
        from harness.store import Store

        with Store(tmp_path / "out", create=False) as store:
            return next(r.value for r in store.results() if r.run_id == f"scale-{scale}")

    assert run("1.0") != run("0.0"), "the second file's edit must be computed, not read from the first's cache"


def test_a_parameter_without_default_left_out_says_how_to_give_it(tmp_path):
    plugin = method_plugin(tmp_path / "required.py", tag="required", params="@dataclass\n    class Params:\n        strength: float")
    result = run_cli("--plugin", plugin, "run", "--model", "tiny", "--methods", "dampen-required", "--bench", "toy-explicit",
                     "--limit", "1", "--out", str(tmp_path / "out"), "--dry-run")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "dampen-required needs strength (no default): give strength=VALUE beside its name (dampen-required:strength=VALUE)" in result.stderr


def test_a_name_the_command_line_could_not_select_is_refused_at_registration(tmp_path):
    plugin = method_plugin(tmp_path / "colon.py", tag="x")
    Path(plugin).write_text(Path(plugin).read_text().replace('name = "dampen-x"', 'name = "My:Method"'))
    result = run_cli("--plugin", plugin, "list", "methods")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "registers the method 'My:Method', which the command line could not select" in result.stderr


def test_a_concept_set_is_named_as_it_was_registered_and_a_missing_file_is_refused(tmp_path):
    """A registration's name= and the file's "name" differed, and `--concepts c-mismatch` planned "concepts
    other-name" (runs, keys and reports said the file's name); a missing file was listed and failed only in a run."""
    from harness.registry import Registry

    concepts = tmp_path / "c.json"
    concepts.write_text('{"name": "other-name", "erase": ["red"]}')
    plugin = tmp_path / "mismatch.py"
    plugin.write_text("from harness.hookspecs import hookimpl\n\n@hookimpl\ndef register_concept_sets(register):\n"
                      f"    register({str(concepts)!r}, name='c-mismatch', description='')\n")
    registry = Registry(PluginHost([str(plugin)], load_entry_points=False))
    selected = registry.concept_set("c-mismatch")
    assert selected.name == "c-mismatch" and selected.erase == ("red",)
    missing = tmp_path / "missing.py"
    missing.write_text("from harness.hookspecs import hookimpl\n\n@hookimpl\ndef register_concept_sets(register):\n"
                       f"    register({str(tmp_path / 'nowhere.json')!r}, name='gone', description='')\n")
    with pytest.raises(HarnessError, match=r"registers the concept set 'gone' as .*nowhere\.json, which is not a file"):
        Registry(PluginHost([str(missing)], load_entry_points=False))
