"""File helpers every layer uses: writes that land whole or not at all, the temp files a killed writer leaves,
a full disk as one line naming the file, and the run directory.

A file is written to a temp name beside it, fsynced and renamed over it, so a crash or a full disk leaves the
old file or the new one, never half of one; a reader never sees a torn checkpoint, manifest or output.json.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import uuid
from collections.abc import Collection, Iterator
from pathlib import Path

from data.errors import InputError

NAME_MAX = 255  # bytes in one file name (Linux, macOS and the common file systems)
_TEMP_NAME = re.compile(r"^\.(.+)\.[0-9a-f]{12}\.tmp$")  # atomic_path's temp name for <name>
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})


class NoSpaceError(InputError, OSError):
    """A write that found its disk full or its quota spent: one line naming the file it was writing (an
    InputError, so the command line prints just that), and still an OSError for callers that handle failed
    writes (the trunk cache, the alert evidence writer)."""

    def __str__(self) -> str:
        return f"{self.filename}: cannot write: {self.strerror} (free space there and run again)"


def _no_room(error: BaseException | None) -> OSError | None:
    """The disk-full OSError behind `error`, if any: torch.save, for one, turns its writer's ENOSPC into a
    RuntimeError whose context is the OSError."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in _NO_ROOM:
            return error
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp path beside `path` to write to (for writers that want a file name: PyAV, Pillow, matplotlib);
    fsynced and renamed over `path` only when the block succeeds, removed otherwise. A full disk is a
    NoSpaceError naming `path`."""
    path = Path(path)
    # same directory: the rename is atomic; the name cut so that a name that fits has a temp name that fits
    tmp = path.with_name(f".{path.name.encode()[:NAME_MAX - 18].decode(errors='ignore')}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # on disk before the rename: power loss can't expose a torn file
        os.replace(tmp, path)
    except Exception as e:
        full = None if isinstance(e, NoSpaceError) else _no_room(e)
        if full is None:
            raise
        raise NoSpaceError(full.errno, full.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temps(directory: str | Path, names: Collection[str] | None = None) -> int:
    """Remove the temp files atomic_path left in `directory` when its process was killed mid-write (only those
    for files named in `names`, when given: other processes may be writing the rest); the number removed."""
    directory, removed = Path(directory), 0
    if not directory.is_dir():
        return 0
    for entry in os.scandir(directory):
        match = _TEMP_NAME.match(entry.name)
        if match and (names is None or match.group(1) in names):
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed


def atomic_write(path: Path, write) -> None:
    """Call write(file) on a temp file beside `path`, fsync, then rename over `path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def make_run_dir(path: str | Path) -> Path:
    run_dir = Path(path)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"{run_dir}: run_dir exists and is not a directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in blocks (checkpoints and caches run to hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
