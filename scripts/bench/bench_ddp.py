"""Scaling benchmark: what the gradient all-reduce costs the fine-tune step, on loopback or over shaped links.

    .venv/bin/python scripts/bench/bench_ddp.py [--ranks 2] [--threads T] [--batch 8] [--steps 3]
        [--precision auto|fp32|bf16]
    .venv/bin/python scripts/bench/bench_ddp.py --link 1,10 [--batch 8] [--cached-batch 32] [--steps 5]
        [--buckets 5,100,200] [--accumulate 2,4,8] [--bucket-mb 25] [--target 0.1]       # as root

The real fine-tune step (3D ResNet-34, shortcut A, width 64, layer4+fc trained: 38.9 M parameters, SGD with
momentum, the trainer's precision plan: --precision auto is bf16 autocast and channels_last_3d with native bf16,
else fp32), DDP as trainer/ddp.py's wrap_head builds it, micro-batches accumulated as trainer/train.py does (no_sync
before the last), in fresh processes. Inputs per clip:
  uncached  3x16x112x112 through the frozen trunk (no_grad) and the head
  cached    the trunk's activations, 256x2x7x7 (bf16 when training in bf16), through the head alone (trunk cache)
Each row: median of --steps steps after one warmup, of the slowest rank. "compute" is the same step with every
micro-batch under DDP.no_sync(): no communication; "exposed" is the step minus that, the part of the all-reduce
the backward pass did not hide, and its share of the step. The bare all_reduce is of a buffer the size of the
trained parameters (148.5 MiB fp32, 74.3 MiB bf16).

Loopback (default): 1 rank x R*T threads against R ranks x T threads pinned to their own cores (one rank per NUMA
node or socket of a node, as cluster/placement.py pins them), gloo on 127.0.0.1, the uncached step.

--link G1,G2: 2 hosts, each a network namespace with one interface, eth0, on a switch namespace
(tests/support/netns.py), its egress shaped to G Gbit/s by tc tbf; one rank per host, pinned to its own cores, gloo
over eth0 (GLOO_SOCKET_IFNAME=eth0, MASTER_ADDR the first host's address); "eth0 MiB" is what rank 0's eth0 sent
per step.
Per link: the bare all_reduce in fp32 and bf16, the cached and the uncached step with fp32 gradients and with the
bf16 hook, and their compute alone. Then, on the last link, DDP's levers one at a time from the configs' setting
(bf16 hook, 25 MB buckets, gradients as bucket views, dynamic graph): fp32 gradients, the bucket size,
gradient_as_bucket_view off, static_graph (at one micro-batch per step only: torch 2.13 fails when a static graph's
first backward is under no_sync, trainer/ddp.py), and accumulation (--accumulate micro-batches per step: the all-reduce
is once per step, so its share falls as the clips per rank per step grow); and on every link the accumulation the
cached step needs to keep the exposed share <= --target. No added delay: where the kernel has sch_netem,
tests/support/netns.py's Link(delay_us=...) adds one; this bench shapes the rate only.
The last line: the exposed share of the cached step at the last link with the recommended setting.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import math
import os
import queue
import socket
import statistics
import time
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from common import add_precision_arg, bench_plan  # scripts/bench/common.py
from tests.support.netns import Host, Link, Network, namespace_support
from trainer.accel import AccelPlan, apply, finetune_forward
from trainer.ddp import GradSync, destroy_process_group, wrap_head
from trainer.model import ModelConfig, ResNet3D, freeze_before, split, train_mode

MODEL = ModelConfig(depth=34, shortcut="A", width=64, n_classes=2, sample_size=112, sample_duration=16,
                    pretrained=None, ft_begin="layer4", mean=(114.8, 107.7, 99.5), std=(1.0, 1.0, 1.0),
                    value_scale=255.0)
CACHED_CLIP = (256, 2, 7, 7)  # layer3's output for one 16x112x112 clip: what the trunk cache stores
CONFIGS_SYNC = GradSync(25.0, "bf16")  # configs/*.yaml's dist.bucket_mb and dist.grad_dtype
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class Case:
    """One timed row: the step on `inputs`, `accumulation` micro-batches per optimizer step, the gradients
    all-reduced as `sync`; with several ranks also the same step with every micro-batch under no_sync (compute)."""

    inputs: Literal["uncached", "cached"]
    sync: GradSync
    accumulation: int = 1


def describe(sync: GradSync) -> str:
    levers = [f"{sync.grad_dtype}{' hook' if sync.grad_dtype == 'bf16' else ''}", f"bucket {sync.bucket_mb:g} MB",
              *(["no bucket view"] if not sync.bucket_view else []), *(["static graph"] if sync.static_graph else [])]
    return ", ".join(levers)


def enter(host: Host) -> None:
    """Move this process into the host's network namespace, as `ip netns exec` would (os.setns is Python 3.12+).
    setns moves the calling thread: called first thing, so gloo's threads, started later, inherit it."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{host.name}") as namespace:
        if libc.setns(namespace.fileno(), CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), f"setns into {host.name}")
    os.environ["GLOO_SOCKET_IFNAME"] = host.interface


