"""Does the trunk cache cost accuracy? Fine-tunes of a frozen trunk with trunk_cache views 8, 32 and off, per seed.

    .venv/bin/python scripts/bench/quality_trunk_cache.py [--videos-per-class 96] [--val-fraction 0.5] [--epochs 10] [--seeds 0 1 2]
        [--configs off 8 32] [--precision auto] [--dir runs/quality_trunk_cache] [--fresh]

Everything runs through the product's own jobs (cluster/commands/prepare.py's run_prepare, cluster/commands/train.py's
run_train) on configs/demo.yaml with overrides, so the trunk cache is exercised exactly as `fightwatch train`
would run it:

1. The trunk. The demo's small model (ResNet-10, shortcut A, width 16, 3x16x56x56) is trained whole
   (ft_begin conv1, the demo's AdamW, fp32) for --pretrain-epochs on synthetic videos of a DIFFERENT seed
   (--pretrain-seed) than the fine-tune's, and its model.pth becomes `model.pretrained`. A random trunk would
   make layer4's input nearly motion-blind and every configuration near chance, which compares nothing; a
   trunk trained on the same task but other videos is the stand-in for Kinetics weights. It is deliberately
   short, so the fine-tune has something left to learn. Reused from --dir when its model.pth is there.
2. The fine-tune data: synthetic videos of --data-seed, prepared once; the train/val split is fixed by it.
3. Per configuration (`train.trunk_cache=off` or `"train.trunk_cache={views: K}"`) and seed (`seed=S`: the
   head's init, the batch order and the augmentation draws): a fresh run dir holding the prepared manifest and
   a link to the clip store, then run_train with model.ft_begin=layer4 (conv1..layer3 frozen: the trunk),
   model.pretrained, train.epochs, accel.precision, and the demo's other settings (AdamW lr 0.003, cosine,
   batch 8). The last epoch's validation accuracy, F1, ROC AUC and loss are reported (not the best epoch's);
   with a small validation set the loss is the finer measure (one clip moves accuracy by 1 / n_val).

Times per run: `train` is trainer.train.train() (for cached runs including the cache build, `build` apart),
`run` is all of run_train (MLflow setup, final model logging). With few epochs the cache does not pay for
itself in time (K views of trunk passes against E epochs of them: it only wins when E >> K); this script is
about quality, scripts/bench/bench_trunk_cache.py about time. All runs share one MLflow database under --dir.

Sizes at the defaults (small, to run in ~5 minutes on 2 idle cores, ~10 shared): the trunk pre-trained on 48
videos/class of seed 1000 (72 train / 24 val clips, 5 epochs: val accuracy 0.79); fine-tune data 96 videos/class
of 2 s at 128x96, stored at short side 64, one clip per video, split half and half (96 train / 96 val clips);
10 epochs; 3 seeds x 3 configurations. One validation clip is 0.010 of accuracy. With 48 videos/class and
--val-fraction 0.25 (24 val clips, 0.042 each) the uncached runs ended at 0.958 on 5 of 5 seeds and the cached
ones 1-2 clips lower on 6 of 10, in bf16 and in fp32 alike; with 96 val clips that gap is gone (off 0.931,
views 8 0.927, views 32 0.941): it was which views each run drew, not the cache.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

import cluster.commands.train as train_job
import trainer.trunk_cache as trunk_cache
from cluster.commands.prepare import run_prepare
from cluster.commands.train import run_train
from cluster.config import load_config
from common import describe_cpu  # scripts/bench/common.py

CONFIG = "configs/demo.yaml"
PRETRAIN_VAL = 0.25  # the trunk's own split: fixed, so --val-fraction (the fine-tune's) leaves the trunk as it is
TIMES: dict[str, float] = {}


def timed(name: str, fn):
    """fn, adding its wall seconds to TIMES[name] (instrumentation of this process only)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name] = TIMES.get(name, 0.0) + time.perf_counter() - t
    return wrapper


train_job.train = timed("train", train_job.train)
trunk_cache.TrunkCache.build = timed("build", trunk_cache.TrunkCache.build)


def data_overrides(args, seed: int, videos_per_class: int, val_fraction: float) -> list[str]:
    return [f"seed={seed}", f"data.synthetic.videos_per_class={videos_per_class}",
            f"data.synthetic.seconds={args.seconds}", f"data.synthetic.width={args.width}",
            f"data.synthetic.height={args.height}", f"data.val_fraction={val_fraction}",
            f"tracking.tracking_uri=sqlite:///{(args.dir / 'mlflow.db').resolve()}"]


def pretrain(args) -> tuple[Path, dict, float]:
    run_dir = args.dir / "pretrain"
    model = run_dir / "model.pth"
    if model.is_file():
        print(f"trunk: reusing {model}", flush=True)
        return model, {}, 0.0
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_config(CONFIG, [f"run_dir={run_dir}",
                               *data_overrides(args, args.pretrain_seed, args.pretrain_videos, PRETRAIN_VAL),
                               f"train.epochs={args.pretrain_epochs}", "tracking.run_name=pretrain"])
    t = time.perf_counter()
    run_prepare(cfg)
    metrics, _ = run_train(cfg)
    return model, metrics, time.perf_counter() - t


