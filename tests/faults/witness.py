"""A one-file test plugin that logs every image and model delta file a process writes (``HARNESS_TEST_WRITE_LOG=FILE``: "pid path" lines).

Concurrent runs on one store use it to count duplicate work (images made twice, erasures run twice).  It registers no hooks.
"""

import os

from harness import integrity

_log = os.environ.get("HARNESS_TEST_WRITE_LOG")
if _log:
    _original = integrity.Files.write

    def _logging_write(self, path, data=None, *, kind, **kwargs):
        entry = _original(self, path, data, kind=kind, **kwargs)
        if kind in (integrity.IMAGE, integrity.DELTA):
            with open(_log, "a", encoding="utf-8") as handle:  # one short O_APPEND write per line: lines never interleave
                handle.write(f"{os.getpid()} {entry.path}\n")
        return entry

    integrity.Files.write = _logging_write
