"""The plugin contract.

A plugin is any module that implements some of these hooks with ``@hookimpl``.
Built-in plugins are loaded exactly like third-party ones: through the
``harness`` entry-point group (see ``pyproject.toml``), or one file at a time
with ``harness --plugin path.py``.

Every ``register_*`` hook receives a ``register`` callable.  Call it with either
a class (``register(MyMethod)``; name and description are read from the class)
or, to keep ``harness list`` free of heavy imports, a lazy ``"module:Class"``
string together with its name and one-line description::

    register("methods.uce:UCE", name="uce", description="Unified Concept Editing")
"""

import pluggy

hookspec = pluggy.HookspecMarker("harness")
hookimpl = pluggy.HookimplMarker("harness")


@hookspec
def register_methods(register):
    """Register erasure methods (subclasses of ``harness.api.Method``)."""


@hookspec
def register_benchmarks(register):
    """Register benchmarks (subclasses of ``harness.api.Benchmark``).

    ``register`` also takes ``groups=("toy",)``: ``--bench toy`` then selects
    every benchmark of that group.
    """


@hookspec
def register_scorers(register):
    """Register scorers (subclasses of ``harness.api.Scorer``)."""


@hookspec
def register_backbones(register):
    """Register backbones (subclasses of ``harness.api.Backbone``)."""


@hookspec
def register_attacks(register):
    """Register red-teaming attacks (subclasses of ``harness.api.Attack``), run with ``harness run --attack NAME``."""


@hookspec
def register_concept_sets(register):
    """Register concept sets: ``register(path_to_json, name=..., description=...)``."""


@hookspec
def register_commands(subparsers):
    """Add ``harness`` sub-commands to an ``argparse`` sub-parser collection.

    Import heavy libraries inside the command's handler, not at module level,
    so that ``harness list`` stays fast.
    """


@hookspec(firstresult=True)
def summarize_run(store, run_id):
    """Return the text ``harness run`` prints when run ``run_id`` is finished (the reports plugin: its leaderboard).

    ``store`` is the ``harness.store.Store`` the run wrote.  The first plugin that returns a string wins; without
    one, ``harness run`` lists the stored values one per line.
    """
