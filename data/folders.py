"""A manifest from videos sorted into a folder per class, for users training on their own footage.

Accepted layouts (as the public fight datasets ship):
  <root>/fights/*.avi, <root>/nonfights/*.avi                  (a folder per class)
  <root>/train/Fight/*.avi, <root>/val/NonFight/*.avi          (RWF-2000: a split, then a folder per class)
Class folder names are matched case-insensitively: fight, fights, violence -> fight;
nonfight, nonfights, non-fight, nofight, noviolence, non-violence, calm -> nonfight. Without split folders a seeded,
class-stratified `val_fraction` of the videos is held out. Each video becomes one clip spanning the whole video
(these datasets are cut into short clips already); its id is its path under the root, percent-encoded
(`video_id_of`).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from urllib.parse import quote

from data.clips import probe
from data.errors import InputError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v"}
CLASS_FOLDERS = {
    "fight": "fight", "fights": "fight", "violence": "fight",
    "nonfight": "nonfight", "nonfights": "nonfight", "non-fight": "nonfight", "nofight": "nonfight",
    "noviolence": "nonfight", "non-violence": "nonfight", "calm": "nonfight",
}
log = logging.getLogger(__name__)
SPLIT_FOLDERS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}


def video_id_of(path: Path, root: Path) -> str:
    """The video's path under root, percent-encoded into one file name ('fights/a_b.avi' -> 'fights%2Fa_b.avi'):
    distinct files get distinct ids (joining folders with '_' made 'a/b_c.mp4' and 'a_b/c.mp4' one shard), and the
    id still reads as the path."""
    return quote(path.relative_to(root).as_posix(), safe="")


def _class_videos(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {"fight": [], "nonfight": []}
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = CLASS_FOLDERS.get(child.name.lower())
        if label:
            found[label] += sorted(p for p in child.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    return found


def folder_manifest(root: str | Path, val_fraction: float, seed: int) -> list[dict]:
    """Manifest rows ({"clip_id", "video_id", "path", "start_s", "end_s", "label", "label_id", "subset"})."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: video folder does not exist")
    splits = {SPLIT_FOLDERS[p.name.lower()]: p for p in root.iterdir() if p.is_dir() and p.name.lower() in SPLIT_FOLDERS}
    by_subset: dict[str, dict[str, list[Path]]] = {}
    if splits:
        by_subset = {subset: _class_videos(folder) for subset, folder in splits.items()}
    else:
        rng = random.Random(seed)
        by_subset = {"training": {}, "validation": {}}
        for label, videos in _class_videos(root).items():
            held_out = set(rng.sample(videos, round(len(videos) * val_fraction)))
            by_subset["validation"][label] = [v for v in videos if v in held_out]
            by_subset["training"][label] = [v for v in videos if v not in held_out]
    rows = []
    for subset, classes in by_subset.items():
        for label, videos in classes.items():
            for path in videos:
                video_id = video_id_of(path, root)
                try:
                    info = probe(path)
                except InputError as e:  # one unreadable file must not stop the import
                    log.warning("skipping %s", e)
                    continue
                rows.append({"clip_id": video_id, "video_id": video_id, "path": str(path), "start_s": 0.0,
                             "end_s": info.frames / float(info.fps), "label": label,
                             "label_id": int(label == "fight"), "subset": subset})
    if not any(r["label"] == "fight" for r in rows) or not any(r["label"] == "nonfight" for r in rows):
        names = ", ".join(sorted(CLASS_FOLDERS))
        raise InputError(f"{root}: need videos of both classes in folders named like: {names}")
    return rows
