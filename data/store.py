"""The clip store: JPEG frames in tar shards, one shard per source video, plus a JSON index per shard.

Chosen by measurement (scripts/bench/bench_clip_store.py, numbers in README.md): against one .npy per clip
it is ~10x smaller, against a JPEG folder per clip it puts two files instead of hundreds per video on a shared
filesystem, and a sample decodes only the 16 frames it uses, read by offset, so random access by clip is one
seek per frame. The shards are plain tar files (`tar tf` lists them). A shard is written to a temp file and
renamed, then its index the same way: an index on disk means a complete shard, so a crash or a full disk
leaves whole shards or none.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import simplejpeg

from data.errors import InputError
from data.files import NAME_MAX, atomic_write

INDEX_SUFFIX = ".index.json"
CUT_FILE = "cut.json"  # how the store's clips were cut: {"fps", "short_side", "view"}
# simplejpeg calls libjpeg-turbo with no image objects between: 1.6x the encode and 1.9x the decode rate of Pillow
# (170x128 frames, bench_clip_store), with Pillow's pixels on decode and its 4:2:0 at this quality on encode (the
# same error against the source).
def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    return simplejpeg.encode_jpeg(frame, quality, colorspace="RGB", colorsubsampling="420")


def decode_jpeg(data: bytes) -> np.ndarray:
    return simplejpeg.decode_jpeg(data, colorspace="RGB")


def shard_stem(shard: str) -> str:
    """The file name of a shard, less its suffixes: the shard itself, or where that would pass NAME_MAX (a
    folder set's percent-encoded id of a long or non-ASCII path) its first 150 bytes and a digest of it all."""
    if len(f"{shard}{INDEX_SUFFIX}".encode()) <= NAME_MAX:
        return shard
    return f"{shard.encode()[:150].decode(errors='ignore')}~{hashlib.sha256(shard.encode()).hexdigest()[:16]}"


class ClipStore:
    """Reads keep one descriptor per shard open (os.pread needs no seek, so threads may share it); close() or
    a with block closes them. A closed store reopens what it reads next."""

    def __init__(self, root: str | Path, quality: int = 90):
        self.root, self.quality = Path(root), quality
        self._index: dict[str, dict] | None = None
        self._files: dict[str, int] = {}

    def __getstate__(self):  # open file descriptors do not cross into DataLoader workers or Ray tasks
        return {**self.__dict__, "_files": {}}

    def __enter__(self) -> "ClipStore":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        files, self._files = self._files, {}
        for fd in files.values():
            os.close(fd)

    @property
    def index(self) -> dict[str, dict]:
        """clip_id -> {"shard", "frames", "height", "width", "offsets"}; loaded once from the shard indexes."""
        if self._index is None:
            self._index = {}
            for path in sorted(self.root.glob(f"*{INDEX_SUFFIX}")):
                for clip_id, entry in json.loads(path.read_text())["clips"].items():
                    self._index[clip_id] = entry
        return self._index

    def refresh(self) -> None:
        """Forget the loaded index, e.g. after other processes wrote shards."""
        self._index = None

    def check_cut(self, cut: Mapping[str, object]) -> None:
        """Record how this store's clips are cut (`cut`, e.g. {"fps", "short_side", "view"}) on first use; after
        that, InputError when `cut` differs: clips skipped as done would be another cut than the ones added."""
        path = self.root / CUT_FILE
        if path.is_file():
            recorded = json.loads(path.read_text())
            changed = {key: (recorded.get(key), value) for key, value in cut.items() if recorded.get(key) != value}
            if changed:
                raise InputError(f"{path}: the clips here were cut with " + ", ".join(
                    f"{key}={was!r}" for key, (was, _) in changed.items()) + ", this config asks for " + ", ".join(
                    f"{key}={now!r}" for key, (_, now) in changed.items()) + f"; use another run_dir or delete "
                    f"{self.root}")
            return
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(json.dumps(dict(cut)).encode()))

    def has(self, clip_id: str) -> bool:
        return clip_id in self.index

    def shard_done(self, shard: str) -> bool:
        return (self.root / f"{shard_stem(shard)}{INDEX_SUFFIX}").is_file()

    def shape(self, clip_id: str) -> tuple[int, int, int]:
        entry = self.index[clip_id]
        return entry["frames"], entry["height"], entry["width"]

    def write_shard(self, shard: str, clips: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]]) -> list[str]:
        """Write the clips of one source video (uint8 (T, H, W, 3) each, by clip id) as one shard; the ids written.

        Each clip is encoded as it comes, so a generator of (clip_id, frames) pairs holds one clip at a time (a
        movie's hundred 4 s clips of raw frames at short side 128 are 0.9 GB). No clips: no shard."""
        pairs = iter(clips.items() if isinstance(clips, Mapping) else clips)
        first = next(pairs, None)
        if first is None:
            return []
        tar_path = self.root / f"{shard_stem(shard)}.tar"
        entries: dict[str, dict] = {}

        def write_tar(f):
            with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for clip_id, frames in itertools.chain([first], pairs):
                    offsets = []
                    for i, frame in enumerate(frames):
                        data = encode_jpeg(np.ascontiguousarray(frame, dtype=np.uint8), self.quality)
                        info = tarfile.TarInfo(f"{clip_id}/{i:05d}.jpg")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
                        # tar.offset is now past the member's data, padded to whole blocks
                        padded = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                        offsets.append([tar.offset - padded, len(data)])
                    entries[clip_id] = {"shard": tar_path.name, "frames": len(frames), "height": frames.shape[1],
                                        "width": frames.shape[2], "offsets": offsets}

        atomic_write(tar_path, write_tar)
        index = {"shard": tar_path.name, "clips": entries}
        atomic_write(self.root / f"{shard_stem(shard)}{INDEX_SUFFIX}", lambda f: f.write(json.dumps(index).encode()))
        if self._index is not None:
            self._index.update(entries)
        return list(entries)

    def read(self, clip_id: str, frame_indices=None) -> np.ndarray:
        """The clip's frames (all, or those at `frame_indices`) as uint8 (T, H, W, 3)."""
        entry = self.index[clip_id]
        fd = self._files.get(entry["shard"])
        if fd is None:
            fd = self._files[entry["shard"]] = os.open(self.root / entry["shard"], os.O_RDONLY)
        offsets = entry["offsets"]
        wanted = range(len(offsets)) if frame_indices is None else frame_indices
        return np.stack([decode_jpeg(os.pread(fd, offsets[i][1], offsets[i][0])) for i in wanted])


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
