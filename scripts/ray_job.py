#!/usr/bin/env python
"""fightwatch as one Ray job: the clips extracted with Ray Data, then DDP training with Ray Train, on one cluster.

Submit it from the repository root (Ray uploads the directory, without what .gitignore lists, as the job's
working directory; the driver and every worker run in a copy of it):

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python scripts/ray_job.py --config configs/ava_fight.yaml --base-dir /shared/fightwatch [KEY=VALUE ...]

Steps: load and validate the config; join the job's cluster (`ray.init()`, RAY_ADDRESS is set for job drivers);
`run_prepare` (Ray Data tasks across the cluster write the clip store under run_dir); then `run_train` in
every worker of a Ray Train TorchTrainer, which initialises the torch.distributed process group (backend from
`dist.backend`, collective timeout `dist.timeout_s`). By default there is one worker per `dist.per` domain
(NUMA node) of each alive node, pinned to that node and reserving the domain's physical cores; each worker
binds its cores from its local rank (cluster/distributed.py).
Rank 0 logs to MLflow, writes the checkpoints and `<run_dir>/model.pth`, and reports the final validation
metrics and the MLflow run id back to this driver, which prints them with the absolute run dir. A resubmission
with the same run_dir skips the clips already extracted and resumes from `<run_dir>/checkpoints`.

Paths: relative paths in the config (run_dir, data.cache_dir, data.video_root, data.folders_root, the AVA
files, model.pretrained) are made absolute against --base-dir before anything runs, and the workers get the
absolute paths. On a cluster of more than one node run_dir and the inputs must be on storage every node
mounts at the same path (NFS or similar): Ray Data tasks write clips into run_dir on whichever node they run,
and every rank reads them back. Without --base-dir they resolve against the driver's working directory, which
in a Ray job is Ray's temporary copy of the uploaded directory on the head node: the results would land there.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# `python scripts/ray_job.py` puts scripts/ first on sys.path; the packages are one level up, in the job's
# working directory (Ray also puts that on the workers' PYTHONPATH).
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import ray  # noqa: E402

from data.errors import InputError  # noqa: E402

log = logging.getLogger("fightwatch.ray_job")

EXAMPLES = """\
examples:
  # on a cluster (run_dir and the data on storage all nodes share):
  ray job submit --address http://head:8265 --working-dir . -- \\
      python scripts/ray_job.py --config configs/ava_fight.yaml --base-dir /nfs/fightwatch
  # the demo config on a 2-CPU machine, 2 workers of 1 CPU, a quick run:
  ray job submit --working-dir . -- python scripts/ray_job.py --config configs/demo.yaml \\
      run_dir=/tmp/fw-demo train.epochs=2 --workers 2 --cpus-per-worker 1

The job's driver prints the absolute run dir, the model, the MLflow tracking URI and run id at the end.
Bad input (a missing file, an unknown config key) ends the job with one line and exit code 2.
"""

# Config keys holding filesystem paths: relative ones are resolved against --base-dir in the driver.
PATH_KEYS = ("run_dir", "data.cache_dir", "data.video_root", "data.folders_root", "data.ava.train_csv",
             "data.ava.val_csv", "data.ava.label_map", "data.ava.excluded", "model.pretrained", "dist.topology")
NODE_ID_LABEL = "ray.io/node-id"  # Ray's built-in node label, used to pin workers to nodes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/ray_job.py",
        description="Prepare the clips with Ray Data and train the 3D ResNet with Ray Train (torch DDP on CPUs), "
                    "as the entrypoint of `ray job submit`. Relative paths in the config resolve against "
                    "--base-dir; on more than one node run_dir must be on storage every node shares (NFS).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/ava_fight.yaml",
                        help="experiment YAML, relative to the job's working directory (Ray's copy of --working-dir); an "
                             "absolute path must exist on every node (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("more_overrides", nargs="*", metavar="KEY=VALUE", help="more overrides, as with --set")
    parser.add_argument("--base-dir", type=Path,
                        help="directory that relative config paths (run_dir, data and model paths) resolve "
                             "against; give a shared directory, e.g. --base-dir \"$PWD\" when the submitting "
                             "directory is on NFS (default: the driver's working directory, which in a Ray job "
                             "is Ray's temporary copy of --working-dir on the head node)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="training workers (DDP ranks); default: one per dist.per domain (NUMA node or "
                             "socket) of every alive node with CPUs, each pinned to its node")
    parser.add_argument("--cpus-per-worker", type=int, metavar="C",
                        help="CPUs Ray reserves per worker; default: the physical cores of one domain (all its "
                             "logical CPUs with dist.use_logical_cores), the smallest over the cluster")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return parser


def absolute_overrides(cfg, base: Path) -> list[str]:
    """`key=<absolute path>` overrides for the config's relative path values, resolved against `base`."""
    out = []
    for key in PATH_KEYS:
        node = cfg
        for part in key.split("."):
            node = getattr(node, part, None)
        if node is None:
            continue
        if isinstance(node, (tuple, list)):
            if any(not Path(p).is_absolute() for p in node):
                out.append(f"{key}={json.dumps([str(base / p) for p in node])}")
        elif not Path(node).is_absolute():
            out.append(f"{key}={json.dumps(str(base / node))}")  # JSON strings are YAML strings
    return out


