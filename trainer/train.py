"""The fine-tune loop: SGD over the trainable stages, validation, checkpoints, MLflow."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from trainer.checkpoint import save_checkpoint
from trainer.metrics import classification_metrics
from trainer.model import ModelConfig, ResNet3D, freeze_before, train_mode
from trainer.tracking import Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    # sgd: 3D-ResNets-PyTorch's baseline. adamw: finds weak motion cues far sooner when training from scratch.
    optimizer: Literal["sgd", "adamw"]
    lr: float
    momentum: float  # sgd only
    weight_decay: float
    val_every: int
    checkpoint_every: int
    num_workers: int

    def __post_init__(self):
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size <= 0 or self.val_every <= 0 or self.checkpoint_every <= 0 or self.num_workers < 0:
            raise ValueError("batch_size, val_every and checkpoint_every must be > 0, num_workers >= 0")


def evaluate(model: ResNet3D, loader: DataLoader) -> dict[str, float]:
    model.eval()
    losses, labels, predictions = [], [], []
    with torch.no_grad():
        for x, y in loader:
            logits = model(x)
            losses.append(F.cross_entropy(logits, y, reduction="sum").item())
            labels += y.tolist()
            predictions += logits.argmax(1).tolist()
    return {"loss": sum(losses) / max(1, len(labels)), **classification_metrics(labels, predictions)}


def train(cfg: TrainConfig, model_cfg: ModelConfig, train_set: Dataset, val_set: Dataset,
          run_dir: Path, tracker: Tracker, seed: int) -> tuple[ResNet3D, dict[str, float]]:
    """Train for cfg.epochs; return the model and its last validation metrics."""
    torch.manual_seed(seed)
    model = ResNet3D(model_cfg)
    params = freeze_before(model, model_cfg.ft_begin)
    optimizer = (torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
                 if cfg.optimizer == "sgd" else torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay))
    # Cosine decay: a tiny from-scratch model converges in a few epochs without a plateau to wait for.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, cfg.batch_size, shuffle=True, generator=generator,
                              num_workers=cfg.num_workers, drop_last=len(train_set) > cfg.batch_size)
    val_loader = DataLoader(val_set, cfg.batch_size, num_workers=cfg.num_workers)
    log.info("training %s (width %d) from ft_begin=%s: %d trainable tensors, %d train / %d val clips",
             model_cfg.arch, model_cfg.width, model_cfg.ft_begin, len(params), len(train_set), len(val_set))
    val_metrics: dict[str, float] = {}
    for epoch in range(1, cfg.epochs + 1):
        train_set.set_epoch(epoch)
        train_mode(model)
        total_loss, correct, seen = 0.0, 0, 0
        for x, y in tqdm(train_loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, unit="batch"):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        scheduler.step()
        metrics = {"train_loss": total_loss / seen, "train_accuracy": correct / seen, "lr": scheduler.get_last_lr()[0]}
        if epoch % cfg.val_every == 0 or epoch == cfg.epochs:
            val_metrics = evaluate(model, val_loader)
            metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
        tracker.log_metrics(metrics, step=epoch)
        log.info("epoch %d: %s", epoch, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if epoch % cfg.checkpoint_every == 0:
            path = run_dir / "checkpoints" / f"epoch_{epoch:04d}.pth"
            save_checkpoint(path, model, model_cfg, epoch, optimizer)
            tracker.log_artifact(path, "checkpoints")
    return model, val_metrics
