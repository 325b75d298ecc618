"""Names of a model's classes, for the `label` of each scored segment.

fightwatch's own models have two: no fight, fight. A 3D-ResNets-PyTorch release is labelled with its data
set's names: Kinetics-400's ship with fightwatch (`kinetics400.txt`, in the order of the models' outputs: the
sorted class names, as torchvision's `_KINETICS400_CATEGORIES`, identical to video-classification-3d-cnn-pytorch's
`class_names_list`); other label sets (Kinetics-700, Moments, UCF-101, ...) come from a file, one name per line.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from data.errors import InputError

FIGHT_CLASSES = ("no fight", "fight")


def kinetics400() -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("kinetics400.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


def read_class_names(path: Path) -> tuple[str, ...]:
    """One name per line (blank lines at the end ignored); InputError naming the file and a bad line."""
    if not path.is_file():
        raise InputError(f"{path}: class names file not found")
    lines = path.read_text(encoding="utf-8-sig").rstrip("\n").split("\n")
    for number, name in enumerate(lines, 1):
        if not name.strip():
            raise InputError(f"{path}:{number}: empty class name")
    return tuple(name.rstrip("\r") for name in lines)


def class_names(model: Path, n_classes: int, release: bool, names_file: Path | None) -> tuple[str, ...]:
    """The labels of `model`, with `n_classes` outputs: `names_file`'s, else fightwatch's two (a fightwatch
    checkpoint), else Kinetics-400's (a 400-class release); InputError when none fits."""
    if names_file is not None:
        names = read_class_names(names_file)
        if len(names) != n_classes:
            raise InputError(f"{names_file}: {len(names)} class names for a model with {n_classes} classes")
        return names
    if not release:
        if n_classes != len(FIGHT_CLASSES):
            raise InputError(f"{model}: checkpoint has {n_classes} classes, fightwatch scores {len(FIGHT_CLASSES)} "
                             f"({', '.join(FIGHT_CLASSES)}): name its classes with --class-names FILE")
        return FIGHT_CLASSES
    if n_classes == 400:
        return kinetics400()
    raise InputError(f"{model}: the model has {n_classes} classes: name them with --class-names FILE, one per line "
                     "in the order of its outputs (fightwatch ships Kinetics-400's only)")
