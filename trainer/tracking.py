"""MLflow tracking of a training run.

The default store is a SQLite database under the run dir, with artifacts
beside it, so a demo needs no server; MLFLOW_TRACKING_URI (or the config's
`tracking.tracking_uri`) points at a shared one instead. Only rank 0 talks to
MLflow: other ranks get a Tracker whose methods do nothing.
"""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import torch

from data.files import atomic_write

log = logging.getLogger(__name__)

# The tag that names the start which made a run, and the run dir's file holding the latest start's tag: written
# before the run is made, so a start killed at any moment after can find its run (see Tracker.__enter__).
START_TAG = "fightwatch.start"
START_FILE = "mlflow_start"


@dataclass(frozen=True)
class TrackingConfig:
    tracking_uri: str | None
    experiment: str
    run_name: str | None
    log_model: bool  # the final model as an MLflow pytorch model (seconds and a copy of the weights per run)


def tracking_uri(cfg: TrackingConfig, run_dir: Path) -> str:
    """The environment wins over the config, the config over the local default."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking_uri or f"sqlite:///{run_dir.resolve()}/mlflow.db"


def ensure_local_store(uri: str) -> None:
    """Create a local SQLite store whole or not at all. MLflow makes its tables in many steps (creation, then
    migrations), and a kill between two of them leaves a database on which every later start fails ("table ...
    already exists"), so the run could never resume: the tables are made in a temporary file beside it, which is
    renamed into place when complete. Other stores (a server, another database) are left to MLflow."""
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if path.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a start killed while making the tables
        stale.unlink()
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    SqlAlchemyStore(f"sqlite:///{partial}", (path.parent / "mlartifacts").resolve().as_uri()).engine.dispose()
    os.replace(partial, path)


def ensure_experiment(cfg: TrackingConfig, run_dir: Path) -> str:
    """The id of the config's experiment in the current tracking store, created (artifacts under
    <run_dir>/mlartifacts) when the store has none of that name."""
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(cfg.experiment, artifact_location=(run_dir / "mlartifacts").resolve().as_uri())


def mlflow_params(params: dict[str, Any]) -> dict[str, Any]:
    """Params as MLflow stores them, None written as the configs write it."""
    return {k: "null" if v is None else v for k, v in params.items()}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Tracker:
    """One MLflow run, continued when `run_id` is given (a resumed training); a no-op unless `active` (rank 0)."""

    def __init__(self, cfg: TrackingConfig, run_dir: Path, active: bool = True, run_id: str | None = None):
        self.cfg, self.run_dir, self.active = cfg, Path(run_dir), active
        self.run_id = run_id

    def __enter__(self) -> "Tracker":
        if not self.active:
            return self
        uri = tracking_uri(self.cfg, self.run_dir)
        ensure_local_store(uri)
        mlflow.set_tracking_uri(uri)
        experiment_id = ensure_experiment(self.cfg, self.run_dir)
        mlflow.set_experiment(experiment_id=experiment_id)
        if self.run_id is None:
            self.run_id = self._killed_start(experiment_id)
        if self.run_id is not None:
            mlflow.start_run(run_id=self.run_id, log_system_metrics=True)
        else:
            start = uuid.uuid4().hex
            atomic_write(self.run_dir / START_FILE, lambda f: f.write(start.encode()))
            run = mlflow.start_run(run_name=self.cfg.run_name, tags={"git_commit": git_commit(), START_TAG: start},
                                   log_system_metrics=True)
            self.run_id = run.info.run_id
        self.log_params({"torch_version": torch.__version__})
        return self

    def _killed_start(self, experiment_id: str) -> str | None:
        """The run of the latest start in this run dir when that start was killed before it finished an epoch
        (the run is still RUNNING and has no metric at a step >= 1; there is no checkpoint, or the caller would
        have given its run id): continuing it keeps one run per training, however often its start-up is cut."""
        path = self.run_dir / START_FILE
        if not path.is_file():
            return None
        client = mlflow.MlflowClient()
        runs = client.search_runs([experiment_id], f"tags.`{START_TAG}` = '{path.read_text().strip()}'")
        if len(runs) != 1 or runs[0].info.status != "RUNNING":
            return None
        run_id = runs[0].info.run_id
        if any(m.step >= 1 for key in runs[0].data.metrics if not key.startswith("system/")
               for m in client.get_metric_history(run_id, key)):
            return None
        log.info("continuing MLflow run %s, whose start was interrupted before its first epoch", run_id)
        return run_id

    def __exit__(self, exc_type, *_) -> None:
        if self.active:
            mlflow.end_run(status="FINISHED" if exc_type is None else "FAILED")

    def log_params(self, params: dict[str, Any]) -> None:
        """Log the params the run does not have yet: a continued run keeps those it was started with, as MLflow
        refuses to change a param."""
        if self.active:
            logged = mlflow.MlflowClient().get_run(self.run_id).data.params
            mlflow.log_params({k: v for k, v in mlflow_params(params).items() if k not in logged})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.active:
            mlflow.log_metrics(metrics, step=step)

    def log_metrics_once(self, metrics: dict[str, float], step: int) -> None:
        """Log `metrics` at `step` unless the run already has them (the epoch a resumed run starts after)."""
        if self.active and metrics:
            key = next(iter(metrics))
            logged = {m.step for m in mlflow.MlflowClient().get_metric_history(self.run_id, key)}
            if step not in logged:
                mlflow.log_metrics(metrics, step=step)

    def log_model(self, model: torch.nn.Module, example: torch.Tensor) -> None:
        """The model as an MLflow pytorch flavour; `example` (one input batch) gives its signature."""
        if self.active and self.cfg.log_model:
            mlflow.pytorch.log_model(model.eval(), name="model", input_example=example.numpy())

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.active:
            mlflow.log_artifact(str(path), artifact_path)

    def log_artifact_once(self, path: Path, artifact_path: str) -> None:
        """Log `path` unless the run has it whole (same name and size): a copy cut short by a kill is replaced."""
        if self.active:
            logged = {f.path: f.file_size for f in mlflow.MlflowClient().list_artifacts(self.run_id, artifact_path)}
            if logged.get(f"{artifact_path}/{path.name}") != path.stat().st_size:
                mlflow.log_artifact(str(path), artifact_path)
