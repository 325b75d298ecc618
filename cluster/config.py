"""Experiment configs: YAML files validated against typed dataclasses.

Every key is required and every unknown key is an error, so a typo never
silently falls back to a default. Errors name the file, the line and the
dotted key. Overrides (`train.epochs=3`) are parsed as YAML scalars.

Fields declared with `field(metadata={"path": True})` hold file system paths (run_dir, the data and
model inputs, the topology file): `absolute_path_overrides` finds them by that mark, so a job that runs
elsewhere (Ray workers, another node) gets them made absolute without a hand-kept list of keys.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from cluster.distributed import DistConfig
from data.clips import ClipConfig
from data.errors import InputError
from data.folders import KFold
from trainer.accel import AccelConfig
from trainer.model import ModelConfig
from trainer.quantize import QuantizeConfig
from trainer.serve.alerting.policy import AlertPolicy
from trainer.serve.alerting.sinks.config import SinksConfig
from trainer.serve.runtime.scoring import ScoreConfig
from trainer.serve.runtime.watch_config import WatchConfig
from trainer.tracking import TrackingConfig
from trainer.train import TrainConfig

log = logging.getLogger(__name__)
CODE_ROOT = Path(__file__).resolve().parents[1]  # the checkout holding configs/


@dataclass(frozen=True)
class SyntheticConfig:
    """Generated videos: a set per class, and two held-out videos to score: a timeline (calm, fight, calm) at the
    training clips' size, and a wide view with a small fight among bystanders (data/synthetic.py's render_wide)."""

    videos_per_class: int
    seconds: float
    width: int
    height: int
    fps: int
    timeline_calm_before: float
    timeline_fight: float
    timeline_calm_after: float
    crowd_share: float  # of the calm videos, this share are crowds (fast, harmless: motion is not violence)
    wide_share: float  # and this share wide views of calm people (small, as regions' whole frame shows them)
    wide_width: int  # the held-out wide view's size: CCTV's, where people are small
    wide_height: int
    wide_fight_width: float  # its fight's width as a fraction of the frame's

    def __post_init__(self):
        if not (0 <= self.crowd_share and 0 <= self.wide_share and self.crowd_share + self.wide_share <= 1):
            raise ValueError("crowd_share and wide_share must be >= 0 and together at most 1")
        if not 0 < self.wide_fight_width <= 1:
            raise ValueError("wide_fight_width must be a fraction of the frame's width, > 0 and <= 1")
        if self.videos_per_class < 2:
            raise ValueError("videos_per_class must be at least 2 (one to train on, one to validate)")


@dataclass(frozen=True)
class AvaConfig:
    train_csv: str = field(metadata={"path": True})
    val_csv: str | None = field(metadata={"path": True})  # AVA's own validation file; null: split train_csv by video with data.val_fraction
    label_map: str = field(metadata={"path": True})
    excluded: tuple[str, ...] = field(metadata={"path": True})
    positive: str
    negatives: dict[str, float]  # class name -> its share of the negatives (a list of names: equal shares)
    per_class: int  # fights taken; negatives total as many, split over the negative classes by their shares

    def __post_init__(self):
        if self.per_class < 1 or not self.negatives:
            raise ValueError("per_class must be >= 1 and negatives non-empty")
        bad = [name for name, share in self.negatives.items() if not share > 0]
        if bad:
            raise ValueError(f"negative shares must be > 0, got {bad[0]!r}: {self.negatives[bad[0]]!r}")


@dataclass(frozen=True)
class DataConfig:
    source: Literal["synthetic", "ava", "folders"]
    synthetic: SyntheticConfig | None
    ava: AvaConfig | None
    folders_root: str | None = field(metadata={"path": True})  # for source: folders (fights/ and nonfights/, or RWF-2000's train/ and val/)
    extra_folders: tuple[str, ...] = field(metadata={"path": True})  # folder-per-class sets added to any source
    extra_repeat: int  # each extra training clip counts this many times an epoch (a few hard negatives weigh)
    val_fraction: float
    split: KFold | None  # {folds: K, fold: i}: k-fold by video in place of val_fraction (sources folders, synthetic)
    clip_seconds: float  # AVA clips span this many seconds around the annotated timestamp
    view: Literal["frame", "actor"]  # what a clip shows: the whole frame, or a square around its boxes (data/views.py)
    video_root: str | None = field(metadata={"path": True})  # local copies named <video_id>.<ext>; null: download with yt-dlp into cache_dir
    cache_dir: str = field(metadata={"path": True})
    url_template: str
    download_workers: int
    ray_address: str | None  # null: RAY_ADDRESS, else an embedded local Ray

    def __post_init__(self):
        needed = {"synthetic": self.synthetic, "ava": self.ava, "folders": self.folders_root}[self.source]
        if needed is None:
            raise ValueError(f"source is {self.source!r} but '{self.source if self.source != 'folders' else 'folders_root'}' is null")
        if self.split is not None and self.source == "ava":
            raise ValueError("data.split (k-fold) applies to sources folders and synthetic; source ava splits by "
                             "its files (ava.val_csv) or val_fraction: set data.split: null")
        if (not 0 <= self.val_fraction < 1 or self.clip_seconds <= 0 or self.download_workers < 1
                or self.extra_repeat < 1):
            raise ValueError("need 0 <= val_fraction < 1, clip_seconds > 0, download_workers >= 1, extra_repeat >= 1")


@dataclass(frozen=True)
class Config:
    run_dir: str = field(metadata={"path": True})
    seed: int
    data: DataConfig
    clips: ClipConfig
    model: ModelConfig
    accel: AccelConfig
    quantize: QuantizeConfig  # fightwatch quantize: int8 for --runtime int8
    train: TrainConfig
    score: ScoreConfig
    alerts: AlertPolicy  # for score and watch
    watch: WatchConfig
    sinks: SinksConfig  # watch's
    dist: DistConfig
    tracking: TrackingConfig


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read, override and validate a config file; InputError names file:line and key.

    A relative path missing from the current directory is looked up in fightwatch's own checkout, so the
    default `configs/ava_fight.yaml` serves `score` and `watch` run from any folder."""
    path = Path(path)
    if not path.is_file() and not path.is_absolute() and (CODE_ROOT / path).is_file():
        log.info("config: %s (not in %s)", CODE_ROOT / path, Path.cwd())
        path = CODE_ROOT / path
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
        if not isinstance(root, yaml.MappingNode):
            raise InputError(f"{path}:1: a config is a mapping of keys to values")
        values, lines = _mapping(root, path)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text: {e}") from None
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML: {e}".replace("\n", " ")) from None
    except RecursionError:  # PyYAML composes and constructs recursively
        raise InputError(f"{path}: not a config: nested too deeply") from None
    for override in overrides:
        _apply_override(values, override)
    return _build(Config, values, "", lambda key: f"{path}:{lines.get(key, lines.get('', 1))}")


