"""Compiled inference: the model ahead-of-time compiled by AOTInductor, cached across runs.

Eager PyTorch pays Python and dispatch overhead on every one of a 3D ResNet's ~100 ops and runs them unfused;
compiled with freezing (weights as constants: batch norm folded into the convolutions, oneDNN's prepacked weights,
elementwise work fused into the kernels around it) the same stock torch runs the real ResNet-34 faster
(scripts/bench/bench_runtimes.py: this package 1.17-1.19x eager on a 2-core avx512_bf16 Xeon, 1.08x OpenVINO;
docs/scoring.md). `torch.compile` recompiles for each new batch size and, with freezing, cannot reuse its cache
(its FX graph cache is bypassed), so a restart pays most of the compile again. So the model is exported once
(torch.export, the precision's autocast inside the graph, the batch dimension dynamic: one artifact serves every
batch a camera fleet brings) and compiled by AOTInductor into a .pt2 package, kept under the compile cache
(FIGHTWATCH_COMPILE_CACHE, else ~/.cache/fightwatch/compiled) by a key of everything the code depends on: the
weights, the model config, the precision and memory format, torch's version and the CPU's flags. A later run
loads it in milliseconds. A compile that fails is logged and the model runs eager.

Which runtime (`choose_runtime`, pure): `eager`, `compile`, or `auto`: compile real-size models (COMPILE_MIN_PARAMS,
the ResNet-18/34 the product scores with: a compile of a minute, repaid within minutes of video and then cached),
keep small ones eager (the demo's and the tests' models: compiling costs them more than it can save). IPEX's
kernels stay eager (IPEX prepares the model itself). `int8` is never chosen for the user: it runs the program
`fightwatch quantize` made and measured (trainer/quantize.py), compiled and cached here the same way; `openvino`
is never chosen either (trainer/openvino_model.py, where OpenVINO is installed).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import torch

from trainer.accel import AccelPlan, cpu_flags

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "eager", "compile", "int8", "openvino")
COMPILE_MIN_PARAMS = 10_000_000  # ResNet-18/34 at width 64 (33M, 63M); the demo's ResNet-10 width 16 has 0.3M
MAX_BATCH = 1024  # the dynamic batch dimension's bound
CACHE_ENV = "FIGHTWATCH_COMPILE_CACHE"


def choose_runtime(requested: str, n_params: int, kernels: str) -> tuple[str, str]:
    """(runtime, why) for a model of `n_params` parameters. Pure."""
    if requested not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {requested!r}")
    if requested == "int8":
        return "int8", "int8: requested (the program fightwatch quantize made and measured)"
    if requested == "openvino":
        return "openvino", "openvino: requested (trainer/openvino_model.py)"
    if kernels == "ipex":
        return "eager", "eager: IPEX's kernels (ipex.optimize prepares the model itself)"
    if requested != "auto":
        return requested, f"{requested}: requested"
    if n_params >= COMPILE_MIN_PARAMS:
        return "compile", (f"compile: {n_params / 1e6:.0f}M parameters (auto compiles from "
                           f"{COMPILE_MIN_PARAMS / 1e6:.0f}M)")
    return "eager", (f"eager: {n_params / 1e6:.1f}M parameters, below auto's {COMPILE_MIN_PARAMS / 1e6:.0f}M "
                     "(a compile would cost more than it saves)")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fightwatch" / "compiled")


class _Forward(torch.nn.Module):
    """What is exported: the forward pass under the plan's precision, logits out in fp32."""

    def __init__(self, model: torch.nn.Module, plan: AccelPlan):
        super().__init__()
        self.model, self.bf16 = model, plan.precision == "bf16"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.model(x).float()
        return self.model(x)


class CompiledModel(torch.nn.Module):
    """The loaded package, called as the model is (`model(plan.input(x))`); logits in fp32. Inputs are put in the
    memory format it was compiled for (a no-op when they are)."""

    def __init__(self, runner, path: Path, memory_format: torch.memory_format):
        super().__init__()
        self.runner, self.path, self.memory_format = runner, path, memory_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner(x.contiguous(memory_format=self.memory_format))


def cache_key(model: torch.nn.Module, plan: AccelPlan, example: torch.Tensor) -> str:
    """A digest of everything the compiled code depends on."""
    digest = build_digest(f"{plan.precision}|{plan.channels_last}|{tuple(example.shape[1:])}|"
                          f"{type(model).__qualname__}")
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


def build_digest(what: str):
    """A sha256 begun with `what` and what every build depends on: torch's version and the CPU's flags."""
    return hashlib.sha256(f"{torch.__version__}|{' '.join(sorted(cpu_flags()))}|{what}".encode())


def compiled_model(model: torch.nn.Module, plan: AccelPlan, shape: tuple[int, ...],
                   folder: Path | None = None) -> torch.nn.Module:
    """`model` (eval, prepared for `plan`) compiled for inputs of `shape` (C, T, H, W) in batches of any size, from
    the cache when it holds it; the eager model when compiling fails."""
    example = plan.input(torch.zeros(2, *shape))  # 2: a batch of 1 would be specialised as a constant
    batch = {"x": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}}

    def export():
        return torch.export.export(_Forward(model, plan).eval(), (example,), dynamic_shapes=batch)
    memory_format = torch.channels_last_3d if plan.channels_last else torch.contiguous_format
    return cached_build(cache_key(model, plan, example), export, model, plan.precision, memory_format, folder)


def cached_build(key: str, export, fallback: torch.nn.Module, label: str, memory_format: torch.memory_format,
                 folder: Path | None) -> torch.nn.Module:
    """The package cached under `key`, compiled from `export()` when missing; `fallback` when that fails."""
    path = (folder or cache_dir()) / f"{key}.pt2"
    started = time.perf_counter()
    if not path.is_file():
        try:
            _compile(export, path)
        except Exception as e:  # an inductor or compiler failure: slower, not wrong
            log.warning("compiling the model failed, scoring eager: %s: %s", type(e).__name__, str(e)[:300])
            return fallback
        log.info("compiled the model (AOTInductor, freezing, %s) in %.1f s -> %s", label,
                 time.perf_counter() - started, path)
    loading = time.perf_counter()
    try:
        runner = torch._inductor.aoti_load_package(str(path))
    except Exception as e:  # a package damaged on disk: delete it to compile again
        log.warning("cannot load the compiled model %s, scoring eager: %s: %s", path, type(e).__name__, str(e)[:300])
        return fallback
    log.info("compiled model loaded from %s in %.2f s", path, time.perf_counter() - loading)
    return CompiledModel(runner, path, memory_format)


def _compile(export, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.pt2")
    try:
        with torch.no_grad(), torch._inductor.config.patch(freezing=True):
            torch._inductor.aoti_compile_and_package(export(), package_path=str(tmp))
        os.replace(tmp, path)  # whole or not at all: another run may be loading it
    finally:
        tmp.unlink(missing_ok=True)
