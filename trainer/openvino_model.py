"""OpenVINO as a runtime (`--runtime openvino`, where it is installed: `pip install fightwatch[openvino]`).

Intel points CPU users to OpenVINO (and to stock PyTorch) since IPEX was discontinued; on a Sapphire Rapids it ran
the real ResNet-34 in bf16 at 1.07-1.2x torch.compile (the issue's table), on a 2-core avx512_bf16 Xeon below it
(scripts/bench/bench_runtimes.py; docs/scoring.md). So it is an option, never chosen by `auto`.

The fp32 model is converted once (ov.convert_model, the batch dimension dynamic) and the IR kept in the compile
cache under the key trainer/compiled.py uses (weights, config, precision, torch and CPU) plus OpenVINO's version; the
CPU plugin compiles it with the plan's precision as its inference precision (bf16 where the CPU has it, else f32),
the LATENCY hint (a camera's batch is small) and torch's thread count, and caches its compiled blob in the same
folder, so a restart neither converts nor compiles again. A conversion or compile that fails is logged and the
model runs eager.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from data.errors import InputError
from trainer.accel import AccelPlan
from trainer.compiled import MAX_BATCH, build_digest, cache_dir, cache_key

log = logging.getLogger(__name__)


def check_installed() -> None:
    if importlib.util.find_spec("openvino") is None:
        raise InputError("--runtime openvino: OpenVINO is not installed here (pip install 'fightwatch[openvino]', "
                         "or pip install openvino)")


class OpenVinoModel(torch.nn.Module):
    """The compiled OpenVINO model, called as the model is; logits in fp32."""

    def __init__(self, compiled, path: Path):
        super().__init__()
        self.compiled, self.path = compiled, path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.compiled(x.contiguous().numpy())[0], dtype=np.float32))


def openvino_model(model: torch.nn.Module, plan: AccelPlan, shape: tuple[int, ...],
                   folder: Path | None = None) -> torch.nn.Module:
    """`model` (fp32, eval, unprepared) run by OpenVINO's CPU plugin for inputs of `shape` (C, T, H, W) in batches
    of any size, in the plan's precision; the model itself when converting or compiling fails."""
    import openvino as ov

    folder = (folder or cache_dir()) / "openvino"
    example = torch.zeros(2, *shape)
    digest = build_digest(f"openvino {ov.get_version()}")
    digest.update(cache_key(model, plan, example).encode())
    path = folder / f"{digest.hexdigest()[:24]}.xml"
    started = time.perf_counter()
    try:
        core = ov.Core()
        core.set_property({"CACHE_DIR": str(folder / "blobs")})
        if path.is_file():
            converted = core.read_model(str(path))
        else:
            with torch.no_grad():
                converted = ov.convert_model(model.eval(), example_input=example,
                                             input=[ov.PartialShape([ov.Dimension(1, MAX_BATCH), *shape])])
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.xml")
            ov.save_model(converted, str(tmp), compress_to_fp16=False)  # .xml and .bin
            os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
            os.replace(tmp, path)  # the .xml last: it present, the pair is whole
        compiled = core.compile_model(converted, "CPU", {
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "INFERENCE_PRECISION_HINT": "bf16" if plan.precision == "bf16" else "f32"})
    except Exception as e:  # a conversion or plugin failure: slower, not wrong
        log.warning("OpenVINO could not run the model, scoring eager: %s: %s", type(e).__name__, str(e)[:300])
        return model
    log.info("OpenVINO %s: the model ready in %.1f s (%s, %s)", ov.get_version(), time.perf_counter() - started,
             plan.precision, path)
    return OpenVinoModel(compiled, path)
