"""`fightwatch evaluate`: a model measured on labelled videos, video-level first, as published results are.

Videos come from a folder per class (data/folders.py: Hockey Fights, RWF-2000, the demo's `videos/`) or a CSV
of `path,label[,kind]` lines (label fight/nonfight or 1/0; paths relative to the CSV's folder). Each video is scored
on several views (trainer/eval_views.py); the report (JSON) has video-level accuracy (the headline), mean class
accuracy, precision/recall/F1 of fight, ROC-AUC, PR-AP, the confusion matrix and a threshold sweep, the same
view-level (each view on its own), throughput, and by kind (a class folder's sub-folder, `nonfights/crowd/`, or the
CSV's third column): each non-fight kind's false alarm rate, each fight kind's recall (`by_kind`). `--dump` writes
one CSV row per video with its views' probabilities, from which every video-level figure can be recomputed.
`untrimmed_job` measures what an operator sees instead: fights caught, alert latency and false alerts per hour on
long videos with ground-truth intervals.

`log_evaluation` records either as an MLflow run (tag fightwatch.kind=evaluation): its settings as params, the
report's figures as metrics (`evaluation_metrics`), the report and the dump as artifacts; a child of the training
run its checkpoint names, with that run's seed and k-fold params, so cluster/commands/summarise.py can pool the folds.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import re
import time
from pathlib import Path
from typing import NamedTuple

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from tqdm import tqdm

from cluster.commands.args import add_accel_args, add_config_args, overrides
from cluster.config import Config, load_config
from data.decode import DecodeConfig
from data.errors import InputError
from data.files import atomic_write, make_run_dir
from data.folders import KFold, folder_manifest
from trainer.accel import AccelConfig, AccelPlan, plan_for
from trainer.checkpoint import load_model, read_checkpoint
from trainer.eval_views import EvalConfig, video_fight_prob, view_logits
from trainer.metrics import (average_precision, classification_metrics, confusion, mean_class_accuracy, threshold_sweep,
                             timeline_report)
from trainer.model import ModelConfig, ResNet3D
from trainer.serve.alerting.policy import AlertPolicy, detect_alerts
from trainer.serve.runtime.scoring import ScoreConfig, check_fight_model, prepare_model, score_video, windows
from trainer.tracking import ensure_experiment, ensure_local_store, git_commit, mlflow_params, tracking_uri

log = logging.getLogger(__name__)

LABELS = {"fight": 1, "1": 1, "nonfight": 0, "non-fight": 0, "0": 0}
LABEL_NAMES = ("nonfight", "fight")  # by label: a kind's default name, and by_kind's "label"
SWEEP = tuple(round(t, 2) for t in np.arange(0.1, 0.91, 0.1))
KIND_TAG = "fightwatch.kind"  # "evaluation" on the runs log_evaluation makes
TRAINING_PARAMS = ("seed", "data.split.folds", "data.split.fold")  # copied from the training run: what groups folds


class Video(NamedTuple):
    """A labelled video to evaluate: its name in the report, its file, its label (1: fight) and its kind."""

    name: str
    path: Path
    label: int
    kind: str


def folder_videos(root: Path, subset: str | None, val_fraction: float = 0.0, seed: int = 0,
                  split: KFold | None = None) -> list[Video]:
    """Every video in a folder-per-class layout, or of one subset: RWF-2000's own, or the side of the split that
    `fightwatch prepare` makes of the same folder from `val_fraction` or `split`, and `seed`."""
    rows = [r for r in folder_manifest(root, val_fraction, seed, split if subset else None)
            if subset is None or r["subset"] == subset]
    if not rows:
        raise InputError(f"{root}: no videos in subset {subset!r}")
    return [Video(Path(r["path"]).relative_to(root).as_posix(), Path(r["path"]), r["label_id"], r["kind"])
            for r in rows]


def listed_videos(list_file: Path) -> list[Video]:
    """The videos of `path,label[,kind]` lines (kind: the label's name when absent); InputError naming the file and
    line of a bad one."""
    if not list_file.is_file():
        raise InputError(f"{list_file}: video list not found")
    out = []
    for number, row in enumerate(csv.reader(io.StringIO(list_file.read_text())), 1):
        if not row or not "".join(row).strip() or row[0].startswith("#"):
            continue
        if len(row) not in (2, 3) or row[1].strip().lower() not in LABELS or (len(row) == 3 and not row[2].strip()):
            raise InputError(f"{list_file}:{number}: expected 'path,label[,kind]' with label fight or nonfight (1 or "
                             f"0), got {','.join(row)!r}")
        name, path, label = row[0].strip(), list_file.parent / row[0].strip(), LABELS[row[1].strip().lower()]
        if not path.is_file():
            raise InputError(f"{list_file}:{number}: {path}: no such video file")
        out.append(Video(name, path, label, row[2].strip() if len(row) == 3 else LABEL_NAMES[label]))
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


def by_kind(rows: list[dict], threshold: float) -> dict[str, dict]:
    """Per kind of video ({"kind", "label", "fight_prob"} rows): videos, how many were called fight, and for a
    non-fight kind the false alarm rate, for a fight kind the recall. Pure."""
    out: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: (-r["label"], r["kind"])):
        kind = out.setdefault(row["kind"], {"label": LABEL_NAMES[row["label"]], "videos": 0, "called_fight": 0})
        if kind["label"] != LABEL_NAMES[row["label"]]:
            raise InputError(f"kind {row['kind']!r} holds both fights and non-fights: name their kinds apart")
        kind["videos"] += 1
        kind["called_fight"] += row["fight_prob"] >= threshold
    for kind in out.values():
        kind["recall" if kind["label"] == "fight" else "false_alarm_rate"] = kind["called_fight"] / kind["videos"]
    return out


def add_labelled_video_args(parser: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """--data | --list (the group, returned), --subset and the views (--clips, --crops, --average): which labelled
    videos, seen how; `labelled_videos` and `eval_config` read them."""
    videos = parser.add_mutually_exclusive_group(required=True)
    videos.add_argument("--data", type=Path, metavar="DIR",
                        help="a folder per class: fights/ and nonfights/ (Hockey Fights), or RWF-2000's "
                             "train|val/Fight|NonFight; a class folder's sub-folders are kinds (nonfights/crowd/)")
    videos.add_argument("--list", type=Path, metavar="CSV",
                        help="path,label[,kind] lines (label fight/nonfight or 1/0; kind, e.g. crowd, for the "
                             "false alarms by kind), paths relative to the CSV's folder")
    parser.add_argument("--subset", choices=["training", "validation"],
                        help="with --data: only RWF-2000's train/ (training) or val/ (validation); in a folder "
                             "per class, the side of the config's split (data.val_fraction, or the k-fold "
                             "data.split, with seed) that `fightwatch prepare` made")
    parser.add_argument("--clips", type=int, default=10, help="windows per video, spread evenly (default: 10)")
    parser.add_argument("--crops", type=int, choices=[1, 3], default=1,
                        help="1: the centre square; 3: three squares along the long side (default: 1)")
    parser.add_argument("--average", choices=["prob", "logit"], default="prob",
                        help="average the views' probabilities or their logits (default: prob)")
    parser.add_argument("--batch-size", type=int, default=8, help="views per forward pass (default: 8)")
    return videos


def eval_config(args: argparse.Namespace) -> EvalConfig:
    """The views from add_labelled_video_args's arguments, checked with the rest of them."""
    if args.subset and not args.data:
        raise InputError("--subset goes with --data")
    try:
        return EvalConfig(args.clips, args.crops, args.average, args.batch_size)
    except ValueError as e:
        raise InputError(str(e)) from None


def labelled_videos(args: argparse.Namespace, config: Config) -> list[Video]:
    """The videos --data (with --subset, split as the config's `prepare` split them) or --list name."""
    if args.list:
        return listed_videos(args.list)
    return folder_videos(args.data, args.subset, config.data.val_fraction, config.seed, config.data.split)


def evaluate_job(model: ResNet3D, model_cfg: ModelConfig, videos: list[Video], cfg: EvalConfig,
                 plan: AccelPlan, threshold: float, out: Path, dump: Path | None = None,
                 decode: DecodeConfig = DecodeConfig()) -> dict:
    """Score every video's views, write the report to `out` (and the per-video rows to `dump`); returns it. A video
    read through damage (data/decode.py) is scored on what decodes, its loss in the report's `warnings` and the
    dump's `warnings` column."""
    rows, view_labels, view_probs, errors, damaged, frames = [], [], [], [], [], 0
    started = time.perf_counter()
    for name, path, label, kind in tqdm(videos, desc="evaluating", unit="video"):
        try:
            logits, n, warnings = view_logits(model, model_cfg, path, cfg, plan, decode)
        except InputError as e:
            log.error("%s", e)
            errors.append({"video": name, "error": str(e)})
            continue
        probs = torch.softmax(torch.from_numpy(logits), 1)[:, 1].tolist()
        rows.append({"video": name, "label": label, "kind": kind,
                     "fight_prob": video_fight_prob(logits, cfg.average), "view_probs": probs, "warnings": warnings})
        if warnings:
            log.warning("%s: %s", name, "; ".join(warnings))
            damaged.append({"video": name, "warnings": warnings})
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
        "by_kind": by_kind(rows, threshold),
        "throughput": {"videos_per_s": len(rows) / seconds, "views_per_s": len(view_probs) / seconds,
                       "frames_decoded_per_s": frames / seconds, "seconds": seconds,
                       "precision": plan.precision, "threads": torch.get_num_threads()},
        "errors": errors,
        "warnings": damaged,
    }
    atomic_write(out, lambda f: f.write((json.dumps(result, indent=1) + "\n").encode()))
    if dump is not None:
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["video", "label", "kind", "fight_prob", "prediction", "view_probs", "warnings"])
        for r in rows:
            writer.writerow([r["video"], r["label"], r["kind"], f"{r['fight_prob']:.6f}",
                             int(r["fight_prob"] >= threshold),
                             " ".join(f"{p:.6f}" for p in r["view_probs"]), "; ".join(r["warnings"])])
        atomic_write(dump, lambda f: f.write(text.getvalue().encode()))
    return result


