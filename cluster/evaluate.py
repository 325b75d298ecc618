"""`fightwatch evaluate`: a model measured on labelled videos, video-level first, as published results are.

Videos come from a folder per class (data/folders.py: Hockey Fights, RWF-2000, the demo's `videos/`) or a CSV
of `path,label` lines (label fight/nonfight or 1/0; paths relative to the CSV's folder). Each video is scored on
several views (trainer/eval_views.py); the report (JSON) has video-level accuracy (the headline), mean class
accuracy, precision/recall/F1 of fight, ROC-AUC, PR-AP, the confusion matrix and a threshold sweep, the same
view-level (each view on its own), and throughput. `--dump` writes one CSV row per video with its views'
probabilities, from which every video-level figure can be recomputed. `untrimmed_job` measures what an operator
sees instead: fights caught, alert latency and false alerts per hour on long videos with ground-truth intervals.

`log_evaluation` records either as an MLflow run (tag fightwatch.kind=evaluation): its settings as params, the
report's figures as metrics (`evaluation_metrics`), the report and the dump as artifacts; a child of the training
run its checkpoint names, with that run's seed and k-fold params, so cluster/summarise.py can pool the folds.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import time
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from tqdm import tqdm

from cluster.config import Config
from data.errors import InputError
from data.files import atomic_write, make_run_dir
from data.folders import KFold, folder_manifest
from trainer.accel import AccelPlan
from trainer.checkpoint import read_checkpoint
from trainer.eval_views import EvalConfig, video_fight_prob, view_logits
from trainer.metrics import (average_precision, classification_metrics, confusion, mean_class_accuracy, threshold_sweep,
                             timeline_report)
from trainer.model import ModelConfig, ResNet3D
from trainer.serve.alerting.policy import AlertPolicy, detect_alerts
from trainer.serve.runtime.scoring import ScoreConfig, score_video, windows
from trainer.tracking import ensure_experiment, ensure_local_store, git_commit, mlflow_params, tracking_uri

log = logging.getLogger(__name__)

LABELS = {"fight": 1, "1": 1, "nonfight": 0, "non-fight": 0, "0": 0}
SWEEP = tuple(round(t, 2) for t in np.arange(0.1, 0.91, 0.1))
KIND_TAG = "fightwatch.kind"  # "evaluation" on the runs log_evaluation makes
TRAINING_PARAMS = ("seed", "data.split.folds", "data.split.fold")  # copied from the training run: what groups folds


def folder_videos(root: Path, subset: str | None, val_fraction: float = 0.0, seed: int = 0,
                  split: KFold | None = None) -> list[tuple[str, Path, int]]:
    """(name, path, label) of every video in a folder-per-class layout, or of one subset: RWF-2000's own, or the
    side of the split that `fightwatch prepare` makes of the same folder from `val_fraction` or `split`, and `seed`."""
    rows = [r for r in folder_manifest(root, val_fraction, seed, split if subset else None)
            if subset is None or r["subset"] == subset]
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


def evaluation_metrics(result: dict) -> dict[str, float]:
    """A report's scalar figures, as MLflow metrics. Pure. Labelled videos: `video_<figure>` (the headline) and
    `view_<figure>` (accuracy, mean_class_accuracy, precision, recall, f1, roc_auc, pr_ap, count), the throughput
    and the count of unreadable videos; untrimmed: the counts, false alerts per hour, latency median and max."""
    if "video" in result:
        out = {f"{level}_{name}": value for level in ("video", "view") for name, value in result[level].items()
               if isinstance(value, (int, float))}
        speed = result["throughput"]
        out.update({name: speed[name] for name in ("videos_per_s", "views_per_s", "frames_decoded_per_s", "seconds")})
        return {**out, "unreadable_videos": len(result["errors"])}
    out = {name: result[name] for name in ("videos", "hours", "fights", "caught", "false_alerts",
                                            "false_alerts_per_hour")}
    return {**out, **{f"latency_{name}_s": value for name, value in (result["latency_s"] or {}).items()}}


def training_run(model_path: Path):
    """The MLflow run (in the current store) that trained the checkpoint, or None: a checkpoint from elsewhere, or
    a run in another store or deleted."""
    run_id = read_checkpoint(model_path).get("mlflow_run_id")
    if run_id is None:
        return None
    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        run = None
    if run is None or run.info.lifecycle_stage != "active":
        log.warning("%s: its training run %s is not in %s; the evaluation run is not linked to it", model_path,
                    run_id, mlflow.get_tracking_uri())
        return None
    return run


def log_evaluation(config: Config, model_path: Path, params: dict, metrics: dict[str, float],
                   artifacts: list[Path]) -> tuple[str, str | None]:
    """Log an evaluation as an MLflow run in the config's tracking store (MLFLOW_TRACKING_URI wins); returns its id
    and its parent's. When the store has the checkpoint's training run, the evaluation is its child (the UI nests
    it), in its experiment, with its TRAINING_PARAMS; otherwise a run of the config's experiment."""
    run_dir = make_run_dir(config.run_dir)
    uri = tracking_uri(config.tracking, run_dir)
    ensure_local_store(uri)
    mlflow.set_tracking_uri(uri)
    training = training_run(model_path)
    if training is None:
        experiment_id, parent_id, copied = ensure_experiment(config.tracking, run_dir), None, {}
    else:
        experiment_id, parent_id = training.info.experiment_id, training.info.run_id
        copied = {k: v for k, v in training.data.params.items() if k in TRAINING_PARAMS}
    name = "evaluate" + (f" fold {copied['data.split.fold']}" if "data.split.fold" in copied else "")
    with mlflow.start_run(experiment_id=experiment_id, parent_run_id=parent_id, run_name=name,
                          tags={KIND_TAG: "evaluation", "git_commit": git_commit()}) as run:
        mlflow.log_params(mlflow_params({**params, **copied}))
        mlflow.log_metrics(metrics)
        for path in artifacts:
            mlflow.log_artifact(str(path))
    return run.info.run_id, parent_id
