"""The operator's loop, timed: false alarms marked in the review app, a new model trained from them, checked.

On a demo run (`fightwatch demo`, or any run of configs/demo.yaml), with real fightwatch commands:
  1. watch   N cameras of a harmless scene the demo never trains on (--scene; data/synthetic.py's `crowd`:
             runners and dancers, or `ballgame`: players who sprint after a ball and scramble for it) with the
             run's model, into an alert store; the model, which has seen fast motion only in fights, alarms
  2. mark    every alert false positive through the review app's REST API, with its token
  3. export  `fightwatch review --export`: their review clips into a folder-per-class set, with the motion
             regions watch scored in them as clips of their own
  4. retrain a new run dir holding hard links to the run's videos and clip store (nothing regenerated or
             re-extracted), `prepare` with the export as data.extra_folders (only the flagged clips are new),
             `train` from the run's model (model.pretrained, frozen below model.ft_begin, the trunk cache)
  5. check   the same cameras again, and the run's held-out fight timeline

    python scripts/bench/bench_feedback_loop.py --base runs/demo                  # 20 cameras of 8 s
    python scripts/bench/bench_feedback_loop.py --base runs/demo --cameras 6 --out loop.json
    python scripts/bench/bench_feedback_loop.py --base runs/demo --scene ballgame  # the harder scene
    python scripts/bench/bench_feedback_loop.py --base runs/demo --set train.epochs=40   # retraining overrides

The last line is the headline: marked-to-new-model seconds (export + prepare + train), the scene's cameras that
alarmed before and after, and whether the held-out fight still raised an alert.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from common import describe_cpu  # scripts/bench/common.py

from data.synthetic import render_clip, write_video
from trainer.checkpoint import read_checkpoint
from trainer.serve.alerting.store import AlertStore
from trainer.serve.review.app import serve_in_thread

ROOT = Path(__file__).resolve().parents[2]
TOKEN_ENV = "FIGHTWATCH_BENCH_TOKEN"
RETRAIN = ["model.ft_begin=layer3", "train.trunk_cache={views: 8}", "train.epochs=40", "train.warmup_epochs=1",
           "tracking.run_name=feedback", "tracking.log_model=false"]


def fightwatch(*args: str) -> float:
    """Run a fightwatch command from the checkout; its wall seconds. Exits with its stderr when it fails."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "cluster.cli", *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"fightwatch {args[0]} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def watch(model: Path, cameras: dict[str, Path], store: Path, out: Path) -> tuple[list[dict], dict[str, float]]:
    """The alerts' start events of a --no-realtime watch of the cameras, and each camera's peak fight probability."""
    alerts, scores = out / "alerts.jsonl", out / "scores.jsonl"
    fightwatch("watch", "--config", "configs/demo.yaml", "--model", str(model), "--no-realtime", "--store", str(store),
               "--out-dir", str(out), "--alerts", str(alerts), "--scores", str(scores),
               "--set", "watch.max_pending_writes=64", *[f"{name}={path}" for name, path in cameras.items()])
    peaks: dict[str, float] = {}
    for window in map(json.loads, scores.read_text().splitlines()):
        peaks[window["camera"]] = max(peaks.get(window["camera"], 0.0), window["fight_prob"])
    return [a for a in map(json.loads, alerts.read_text().splitlines()) if a["event"] == "start"], peaks


def mark_false_positives(store_path: Path) -> int:
    """What an operator does in the page, through the same REST API: every alert false positive, in bulk."""
    os.environ[TOKEN_ENV] = "bench"
    with AlertStore(store_path) as store:
        server = serve_in_thread(store, None, "127.0.0.1", 0, token_env=TOKEN_ENV)
        try:
            with urllib.request.urlopen(f"{server.url}api/alerts?limit=1000") as response:
                ids = [a["id"] for a in json.loads(response.read())]
            request = urllib.request.Request(
                f"{server.url}api/reviews", method="POST", headers={
                    "Authorization": "Bearer bench", "Content-Type": "application/json"},
                data=json.dumps({"alert_ids": ids, "verdict": "false_positive", "who": "bench"}).encode())
            urllib.request.urlopen(request).close()
        finally:
            server.stop()
    return len(ids)