def finetune(args, config: str, seed: int, trunk: Path, data: Path) -> dict:
    run_dir = args.dir / f"ft_{config}_seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # else run_train resumes from its checkpoints
    run_dir.mkdir(parents=True)
    shutil.copy(data / "manifest.jsonl", run_dir / "manifest.jsonl")
    (run_dir / "clips").symlink_to((data / "clips").resolve(), target_is_directory=True)
    cache = "train.trunk_cache=off" if config == "off" else f"train.trunk_cache={{views: {int(config)}}}"
    overrides = data_overrides(args, seed, args.videos_per_class, args.val_fraction)
    cfg = load_config(CONFIG, [f"run_dir={run_dir}", *overrides, cache, "model.ft_begin=layer4",
                               f"model.pretrained={trunk.resolve()}", f"train.epochs={args.epochs}", f"train.lr={args.lr}",
                               f"accel.precision={args.precision}", f"tracking.run_name=ft_{config}_seed{seed}"])
    TIMES.clear()
    t = time.perf_counter()
    metrics, _ = run_train(cfg)
    return {**metrics, "run_s": time.perf_counter() - t, "train_s": TIMES.get("train", 0.0),
            "build_s": TIMES.get("build", 0.0)}


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["off", "8", "32"], help="off and/or views K")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10, help="fine-tune epochs")
    ap.add_argument("--lr", type=float, default=0.003, help="fine-tune lr (the demo's AdamW)")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                    help="fine-tune accel.precision (auto, the default: bf16 with native bf16, else fp32)")
    ap.add_argument("--videos-per-class", type=int, default=96, help="fine-tune videos per class")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--pretrain-videos", type=int, default=48, help="trunk pre-training videos per class (3/4 train)")
    ap.add_argument("--pretrain-epochs", type=int, default=5,
                    help="5: val accuracy ~0.7 here; 8 gave 0.92 and every fine-tune 0.96 (a ceiling), 3 gave 0.56")
    ap.add_argument("--pretrain-seed", type=int, default=1000)
    ap.add_argument("--val-fraction", type=float, default=0.5, help="of the fine-tune's videos")
    ap.add_argument("--seconds", type=float, default=2.0, help="video length (one clip per video)")
    ap.add_argument("--width", type=int, default=128, help="rendered video width (stored at short side 64)")
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--dir", type=Path, default=Path("runs/quality_trunk_cache"))
    ap.add_argument("--fresh", action="store_true", help="remove --dir first (else its data and trunk are reused)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    for config in args.configs:
        if config != "off" and not (config.isdigit() and int(config) >= 1):
            ap.error(f"--configs: {config!r} is neither off nor a number of views")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    if args.fresh:
        shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(describe_cpu())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)

    t0 = time.perf_counter()
    trunk, pre_metrics, pre_s = pretrain(args)
    if pre_metrics:
        print(f"trunk: ResNet-10 w16 trained whole for {args.pretrain_epochs} epochs on {args.pretrain_videos} "
              f"videos/class of seed {args.pretrain_seed} in {pre_s:.0f} s: val accuracy "
              f"{pre_metrics['accuracy']:.3f}, F1 {pre_metrics['f1']:.3f}", flush=True)
    data = args.dir / "data"
    t = time.perf_counter()
    prepared = run_prepare(load_config(CONFIG, [f"run_dir={data}",
                                                *data_overrides(args, args.data_seed, args.videos_per_class,
                                                               args.val_fraction)]))
    subsets = [row["subset"] for row in prepared.rows]
    print(f"fine-tune data: {args.videos_per_class} videos/class of seed {args.data_seed} "
          f"({args.width}x{args.height}, {args.seconds} s), {subsets.count('training')} train / "
          f"{subsets.count('validation')} val clips, prepared in {time.perf_counter() - t:.0f} s\n", flush=True)

    results: dict[str, list[dict]] = {}
    for config in args.configs:
        for seed in args.seeds:
            r = finetune(args, config, seed, trunk, data)
            results.setdefault(config, []).append(r)
            build = f" (cache build {r['build_s']:.0f} s)" if r["build_s"] else ""
            print(f"  trunk_cache {config:>3} seed {seed}: val accuracy {r['accuracy']:.3f} F1 {r['f1']:.3f} "
                  f"AUC {r['roc_auc']:.3f} loss {r['loss']:.3f}; train {r['train_s']:.0f} s{build}, "
                  f"run {r['run_s']:.0f} s", flush=True)

    print(f"\nfine-tune from layer4 of the pre-trained trunk, {args.epochs} epochs, {args.precision}, "
          f"seeds {' '.join(map(str, args.seeds))} (mean ± sample std over seeds; last-epoch validation):")
    head = (f"  {'trunk_cache':<11}  {'val accuracy':>13}  {'val F1':>13}  {'val ROC AUC':>13}  {'val loss':>13}  "
            f"{'train s':>15}  {'run s':>7}")
    print(head)
    for config, rs in results.items():
        name = "off" if config == "off" else f"views {config}"
        train_s = statistics.fmean(r["train_s"] for r in rs)
        build_s = statistics.fmean(r["build_s"] for r in rs)
        timing = f"{train_s:6.0f}" + (f" (b {build_s:4.0f})" if build_s else " " * 9)
        print(f"  {name:<11}  {spread([r['accuracy'] for r in rs]):>13}  {spread([r['f1'] for r in rs]):>13}  "
              f"{spread([r['roc_auc'] for r in rs]):>13}  {spread([r['loss'] for r in rs]):>13}  {timing:>15}  "
              f"{statistics.fmean(r['run_s'] for r in rs):7.0f}")
    print("train s: mean wall seconds of train() per run (b: of it the trunk cache build); run s: all of run_train. "
          f"Total {time.perf_counter() - t0:.0f} s.")
    accuracy = {config: statistics.fmean(r["accuracy"] for r in rs) for config, rs in results.items()}
    print("mean val accuracy, cached - uncached: " + ", ".join(
        f"views {config} {accuracy[config] - accuracy['off']:+.3f}" for config in accuracy if config != "off")
          if "off" in accuracy and len(accuracy) > 1 else
          "mean val accuracy: " + ", ".join(f"{config} {value:.3f}" for config, value in accuracy.items()))


if __name__ == "__main__":
    main()
