"""How many cameras `fightwatch watch` holds at 25 fps without dropping a window, at stride 8 (its default) and 16.

Each trial is the real command on N cameras: the same synthetic 320x240 25 fps video replayed in real time
(a live source: when scoring lags, its oldest windows are dropped and counted), the real ResNet-34 (random
weights, fc fixed to calm so no alert writes anything), configs/ava_fight.yaml's watch settings, the CPU's
precision plan, for --seconds. A camera is held when it dropped no window, decoded at least 95 % of its
frames in time and its scores lagged its frames by under --max-lag seconds. N doubles until a trial fails, then
bisects.

    python scripts/bench/bench_watch_capacity.py                    # stride 8 and 16, 20 s trials
    python scripts/bench/bench_watch_capacity.py --strides 16 --seconds 30

The last line is the headline: cameras held per stride on this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from common import describe_cpu  # scripts/bench/common.py
from data.synthetic import render_timeline, write_video
from trainer.checkpoint import save_checkpoint
from trainer.model import ModelConfig, ResNet3D

ROOT = Path(__file__).resolve().parents[2]
FPS = 25
MODEL = ModelConfig(depth=34, shortcut="A", width=64, n_classes=2, sample_size=112, sample_duration=16,
                    pretrained=None, ft_begin="layer4", mean=None, std=None, value_scale=None)


def trial(model: Path, video: Path, cameras: int, stride: int, seconds: float, max_lag: float, out: Path) -> dict:
    """One `fightwatch watch` run: its per-camera counters and whether every camera was held."""
    command = [sys.executable, "-m", "cluster.cli", "watch", "--config", "configs/ava_fight.yaml",
               "--model", str(model), "--stride", str(stride), "--max-seconds", str(seconds), "--stats-every", "0",
               "--out-dir", str(out), "--set", "watch.store=null", "--alerts", str(out / "alerts.jsonl"),
               *[f"cam{i}={video}" for i in range(cameras)]]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in result.stderr.splitlines() if line.startswith('{"event": "stats"')]
    if not lines:
        sys.exit(f"watch failed:\n{result.stderr[-3000:]}")
    stats = json.loads(lines[-1])["cameras"]
    expected = FPS * seconds
    held = all(c["windows_dropped"] == 0 and c["frames_in"] >= 0.95 * expected and c["max_lag_s"] < max_lag
               for c in stats.values())
    worst = max(stats.values(), key=lambda c: (c["windows_dropped"], c["max_lag_s"]))
    print(f"  stride {stride:2d}, {cameras:3d} camera(s): {'held' if held else 'NOT held'} (worst camera: "
          f"{worst['windows_dropped']} windows dropped, {worst['frames_in']}/{expected:.0f} frames, max lag "
          f"{worst['max_lag_s']:.2f} s)", flush=True)
    return {"held": held}


def capacity(model: Path, video: Path, stride: int, args, out: Path) -> int:
    """The most cameras held: double until a trial fails, then bisect."""
    held, failed = 0, None
    n = 1
    while failed is None:
        if trial(model, video, n, stride, args.seconds, args.max_lag, out)["held"]:
            held, n = n, n * 2
            if n > args.max_cameras:
                return held
        else:
            failed = n
    while failed - held > 1:
        n = (held + failed) // 2
        if trial(model, video, n, stride, args.seconds, args.max_lag, out)["held"]:
            held = n
        else:
            failed = n
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strides", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each trial (default: 20)")
    parser.add_argument("--max-lag", type=float, default=2.0, help="most seconds from frame to score (default: 2)")
    parser.add_argument("--max-cameras", type=int, default=128)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(describe_cpu())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = ResNet3D(MODEL).eval()
        with torch.no_grad():
            model.fc.weight.zero_(), model.fc.bias.copy_(torch.tensor([5.0, 0.0]))  # calm: no alert writes
        save_checkpoint(tmp / "model.pth", model, MODEL, epoch=0)
        frames, _ = render_timeline(7, calm_before=args.seconds / 3, fight=args.seconds / 3,
                                    calm_after=args.seconds / 3 + 2)  # longer than the trial
        write_video(tmp / "camera.mp4", frames, FPS)
        held = {stride: capacity(tmp / "model.pth", tmp / "camera.mp4", stride, args, tmp / "out")
                for stride in args.strides}
    print(f"cameras held at {FPS} fps without drops on {cores} core(s): " + ", ".join(
        f"stride {stride} {n} (est. {n * 16 / cores:.0f} per 16 cores, linear)" for stride, n in held.items()))


if __name__ == "__main__":
    main()
