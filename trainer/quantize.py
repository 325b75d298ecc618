"""int8 inference: post-training quantization of a trained model, calibrated on its run's own clips.

An option, never the default (`--runtime int8`): int8 rounds far coarser than bf16, so `fightwatch quantize`
(cluster/commands/quantize.py) measures what it costs on the validation videos before anything may use it, and
refuses past `quantize.max_accuracy_drop`.

PT2E, the path PyTorch documents for x86 CPUs (torchao's X86InductorQuantizer): the model exported with a dynamic
batch, observers inserted, the calibration clips run through, converted to int8 convolutions and linear layers
(per-channel weights, per-tensor activations, the rest in fp32). The result is saved as an exported program beside
the checkpoint (portable across CPUs); each machine compiles it through trainer/compiled.py (AOTInductor, freezing:
oneDNN's int8 kernels with the quantize steps fused) and caches the build. On a 2-core avx512_bf16 Xeon the real
ResNet-34 runs 1.6x the compiled bf16 model (scripts/bench/bench_runtimes.py).
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from data.errors import InputError
from data.files import file_sha256
from trainer.compiled import MAX_BATCH, build_digest, cached_build

QUANTIZED_MEMORY_FORMAT = torch.channels_last_3d  # oneDNN's int8 Conv3d kernels take channels-last input


@dataclass(frozen=True)
class QuantizeConfig:
    calibration_clips: int  # training clips (centre views) run through the observers to set activation ranges
    max_accuracy_drop: float  # video accuracy int8 may lose against the model's default path; more is refused

    def __post_init__(self):
        if self.calibration_clips < 1:
            raise ValueError("calibration_clips must be >= 1")
        if not 0 <= self.max_accuracy_drop <= 1:
            raise ValueError("max_accuracy_drop must be between 0 and 1")


def quantized_path(model_path: Path) -> Path:
    """Where `fightwatch quantize` puts the int8 program of a checkpoint: beside it."""
    return model_path.with_name(f"{model_path.stem}.int8.pt2")


def report_path(model_path: Path) -> Path:
    """The quantization's report (accuracy before and after, the checkpoint it came from): beside the checkpoint."""
    return model_path.with_name(f"{model_path.stem}.int8.json")


def verdict(before: float, after: float, bound: float) -> tuple[bool, str]:
    """(accepted, why): int8 is accepted when it loses at most `bound` of video accuracy. Pure."""
    drop = before - after
    accepted = drop <= bound + 1e-9  # accuracies are ratios of video counts: equal drops must compare equal
    return accepted, (f"video accuracy {before:.4f} -> {after:.4f} with int8 (a drop of {drop:.4f}; the bound, "
                      f"quantize.max_accuracy_drop, is {bound:.4f}): {'accepted' if accepted else 'refused'}")


def torchao_pt2e():
    """torchao's PT2E package: its quantizers, and the quantize ops an int8 program calls (loading one needs them
    registered). Its import warns of CUDA and Triton kernels a CPU never uses: those warnings are kept quiet."""
    logging.getLogger("torchao").setLevel(logging.ERROR)
    return importlib.import_module("torchao.quantization.pt2e")


def quantize(model: torch.nn.Module, shape: tuple[int, ...],
             calibration: Iterable[torch.Tensor]) -> torch.export.ExportedProgram:
    """`model` (fp32, eval) quantized to int8, its activation ranges observed on the `calibration` batches of
    inputs of `shape` (C, T, H, W); an exported program with a dynamic batch dimension."""
    torchao_pt2e()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)

    model = model.eval().to(memory_format=QUANTIZED_MEMORY_FORMAT)
    example = (torch.zeros(2, *shape).contiguous(memory_format=QUANTIZED_MEMORY_FORMAT),)
    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}}
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    with torch.no_grad():
        observed = prepare_pt2e(torch.export.export(model, example, dynamic_shapes=dynamic).module(), quantizer)
        for batch in calibration:
            observed(batch.contiguous(memory_format=QUANTIZED_MEMORY_FORMAT))
        return torch.export.export(convert_pt2e(observed), example, dynamic_shapes=dynamic)


def quantized_model(program_path: Path, folder: Path | None = None) -> torch.nn.Module:
    """The int8 program `quantize` made (saved at `program_path`), compiled and cached as trainer/compiled.py
    compiles the model; run by the interpreter when compiling fails."""
    torchao_pt2e()
    digest = build_digest("int8")
    digest.update(program_path.read_bytes())
    program = torch.export.load(program_path)
    return cached_build(digest.hexdigest()[:24], lambda: program, program.module(), "int8", QUANTIZED_MEMORY_FORMAT,
                        folder)


def checked_program(model_path: Path) -> Path:
    """The int8 program of the checkpoint at `model_path`, checked to be quantized from that very file; an
    InputError saying what to run when it is missing or stale."""
    program, report = quantized_path(model_path), report_path(model_path)
    if not program.is_file() or not report.is_file():
        raise InputError(f"{model_path}: no int8 model beside it ({program.name}); run `fightwatch quantize --model "
                         f"{model_path} ...` first (it measures the accuracy int8 costs)")
    try:
        recorded = json.loads(report.read_text())
        checkpoint, accepted = recorded["checkpoint_sha256"], recorded["accepted"]
    except (ValueError, KeyError) as e:
        raise InputError(f"{report}: not a quantization report ({e}); run `fightwatch quantize` again") from None
    if not accepted:
        raise InputError(f"{report}: int8 was refused for this model ({recorded.get('verdict')})")
    if checkpoint != file_sha256(model_path):
        raise InputError(f"{program}: quantized from another version of {model_path.name}; run `fightwatch quantize` "
                         "again")
    return program
