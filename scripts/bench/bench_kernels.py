"""IPEX against stock PyTorch on one machine: whether a cluster pinned to torch 2.8 gains from IPEX, and what
stock torch 2.13 gives instead.

    .venv/bin/python scripts/bench/bench_kernels.py [--venvs .venv .venv-intel] [--rounds 2] [--batch 8] [--steps 3]
        [--precision auto|fp32|bf16]

Each venv's python times the same rows in a child process: stock kernels (`accel.kernels: torch`) and, where IPEX
imports, IPEX (`accel.kernels: ipex`, through the plan's own ipex.optimize: bf16 prepacked only where IPEX says
it can), in fp32 and, where the CPU has native bf16, in bf16 (--precision: one of them). A row is the product's ResNet-34 at 3x16x112x112,
fine-tuned from layer4 (the frozen trunk under no_grad, SGD), and its forward alone (eval, no_grad). The venvs
take turns for --rounds rounds, as these machines are shared and noisy; a cell is the fastest of its rounds'
medians. `bash scripts/test.sh --intel` makes .venv-intel (torch 2.8 + IPEX 2.8).
The last line is the headline: IPEX against stock torch 2.8, and stock torch 2.13 against 2.8.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common import add_precision_arg, describe_cpu  # scripts/bench/common.py

ROOT = Path(__file__).resolve().parents[2]


def measure(precision: str, batch: int, steps: int) -> list[dict]:
    """This interpreter's rows (run in the child)."""
    import torch

    from bench_train import MODEL, fresh_model, time_steps, train_step  # scripts/bench/bench_train.py
    from common import compared_precisions  # scripts/bench/common.py
    from trainer.accel import AccelConfig, apply, finetune_forward, ipex_support, plan_for
    from trainer.model import split

    ipex = ipex_support()
    x = torch.randn(batch, 3, MODEL.sample_duration, MODEL.sample_size, MODEL.sample_size) * 50
    y = torch.arange(batch) % MODEL.n_classes
    rows = []
    for precision in compared_precisions(precision):
        for kernels in ["torch"] + (["ipex"] if ipex else []):
            plan = plan_for(AccelConfig(precision, kernels))
            model, optimizer = fresh_model()
            model, optimizer = apply(plan, model, optimizer)
            xin = plan.input(x)
            forward = lambda m, v: finetune_forward(*split(m, "layer4"), v)  # noqa: E731
            train, _ = time_steps(lambda: train_step(model, optimizer, xin, y, forward, plan.autocast), 1, steps)
            model, _ = fresh_model()
            model, _ = apply(plan, model.eval())

            def infer():
                with torch.no_grad(), plan.autocast():
                    model(xin)
            infer_s, _ = time_steps(infer, 1, steps)
            rows.append({"torch": torch.__version__.split("+")[0], "kernels": kernels, "precision": precision,
                         "prepack": plan.weights_prepack if kernels == "ipex" else None,
                         "ipex_tier": ipex.isa_level if ipex else None,
                         "train_clips_s": batch / train, "infer_clips_s": batch / infer_s})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venvs", nargs="+", type=Path, default=[ROOT / ".venv", ROOT / ".venv-intel"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    add_precision_arg(ap)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.precision, args.batch, args.steps)))
        return

    print(describe_cpu())
    pythons = [venv / "bin" / "python" for venv in args.venvs if (venv / "bin" / "python").exists()]
    for venv in args.venvs:
        if not (venv / "bin" / "python").exists():
            print(f"{venv}: no venv there, skipped (bash scripts/test.sh --intel makes .venv-intel)")
    best: dict[tuple, dict] = {}
    for round_ in range(1, args.rounds + 1):
        for python in pythons:
            out = subprocess.run([str(python), __file__, "--child", "--batch", str(args.batch), "--steps",
                                  str(args.steps), "--precision", args.precision], capture_output=True, text=True, cwd=ROOT,
                                 env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'scripts/bench'}"})
            if out.returncode != 0:
                sys.exit(f"{python}: failed:\n{out.stderr[-3000:]}")
            for row in json.loads(out.stdout.splitlines()[-1]):
                key = (row["torch"], row["kernels"], row["precision"])
                kept = best.setdefault(key, row)
                for metric in ("train_clips_s", "infer_clips_s"):
                    kept[metric] = max(kept[metric], row[metric])
            print(f"round {round_}: {python} done", flush=True)

    print(f"\nbatch {args.batch}, ResNet-34 3x16x112x112, fastest of {args.rounds} round(s)' medians of "
          f"{args.steps} steps")
    print(f"{'torch':7} {'kernels':7} {'precision':9} {'prepack':7} {'train clips/s':>13} {'infer clips/s':>13}")
    for (torch_version, kernels, precision), row in sorted(best.items()):
        prepack = "-" if row["prepack"] is None else str(row["prepack"]).lower()
        print(f"{torch_version:7} {kernels:7} {precision:9} {prepack:7} {row['train_clips_s']:13.2f} "
              f"{row['infer_clips_s']:13.2f}")
    print(headline(best))


def headline(best: dict[tuple, dict]) -> str:
    """IPEX / stock 2.8 and stock 2.13 / stock 2.8, train and infer, per precision present in both."""
    parts = []
    stock_28 = {k[2]: r for k, r in best.items() if k[0].startswith("2.8") and k[1] == "torch"}
    for (torch_version, kernels, precision), row in sorted(best.items()):
        base = stock_28.get(precision)
        if base is None or row is base:
            continue
        name = "ipex 2.8" if kernels == "ipex" else f"torch {torch_version}"
        parts.append(f"{name} / torch 2.8 {precision}: train {row['train_clips_s'] / base['train_clips_s']:.2f}x, "
                     f"infer {row['infer_clips_s'] / base['infer_clips_s']:.2f}x")
    return "; ".join(parts) or "no torch 2.8 venv to compare against"


if __name__ == "__main__":
    main()
