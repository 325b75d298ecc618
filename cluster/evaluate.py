"""`fightwatch evaluate`: a model measured on labelled videos, video-level first, as published results are.

Videos come from a folder per class (data/folders.py: Hockey Fights, RWF-2000, the demo's `videos/`) or a CSV
of `path,label` lines (label fight/nonfight or 1/0; paths relative to the CSV's folder). Each video is scored on
several views (trainer/serve/evaluate.py); the report (JSON) has video-level accuracy (the headline), mean class
accuracy, precision/recall/F1 of fight, ROC-AUC, PR-AP, the confusion matrix and a threshold sweep, the same
view-level (each view on its own), and throughput. `--dump` writes one CSV row per video with its views'
probabilities, from which every video-level figure can be recomputed. `untrimmed_job` measures what an operator
sees instead: fights caught, alert latency and false alerts per hour on long videos with ground-truth intervals.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.errors import InputError
from data.folders import folder_manifest
from data.store import atomic_write
from trainer.accel import AccelPlan
from trainer.metrics import (average_precision, classification_metrics, confusion, mean_class_accuracy,
                             threshold_sweep, timeline_report)
from trainer.model import ModelConfig, ResNet3D
from trainer.serve.alerts import AlertPolicy, detect_alerts
from trainer.serve.evaluate import EvalConfig, video_fight_prob, view_logits
from trainer.serve.scoring import ScoreConfig, score_video, windows

log = logging.getLogger(__name__)

LABELS = {"fight": 1, "1": 1, "nonfight": 0, "non-fight": 0, "0": 0}
SWEEP = tuple(round(t, 2) for t in np.arange(0.1, 0.91, 0.1))


def folder_videos(root: Path, subset: str | None) -> list[tuple[str, Path, int]]:
    """(name, path, label) of every video in a folder-per-class layout (one subset of RWF-2000's, if asked)."""
    rows = [r for r in folder_manifest(root, 0.0, seed=0) if subset is None or r["subset"] == subset]
    if not rows:
        raise InputError(f"{root}: no videos in subset {subset!r}")
    return [(Path(r["path"]).relative_to(root).as_posix(), Path(r["path"]), r["label_id"]) for r in rows]


def listed_videos(list_file: Path) -> list[tuple[str, Path, int]]:
    """(name, path, label) from `path,label` lines; InputError naming the file and line of a bad one."""
    if not list_file.is_file():
        raise InputError(f"{list_file}: video list not found")
    out = []
    for number, row in enumerate(csv.reader(io.StringIO(list_file.read_text())), 1):
        if not row or not "".join(row).strip() or row[0].startswith("#"):
            continue
        if len(row) != 2 or row[1].strip().lower() not in LABELS:
            raise InputError(f"{list_file}:{number}: expected 'path,label' with label fight or nonfight (1 or 0), "
                             f"got {','.join(row)!r}")
        name, path = row[0].strip(), list_file.parent / row[0].strip()
        if not path.is_file():
            raise InputError(f"{list_file}:{number}: {path}: no such video file")
        out.append((name, path, LABELS[row[1].strip().lower()]))
    if not out:
        raise InputError(f"{list_file}: lists no videos")
    return out


def report(labels, probs, threshold: float) -> dict:
    """The figures of one level (videos, or views) from labels and fight probabilities. Pure."""
    labels, probs = np.asarray(labels, dtype=int), np.asarray(probs, dtype=float)
    predictions = (probs >= threshold).astype(int)
    return {"count": int(len(labels)), **classification_metrics(labels, predictions, probs),
            "mean_class_accuracy": mean_class_accuracy(labels, predictions),
            "pr_ap": average_precision(labels, probs),
            "confusion": {"rows_label_cols_prediction": ["nonfight", "fight"],
                          "matrix": confusion(labels, predictions).tolist()},
            "threshold_sweep": threshold_sweep(labels, probs, SWEEP)}


def evaluate_job(model: ResNet3D, model_cfg: ModelConfig, videos: list[tuple[str, Path, int]], cfg: EvalConfig,
                 plan: AccelPlan, threshold: float, out: Path, dump: Path | None = None) -> dict:
    """Score every video's views, write the report to `out` (and the per-video rows to `dump`); returns it."""
    rows, view_labels, view_probs, errors, frames = [], [], [], [], 0
    started = time.perf_counter()
    for name, path, label in tqdm(videos, desc="evaluating", unit="video"):
        try:
            logits, n = view_logits(model, model_cfg, path, cfg, plan)
        except InputError as e:
            log.error("%s", e)
            errors.append({"video": name, "error": str(e)})
            continue
        probs = torch.softmax(torch.from_numpy(logits), 1)[:, 1].tolist()
        rows.append({"video": name, "label": label, "fight_prob": video_fight_prob(logits, cfg.average),
                     "view_probs": probs})
        view_labels += [label] * len(probs)
        view_probs += probs
        frames += n
    seconds = time.perf_counter() - started
    if not rows:
        raise InputError(f"none of the {len(videos)} videos could be read, first: {errors[0]['error']}")
    result = {
        "views": {"clips": cfg.clips, "crops": cfg.crops, "average": cfg.average, "threshold": threshold},
        "video": report([r["label"] for r in rows], [r["fight_prob"] for r in rows], threshold),
        "view": report(view_labels, view_probs, threshold),
        "throughput": {"videos_per_s": len(rows) / seconds, "views_per_s": len(view_probs) / seconds,
                       "frames_decoded_per_s": frames / seconds, "seconds": seconds,
                       "precision": plan.precision, "threads": torch.get_num_threads()},
        "errors": errors,
    }
    atomic_write(out, lambda f: f.write((json.dumps(result, indent=1) + "\n").encode()))
    if dump is not None:
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["video", "label", "fight_prob", "prediction", "view_probs"])
        for r in rows:
            writer.writerow([r["video"], r["label"], f"{r['fight_prob']:.6f}", int(r["fight_prob"] >= threshold),
                             " ".join(f"{p:.6f}" for p in r["view_probs"])])
        atomic_write(dump, lambda f: f.write(text.getvalue().encode()))
    return result


