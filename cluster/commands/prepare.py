"""`fightwatch prepare`: a clip manifest from AVA, a folder per class or generated videos, then clips in the store.

AVA: select balanced fight/non-fight samples, find the videos locally (`data.video_root`) or download them with
yt-dlp (`data.cache_dir`), extract the clips with Ray Data. Writes under run_dir: `clips/` (the store),
`manifest.jsonl` (the clips that landed), `annotation.json` (3D-ResNets-PyTorch's format),
`extract_failures.jsonl` (clip, reason, error), `extract_warnings.jsonl` (clip, what damage lost in the clips read
through it: data/decode.py), `unavailable_videos.json`, AVA's `selection.json` (the classes
drawn: available, asked, taken) and `split.json` (the data.split the
manifest was made for: `check_split` keeps one run dir to one split, so the folds of a k-fold never share a
manifest, checkpoints, trunk cache or model).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from cluster.commands.args import add_config_args, overrides
from cluster.config import AvaConfig, Config, load_config
from cluster.logs import log_to_run_dir
from data import ava
from data.download import video_paths
from data.errors import InputError
from data.files import atomic_write, make_run_dir
from data.folders import KFold, extra_manifest, folder_manifest
from data.pipeline import ExtractionSummary, extract_clips
from data.store import ClipStore, write_manifest
from data.synthetic import generate_dataset

log = logging.getLogger(__name__)

SPLIT_FILE = "split.json"


def _split_text(split: dict | None) -> str:
    return "null" if split is None else f"{{folds: {split['folds']}, fold: {split['fold']}}}"


def check_split(run_dir: Path, split: KFold | None) -> None:
    """InputError when run_dir holds a manifest made for another data.split: a fold trained in another fold's run
    dir would resume its checkpoints and overwrite its model. A manifest from before split.json was made with null."""
    if not (run_dir / "manifest.jsonl").is_file():
        return
    path = run_dir / SPLIT_FILE
    made = json.loads(path.read_text())["split"] if path.is_file() else None
    wanted = dataclasses.asdict(split) if split else None
    if made != wanted:
        raise InputError(f"{run_dir}: prepared for data.split {_split_text(made)}, but the config has "
                         f"{_split_text(wanted)}; give each fold its own run_dir (e.g. run_dir=runs/fold1), or "
                         f"delete {run_dir / 'manifest.jsonl'} to prepare this one again")


@dataclass
class PrepareResult:
    rows: list[dict]  # manifest rows of the clips in the store
    store_root: Path
    extraction: ExtractionSummary
    unavailable: list[str] = field(default_factory=list)  # video ids without a video

    def line(self) -> str:
        return f"{self.extraction.line()}; videos unavailable: {len(self.unavailable)}"


def ava_rows(cfg: AvaConfig, val_fraction: float, clip_seconds: float, seed: int, run_dir: Path) -> list[dict]:
    """The manifest rows of the AVA samples drawn; the mix of classes drawn goes to the log and
    <run_dir>/selection.json."""
    label_map = ava.read_label_map(cfg.label_map)
    positive, *negatives = ava.resolve_classes([cfg.positive, *cfg.negatives], label_map, cfg.label_map)
    excluded = set().union(*(ava.read_excluded(path) for path in cfg.excluded))
    files = {"training": cfg.train_csv, **({"validation": cfg.val_csv} if cfg.val_csv else {})}
    annotations = {}
    for subset, path in files.items():
        annotations[subset], stats = ava.read_annotations(path)
        log.info("%s: %d rows, quirks %s", path, stats.rows, stats.quirks or "none")
    rows = [row for subset_rows in annotations.values() for row in subset_rows]
    samples, selection = ava.select_samples(rows, positive, negatives, cfg.per_class, seed, frozenset(excluded),
                                            list(cfg.negatives.values()))
    mix = selection.mix(label_map)
    log.info("drawn (taken/asked of available): %s; left out as excluded %d, negatives beside a fight %d",
             ", ".join(f"{name} {n['taken']}/{n['asked']} of {n['available']}" for name, n in mix.items()),
             selection.excluded, selection.fight_overlap)
    if selection.short:
        log.warning("classes short of samples (class id: missing): %s", selection.short)
    atomic_write(run_dir / "selection.json", lambda f: f.write(json.dumps(
        {"positive": label_map[positive], "shares": dict(cfg.negatives), "classes": mix, "excluded": selection.excluded,
         "negatives_beside_a_fight": selection.fight_overlap}, indent=1).encode()))
    samples = (ava.split_official(samples, annotations) if cfg.val_csv
               else ava.split_by_video(samples, val_fraction, seed))
    return ava.manifest_rows(samples, label_map, clip_seconds)


def source_rows(cfg: Config, run_dir: Path) -> tuple[list[dict], list[str]]:
    """Manifest rows with each clip's video `path` (the source's, then each of data.extra_folders'), and the ids
    of videos that could not be had."""
    rows, unavailable = _main_rows(cfg, run_dir)
    for root in cfg.data.extra_folders:
        extra = extra_manifest(root)
        log.info("%s: %d extra clip(s) (%s)", root, len(extra),
                 ", ".join(f"{sum(r['label'] == label for r in extra)} {label}" for label in ("fight", "nonfight")))
        rows += extra
    return rows, unavailable


def _main_rows(cfg: Config, run_dir: Path) -> tuple[list[dict], list[str]]:
    data = cfg.data
    if data.source == "synthetic":
        syn = data.synthetic
        generate_dataset(run_dir / "videos", syn.videos_per_class, syn.seconds, cfg.seed,
                         width=syn.width, height=syn.height, fps=syn.fps, crowd_share=syn.crowd_share,
                         wide_share=syn.wide_share)
        return folder_manifest(run_dir / "videos", data.val_fraction, cfg.seed, data.split), []
    if data.source == "folders":
        return folder_manifest(data.folders_root, data.val_fraction, cfg.seed, data.split), []
    rows = ava_rows(data.ava, data.val_fraction, data.clip_seconds, cfg.seed, run_dir)
    ids = sorted({row["video_id"] for row in rows})
    if data.video_root is not None:
        paths, missing = video_paths(ids, video_root=data.video_root)
    else:
        paths, missing = video_paths(ids, cache_dir=data.cache_dir, url_template=data.url_template,
                                     max_workers=data.download_workers)
    return [{**row, "path": str(paths[row["video_id"]])} for row in rows if row["video_id"] in paths], missing


def run_prepare(cfg: Config) -> PrepareResult:
    run_dir = make_run_dir(cfg.run_dir)
    check_split(run_dir, cfg.data.split)
    rows, unavailable = source_rows(cfg, run_dir)
    store = ClipStore(run_dir / "clips")
    extraction = extract_clips(rows, store, cfg.clips, cfg.data.ray_address, cfg.data.view)
    kept = [row for row in rows if store.has(row["clip_id"])]
    split = dataclasses.asdict(cfg.data.split) if cfg.data.split else None
    # first, so a manifest on disk never stands beside another split's record
    atomic_write(run_dir / SPLIT_FILE, lambda f: f.write(json.dumps({"split": split}).encode()))
    write_manifest(run_dir / "manifest.jsonl", kept)
    ava.write_resnets_annotation(run_dir / "annotation.json", kept)
    write_manifest(run_dir / "extract_failures.jsonl", extraction.failures)
    write_manifest(run_dir / "extract_warnings.jsonl", extraction.warnings)
    atomic_write(run_dir / "unavailable_videos.json", lambda f: f.write(json.dumps(unavailable).encode()))
    result = PrepareResult(kept, store.root, extraction, unavailable)
    log.info("%s", result.line())
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Build the clip manifest (AVA annotations, a folder per class, or generated videos, per "
                          "data.source), find or download the videos, and extract the clips with Ray Data into "
                          "<run_dir>/clips. Re-running skips videos already extracted.")
    add_config_args(parser)
    parser.add_argument("--ray-address", help="join this Ray cluster (same as data.ray_address; default: "
                                              "RAY_ADDRESS, else an embedded local Ray)")


def run(args: argparse.Namespace) -> None:
    ray_override = [f"data.ray_address={args.ray_address}"] if args.ray_address else []
    cfg = load_config(args.config, overrides(args) + ray_override)
    log_to_run_dir(cfg.run_dir)
    result = run_prepare(cfg)
    print(f"{result.line()}\nmanifest: {cfg.run_dir}/manifest.jsonl ({len(result.rows)} clips), "
          f"store: {result.store_root}")