def untrimmed_job(model: ResNet3D, model_cfg: ModelConfig, folder: Path, score_cfg: ScoreConfig,
                  policy: AlertPolicy, plan: AccelPlan, out: Path) -> dict:
    """Untrimmed videos with ground truth (`<name>.mp4` beside `<name>.json` holding "fight_intervals", seconds,
    and optionally the scene's "kind", as data/synthetic.py's timelines and wide scenes): each scored as `score`
    scores it and replayed through the alert policy; the report (to `out`) counts fights caught, alert latency and
    false alerts per hour of video, overall and per scene kind (`by_kind`).
    Where the truth has the fighters' "boxes" (wide scenes), also fights located (the alert's box on the true one,
    trainer.metrics.LOCATED_IOU) and, by the fight's width as a fraction of the frame's ("fight_width", else the
    boxes' mean width), fights caught and located: the size sweep."""
    videos = sorted(p for p in folder.glob("*.mp4") if p.with_suffix(".json").is_file()) if folder.is_dir() else []
    if not videos:
        raise InputError(f"{folder}: no <name>.mp4 beside a <name>.json with fight_intervals")
    per_video, latencies, seconds = [], [], 0.0
    for path in tqdm(videos, desc="evaluating", unit="video"):
        truth = json.loads(path.with_suffix(".json").read_text())
        entry = score_video(model, model_cfg, path, score_cfg, plan=plan)
        alerts = [dataclasses.asdict(a) for a in detect_alerts(policy, windows(entry), camera=path.name)]
        found = timeline_report(entry["clips"], alerts, truth["fight_intervals"], truth.get("boxes"), entry["fps"])
        per_video.append({"video": path.name, "kind": truth.get("kind", "untrimmed"),
                          "fights": len(truth["fight_intervals"]), "seconds": entry["frames"] / entry["fps"],
                          "fight_width": fight_width(truth), "warnings": entry["warnings"], **found})
        latencies += [s for s in found["latency_s"] if s is not None]
        seconds += entry["frames"] / entry["fps"]
    false_alerts = sum(v["false_alerts"] for v in per_video)
    result = {"videos": len(per_video), "hours": seconds / 3600,
              "fights": sum(v["fights"] for v in per_video), "caught": sum(v["caught"] for v in per_video),
              "latency_s": {"median": float(np.median(latencies)), "max": max(latencies)} if latencies else None,
              "false_alerts": false_alerts, "false_alerts_per_hour": false_alerts / (seconds / 3600),
              "located": sum(sum(bool(x) for x in v.get("located", [])) for v in per_video),
              "by_fight_width": size_sweep(per_video), "by_kind": untrimmed_by_kind(per_video),
              "policy": dataclasses.asdict(policy), "stride": score_cfg.stride,
              "regions": dataclasses.asdict(score_cfg.regions), "per_video": per_video}
    atomic_write(out, lambda f: f.write((json.dumps(result, indent=1) + "\n").encode()))
    return result