def _mapping(node: yaml.MappingNode, path: Path, prefix: str = "") -> tuple[dict, dict[str, int]]:
    """The mapping as plain values, and the 1-based line of every dotted key."""
    values, lines = {}, {"": node.start_mark.line + 1} if not prefix else {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise InputError(f"{path}:{key_node.start_mark.line + 1}: a key must be a name, not a list or a mapping")
        key = f"{prefix}{key_node.value}"
        lines[key] = key_node.start_mark.line + 1
        if isinstance(value_node, yaml.MappingNode):
            values[key_node.value], sub_lines = _mapping(value_node, path, key + ".")
            lines.update(sub_lines)
        else:
            values[key_node.value] = _construct(value_node)
    return values, lines


def _construct(node: yaml.Node) -> Any:
    """The plain value of a composed node, as yaml.safe_load would give it (a YAMLError for unsafe tags)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def is_override(argument: str) -> bool:
    """Whether a bare KEY=VALUE argument is a config override: its key is a top-level key (run_dir, seed) or
    starts with a section's name and a dot (watch.stride=8). `watch` tells its overrides from its NAME=SOURCE
    cameras this way, so a camera cannot be named after a config key."""
    key, sep, _ = argument.partition("=")
    section, dot, _ = key.partition(".")
    hints = typing.get_type_hints(Config)
    return bool(sep) and section in hints and (bool(dot) or not dataclasses.is_dataclass(hints[section]))


def _apply_override(values: dict, override: str) -> None:
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise InputError(f"override {override!r}: expected key=value, e.g. train.epochs=3")
    *parents, leaf = key.split(".")
    target = values
    for part in parents:
        target = target.get(part)
        if not isinstance(target, dict):
            raise InputError(f"override {override!r}: unknown key {key!r}")
    if leaf not in target:
        raise InputError(f"override {override!r}: unknown key {key!r}")
    try:
        target[leaf] = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise InputError(f"override {override!r}: not a valid YAML value: {e}".replace("\n", " ")) from None
    except RecursionError:
        raise InputError(f"override {override!r}: value nested too deeply") from None


def _build(cls, values: Any, prefix: str, where) -> Any:
    if not isinstance(values, dict):
        raise InputError(f"{where(prefix.rstrip('.'))}: '{prefix.rstrip('.')}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            raise InputError(
                f"{where(prefix + key)}: unknown key '{prefix}{key}' (known: {', '.join(sorted(fields))})"
            )
    kwargs = {}
    for name in fields:
        key = prefix + name
        if name not in values:
            raise InputError(f"{where(prefix.rstrip('.'))}: missing key '{key}'")
        kwargs[name] = _convert(hints[name], values[name], key, where)
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise InputError(f"{where(prefix.rstrip('.'))}: '{prefix.rstrip('.') or 'config'}': {e}") from None


def _convert(hint, value: Any, key: str, where) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".", where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        if dataclasses.is_dataclass(hint) and value in (False, "off"):  # `off` (YAML reads false) turns a section off
            return None
        return _convert(hint, value, key, where)
    if origin is typing.Literal:
        if value not in args:
            choices = " | ".join(map(str, args))
            raise InputError(f"{where(key)}: '{key}' is {value!r}; expected one of {choices}")
        return value
    if origin is dict:
        if isinstance(value, list):  # a list of keys: each weighs 1 (negatives: [eat, drive] are equal shares)
            value = dict.fromkeys(value, 1)
        if not isinstance(value, dict):
            raise InputError(f"{where(key)}: '{key}' must be a mapping or a list, got {value!r}")
        return {_convert(args[0], k, key, where): _convert(args[1], v, f"{key}.{k}", where) for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list):
            raise InputError(f"{where(key)}: '{key}' must be a list, got {value!r}")
        return tuple(_convert(args[0], item, key, where) for item in value)
    if hint is Path and isinstance(value, str):
        return Path(value)
    ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise InputError(f"{where(key)}: '{key}' must be {hint.__name__}, got {value!r}")
    return value


def path_values(config: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every path field (metadata {"path": True}) set in the config, recursively."""
    out = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out += path_values(value, f"{prefix}{f.name}.")
        elif f.metadata.get("path") and value is not None:
            out.append((f"{prefix}{f.name}", value))
    return out


def absolute_path_overrides(config: Any, base: Path) -> list[str]:
    """`key=<absolute path>` overrides for the config's relative paths, resolved against `base`. Pure."""
    out = []
    for key, value in path_values(config):
        paths = list(value) if isinstance(value, tuple) else [value]
        if any(not Path(p).is_absolute() for p in paths):
            absolute = [str(base / p) for p in paths]
            out.append(f"{key}={json.dumps(absolute if isinstance(value, tuple) else absolute[0])}")  # JSON is YAML
    return out


def with_flags(section: Any, args: Any, names: dict[str, str]) -> Any:
    """The config section with the command-line flags that were given (not None) in place of its values:
    `names` maps each flag's argparse dest to its field. InputError when the result is not valid."""
    given = {field_name: getattr(args, dest) for dest, field_name in names.items() if getattr(args, dest) is not None}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}  # repeatable flags
    try:
        return dataclasses.replace(section, **given)
    except ValueError as e:
        raise InputError(str(e)) from None


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value, for MLflow params."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out
