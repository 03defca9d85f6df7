"""Registers the reports package's commands (``harness report``, ``compare``, ``export``) and the leaderboard that
``harness run`` prints when it finishes.

The reports package is a plugin like any other (entry point ``reports`` in ``pyproject.toml``): the core never
imports it.  Nothing heavy is imported here; a command's modules load when it runs.
"""

from harness.hookspecs import hookimpl


@hookimpl
def register_commands(subparsers):
    from reports import commands
    from reports.command import add_report_command

    add_report_command(subparsers)
    commands.register_commands(subparsers)


@hookimpl
def summarize_run(store, run_id):
    from reports import leaderboard

    board = leaderboard.build(store.results(runs=[run_id]), values=store.result_values(runs=[run_id]))
    return leaderboard.to_terminal(board)