def untrimmed_by_kind(per_video: list[dict]) -> dict[str, dict]:
    """Per scene kind (the truth's "kind"): videos, hours, fights, caught, false alerts and their rate per hour.
    Pure."""
    out: dict[str, dict] = {}
    for video in per_video:
        kind = out.setdefault(video["kind"], {"videos": 0, "hours": 0.0, "fights": 0, "caught": 0, "false_alerts": 0})
        kind["videos"] += 1
        kind["hours"] += video["seconds"] / 3600
        for key in ("fights", "caught", "false_alerts"):
            kind[key] += video[key]
    for kind in out.values():
        kind["false_alerts_per_hour"] = kind["false_alerts"] / kind["hours"] if kind["hours"] else 0.0
    return dict(sorted(out.items()))


def fight_width(truth: dict) -> float | None:
    """The fight's width as a fraction of the frame's: the truth's own figure, else its boxes' mean width."""
    if truth.get("fight_width") is not None:
        return truth["fight_width"]
    boxes = truth.get("boxes") or []
    return round(float(np.mean([b["box"][2] - b["box"][0] for b in boxes])), 4) if boxes else None


def size_sweep(per_video: list[dict]) -> dict[str, dict]:
    """Fights, caught and located by fight width (the videos with fights and a known width), narrowest last. Pure."""
    sweep: dict[str, dict] = {}
    for video in sorted(per_video, key=lambda v: -(v["fight_width"] or 0)):
        if video["fight_width"] is None or not video["fights"]:
            continue
        row = sweep.setdefault(f"{video['fight_width']:g}", {"fights": 0, "caught": 0, "located": 0})
        row["fights"] += video["fights"]
        row["caught"] += video["caught"]
        row["located"] += sum(bool(x) for x in video.get("located", []))
    return sweep