def load_ccl_bindings() -> None:
    """Ray worker_process_setup_hook: register the oneCCL backend with torch.distributed in a worker process.

    Ray Train initialises the process group before the training function runs, so the bindings must be
    imported when the worker process starts.
    """
    import oneccl_bindings_for_pytorch  # noqa: F401


# ---- the cluster's shape --------------------------------------------------------------------------------------

def _domain_cpus(per: str, use_logical_cores: bool, topology_file: str | None) -> list[int]:
    """CPUs a rank binds in each domain (NUMA node or socket) of the machine this runs on: as bind_rank counts."""
    from cluster.topology import load_topology

    topology = load_topology(topology_file)
    return [len(cpus if use_logical_cores else topology.physical(cpus))
            for _, cpus in sorted(topology.domains(per).items())]


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


def cpu_nodes() -> list[dict]:
    """The alive Ray nodes that offer CPUs (a head started with --num-cpus=0 runs no workers)."""
    return [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]


def domain_layout(nodes: list[dict], dist) -> dict[str, list[int]]:
    """node id -> CPUs per domain, from a tiny task pinned to each node (nodes may differ)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_domain_cpus)
    refs = {n["NodeID"]: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(dist.per, dist.use_logical_cores, dist.topology) for n in nodes}
    return {node: ray.get(ref, timeout=120) for node, ref in refs.items()}


def plan_workers(dist, workers: int | None, cpus_per_worker: int | None) -> WorkerPlan:
    """Ray Train's workers: by default one per domain (dist.per) of each alive node, pinned there by node label."""
    nodes = cpu_nodes()
    if not nodes:
        raise InputError("the Ray cluster has no alive node with CPUs")
    if workers is not None and workers < 1 or cpus_per_worker is not None and cpus_per_worker < 1:
        raise InputError("--workers and --cpus-per-worker must be at least 1")
    layout = domain_layout(nodes, dist) if workers is None or cpus_per_worker is None else {}
    if cpus_per_worker is None:
        cpus_per_worker = max(1, min(c for cores in layout.values() for c in cores))
    node_cpus = {n["NodeID"]: int(n["Resources"]["CPU"]) for n in nodes}
    if workers is not None:
        plan = WorkerPlan(workers, cpus_per_worker, None)
    else:
        selectors = []
        for node, cores in layout.items():
            fit = min(len(cores), node_cpus[node] // cpus_per_worker)
            if fit < len(cores):
                log.warning("node %s: %d %s domains but Ray offers %d CPUs, room for %d worker(s) of %d CPUs",
                            node[:8], len(cores), dist.per, node_cpus[node], fit, cpus_per_worker)
            selectors += [{NODE_ID_LABEL: node}] * fit
        plan = WorkerPlan(len(selectors), cpus_per_worker, selectors)
    if plan.num_workers < 1 or cpus_per_worker > max(node_cpus.values()):
        raise InputError(f"no Ray node has {cpus_per_worker} CPUs for a worker (nodes offer "
                         f"{sorted(node_cpus.values())}); lower --cpus-per-worker")
    if plan.num_workers * cpus_per_worker > sum(node_cpus.values()):
        raise InputError(f"{plan.num_workers} workers x {cpus_per_worker} CPUs need more than the cluster's "
                         f"{sum(node_cpus.values())} CPUs; lower --workers or --cpus-per-worker")
    return plan


# ---- training -------------------------------------------------------------------------------------------------

def train_loop_per_worker(config: dict) -> dict | None:
    """One DDP rank: the config again from its path and overrides, then run_train in the process group Ray made.

    Every rank calls ray.train.report once (it is a barrier); rank 0's carries the result, with a tiny
    checkpoint because Ray Train V2 keeps only the metrics attached to a checkpoint.
    """
    import ray.train

    from cluster.config import load_config
    from cluster.train_job import run_train
    from trainer.tracking import tracking_uri

    logging.basicConfig(level=config["log_level"], format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    # Ray Train runs this outside the working directory: a relative config path is from this node's copy of it.
    code_root = Path(sys.modules[load_config.__module__].__file__).resolve().parents[1]
    cfg = load_config(code_root / config["config"], config["overrides"])
    val_metrics, run_id = run_train(cfg)
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report({}, checkpoint=None)
        return None
    result = {**{f"val_{k}": float(v) for k, v in val_metrics.items()}, "mlflow_run_id": run_id,
              "mlflow_tracking_uri": tracking_uri(cfg.tracking, Path(cfg.run_dir)),
              "model": str(Path(cfg.run_dir) / "model.pth")}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "result.json").write_text(json.dumps(result, indent=1))
        ray.train.report(result, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    return result


def run_training(cfg, config_path: str, overrides: list[str], plan: WorkerPlan, backend: str,
                 log_level: int) -> tuple[dict, str]:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    run_dir = Path(cfg.run_dir)
    worker_env = {"worker_process_setup_hook": f"{Path(__file__).parent.name}.{Path(__file__).stem}.load_ccl_bindings"}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config_path, "overrides": overrides, "log_level": log_level},
        # Ray Train initialises the process group (env://, RANK/LOCAL_RANK/WORLD_SIZE set); run_train uses it.
        torch_config=TorchConfig(backend=backend, timeout_s=max(1, round(cfg.dist.timeout_s))),
        scaling_config=ScalingConfig(num_workers=plan.num_workers, use_gpu=False,
                                     resources_per_worker={"CPU": plan.cpus_per_worker},
                                     label_selector=plan.label_selector),
        run_config=RunConfig(name=f"train-{time.strftime('%Y%m%d-%H%M%S')}",
                             storage_path=str(run_dir / "ray_train"),  # Ray Train V2 wants it absolute
                             failure_config=FailureConfig(max_failures=0),
                             worker_runtime_env=worker_env if backend == "ccl" else None))
    result = trainer.fit()
    summary = result.metrics or result.return_value
    if not summary:
        raise RuntimeError(f"training finished but rank 0 reported nothing (Ray Train results: {result.path})")
    return summary, result.path