def sent_bytes(interface: str) -> int:
    """Bytes `interface` of this process's network namespace has sent (/proc/net/dev's transmit bytes)."""
    with open("/proc/self/net/dev") as f:
        for line in f:
            name, _, counters = line.partition(":")
            if name.strip() == interface:
                return int(counters.split()[8])
    raise OSError(f"no {interface} in /proc/self/net/dev")


def timed(steps: int, *variants) -> list[float]:
    """Median seconds of each variant over `steps` rounds after a warmup round (allocator, oneDNN's primitive
    caches, DDP's bucket rebuild and static graph recording), interleaved so the machine's drift hits all alike."""
    for variant in variants:
        variant()
    times = [[] for _ in variants]
    for _ in range(steps):
        for variant, seconds in zip(variants, times):
            start = time.perf_counter()
            variant()
            seconds.append(time.perf_counter() - start)
    return [statistics.median(seconds) for seconds in times]


def batch(inputs: str, clips: int, trunk: torch.nn.Module, plan: AccelPlan) -> tuple:
    """(the trunk to run, x, y) of one rank's micro-batch; the cached step's trunk is empty, as trainer/train.py's."""
    y = torch.arange(clips) % 2
    if inputs == "uncached":
        return trunk, plan.input(torch.randn(clips, 3, MODEL.sample_duration, MODEL.sample_size, MODEL.sample_size)), y
    cached_dtype = torch.bfloat16 if plan.precision == "bf16" else torch.float32  # as trainer/trunk_cache.py stores
    return torch.nn.Sequential(), plan.input(torch.randn(clips, *CACHED_CLIP).to(cached_dtype)), y


