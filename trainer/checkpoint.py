"""Checkpoints in the format of 3D-ResNets-PyTorch, written atomically.

That repository saves {'epoch', 'arch', 'state_dict', 'optimizer'}; ours add
'model_config' so a checkpoint alone rebuilds its model for scoring. Loading
uses weights_only=True: a .pth from the internet must not run pickled code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from data.errors import InputError
from data.store import atomic_write
from trainer.model import ModelConfig, ResNet3D


def save_checkpoint(path: Path, model: ResNet3D, model_cfg: ModelConfig, epoch: int,
                    optimizer: torch.optim.Optimizer | None = None) -> None:
    state = {
        "epoch": epoch,
        "arch": model_cfg.arch,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "model_config": dataclasses.asdict(model_cfg),
    }
    atomic_write(Path(path), lambda f: torch.save(state, f))


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several unrelated types for a file that is not a checkpoint
        raise InputError(f"{path}: not a readable checkpoint: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise InputError(f"{path}: not a checkpoint (no 'state_dict')")
    state["state_dict"] = {k.removeprefix("module."): v for k, v in state["state_dict"].items()}
    return state


def load_model(path: str | Path) -> tuple[ResNet3D, ModelConfig]:
    """Rebuild a fightwatch checkpoint's model in eval mode, ready to score."""
    state = read_checkpoint(path)
    if "model_config" not in state:
        raise InputError(f"{path}: checkpoint has no 'model_config'; fine-tune it with fightwatch first")
    model_cfg = ModelConfig(**state["model_config"])
    model = ResNet3D(model_cfg)
    model.load_state_dict(state["state_dict"])
    return model.eval(), model_cfg
