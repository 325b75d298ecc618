"""The learning-rate schedules: warm-up then cosine per optimizer step, and their state through a checkpoint."""

from pathlib import Path

import pytest
import torch

from cluster.config import load_config
from trainer.checkpoint import read_checkpoint, save_checkpoint
from trainer.model import ResNet3D
from trainer.train import build_scheduler

ROOT = Path(__file__).parents[1]


def tiny_model():
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["model.width=2", "model.sample_size=16"]).model
    return ResNet3D(cfg), cfg


def test_warmup_cosine_schedule_ramps_decays_and_resumes_from_a_checkpoint(tmp_path):
    """The demo's schedule, stepped per optimizer step: linear warm-up, cosine to ~0, its state in checkpoints."""
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["train.epochs=4", "train.warmup_epochs=1", "train.lr=1"]).train
    torch.manual_seed(0)
    model, model_cfg = tiny_model()

    def fresh():
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        return optimizer, build_scheduler(cfg, optimizer, steps_per_epoch=5)

    optimizer, scheduler = fresh()
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:6] == pytest.approx([0.2, 0.36, 0.52, 0.68, 0.84, 1.0])  # 5 warm-up steps, then the peak
    assert lrs[5:] == sorted(lrs[5:], reverse=True) and lrs[-1] < 0.02

    optimizer, scheduler = fresh()
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    save_checkpoint(tmp_path / "last.pth", model, model_cfg, 1, optimizer, extra={"scheduler": scheduler.state_dict()})
    optimizer, scheduler = fresh()
    state = read_checkpoint(tmp_path / "last.pth")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    resumed = []
    for _ in range(13):
        resumed.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert resumed == pytest.approx(lrs[7:])
