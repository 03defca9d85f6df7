"""Registers ``harness report`` and the leaderboard that ``harness run`` prints when it finishes.

The reports package is a plugin like any other (entry point ``reports`` in ``pyproject.toml``): the core never
imports it.  Nothing heavy is imported here; the command's modules load when it runs.
"""

from harness.hookspecs import hookimpl


@hookimpl
def register_commands(subparsers):
    from reports.command import add_report_command

    add_report_command(subparsers)


@hookimpl
def summarize_run(store, run_id):
    from reports import leaderboard

    return leaderboard.to_markdown(leaderboard.build(store.results(runs=[run_id])))
