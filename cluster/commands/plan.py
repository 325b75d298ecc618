"""`fightwatch plan`: which CPUs each DDP rank of a compute node runs on, as JSON (cluster/placement.py decides)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cluster.placement import plan_json, plan_ranks
from cluster.topology import load_topology


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Print, as JSON, the placement of the DDP ranks of one compute node: a rank is one training process, by "
        "default one per NUMA node, pinned to that node's physical cores so its memory stays local. Under "
        "torchrun, srun and Ray each rank binds itself from LOCAL_RANK at start with this same plan; this command "
        "shows it in advance. FILE is the output of `lscpu -p=CPU,CORE,SOCKET,NODE` recorded on a compute node; "
        "without it, this machine's topology is read from /sys.")
    parser.add_argument("--topology", metavar="FILE", type=Path,
                        help="lscpu -p=CPU,CORE,SOCKET,NODE output of a compute node (default: this machine)")
    parser.add_argument("--nnodes", type=int, default=1, metavar="N", help="compute nodes in the job (default: 1)")
    parser.add_argument("--per", choices=["numa", "socket"], default="numa",
                        help="the domain a rank stays in: a NUMA node or a whole socket (default: numa)")
    parser.add_argument("--nproc-per-node", type=int, metavar="N",
                        help="ranks per node (default: one per domain); other counts split the cores evenly")
    parser.add_argument("--use-logical-cores", action="store_true",
                        help="also run compute threads on SMT siblings (default: physical cores only)")
    parser.add_argument("--ccl-workers", type=int, default=0, metavar="K",
                        help="reserve each rank's last K cores for oneCCL communication workers (default: 0)")


def run(args: argparse.Namespace) -> None:
    topo = load_topology(args.topology)
    bindings = plan_ranks(topo, args.per, args.nproc_per_node, args.use_logical_cores, args.ccl_workers)
    print(json.dumps(plan_json(topo, bindings, args.nnodes, args.per), indent=2))
