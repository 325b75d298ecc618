"""The fine-tune loop: the trainable stages on CPU kernels, validation, checkpoints, MLflow.

Every epoch ends by writing `last.pth` (model, optimizer, scheduler, RNG states, the MLflow run id and the
epoch's metrics) and only then logging the epoch's metrics, so a run killed at any point resumes from the
last finished epoch; an epoch whose checkpoint was written but whose metrics were not is logged on resume,
and an epoch the run already has (a resume that fell back past a corrupt checkpoint) is not logged twice.
`epoch_NNNN.pth` every `checkpoint_every` epochs (also MLflow artifacts) and `best.pth` (lowest validation
loss) are kept beside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from data.errors import InputError
from trainer import plots
from trainer.accel import AccelPlan, apply, finetune_forward
from trainer.checkpoint import load_pretrained, save_checkpoint
from trainer.metrics import classification_metrics, confusion
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
    dampening: float  # sgd only; 3D-ResNets-PyTorch uses 0.9
    weight_decay: float
    # plateau: divide lr by 10 after `plateau_patience` validations without a lower val loss (the baseline);
    # cosine: decay to 0 over the run.
    lr_schedule: Literal["plateau", "cosine"]
    plateau_patience: int
    val_every: int
    checkpoint_every: int
    num_workers: int

    def __post_init__(self):
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if min(self.batch_size, self.val_every, self.checkpoint_every, self.plateau_patience) <= 0 or self.num_workers < 0:
            raise ValueError("batch_size, val_every, checkpoint_every and plateau_patience must be > 0, num_workers >= 0")


def build_optimizer(cfg: TrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    if cfg.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min", patience=cfg.plateau_patience)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)


def evaluate(model: ResNet3D, loader: DataLoader, plan: AccelPlan) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Validation metrics, and the labels and fight probabilities they came from."""
    model.eval()
    losses, labels, probs = [], [], []
    with torch.no_grad(), plan.autocast():
        for x, y in loader:
            logits = model(plan.input(x)).float()
            losses.append(F.cross_entropy(logits, y, reduction="sum").item())
            labels.append(y.numpy())
            probs.append(torch.softmax(logits, 1)[:, 1].numpy())
    labels, probs = np.concatenate(labels), np.concatenate(probs)
    metrics = classification_metrics(labels, (probs >= 0.5).astype(int), probs)
    return {"loss": sum(losses) / max(1, len(labels)), **metrics}, labels, probs


def _train_epoch(model, loader, optimizer, plan: AccelPlan, ft_begin: str, desc: str) -> dict[str, float]:
    train_mode(model)
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in tqdm(loader, desc=desc, leave=False, unit="batch"):
        with plan.autocast():
            logits = finetune_forward(model, plan.input(x), ft_begin)
            loss = F.cross_entropy(logits.float(), y)
        if not torch.isfinite(loss):
            raise InputError(f"the training loss became {loss.item()} (precision {plan.precision}); "
                                     "lower train.lr or set accel.precision=fp32")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    return {"train_loss": total_loss / seen, "train_accuracy": correct / seen}


def train(cfg: TrainConfig, model_cfg: ModelConfig, plan: AccelPlan, train_set: Dataset, val_set: Dataset,
          run_dir: Path, tracker: Tracker, seed: int, resume: dict | None = None,
          sampler: Sampler | None = None) -> tuple[ResNet3D, dict[str, float]]:
    """Train to cfg.epochs (from `resume`, a checkpoint dict, when given); return the model and last val metrics.

    `sampler` replaces the seeded shuffle (a DistributedSampler under DDP).
    """
    torch.manual_seed(seed)
    model = ResNet3D(model_cfg)
    if model_cfg.pretrained and resume is None:
        load_pretrained(model, model_cfg.pretrained, model_cfg)
        log.info("loaded pretrained weights from %s", model_cfg.pretrained)
    optimizer = build_optimizer(cfg, freeze_before(model, model_cfg.ft_begin))
    model, optimizer = apply(plan, model, optimizer)
    scheduler = build_scheduler(cfg, optimizer)
    generator = torch.Generator().manual_seed(seed)
    start, best_loss, history = 1, float("inf"), {}
    if resume is not None:
        model.load_state_dict(resume["state_dict"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        generator.set_state(resume["loader_rng"])
        torch.set_rng_state(resume["torch_rng"])
        start, best_loss, history = resume["epoch"] + 1, resume["best_loss"], resume["history"]
        tracker.log_metrics_once(resume["metrics"], step=resume["epoch"])
        log.info("resumed at epoch %d of %d", start, cfg.epochs)
    train_loader = DataLoader(train_set, cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                              generator=generator, num_workers=cfg.num_workers,
                              drop_last=len(train_set) > cfg.batch_size)
    val_loader = DataLoader(val_set, cfg.batch_size, num_workers=cfg.num_workers)
    log.info("training %s (width %d) from ft_begin=%s on %d train / %d val clips, %s",
             model_cfg.arch, model_cfg.width, model_cfg.ft_begin, len(train_set), len(val_set), plan.reason)
    val_metrics: dict[str, float] = {}
    ckpt_dir = run_dir / "checkpoints"
    for epoch in range(start, cfg.epochs + 1):
        train_set.set_epoch(epoch)
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        metrics = _train_epoch(model, train_loader, optimizer, plan, model_cfg.ft_begin, f"epoch {epoch}/{cfg.epochs}")
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        improved = False
        if epoch % cfg.val_every == 0 or epoch == cfg.epochs:
            val_metrics, val_labels, val_probs = evaluate(model, val_loader, plan)
            metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
            improved = val_metrics["loss"] < best_loss
            best_loss = min(best_loss, val_metrics["loss"])
            if cfg.lr_schedule == "plateau":
                scheduler.step(val_metrics["loss"])
        if cfg.lr_schedule == "cosine":
            scheduler.step()
        for name, value in metrics.items():
            history.setdefault(name, []).append((epoch, value))
        extra = {"scheduler": scheduler.state_dict(), "loader_rng": generator.get_state(),
                 "torch_rng": torch.get_rng_state(), "best_loss": best_loss, "metrics": metrics,
                 "history": history, "mlflow_run_id": tracker.run_id}
        save_checkpoint(ckpt_dir / "last.pth", model, model_cfg, epoch, optimizer, extra=extra)
        if improved:
            save_checkpoint(ckpt_dir / "best.pth", model, model_cfg, epoch, optimizer, extra=extra)
        if epoch % cfg.checkpoint_every == 0:
            path = ckpt_dir / f"epoch_{epoch:04d}.pth"
            save_checkpoint(path, model, model_cfg, epoch, optimizer, extra=extra)
            tracker.log_artifact(path, "checkpoints")
        tracker.log_metrics_once(metrics, step=epoch)
        log.info("epoch %d: %s", epoch, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    if val_metrics:
        _log_plots(tracker, run_dir, history, val_labels, val_probs, val_metrics)
    return model, val_metrics


def _log_plots(tracker: Tracker, run_dir: Path, history: dict, labels, probs, val_metrics: dict) -> None:
    paths = {"curves.png": lambda p: plots.plot_curves(history, p),
             "confusion.png": lambda p: plots.plot_confusion(confusion(labels, probs >= 0.5), ("no fight", "fight"), p),
             "roc.png": lambda p: plots.plot_roc(labels, probs, val_metrics["roc_auc"], p)}
    for name, draw in paths.items():
        draw(run_dir / "plots" / name)
        tracker.log_artifact(run_dir / "plots" / name, "plots")