def input_error_in(error: BaseException) -> InputError | None:
    """The InputError a worker raised, out of Ray Train's wrappers (WorkerGroupError, the traceback wrapper)."""
    seen, todo = set(), [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, InputError):
            return e
        todo += [getattr(e, "_base_exc", None), getattr(e, "controller_failure", None), e.__cause__, e.__context__]
        todo += list((getattr(e, "worker_failures", None) or {}).values())
    return None


# ---- the job ----------------------------------------------------------------------------------------------------

def run_job(args) -> None:
    from cluster.config import load_config  # before the heavy imports, so bad input fails fast

    base = (args.base_dir or Path.cwd()).resolve()
    config_path = Path(args.config).resolve()
    if config_path.is_relative_to(ROOT):  # the workers find it in their node's copy of the working directory
        config_path = config_path.relative_to(ROOT)
    overrides = list(args.overrides) + list(args.more_overrides)
    cfg = load_config(args.config, overrides)
    resolved = absolute_overrides(cfg, base)
    overrides += resolved
    cfg = load_config(args.config, overrides)
    if resolved and args.base_dir is None and "runtime_resources" in str(base):
        log.warning("%s resolved against Ray's temporary copy of the working directory (%s); pass --base-dir "
                    "or absolute paths to keep results and find inputs",
                    ", ".join(o.partition("=")[0] for o in resolved), base)
    from ray.train import TrainingFailedError

    from cluster.distributed import choose_backend
    from cluster.prepare import run_prepare

    backend = choose_backend(cfg.dist.backend)
    print(f"run dir: {cfg.run_dir}", flush=True)

    ray.init(logging_level=logging.WARNING)  # joins the job's cluster (RAY_ADDRESS)
    cluster = ray.cluster_resources()
    print(f"Ray cluster: {len(cpu_nodes())} node(s) with CPUs, {int(cluster.get('CPU', 0))} CPUs", flush=True)

    prepared = run_prepare(cfg)
    print(f"prepare: {prepared.line()}; {len(prepared.rows)} clips in {prepared.store_root}", flush=True)

    plan = plan_workers(cfg.dist, args.workers, args.cpus_per_worker)
    print(f"train: {plan.line()}, backend {backend}", flush=True)
    try:
        summary, ray_path = run_training(cfg, str(config_path), overrides, plan, backend,
                                         logging.DEBUG if args.debug else logging.INFO)
    except TrainingFailedError as e:
        bad_input = input_error_in(e)
        if bad_input is not None:
            raise bad_input from None
        raise
    metrics = " ".join(f"{k[4:]}={v:.3f}" for k, v in summary.items() if k.startswith("val_")) or "nothing left to train"
    uri = summary["mlflow_tracking_uri"]
    print(f"\nvalidation: {metrics}\n"
          f"run dir:    {cfg.run_dir}\n"
          f"model:      {summary['model']}\n"
          f"MLflow:     {uri} run {summary['mlflow_run_id']}"
          + (f"\n            mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:") else "")
          + f"\nRay Train:  {ray_path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        run_job(args)
    except InputError as e:
        if args.debug:
            raise
        print(f"ray_job: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
