"""The cached fine-tune's step (ResNet-34's layer4+fc on trunk activations) with and without torch.compile.

    .venv/bin/python scripts/bench/bench_head_levers.py [--batch 32] [--steps 20] [--precision auto|fp32|bf16]
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 .venv/bin/python scripts/bench/bench_head_levers.py

With the trunk cache (trainer/trunk_cache.py) an epoch is only this step over cached activations
(256x2x7x7 per clip at 112 px), so this is where the remaining levers would act: inductor's compiled head,
and the allocator (run it again under LD_PRELOAD, as Intel's launcher does with jemalloc or tcmalloc).
Each row: median seconds per step of --steps after warmup (compilation excluded and reported apart), in the
trainer's precision for this CPU (--precision auto: bf16 autocast with native bf16, else fp32), SGD with momentum, BatchNorm in train mode. Measured (README, "Trunk cache"): no gain from compile on
2 cores, +7 % on 16 for a 40-67 s compile; jemalloc slower on both; so the trainer uses neither.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from common import add_precision_arg, bench_plan  # scripts/bench/common.py
from trainer.accel import AccelPlan, apply
from trainer.model import ModelConfig, ResNet3D, freeze_before, split, train_mode

MODEL = ModelConfig(depth=34, shortcut="A", width=64, n_classes=2, sample_size=112, sample_duration=16,
                    pretrained=None, ft_begin="layer4", mean=(114.8, 107.7, 99.5), std=(1.0, 1.0, 1.0),
                    value_scale=255.0)


def time_head(compiled: bool, batch: int, steps: int, plan: AccelPlan) -> tuple[float, float]:
    torch.manual_seed(0)
    model = ResNet3D(MODEL)
    optimizer = torch.optim.SGD(freeze_before(model, MODEL.ft_begin), lr=1e-3, momentum=0.9)
    model, optimizer = apply(plan, model, optimizer)
    _, head = split(model, MODEL.ft_begin)
    train_mode(model)
    forward = torch.compile(head) if compiled else head
    # cached activations are stored in bf16 when training in bf16 (trainer/trunk_cache.py)
    x = plan.input(torch.randn(batch, 256, 2, 7, 7).to(torch.bfloat16 if plan.precision == "bf16" else torch.float32))
    y = torch.arange(batch) % 2

    def step():
        with plan.autocast():
            loss = F.cross_entropy(forward(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    step()  # compiles when compiled
    first = time.perf_counter() - start
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32, help="clips per step (default: 32, configs/ava_fight.yaml's)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row (default: 20)")
    add_precision_arg(parser)
    args = parser.parse_args()
    plan = bench_plan(args.precision)
    allocator = os.environ.get("LD_PRELOAD", "") or "glibc malloc"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, allocator: {allocator}, batch {args.batch}")
    for name, compiled in (("eager head", False), ("torch.compile(head)", True)):
        sec, first = time_head(compiled, args.batch, args.steps, plan)
        print(f"  {name:<20} {sec * 1000:7.1f} ms/step  {args.batch / sec:7.1f} clips/s  (first step {first:.1f} s)")


if __name__ == "__main__":
    main()
