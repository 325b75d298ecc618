"""How many cameras `fightwatch watch` holds at 25 fps without dropping a window, at stride 8 (its default) and 16,
with regions and without (issue 25: cost follows activity).

Each trial is the real command on N cameras: the same synthetic 25 fps video replayed in real time (a live
source: when scoring lags, its oldest windows are dropped and counted), the real ResNet-34 (random weights, fc
fixed to calm so no alert writes anything), configs/ava_fight.yaml's watch settings with watch.regions.budget
set per --regions, the CPU's precision plan, for --seconds. Scenes (--scenes): `timeline`, the 320x240 close-up
of people who meet, fight and part; `calm-wide`, a 640x360 wide view of calm bystanders who walk, stand and
sit, with a group that meets and stands; `busy-wide`, the same view with a small fight among them. A camera is held when it dropped no window, decoded at least 95 % of its
frames in time and its scores lagged its frames by under --max-lag seconds. N doubles until a trial fails, then
bisects.

    python scripts/bench/bench_watch_capacity.py                    # stride 8 and 16, 20 s trials
    python scripts/bench/bench_watch_capacity.py --strides 16 --seconds 30
    python scripts/bench/bench_watch_capacity.py --strides 8 --regions 0 2 --scenes calm-wide busy-wide
    python scripts/bench/bench_watch_capacity.py --strides 8 --runtimes eager auto   # compiled against eager

`--runtimes` are watch's (trainer/compiled.py; auto compiles this real-size model); the compiled model is built
once into a fresh cache before the trials, so a trial's start does not include the compile.

The last line is the headline: cameras held per stride (and scene, regions budget and runtime) on this machine's
cores, with regions the ratio to the whole frame alone on the same scene, and compiled the ratio to eager,
measured in the same run.
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
from data.synthetic import render_timeline, render_wide, write_video
from trainer.accel import AccelConfig, plan_for
from trainer.checkpoint import load_model, save_checkpoint
from trainer.compiled import CACHE_ENV
from trainer.model import ModelConfig, ResNet3D
from trainer.serve.runtime.scoring import prepare_model

ROOT = Path(__file__).resolve().parents[2]
FPS = 25
SCENES = {  # scene -> frames of `seconds`
    "timeline": lambda seconds: render_timeline(7, calm_before=seconds / 3, fight=seconds / 3,
                                                calm_after=seconds / 3)[0],
    "calm-wide": lambda seconds: render_wide(7, width=640, height=360, fight_width=0.15, calm_before=seconds / 3,
                                             fight=seconds / 3, calm_after=seconds / 3, calm=True)[0],
    "busy-wide": lambda seconds: render_wide(7, width=640, height=360, fight_width=0.15, calm_before=seconds / 3,
                                             fight=seconds / 3, calm_after=seconds / 3)[0],
}
MODEL = ModelConfig(depth=34, shortcut="A", width=64, n_classes=2, sample_size=112, sample_duration=16,
                    pretrained=None, ft_begin="layer4", mean=None, std=None, value_scale=None)


def trial(model: Path, video: Path, cameras: int, stride: int, budget: int, runtime: str, seconds: float,
          max_lag: float, out: Path) -> dict:
    """One `fightwatch watch` run: its per-camera counters and whether every camera was held."""
    command = [sys.executable, "-m", "cluster.cli", "watch", "--config", "configs/ava_fight.yaml",
               "--model", str(model), "--stride", str(stride), "--max-seconds", str(seconds), "--stats-every", "0",
               "--out-dir", str(out), "--set", "watch.store=null", "--alerts", str(out / "alerts.jsonl"),
               "--set", f"watch.regions.budget={budget}", "--runtime", runtime,
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
    windows = sum(c["windows"] for c in stats.values())
    scored = sum(c["views_scored"] for c in stats.values()) / max(1, windows)
    kept = sum(c["views_kept"] for c in stats.values()) / max(1, windows)
    print(f"  {runtime}, stride {stride:2d}, regions {budget}, {cameras:3d} camera(s): "
          f"{'held' if held else 'NOT held'} (worst camera: "
          f"{worst['windows_dropped']} windows dropped, {worst['frames_in']}/{expected:.0f} frames, max lag "
          f"{worst['max_lag_s']:.2f} s; per window {scored:.2f} views scored, {kept:.2f} kept)", flush=True)
    return {"held": held}


def capacity(model: Path, video: Path, stride: int, budget: int, runtime: str, args, out: Path) -> int:
    """The most cameras held: double until a trial fails, then bisect."""
    held, failed = 0, None
    n = 1
    while failed is None:
        if trial(model, video, n, stride, budget, runtime, args.seconds, args.max_lag, out)["held"]:
            held, n = n, n * 2
            if n > args.max_cameras:
                return held
        else:
            failed = n
    while failed - held > 1:
        n = (held + failed) // 2
        if trial(model, video, n, stride, budget, runtime, args.seconds, args.max_lag, out)["held"]:
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
    parser.add_argument("--regions", type=int, nargs="+", default=[0], metavar="BUDGET",
                        help="watch.regions.budget values to compare (default: 0, the whole frame alone)")
    parser.add_argument("--scenes", nargs="+", choices=sorted(SCENES), default=["timeline"])
    parser.add_argument("--runtimes", nargs="+", choices=["auto", "eager", "compile"], default=["auto"])
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(describe_cpu())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = ResNet3D(MODEL).eval()
        with torch.no_grad():
            model.fc.weight.zero_(), model.fc.bias.copy_(torch.tensor([5.0, 0.0]))  # calm: no alert writes
        save_checkpoint(tmp / "model.pth", model, MODEL, epoch=0)
        os.environ[CACHE_ENV] = str(tmp / "compiled")  # watch's runs load what this builds
        for runtime in set(args.runtimes) - {"eager"}:
            prepare_model(load_model(tmp / "model.pth")[0], plan_for(AccelConfig("auto", "auto")), MODEL, runtime)
        held = {}
        for scene in args.scenes:
            frames = SCENES[scene](args.seconds + 2)  # longer than the trial
            write_video(tmp / f"{scene}.mp4", frames, FPS)
            for stride in args.strides:
                for budget in args.regions:
                    for runtime in args.runtimes:
                        held[scene, stride, budget, runtime] = capacity(tmp / "model.pth", tmp / f"{scene}.mp4",
                                                                        stride, budget, runtime, args, tmp / "out")
    rows = []
    for (scene, stride, budget, runtime), n in held.items():
        base, eager = held.get((scene, stride, 0, runtime)), held.get((scene, stride, budget, "eager"))
        ratio = f", {n / base:.2f}x the whole frame's" if budget and base else ""
        ratio += f", {n / eager:.2f}x eager's" if runtime != "eager" and eager else ""
        rows.append(f"{scene} stride {stride} regions {budget} {runtime}: {n} (est. {n * 16 / cores:.0f} per 16 "
                    f"cores, linear{ratio})")
    print(f"cameras held at {FPS} fps without drops on {cores} core(s): " + "; ".join(rows))


if __name__ == "__main__":
    main()