def worker(rank: int, world_size: int, threads: int, master: str, clips: dict[str, int], steps: int,
           plan: AccelPlan, cases: list[Case], all_reduce: bool, hosts: list[Host] | None, results) -> None:
    if hosts:
        enter(hosts[rank])
    torch.set_num_threads(threads)
    if world_size > 1:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[rank * threads:(rank + 1) * threads])
        dist.init_process_group("gloo", init_method=f"tcp://{master}", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    model = ResNet3D(MODEL)
    optimizer = torch.optim.SGD(freeze_before(model, MODEL.ft_begin), lr=1e-3, momentum=0.9)
    model, optimizer = apply(plan, model, optimizer)
    trunk, head = split(model, MODEL.ft_begin)
    train_mode(model)
    inputs = {kind: batch(kind, clips[kind], trunk, plan) for kind in {case.inputs for case in cases}}
    trained = sum(p.numel() for p in head.parameters())
    interface = hosts[rank].interface if hosts else None
    out = {"trained_params": trained}

    def measure(key, *variants):
        before = sent_bytes(interface) if interface else 0
        for name, seconds in zip(("step", "compute"), timed(steps, *variants)):
            out[(key, name)] = seconds
        if interface:
            out[(key, "sent")] = (sent_bytes(interface) - before) / (steps + 1)

    for case in cases:
        ddp = wrap_head(head, case.sync)
        trunk_of, x, y = inputs[case.inputs]

        def step(synced: bool):
            for micro in range(case.accumulation):
                last = micro == case.accumulation - 1
                with contextlib.nullcontext() if synced and last else ddp.no_sync():
                    with plan.autocast():
                        loss = F.cross_entropy(finetune_forward(trunk_of, ddp, x).float(), y)
                    (loss / case.accumulation).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        measure(case, lambda: step(True), *([lambda: step(False)] if world_size > 1 else []))
        del ddp
        gc.collect()  # the reducer's autograd hooks on the head go with it, before the next case's DDP
    if all_reduce:
        for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            buffer = torch.ones(trained, dtype=dtype)
            measure(f"all_reduce {name}", lambda: dist.all_reduce(buffer))
    if world_size > 1:
        destroy_process_group()
    results.put((rank, out))


def run(world_size: int, threads: int, clips: dict[str, int], steps: int, plan: AccelPlan, cases: list[Case],
        all_reduce: bool = False, hosts: list[Host] | None = None) -> dict:
    """The slowest rank's figures of each case (a step ends when the slowest rank's does); clips are per rank."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    if hosts:
        master = f"{hosts[0].address}:29500"  # a fresh namespace: the port is free
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            master = f"127.0.0.1:{s.getsockname()[1]}"
    procs = [ctx.Process(target=worker, args=(r, world_size, threads, master, clips, steps, plan, cases, all_reduce,
                                              hosts, results)) for r in range(world_size)]
    for p in procs:
        p.start()
    outs = {}
    while len(outs) < world_size:
        try:
            rank, out = results.get(timeout=5)
            outs[rank] = out
        except queue.Empty:
            if any(p.exitcode for p in procs):  # the others would wait for it in a collective until gloo's timeout
                for p in procs:
                    p.kill()
                raise SystemExit("a rank failed: its traceback is above")
    for p in procs:
        p.join()
    return {k: max(o[k] for o in outs.values()) for k in outs[0]}


def share(out: dict, case: Case) -> float:
    """The exposed communication's share of the step."""
    return (out[(case, "step")] - out[(case, "compute")]) / out[(case, "step")]


class Table:
    """Step rows on shaped links: each beside its link, its compute alone, the exposed part and its share."""

    def __init__(self, clips: dict[str, int]):
        self.clips = clips
        print(f"{'link':<10} {'input, clips/rank x micro-batches':<34} {'gradients':<40} {'s/step':>7} "
              f"{'compute':>7} {'exposed':>8} {'share':>6} {'eth0 MiB':>8}")

    def row(self, link: Link, out: dict, case: Case) -> None:
        inputs = f"{case.inputs}, {self.clips[case.inputs]} x {case.accumulation}"
        step, compute = out[(case, "step")], out[(case, "compute")]
        print(f"{f'{link.gbit:g} Gbit/s':<10} {inputs:<34} {describe(case.sync):<40} {step:7.3f} {compute:7.3f} "
              f"{(step - compute) * 1000:6.0f}ms {share(out, case):6.1%} {out[(case, 'sent')] / 2**20:8.1f}")


def over_links(args, plan: AccelPlan) -> None:
    if namespace_support():
        raise SystemExit(f"--link needs network namespaces: {namespace_support()}")
    links = [Link(gbit=float(g)) for g in args.link.split(",")]
    clips = {"uncached": args.batch // 2, "cached": args.cached_batch // 2}
    fp32 = replace(CONFIGS_SYNC, grad_dtype="fp32")
    recommended = replace(CONFIGS_SYNC, bucket_mb=args.bucket_mb)
    accumulations = sorted({1, *args.accumulate})
    print("2 hosts (network namespaces on one switch), 1 rank each pinned to its own core, 1 torch thread; this "
          f"machine's {len(os.sched_getaffinity(0))} cores also run both ends' network stacks. Links: tc tbf on each "
          f"host's eth0, no added delay. Median of {args.steps} steps, sync and no-sync interleaved.\n")
    table = Table(clips)
    with Network(2) as net:
        for link in links:
            net.shape(link)
            cases = [Case(inputs, sync) for inputs in ("cached", "uncached") for sync in (fp32, CONFIGS_SYNC)]
            out = run(2, 1, clips, args.steps, plan, cases, all_reduce=True, hosts=net.hosts)
            for name, size in (("fp32", 4), ("bf16", 2)):
                sec, sent = out[(f"all_reduce {name}", "step")], out[(f"all_reduce {name}", "sent")]
                print(f"{f'{link.gbit:g} Gbit/s':<10} bare all_reduce, {name}: "
                      f"{out['trained_params'] * size / 2**20:.1f} MiB in {sec * 1000:.0f} ms; eth0 sent "
                      f"{sent / 2**20:.1f} MiB = {sent * 8 / sec / 1e9:.2f} Gbit/s")
            for case in cases:
                table.row(link, out, case)
        net.shape(links[-1])
        print(f"\nDDP's levers, the cached step at {links[-1].gbit:g} Gbit/s, one at a time from the configs' "
              f"{describe(CONFIGS_SYNC)}:")
        cases = [Case("cached", sync) for sync in
                 (fp32, CONFIGS_SYNC, *(replace(CONFIGS_SYNC, bucket_mb=mb) for mb in args.buckets),
                  replace(CONFIGS_SYNC, bucket_view=False), replace(CONFIGS_SYNC, static_graph=True))]
        out = run(2, 1, clips, args.steps, plan, cases, hosts=net.hosts)
        for case in cases:
            table.row(links[-1], out, case)
        print(f"\nthe recommended setting ({describe(recommended)}), micro-batches of {clips['cached']} cached clips "
              "per rank accumulated per step:")
        smallest = {}
        for link in links:
            net.shape(link)
            cases = [Case("cached", recommended, a) for a in accumulations]
            out = run(2, 1, clips, args.steps, plan, cases, hosts=net.hosts)
            for case in cases:
                table.row(link, out, case)
            smallest[link] = next(((case, out) for case in cases if share(out, case) <= args.target), (cases[-1], out))
    for link, (case, out) in smallest.items():
        print(f"{link.gbit:g} Gbit/s: exposed share {share(out, case):.1%} at {case.accumulation} micro-batch(es) per "
              f"step = {case.accumulation * clips['cached']} clips per rank per step", end="")
        if share(out, case) <= args.target:
            print()
            continue
        # only the last micro-batch's backward hides any of the all-reduce: the exposed time stays as compute grows
        exposed = out[(case, "step")] - out[(case, "compute")]
        per_micro = out[(case, "compute")] / case.accumulation
        print(f"; <= {args.target:.0%} needs ~{math.ceil(exposed * (1 - args.target) / args.target / per_micro)} "
              f"(extrapolated: {exposed * 1000:.0f} ms exposed, {per_micro * 1000:.0f} ms compute per micro-batch)")
    case, out = smallest[links[-1]]
    print(f"exposed communication {share(out, case):.1%} of the cached step at {links[-1].gbit:g} Gbit/s "
          f"({describe(recommended)}, {case.accumulation} x {clips['cached']} clips per rank per step)")


def on_loopback(args, plan: AccelPlan) -> None:
    cores = len(os.sched_getaffinity(0))
    threads = args.threads or max(1, cores // args.ranks)
    if args.ranks * threads > cores or args.batch % args.ranks:
        raise SystemExit(f"--ranks x --threads must fit the {cores} cores and --ranks divide --batch")
    print(f"{cores} cores usable")
    print(f"ResNet-34 3x16x112x112, layer4+fc trained, global batch {args.batch}, median of {args.steps} steps\n")
    cases = [Case("uncached", replace(CONFIGS_SYNC, grad_dtype="fp32")), Case("uncached", CONFIGS_SYNC)]
    single = run(1, args.ranks * threads, {"uncached": args.batch}, args.steps, plan, cases[:1])
    multi = run(args.ranks, threads, {"uncached": args.batch // args.ranks}, args.steps, plan, cases,
                all_reduce=True)
    fp32_bytes, bf16_bytes = single["trained_params"] * 4, single["trained_params"] * 2
    ranks = f"{args.ranks} ranks x {threads} thread(s)"
    rows = [(f"1 rank x {args.ranks * threads} threads", single[(cases[0], "step")]),
            *((f"{ranks}, {case.sync.grad_dtype} gradients", multi[(case, "step")]) for case in cases),
            (f"{ranks}, no sync (compute only)", multi[(cases[0], "compute")])]
    width = max(len(r[0]) for r in rows)
    print(f"{'configuration':<{width}}  {'s/step':>7}  {'clips/s':>7}")
    for name, sec in rows:
        print(f"{name:<{width}}  {sec:7.3f}  {args.batch / sec:7.2f}")
    print(f"\ntrained parameters: {single['trained_params']:,} -> all-reduced per step: "
          f"{fp32_bytes / 2**20:.1f} MiB fp32, {bf16_bytes / 2**20:.1f} MiB bf16")
    for case, size in zip(cases, (fp32_bytes, bf16_bytes)):
        sec = multi[(f"all_reduce {case.sync.grad_dtype}", "step")]
        print(f"bare all_reduce {case.sync.grad_dtype}: {sec * 1000:.1f} ms ({size / sec / 2**30:.2f} GiB/s of "
              f"buffer); exposed in the DDP step: {(multi[(case, 'step')] - multi[(case, 'compute')]) * 1000:.0f} ms")
    print(f"{ranks}: {single[(cases[0], 'step')] / multi[(cases[1], 'step')]:.2f}x one rank's step with bf16 "
          f"gradients; exposed communication {share(multi, cases[1]):.0%} of the step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--link", help="comma-separated link rates in Gbit/s: 2 ranks on 2 namespace hosts over "
                                       "shaped links (needs root); default: ranks on loopback")
    parser.add_argument("--ranks", type=int, default=2, help="loopback: ranks of the DDP rows (default: 2)")
    parser.add_argument("--threads", type=int, help="loopback: threads per rank (default: cores / ranks)")
    parser.add_argument("--batch", type=int, default=8, help="global batch of the uncached step (default: 8)")
    parser.add_argument("--cached-batch", type=int, default=32,
                        help="--link: global batch of the cached step (default: 32, configs/ava_fight.yaml's)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row (default: 3)")
    parser.add_argument("--buckets", type=lambda s: [float(b) for b in s.split(",")], default=[5.0, 100.0, 200.0],
                        help="--link: bucket sizes in MB to try (default: 5,100,200)")
    parser.add_argument("--accumulate", type=lambda s: [int(a) for a in s.split(",")], default=[2, 4, 8],
                        help="--link: micro-batches per step to try (default: 2,4,8)")
    parser.add_argument("--bucket-mb", type=float, default=25.0, help="--link: the recommended setting's bucket")
    parser.add_argument("--target", type=float, default=0.10, help="--link: the exposed share to keep under")
    add_precision_arg(parser)
    args = parser.parse_args()
    plan = bench_plan(args.precision)
    if args.link:
        over_links(args, plan)
    else:
        on_loopback(args, plan)


if __name__ == "__main__":
    main()
