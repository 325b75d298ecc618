"""How Ray Train's workers map onto a Ray cluster: by default one worker per NUMA node (or socket) of every
alive node, pinned there by Ray's node label, each reserving that domain's cores. Pure: cluster/ray_train.py
supplies the nodes' CPUs and domains from the live cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from data.errors import InputError

log = logging.getLogger(__name__)

NODE_ID_LABEL = "ray.io/node-id"  # Ray's built-in node label, used to pin workers to nodes


@dataclass
class WorkerPlan:
    num_workers: int
    cpus_per_worker: int
    label_selector: list[dict[str, str]] | None  # one per worker: the node it must run on; None: Ray places them

    def line(self) -> str:
        where = "placed by Ray"
        if self.label_selector:
            per_node: dict[str, int] = {}
            for selector in self.label_selector:
                per_node[selector[NODE_ID_LABEL]] = per_node.get(selector[NODE_ID_LABEL], 0) + 1
            where = ", ".join(f"{n} on node {node[:8]}" for node, n in per_node.items())
        return f"{self.num_workers} worker(s) x {self.cpus_per_worker} CPU ({where})"


def plan_workers(node_cpus: dict[str, int], layout: dict[str, list[int]], per: str, workers: int | None,
                 cpus_per_worker: int | None) -> WorkerPlan:
    """node_cpus: node id -> the CPUs Ray offers there; layout: node id -> cores of each `per` domain there
    (needed unless both workers and cpus_per_worker are given). Without --workers: one worker per domain of
    each node that has room for it, pinned by node label; cpus_per_worker defaults to the smallest domain."""
    if not node_cpus:
        raise InputError("the Ray cluster has no alive node with CPUs")
    if workers is not None and workers < 1 or cpus_per_worker is not None and cpus_per_worker < 1:
        raise InputError("--workers and --cpus-per-worker must be at least 1")
    if cpus_per_worker is None:
        cpus_per_worker = max(1, min(c for cores in layout.values() for c in cores))
    if workers is not None:
        plan = WorkerPlan(workers, cpus_per_worker, None)
    else:
        selectors = []
        for node, cores in layout.items():
            fit = min(len(cores), node_cpus[node] // cpus_per_worker)
            if fit < len(cores):
                log.warning("node %s: %d %s domains but Ray offers %d CPUs, room for %d worker(s) of %d CPUs",
                            node[:8], len(cores), per, node_cpus[node], fit, cpus_per_worker)
            selectors += [{NODE_ID_LABEL: node}] * fit
        plan = WorkerPlan(len(selectors), cpus_per_worker, selectors)
    if plan.num_workers < 1 or cpus_per_worker > max(node_cpus.values()):
        raise InputError(f"no Ray node has {cpus_per_worker} CPUs for a worker (nodes offer "
                         f"{sorted(node_cpus.values())}); lower --cpus-per-worker")
    if plan.num_workers * cpus_per_worker > sum(node_cpus.values()):
        raise InputError(f"{plan.num_workers} workers x {cpus_per_worker} CPUs need more than the cluster's "
                         f"{sum(node_cpus.values())} CPUs; lower --workers or --cpus-per-worker")
    return plan
