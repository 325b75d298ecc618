"""The scoring job: videos in, output.json, alerts and (optionally) annotated videos out."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from tqdm import tqdm

from data.errors import InputError
from data.store import atomic_write
from trainer.alerts import AlertPolicy, detect_alerts
from trainer.annotate import annotate_video, plot_probabilities
from trainer.infer import ScoreConfig, frame_probabilities, score_video, windows
from trainer.model import ModelConfig, ResNet3D

log = logging.getLogger(__name__)


def read_video_list(list_file: Path, video_root: Path) -> list[Path]:
    """Video paths named one per line in `list_file`, relative to `video_root`."""
    if not list_file.is_file():
        raise InputError(f"{list_file}: video list not found")
    if not video_root.is_dir():
        raise InputError(f"{video_root}: video root is not a directory")
    names = [line.strip() for line in list_file.read_text().splitlines()]
    missing = [f"{list_file}:{i}: {video_root / n}" for i, n in enumerate(names, 1) if n and not (video_root / n).is_file()]
    if missing:
        raise InputError(f"{len(missing)} listed video(s) not found, first: {missing[0]}")
    return [video_root / n for n in names if n]


def score_job(model: ResNet3D, model_cfg: ModelConfig, videos: list[Path], output: Path, score_cfg: ScoreConfig,
              policy: AlertPolicy, annotated_dir: Path | None = None) -> tuple[list[dict], list[dict]]:
    """Score every video; one that cannot be read gets an `error` entry and the rest go on.

    Writes `output` (JSON list) atomically and returns (entries, alerts).
    """
    entries, alerts = [], []
    for path in tqdm(videos, desc="scoring", unit="video", disable=len(videos) < 2):
        try:
            entry = score_video(model, model_cfg, path, score_cfg)
        except InputError as e:
            log.error("%s", e)
            entries.append({"video": path.name, "error": str(e), "clips": []})
            continue
        entries.append(entry)
        found = detect_alerts(policy, windows(entry), camera=path.name)
        alerts += [{"event": "alert", **dataclasses.asdict(a)} for a in found]
        if annotated_dir is not None:
            probs = frame_probabilities(entry, entry["frames"])
            annotate_video(path, annotated_dir / f"{path.stem}_annotated.mp4", probs, policy.threshold)
            plot_probabilities([c["start_s"] for c in entry["clips"]],
                               [c["fight_prob"] for c in entry["clips"]], policy.threshold,
                               [(a.start_s, a.end_s) for a in found], annotated_dir / f"{path.stem}_probs.png",
                               title=path.name)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, lambda f: f.write(json.dumps(entries, indent=1).encode()))
    return entries, alerts


def write_alerts(path: Path, alerts: list[dict]) -> None:
    text = "".join(json.dumps(a) + "\n" for a in alerts)
    atomic_write(path, lambda f: f.write(text.encode()))
