"""The demo job: the whole product on generated videos, end to end on one machine.

generate videos -> extract clips (Ray Data) -> train (MLflow) -> score the
held-out timeline -> output.json, annotated mp4, probability plot, alerts.
Every step skips work already done in the run dir, so a re-run is cheap.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cluster.config import Config, flatten
from cluster.prepare import run_prepare
from cluster.score import score_job, write_alerts
from data.dataset import ClipDataset
from data.errors import InputError
from data.store import ClipStore
from data.synthetic import write_timeline
from trainer.checkpoint import save_checkpoint
from trainer.tracking import Tracker
from trainer.train import train

log = logging.getLogger(__name__)


def run_demo(cfg: Config) -> dict:
    if cfg.data.source != "synthetic":
        raise InputError(f"the demo generates its videos: data.source must be 'synthetic', not {cfg.data.source!r}")
    prepared = run_prepare(cfg)
    run_dir = Path(cfg.run_dir)
    syn = cfg.data.synthetic
    timeline = run_dir / "heldout" / "timeline.mp4"
    truth = write_timeline(timeline, cfg.seed + 1, syn.timeline_calm_before, syn.timeline_fight,
                           syn.timeline_calm_after, width=syn.width, height=syn.height, fps=syn.fps)

    m, store = cfg.model, ClipStore(prepared.store_root)
    datasets = [ClipDataset(store, [r for r in prepared.rows if r["subset"] == subset], m.sample_size,
                            m.sample_duration, m.normalization, train=subset == "training", seed=cfg.seed)
                for subset in ("training", "validation")]
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
