"""OpenVINO as a runtime (trainer/openvino_model.py), where it is installed (the `openvino` extra, which
scripts/test.sh installs): agreement with eager fp32 on the real input shapes, every batch size from one conversion,
and a restart that reads the converted model from the cache instead of converting again."""

import logging

import pytest
import torch

from tests.support.models import AGREEMENT_PLANS, FP32, MODEL_CFG, assert_agrees_with_eager_fp32
from trainer.model import ResNet3D
from trainer.openvino_model import OpenVinoModel
from trainer.serve.runtime.scoring import prepare_model

pytest.importorskip("openvino", reason="OpenVINO is an optional runtime: pip install 'fightwatch[openvino]'")


@pytest.mark.slow  # converts and compiles a ResNet-18 at 16x112x112
@pytest.mark.parametrize("plan", AGREEMENT_PLANS)
def test_openvino_agrees_with_eager_fp32_on_the_real_shapes(plan, tmp_path, monkeypatch):
    """As the compiled model must (assert_agrees_with_eager_fp32), batches of 1 and 8 from one conversion."""
    monkeypatch.setenv("FIGHTWATCH_COMPILE_CACHE", str(tmp_path))
    assert isinstance(assert_agrees_with_eager_fp32("openvino", plan), OpenVinoModel)


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
