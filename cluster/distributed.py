"""The DDP process group on CPUs: which backend, where the rendezvous is, which cores a rank owns.

Rendezvous comes from whoever started the ranks, in this order:
  Ray Train  -> TorchTrainer has already initialised the process group; use it, leave it to Ray.
  torchrun   -> RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT (env://).
  srun       -> SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE; the master is the first
                host of `scontrol show hostnames $SLURM_JOB_NODELIST`, port MASTER_PORT or 29500.
  otherwise  -> one process, no process group, all the machine's cores.
Backend: stock PyTorch's CPU collectives are gloo; oneCCL (`oneccl_bindings_for_pytorch`) reached its end
of life with torch 2.8 and is not on PyPI, so `ccl` is for clusters that have it. Asking for it where it
is missing fails before any rendezvous, so no rank waits for one that already died.
Each launched rank binds itself (cluster/placement.py) from its local rank, so the same code is right
under all three launchers.
Gloo's interface: left alone, gloo listens on the address the host's name resolves to, and on many hosts that is
loopback (Debian's 127.0.1.1 in /etc/hosts), which ranks on other hosts cannot reach: the group then waits out
the timeout. So, unless GLOO_SOCKET_IFNAME names one, a rank uses the interface its route to the master takes.
A rank torchrun started ends itself when its agent dies (torchrun starts ranks in sessions of their own and nothing
else would stop them: a SIGKILLed `fightwatch train` left them training on, beside the ranks of its restart), and
when the `fightwatch train --launch local` that started the agent dies (LAUNCHER_PID_ENV).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.util
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import psutil
import torch.distributed as dist

from cluster.logs import console_for_rank
from data.errors import InputError
from trainer.ddp import GradSync, destroy_process_group

log = logging.getLogger(__name__)

LAUNCHER_PID_ENV = "FIGHTWATCH_LAUNCHER_PID"  # set by cluster/launch.py for the ranks of the torchrun it starts
CCL_HINT = ("oneccl_bindings_for_pytorch is not installed (Intel ended it after torch 2.8; it is not on PyPI): on a "
            "torch 2.8 image, pip install oneccl_bind_pt==2.8.0 --index-url "
            "https://pytorch-extension.intel.com/release-whl/stable/cpu/us/ (Intel's index), or set dist.backend=gloo")


@dataclass(frozen=True)
class DistConfig:
    backend: Literal["auto", "ccl", "gloo"]
    per: Literal["numa", "socket"]
    use_logical_cores: bool
    ccl_workers: int
    topology: str | None = field(metadata={"path": True})  # an `lscpu -p=CPU,CORE,SOCKET,NODE` file; null: this node's /sys
    timeout_s: float
    bucket_mb: float
    grad_dtype: Literal["fp32", "bf16"]
    local_ranks: int | None  # ranks `demo` and `train --launch local` start here; null: one per dist.per domain

    def __post_init__(self):
        if self.timeout_s <= 0 or self.ccl_workers < 0:
            raise ValueError("timeout_s must be > 0 and ccl_workers >= 0")
        if self.local_ranks is not None and self.local_ranks < 1:
            raise ValueError(f"local_ranks must be >= 1 or null, got {self.local_ranks}")
        GradSync(self.bucket_mb, self.grad_dtype)

    @property
    def grad_sync(self) -> GradSync:
        return GradSync(self.bucket_mb, self.grad_dtype)


def ccl_importable() -> bool:
    return importlib.util.find_spec("oneccl_bindings_for_pytorch") is not None


def choose_backend(requested: str, ccl_available: Callable[[], bool] = ccl_importable) -> str:
    """'ccl' or 'gloo' for dist.backend (auto | ccl | gloo); InputError when ccl is asked for but missing."""
    if requested == "gloo" or (requested == "auto" and not ccl_available()):
        log.info("backend gloo: %s", "requested" if requested == "gloo" else "oneccl_bindings_for_pytorch not installed")
        return "gloo"
    if not ccl_available():
        raise InputError(f"dist.backend=ccl: {CCL_HINT}")
    import oneccl_bindings_for_pytorch  # noqa: F401  (registers the "ccl" backend with torch.distributed)

    log.info("backend ccl: oneccl_bindings_for_pytorch %s", "requested" if requested == "ccl" else "importable")
    return "ccl"


@dataclass(frozen=True)
class Rendezvous:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str | None
    master_port: int | None
    launcher: Literal["ray", "torchrun", "slurm", "none"]
    backend: str = "gloo"  # what process_group() chose


def slurm_first_host(nodelist: str) -> str:
    """The first host of a Slurm nodelist ("node[01-04]" -> "node01")."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError) as e:
        raise InputError(f"cannot expand SLURM_JOB_NODELIST={nodelist!r} with scontrol: {e}") from None
    return out[0]


