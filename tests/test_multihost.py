"""Nodes that talk over real links: each host a Linux network namespace with its own address and eth0 on a
switch (tests/support/netns.py), so torchrun agents, gloo ranks and Ray nodes reach each other over veth links, never
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

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.support.commands import FIGHTWATCH, ROOT, clean_env
from tests.support.netns import Host, Link, Network, require_namespaces
from tests.support.training import (TINY, TORCHRUN, TRAIN, assert_resumed, copy_of, interrupted_epoch, mlflow_runs,
                                    weights)

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
        marker = run_dir / "checkpoints" / "epoch_0004.pth.sha256"  # before epoch 4's last.pth: 3's is whole
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


# ---- Ray: a head on host A, a worker node on host B, a client on host C ----

RAY = str(Path(sys.executable).parent / "ray")
RAY_PORT, DASHBOARD_PORT = 6379, 8265


@dataclass
class RayCluster:
    head: Host
    worker: Host
    client: Host  # no Ray node: only submits
    env: dict  # every host's: PATH with the venv first, the cluster's auth token

    @property
    def address(self) -> str:
        return f"{self.head.address}:{RAY_PORT}"

    @property
    def url(self) -> str:
        return f"http://{self.head.address}:{DASHBOARD_PORT}"

    def alive_nodes(self) -> dict[str, str]:
        """node id -> address of the nodes the head's state API counts alive, asked from the client host."""
        result = self.client.run(["curl", "-sf", "-H", f"Authorization: Bearer {self.env['RAY_AUTH_TOKEN']}",
                                  f"{self.url}/api/v0/nodes?limit=100"], capture_output=True, text=True, timeout=30)
        if result.returncode:
            return {}
        nodes = json.loads(result.stdout)["data"]["result"]["result"]
        return {node["node_id"]: node["node_ip"] for node in nodes if node["state"] == "ALIVE"}

    def wait_for_nodes(self, count: int, starts: list[subprocess.Popen], logs: list[Path], timeout=120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.alive_nodes()) < count:
            failed = [log.read_text()[-3000:] for start, log in zip(starts, logs) if start.poll() is not None]
            assert not failed and time.monotonic() < deadline, f"{count} Ray node(s) not up: {failed}"
            time.sleep(1)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    require_namespaces()
    logs = tmp_path_factory.mktemp("ray")
    temp_dirs = [Path(tempfile.mkdtemp(prefix="rmh", dir="/tmp")) for _ in range(2)]  # short: socket paths
    env = clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                    RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                    # a killed raylet is found dead in seconds rather than the default half-minute
                    RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3")
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    with Network(3, LINK) as net:
        cluster = RayCluster(*net.hosts, env)
        node = ["--block", "--num-cpus=1", "--object-store-memory=150000000"]
        commands = [
            [RAY, "start", "--head", *node, f"--node-ip-address={cluster.head.address}", f"--port={RAY_PORT}",
             "--include-dashboard=true", "--dashboard-host=0.0.0.0", f"--dashboard-port={DASHBOARD_PORT}",
             f"--temp-dir={temp_dirs[0]}"],
            [RAY, "start", *node, f"--address={cluster.address}", f"--node-ip-address={cluster.worker.address}",
             f"--temp-dir={temp_dirs[1]}"]]
        starts, start_logs = [], []
        for host, command in zip((cluster.head, cluster.worker), commands):
            start_logs.append(logs / f"{host.name}.log")
            with open(start_logs[-1], "w") as log:
                starts.append(host.popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
            cluster.wait_for_nodes(len(starts), starts, start_logs)
        try:
            yield cluster
        finally:
            for host in (cluster.worker, cluster.head):  # SIGTERM: ray start --block stops its node
                host.kill_all(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while any(h.pids() for h in net.hosts) and time.monotonic() < deadline:
                time.sleep(0.5)
            for temp_dir in temp_dirs:
                shutil.rmtree(temp_dir, ignore_errors=True)


def videos_only(prepared: Path, tmp_path: Path) -> Path:
    """A run dir with the prepared run's videos and nothing extracted yet."""
    run_dir = tmp_path / "run"
    shutil.copytree(prepared / "videos", run_dir / "videos")
    return run_dir


def prepare_command(cluster: RayCluster, run_dir: Path) -> list[str]:
    return [str(FIGHTWATCH), "prepare", "--config", "configs/demo.yaml", f"run_dir={run_dir}", *TINY,
            "--ray-address", cluster.address]


def manifest_clips(run_dir: Path) -> list[str]:
    return [json.loads(line)["clip_id"] for line in (run_dir / "manifest.jsonl").read_text().splitlines()]


def assert_store_is_the_manifest(run_dir: Path, prepared: Path) -> None:
    """The union of the store's shards is the manifest, each clip once, and the manifest the one-host prepare's."""
    stored = [clip for index in (run_dir / "clips").glob("*.index.json")
              for clip in json.loads(index.read_text())["clips"]]
    assert sorted(stored) == sorted(manifest_clips(run_dir)) == sorted(manifest_clips(prepared))


def test_prepare_extracts_on_both_hosts(ray_cluster, prepared, tmp_path):
    run_dir = videos_only(prepared, tmp_path)
    result = ray_cluster.head.run(prepare_command(ray_cluster, run_dir), cwd=ROOT, env=ray_cluster.env,
                                  capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # "clips extracted per Ray node: 10.88.0.1 (1a2b3c4d) 22, 10.88.0.2 (5e6f7a8b) 18"
    (line,) = [line for line in (run_dir / "fightwatch.log").read_text().splitlines() if "per Ray node" in line]
    per_host = {address: int(clips) for address, clips in re.findall(r"([\d.]+) \(\w+\) (\d+)", line)}
    assert set(per_host) == {ray_cluster.head.address, ray_cluster.worker.address}, line
    assert all(per_host.values()) and sum(per_host.values()) == len(manifest_clips(prepared)), line
    assert_store_is_the_manifest(run_dir, prepared)


def test_ray_job_submitted_from_a_third_host(ray_cluster, prepared, tmp_path):
    run_dir = copy_of(prepared, tmp_path, "run")
    result = ray_cluster.client.run(
        [RAY, "job", "submit", "--address", ray_cluster.url, "--submission-id", "multihost",
         "--working-dir", str(ROOT), "--", "python", "scripts/ray_job.py", "--config", "configs/demo.yaml",
         f"run_dir={run_dir}", *TINY, "train.epochs=1", "dist.backend=gloo", "--workers", "2",
         "--cpus-per-worker", "1"], cwd=ROOT, env=ray_cluster.env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Ray cluster: 2 node(s) with CPUs, 2 CPUs" in output, output[-6000:]
    assert f"0 new + {len(manifest_clips(prepared))} already stored" in output, output[-6000:]
    assert (run_dir / "model.pth").is_file()  # written by the worker, wherever it ran: the run dir is shared
    client, runs = mlflow_runs(run_dir)
    # 2 workers of a CPU each on 2 one-CPU nodes: Ray Train's gloo group spans the link (before each worker bound
    # gloo to its interface towards the master, it listened on 127.0.0.1 and the group never formed)
    assert len(runs) == 1 and runs[0].data.params["world_size"] == "2"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")] == [1]


def test_a_raylet_killed_mid_extraction_loses_and_doubles_no_clip(ray_cluster, prepared, tmp_path):
    """Last: it leaves the cluster without host B's node."""
    run_dir = videos_only(prepared, tmp_path)
    with open(tmp_path / "prepare.log", "w") as log:
        prepare = ray_cluster.head.popen(prepare_command(ray_cluster, run_dir), cwd=ROOT, env=ray_cluster.env,
                                         stdout=log, stderr=subprocess.STDOUT)
    # mid-run: host B's worker is extracting a video (Ray titles a task's process ray::<task name>)
    extracting = lambda p: "_extract_video" in " ".join(p.cmdline())  # noqa: E731
    deadline = time.monotonic() + 120
    while not processes_on(ray_cluster.worker, extracting) and prepare.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert prepare.poll() is None, "prepare ended before host B extracted anything"
    (raylet,) = processes_on(ray_cluster.worker, lambda p: p.name() == "raylet")
    raylet.send_signal(signal.SIGKILL)
    done = len(list((run_dir / "clips").glob("*.index.json")))
    assert done < len(list((prepared / "clips").glob("*.index.json"))), "the extraction should be mid-run"

    failed = prepare.wait(timeout=300)
    print(f"prepare with host B's raylet killed after {done} video(s): {'failed' if failed else 'completed'}")
    if failed:  # the run may fail with the node; a re-run extracts what is missing
        rerun = ray_cluster.head.run(prepare_command(ray_cluster, run_dir), cwd=ROOT, env=ray_cluster.env,
                                     capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_store_is_the_manifest(run_dir, prepared)

