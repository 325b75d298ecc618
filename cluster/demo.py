"""The demo job: the whole product on generated videos, end to end on one machine.

generate videos -> extract clips (Ray Data) -> train (MLflow) -> score the
held-out timeline -> output.json, annotated mp4, probability plot, alerts.
Every step skips work already done in the run dir, so a re-run is cheap.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cluster.config import Config
from cluster.prepare import run_prepare
from cluster.score import score_job, write_alerts
from cluster.train_job import run_train
from data.errors import InputError
from data.synthetic import write_timeline
from trainer.checkpoint import load_model
from trainer.tracking import Tracker

log = logging.getLogger(__name__)


def run_demo(cfg: Config) -> dict:
    if cfg.data.source != "synthetic":
        raise InputError(f"the demo generates its videos: data.source must be 'synthetic', not {cfg.data.source!r}")
    run_prepare(cfg)
    run_dir = Path(cfg.run_dir)
    syn = cfg.data.synthetic
    timeline = run_dir / "heldout" / "timeline.mp4"
    truth = write_timeline(timeline, cfg.seed + 1, syn.timeline_calm_before, syn.timeline_fight,
                           syn.timeline_calm_after, width=syn.width, height=syn.height, fps=syn.fps)

    val_metrics, run_id = run_train(cfg)
    model_path = run_dir / "model.pth"
    model, model_cfg = load_model(model_path)
    with Tracker(cfg.tracking, run_dir, run_id=run_id) as tracker:
        entries, alerts = score_job(model, model_cfg, [timeline], run_dir / "output.json", cfg.score, cfg.alerts,
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
        "mlflow_run_id": run_id,
    }
