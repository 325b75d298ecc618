"""Compiled inference (trainer/compiled.py): which models compile, agreement with eager fp32 on the real input
shapes in bf16 (where the CPU has it natively) and fp32, every batch size from one artifact, the cache a restart
loads instead of compiling, and eager when compiling fails. Compiles are real AOTInductor builds, hence slow."""

import logging

import pytest
import torch

from tests.support.models import AGREEMENT_PLANS, FP32, MODEL_CFG, assert_agrees_with_eager_fp32
from trainer.compiled import COMPILE_MIN_PARAMS, CompiledModel, choose_runtime, compiled_model
from trainer.model import ResNet3D


def test_auto_compiles_real_size_models_and_keeps_small_ones_and_ipex_eager():
    assert choose_runtime("auto", 63_000_000, "torch")[0] == "compile"  # ResNet-34
    assert choose_runtime("auto", COMPILE_MIN_PARAMS - 1, "torch")[0] == "eager"
    assert choose_runtime("auto", 300_000, "torch")[1].startswith("eager: 0.3M parameters, below auto's 10M")
    assert choose_runtime("compile", 300_000, "torch") == ("compile", "compile: requested")
    assert choose_runtime("eager", 63_000_000, "torch")[0] == "eager"
    assert choose_runtime("compile", 63_000_000, "ipex")[0] == "eager"
    with pytest.raises(ValueError, match="runtime must be one of auto, eager, compile"):
        choose_runtime("tensorrt", 1, "torch")


@pytest.mark.slow  # an AOTInductor build of a ResNet-18 at 16x112x112, per precision
@pytest.mark.parametrize("plan", AGREEMENT_PLANS)
def test_compiled_agrees_with_eager_fp32_on_the_real_shapes(plan, tmp_path, monkeypatch):
    """As `prepare_model` makes it (the stem in fp32 where that measures faster): see assert_agrees_with_eager_fp32."""
    monkeypatch.setenv("FIGHTWATCH_COMPILE_CACHE", str(tmp_path))
    assert isinstance(assert_agrees_with_eager_fp32("compile", plan), CompiledModel)


@pytest.mark.slow  # an AOTInductor build
def test_one_artifact_serves_every_batch_and_a_restart_loads_it(tmp_path, caplog):
    torch.manual_seed(0)
    model = ResNet3D(MODEL_CFG).eval()
    shape = (3, MODEL_CFG.sample_duration, MODEL_CFG.sample_size, MODEL_CFG.sample_size)
    with caplog.at_level(logging.INFO, logger="trainer.compiled"):
        compiled = compiled_model(model, FP32, shape, tmp_path)
    assert "compiled the model (AOTInductor, freezing, fp32)" in caplog.text and len(list(tmp_path.glob("*.pt2"))) == 1
    for batch in (1, 2, 3, 7, 8, 17):
        x = torch.randn(batch, *shape) * 60
        with torch.inference_mode():
            assert torch.allclose(compiled(x), model(x), atol=1e-4), batch
    caplog.clear()
    restarted = ResNet3D(MODEL_CFG).eval()  # as a restart loads the same checkpoint
    restarted.load_state_dict(model.state_dict())
    with caplog.at_level(logging.INFO, logger="trainer.compiled"):
        again = compiled_model(restarted, FP32, shape, tmp_path)
    assert "compiled model loaded from" in caplog.text and "compiled the model" not in caplog.text
    assert isinstance(again, CompiledModel) and again.path == compiled.path
    torch.manual_seed(1)
    other = ResNet3D(MODEL_CFG).eval()  # other weights: another artifact
    with caplog.at_level(logging.INFO, logger="trainer.compiled"):
        assert compiled_model(other, FP32, shape, tmp_path).path != compiled.path


class NotExportable(torch.nn.Module):
    """A model torch.export cannot trace: it leaves the graph for numpy."""

    def forward(self, x):
        return torch.from_numpy(x.numpy() * 2)


def test_a_model_that_cannot_be_compiled_runs_eager(tmp_path, caplog):
    model = NotExportable()
    with caplog.at_level(logging.WARNING, logger="trainer.compiled"):
        assert compiled_model(model, FP32, (3, 2, 4, 4), tmp_path) is model
    assert "compiling the model failed, scoring eager" in caplog.text and not list(tmp_path.glob("*.pt2"))


@pytest.mark.slow  # an AOTInductor build
def test_score_runs_the_compiled_model_with_the_same_scores(tmp_path, monkeypatch, caplog):
    from cluster.commands.score import Video, score_job
    from tests.support.videos import write_noise_video
    from trainer.serve.alerting.policy import AlertPolicy
    from trainer.serve.runtime.scoring import ScoreConfig

    monkeypatch.setenv("FIGHTWATCH_COMPILE_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = ResNet3D(MODEL_CFG).eval()
    video = Video.of(write_noise_video(tmp_path / "v.mp4", 40))
    entries = {}
    for runtime in ("eager", "compile"):
        with caplog.at_level(logging.INFO):
            (entries[runtime],), _ = score_job(model, MODEL_CFG, [video], tmp_path / f"{runtime}.json",
                                               ScoreConfig(8, 4), AlertPolicy(0.5, 2, 2, 0.0), plan=FP32,
                                               runtime=runtime)
        assert f"with torch kernels, {runtime}, " in caplog.text
    assert list(tmp_path.glob("cache/*.pt2"))
    assert [c["segment"] for c in entries["compile"]["clips"]] == [c["segment"] for c in entries["eager"]["clips"]]
    assert all(abs(a["fight_prob"] - b["fight_prob"]) < 1e-4
               for a, b in zip(entries["compile"]["clips"], entries["eager"]["clips"]))


def test_a_damaged_package_in_the_cache_runs_eager_and_says_which(tmp_path, caplog):
    from trainer.compiled import cache_key

    torch.manual_seed(0)
    model = ResNet3D(MODEL_CFG).eval()
    shape = (3, MODEL_CFG.sample_duration, MODEL_CFG.sample_size, MODEL_CFG.sample_size)
    damaged = tmp_path / f"{cache_key(model, FP32, torch.zeros(2, *shape))}.pt2"
    damaged.write_bytes(b"not a package")
    with caplog.at_level(logging.WARNING, logger="trainer.compiled"):
        assert compiled_model(model, FP32, shape, tmp_path) is model
    assert f"cannot load the compiled model {damaged}, scoring eager" in caplog.text
