"""The fine-tune loop: the trainable stages on CPU kernels, validation, checkpoints, MLflow.

Every epoch ends by writing its checkpoints, `last.pth` (model, optimizer, scheduler, RNG states, the MLflow
run id and the epoch's metrics) the last of them, and only then logging the epoch to MLflow, so a run killed at
any point resumes from the last finished epoch; an epoch whose checkpoint was written but whose metrics or
checkpoint artifact were not (or only partly) is logged on resume, and an epoch the run already has (a resume
that fell back past a corrupt checkpoint) is not logged twice. The newest validation's labels and probabilities
are in the checkpoint too, so a run killed after its last epoch still draws and logs its plots when restarted.
`epoch_NNNN.pth` every `checkpoint_every` epochs (also MLflow artifacts) and `best.pth` (lowest validation
loss) are kept beside it.

Under DDP (a process group set up by the launcher) every rank trains its micro-batches of each global
batch (trainer/batches.py), only the head from ft_begin on is wrapped and synchronised
(trainer/ddp.py), train and validation metrics are summed or gathered over the ranks, and only rank 0
writes checkpoints and logs (the Tracker of other ranks is inactive).

Each epoch also logs its speed (wall seconds and clips/s, train and validation apart; a trunk-cache build once),
so runs of other precisions, kernels or caches compare in MLflow on the same chart.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from data.errors import InputError
from data.files import remove_stale_temps
from trainer import plots
from trainer.accel import AccelPlan, apply, finetune_forward
from trainer.batches import MicroBatchSampler, shard
from trainer.checkpoint import save_checkpoint
from trainer.ddp import GradSync, barrier, gather, sum_across, world, wrap_head
from trainer.metrics import classification_metrics, confusion
from trainer.model import ModelConfig, ResNet3D, freeze_before, split, train_mode
from trainer.releases import load_pretrained
from trainer.trunk_cache import TrunkCache, TrunkCacheConfig

if TYPE_CHECKING:  # the loop only calls a Tracker; MLflow is imported by whoever makes one
    from trainer.tracking import Tracker

log = logging.getLogger(__name__)

EPOCH_POSTFIX = ("train_loss", "val_loss", "val_accuracy")  # what the epoch progress bar shows


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int  # the global batch: clips per optimizer step, over all ranks
    # clips per forward pass on one rank; null: batch_size / ranks. Smaller: gradients are accumulated
    # over micro-batches, so the same experiment runs on any number of ranks.
    batch_size_per_rank: int | None
    # sgd: 3D-ResNets-PyTorch's baseline. adamw: finds weak motion cues far sooner when training from scratch.
    optimizer: Literal["sgd", "adamw"]
    lr: float
    momentum: float  # sgd only
    dampening: float  # sgd only; 3D-ResNets-PyTorch uses 0.9
    weight_decay: float
    # plateau: divide lr by 10 after `plateau_patience` validations without a lower val loss (the baseline);
    # cosine: decay to 0 over the run, per optimizer step, after `warmup_epochs` of linear warm-up.
    lr_schedule: Literal["plateau", "cosine"]
    plateau_patience: int
    # Warm-up steadies the first steps of a model trained from scratch (BatchNorm statistics still moving).
    warmup_epochs: int
    deterministic: bool  # torch's deterministic algorithms (and an error for ops without one); recorded in MLflow
    val_every: int
    checkpoint_every: int
    num_workers: int
    # {views: K}: the frozen trunk runs once on K views per clip, not once per epoch (trainer/trunk_cache.py)
    trunk_cache: TrunkCacheConfig | None

    def __post_init__(self):
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size_per_rank is not None and self.batch_size_per_rank <= 0:
            raise ValueError(f"batch_size_per_rank must be > 0 or null, got {self.batch_size_per_rank}")
        if min(self.batch_size, self.val_every, self.checkpoint_every, self.plateau_patience) <= 0 or self.num_workers < 0:
            raise ValueError("batch_size, val_every, checkpoint_every and plateau_patience must be > 0, num_workers >= 0")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be >= 0 and below epochs ({self.epochs}), got {self.warmup_epochs}")
        if self.warmup_epochs and self.lr_schedule != "cosine":
            raise ValueError("warmup_epochs needs lr_schedule: cosine (plateau lowers the lr on validation loss)")


def build_optimizer(cfg: TrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """plateau: stepped on each validation loss; cosine: stepped after every optimizer step."""
    sched = torch.optim.lr_scheduler
    if cfg.lr_schedule == "plateau":
        return sched.ReduceLROnPlateau(optimizer, "min", patience=cfg.plateau_patience)
    warmup, total = cfg.warmup_epochs * steps_per_epoch, cfg.epochs * steps_per_epoch
    cosine = sched.CosineAnnealingLR(optimizer, T_max=total - warmup)
    if not warmup:
        return cosine
    return sched.SequentialLR(optimizer, [sched.LinearLR(optimizer, 1 / warmup, 1.0, warmup), cosine], [warmup])


def evaluate(model: ResNet3D, forward, val_set: Dataset, batch_size: int, num_workers: int,
             plan: AccelPlan) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Validation metrics, and the labels and fight probabilities they came from; each rank scores a shard.

    `forward` maps a batch of val_set to logits (the model, or the head on cached trunk activations).
    """
    rank, world_size = world()
    loader = DataLoader(Subset(val_set, shard(len(val_set), rank, world_size)), batch_size, num_workers=num_workers)
    model.eval()
    loss, labels, probs = 0.0, [np.zeros(0, int)], [np.zeros(0)]
    with torch.no_grad(), plan.autocast():
        for x, y in loader:
            logits = forward(plan.input(x)).float()
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            labels.append(y.numpy())
            probs.append(torch.softmax(logits, 1)[:, 1].numpy())
    shards = gather((loss, np.concatenate(labels), np.concatenate(probs)))
    labels, probs = np.concatenate([s[1] for s in shards]), np.concatenate([s[2] for s in shards])
    metrics = classification_metrics(labels, (probs >= 0.5).astype(int), probs)
    return {"loss": sum(s[0] for s in shards) / max(1, len(labels)), **metrics}, labels, probs


