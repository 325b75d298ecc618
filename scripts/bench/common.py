"""What every benchmark shares: the CPU it ran on, and the precision plan it runs (auto unless --precision)."""

from __future__ import annotations

import argparse
import subprocess
import time

import torch

from trainer.accel import NATIVE_BF16_FLAGS, AccelConfig, AccelPlan, cpu_flags, plan_for

# The flags that decide this product's kernels: vector width, native bf16, AMX.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx_vnni", "avx512_vnni")


def lscpu() -> dict[str, str]:
    """`lscpu`'s "key: value" lines (empty where lscpu is missing)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def describe_cpu() -> str:
    """One line: the CPU's model, CPUs and sockets, the kernel-relevant flags it has, torch and its threads."""
    info, flags = lscpu(), cpu_flags()
    have = [f for f in KERNEL_FLAGS if f in flags] or ["none of " + "/".join(KERNEL_FLAGS)]
    return (f"CPU: {info.get('Model name', 'unknown')}, {info.get('CPU(s)', '?')} CPU(s), "
            f"{info.get('Socket(s)', '?')} socket(s); flags: {' '.join(have)}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def add_precision_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto (default): what training and scoring pick on this CPU, bf16 only with "
                             f"{' or '.join(NATIVE_BF16_FLAGS)}")


def compared_precisions(precision: str) -> list[str]:
    """The precisions a benchmark that compares them times: `auto` is fp32, plus bf16 where the CPU runs it
    natively (emulated bf16 is ~3.5-50x slower, trainer/accel.py); fp32 or bf16 is that one alone."""
    if precision != "auto":
        return [precision]
    return ["fp32", "bf16"] if any(f in cpu_flags() for f in NATIVE_BF16_FLAGS) else ["fp32"]


def bench_plan(precision: str) -> AccelPlan:
    """The plan for `--precision` with stock torch kernels; logged, and printed with the CPU line."""
    plan = plan_for(AccelConfig(precision, "torch"))
    print(describe_cpu())
    print(f"plan: {plan.precision}, channels_last_3d {plan.channels_last} ({plan.reason})")
    return plan


def matmul_peak(precision: str, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an n x n matmul in `precision` (fp32 or bf16) on torch's threads, its fastest of `repeats`: the
    practical peak of these cores, which a conv layer's achieved FLOP/s is measured against (the fastest, as other
    load only ever lowers it)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / min(times)
