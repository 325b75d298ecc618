"""scripts/slurm/train.sbatch on a real single-node Slurm: sbatch -> srun -> torchrun -> `fightwatch train`.

Needs: root, and Debian's slurm-wlm + munge (installed here with apt-get when missing and root; .ci/run installs
them too). Without them, or when the daemons cannot start in this sandbox, it skips with the exact reason.
Takes 1-2 minutes on 2 cores: prepare (~20-30 s, the shared `prepared` fixture), Slurm up (~1 s), the job (~45 s).
The test owns munged/slurmctld/slurmd (tests/slurm_cluster.py) and leaves nothing running, even on failure.
"""

import shutil
import subprocess

import pytest

from tests.slurm_cluster import SlurmCluster, Unavailable, free_port
from tests.helpers import ROOT, TINY, mlflow_runs

pytestmark = pytest.mark.slow  # every test here starts processes or clusters

SBATCH = ROOT / "scripts" / "slurm" / "train.sbatch"


@pytest.fixture(scope="module")
def slurm():
    cluster = SlurmCluster()
    try:
        cluster.start()
    except Unavailable as e:
        pytest.skip(f"no single-node Slurm here: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.timeout(400)
def test_sbatch_trains_through_srun_and_torchrun(slurm, prepared, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(prepared, run_dir)  # the session's prepared clips (tests/conftest.py), trained in a copy
    logs = tmp_path / "logs"
    logs.mkdir()
    env = slurm.env
    env.pop("MLFLOW_TRACKING_URI", None)  # the SQLite store in run_dir
    env.update(FIGHTWATCH_NPROC_PER_NODE="2", FIGHTWATCH_RDZV_PORT=str(free_port()), LOGLEVEL="INFO")
    # From the repo root, as a user would (the script finds .venv from the submit dir); sbatch's flags override
    # the script's cluster-sized defaults (2 nodes, 64 CPUs, 24 h, logs/ in the repo).
    result = subprocess.run(
        ["sbatch", "--wait", "--nodes=1", f"--cpus-per-task={slurm.cpus}", "--time=10",
         f"--output={logs}/fightwatch-%j.out", f"--error={logs}/fightwatch-%j.err",
         str(SBATCH), "configs/demo.yaml", f"run_dir={run_dir}", *TINY, "train.epochs=2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = "\n".join(p.read_text(errors="replace") for p in sorted(logs.glob("*.out")))
    err = "\n".join(p.read_text(errors="replace") for p in sorted(logs.glob("*.err")))
    report = f"sbatch: {result.stdout}{result.stderr}\n--- job stdout:\n{out[-3000:]}\n--- job stderr:\n{err[-6000:]}"
    assert result.returncode == 0, report

    job_id = result.stdout.split()[-1]
    assert (logs / f"fightwatch-{job_id}.out").exists() and (logs / f"fightwatch-{job_id}.err").exists(), report
    assert "x 2 rank(s)" in out and f"rendezvous {slurm.node}:{env['FIGHTWATCH_RDZV_PORT']}" in out, report
    assert "train.sbatch: done" in out, report
    # torchrun's own log (LOGLEVEL=INFO): the c10d rendezvous completed and the worker group ran.
    assert "Rendezvous complete for workers" in err, report
    assert "restart_count=0" in err and "restart_count=1" not in err, report  # no restart needed

    assert (run_dir / "model.pth").exists(), report
    client, runs = mlflow_runs(run_dir)
    assert len(runs) == 1 and runs[0].data.params["world_size"] == "2", report
    for key in ("train_loss", "val_loss"):
        steps = sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, key))
        assert steps == [1, 2], (key, steps)
