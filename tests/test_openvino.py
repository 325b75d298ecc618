"""OpenVINO as a runtime (trainer/openvino_model.py), where it is installed (the `openvino` extra, which
scripts/test.sh installs): agreement with eager fp32 on the real input shapes, every batch size from one conversion,
and a restart that reads the converted model from the cache instead of converting again."""

import logging

import pytest
import torch

from tests.support.models import MODEL_CFG
from trainer.accel import AccelPlan, cpu_flags
from trainer.model import ModelConfig, ResNet3D
from trainer.serve.runtime.scoring import prepare_model

pytest.importorskip("openvino", reason="OpenVINO is an optional runtime: pip install 'fightwatch[openvino]'")

from trainer.openvino_model import OpenVinoModel  # noqa: E402  (after the skip: it imports openvino on use)

BF16 = AccelPlan("bf16", "torch", True, "test")
FP32 = AccelPlan("fp32", "torch", False, "test")


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), 1)[:, 1]


@pytest.mark.slow  # converts and compiles a ResNet-18 at 16x112x112
@pytest.mark.parametrize("plan", [
    pytest.param(BF16, id="bf16", marks=pytest.mark.skipif(not {"amx_bf16", "avx512_bf16"} & cpu_flags(),
                                                          reason="bf16 needs native avx512_bf16/amx_bf16 here")),
    pytest.param(FP32, id="fp32")])
def test_openvino_agrees_with_eager_fp32_on_the_real_shapes(plan, tmp_path, monkeypatch):
    """As the compiled model must (tests/test_compiled.py): bf16 on every clip's argmax and within 0.05, fp32
    within 1e-4, batches of 1 and 8 from one conversion."""
    monkeypatch.setenv("FIGHTWATCH_COMPILE_CACHE", str(tmp_path))
    torch.manual_seed(0)
    cfg = ModelConfig(depth=18, shortcut="A", width=64, n_classes=2, sample_size=112, sample_duration=16,
                      pretrained=None, ft_begin="layer4", mean=None, std=None, value_scale=None)
    model = ResNet3D(cfg).eval()
    x = torch.randn(9, 3, 16, 112, 112) * 60  # the scale of mean-subtracted 0-255 pixels
    with torch.inference_mode():
        want = model(x)
    runner = prepare_model(model, plan, cfg, "openvino")
    assert isinstance(runner, OpenVinoModel)
    with torch.inference_mode(), plan.autocast():
        got = torch.cat([runner(plan.input(x[:1])), runner(plan.input(x[1:9]))])
    if plan.precision == "fp32":
        assert (probabilities(got) - probabilities(want)).abs().max() < 1e-4
    else:
        assert torch.equal(got.argmax(1), want.argmax(1))
        assert (probabilities(got) - probabilities(want)).abs().max() < 0.05


@pytest.mark.slow
def test_a_restart_reads_the_converted_model_and_scores_as_before(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FIGHTWATCH_COMPILE_CACHE", str(tmp_path))
    torch.manual_seed(1)
    model = ResNet3D(MODEL_CFG).eval()
    x = torch.randn(3, 3, 16, 32, 32) * 60
    outputs = []
    for _ in range(2):
        runner = prepare_model(model, FP32, MODEL_CFG, "openvino")
        outputs.append(runner(x))
    (xml,) = (tmp_path / "openvino").glob("*.xml")
    assert xml.with_suffix(".bin").is_file() and runner.path == xml
    assert torch.equal(outputs[0], outputs[1])
    with torch.inference_mode():
        torch.testing.assert_close(outputs[1], model(x), rtol=1e-4, atol=1e-4)
    with caplog.at_level(logging.INFO, logger="trainer"):
        (tmp_path / "openvino" / xml.name).write_text("<not a model")
        assert prepare_model(model, FP32, MODEL_CFG, "openvino") is model  # a damaged cache: eager, said
    assert "OpenVINO could not run the model, scoring eager" in caplog.text
