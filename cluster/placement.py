"""Where each DDP rank of a node runs: its CPUs, its NUMA domain, its oneCCL workers.

A rank is one training process; a node runs `nproc_per_node` of them (by default one per NUMA node,
or per socket), and each binds itself at start from LOCAL_RANK with `bind_local_rank`, whichever
launcher started it (torchrun, srun, Ray). `plan_ranks` is pure, so it is tested on recorded
topologies (`cluster.topology`); `fightwatch plan` prints its result.

Rules: a rank gets whole physical cores (their SMT siblings too with use_logical_cores; two ranks
never share a core). One rank per domain by default; any other count splits the node's cores into
contiguous, equal-as-possible chunks, inside each domain when the count is a multiple of the
number of domains. `ccl_workers` K gives the last K cores of each rank's chunk to oneCCL's
communication workers, so they do not preempt compute threads.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass

from cluster.topology import Cpu, Topology, format_cpulist
from data.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankBinding:
    local_rank: int
    domain: int  # the NUMA node (or socket) id this rank lives on
    cpus: tuple[int, ...]  # compute threads' CPUs
    ccl_worker_cpus: tuple[int, ...]  # cores reserved for oneCCL workers (empty when ccl_workers == 0)

    def env(self) -> dict[str, str]:
        """Environment for this rank's thread pools; `fightwatch plan` prints it for launchers to export.

        oneCCL reads CCL_* when the process group starts, so setting them in `bind_local_rank` is
        early enough. No OMP_PLACES/OMP_PROC_BIND/KMP_AFFINITY: with them the OpenMP runtime pins the main
        thread to the first CPU, and with it every DataLoader worker and helper thread started
        later; the process affinity set by `bind_local_rank` already keeps threads on these CPUs.

        Memory needs no setting: once threads are pinned, Linux's first-touch policy allocates
        each page on the node of the thread that first writes it, i.e. this rank's node. Where
        the launcher has numactl, `numactl --localalloc` (or `--membind=<domain>`) makes it
        explicit, covering allocations made before the binding.
        """
        env = {"OMP_NUM_THREADS": str(len(self.cpus)),
               "CCL_WORKER_COUNT": str(len(self.ccl_worker_cpus) or 1)}  # 1 is oneCCL's default
        if self.ccl_worker_cpus:
            env["CCL_WORKER_AFFINITY"] = ",".join(map(str, self.ccl_worker_cpus))
        return env


def _cores(cpus: list[Cpu]) -> list[list[int]]:
    """Each physical core among `cpus` as its online logical CPU ids, first thread first."""
    threads: dict[tuple[int, int], list[int]] = {}
    for cpu in sorted(cpus, key=lambda c: c.id):
        threads.setdefault((cpu.socket, cpu.core), []).append(cpu.id)
    return list(threads.values())


def _split(items: list, parts: int) -> list[list]:
    """`items` in `parts` contiguous chunks whose sizes differ by at most one, larger first."""
    size, extra = divmod(len(items), parts)
    bounds = [i * size + min(i, extra) for i in range(parts + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


def plan_ranks(topo: Topology, per: str = "numa", nproc_per_node: int | None = None,
               use_logical_cores: bool = False, ccl_workers: int = 0) -> list[RankBinding]:
    """One binding per local rank of a node with topology `topo` (see the module doc for the rules)."""
    domains = {d: _cores(cpus) for d, cpus in topo.domains(per).items()}
    nproc = len(domains) if nproc_per_node is None else nproc_per_node
    total = sum(map(len, domains.values()))
    if nproc < 1:
        raise InputError(f"--nproc-per-node must be at least 1, got {nproc}")
    if ccl_workers < 0:
        raise InputError(f"--ccl-workers must be 0 or more, got {ccl_workers}")
    if nproc > total:
        raise InputError(f"{nproc} ranks per node but {topo.source} has {total} physical cores "
                         f"({len(domains)} {per} domain(s)); lower --nproc-per-node to at most {total}")

    # Chunks of (domain, core) pairs: kept inside domains when they divide evenly among them.
    if nproc % len(domains) == 0:
        per_domain = nproc // len(domains)
        if per_domain > min(map(len, domains.values())):
            raise InputError(f"{nproc} ranks per node is {per_domain} per {per} domain, but the smallest domain of "
                             f"{topo.source} has {min(map(len, domains.values()))} physical cores; "
                             f"lower --nproc-per-node")
        chunks = [chunk for d, cores in domains.items() for chunk in _split([(d, c) for c in cores], per_domain)]
    else:
        chunks = _split([(d, c) for d, cores in domains.items() for c in cores], nproc)

    bindings = []
    for rank, chunk in enumerate(chunks):
        if len(chunk) <= ccl_workers:
            raise InputError(f"--ccl-workers {ccl_workers} leaves local rank {rank} no compute core (it has "
                             f"{len(chunk)}); lower --ccl-workers or --nproc-per-node")
        compute, reserved = chunk[:len(chunk) - ccl_workers], chunk[len(chunk) - ccl_workers:]
        # A rank that straddles domains (an uneven count) is filed under the one holding most of its cores.
        domain = Counter(d for d, _ in chunk).most_common(1)[0][0]
        cpus = [cpu for _, core in compute for cpu in (core if use_logical_cores else core[:1])]
        # One worker per reserved core, on its first thread; its siblings stay idle rather than slow it.
        bindings.append(RankBinding(rank, domain, tuple(sorted(cpus)), tuple(core[0] for _, core in reserved)))
    return bindings


def bind_local_rank(binding: RankBinding) -> None:
    """Pin this process to its rank's CPUs and size torch's thread pool to them.

    Call it first thing in the rank, before torch runs any parallel op: the affinity of the
    calling thread is inherited only by threads created after it.
    """
    import torch  # planning stays importable and testable without torch

    os.environ.update(binding.env())
    os.sched_setaffinity(0, binding.cpus)
    torch.set_num_threads(len(binding.cpus))
    log.info("local rank %d: %d threads on CPUs %s (domain %d)%s", binding.local_rank, len(binding.cpus),
             format_cpulist(binding.cpus), binding.domain,
             f", oneCCL workers on {format_cpulist(binding.ccl_worker_cpus)}" if binding.ccl_worker_cpus else "")


def plan_json(topo: Topology, bindings: list[RankBinding], nnodes: int, per: str = "numa") -> dict:
    """What `fightwatch plan` prints: the node's placement, the same on each of the nnodes nodes."""
    if nnodes < 1:
        raise InputError(f"--nnodes must be at least 1, got {nnodes}")
    return {
        "source": topo.source, "per": per, "nnodes": nnodes, "ranks_per_node": len(bindings),
        "world_size": nnodes * len(bindings),
        "ranks": [{"local_rank": b.local_rank, "domain": b.domain, "cpus": list(b.cpus),
                   "cpulist": format_cpulist(b.cpus), "ccl_worker_cpus": list(b.ccl_worker_cpus), "env": b.env()}
                  for b in bindings],
    }
