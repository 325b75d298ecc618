"""The demo job: the whole product on generated videos, end to end on one machine.

generate videos -> extract clips (Ray Data) -> train (MLflow) -> score the
held-out timeline -> output.json, annotated mp4, probability plot, alerts.
Every step skips work already done in the run dir, so a re-run is cheap.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from cluster.config import Config, flatten
from cluster.score import score_job, write_alerts
from data.dataset import ClipDataset
from data.errors import InputError
from data.pipeline import extract_clips
from data.store import ClipStore, write_manifest
from data.synthetic import LABELS, generate_dataset, write_timeline
from trainer.checkpoint import save_checkpoint
from trainer.tracking import Tracker
from trainer.train import train

log = logging.getLogger(__name__)


def make_run_dir(path: str | Path) -> Path:
    run_dir = Path(path)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"{run_dir}: run_dir exists and is not a directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def split_by_video(rows: list[dict], val_per_class: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded split with `val_per_class` videos of each label held out for validation."""
    rng = random.Random(seed)
    val = []
    for label in LABELS:
        of_label = sorted((r for r in rows if r["label"] == label), key=lambda r: r["clip_id"])
        val += rng.sample(of_label, min(val_per_class, len(of_label) - 1))
    val_ids = {r["clip_id"] for r in val}
    return [r for r in rows if r["clip_id"] not in val_ids], val


def run_demo(cfg: Config) -> dict:
    run_dir = make_run_dir(cfg.run_dir)
    syn = cfg.synthetic
    videos = generate_dataset(run_dir / "videos", syn.videos_per_class, syn.seconds, cfg.seed,
                              width=syn.width, height=syn.height, fps=syn.fps)
    timeline = run_dir / "heldout" / "timeline.mp4"
    truth = write_timeline(timeline, cfg.seed + 1, syn.timeline_calm_before, syn.timeline_fight,
                           syn.timeline_calm_after, width=syn.width, height=syn.height, fps=syn.fps)

    store = ClipStore(run_dir / "clips")
    rows = [{"clip_id": Path(v["path"]).stem, "path": v["path"], "label": v["label"], "label_id": v["label_id"]}
            for v in videos]
    rows = extract_clips(rows, store, cfg.clips.short_side)
    train_rows, val_rows = split_by_video(rows, syn.val_videos_per_class, cfg.seed)
    val_ids = {r["clip_id"] for r in val_rows}
    write_manifest(run_dir / "manifest.jsonl", [{**r, "split": "val" if r["clip_id"] in val_ids else "train"} for r in rows])

    m = cfg.model
    datasets = [ClipDataset(store, split, m.sample_size, m.sample_duration, m.mean, m.std, train=is_train, seed=cfg.seed)
                for split, is_train in ((train_rows, True), (val_rows, False))]
    with Tracker(cfg.tracking, run_dir) as tracker:
        tracker.log_params(flatten(cfg))
        model, val_metrics = train(cfg.train, m, *datasets, run_dir=run_dir, tracker=tracker, seed=cfg.seed)
        model_path = run_dir / "model.pth"
        save_checkpoint(model_path, model, m, cfg.train.epochs)

        entries, alerts = score_job(model, m, [timeline], run_dir / "output.json", cfg.score, cfg.alerts,
                                    annotated_dir=run_dir)
        write_alerts(run_dir / "alerts.jsonl", alerts)
        for name in ("output.json", "alerts.jsonl", "timeline_probs.png"):
            tracker.log_artifact(run_dir / name, "heldout")
        tracker.log_metrics({"heldout_alerts": len(alerts)}, step=cfg.train.epochs)
    return {
        "run_dir": str(run_dir),
        "model": str(model_path),
        "val": val_metrics,
        "truth": truth,
        "alerts": alerts,
        "mlflow_run_id": tracker.run_id,
    }
