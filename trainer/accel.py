"""CPU acceleration: numeric precision, kernel library and memory format for training and scoring.

`plan_for(AccelConfig)` decides once per process what this CPU should run; `apply()` prepares the
model (and optimizer), and the loop wraps its forward in `plan.autocast()` and its batches in
`plan.input(x)`. `resolve()` is the whole decision, pure, so it is tested with recorded CPU flags:

precision (`/proc/cpuinfo` flags decide "auto")
    auto  -> bf16 when the CPU has avx512_bf16 or amx_bf16 (native bf16 dot products: Cooper Lake,
             Sapphire Rapids and later Xeons, AMD Zen 4 and later), else fp32. Without those
             instructions oneDNN emulates bf16 by converting to fp32 and back, which is slower than
             plain fp32 (e.g. the product's Xeon Gold 6128, Skylake: avx512f but no bf16).
    fp32  -> fp32.
    bf16  -> bf16, honoured even without native support; the reason, and a warning from plan_for,
             then say it is emulated and how much slower (emulated_bf16_slowdown).
    bf16 means torch.autocast("cpu", dtype=torch.bfloat16): conv/linear run in bf16, weights,
    optimizer state and the loss stay fp32, so no loss scaling is needed.

kernels (IPEX's own report of this CPU decides, `IpexSupport`: its kernel tier and bf16 prepacking)
    auto  -> ipex when `import intel_extension_for_pytorch` works and IPEX runs a kernel tier of its
             own here (AVX2_VNNI, AVX512_VNNI, AVX512_BF16, AMX*, AVX512_FP16: the tiers stock PyTorch
             does not dispatch, per IPEX's ISA dispatch table); else torch (oneDNN via ATen). On the
             AVX2 or AVX512 tiers IPEX only adds its import and prepacking to the same oneDNN.
    ipex  -> ipex; InputError with an install hint when the import fails. IPEX is discontinued
             after its 2.8 release and pins torch 2.8, so it exists only on such stacks.
    torch -> torch (IPEX is not even imported).
    With ipex, bf16 weights are prepacked only where IPEX says oneDNN can (avx_ne_convert or
    avx512bw/vl/dq); elsewhere ipex.optimize runs with weights_prepack=False, which it otherwise
    refuses with an AssertionError (seen on an AMD Zen 3, AVX2 only).

channels_last (channels_last_3d model and input, NDHWC)
    torch path -> only for bf16: oneDNN's fp32 Conv3d already runs a blocked layout internally, so NDHWC
                  only adds reorders, while its bf16 kernels want NDHWC and otherwise reorder every call
                  (scripts/bench/bench_train.py measures both layouts; README, "Training throughput").
    ipex path  -> on, as IPEX recommends (ipex.optimize prepacks weights for NDHWC).

`finetune_forward()` runs the frozen stages before `ft_begin` under torch.no_grad(), so no autograd
graph (and no saved activation) is kept for what is not trained.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from data.errors import InputError

log = logging.getLogger(__name__)

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# IPEX's ISA dispatch tiers that stock PyTorch has no kernels for (IPEX 2.8's docs, "ISA Dynamic Dispatching")
IPEX_OWN_TIERS = ("AVX2_VNNI", "AVX512_VNNI", "AVX512_BF16", "AMX", "AMX_FP16", "AVX512_FP16")
IPEX_HINT = ("pip install 'fightwatch[intel]' on a torch 2.8 stack; "
             "IPEX is discontinued after 2.8, use kernels: torch")


@dataclass(frozen=True)
class AccelConfig:
    precision: Literal["auto", "fp32", "bf16"]
    kernels: Literal["auto", "ipex", "torch"]

    def __post_init__(self):
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.kernels not in ("auto", "ipex", "torch"):
            raise ValueError(f"kernels must be auto, ipex or torch, got {self.kernels!r}")


@dataclass(frozen=True)
class IpexSupport:
    """What an importable IPEX reports of this CPU (its own dispatch, not /proc/cpuinfo)."""
    version: str
    isa_level: str  # the kernel tier IPEX dispatches to here, e.g. AVX2, AVX512, AVX512_BF16, AMX
    bf16_prepack: bool  # oneDNN can prepack bf16 weights: avx_ne_convert or avx512bw/vl/dq


@dataclass(frozen=True)
class AccelPlan:
    precision: str  # "fp32" | "bf16"
    kernels: str  # "ipex" | "torch"
    channels_last: bool
    reason: str
    weights_prepack: bool = True  # ipex.optimize's; only the ipex path reads it

    def params(self) -> dict:
        """The plan as MLflow parameters."""
        out = {"accel.precision": self.precision, "accel.kernels": self.kernels,
               "accel.channels_last": self.channels_last, "accel.torch_version": torch.__version__,
               "accel.reason": self.reason}
        if self.kernels == "ipex":
            import intel_extension_for_pytorch as ipex

            out["accel.ipex_version"] = ipex.__version__
            out["accel.weights_prepack"] = self.weights_prepack
        return out

    def autocast(self):
        """The context for forward passes: bf16 autocast, or nothing for fp32."""
        if self.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the memory format the model was prepared for."""
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x