def rendezvous_from_env(env: Mapping[str, str], already_initialized: bool = False,
                        first_host: Callable[[str], str] = slurm_first_host) -> Rendezvous:
    """Who this process is, from the launcher's environment (see the module docstring)."""
    def number(key: str, default: int | None = None) -> int:
        try:
            return int(env[key]) if key in env or default is None else default
        except (KeyError, ValueError):
            raise InputError(f"environment variable {key}={env.get(key)!r}: expected an integer") from None

    if already_initialized or "RANK" in env:
        world = number("WORLD_SIZE")
        return Rendezvous(number("RANK"), world, number("LOCAL_RANK", 0), number("LOCAL_WORLD_SIZE", world),
                          env.get("MASTER_ADDR"), number("MASTER_PORT", 0) or None,
                          "ray" if already_initialized else "torchrun")
    if number("SLURM_NTASKS", 1) > 1:
        world = number("SLURM_NTASKS")
        per_node = number("SLURM_NTASKS_PER_NODE", 0) or world // max(1, number("SLURM_NNODES", 1))
        return Rendezvous(number("SLURM_PROCID"), world, number("SLURM_LOCALID"), per_node,
                          first_host(env["SLURM_JOB_NODELIST"]), number("MASTER_PORT", 29500), "slurm")
    return Rendezvous(0, 1, 0, 1, None, None, "none")


def bind_rank(rdzv: Rendezvous, cfg: DistConfig) -> None:
    """Pin this rank to its cores: the plan for this node's topology and its number of local ranks."""
    from cluster.placement import bind_local_rank, plan_ranks
    from cluster.topology import load_topology

    bindings = plan_ranks(load_topology(cfg.topology), cfg.per, nproc_per_node=rdzv.local_world_size,
                          use_logical_cores=cfg.use_logical_cores, ccl_workers=cfg.ccl_workers)
    bind_local_rank(bindings[rdzv.local_rank])


def interface_towards(address: str) -> str | None:
    """The network interface this host reaches `address` through: the one holding the source address its route
    picks (connecting a UDP socket sends nothing); None where no interface holds it or there is no route."""
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(address, 9, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(sockaddr)
            local = s.getsockname()[0]
    except OSError:
        return None
    return next((name for name, addresses in psutil.net_if_addrs().items()
                 if any(a.address.split("%")[0] == local for a in addresses)), None)


def bind_gloo_towards(address: str) -> None:
    """Set GLOO_SOCKET_IFNAME, which gloo reads when a group is made, to the interface towards `address` (the
    master, or a Ray cluster's head), unless it names one already; logs the choice."""
    if not os.environ.get("GLOO_SOCKET_IFNAME"):
        interface = interface_towards(address)
        if interface:
            os.environ["GLOO_SOCKET_IFNAME"] = interface
    log.info("gloo on interface %s", os.environ.get("GLOO_SOCKET_IFNAME") or "of the host name's address")


def exit_with_launcher(rank: int, agent_pid: int, launcher_pid: int | None, every_s: float = 1.0) -> None:
    """Watch, in a daemon thread, that this rank's parent is still `agent_pid` (a dead parent's children pass to
    another) and that `launcher_pid` runs; when not, log it and exit at once (as a kill would: every file is
    written whole or not at all, and a restart resumes from the last checkpoint)."""
    launcher = _process(launcher_pid) if launcher_pid is not None else None

    def launcher_gone() -> str | None:
        if os.getppid() != agent_pid:
            return f"its torchrun agent (pid {agent_pid})"
        if launcher_pid is not None and not _running(launcher):
            return f"the fightwatch that launched it (pid {launcher_pid})"
        return None

    def watch() -> None:
        while (gone := launcher_gone()) is None:
            time.sleep(every_s)
        log.error("rank %d: %s is gone; exiting", rank, gone)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-launcher", daemon=True).start()


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _running(process: psutil.Process | None) -> bool:
    """Whether `process` still runs: not ended, not a zombie its parent has yet to reap, its pid not reused."""
    try:
        return process is not None and process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@contextlib.contextmanager
def process_group(cfg: DistConfig, env: Mapping[str, str] | None = None) -> Iterator[Rendezvous]:
    """Join (or find) the process group for the duration of the block; destroyed on every way out."""
    env = os.environ if env is None else env
    initialized = dist.is_available() and dist.is_initialized()
    rdzv = rendezvous_from_env(env, initialized)
    console_for_rank(rdzv.rank)
    rdzv = dataclasses.replace(rdzv, backend=choose_backend(cfg.backend))
    backend = rdzv.backend
    if rdzv.launcher == "none":
        log.info("one process (not launched by torchrun, srun or Ray Train): no process group")
        yield rdzv
        return
    bind_rank(rdzv, cfg)
    if initialized:
        yield rdzv  # Ray Train owns the group and destroys it
        return
    if rdzv.launcher == "torchrun":
        exit_with_launcher(rdzv.rank, os.getppid(), int(env.get(LAUNCHER_PID_ENV) or 0) or None)
    log.info("rank %d of %d (local %d of %d) joining %s:%s over %s via %s", rdzv.rank, rdzv.world_size,
             rdzv.local_rank, rdzv.local_world_size, rdzv.master_addr, rdzv.master_port, backend, rdzv.launcher)
    if rdzv.launcher == "slurm":
        os.environ.update(MASTER_ADDR=rdzv.master_addr, MASTER_PORT=str(rdzv.master_port))
    if backend == "gloo" and rdzv.master_addr:
        bind_gloo_towards(rdzv.master_addr)
    dist.init_process_group(backend, rank=rdzv.rank, world_size=rdzv.world_size,
                            timeout=datetime.timedelta(seconds=cfg.timeout_s))
    try:
        yield rdzv
    finally:
        destroy_process_group()
