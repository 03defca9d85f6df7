"""Files the store references: written atomically, recorded with size and sha256, checked when read.

A file (image, model delta, method cache) is written to a temporary name
beside its target, fsynced and renamed, then recorded in the ``files`` table
with its size and sha256.  A reader asks :func:`verify` first: a file that is
missing, has the wrong size or fails its hash is treated as absent — one
warning line, the damaged file removed, its record forgotten — and the caller
regenerates it.  Nothing damaged is ever scored or loaded.

Hashing costs one sequential read of a file the caller reads anyway; it is
measured in ``tests/faults`` and stays at a few percent of a run.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.api import HarnessError

IMAGE, DELTA, CACHE, OUTPUT = "image", "delta", "cache", "output"
TEMP_SUFFIX = ".tmp"


class DamagedFileWarning(UserWarning):
    """A stored file was missing, truncated or failed its hash; it is treated as absent and regenerated."""


@dataclass(frozen=True)
class Record:
    path: str  # relative to the store root, '/'-separated
    sha256: str
    size: int
    kind: str


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def temp_path(path: Path) -> Path:
    """A private temporary name beside ``path`` (same filesystem, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}{TEMP_SUFFIX}")


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (a crash right after it must not bring the old name back)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform/filesystem: the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Rust's io::Error as safetensors prints it: "I/O error: No space left on device (os error 28)" (Display) or
# 'IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })' (Debug, older versions)
OS_ERROR_INSIDE = re.compile(r'(?:I/O error: )?(?P<display>[^:]+?) \(os error \d+\)|Os \{ code: \d+, [^}]*message: "(?P<debug>[^"]+)"')


def os_error_inside(err: BaseException) -> str | None:
    """The operating system's reason inside an error that is not an ``OSError``: safetensors reports a full or
    read-only disk as its own ``SafetensorError`` ("Error while serializing: I/O error: No space left on device
    (os error 28)"), which would otherwise reach the user as a traceback."""
    if isinstance(err, OSError):
        return err.strerror or str(err)
    found = OS_ERROR_INSIDE.search(str(err))
    return (found["display"] or found["debug"]).strip() if found else None


def _write_failed(path: Path, err: BaseException) -> HarnessError:
    reason = os_error_inside(err) or str(err)
    return HarnessError(f"cannot write {path}: {reason}; free space or fix the disk, then run the same command again "
                        "(finished work is kept)")