def finite_gradients(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every gradient the optimizer would apply is finite (one sum per tensor: a NaN or inf anywhere makes
    it non-finite, and gradients never come near float32's range otherwise)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.stack([g.sum() for g in grads])).all())


def _train_epoch(trunk, head, loader, accumulation: int, optimizer, step_scheduler, plan: AccelPlan,
                 desc: str) -> dict[str, float]:
    """One epoch; a step whose gradients are not finite is skipped and counted (`train_skipped_steps`): one such
    step would make every weight NaN for good. Seen on a Zen 4 (avx512_bf16, no AMX): oneDNN's bf16 conv3d weight
    gradients now and then came out NaN from finite inputs and weights, within 5-50 steps of the demo; the ranks
    hold the same all-reduced gradients, so all skip together."""
    total_loss, correct, seen, skipped = 0.0, 0, 0, 0
    started = time.perf_counter()
    for i, (x, y) in enumerate(tqdm(loader, desc=desc, leave=False, unit="batch", disable=world()[0] != 0)):
        steps = (i + 1) % accumulation == 0
        # DDP all-reduces in backward; micro-batches before the last of a step only accumulate
        with head.no_sync() if hasattr(head, "no_sync") and not steps else contextlib.nullcontext():
            with plan.autocast():
                logits = finetune_forward(trunk, head, plan.input(x))
                loss = F.cross_entropy(logits.float(), y)
            if not torch.isfinite(loss):
                raise InputError(f"the training loss became {loss.item()} (precision {plan.precision}); "
                                 "lower train.lr or set accel.precision=fp32")
            (loss / accumulation).backward()
        if steps:
            if finite_gradients(optimizer):
                optimizer.step()
            else:
                skipped += 1
            optimizer.zero_grad(set_to_none=True)
            step_scheduler()
        total_loss += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    total_loss, correct, seen = sum_across([total_loss, correct, seen])
    return {"train_loss": total_loss / seen, "train_accuracy": correct / seen, "train_skipped_steps": skipped,
            **speed("train", seen, time.perf_counter() - started)}


def speed(phase: str, clips: int, seconds: float) -> dict[str, float]:
    """Wall time and clips/s (over all ranks) of one phase: MLflow lines up fp32, bf16 and cached runs on them."""
    return {f"{phase}_seconds": seconds, f"{phase}_clips_per_s": clips / seconds}


def train(cfg: TrainConfig, model_cfg: ModelConfig, plan: AccelPlan, train_set: Dataset, val_set: Dataset,
          run_dir: Path, tracker: Tracker, seed: int, resume: dict | None = None,
          sync: GradSync = GradSync(25.0, "fp32")) -> tuple[ResNet3D, dict[str, float]]:
    """Train to cfg.epochs (from `resume`, a checkpoint dict, when given); return the model and last val metrics.

    Under a process group every rank calls this with the same arguments (and the same `resume`).
    """
    rank, world_size = world()
    if rank == 0:  # what a run killed mid-write left (the trunk cache's ranks clean their own shards)
        for directory, names in ((run_dir / "checkpoints", None), (run_dir / "plots", None),
                                 (run_dir, ("model.pth", "model.pth.sha256"))):
            remove_stale_temps(directory, names)
    torch.use_deterministic_algorithms(cfg.deterministic)
    torch.manual_seed(seed)
    model = ResNet3D(model_cfg)
    if model_cfg.pretrained and resume is None:
        load_pretrained(model, model_cfg.pretrained, model_cfg)
        log.info("loaded pretrained weights from %s", model_cfg.pretrained)
    optimizer = build_optimizer(cfg, freeze_before(model, model_cfg.ft_begin))
    model, optimizer = apply(plan, model, optimizer)
    try:
        sampler = MicroBatchSampler(len(train_set), cfg.batch_size, cfg.batch_size_per_rank, rank, world_size, seed)
    except ValueError as e:
        raise InputError(str(e)) from None
    scheduler = build_scheduler(cfg, optimizer, sampler.steps_per_epoch)
    start, best_loss, history = 1, float("inf"), {}
    val_metrics: dict[str, float] = {}
    if resume is not None:
        model.load_state_dict(resume["state_dict"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["torch_rng"])
        start, best_loss, history = resume["epoch"] + 1, resume["best_loss"], resume["history"]
        validation = resume.get("validation")  # what a run killed after its last epoch still had to plot
        if validation:
            val_metrics, val_labels, val_probs = (validation["metrics"], np.asarray(validation["labels"]),
                                                  np.asarray(validation["probs"]))
        _record_epoch(tracker, run_dir / "checkpoints", resume["epoch"], resume["metrics"], cfg.checkpoint_every)
        log.info("resumed at epoch %d of %d", start, cfg.epochs)
    trunk, head = split(model, model_cfg.ft_begin)
    if cfg.trunk_cache is not None:
        if not len(trunk):
            raise InputError("train.trunk_cache needs frozen stages to cache, but model.ft_begin is conv1 "
                             "(everything trains): set model.ft_begin to a later stage or train.trunk_cache=off")
        cache = TrunkCache(run_dir / "trunk_cache", cfg.trunk_cache, trunk, plan, train_set, val_set)
        started = time.perf_counter()
        built = sum_across([cache.build()["built"]])[0]
        if built:  # a resume that finds the cache on disk has no build to time
            tracker.log_metrics(speed("trunk_cache", built, time.perf_counter() - started), step=start - 1)
        train_set, val_set = cache.datasets()
        trunk = torch.nn.Sequential()  # the cached activations are the head's input
    evaluate_forward = lambda x: head(trunk(x))  # noqa: E731  (the unwrapped head: no DDP buffer broadcast)
    train_loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.num_workers)
    ddp_head = wrap_head(head, sync)
    log.info("training %s (width %d) from ft_begin=%s on %d train / %d val clips; rank %d of %d, %d clips per "
             "micro-batch, %d micro-batch(es) per step of %d; %s", model_cfg.arch, model_cfg.width,
             model_cfg.ft_begin, len(train_set), len(val_set), rank, world_size, sampler.per_rank,
             sampler.accumulation, cfg.batch_size, plan.reason)
    ckpt_dir = run_dir / "checkpoints"
    step_scheduler = scheduler.step if cfg.lr_schedule == "cosine" else lambda: None
    epochs = tqdm(range(start, cfg.epochs + 1), desc="training", unit="epoch", initial=start - 1,
                  total=cfg.epochs, disable=rank != 0)
    for epoch in epochs:
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        train_mode(model)
        metrics = _train_epoch(trunk, ddp_head, train_loader, sampler.accumulation, optimizer, step_scheduler, plan,
                               f"epoch {epoch}/{cfg.epochs}")
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        improved = False
        if epoch % cfg.val_every == 0 or epoch == cfg.epochs:
            started = time.perf_counter()
            val_metrics, val_labels, val_probs = evaluate(model, evaluate_forward, val_set, cfg.batch_size,
                                                          cfg.num_workers, plan)
            metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
            metrics.update(speed("val", len(val_labels), time.perf_counter() - started))
            improved = val_metrics["loss"] < best_loss
            best_loss = min(best_loss, val_metrics["loss"])
            if cfg.lr_schedule == "plateau":
                scheduler.step(val_metrics["loss"])
        for name, value in metrics.items():
            history.setdefault(name, []).append((epoch, value))
        if rank == 0:
            extra = {"scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(), "best_loss": best_loss,
                     "metrics": metrics, "history": history, "mlflow_run_id": tracker.run_id,
                     "validation": {"metrics": val_metrics, "labels": val_labels.tolist(),
                                    "probs": val_probs.tolist()} if val_metrics else None}
            # last.pth last: a kill before it redoes the epoch, one after it finds all of the epoch's files written
            if improved:
                save_checkpoint(ckpt_dir / "best.pth", model, model_cfg, epoch, optimizer, extra=extra)
            if epoch % cfg.checkpoint_every == 0:
                save_checkpoint(ckpt_dir / f"epoch_{epoch:04d}.pth", model, model_cfg, epoch, optimizer, extra=extra)
            save_checkpoint(ckpt_dir / "last.pth", model, model_cfg, epoch, optimizer, extra=extra)
            _record_epoch(tracker, ckpt_dir, epoch, metrics, cfg.checkpoint_every)
            # the bar shows the headline; the whole line goes to the run log only (cluster/logs.py), and to MLflow
            epochs.set_postfix({k: f"{v:.3f}" for k, v in metrics.items() if k in EPOCH_POSTFIX}, refresh=False)
            log.info("epoch %d: %s", epoch, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()),
                     extra={"file_only": True})
    epochs.close()
    skipped = sum(count for _, count in history.get("train_skipped_steps", []))
    if skipped and rank == 0:  # once, not per epoch: the run log's epoch lines and MLflow have them per epoch
        log.warning("skipped %d of %d optimizer steps whose gradients were not finite (precision %s): "
                    "train_skipped_steps per epoch in MLflow", skipped,
                    sampler.steps_per_epoch * len(history["train_skipped_steps"]), plan.precision)
    if val_metrics and rank == 0:
        _log_plots(tracker, run_dir, history, val_labels, val_probs, val_metrics)
    barrier()
    return model, val_metrics


def _record_epoch(tracker: Tracker, ckpt_dir: Path, epoch: int, metrics: dict[str, float],
                  checkpoint_every: int) -> None:
    """Log a checkpointed epoch to MLflow: its periodic checkpoint as an artifact and its metrics, each unless
    the run has it already. Called again for the epoch a run resumes after, whose logging a kill may have cut."""
    path = ckpt_dir / f"epoch_{epoch:04d}.pth"
    if epoch % checkpoint_every == 0 and path.is_file():
        tracker.log_artifact_once(path, "checkpoints")
    tracker.log_metrics_once(metrics, step=epoch)


def _log_plots(tracker: Tracker, run_dir: Path, history: dict, labels, probs, val_metrics: dict) -> None:
    paths = {"curves.png": lambda p: plots.plot_curves(history, p),
             "confusion.png": lambda p: plots.plot_confusion(confusion(labels, probs >= 0.5), ("no fight", "fight"), p),
             "roc.png": lambda p: plots.plot_roc(labels, probs, val_metrics["roc_auc"], p)}
    for name, draw in paths.items():
        draw(run_dir / "plots" / name)
        tracker.log_artifact(run_dir / "plots" / name, "plots")
