"""scripts/slurm/train.sbatch on a real Slurm: sbatch -> srun -> torchrun -> `fightwatch train`, on one node with
2 ranks, and on 2 nodes with one rank each, the nodes being network namespaces (tests/support/netns.py) with a
slurmd each.

Needs: root, and Debian's slurm-wlm + munge (installed here with apt-get when missing and root; .ci/run installs
them too). Without them, or when the daemons cannot start in this sandbox, it skips with the exact reason.
The 2-node tests also need network namespaces (root, iproute2, util-linux's nsenter and unshare); where their
cluster does not come up but a single-node one does, they fail: the fault is theirs, not the sandbox's.
Takes 2-3 minutes on 2 cores: prepare (~20-30 s, the shared `prepared` fixture), Slurm up (~1 s), each job (~45 s).
The tests own munged/slurmctld/slurmd (tests/support/slurm_cluster.py), and the namespaces, and leave nothing running,
even on failure.
"""

import shutil

import pytest

from tests.support.commands import ROOT
from tests.support.netns import Network, require_namespaces
from tests.support.slurm_cluster import SlurmCluster, Unavailable, free_port
from tests.support.training import TINY, mlflow_runs

pytestmark = pytest.mark.slow  # every test here starts processes or clusters

SBATCH = ROOT / "scripts" / "slurm" / "train.sbatch"


def _running(cluster: SlurmCluster, what: str):
    try:
        cluster.start()
    except Unavailable as e:
        reason = f"no {what} Slurm here: {e}"
        if cluster.hosts:  # the sandbox's fault only where one node fails too, else the hosts' setup's
            single = SlurmCluster()
            try:
                single.start()
            except Unavailable:
                pytest.skip(reason)
            finally:
                single.stop()
            pytest.fail(f"{reason}\n(a single-node Slurm does run here)")
        pytest.skip(reason)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def slurm():
    yield from _running(SlurmCluster(), "single-node")


@pytest.fixture(scope="module")
def slurm_on_two_hosts():
    require_namespaces()
    with Network(2) as net:
        yield from _running(SlurmCluster(hosts=net.hosts), "2-node")


def _train(slurm: SlurmCluster, prepared, tmp_path, nodes: int, ranks_per_node: int):
    """sbatch --wait train.sbatch on `nodes` nodes with the tiny config for 2 epochs, checked down to the MLflow
    run; the job's id, stdout and stderr for more checks."""
    run_dir = tmp_path / "run"
    shutil.copytree(prepared, run_dir)  # the session's prepared clips (tests/conftest.py), trained in a copy
    logs = tmp_path / "logs"
    logs.mkdir()
    env = slurm.env
    env.pop("MLFLOW_TRACKING_URI", None)  # the SQLite store in run_dir
    env.update(FIGHTWATCH_NPROC_PER_NODE=str(ranks_per_node), FIGHTWATCH_RDZV_PORT=str(free_port()),
               LOGLEVEL="INFO")
    # From the repo root, as a user would (the script finds .venv from the submit dir); sbatch's flags override
    # the script's cluster-sized defaults (2 nodes, 64 CPUs, 24 h, logs/ in the repo).
    result = slurm.command(
        "sbatch", "--wait", f"--nodes={nodes}", f"--cpus-per-task={slurm.cpus}", "--time=10",
        f"--output={logs}/fightwatch-%j.out", f"--error={logs}/fightwatch-%j.err",
        str(SBATCH), "configs/demo.yaml", f"run_dir={run_dir}", *TINY, "train.epochs=2",
        cwd=ROOT, env=env, timeout=300)
    out = "\n".join(p.read_text(errors="replace") for p in sorted(logs.glob("*.out")))
    err = "\n".join(p.read_text(errors="replace") for p in sorted(logs.glob("*.err")))
    report = f"sbatch: {result.stdout}{result.stderr}\n--- job stdout:\n{out[-3000:]}\n--- job stderr:\n{err[-6000:]}"
    assert result.returncode == 0, f"{report}\n{slurm.diagnostics()}"

    job_id = result.stdout.split()[-1]
    assert (logs / f"fightwatch-{job_id}.out").exists() and (logs / f"fightwatch-{job_id}.err").exists(), report
    assert f"{nodes} node(s)" in out and f"x {ranks_per_node} rank(s)" in out, report
    assert f"rendezvous {slurm.node}:{env['FIGHTWATCH_RDZV_PORT']}" in out, report
    assert "train.sbatch: done" in out, report
    # torchrun's own log (LOGLEVEL=INFO): the c10d rendezvous completed and the worker group ran.
    assert "Rendezvous complete for workers" in err, report
    assert "restart_count=0" in err and "restart_count=1" not in err, report  # no restart needed

    assert (run_dir / "model.pth").exists(), report
    client, runs = mlflow_runs(run_dir)
    assert len(runs) == 1 and runs[0].data.params["world_size"] == str(nodes * ranks_per_node), report
    for key in ("train_loss", "val_loss"):
        steps = sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, key))
        assert steps == [1, 2], (key, steps)
    return job_id, out, err


@pytest.mark.timeout(400)
def test_sbatch_trains_through_srun_and_torchrun(slurm, prepared, tmp_path):
    _train(slurm, prepared, tmp_path, nodes=1, ranks_per_node=2)


def test_srun_runs_a_task_on_each_host(slurm_on_two_hosts):
    """Each task sees its own host: the node's name as hostname, the host's address as its only one."""
    slurm = slurm_on_two_hosts
    result = slurm.command("srun", "--nodes=2", "--ntasks-per-node=1", "sh", "-c", 'echo "$(hostname) $(hostname -I)"',
                           timeout=60)
    assert result.returncode == 0, f"{result.stderr}\n{slurm.diagnostics()}"
    assert sorted(line.split() for line in result.stdout.splitlines()) == \
        [[node, address] for node, address in zip(slurm.nodes, slurm.addresses)], result.stdout


@pytest.mark.timeout(400)
def test_sbatch_trains_on_two_hosts_one_rank_each(slurm_on_two_hosts, prepared, tmp_path):
    job_id, out, err = _train(slurm_on_two_hosts, prepared, tmp_path, nodes=2, ranks_per_node=1)
    assert "(n[1-2])" in out, out
    # n2's slurmd launched the step's torchrun there, and the two agents formed one group over the link
    assert f"launch task StepId={job_id}.0" in (slurm_on_two_hosts.root / "log" / "slurmd-n2.log").read_text()
    assert "group_world_size=2" in err, err[-3000:]
