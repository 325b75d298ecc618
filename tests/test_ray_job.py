"""scripts/ray_job.py for real: a local Ray head with the job API, the job sent with the `ray job submit` CLI.

The job prepares the tiny synthetic set with Ray Data and trains it with Ray Train (2 workers of 1 CPU on this
2-CPU machine); the test then reads what it left: the job status, model.pth and the MLflow store.

The head is torn down through its own process group (SIGTERM, then SIGKILL to what is left), not
with `ray stop`: that kills every Ray process on the machine, other test runs' clusters included.
"""

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

from tests.support.commands import ROOT, free_port
from tests.support.training import TINY

pytestmark = pytest.mark.slow  # every test here starts processes or clusters

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")



@dataclass
class Head:
    url: str  # the dashboard (job API)
    env: dict  # for the ray CLI: PATH with the venv first, the cluster's auth token
    temp_dir: Path
    log: Path


def wait_for_job_api(head: Head, process: subprocess.Popen, timeout: float = 90) -> None:
    request = urllib.request.Request(f"{head.url}/api/jobs/",
                                     headers={"Authorization": f"Bearer {head.env['RAY_AUTH_TOKEN']}"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"ray start exited:\n{head.log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"no job API at {head.url} after {timeout} s:\n{head.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def ray_head():
    temp_dir = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    dashboard_port = free_port()
    head = Head(f"http://127.0.0.1:{dashboard_port}", env, temp_dir, temp_dir / "ray_start.log")
    with open(head.log, "w") as log:
        process = subprocess.Popen(
            [RAY, "start", "--head", "--block", f"--port={free_port()}", f"--dashboard-port={dashboard_port}",
             "--dashboard-host=127.0.0.1", f"--ray-client-server-port={free_port()}",
             f"--dashboard-agent-listen-port={free_port()}", "--num-cpus=2", "--include-dashboard=true",
             f"--temp-dir={temp_dir}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_job_api(head, process)
        yield head
    finally:
        # The cluster is this process group: ray start, the processes it started and their workers.
        for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(grace)
        process.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit(head: Head, submission_id: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, "job", "submit", "--address", head.url, "--submission-id", submission_id,
                           "--working-dir", str(ROOT), "--", "python", "scripts/ray_job.py", *args],
                          env=head.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def job_status(head: Head, submission_id: str) -> str:
    result = subprocess.run([RAY, "job", "status", "--address", head.url, submission_id], env=head.env,
                            capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr


def mlflow_runs(run_dir):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run_dir}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "fightwatch-demo"]
    return client, client.search_runs([experiment.experiment_id])


def test_job_prepares_and_trains_with_two_workers(ray_head, tmp_path):
    run_dir = tmp_path / "run"
    result = submit(ray_head, "fightwatch-ok", "--config", "configs/demo.yaml", f"run_dir={run_dir}", *TINY,
                    "train.epochs=2", "tracking.run_name=ray-job", "dist.backend=gloo", "dist.timeout_s=60",
                    "--workers", "2", "--cpus-per-worker", "1")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Job 'fightwatch-ok' succeeded" in job_status(ray_head, "fightwatch-ok")
    assert "train: 2 worker(s) x 1 CPU" in output and "world_size=2" in output, output[-6000:]

    assert (run_dir / "model.pth").is_file()
    client, runs = mlflow_runs(run_dir)
    assert len(runs) == 1, [r.info.run_name for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "ray-job"
    for key in ("train_loss", "val_loss"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [1, 2], key
    # the driver's closing lines name the absolute run dir and the MLflow run
    assert f"run dir:    {run_dir}\n" in output
    assert f"sqlite:///{run_dir}/mlflow.db run {run.info.run_id}" in output
    assert (run_dir / "ray_train").is_dir()

    # what `--working-dir` uploaded: the code, not the virtualenv or the runs (.gitignore), under Ray's limit
    logs = "".join(p.read_text(errors="replace")
                   for p in (ray_head.temp_dir / "session_latest" / "logs").glob("dashboard*.log"))
    pushed = set(re.findall(r"Pushing file package 'gcs://(_ray_pkg_\w+)\.zip' \(([\d.]+)MiB\)", logs))
    assert len(pushed) == 1, pushed
    ((package, mib),) = pushed
    mib = float(mib)
    print(f"working dir upload: {mib} MiB (limit {GCS_STORAGE_MAX_SIZE / 2**20:.0f} MiB)")
    assert mib * 2**20 < GCS_STORAGE_MAX_SIZE
    unpacked = ray_head.temp_dir / "session_latest" / "runtime_resources" / "working_dir_files" / package
    assert (unpacked / "scripts" / "ray_job.py").is_file()
    assert not (unpacked / ".venv").exists() and not (unpacked / "runs").exists()


def test_bad_input_fails_the_job_with_one_line(ray_head, tmp_path):
    result = submit(ray_head, "fightwatch-bad", "--config", "configs/demo.yaml", f"run_dir={tmp_path / 'run'}",
                    "train.lrr=1", timeout=120)
    assert result.returncode != 0, (result.stdout + result.stderr)[-3000:]
    assert "Job 'fightwatch-bad' failed" in job_status(ray_head, "fightwatch-bad")
    logs = subprocess.run([RAY, "job", "logs", "--address", ray_head.url, "fightwatch-bad"], env=ray_head.env,
                          capture_output=True, text=True, timeout=60).stdout
    errors = [line for line in logs.splitlines() if line.startswith("ray_job: error:")]
    assert len(errors) == 1 and "unknown key 'train.lrr'" in errors[0], logs[-3000:]
    assert "Traceback" not in logs


def test_rays_requirement_has_an_upper_bound_that_the_installed_ray_meets():
    """cluster/ray_train.py subclasses Ray Train's backend (TorchConfig.backend_cls, its on_start), internals a new
    major version may change: pyproject.toml bounds ray below it, and the installed ray is inside the range."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+")
    from importlib.metadata import version

    from packaging.requirements import Requirement

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray,) = [r for r in map(Requirement, dependencies) if r.name == "ray"]
    assert any(spec.operator in ("<", "<=", "~=", "==", "===") for spec in ray.specifier), f"{ray}: no upper bound"
    assert ray.specifier.contains(version("ray"), prereleases=True), f"ray {version('ray')} is outside {ray}"
