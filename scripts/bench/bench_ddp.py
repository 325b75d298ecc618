"""Scaling benchmark: 1 rank x R*T threads vs R ranks x T threads (gloo), and what the gradient all-reduce costs.

    .venv/bin/python scripts/bench/bench_ddp.py [--ranks 2] [--threads T] [--batch 8] [--steps 3]
        [--precision auto|fp32|bf16]

R ranks of T threads stand for one rank per NUMA node (or socket) of a node; each rank is pinned to
its own T cores, as cluster/placement.py pins them.
The real fine-tune step (3D ResNet-34, shortcut A, width 64, 3x16x112x112, layer4+fc trained, the
frozen trunk under no_grad, SGD with momentum, the trainer's precision plan: --precision auto is bf16 autocast
and channels_last_3d with native bf16, else fp32) at a global batch of --batch clips, in fresh processes:
  1 rank x R*T threads         one process, the whole batch
  R ranks x T threads          DDP over gloo on loopback, batch/R clips per rank, fp32 and bf16 gradients
  R ranks x T threads, no sync the same steps under DDP.no_sync(): compute alone
and, in the same R-rank group, a bare all_reduce of a buffer the size of the trained parameters, in
fp32 and bf16. Each row: median of --steps steps after one warmup. "exposed all-reduce" is the DDP step
minus the no-sync step: the part of the all-reduce that the backward pass did not hide.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from common import add_precision_arg, bench_plan  # scripts/bench/common.py
from trainer.accel import AccelPlan, apply, finetune_forward
from trainer.ddp import GradSync, wrap_head
from trainer.model import ModelConfig, ResNet3D, freeze_before, split, train_mode

MODEL = ModelConfig(depth=34, shortcut="A", width=64, n_classes=2, sample_size=112, sample_duration=16,
                    pretrained=None, ft_begin="layer4", mean=(114.8, 107.7, 99.5), std=(1.0, 1.0, 1.0),
                    value_scale=255.0)


def timed(step, steps: int) -> float:
    step()  # warmup: allocator, oneDNN primitive caches
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(rank: int, world_size: int, threads: int, port: int, batch: int, steps: int, plan: AccelPlan,
           results) -> None:
    torch.set_num_threads(threads)
    if world_size > 1:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[rank * threads:(rank + 1) * threads])
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    model = ResNet3D(MODEL)
    optimizer = torch.optim.SGD(freeze_before(model, MODEL.ft_begin), lr=1e-3, momentum=0.9)
    model, optimizer = apply(plan, model, optimizer)
    trunk, head = split(model, MODEL.ft_begin)
    train_mode(model)
    per_rank = batch // world_size
    x = plan.input(torch.randn(per_rank, 3, MODEL.sample_duration, MODEL.sample_size, MODEL.sample_size))
    y = torch.arange(per_rank) % 2
    trained = sum(p.numel() for p in head.parameters())
    out = {}

    def step(head, sync=True):
        with contextlib.nullcontext() if sync else head.no_sync():
            with plan.autocast():
                loss = F.cross_entropy(finetune_forward(trunk, head, x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.step()

    if world_size == 1:
        out["step"] = timed(lambda: step(head), steps)
    else:
        for grad_dtype in ("fp32", "bf16"):
            ddp = wrap_head(head, GradSync(25.0, grad_dtype))
            out[f"step {grad_dtype}"] = timed(lambda: step(ddp), steps)
        out["step no sync"] = timed(lambda: step(ddp, sync=False), steps)
        for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            buffer = torch.ones(trained, dtype=dtype)
            out[f"all_reduce {name}"] = timed(lambda: dist.all_reduce(buffer), steps)
        dist.destroy_process_group()
    out["trained_params"] = trained
    results.put((rank, out))


def run(world_size: int, threads: int, batch: int, steps: int, plan: AccelPlan) -> dict:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=worker, args=(r, world_size, threads, port, batch, steps, plan, results))
             for r in range(world_size)]
    for p in procs:
        p.start()
    outs = dict(results.get(timeout=3600) for _ in procs)
    for p in procs:
        p.join()
    # a step ends when the slowest rank's does
    return {k: max(o[k] for o in outs.values()) for k in outs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--ranks", type=int, default=2, help="ranks of the DDP rows (default: 2, as two NUMA nodes)")
    parser.add_argument("--threads", type=int, help="threads per rank (default: this process's cores / ranks)")
    parser.add_argument("--batch", type=int, default=8, help="global batch in clips (default: 8)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row (default: 3)")
    add_precision_arg(parser)
    args = parser.parse_args()
    threads = args.threads or max(1, cores // args.ranks)
    if args.ranks * threads > cores or args.batch % args.ranks:
        parser.error(f"--ranks x --threads must fit the {cores} cores and --ranks divide --batch")
    plan = bench_plan(args.precision)
    print(f"{cores} cores usable")
    print(f"ResNet-34 3x16x112x112, layer4+fc trained, global batch {args.batch}, median of {args.steps} steps\n")

    single = run(1, args.ranks * threads, args.batch, args.steps, plan)
    multi = run(args.ranks, threads, args.batch, args.steps, plan)
    fp32_bytes, bf16_bytes = single["trained_params"] * 4, single["trained_params"] * 2
    ranks = f"{args.ranks} ranks x {threads} thread(s)"
    rows = [(f"1 rank x {args.ranks * threads} threads", single["step"]),
            (f"{ranks}, fp32 gradients", multi["step fp32"]),
            (f"{ranks}, bf16 gradients", multi["step bf16"]),
            (f"{ranks}, no sync (compute only)", multi["step no sync"])]
    width = max(len(r[0]) for r in rows)
    print(f"{'configuration':<{width}}  {'s/step':>7}  {'clips/s':>7}")
    for name, sec in rows:
        print(f"{name:<{width}}  {sec:7.3f}  {args.batch / sec:7.2f}")
    print(f"\ntrained parameters: {single['trained_params']:,} -> all-reduced per step: "
          f"{fp32_bytes / 2**20:.1f} MiB fp32, {bf16_bytes / 2**20:.1f} MiB bf16")
    for dtype, size in (("fp32", fp32_bytes), ("bf16", bf16_bytes)):
        sec = multi[f"all_reduce {dtype}"]
        print(f"bare all_reduce {dtype}: {sec * 1000:.1f} ms ({size / sec / 2**30:.2f} GiB/s of buffer); "
              f"exposed in the DDP step: {(multi[f'step {dtype}'] - multi['step no sync']) * 1000:.0f} ms")
    exposed = (multi["step bf16"] - multi["step no sync"]) / multi["step bf16"]
    print(f"{ranks}: {single['step'] / multi['step bf16']:.2f}x one rank's step with bf16 gradients; "
          f"exposed communication {exposed:.0%} of the step")


if __name__ == "__main__":
    main()
