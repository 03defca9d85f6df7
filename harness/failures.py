"""How the command line fails: one line on stderr, exit code 2, no traceback, for every error a user can cause.

With ``--json`` the error is also printed to stdout as ``{"error": "..."}``, so a tool that reads the output
always gets JSON.  Errors that are bugs (anything not listed in ``user_error``) keep their traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import inspect
import json
import os
import sqlite3
import sys

from harness.api import HarnessError

USAGE_EXIT = 2


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, Slurm's time limit) raised as an interrupt, so a run stops as after Ctrl-C: claims released,
    transactions rolled back, the store closed, one line said (``harness.cli.main``)."""


@contextlib.contextmanager
def naming_the_plugin(plugin, kind: str, label: str, step: str):
    """A bug raised inside a plugin's own code (a method's ``edit``, a benchmark's ``prompts``, a scorer's ``score``,
    a metric, an attack) keeps its traceback, with a last line naming the plugin and its class: in a run of several
    (some from third-party packages) the traceback alone does not say whose code failed.  ``kind``: "method",
    "benchmark", "scorer", "attack"; ``step``: the call that raised."""
    try:
        yield
    except (HarnessError, KeyboardInterrupt, OSError):
        raise  # the user's to fix (one line) or an interrupt: nothing to add
    except Exception as err:
        if not hasattr(err, "add_note"):  # Python 3.10: the traceback alone
            raise
        cls = type(plugin)
        try:
            where = inspect.getsourcefile(cls) or cls.__module__
        except TypeError:  # a class made at run time
            where = cls.__module__
        err.add_note(f"raised in {kind} {label!r} ({cls.__qualname__}.{step}, {where}): a bug in that {kind}'s code")
        raise


def _raise_terminated(signum, frame):
    raise Terminated


def handle_sigterm():
    """Turn SIGTERM into ``Terminated`` for this process; returns the previous handler to restore (None off the main
    thread, where Python cannot set handlers)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the whole usage block before its error; here a usage error is one line, like every other."""

    def error(self, message):
        raise HarnessError(f"{message} (see `{self.prog} --help`)")

    def parse_args(self, args=None, namespace=None):
        """Unknown options are found by the top parser; name the sub-command they were given to in the hint."""
        for parser in all_parsers(self):
            parser.set_defaults(_command_prog=parser.prog)  # the deepest chosen sub-command's default wins
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            prog = getattr(parsed, "_command_prog", self.prog)
            raise HarnessError(f"unrecognized arguments: {' '.join(extra)} (see `{prog} --help`)")
        return parsed


class Once(argparse.Action):
    """A comma-list option (--methods, --bench) given twice: argparse keeps the last silently, so the first list
    would be lost.  Refused, with the one list that names both."""

    def __call__(self, parser, namespace, values, option_string=None):
        marker = f"_given_{self.dest}"
        first = getattr(namespace, marker, None)
        if first is not None:
            raise HarnessError(f"{option_string} is given twice ({first} and {values}); name them all in one comma list: "
                               f"{option_string} {first},{values}")
        setattr(namespace, marker, values)
        setattr(namespace, self.dest, values)


def all_parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield from all_parsers(child)


def describe_os_error(err: OSError) -> str:
    """``PermissionError: [Errno 13] ...: '/x'`` → ``cannot write /x: permission denied``, with what to do."""
    where = err.filename or ""
    reason = (err.strerror or type(err).__name__).lower()
    hints = {
        errno.ENOSPC: "free some disk space",
        errno.EACCES: "choose a folder you can write to",
        errno.EPERM: "choose a folder you can write to",
        errno.EROFS: "the file system is read-only; choose another folder",
        errno.ENOENT: "check the path (its parent folder must exist and be a real folder)",
    }
    hint = hints.get(err.errno, "check the path and its permissions")
    return f"{where + ': ' if where else ''}{reason}; {hint}"


def user_error(err: BaseException) -> str | None:
    """The one-line message for an error the user caused, or None for a bug (which keeps its traceback)."""
    if isinstance(err, HarnessError):
        return str(err)
    if type(err).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
        return "out of GPU memory; lower --batch-size (or use --dtype float16)"
    if isinstance(err, OSError):
        return describe_os_error(err)
    if type(err).__name__ == "OperationalError" and any(text in str(err) for text in ("disk is full", "disk I/O error")):
        # sqlite3's own words for ENOSPC/EIO: each transaction rolled back whole, so the store is consistent.
        return f"the results database could not be written ({err}); free some disk space, then run the same command again"
    if type(err) is sqlite3.DatabaseError:  # "database disk image is malformed": damage Store's opening did not reach
        # Only the exact class: its subclasses (IntegrityError, ProgrammingError, ...) are bugs and keep their traceback.
        return f"the results database (harness.db) is damaged ({err}); restore it from a copy or choose another --out"
    return None


def fail(message: str, *, as_json: bool) -> int:
    message = " ".join(message.split())  # one line, whatever the message held
    if as_json:
        try:
            print(json.dumps({"error": message}))
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass
    print(f"harness: error: {message}", file=sys.stderr)
    return USAGE_EXIT


def closed_pipe() -> int:
    """The reader went away (``harness report --json | head``): say so once, and stop Python's own complaint at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (a test's capture)
        pass
    print("harness: error: the output pipe was closed before everything was written (e.g. by `| head`)", file=sys.stderr)
    return USAGE_EXIT
