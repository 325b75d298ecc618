"""Inference runtimes side by side on the real model: fightwatch's chosen path against the other ways to run it.

The real ResNet-34 (basic blocks, shortcut A) at 3x16x112x112, the same random weights everywhere, torch's
threads (all cores unless --threads). Contenders, in the precision fightwatch picks on this CPU (bf16 where it has
native bf16, else fp32; --precision to force):
  fightwatch       prepare_model with --runtime auto (trainer/compiled.py: AOTInductor, freezing, cached)
  fightwatch int8  --runtime int8 (trainer/quantize.py), calibrated here on random clips: its agreement is not
                   what a trained model's calibration gives (`fightwatch quantize` measures that); int8 is never
                   the default, so it is reported, held only against another int8 contender
  eager            prepare_model with --runtime eager (fightwatch's path before compiling)
  torch.compile    torch.compile(freezing=True) under the same autocast, warmed per batch size
  onnxruntime      ONNX Runtime's CPU provider on the model exported to ONNX (fp32 only; when it imports)
  fightwatch openvino  --runtime openvino (trainer/openvino_model.py; when OpenVINO imports): never the default,
                   reported beside the others
  openvino         OpenVINO's CPU plugin on the model converted from torch (its default precision: bf16 where the
                   CPU has it; the LATENCY hint: one synchronous request at a time, as every contender here runs;
                   THROUGHPUT splits the cores into streams that only parallel requests fill; when it imports)
Calls are interleaved one by one: each round, at batch 1 and then 8, every contender runs one forward pass in
turn, --repeats times, in a new random order each time (a noisy neighbour, a cold cache or the threads another
runtime leaves spinning then hit all alike); frames/s are batch x 16 frames over the median call (the median: these
machines are shared, a slow call is the neighbour's). ONNX Runtime's threads are told not to spin between runs.
Agreement is against eager fp32 on --clips clips: argmax agreement and the largest fight-probability difference.
fightwatch's default is held against the best contender of its precision class (bf16 against bf16, fp32 against
fp32; fightwatch's own options are not contenders); the last line is
`fightwatch / best contender: R (worst of batch 1 and 8; best: NAME)`.

    PYTHONPATH=.:scripts/bench .venv/bin/python scripts/bench/bench_runtimes.py --rounds 3
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import bench_plan

from trainer.compiled import CACHE_ENV
from trainer.model import ModelConfig, ResNet3D
from trainer.quantize import quantize, quantized_model
from trainer.serve.runtime.scoring import prepare_model

CFG = ModelConfig(depth=34, shortcut="A", width=64, n_classes=2, sample_size=112, sample_duration=16, pretrained=None,
                  ft_begin="layer4", mean=None, std=None, value_scale=None)
SHAPE = (3, 16, 112, 112)
BATCHES = (1, 8)


def timed(fn) -> tuple[object, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def torch_compiled(model, plan):
    import torch._inductor.config as inductor

    inductor.freezing = True
    compiled = torch.compile(model)

    def run(x):
        with torch.inference_mode(), plan.autocast():
            return compiled(plan.input(x)).float()
    return run


def onnx_runtime(model, folder: Path):
    import onnxruntime

    path = folder / "resnet34.onnx"
    torch.onnx.export(model, (torch.zeros(2, *SHAPE),), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # spinning slows whoever runs next
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


def openvino(model):
    import openvino as ov

    converted = ov.convert_model(model, example_input=torch.zeros(2, *SHAPE))
    core = ov.Core()
    compiled = core.compile_model(converted, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    return lambda x: torch.from_numpy(compiled(x.numpy())[0])


def fightwatch_int8(model, folder: Path):
    calibration = (torch.randn(8, *SHAPE) * 60 for _ in range(4))
    torch.export.save(quantize(model, SHAPE, calibration), folder / "int8.pt2")
    return quantized_model(folder / "int8.pt2")


def contenders(model: ResNet3D, plan, folder: Path) -> dict[str, tuple[callable, str, float]]:
    """name -> (run(x) -> logits, precision, seconds to build it, first calls at each batch size included)."""
    def eager_runner(runtime):
        prepared = prepare_model(model_copy(model), plan, CFG, runtime)

        def run(x):
            with torch.inference_mode(), plan.autocast():
                return prepared(plan.input(x)).float()
        return run

    builders = {"fightwatch": (lambda: eager_runner("auto"), plan.precision),
                "fightwatch int8": (lambda: fightwatch_int8(model_copy(model), folder), "int8"),
                "eager": (lambda: eager_runner("eager"), plan.precision),
                "torch.compile": (lambda: torch_compiled(model_copy(model).eval(), plan), plan.precision)}
    if importlib.util.find_spec("onnxruntime"):
        builders["onnxruntime"] = (lambda: onnx_runtime(model_copy(model).eval(), folder), "fp32")
    if importlib.util.find_spec("openvino"):
        builders["fightwatch openvino"] = (lambda: eager_runner("openvino"), plan.precision)
        builders["openvino"] = (lambda: openvino(model_copy(model).eval()), plan.precision)
    out = {}
    for name, (build, precision) in builders.items():
        def build_and_warm():
            run = build()
            for batch in BATCHES:
                run(torch.zeros(batch, *SHAPE))
            return run
        try:
            run, seconds = timed(build_and_warm)
        except Exception as e:  # an optional runtime that does not take this model here: said, not fatal
            print(f"  {name}: skipped, {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
            continue
        print(f"  {name}: built and warmed in {seconds:.1f} s", flush=True)
        out[name] = (run, precision, seconds)
    return out


def model_copy(model: ResNet3D) -> ResNet3D:
    copy = ResNet3D(CFG)
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=8, help="forward passes per contender, batch and round")
    parser.add_argument("--clips", type=int, default=32, help="clips the agreement is measured on")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = bench_plan(args.precision)
    torch.manual_seed(0)
    model = ResNet3D(CFG).eval()
    clips = torch.randn(args.clips, *SHAPE) * 60  # the scale of mean-subtracted 0-255 pixels
    with torch.inference_mode():
        features = torch.cat([model.features(clips[i:i + 8]) for i in range(0, len(clips), 8)])
        # random weights saturate the softmax; the fc set so the logit gap spreads as a trained model's (mean 0,
        # std 2 over the clips): the agreement columns then tell a precision's rounding from nothing
        gap = features @ (model.fc.weight[1] - model.fc.weight[0])
        model.fc.weight.mul_(2 / gap.std())
        model.fc.bias.copy_(torch.tensor([0.0, -2 * (gap.mean() / gap.std()).item()]))
        reference = torch.cat([model(clips[i:i + 8]) for i in range(0, len(clips), 8)])
    with tempfile.TemporaryDirectory() as folder:
        os.environ.setdefault(CACHE_ENV, str(Path(folder) / "compiled"))  # a cold compile, timed, unless one is set
        runs = contenders(model, plan, Path(folder))
        calls: dict[tuple[str, int], list[float]] = {}
        names = list(runs)
        for round_ in range(args.rounds):
            for batch in BATCHES:
                x = torch.randn(batch, *SHAPE) * 60
                for repeat in range(args.repeats):
                    for name in random.Random(f"{round_} {batch} {repeat}").sample(names, len(names)):
                        _, seconds = timed(lambda: runs[name][0](x))
                        calls.setdefault((name, batch), []).append(seconds)
            print(f"  round {round_ + 1}/{args.rounds} done", flush=True)
        rates = {(name, batch): batch * SHAPE[1] / statistics.median(seconds)
                 for (name, batch), seconds in calls.items()}
        print("\n| runtime | precision | frames/s batch 1 | frames/s batch 8 | build s | argmax agreement | "
              "max |fight prob diff| |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for name, (run, precision, seconds) in runs.items():
            logits = torch.cat([run(clips[i:i + 8]) for i in range(0, len(clips), 8)])
            agree = (logits.argmax(1) == reference.argmax(1)).float().mean().item()
            diff = (torch.softmax(logits.float(), 1)[:, 1] - torch.softmax(reference, 1)[:, 1]).abs().max().item()
            b1, b8 = (rates[(name, b)] for b in BATCHES)
            print(f"| {name} | {precision} | {b1:.0f} | {b8:.0f} | {seconds:.1f} | {agree:.1%} | {diff:.4f} |")
    ours = runs["fightwatch"][1]
    rivals = [name for name, (_, precision, _) in runs.items()
              if not name.startswith("fightwatch") and precision == ours]  # fightwatch's options are not rivals
    best = {b: max(rivals, key=lambda n: rates[(n, b)]) for b in BATCHES}
    ratios = {b: rates[("fightwatch", b)] / rates[(best[b], b)] for b in BATCHES}
    worst = min(BATCHES, key=ratios.get)
    print(f"\nfightwatch / best contender: {ratios[worst]:.2f} (worst of batch 1 and 8: batch 1 {ratios[1]:.2f} "
          f"against {best[1]}, batch 8 {ratios[8]:.2f} against {best[8]}; best: {best[worst]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