def untrimmed_job(model: ResNet3D, model_cfg: ModelConfig, folder: Path, score_cfg: ScoreConfig,
                  policy: AlertPolicy, plan: AccelPlan, out: Path) -> dict:
    """Untrimmed videos with ground truth (`<name>.mp4` beside `<name>.json` holding "fight_intervals", seconds,
    as data/synthetic.py's timelines): each scored as `score` scores it and replayed through the alert policy;
    the report (to `out`) counts fights caught, alert latency and false alerts per hour of video."""
    videos = sorted(p for p in folder.glob("*.mp4") if p.with_suffix(".json").is_file()) if folder.is_dir() else []
    if not videos:
        raise InputError(f"{folder}: no <name>.mp4 beside a <name>.json with fight_intervals")
    per_video, latencies, seconds = [], [], 0.0
    for path in tqdm(videos, desc="evaluating", unit="video"):
        truth = json.loads(path.with_suffix(".json").read_text())
        entry = score_video(model, model_cfg, path, score_cfg, plan=plan)
        alerts = [dataclasses.asdict(a) for a in detect_alerts(policy, windows(entry), camera=path.name)]
        found = timeline_report(entry["clips"], alerts, truth["fight_intervals"])
        per_video.append({"video": path.name, "fights": len(truth["fight_intervals"]), **found})
        latencies += [s for s in found["latency_s"] if s is not None]
        seconds += entry["frames"] / entry["fps"]
    false_alerts = sum(v["false_alerts"] for v in per_video)
    result = {"videos": len(per_video), "hours": seconds / 3600,
              "fights": sum(v["fights"] for v in per_video), "caught": sum(v["caught"] for v in per_video),
              "latency_s": {"median": float(np.median(latencies)), "max": max(latencies)} if latencies else None,
              "false_alerts": false_alerts, "false_alerts_per_hour": false_alerts / (seconds / 3600),
              "policy": dataclasses.asdict(policy), "stride": score_cfg.stride, "per_video": per_video}
    atomic_write(out, lambda f: f.write((json.dumps(result, indent=1) + "\n").encode()))
    return result
