"""Tiny models and checkpoints: the scoring and watch tests' model and a checkpoint of it whose output ignores the
frames, stand-ins for released 3D-ResNets-PyTorch models and the checkpoint layouts that project wrote."""

from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from trainer.accel import AccelPlan, cpu_flags
from trainer.checkpoint import save_checkpoint
from trainer.model import ModelConfig, ResNet3D

# The scoring and watch tests' model: tiny, at the size and rate `score` and `watch` windows are cut for
MODEL_CFG = ModelConfig(depth=10, shortcut="A", width=4, n_classes=2, sample_size=32, sample_duration=16,
                        pretrained=None, ft_begin="conv1", mean=(114.7748, 107.7354, 99.4750), std=(1.0, 1.0, 1.0),
                        value_scale=255.0)


def fixed_output_model(path, says: str) -> Path:
    """A MODEL_CFG checkpoint whose output ignores the frames: fc weight 0 and bias [0, 5] (says "fight",
    alerting from a stream's first windows) or [5, 0] (says "calm", never alerting)."""
    torch.manual_seed(0)
    model = ResNet3D(MODEL_CFG)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor({"fight": [0.0, 5.0], "calm": [5.0, 0.0]}[says]))
    save_checkpoint(path, model, MODEL_CFG, epoch=1)
    return Path(path)


def release_like(seed=0, **kw) -> ResNet3D:
    """A stand-in for a released 3D-ResNets-PyTorch Kinetics model (tiny unless `kw` says otherwise): 400 classes,
    BN statistics away from their defaults. `kw` are ModelConfig fields."""
    base = dict(depth=10, shortcut="A", width=4, n_classes=400, sample_size=32, sample_duration=8, pretrained=None,
                ft_begin="layer4", mean=None, std=None, value_scale=None)
    torch.manual_seed(seed)
    model = ResNet3D(ModelConfig(**{**base, **kw}))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(), m.running_mean.normal_(), m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(12345)
    return model.eval()


def save_hara(path, model, arch="resnet-10", prefix="module.", layout="2018", **kw):
    """Write a checkpoint as 3D-ResNets-PyTorch does. 2018 (CVPR2018 branch, train.py): {epoch, arch, state_dict,
    optimizer}, DataParallel's `module.` prefix kept (unless prefix=""). 2020 (master, main.py save_checkpoint):
    {epoch, arch, state_dict (unwrapped: no prefix), optimizer, scheduler}."""
    if layout == "2020":
        prefix = ""
    state_dict = OrderedDict((prefix + k, v) for k, v in model.state_dict().items())
    state = {"epoch": 200, "arch": arch, "state_dict": state_dict, "optimizer": {}}
    if layout == "2020":
        state["scheduler"] = {"milestones": {}, "last_epoch": 200}
    torch.save(state, path, **kw)
    return path


# The plans the runtimes' agreement tests run in (tests/test_compiled.py, tests/test_openvino.py)
BF16 = AccelPlan("bf16", "torch", True, "test")
FP32 = AccelPlan("fp32", "torch", False, "test")
AGREEMENT_PLANS = [
    pytest.param(BF16, id="bf16", marks=pytest.mark.skipif(not {"amx_bf16", "avx512_bf16"} & cpu_flags(),
                                                          reason="bf16 needs native avx512_bf16/amx_bf16 here")),
    pytest.param(FP32, id="fp32")]


def assert_agrees_with_eager_fp32(runtime: str, plan: AccelPlan) -> torch.nn.Module:
    """A ResNet-18 at the real 16x112x112 as `prepare_model` makes it for `runtime` and `plan`, run on 9 clips in
    batches of 1 and 8, against eager fp32: bf16 keeps 8 bits of mantissa, so it must agree as eager bf16 does (the
    argmax of every clip, fight probabilities within 0.05); fp32 within 1e-4. Returns the prepared model."""
    from trainer.serve.runtime.scoring import prepare_model

    torch.manual_seed(0)
    cfg = ModelConfig(depth=18, shortcut="A", width=64, n_classes=2, sample_size=112, sample_duration=16,
                      pretrained=None, ft_begin="layer4", mean=None, std=None, value_scale=None)
    model = ResNet3D(cfg).eval()
    x = torch.randn(9, 3, 16, 112, 112) * 60  # the scale of mean-subtracted 0-255 pixels
    with torch.inference_mode():
        want = torch.softmax(model(x), 1)[:, 1]
    prepared = prepare_model(model, plan, cfg, runtime)
    with torch.inference_mode(), plan.autocast():
        logits = torch.cat([prepared(plan.input(x[:1])), prepared(plan.input(x[1:9]))]).float()
    got = torch.softmax(logits, 1)[:, 1]
    if plan.precision == "fp32":
        assert (got - want).abs().max() < 1e-4
    else:
        assert torch.equal(got >= 0.5, want >= 0.5)  # the argmax of two classes
        assert (got - want).abs().max() < 0.05
    return prepared
