"""The cached fine-tune's step (ResNet-34's layer4+fc on trunk activations): its levers, side by side.

    .venv/bin/python scripts/bench/bench_head_levers.py [--batch 32] [--steps 20] [--precision auto|fp32|bf16]
    .venv/bin/python scripts/bench/bench_head_levers.py --compile     # also torch.compile(head) (minutes)
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 .venv/bin/python scripts/bench/bench_head_levers.py
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 .venv/bin/python ...   # an AVX2-only CPU's fp32 (Zen 3)

With the trunk cache (trainer/trunk_cache.py) an epoch is only this step over cached activations
(256x2x7x7 per clip at 112 px), so this is where the remaining levers act. Rows:
  3D convs        every conv of layer4 as a Conv3d, also on its single frame (T = 1 after the first strided conv)
  2D on 1 frame   trainer.model.Conv3d: those convs as the equal Conv2d (the model's default)
  torch.compile   (--compile) inductor's compiled head, with the 2D convs
Each row: median seconds per step of --steps after warmup, in the trainer's precision for this CPU (--precision
auto: bf16 autocast with native bf16, else fp32), SGD with momentum, BatchNorm in train mode; its FLOP rate
(torch's flop counter over the 2D head, forward and backward: the useful work) against a large matmul's in the same precision and threads, the
CPU's practical peak. Earlier: no gain from compile on 2 cores, +7 % on 16 for a 40-67 s compile; jemalloc slower
on both (README, "Trunk cache"). The last line is the headline.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import torch
import torch.nn.functional as F

from common import add_precision_arg, bench_plan, matmul_peak  # scripts/bench/common.py
from trainer.accel import AccelPlan, apply
from torch.utils.flop_counter import FlopCounterMode

from trainer.model import Conv3d, ModelConfig, ResNet3D, freeze_before, split, train_mode

MODEL = ModelConfig(depth=34, shortcut="A", width=64, n_classes=2, sample_size=112, sample_duration=16,
                    pretrained=None, ft_begin="layer4", mean=(114.8, 107.7, 99.5), std=(1.0, 1.0, 1.0),
                    value_scale=255.0)


def time_head(compiled: bool, batch: int, steps: int, plan: AccelPlan) -> tuple[float, float, float]:
    """(median seconds per step, the first step's seconds, FLOPs per step)."""
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
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), first, counter.get_total_flops()


class ConvsIn3D:
    """The head with trainer.model.Conv3d running as plain nn.Conv3d: the 3D kernels on single frames too."""

    def __enter__(self):
        self.forward, Conv3d.forward = Conv3d.forward, torch.nn.Conv3d.forward

    def __exit__(self, *exc_info):
        Conv3d.forward = self.forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32, help="clips per step (default: 32, configs/ava_fight.yaml's)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row (default: 20)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(head) (minutes to compile)")
    add_precision_arg(parser)
    args = parser.parse_args()
    plan = bench_plan(args.precision)
    allocator = os.environ.get("LD_PRELOAD", "") or "glibc malloc"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, allocator: {allocator}, batch {args.batch}")
    peak = matmul_peak(plan.precision)
    print(f"  matmul peak ({plan.precision}, 2048^3): {peak / 1e9:.0f} GFLOP/s")
    rows = {}
    for name, compiled, convs in (("3D convs", False, ConvsIn3D()), ("2D on 1 frame", False, None),
                                  *((("torch.compile", True, None),) if args.compile else ())):
        with convs or contextlib.nullcontext():
            rows[name] = time_head(compiled, args.batch, args.steps, plan)
    useful = rows["2D on 1 frame"][2]  # the 3D row also counts the products with the zero padding
    for name, (sec, first, _) in rows.items():
        print(f"  {name:<14} {sec * 1000:7.1f} ms/step  {args.batch / sec:7.1f} clips/s  {useful / sec / 1e9:6.0f} "
              f"useful GFLOP/s = {useful / sec / peak:4.0%} of the matmul peak  (first step {first:.1f} s)")
    print(f"2D convs on single frames: {rows['3D convs'][0] / rows['2D on 1 frame'][0]:.2f}x the 3D head step "
          f"({plan.precision}, batch {args.batch}, {torch.get_num_threads()} threads; "
          f"{useful / rows['2D on 1 frame'][0] / peak:.0%} of the matmul peak)")


if __name__ == "__main__":
    main()
