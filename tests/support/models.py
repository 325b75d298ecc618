"""Tiny models and checkpoints: the scoring and watch tests' model and a checkpoint of it whose output ignores the
frames, stand-ins for released 3D-ResNets-PyTorch models and the checkpoint layouts that project wrote."""

from collections import OrderedDict
from pathlib import Path

import torch

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
