"""A manifest from videos sorted into a folder per class, for users training on their own footage.

Accepted layouts (as the public fight datasets ship):
  <root>/fights/*.avi, <root>/nonfights/*.avi                  (a folder per class)
  <root>/train/Fight/*.avi, <root>/val/NonFight/*.avi          (RWF-2000: a split, then a folder per class)
Class folder names are matched case-insensitively: fight, fights, violence -> fight;
nonfight, nonfights, non-fight, nofight, noviolence, non-violence, calm -> nonfight. Without split folders a seeded,
class-stratified `val_fraction` of the videos is held out, or with a `KFold` (config `data.split`) one fold of a
seeded, class-stratified k-fold split by video (`kfold_split`), for data sets without an official split (Hockey
Fights, Movies). Each video becomes one clip spanning the whole video (these datasets are cut into short clips
already); its id is its path under the root, percent-encoded (`video_id_of`). Sub-folders of a class folder
name the videos' kind (`nonfights/crowd/*.mp4`: crowd; `video_kind`), which evaluation reports false alarms by.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
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


@dataclass(frozen=True)
class KFold:
    """Fold `fold` (from 0) of `folds`: its videos are the validation subset, the other folds' the training one."""

    folds: int
    fold: int

    def __post_init__(self):
        if self.folds < 2 or not 0 <= self.fold < self.folds:
            raise ValueError(f"k-fold needs folds >= 2 and 0 <= fold < folds, got folds {self.folds}, fold {self.fold}")


def kfold_split(by_label: dict[str, list], split: KFold, seed: int) -> dict[str, dict[str, list]]:
    """{"training": {label: videos}, "validation": {label: videos}} of one fold, each list in sorted order. Pure.

    Each class, sorted then shuffled by `seed`, is dealt round-robin over the folds, the deal of a class going on
    where the previous class's stopped: every fold gets its share of each class (within one video) and fold sizes
    differ by at most one. The deal depends on the videos and the seed only, never on `split.fold`, so the folds of
    one seed partition the videos. ValueError when a class has fewer videos than folds.
    """
    rng = random.Random(seed)
    out: dict[str, dict[str, list]] = {"training": {}, "validation": {}}
    dealt = 0
    for label in sorted(by_label):
        videos = sorted(by_label[label])
        if len(videos) < split.folds:
            raise ValueError(f"{split.folds} folds need at least {split.folds} videos of each class; "
                             f"{label} has {len(videos)}")
        order = videos.copy()
        rng.shuffle(order)
        fold_of = {video: (dealt + i) % split.folds for i, video in enumerate(order)}
        dealt += len(videos)
        out["validation"][label] = [v for v in videos if fold_of[v] == split.fold]
        out["training"][label] = [v for v in videos if fold_of[v] != split.fold]
    return out


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


def folder_manifest(root: str | Path, val_fraction: float, seed: int, split: KFold | None = None) -> list[dict]:
    """Manifest rows ({"clip_id", "video_id", "path", "start_s", "end_s", "label", "label_id", "subset", "kind"}).

    `split` (k-fold) replaces `val_fraction`; a layout with its own split folders takes neither."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: video folder does not exist")
    splits = {SPLIT_FOLDERS[p.name.lower()]: p for p in root.iterdir() if p.is_dir() and p.name.lower() in SPLIT_FOLDERS}
    by_subset: dict[str, dict[str, list[Path]]] = {}
    if splits and split is not None:
        raise InputError(f"{root}: has its own split folders ({', '.join(sorted(p.name for p in splits.values()))}), "
                         f"so data.split (k-fold) does not apply: set data.split: null")
    if splits:
        by_subset = {subset: _class_videos(folder) for subset, folder in splits.items()}
    elif split is not None:
        try:
            by_subset = kfold_split(_class_videos(root), split, seed)
        except ValueError as e:
            raise InputError(f"{root}: data.split: {e}") from None
    else:
        by_subset = _held_out(_class_videos(root), val_fraction, seed)
    rows = _manifest_rows(by_subset, root)
    if not any(r["label"] == "fight" for r in rows) or not any(r["label"] == "nonfight" for r in rows):
        names = ", ".join(sorted(CLASS_FOLDERS))
        raise InputError(f"{root}: need videos of both classes in folders named like: {names}")
    return rows


def extra_manifest(root: str | Path) -> list[dict]:
    """Manifest rows of a folder-per-class set that joins the main data's training clips (`data.extra_folders`,
    e.g. the clips of reviewed alerts that `fightwatch review --export` writes): all of them train, as flagged
    hard negatives are too few to hold some out (the main set's validation measures the model); one class or none
    is fine; ids are paths under the root's parent (`feedback/nonfights/x.mp4`), apart from the main set's."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: extra video folder does not exist")
    return [{**row, "extra": True}  # trained on data.extra_repeat times an epoch (cluster/commands/train.py)
            for row in _manifest_rows({"training": _class_videos(root)}, root.parent)]


def _held_out(by_label: dict[str, list[Path]], val_fraction: float, seed: int) -> dict[str, dict[str, list[Path]]]:
    rng = random.Random(seed)
    by_subset: dict[str, dict[str, list[Path]]] = {"training": {}, "validation": {}}
    for label, videos in by_label.items():
        held_out = set(rng.sample(videos, round(len(videos) * val_fraction)))
        by_subset["validation"][label] = [v for v in videos if v in held_out]
        by_subset["training"][label] = [v for v in videos if v not in held_out]
    return by_subset


def _manifest_rows(by_subset: dict[str, dict[str, list[Path]]], id_root: Path) -> list[dict]:
    rows = []
    for subset, classes in by_subset.items():
        for label, videos in classes.items():
            for path in videos:
                video_id = video_id_of(path, id_root)
                try:
                    info = probe(path)
                except InputError as e:  # one unreadable file must not stop the import
                    log.warning("skipping %s", e)
                    continue
                rows.append({"clip_id": video_id, "video_id": video_id, "path": str(path), "start_s": 0.0,
                             "end_s": info.frames / float(info.fps), "label": label,
                             "label_id": int(label == "fight"), "subset": subset,
                             "kind": video_kind(path.relative_to(id_root), label)})
    return rows


def video_kind(relative: Path, label: str) -> str:
    """What sort of fight or non-fight a video shows: the folder below its class folder (`nonfights/crowd/a.mp4`
    -> crowd, `val/NonFight/sport/b.avi` -> sport), else its label. Evaluation reports false alarms per kind."""
    parts = relative.parts
    for i, part in enumerate(parts[:-1]):
        if part.lower() in CLASS_FOLDERS:
            return parts[i + 1] if i + 2 < len(parts) else label
    return label
