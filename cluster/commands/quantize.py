"""`fightwatch quantize`: an int8 model from a trained checkpoint, for `--runtime int8` (trainer/quantize.py).

Calibrated on the run's own training clips (centre views, `quantize.calibration_clips` of them, drawn with the
config's seed from the clip store `prepare` filled), then measured: the labelled videos (--data with --subset
validation, or --list) evaluated as `evaluate` does, with the model's default path (the precision and runtime of
--precision/--runtime) and with int8. The drop in video accuracy is stated; past `quantize.max_accuracy_drop` the
int8 model is refused and nothing is written beside the checkpoint but the report.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cluster.commands.args import add_accel_args, add_config_args, overrides
from cluster.commands.evaluate import Video, add_labelled_video_args, eval_config, evaluate_job, labelled_videos
from cluster.config import Config, load_config
from data.dataset import ClipDataset
from data.errors import InputError
from data.files import atomic_write, file_sha256
from data.store import ClipStore, read_manifest
from trainer.accel import AccelConfig, plan_for
from trainer.checkpoint import load_model
from trainer.eval_views import EvalConfig
from trainer.model import ModelConfig
from trainer.quantize import quantize, quantized_model, quantized_path, report_path, verdict
from trainer.serve.runtime.scoring import check_fight_model, prepare_model

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Quantize a trained model to int8 (post-training, calibrated on its run's training clips), evaluate it on "
        "labelled videos before and after, and keep it beside the checkpoint for `--runtime int8` only when its "
        "video accuracy drops by at most quantize.max_accuracy_drop.")
    parser.add_argument("--model", required=True, type=Path, help="a checkpoint written by fightwatch train")
    add_labelled_video_args(parser)
    add_config_args(parser, what="the run's experiment YAML: its run_dir's clips calibrate, its quantize section "
                                 "bounds the drop, its alerts.threshold counts a video as fight, --subset its split")
    add_accel_args(parser)
    parser.set_defaults(runtime="auto")


def calibration_batches(config: Config, model_cfg: ModelConfig, store: ClipStore):
    """Batches of the run's training clips (centre views), `quantize.calibration_clips` of them drawn by seed."""
    manifest = Path(config.run_dir) / "manifest.jsonl"
    if not manifest.is_file():
        raise InputError(f"{manifest}: no prepared clips to calibrate on; int8 calibrates on the run's own clips "
                         "(run `fightwatch prepare` with this config, or name the run's config)")
    rows = [r for r in read_manifest(manifest) if r["subset"] == "training"]
    if not rows:
        raise InputError(f"{manifest}: no training clips to calibrate on")
    n = min(config.quantize.calibration_clips, len(rows))
    picked = sorted(np.random.default_rng(config.seed).choice(len(rows), n, replace=False))
    clips = ClipDataset(store, [rows[i] for i in picked], model_cfg.sample_size, model_cfg.sample_duration,
                        model_cfg.normalization, train=False)
    loader = torch.utils.data.DataLoader(clips, batch_size=CALIBRATION_BATCH)
    for x, _ in tqdm(loader, desc="calibrating", unit="batch"):
        yield x


def evaluated(model: torch.nn.Module, model_cfg: ModelConfig, videos: list[Video], cfg: EvalConfig, plan,
              threshold: float, config: Config, folder: Path, name: str) -> dict:
    """evaluate's report of `model` on `videos`, cut to what the quantization report keeps."""
    result = evaluate_job(model, model_cfg, videos, cfg, plan, threshold, folder / f"{name}.json",
                          decode=config.score.decode)
    video = result["video"]
    return {"video_accuracy": video["accuracy"], "video_f1": video["f1"], "video_roc_auc": video["roc_auc"],
            "by_kind": {kind: row["called_fight"] for kind, row in result["by_kind"].items()},
            "views_per_s": result["throughput"]["views_per_s"], "errors": len(result["errors"])}


def run(args: argparse.Namespace) -> None:
    cfg = eval_config(args)
    if args.runtime == "int8":
        raise InputError("--runtime int8: the runtime quantize measures int8 against is the model's own "
                         "(auto, eager or compile)")
    config = load_config(args.config, overrides(args))
    videos = labelled_videos(args, config)
    model, model_cfg = load_model(args.model)
    check_fight_model(model_cfg, args.model)
    shape = (3, model_cfg.sample_duration, model_cfg.sample_size, model_cfg.sample_size)
    threshold = config.alerts.threshold
    with ClipStore(Path(config.run_dir) / "clips") as store:
        program = quantize(copy.deepcopy(model), shape, calibration_batches(config, model_cfg, store))
    plan = plan_for(AccelConfig(args.precision, args.kernels))
    path = quantized_path(args.model)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        before = evaluated(prepare_model(model, plan, model_cfg, args.runtime), model_cfg, videos, cfg, plan,
                           threshold, config, folder, "before")
        torch.export.save(program, folder / path.name)
        # compiled as --runtime int8 will run it (the compile cache keeps the build for it)
        int8 = quantized_model(folder / path.name)
        after = evaluated(int8, model_cfg, videos, cfg, plan, threshold, config, folder, "after")
        accepted, why = verdict(before["video_accuracy"], after["video_accuracy"], config.quantize.max_accuracy_drop)
        if accepted:
            atomic_write(path, lambda f: f.write((folder / path.name).read_bytes()))
        else:
            path.unlink(missing_ok=True)  # an int8 model of an earlier quantize must not outlive this verdict
    report = {"checkpoint": str(args.model), "checkpoint_sha256": file_sha256(args.model), "accepted": accepted,
              "verdict": why, "max_accuracy_drop": config.quantize.max_accuracy_drop, "videos": len(videos),
              "calibration_clips": config.quantize.calibration_clips, "threshold": threshold,
              "views": {"clips": cfg.clips, "crops": cfg.crops, "average": cfg.average},
              "before": {"precision": plan.precision, "runtime": args.runtime, **before},
              "after": {"precision": "int8", **after}, "program": str(path) if accepted else None}
    atomic_write(report_path(args.model), lambda f: f.write((json.dumps(report, indent=1) + "\n").encode()))
    print(f"{why} over {len(videos)} videos; {before['views_per_s']:.1f} -> {after['views_per_s']:.1f} views/s "
          f"-> {report_path(args.model)}")
    for kind, called in after["by_kind"].items():
        print(f"  {kind}: {before['by_kind'][kind]} -> {called} called fight")
    if not accepted:
        raise InputError(f"{args.model}: int8 refused: {why}")
    print(f"int8 model -> {path} (score, evaluate and watch run it with --runtime int8)")