def mlflow_key(name: str) -> str:
    """`name` as part of an MLflow metric key (letters, digits, _ - . / and spaces only)."""
    return re.sub(r"[^\w\-. /]", "_", name)


def evaluation_metrics(result: dict) -> dict[str, float]:
    """A report's scalar figures, as MLflow metrics. Pure. Labelled videos: `video_<figure>` (the headline) and
    `view_<figure>` (accuracy, mean_class_accuracy, precision, recall, f1, roc_auc, pr_ap, count), the throughput
    and the count of unreadable videos; untrimmed: the counts, false alerts per hour, latency median and max."""
    if "video" in result:
        out = {f"{level}_{name}": value for level in ("video", "view") for name, value in result[level].items()
               if isinstance(value, (int, float))}
        speed = result["throughput"]
        out.update({name: speed[name] for name in ("videos_per_s", "views_per_s", "frames_decoded_per_s", "seconds")})
        out.update({f"{'recall' if k['label'] == 'fight' else 'false_alarm_rate'}_{mlflow_key(name)}":
                    k.get("recall", k.get("false_alarm_rate")) for name, k in result["by_kind"].items()})
        return {**out, "unreadable_videos": len(result["errors"])}
    out = {name: result[name] for name in ("videos", "hours", "fights", "caught", "located", "false_alerts",
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Score every labelled video on --clips windows spread over it, one or three crops each, average the views "
        "into the video's fight probability, and report video-level accuracy (the headline of RWF-2000 and Hockey "
        "Fights results), mean class accuracy, precision, recall, F1, ROC-AUC, PR-AP, the confusion matrix and a "
        "threshold sweep, the same per view, and throughput.")
    parser.add_argument("--model", required=True, type=Path, help="a checkpoint written by fightwatch train")
    videos = add_labelled_video_args(parser)
    videos.add_argument("--untrimmed", type=Path, metavar="DIR",
                        help="long videos, each <name>.mp4 beside <name>.json with its fight_intervals (seconds): "
                             "scored as `score` does, the config's alert policy replayed; reports fights caught, "
                             "latency and false alerts per hour")
    add_config_args(parser, what="experiment YAML: its alerts.threshold is the default threshold, --untrimmed "
                                 "follows its score and alerts sections, --subset its data split; the run is logged "
                                 "to its MLflow store")
    parser.add_argument("--threshold", type=float, help="fight probability that counts as fight "
                                                        "(default: the config's alerts.threshold)")
    add_accel_args(parser)
    parser.add_argument("--out", required=True, type=Path, help="the report to write (JSON)")
    parser.add_argument("--dump", type=Path, help="also one CSV row per video: label, probability, views")
    parser.add_argument("--no-mlflow", dest="mlflow", action="store_false",
                        help="do not log an MLflow run (by default one is logged to the config's tracking store, "
                             "a child of the model's training run when that store has it)")


def run(args: argparse.Namespace) -> None:
    cfg = eval_config(args)
    config = load_config(args.config, overrides(args))
    threshold = args.threshold if args.threshold is not None else config.alerts.threshold
    if not 0 < threshold < 1:
        raise InputError(f"--threshold {threshold}: must be between 0 and 1")
    model, model_cfg = load_model(args.model)
    check_fight_model(model_cfg, args.model)
    plan = plan_for(AccelConfig(args.precision, args.kernels))
    model = prepare_model(model, plan, model_cfg, args.runtime, args.model)
    if args.untrimmed:
        policy = dataclasses.replace(config.alerts, threshold=threshold)
        result = untrimmed_job(model, model_cfg, args.untrimmed, config.score, policy, plan, args.out)
        latency = result["latency_s"]
        print(f"caught {result['caught']} of {result['fights']} fights (latency median "
              f"{latency['median'] if latency else float('nan'):.2f} s, {result['located']} located), "
              f"{result['false_alerts']} false alert(s), {result['false_alerts_per_hour']:.2f} per hour over "
              f"{result['hours'] * 60:.1f} min -> {args.out}")
        for name, kind in result["by_kind"].items():
            print(f"  {name}: {kind['videos']} video(s), caught {kind['caught']} of {kind['fights']} fights, "
                  f"{kind['false_alerts']} false alert(s) ({kind['false_alerts_per_hour']:.2f} per hour)")
        for width, row in result["by_fight_width"].items():
            print(f"  fights {width} of the frame wide: caught {row['caught']} of {row['fights']}, "
                  f"located {row['located']}")
        params = {"data_source": "untrimmed", "data": args.untrimmed.resolve(), "stride": config.score.stride,
                  "regions_budget": config.score.regions.budget, **dataclasses.asdict(policy)}
    else:
        result = evaluate_job(model, model_cfg, labelled_videos(args, config), cfg, plan, threshold, args.out, args.dump,
                              config.score.decode)
        video, view = result["video"], result["view"]
        print(f"video-level accuracy {video['accuracy']:.4f} over {video['count']} videos (mean class accuracy "
              f"{video['mean_class_accuracy']:.4f}, F1 {video['f1']:.4f}, ROC-AUC {video['roc_auc']:.4f}); view-level "
              f"accuracy {view['accuracy']:.4f}; {len(result['errors'])} unreadable -> {args.out}")
        for name, kind in result["by_kind"].items():
            print(f"  {name} ({kind['label']}): {kind['called_fight']} of {kind['videos']} called fight")
        params = {"data_source": "list" if args.list else "folders", "data": (args.list or args.data).resolve(),
                  "subset": args.subset, "clips": cfg.clips, "crops": cfg.crops, "average": cfg.average,
                  "threshold": threshold}
    if args.mlflow:
        run_id, parent_id = log_evaluation(config, args.model, {"model": args.model.resolve(),
                                                                "precision": plan.precision, **params},
                                           evaluation_metrics(result), [p for p in (args.out, args.dump) if p])
        print(f"MLflow run {run_id}" + (f", a child of training run {parent_id}," if parent_id else "")
              + f" in {tracking_uri(config.tracking, Path(config.run_dir))}")