def atomic_write(path: Path, data: bytes | None = None, *, write: Callable[[Path], None] | None = None) -> tuple[str, int]:
    """Write ``data`` (or let ``write(temp_path)`` write the file) and rename it into place; return (sha256, size).

    A failing disk (ENOSPC, EIO) becomes a one-line HarnessError and leaves neither
    the temporary file nor a partial ``path`` behind.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if write is None:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            digest, size = hashlib.sha256(data).hexdigest(), len(data)
        else:
            write(tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            digest, size = sha256_file(tmp), tmp.stat().st_size
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _write_failed(path, err) from None
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, Exception) and os_error_inside(err):  # a writer's own error type around a disk error
            raise _write_failed(path, err) from None
        raise
    return digest, size


class Files:
    """The ``files`` table of one store: what each referenced file must be."""

    def __init__(self, store):
        self.store = store

    def relative(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.store.root.resolve()).as_posix()

    def write(self, path: Path, data: bytes | None = None, *, kind: str, write: Callable[[Path], None] | None = None,
              record: bool = True) -> Record:
        """Atomically write a file of the store and (unless ``record=False``: the caller records it in its own transaction) record it."""
        digest, size = atomic_write(path, data, write=write)
        entry = Record(self.relative(path), digest, size, kind)
        if record:
            self.record([entry])
        return entry

    def record(self, entries: list[Record]) -> None:
        self.store.db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", [_row(entry, self.store) for entry in entries])

    def lookup(self, path: Path) -> Record | None:
        row = self.store.db.execute("SELECT * FROM files WHERE path=?", (self.relative(path),)).fetchone()
        return Record(row["path"], row["sha256"], row["size"], row["kind"]) if row else None

    def forget(self, path: Path) -> None:
        self.store.db.execute("DELETE FROM files WHERE path=?", (self.relative(path),))

    def problem(self, path: Path, record: Record | None, deep: bool = True) -> str | None:
        """What is wrong with ``path`` against its record (None: it is intact)."""
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return "missing"
        if record is None:
            return None
        if size != record.size:
            return f"truncated or overwritten: {size} bytes, recorded {record.size}"
        if deep and sha256_file(path) != record.sha256:
            return "fails its sha256 check (bit rot or an overwrite)"
        return None

    def inspect(self, path: Path, *, adopt: Callable[[Path], bool] | None = None) -> str | None:
        """Read-only: what is wrong with ``path`` (None: intact, or unrecorded but ``adopt`` finds it sound)."""
        record = self.lookup(path)
        if record is None and Path(path).exists():
            return None if adopt is None or _sound(adopt, Path(path)) else "unrecorded and unreadable"
        return self.problem(path, record)

    def read(self, path: Path, what: str) -> bytes:
        """The bytes of a recorded file, checked against its record in memory (no second read)."""
        path = Path(path)
        record = self.lookup(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = None
        if data is None:
            problem = "missing"
        elif record is not None and len(data) != record.size:
            problem = f"truncated or overwritten: {len(data)} bytes, recorded {record.size}"
        elif record is not None and hashlib.sha256(data).hexdigest() != record.sha256:
            problem = "fails its sha256 check (bit rot or an overwrite)"
        else:
            return data
        path.unlink(missing_ok=True)
        self.forget(path)
        raise HarnessError(f"{what} {path} was damaged while this run used it ({problem}); it was removed: "
                           "run the same command again to regenerate it")

    def verify(self, path: Path, what: str, *, adopt: Callable[[Path], bool] | None = None, kind: str = OUTPUT,
               remedy: str = "it is regenerated") -> bool:
        """True if ``path`` exists and matches its record; otherwise warn once (if it was recorded), remove it and return False.

        A file with no record (a store written before the ``files`` table, or a kill
        between the rename and the record) is accepted only if ``adopt(path)`` —
        a decode check by the caller — says it is sound; it is then recorded.
        Without ``adopt`` an unrecorded file is treated as absent, silently.
        """
        path = Path(path)
        record = self.lookup(path)
        if record is None:
            if not path.exists():
                return False
            if adopt is None:
                return False
            if _sound(adopt, path):
                self.record([Record(self.relative(path), sha256_file(path), path.stat().st_size, kind)])
                return True
            warn_damaged(what, path, "unrecorded and unreadable", remedy)
            path.unlink(missing_ok=True)
            return False
        problem = self.problem(path, record)
        if problem is None:
            return True
        warn_damaged(what, path, problem, remedy)
        path.unlink(missing_ok=True)
        self.forget(path)
        return False


def _sound(adopt: Callable[[Path], bool], path: Path) -> bool:
    try:
        return bool(adopt(path))
    except Exception:  # noqa: BLE001 - any decoder error means "not sound"
        return False


def _row(entry: Record, store) -> tuple:
    from harness.store import now

    return (entry.path, entry.sha256, entry.size, entry.kind, now())


def warn_damaged(what: str, path: Path, problem: str, remedy: str = "it is regenerated") -> None:
    warnings.warn(f"{what} {path} is damaged ({problem}); {remedy}", DamagedFileWarning, stacklevel=3)


def image_decodes(path: Path) -> bool:
    """A PNG that PIL can fully decode (used to adopt unrecorded images)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
    return True


def safetensors_loads(path: Path) -> bool:
    from safetensors.torch import load_file

    load_file(str(path))
    return True
