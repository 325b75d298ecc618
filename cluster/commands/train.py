"""`fightwatch train`: the prepared clips of a run dir, fine-tuned with MLflow tracking, resumed when interrupted.

Reads `<run_dir>/manifest.jsonl` and `<run_dir>/clips` (written by `fightwatch prepare`), continues from the
newest valid checkpoint in `<run_dir>/checkpoints` (and its MLflow run) when there is one, and writes
`<run_dir>/model.pth` at the end, the checkpoint `fightwatch score` takes. Launched as several ranks
(torchrun, srun, Ray Train) it trains with DDP: rank 0 picks the checkpoint every rank resumes from, and
only rank 0 talks to MLflow and writes files.
"""

from __future__ import annotations

import argparse
import logging

from cluster.commands.args import add_config_args, add_deterministic_arg, overrides
from cluster.commands.prepare import check_split
from cluster.config import Config, flatten, load_config
from cluster.distributed import process_group
from cluster.launch import launch_local
from cluster.logs import log_to_run_dir
from data.dataset import ClipDataset
from data.errors import InputError
from data.files import make_run_dir
from data.store import ClipStore, read_manifest
from trainer.accel import plan_for
from trainer.checkpoint import latest_checkpoint, read_checkpoint, save_checkpoint
from trainer.ddp import barrier, from_rank0
from trainer.tracking import Tracker
from trainer.train import train

log = logging.getLogger(__name__)


def datasets(cfg: Config, store: ClipStore) -> tuple[ClipDataset, ClipDataset]:
    run_dir = make_run_dir(cfg.run_dir)
    manifest = run_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise InputError(f"{manifest}: no prepared clips; run `fightwatch prepare` with this config first")
    check_split(run_dir, cfg.data.split)
    rows, m = read_manifest(manifest), cfg.model
    subsets = {"training": training_rows(rows, cfg.data.extra_repeat),
               "validation": [r for r in rows if r["subset"] == "validation"]}
    return tuple(ClipDataset(store, subsets[subset], m.sample_size, m.sample_duration, m.normalization,
                             train=subset == "training", seed=cfg.seed)
                 for subset in ("training", "validation"))


def training_rows(rows: list[dict], extra_repeat: int) -> list[dict]:
    """The training subset, each clip of data.extra_folders `extra_repeat` times: a few dozen flagged clips weigh
    against hundreds of old ones. Each copy is its own dataset index (its own random views) and has its own
    `copy` number (its own trunk-cache views). Pure."""
    training = [r for r in rows if r["subset"] == "training"]
    return training + [{**r, "copy": k} for r in training if r.get("extra") for k in range(1, extra_repeat)]


def run_train(cfg: Config) -> tuple[dict[str, float], str | None]:
    """Train (or finish training) the run; return the last validation metrics and the MLflow run id (rank 0)."""
    run_dir = make_run_dir(cfg.run_dir)
    with process_group(cfg.dist) as rdzv, ClipStore(run_dir / "clips") as store:
        train_set, val_set = datasets(cfg, store)
        plan = plan_for(cfg.accel)
        found = latest_checkpoint(run_dir / "checkpoints") if rdzv.rank == 0 else None
        resume_path = from_rank0(str(found[0]) if found else None)
        resume = (found[1] if rdzv.rank == 0 else read_checkpoint(resume_path)) if resume_path else None
        main = rdzv.rank == 0
        with Tracker(cfg.tracking, run_dir, active=main, run_id=resume["mlflow_run_id"] if resume else None) as tracker:
            if resume is None:
                tracker.log_params({**flatten(cfg), **plan.params(), "world_size": rdzv.world_size,
                                    "launcher": rdzv.launcher, "dist.backend_used": rdzv.backend})
            model, val_metrics = train(cfg.train, cfg.model, plan, train_set, val_set, run_dir, tracker, cfg.seed,
                                       resume, cfg.dist.grad_sync)
            if main:
                # the run id lets `fightwatch evaluate` log its run as a child of this training's
                save_checkpoint(run_dir / "model.pth", model, cfg.model, cfg.train.epochs,
                                extra={"mlflow_run_id": tracker.run_id})
                tracker.log_model(model, val_set[0][0].unsqueeze(0))
        barrier()  # model.pth is whole before any rank returns
    return val_metrics, tracker.run_id


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Fine-tune the configured 3D ResNet on <run_dir>'s prepared clips (fightwatch prepare), validating every "
        "train.val_every epochs, checkpointing every epoch (last.pth), every train.checkpoint_every epochs and at "
        "the best validation loss, logging to MLflow. An interrupted run resumes from its newest valid checkpoint "
        "and continues the same MLflow run. Started as several ranks (torchrun, srun, Ray Train, or --launch local) "
        "it trains with DDP: one rank per NUMA node, each pinned to its node's cores (see `fightwatch plan`).")
    add_config_args(parser)
    add_deterministic_arg(parser)
    parser.add_argument("--launch", choices=["local"],
                        help="local: start the ranks of this node with torchrun (one per NUMA node, or "
                             "--nproc-per-node) instead of training in this process")
    parser.add_argument("--nproc-per-node", type=int, metavar="N",
                        help="ranks for --launch local (default: dist.local_ranks, else one per dist.per "
                             "domain; at most the cores)")
    parser.add_argument("--max-restarts", type=int, default=0, metavar="N",
                        help="with --launch local: restart the ranks up to N times after a failure; each "
                             "restart resumes from the last checkpoint (default: 0)")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, overrides(args))
    log_to_run_dir(cfg.run_dir)
    if args.launch == "local":
        return launch_local(cfg.dist, args.nproc_per_node, ["--config", str(args.config), *overrides(args)],
                            args.max_restarts)
    if args.nproc_per_node is not None:
        raise InputError("--nproc-per-node needs --launch local (torchrun takes its own --nproc-per-node)")
    val_metrics, run_id = run_train(cfg)
    if run_id is None:  # not rank 0: rank 0 reports
        return 0
    summary = " ".join(f"{k}={v:.3f}" for k, v in val_metrics.items()) or "nothing left to train"
    print(f"validation: {summary}\nmodel: {cfg.run_dir}/model.pth, MLflow run {run_id}")
    return 0
