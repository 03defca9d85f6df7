"""Progress bars (tqdm) that suit where stderr goes.

In a terminal a bar redraws ten times a second.  Written to a file (a Slurm or
nohup log, CI), each redraw is another copy of the line: an hour's run leaves
tens of thousands.  There a bar writes at most once every ``LOG_INTERVAL``
seconds, and once when it ends, so a log still shows how far a run got.
"""

from __future__ import annotations

import sys

LOG_INTERVAL = 30.0  # seconds between a bar's lines when stderr is not a terminal


def interactive(stream=None) -> bool:
    """Whether a bar on ``stream`` (default stderr) redraws in place: a terminal, or a notebook (its widget)."""
    stream = sys.stderr if stream is None else stream
    if type(stream).__module__.startswith("ipykernel"):  # a Jupyter cell's stream: tqdm.auto draws a widget there
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False


def bar(iterable=None, *, total=None, desc: str = "", enabled: bool = True, file=None, **kwargs):
    """A tqdm bar over ``iterable`` (or updated by hand with ``total``); ``enabled=False`` shows nothing."""
    from tqdm.auto import tqdm

    kwargs.setdefault("mininterval", 0.1 if interactive(file) else LOG_INTERVAL)
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, dynamic_ncols=True, file=file, **kwargs)
