"""The clip store: one uint8 (T, H, W, 3) array per clip, plus a JSONL manifest.

Writes are atomic (temp file + rename), so a crashed job leaves complete clips
or none; reads are memory-mapped, so a Dataset touches only the frames it crops.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from data.errors import InputError


def atomic_write(path: Path, write) -> None:
    """Call write(file) on a temp file beside `path`, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ClipStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, clip_id: str) -> Path:
        return self.root / f"{clip_id}.npy"

    def has(self, clip_id: str) -> bool:
        return self.path(clip_id).is_file()

    def put(self, clip_id: str, frames: np.ndarray) -> None:
        atomic_write(self.path(clip_id), lambda f: np.save(f, np.ascontiguousarray(frames, dtype=np.uint8)))

    def get(self, clip_id: str) -> np.ndarray:
        return np.load(self.path(clip_id), mmap_mode="r")


def write_manifest(path: str | Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def read_manifest(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: manifest not found")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{number}: not a JSON line: {e}") from None
    return rows
