"""`fightwatch train --launch local`: torchrun on this node with the plan's number of ranks.

The ranks bind themselves (cluster/distributed.py), so this only chooses how many and starts them;
for several nodes run torchrun yourself (README) or use scripts/slurm/train.sbatch or scripts/ray_job.py.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from cluster.distributed import LAUNCHER_PID_ENV, DistConfig
from cluster.placement import plan_ranks
from cluster.topology import load_topology

log = logging.getLogger(__name__)


def local_plan(cfg: DistConfig, nproc_per_node: int | None = None) -> list:
    """This node's rank bindings: nproc_per_node ranks, else dist.local_ranks, else one per NUMA node (or
    socket); checked against the cores."""
    return plan_ranks(load_topology(cfg.topology), cfg.per, nproc_per_node or cfg.local_ranks,
                      cfg.use_logical_cores, cfg.ccl_workers)


def torchrun_command(nproc_per_node: int, train_args: list[str], max_restarts: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc_per_node}",
            f"--max-restarts={max_restarts}", "-m", "cluster.cli", "train", *train_args]


def launch_local(cfg: DistConfig, nproc_per_node: int | None, train_args: list[str], max_restarts: int = 0) -> int:
    """Run the training job as local DDP ranks; returns torchrun's exit code."""
    bindings = local_plan(cfg, nproc_per_node)
    command = torchrun_command(len(bindings), train_args, max_restarts)
    log.info("launching: %s", " ".join(command))
    # Each rank sets its own threads when it binds (cluster/placement.py); stating them here also keeps torchrun
    # from setting OMP_NUM_THREADS=1 with a banner about it. The ranks end themselves if this process dies.
    env = {**os.environ, "OMP_NUM_THREADS": str(len(bindings[0].cpus)), LAUNCHER_PID_ENV: str(os.getpid())}
    return subprocess.run(command, env=env).returncode
