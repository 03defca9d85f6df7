"""Progress bars redraw often in a terminal and seldom in a log file (harness/progress.py)."""

import io
import itertools

from harness import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def redraws(stream) -> int:
    return stream.getvalue().count("\r")


def test_a_bar_written_to_a_log_writes_a_line_at_most_every_log_interval(monkeypatch):
    monkeypatch.setattr(progress, "LOG_INTERVAL", 30.0)
    log, terminal = io.StringIO(), Terminal()
    for stream in (log, terminal):
        with progress.bar(total=200, desc="sampling", file=stream, miniters=1) as shown:
            clock = itertools.count(int(shown.start_t) + 1)  # tqdm's clock, one second later at every reading
            shown._time = lambda: next(clock)  # noqa: B023
            for _ in range(200):
                shown.update(1)
    assert "200/200" in log.getvalue() and "200/200" in terminal.getvalue()  # both end with the whole count
    assert redraws(terminal) > 100  # a terminal: about every update (each a second after the last)
    assert redraws(log) < 20  # a log: about one line per 30 s of ~400 s, and the last


def test_a_disabled_bar_shows_nothing():
    log = Terminal()
    for _ in progress.bar(range(5), desc="x", enabled=False, file=log):
        pass
    assert log.getvalue() == ""


def test_a_closed_or_odd_stream_counts_as_no_terminal():
    closed = io.StringIO()
    closed.close()
    assert not progress.interactive(closed)
    assert not progress.interactive(object())
    assert progress.interactive(Terminal())


def test_a_notebook_stream_counts_as_interactive():
    Notebook = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})  # what Jupyter's stderr is
    assert progress.interactive(Notebook())