def cpu_flags(cpuinfo_text: str | None = None) -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (or of the given text); empty when unreadable."""
    if cpuinfo_text is None:
        try:
            cpuinfo_text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):  # x86, arm64
            return set(value.split())
    return set()


def emulated_bf16_slowdown(flags: set[str]) -> str:
    """How much slower bf16 autocast runs than fp32 without native bf16: the ResNet-34 forward (batch 2,
    1 thread, torch 2.13) measured on a Sapphire Rapids with oneDNN held to an older ISA (ONEDNN_MAX_CPU_ISA)."""
    return "~3.5x" if "avx512f" in flags else "~50x"  # AVX512_CORE (Skylake-SP) / AVX2 (e.g. AMD Zen 3)


def resolve(cfg: AccelConfig, flags: set[str], ipex: IpexSupport | None) -> AccelPlan:
    """The decision table of the module docstring. Pure."""
    native = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if cfg.precision == "auto":
        precision = "bf16" if native else "fp32"
        why = (f"bf16: CPU has {native[0]}" if native
               else "fp32: no avx512_bf16/amx_bf16 (bf16 would be emulated)")
    elif cfg.precision == "bf16":
        precision = "bf16"
        why = (f"bf16: requested, CPU has {native[0]}" if native
               else f"bf16: requested, but the CPU has no avx512_bf16/amx_bf16, so bf16 is emulated, "
                    f"{emulated_bf16_slowdown(flags)} slower than fp32; use precision auto or fp32")
    else:
        precision, why = "fp32", "fp32: requested"

    if cfg.kernels == "ipex" and ipex is None:
        raise InputError(f"accel kernels: ipex, but intel_extension_for_pytorch cannot be imported: {IPEX_HINT}")
    if cfg.kernels == "torch":
        kernels, why = "torch", why + "; kernels torch: requested"
    elif ipex is None:
        kernels, why = "torch", why + "; kernels torch: IPEX not installed"
    elif cfg.kernels == "ipex":
        kernels, why = "ipex", why + f"; kernels ipex {ipex.version}: requested (IPEX's tier here: {ipex.isa_level})"
    elif ipex.isa_level in IPEX_OWN_TIERS:
        kernels, why = "ipex", why + f"; kernels ipex {ipex.version}: its {ipex.isa_level} kernels"
    else:
        kernels, why = "torch", why + (f"; kernels torch: IPEX {ipex.version} runs the {ipex.isa_level} tier here, "
                                       "which stock PyTorch's oneDNN runs too")
    weights_prepack = True
    if kernels == "ipex" and precision == "bf16" and not ipex.bf16_prepack:
        weights_prepack = False
        why += "; bf16 weights not prepacked: IPEX says this CPU lacks avx_ne_convert and avx512bw/vl/dq"

    if kernels == "ipex":
        channels_last, cl_why = True, "channels_last_3d: IPEX's recommended layout"
    elif precision == "bf16":
        channels_last, cl_why = True, "channels_last_3d: measured faster for bf16 Conv3d"
    else:
        channels_last, cl_why = False, "contiguous: channels_last_3d measured slower for fp32 Conv3d"
    return AccelPlan(precision, kernels, channels_last, f"{why}; {cl_why}", weights_prepack)


def ipex_support() -> IpexSupport | None:
    """What IPEX reports of this CPU, or None when it does not import. A mismatched IPEX exits the interpreter
    on import, hence SystemExit. IPEX ended at 2.8, so its private `_C` queries are frozen."""
    try:
        import intel_extension_for_pytorch as ipex
    except (Exception, SystemExit) as e:  # ImportError, or IPEX refusing this torch version
        if not isinstance(e, ModuleNotFoundError):
            log.warning("intel_extension_for_pytorch is installed but does not import: %s", e)
        return None
    return IpexSupport(ipex.__version__, ipex._C._get_current_isa_level(), bool(ipex._C.onednn_has_bf16_support()))


def plan_for(cfg: AccelConfig) -> AccelPlan:
    """resolve() for this machine; logs the plan and why."""
    flags = cpu_flags()
    plan = resolve(cfg, flags, ipex_support() if cfg.kernels != "torch" else None)
    log.info("accel: precision=%s kernels=%s channels_last=%s (%s)",
             plan.precision, plan.kernels, plan.channels_last, plan.reason)
    if plan.precision == "bf16" and not any(f in flags for f in NATIVE_BF16_FLAGS):
        log.warning("accel.precision bf16 on a CPU without avx512_bf16/amx_bf16: emulated, %s slower than fp32 "
                    "(set accel.precision to auto or fp32)", emulated_bf16_slowdown(flags))
    return plan


def apply(plan: AccelPlan, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None):
    """Prepare model (and optimizer) for the plan; returns (model, optimizer).

    Call it after loading weights and creating the optimizer, with the model in the mode it will run
    in (IPEX optimizes for training when given an optimizer, for inference otherwise).
    """
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    if plan.kernels == "ipex":
        import intel_extension_for_pytorch as ipex

        dtype = torch.bfloat16 if plan.precision == "bf16" else torch.float32
        if optimizer is None:
            model = ipex.optimize(model, dtype=dtype, weights_prepack=plan.weights_prepack)
        else:
            model, optimizer = ipex.optimize(model, optimizer=optimizer, dtype=dtype,
                                             weights_prepack=plan.weights_prepack)
    return model, optimizer


def finetune_forward(trunk: torch.nn.Module, head: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """head(trunk(x)) with the trunk (trainer.model.split) under torch.no_grad(); returns the logits.

    Raises ValueError when grad is enabled and the trunk has a parameter that requires grad: it would
    silently never be trained (freeze_before(model, ft_begin) first).
    """
    if torch.is_grad_enabled() and any(p.requires_grad for p in trunk.parameters()):
        raise ValueError("the frozen trunk has trainable parameters; call freeze_before(model, ft_begin) first")
    with torch.no_grad():
        x = trunk(x)
    return head(x)


class Fp32Conv(torch.nn.Module):
    """A convolution that runs in fp32 under bf16 autocast (its output fp32: what follows casts as it needs)."""

    def __init__(self, conv: torch.nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return self.conv(x.float())


def stem_in_fp32(model: torch.nn.Module, plan: AccelPlan, shape: tuple[int, ...]) -> tuple[torch.nn.Module, str]:
    """For bf16 inference: (the model with its stem, its first Conv3d, 3 input channels, in fp32 where that measures
    faster on this CPU, why). oneDNN's bf16 convolution kernels are slow with 3 input channels: on a 2-core
    avx512_bf16 Xeon the ResNet-34's conv1 took 51 ms a clip in bf16 and 33 in fp32, a quarter of the whole model,
    and the compiled model ran 1.2x as fast with it in fp32 (docs/scoring.md). Measured here, on a clip of `shape`
    (C, T, H, W), a few passes each way, because the balance differs by CPU (AMX's bf16 tiles differ again); the
    modules on the way to it are shallow-copied, the model given left as it is (its checkpoint's names too). fp32
    there is also closer to fp32 than bf16 is."""
    path, conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv3d)), ("", None))
    if plan.precision != "bf16" or plan.kernels == "ipex" or conv is None or conv.in_channels != 3:
        return model, ""
    stem = Fp32Conv(conv)
    x = plan.input(torch.randn(1, *shape))
    seconds = {"bf16": [], "fp32": []}
    with torch.inference_mode(), plan.autocast():
        for _ in range(4):
            for name, run in (("bf16", conv), ("fp32", stem)):
                started = time.perf_counter()
                run(x)
                seconds[name].append(time.perf_counter() - started)
    bf16, fp32 = (min(seconds[name][1:]) * 1000 for name in ("bf16", "fp32"))  # the first of each: warm-up
    if fp32 >= bf16:
        return model, f"conv1 in bf16: measured {bf16:.1f} ms a clip against fp32's {fp32:.1f}"
    return (_replaced(model, path.split("."), stem),
            f"conv1 in fp32: measured {fp32:.1f} ms a clip against bf16's {bf16:.1f} (3 input channels)")


def _replaced(module: torch.nn.Module, path: list[str], new: torch.nn.Module) -> torch.nn.Module:
    """`module` with the submodule at `path` replaced by `new`: copies along the path, shares the rest."""
    if not path:
        return new
    copied = copy.copy(module)
    copied._modules = {**module._modules, path[0]: _replaced(module._modules[path[0]], path[1:], new)}
    return copied