def caught(alerts: list[dict], camera: str, intervals: list[list[float]]) -> bool:
    return any(a["camera"] == camera and a["start_s"] < end and a["raised_s"] > start
               for a in alerts for start, end in intervals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=ROOT / "runs" / "demo", help="a demo run dir (default: runs/demo)")
    parser.add_argument("--scene", choices=("crowd", "ballgame"), default="crowd",
                        help="the harmless scene the cameras show (default: crowd)")
    parser.add_argument("--cameras", type=int, default=20, help="cameras, one flagged clip each (default: 20)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each camera's video (default: 8)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_feedback_loop", help="where it all goes")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="more retraining overrides, e.g. train.epochs=40")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    base, work = args.base.resolve(), args.work.resolve()
    if not (base / "model.pth").is_file():
        sys.exit(f"{base}: no model.pth; run `fightwatch demo` first (or name a demo run with --base)")
    for old in ("feedback", "retrain", "watch-before", "watch-after", "alerts.db", "alerts-after.db"):  # a rerun
        subprocess.run(["rm", "-rf", *map(str, work.glob(f"{old}*"))], check=True)
    work.mkdir(parents=True, exist_ok=True)
    print(describe_cpu())

    cameras = {}
    for i in range(args.cameras):
        cameras[f"{args.scene}{i}"] = path = work / args.scene / f"{args.scene}{i}.mp4"
        if not path.is_file():
            write_video(path, render_clip(args.scene, args.seconds, seed=1000 + i), 25)
    before, peaks_before = watch(base / "model.pth", cameras, work / "alerts.db", work / "watch-before")
    flagged = mark_false_positives(work / "alerts.db")

    feedback, retrain = work / "feedback", work / "retrain"
    export_s = fightwatch("review", "--export", str(feedback), "--store", str(work / "alerts.db"),
                          "--config", "configs/demo.yaml")
    retrain.mkdir()  # a fresh run: the base run stays as it is, to roll back to
    for shared in ("videos", "clips"):  # hard links: the store's shards are written once, never changed in place
        subprocess.run(["cp", "-rl", str(base / shared), str(retrain / shared)], check=True)
    overrides = [f"run_dir={retrain}", f"data.extra_folders=[{feedback}]", f"model.pretrained={base / 'model.pth'}",
                 *RETRAIN, *args.overrides]
    prepare_s = fightwatch("prepare", "--config", "configs/demo.yaml", *overrides)
    train_s = fightwatch("train", "--config", "configs/demo.yaml", *overrides)

    timeline = base / "heldout" / "timeline.mp4"
    after, peaks_after = watch(retrain / "model.pth", {**cameras, "timeline": timeline}, work / "alerts-after.db",
                  work / "watch-after")
    truth = json.loads(timeline.with_suffix(".json").read_text())["fight_intervals"]
    result = {
        "scene": args.scene, "cameras": args.cameras, "seconds": args.seconds, "flagged": flagged,
        "flagged_clips": len([p for p in (feedback / "nonfights").glob("*.mp4") if ".view" not in p.name]),
        "view_clips": len(list((feedback / "nonfights").glob("*.view*.mp4"))),
        "cameras_alarming_before": len({a["camera"] for a in before}),
        "cameras_alarming_after": len({a["camera"] for a in after if a["camera"] != "timeline"}),
        "fight_caught_after": caught(after, "timeline", truth),
        # the margins: the hottest window of any of the scene's cameras, against the alert threshold
        "scene_peak_before": round(max(peaks_before.values()), 3),
        "scene_peak_after": round(max(p for c, p in peaks_after.items() if c != "timeline"), 3),
        # the demo's own validation clips: what the new model gave up for it, if anything
        "val_accuracy_before": _val_accuracy(base), "val_accuracy_after": _val_accuracy(retrain),
        "export_s": round(export_s, 1), "prepare_s": round(prepare_s, 1), "train_s": round(train_s, 1),
        "marked_to_model_s": round(export_s + prepare_s + train_s, 1),
        "retrain_overrides": RETRAIN + args.overrides,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"marked to new model: {result['marked_to_model_s']} s (export {result['export_s']} + prepare "
          f"{result['prepare_s']} + train {result['train_s']}) for {result['flagged_clips']} flagged clips; "
          f"{args.scene} cameras alarming {result['cameras_alarming_before']} -> {result['cameras_alarming_after']} "
          f"of {args.cameras} (peak {result['scene_peak_before']} -> {result['scene_peak_after']}); held-out fight "
          f"{'caught' if result['fight_caught_after'] else 'MISSED'}; val accuracy "
          f"{result['val_accuracy_before']} -> {result['val_accuracy_after']}")


def _val_accuracy(run_dir: Path) -> float | None:
    last = run_dir / "checkpoints" / "last.pth"
    return round(read_checkpoint(last)["metrics"]["val_accuracy"], 3) if last.is_file() else None


if __name__ == "__main__":
    main()
