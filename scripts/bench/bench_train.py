"""Train-step and inference throughput of the product's ResNet-34 on this CPU, per precision and layout.

    .venv/bin/python scripts/bench/bench_train.py [--batch 8] [--steps 3] [--warmup 1] [--precision auto|fp32|bf16]

The real model (3D ResNet-34, shortcut A, width 64, 2 classes) at 3x16x112x112, fine-tuned from layer4:
layer4 and fc train, the frozen stages' BatchNorm stays in eval (train_mode), SGD with momentum. Rows:
  fp32 seed                 model(x): the frozen trunk only skips grads through requires_grad=False
  fp32 no_grad trunk        finetune_forward: stages before layer4 under torch.no_grad()
  fp32 ... + channels_last  the same with model and input in channels_last_3d
  bf16 no_grad trunk        under torch.autocast("cpu", bfloat16)
  bf16 ... + channels_last
  ipex bf16                 ipex.optimize(model, optimizer, bfloat16) when IPEX imports
and forward-only (torch.no_grad, eval) in fp32 and bf16, contiguous and channels_last. The bf16 rows run
where the CPU has native bf16 (--precision auto, the default; emulated bf16 is many times slower than fp32);
--precision fp32 or bf16 runs that precision's rows only.
Each row: median clips/s of --steps steps after --warmup. FLOPs come from torch.utils.flop_counter
(a multiply-add counts 2) run on meta tensors, for one forward and for one train step (forward plus the
backward of what is trained); GFLOP/s are set against a measured torch.mm 2048x2048 peak of the same dtype.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from common import add_precision_arg, bench_plan, compared_precisions, matmul_peak  # scripts/bench/common.py
from trainer.accel import AccelConfig, apply, finetune_forward, ipex_support, plan_for
from trainer.model import STAGES, ModelConfig, ResNet3D, freeze_before, split, stage_module, train_mode

FT_BEGIN = "layer4"
MODEL = ModelConfig(depth=34, shortcut="A", width=64, n_classes=2, sample_size=112, sample_duration=16,
                    pretrained=None, ft_begin=FT_BEGIN, mean=(114.7748, 107.7354, 99.4750), std=(1.0, 1.0, 1.0),
                    value_scale=255.0)


def fresh_model() -> tuple[ResNet3D, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = ResNet3D(MODEL)
    params = freeze_before(model, FT_BEGIN)
    train_mode(model)
    return model, torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-3)


def train_step(model, optimizer, x, y, forward, autocast) -> None:
    optimizer.zero_grad(set_to_none=True)
    with autocast():
        logits = forward(model, x)
    F.cross_entropy(logits.float(), y).backward()
    optimizer.step()


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def count_flops(batch: int) -> dict[str, float]:
    """FLOPs per clip on meta tensors (no compute): forward, per stage, and a train step of each kind."""
    meta_model, _ = fresh_model()
    meta_model = meta_model.to("meta")
    x = torch.empty(batch, 3, MODEL.sample_duration, MODEL.sample_size, MODEL.sample_size, device="meta")
    y = torch.zeros(batch, dtype=torch.long, device="meta")
    out = {}
    with torch.no_grad():
        h = x
        for stage in STAGES:
            with FlopCounterMode(display=False) as counter:
                h = stage_module(meta_model, stage)(h)
            out[stage] = counter.get_total_flops() / batch
    out["forward"] = sum(out[s] for s in STAGES)

    def step(forward):
        meta_model.zero_grad(set_to_none=True)
        logits = forward(meta_model, x)
        F.cross_entropy(logits, y).backward()

    out["train seed"] = flops(lambda: step(lambda m, v: m(v))) / batch
    out["train no_grad"] = flops(lambda: step(lambda m, v: finetune_forward(*split(m, FT_BEGIN), v))) / batch
    return out


def time_steps(step, warmup: int, steps: int) -> tuple[float, float]:
    """(median, fastest) seconds of a step; the fastest is the one least disturbed by other load."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    add_precision_arg(ap)
    args = ap.parse_args()

    bench_plan(args.precision)
    precisions = compared_precisions(args.precision)
    has_ipex = "bf16" in precisions and ipex_support() is not None
    peak = {p: matmul_peak(p) / 1e9 for p in dict.fromkeys(["fp32", *precisions])}  # fp32: the seed's row
    print("matmul peak (torch.mm 2048x2048): " + ", ".join(f"{p} {v:.1f} GFLOP/s" for p, v in peak.items()))

    fl = count_flops(args.batch)
    trunk = sum(fl[s] for s in ("conv1", "layer1", "layer2", "layer3"))
    trained = fl["layer4"] + fl["fc"]
    print(f"ResNet-34 3x{MODEL.sample_duration}x{MODEL.sample_size}x{MODEL.sample_size}: forward "
          f"{fl['forward'] / 1e9:.1f} GFLOP/clip; frozen trunk (conv1..layer3) {trunk / 1e9:.1f} "
          f"({100 * trunk / fl['forward']:.0f}%), layer4+fc {trained / 1e9:.1f} ({100 * trained / fl['forward']:.0f}%)")
    print(f"train step: {fl['train seed'] / 1e9:.1f} GFLOP/clip (seed model(x)), "
          f"{fl['train no_grad'] / 1e9:.1f} (no_grad trunk)")
    print(f"batch {args.batch}, median of {args.steps} steps after {args.warmup} warm-up\n")

    shape = (args.batch, 3, MODEL.sample_duration, MODEL.sample_size, MODEL.sample_size)
    x = torch.randn(shape) * 50
    y = torch.arange(args.batch) % MODEL.n_classes
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    fp32 = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    seed_fwd = lambda m, v: m(v)  # noqa: E731
    ft_fwd = lambda m, v: finetune_forward(*split(m, FT_BEGIN), v)  # noqa: E731
    cl = lambda v: v.contiguous(memory_format=torch.channels_last_3d)  # noqa: E731

    rows = []  # (name, precision, median and fastest seconds per batch, FLOPs per clip)

    def train_row(name, precision, forward, autocast, channels_last=False, ipex=False):
        model, optimizer = fresh_model()
        xin = x
        if channels_last:
            model, xin = model.to(memory_format=torch.channels_last_3d), cl(x)
        if ipex:  # the plan's own ipex.optimize call: bf16 prepacking only where IPEX says it can
            model, optimizer = apply(plan_for(AccelConfig("bf16", "ipex")), model, optimizer)
        sec, best = time_steps(lambda: train_step(model, optimizer, xin, y, forward, autocast),
                               args.warmup, args.steps)
        rows.append((name, precision, sec, best, fl["train seed" if forward is seed_fwd else "train no_grad"]))
        print(f"  {name}: {sec:.2f} s/step", flush=True)

    def forward_row(name, precision, autocast, channels_last=False):
        model, _ = fresh_model()
        model.eval()
        xin = x
        if channels_last:
            model, xin = model.to(memory_format=torch.channels_last_3d), cl(x)

        def run():
            with torch.no_grad(), autocast():
                model(xin)

        sec, best = time_steps(run, args.warmup, args.steps)
        rows.append((name, precision, sec, best, fl["forward"]))
        print(f"  {name}: {sec:.2f} s/batch", flush=True)

    print("timing:")
    autocasts = {"fp32": fp32, "bf16": bf16}
    train_row("train fp32 seed model(x)", "fp32", seed_fwd, fp32)  # the baseline, whatever --precision
    for p in precisions:
        train_row(f"train {p} no_grad trunk", p, ft_fwd, autocasts[p])
        train_row(f"train {p} no_grad trunk + channels_last", p, ft_fwd, autocasts[p], channels_last=True)
    if has_ipex:
        train_row("train ipex bf16 no_grad trunk + channels_last", "bf16", ft_fwd, bf16, channels_last=True, ipex=True)
    for p in precisions:
        forward_row(f"forward {p}", p, autocasts[p])
        forward_row(f"forward {p} + channels_last", p, autocasts[p], channels_last=True)

    width = max(len(r[0]) for r in rows)
    print(f"\n{'configuration':<{width}}  {'clips/s':>7}  {'(best)':>6}  {'GFLOP/clip':>10}  {'GFLOP/s':>7}  "
          f"{'% of mm peak':>12}")
    for name, precision, sec, best, per_clip in rows:
        rate = args.batch / sec
        gflops = rate * per_clip / 1e9
        print(f"{name:<{width}}  {rate:7.2f}  {args.batch / best:6.2f}  {per_clip / 1e9:10.1f}  {gflops:7.1f}  "
              f"{100 * gflops / peak[precision]:8.0f}% {precision}")
    print("clips/s: median step; (best): fastest step. GFLOP/s and % of peak use the median. oneDNN's Conv3d can run\n"
          "above torch.mm's 2048x2048 rate, so a row over 100% means that mm is not this CPU's ceiling.")
    if not has_ipex:
        print("ipex: not timed (not installed, or no bf16 rows)")
    seed_sec = rows[0][2]
    name, _, best_sec, _, _ = min((r for r in rows if r[0].startswith("train")), key=lambda r: r[2])
    print(f"fastest training step: {seed_sec / best_sec:.2f}x the seed's (fp32 model(x)): {name}")


if __name__ == "__main__":
    main()
