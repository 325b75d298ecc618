"""`fightwatch demo`: the whole product on generated videos, end to end on one machine.

generate videos -> extract clips (Ray Data) -> train (MLflow) -> score the
held-out videos (a timeline at the clips' size, a wide view with a small fight) -> output.json, annotated mp4s,
probability plots, alerts.
Every step skips work already done in the run dir, so a re-run is cheap.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from cluster.commands.args import add_config_args, add_deterministic_arg, overrides
from cluster.commands.prepare import run_prepare
from cluster.commands.score import Video, score_job, write_alerts
from cluster.commands.train import run_train
from cluster.config import Config, load_config
from cluster.launch import launch_local, local_plan
from cluster.logs import log_to_run_dir
from data.errors import InputError
from data.synthetic import write_timeline, write_wide
from trainer.checkpoint import latest_checkpoint, load_model
from trainer.metrics import timeline_report
from trainer.tracking import Tracker

log = logging.getLogger(__name__)


def run_demo(cfg: Config, train_args: list[str]) -> dict:
    """`train_args` (--config and overrides) start the DDP ranks (dist.local_ranks) with the same config."""
    if cfg.data.source != "synthetic":
        raise InputError(f"the demo generates its videos: data.source must be 'synthetic', not {cfg.data.source!r}")
    run_prepare(cfg)
    run_dir = Path(cfg.run_dir)
    syn = cfg.data.synthetic
    timeline = run_dir / "heldout" / "timeline.mp4"
    truth = write_timeline(timeline, cfg.seed + 1, syn.timeline_calm_before, syn.timeline_fight,
                           syn.timeline_calm_after, width=syn.width, height=syn.height, fps=syn.fps)
    wide = run_dir / "heldout" / "wide.mp4"
    wide_truth = write_wide(wide, cfg.seed + 2, width=syn.wide_width, height=syn.wide_height,
                            fight_width=syn.wide_fight_width, fps=syn.fps)

    ranks = len(local_plan(cfg.dist))
    if ranks == 1:
        val_metrics, run_id = run_train(cfg)
    else:
        log.info("training with %d DDP ranks on this machine (torchrun)", ranks)
        if launch_local(cfg.dist, ranks, train_args) != 0:
            raise InputError(f"training with {ranks} DDP ranks failed; its log is above")
        last = latest_checkpoint(Path(cfg.run_dir) / "checkpoints")[1]
        val_metrics = {k[4:]: v for k, v in last["metrics"].items() if k.startswith("val_")}
        run_id = last["mlflow_run_id"]
    model_path = run_dir / "model.pth"
    model, model_cfg = load_model(model_path)
    with Tracker(cfg.tracking, run_dir, run_id=run_id) as tracker:
        entries, alerts = score_job(model, model_cfg, [Video.of(timeline), Video.of(wide)], run_dir / "output.json",
                                    cfg.score, cfg.alerts, annotated_dir=run_dir)
        write_alerts(run_dir / "alerts.jsonl", alerts)
        for name in ("output.json", "alerts.jsonl", "timeline_probs.png", "wide_probs.png"):
            tracker.log_artifact(run_dir / name, "heldout")
        wide_report = timeline_report(entries[1]["clips"], [a for a in alerts if a["camera"] == wide.name],
                                      wide_truth["fight_intervals"], wide_truth["boxes"], wide_truth["fps"])
        tracker.log_metrics({"heldout_alerts": len(alerts), "heldout_wide_caught": wide_report["caught"],
                             "heldout_wide_located": sum(bool(x) for x in wide_report["located"]),
                             "heldout_wide_false_alerts": wide_report["false_alerts"]}, step=cfg.train.epochs)
    return {
        "run_dir": str(run_dir),
        "model": str(model_path),
        "val": val_metrics,
        "truth": truth,
        "wide_truth": wide_truth,
        "wide_report": wide_report,
        "alerts": alerts,
        "mlflow_run_id": run_id,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Generate synthetic fight/calm videos, extract clips with Ray Data, train with MLflow "
                          "tracking, score a held-out timeline video, write output.json, an annotated mp4 and alerts.")
    add_config_args(parser, "configs/demo.yaml")
    add_deterministic_arg(parser)


def run(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, overrides(args))
    log_file = log_to_run_dir(cfg.run_dir)
    summary = run_demo(cfg, ["--config", str(args.config), *overrides(args)])
    run_dir = Path(summary["run_dir"])
    for alert in summary["alerts"]:
        print(json.dumps(alert))
    truth, wide, report = summary["truth"], summary["wide_truth"], summary["wide_report"]
    on = {name: sum(a["camera"] == name for a in summary["alerts"]) for name in ("timeline.mp4", "wide.mp4")}
    print(f"\nval accuracy {summary['val'].get('accuracy', float('nan')):.3f}, "
          f"{on['timeline.mp4']} alert(s) on the held-out timeline (true fight at {truth['fight_intervals']}); "
          f"{on['wide.mp4']} on the wide view ({wide['width']}x{wide['height']}, a fight "
          f"{wide['fight_width']:g} of its width at {wide['fight_intervals']}: caught {report['caught']}, "
          f"located {sum(bool(x) for x in report['located'])})")
    print(f"run dir:      {run_dir}\n"
          f"model:        {summary['model']}\n"
          f"scores:       {run_dir / 'output.json'}\n"
          f"annotated:    {run_dir / 'timeline_annotated.mp4'}, {run_dir / 'wide_annotated.mp4'} (plots: "
          f"*_probs.png)\n"
          f"alerts:       {run_dir / 'alerts.jsonl'}\n"
          f"MLflow:       mlflow ui --backend-store-uri sqlite:///{(run_dir / 'mlflow.db').resolve()}\n"
          f"log:          {log_file}")
