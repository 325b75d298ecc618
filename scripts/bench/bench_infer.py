"""Scoring throughput of the product's ResNet-34 on this CPU, cameras per socket, and alert latency.

    .venv/bin/python scripts/bench/bench_infer.py [--model runs/demo/model.pth] [--seeds 5] [--reps 3]
        [--precision auto|fp32|bf16]

Throughput: the real model (3D ResNet-34, shortcut A, width 64, 2 classes, 3x16x112x112, as
configs/ava_fight.yaml) in eval mode, scored the way `fightwatch score` scores: prepared by the accel
plan (trainer.serve.runtime.scoring.prepare_model), batches through plan.input, forward under plan.autocast() and
torch.inference_mode(). Rows: fp32 (contiguous, as the plan runs it) and, where the CPU has native bf16,
bf16 (channels_last_3d, as the plan runs it), at batch 1 and 8 (--precision fp32|bf16: that one only); with --all-layouts also the layouts the plan does not use. Stride 16,
so each 16-frame segment scores 16 new frames: frames/s = segments/s x 16. Each row is the median of
--reps timed batches after one warm-up, on random input (the model's cost does not depend on pixels),
with torch.set_num_threads(N), N = the CPUs this process may run on. Cameras = frames/s / 25 (25 fps
cameras, every frame scored once); the 16-core figure scales the per-core rate linearly, an estimate
that ignores memory bandwidth, clock and SMT differences. An end-to-end row runs score_video on a
rendered 320x240 video with the plan `fightwatch score` picks here (--precision, default auto) at batch 8, decoding,
resizing and cropping included (median of --reps runs after one warm-up). A CPU share column says how
much of the N cores the process got while timed: on a shared machine other load can halve the figures.

Alert latency: for a trained model (--model; default runs/demo/model.pth from `bash scripts/demo.sh`),
synthetic timeline videos (data/synthetic.py: calm, fight, calm; ground truth beside each) are scored
with the demo's score and alert settings (configs/demo.yaml). Seed k also delays the fight by k/n of a
segment (whole frames), so the fight starts at n different phases of the 16-frame grid. Latency = the
alert's raised_s (the end of the window that tripped the policy, i.e. stream time when a live system
could know) minus the true fight start; an alert that does not overlap the fight is a false alarm, a
fight with none is missed. A live system adds the compute time of one segment at batch 1 (printed).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import add_precision_arg, bench_plan, compared_precisions  # scripts/bench/common.py

from trainer.accel import AccelConfig, AccelPlan, cpu_flags, resolve
from trainer.model import ModelConfig, ResNet3D
from trainer.serve.runtime.scoring import ScoreConfig, prepare_model, score_video

ROOT = Path(__file__).resolve().parents[2]

MODEL = ModelConfig(depth=34, shortcut="A", width=64, n_classes=2, sample_size=112, sample_duration=16,
                    pretrained=None, ft_begin="layer4", mean=(114.7748, 107.7354, 99.4750), std=(1.0, 1.0, 1.0),
                    value_scale=255.0)
CAMERA_FPS = 25
SOCKET_CORES = 16


def time_batches(fn, reps: int) -> tuple[float, float, float]:
    """(median, fastest) seconds of fn() over `reps` runs after one warm-up, and the CPU share it got.

    The fastest run is the least disturbed; the CPU share is this process's CPU time over wall time x
    threads during the timed runs: well under 1 means other processes took cores and the figures are low.
    """
    fn()
    times = []
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    share = (time.process_time() - cpu) / ((time.perf_counter() - wall) * torch.get_num_threads())
    return statistics.median(times), min(times), share


def throughput(model: ResNet3D, plan: AccelPlan, batch: int, reps: int) -> tuple[float, float, float]:
    """Segments per second of the prepared model at this batch size: (median, fastest batch), and the CPU share."""
    x = plan.input(torch.randn(batch, 3, MODEL.sample_duration, MODEL.sample_size, MODEL.sample_size))

    def forward():
        with torch.inference_mode(), plan.autocast():
            model(x).float()

    median, fastest, share = time_batches(forward, reps)
    return batch / median, batch / fastest, share


def bench_throughput(args, cores: int, chosen: AccelPlan) -> float:
    """Prints the table; returns the batch-1 seconds per segment of `chosen` (--precision's plan)."""
    flags = cpu_flags()
    torch.manual_seed(0)
    base = ResNet3D(MODEL).eval()
    plans = []
    for precision in compared_precisions(args.precision):
        plan = resolve(AccelConfig(precision, "torch"), flags, None)
        plans.append(plan)
        if args.all_layouts:
            plans.append(dataclasses.replace(plan, channels_last=not plan.channels_last,
                                             reason="(not the plan's layout)"))
    print(f"\nResNet-34 (shortcut A, width 64, 3x16x112x112), stride 16, {torch.get_num_threads()} threads, "
          f"median of {args.reps} timed batches (batch 1: at least 5) after 1 warm-up:")
    print(f"{'precision':9} {'layout':15} {'batch':>5} {'segments/s':>10} {'frames/s':>9} {'(fastest)':>9} "
          f"{'cameras':>8} {'cameras/16 cores (est.)':>24} {'CPU share':>9}")
    seconds_b1 = {}
    for plan in plans:
        model = prepare_model(copy.deepcopy(base), plan)
        for batch in args.batches:
            seg_s, fastest, share = throughput(model, plan, batch, args.reps if batch > 1 else max(args.reps, 5))
            fps = seg_s * MODEL.sample_duration
            layout = "channels_last" if plan.channels_last else "contiguous"
            print(f"{plan.precision:9} {layout:15} {batch:>5} {seg_s:>10.2f} {fps:>9.1f} "
                  f"{fastest * MODEL.sample_duration:>9.1f} {fps / CAMERA_FPS:>8.2f} "
                  f"{fps / cores * SOCKET_CORES / CAMERA_FPS:>24.1f} {share:>9.0%}", flush=True)
            if batch == 1:
                seconds_b1[(plan.precision, plan.channels_last)] = 1 / seg_s
        del model
    print(f"frames/s from the median batch ((fastest): the least disturbed one); CPU share: this process's CPU "
          f"time / (wall x threads) while timed, well under 100% = other load took cores; "
          f"cameras = frames/s / {CAMERA_FPS} measured on {cores} core(s) of this CPU; the 16-core column is "
          f"frames/s / {cores} x {SOCKET_CORES} / {CAMERA_FPS}, an ESTIMATE (linear per-core scaling)")
    return seconds_b1.get((chosen.precision, chosen.channels_last), float("nan"))


def bench_decoding(path: Path, reps: int) -> None:
    """The ways to decode and resize the video's frames to the model's short side, side by side: PyAV's codec
    threading (none, slice, frame: FFmpeg's AUTO) by swscale set-up (a context per frame, as PyAV's
    `frame.to_ndarray(width=...)` makes, or one per stream, data.clips.Resizer, the product's), one thread."""
    import av

    from data.clips import Resizer, resized

    def decode(threading: str, scaling) -> None:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = threading
            to_rgb = Resizer() if scaling == "one per stream" else None
            for frame in container.decode(stream):
                width, height = resized(frame.width, frame.height, MODEL.sample_size)
                if to_rgb is not None:
                    to_rgb(frame, width, height)
                elif scaling is not None:
                    frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")

    with av.open(str(path)) as container:
        frames = container.streams.video[0].frames
    print(f"\ndecoding the {frames}-frame 320x240 H.264 video to {MODEL.sample_size}-px RGB (ms per frame, median of "
          f"{reps}, interleaved; CPU: this process's CPU time, codec threads included):")
    print(f"{'codec threads':14s} {'swscale context':18s} {'wall':>6s} {'CPU':>6s}")
    rows = [(threading, scaling) for threading in ("NONE", "SLICE", "AUTO")
            for scaling in (None, "per frame", "one per stream")]
    walls: dict = {row: [] for row in rows}
    cpus: dict = {row: [] for row in rows}
    for _ in range(reps):
        for row in rows:
            wall, cpu = time.perf_counter(), time.process_time()
            decode(*row)
            walls[row].append(time.perf_counter() - wall)
            cpus[row].append(time.process_time() - cpu)
    for row in rows:
        print(f"{row[0].lower():14s} {row[1] or '(decode only)':18s} {statistics.median(walls[row]) / frames * 1e3:6.3f} "
              f"{statistics.median(cpus[row]) / frames * 1e3:6.3f}")


def bench_end_to_end(plan: AccelPlan, seconds: float, cores: int, reps: int) -> tuple[float, float]:
    """score_video's frames/s at batch 8, decoding in turn with the model and ahead of it (its default), and the
    model alone on the same windows (decoded beforehand), interleaved so all three see the same load; returns
    (ahead, model alone)."""
    from data.dataset import to_input
    from data.synthetic import render_timeline, write_video
    from trainer.serve.runtime.scoring import WindowBatches

    torch.manual_seed(0)
    model = prepare_model(ResNet3D(MODEL), plan)
    with tempfile.TemporaryDirectory() as tmp:
        frames, _ = render_timeline(7, calm_before=seconds / 3, fight=seconds / 3, calm_after=seconds / 3)
        path = Path(tmp) / "e2e.mp4"
        write_video(path, frames)
        bench_decoding(path, reps)
        batches = [[to_input(crop, MODEL.sample_size, MODEL.normalization) for _, _, crop in batch]
                   for batch in WindowBatches(path, MODEL.sample_size, MODEL.sample_duration, 16, 8)]

        def model_alone():
            for batch in batches:
                with torch.inference_mode(), plan.autocast():
                    model(plan.input(torch.stack(batch))).float()

        runs = {"the model alone on the decoded windows": lambda: model_alone(),
                "decoding in turn with the model": lambda: score_video(model, MODEL, path, ScoreConfig(16, 8),
                                                                       plan=plan, decode_ahead=0),
                "decoding ahead (2 batches), the default": lambda: score_video(model, MODEL, path, ScoreConfig(16, 8),
                                                                               plan=plan, decode_ahead=2)}
        rates: dict = {how: [] for how in runs}
        for _ in range(reps):  # interleaved: all see the same load
            for how, run in runs.items():
                median, fastest, share = time_batches(run, 1)
                rates[how].append((len(frames) / median, share))
    print(f"\nend to end ({plan.precision}{' channels_last' if plan.channels_last else ''}, batch 8, score_video on a "
          f"{len(frames)}-frame 320x240 H.264 video: decode + resize + crop + model; median of {reps}, interleaved):")
    fps = {}
    for how, runs_ in rates.items():
        fps[how] = statistics.median(r for r, _ in runs_)
        print(f"  {how:40s} {fps[how]:6.1f} frames/s = {fps[how] / CAMERA_FPS:5.2f} cameras on {cores} core(s); est. "
              f"{fps[how] / cores * SOCKET_CORES / CAMERA_FPS:5.1f} per 16-core socket; CPU share "
              f"{statistics.median(s for _, s in runs_):.0%}")
    ahead, alone = fps["decoding ahead (2 batches), the default"], fps["the model alone on the decoded windows"]
    return ahead, alone


def bench_latency(model_path: Path, seeds: list[int], segment_s: float, big_plan: AccelPlan) -> None:
    print(f"\nalert latency over {len(seeds)} synthetic timelines (seeds {seeds[0]}..{seeds[-1]}), model {model_path}:")
    if not model_path.is_file():
        print(f"  skipped: {model_path} not found; write it with `bash scripts/demo.sh` or pass --model")
        return
    from cluster.config import load_config  # imports MLflow: only when there is a model to measure
    from data.synthetic import write_timeline
    from trainer.checkpoint import load_model
    from trainer.serve.alerting.policy import detect_alerts
    from trainer.serve.runtime.scoring import windows

    demo = load_config(ROOT / "configs" / "demo.yaml")
    syn, policy, score_cfg = demo.data.synthetic, demo.alerts, demo.score
    model, model_cfg = load_model(model_path)
    plan = resolve(AccelConfig(demo.accel.precision, "torch"), cpu_flags(), None)
    model = prepare_model(model, plan)
    print(f"  timeline {syn.timeline_calm_before:g} s calm + {syn.timeline_fight:g} s fight + "
          f"{syn.timeline_calm_after:g} s calm at {syn.width}x{syn.height} {syn.fps} fps; {model_cfg.arch} width "
          f"{model_cfg.width}; stride {score_cfg.stride}; {policy}")
    latencies, missed, false_alarms = [], 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for k, seed in enumerate(seeds):
            path = Path(tmp) / f"timeline_{seed}.mp4"
            shift = k * model_cfg.sample_duration // len(seeds) / syn.fps  # the fight's phase on the segment grid
            write_timeline(path, seed, syn.timeline_calm_before + shift, syn.timeline_fight, syn.timeline_calm_after,
                           syn.width, syn.height, syn.fps)
            truth = json.loads(path.with_suffix(".json").read_text())
            fight_start, fight_end = truth["fight_intervals"][0]
            entry = score_video(model, model_cfg, path, score_cfg, plan=plan)
            alerts = detect_alerts(policy, windows(entry), camera=path.name)
            hits = [a for a in alerts if a.start_s <= fight_end and (a.end_s or a.raised_s) >= fight_start]
            false_alarms += len(alerts) - len(hits)
            if hits:
                latency = min(a.raised_s for a in hits) - fight_start
                latencies.append(latency)
                what = f"raised at {min(a.raised_s for a in hits):.2f} s: latency {latency:+.2f} s"
            else:
                missed += 1
                what = "MISSED"
            print(f"  seed {seed}: fight {fight_start:.2f}-{fight_end:.2f} s, {len(alerts)} alert(s), {what}")
    if latencies:
        print(f"  latency (stream time): median {statistics.median(latencies):.2f} s, worst {max(latencies):.2f} s "
              f"over {len(latencies)} detected; missed {missed}, false alarms {false_alarms}")
    else:
        print(f"  no fight detected; missed {missed}, false alarms {false_alarms}")
    print(f"  a live system adds the compute of the tripping segment: {segment_s:.2f} s for the real ResNet-34 at "
          f"batch 1 in {big_plan.precision} on this machine (and waits for a batch to fill above batch 1)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "runs" / "demo" / "model.pth",
                    help="trained model for the latency part (default: runs/demo/model.pth)")
    ap.add_argument("--seeds", type=int, default=5, help="timeline videos for the latency part (default: 5; 0 skips it)")
    ap.add_argument("--reps", type=int, default=3, help="timed batches per row (default: 3; 5 at batch 1)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--all-layouts", action="store_true", help="also time the layouts the plan does not use")
    ap.add_argument("--e2e-seconds", type=float, default=24.0,
                    help="length of the end-to-end video (default: 24, many batches to overlap)")
    ap.add_argument("--threads", type=int, help="torch threads (default: every core this process may use; fewer "
                                                "leaves cores to decoding, as a model that cannot fill a socket does)")
    add_precision_arg(ap)
    args = ap.parse_args()

    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(args.threads or cores)
    plan = bench_plan(args.precision)
    print("load average at start: %.2f %.2f %.2f (other processes' load lowers the figures below)" % os.getloadavg())

    t = time.perf_counter()
    segment_s = bench_throughput(args, cores, plan)
    e2e_fps, alone_fps = bench_end_to_end(plan, args.e2e_seconds, cores, args.reps)
    if args.seeds:
        bench_latency(args.model, list(range(101, 101 + args.seeds)), segment_s, plan)
    print(f"\n(total {time.perf_counter() - t:.0f} s; load average at end: %.2f %.2f %.2f)" % os.getloadavg())
    print(f"scoring end to end: {e2e_fps:.0f} frames/s = {e2e_fps / alone_fps:.0%} of the model alone on the same "
          f"windows ({alone_fps:.0f} frames/s, batch 8, {plan.precision}, {cores} core(s), side by side)")


if __name__ == "__main__":
    main()
