"""Nodes that talk over real links: each host a Linux network namespace with its own address and eth0 on a
switch (tests/netns.py), so torchrun agents, gloo ranks and Ray nodes reach each other over veth links, never
over loopback.

torchrun: one agent per host, one rank each, meeting at a c10d store on host A's address; the tiny config
trains to the end; a rank killed on host B fails the job within dist.timeout_s and a restart resumes in the same
MLflow run. Ray: a head on host A, a worker node on host B, `fightwatch prepare` extracts on both, a raylet
killed mid-extraction loses and doubles no clip, and `ray job submit` from a third host runs scripts/ray_job.py.

Shared storage: the namespaces separate the network only; every host sees this machine's file system, so the
run dir (videos, clip store, checkpoints, the MLflow SQLite store) is at the same path on every host. That is
what the README asks of a multi-node run (storage every node mounts at the same path, e.g. NFS); here the one
file system stands in for the shared mount.

Nothing here calls `ray stop`: the hosts share one process table, so it would stop every Ray on the machine.
Each test's processes end with its Network (SIGTERM first for Ray, then SIGKILL to what is left).
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import (ROOT, TORCHRUN, TRAIN, assert_resumed, clean_env, copy_of,
                           interrupted_epoch, mlflow_runs, weights)
from tests.netns import Host, Link, Network, require_namespaces

pytestmark = pytest.mark.slow  # every test here starts hosts, agents or clusters

LINK = Link(gbit=1)  # a 1 Gbit/s link each way, as between two servers on one switch
RDZV_PORT = 29400  # each host has its own ports: the defaults are free


def processes_on(host: Host, match) -> list[psutil.Process]:
    """The processes on `host` for which match(process) holds (those that end meanwhile left out)."""
    found = []
    for pid in host.pids():
        try:
            process = psutil.Process(pid)
            if match(process):
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def start_agents(hosts: list[Host], run_dir: Path, logs: Path, *overrides: str) -> list[subprocess.Popen]:
    """One torchrun agent per host, one rank each, meeting at a c10d store the first host's agent serves on its
    own address; each agent's output in logs/<host>.log (a file: a pipe nobody reads would stall it)."""
    logs.mkdir(parents=True, exist_ok=True)
    agents = []
    for host in hosts:
        with open(logs / f"{host.name}.log", "w") as log:
            agents.append(host.popen(
                [*TORCHRUN, "--nnodes", str(len(hosts)), "--nproc-per-node", "1", "--max-restarts", "0",
                 "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{hosts[0].address}:{RDZV_PORT}",
                 "--rdzv-id", "multihost", "--rdzv-conf", f"is_host={int(host == hosts[0])}",
                 "--local-addr", host.address, *TRAIN, f"run_dir={run_dir}", *overrides],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=clean_env()))
    return agents


def outputs(hosts: list[Host], logs: Path) -> list[str]:
    return [(logs / f"{host.name}.log").read_text() for host in hosts]


def test_gloo_takes_the_interface_of_the_route_to_the_master():
    require_namespaces()
    with Network(2) as net:
        a, b = net.hosts
        probe = ("from cluster.distributed import interface_towards as towards; "
                 f"print(towards('{a.address}'), towards('127.0.0.1'), towards('192.0.2.1'))")
        result = b.run([sys.executable, "-c", probe], cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                       timeout=120)
    assert result.stdout.split() == ["eth0", "lo", "None"], result.stderr[-3000:]  # 192.0.2.1: no route


def test_two_hosts_train_with_a_c10d_rendezvous(prepared, tmp_path):
    require_namespaces()
    run_dir = copy_of(prepared, tmp_path, "run")
    with Network(2, LINK) as net:
        a, b = net.hosts
        agents = start_agents(net.hosts, run_dir, tmp_path / "logs", "train.epochs=2", "dist.timeout_s=60")
        codes = [agent.wait(timeout=600) for agent in agents]
    assert codes == [0, 0], "\n".join(out[-3000:] for out in outputs(net.hosts, tmp_path / "logs"))
    run_log = (run_dir / "fightwatch.log").read_text()  # both hosts' ranks append to the one run log
    for rank in (0, 1):
        assert f"rank {rank} of 2 (local 0 of 1) joining {a.address}:" in run_log, run_log[-3000:]
    # gloo on eth0 on both hosts: on its own it takes the host name's address, 127.0.0.1 here
    assert run_log.count("gloo on interface eth0") == 2, run_log[-3000:]
    assert weights(run_dir)
    client, runs = mlflow_runs(run_dir)
    assert len(runs) == 1 and runs[0].data.params["world_size"] == "2"
    assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")) == [1, 2]


def test_a_killed_rank_on_host_b_fails_the_job_fast_and_a_restart_resumes(prepared, tmp_path):
    require_namespaces()
    run_dir = copy_of(prepared, tmp_path, "run")
    epochs, timeout_s = 8, 20
    job = [f"train.epochs={epochs}", f"dist.timeout_s={timeout_s}"]
    with Network(2, LINK) as net:
        b = net.hosts[1]
        agents = start_agents(net.hosts, run_dir, tmp_path / "first", *job)
        marker = run_dir / "checkpoints" / "epoch_0002.pth.sha256"
        deadline = time.monotonic() + 300
        while not marker.exists() and all(agent.poll() is None for agent in agents) and time.monotonic() < deadline:
            time.sleep(0.05)
        rank1 = processes_on(b, lambda p: p.environ().get("RANK") == "1")
        assert len(rank1) == 1, f"rank 1 should be running on host B: {outputs(net.hosts, tmp_path / 'first')}"
        rank1[0].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        codes = [agent.wait(timeout=120) for agent in agents]
        failed_after = time.monotonic() - killed_at
        first = outputs(net.hosts, tmp_path / "first")
        assert all(codes), first
        assert failed_after < timeout_s, f"both agents should fail within dist.timeout_s, took {failed_after:.0f} s"
        assert "Signal 9" in first[1] or "SIGKILL" in first[1], first[1][-3000:]
        interrupted_at = interrupted_epoch(run_dir, epochs)

        restart = start_agents(net.hosts, run_dir, tmp_path / "restart", *job)
        codes = [agent.wait(timeout=600) for agent in restart]
    head_output, _ = outputs(net.hosts, tmp_path / "restart")
    assert codes == [0, 0], head_output[-3000:]
    assert_resumed(run_dir, head_output, interrupted_at, epochs)

