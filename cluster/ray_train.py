"""The job behind scripts/ray_job.py: fightwatch's prepare and training on the Ray cluster it was submitted to.

Prepare runs on Ray Data across the cluster (cluster/commands/prepare.py). Training is Ray Train's TorchTrainer with one
worker per NUMA node (or socket, `dist.per`) of every alive node with CPUs, counted by a small task pinned to each
node (the plan: cluster/ray_workers.py; `--workers` and `--cpus-per-worker` override it), the same backend choice
and timeout as torchrun's, and the same run_train in every worker: Ray Train has made the process group, and each
worker still pins itself from LOCAL_RANK. Each worker binds gloo to its interface towards the master (or loads
oneCCL's bindings) before Ray Train makes the group. Workers do not run in the driver's copy of the working
directory, so relative config paths resolve against --base-dir, and on several nodes run_dir must be on storage
every node mounts at the same path.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import ray

from cluster.commands.args import overrides as command_overrides
from cluster.ray_workers import WorkerPlan, plan_workers
from data.errors import InputError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]  # the job's working directory: the repository


def prepare_worker(backend: str, master_addr: str) -> None:
    """Run in every training worker before Ray Train makes the process group: what cluster.distributed's
    process_group does for torchrun and Slurm, which never runs under Ray Train. ccl: register oneCCL's backend
    with torch.distributed. gloo: bind it to the interface towards the master; left alone it listens on the host
    name's address, loopback on many hosts, where the other nodes' workers cannot reach it."""
    if backend == "ccl":
        import oneccl_bindings_for_pytorch  # noqa: F401
    elif backend == "gloo":
        from cluster.distributed import bind_gloo_towards

        bind_gloo_towards(master_addr)


def torch_config(backend: str, timeout_s: float):
    """Ray Train's TorchConfig, whose backend first runs prepare_worker in every worker (Ray Train's runtime-env
    setup hook does not reach its workers: measured, the hook never ran)."""
    from ray.train.torch import TorchConfig

    class WorkerPreparingConfig(TorchConfig):
        @property
        def backend_cls(self):
            class Backend(super().backend_cls):
                def on_start(self, worker_group, backend_config):
                    # Ray Train's master is worker 0's node
                    master = worker_group.execute_single(0, ray.util.get_node_ip_address)
                    worker_group.execute(prepare_worker, backend, master)
                    super().on_start(worker_group, backend_config)

            return Backend

    return WorkerPreparingConfig(backend=backend, timeout_s=max(1, round(timeout_s)))


def _domain_cpus(per: str, use_logical_cores: bool, topology_file: str | None) -> list[int]:
    """CPUs a rank binds in each domain (NUMA node or socket) of the machine this runs on: as bind_rank counts."""
    from cluster.topology import load_topology

    topology = load_topology(topology_file)
    return [len(cpus if use_logical_cores else topology.physical(cpus))
            for _, cpus in sorted(topology.domains(per).items())]


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


# ---- training -------------------------------------------------------------------------------------------------

def train_loop_per_worker(config: dict) -> dict | None:
    """One DDP rank: the config again from its path and overrides, then run_train in the process group Ray made.

    Every rank calls ray.train.report once (it is a barrier); rank 0's carries the result, with a tiny
    checkpoint because Ray Train V2 keeps only the metrics attached to a checkpoint.
    """
    import ray.train

    from cluster.commands.train import run_train
    from cluster.config import load_config
    from trainer.tracking import tracking_uri

    logging.basicConfig(level=config["log_level"], format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    # Ray Train runs this outside the working directory: a relative config path is from this node's copy of it,
    # where this module is (ROOT)
    cfg = load_config(ROOT / config["config"], config["overrides"])
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
    from ray.train.torch import TorchTrainer

    run_dir = Path(cfg.run_dir)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config_path, "overrides": overrides, "log_level": log_level},
        # Ray Train initialises the process group (env://, RANK/LOCAL_RANK/WORLD_SIZE set); run_train uses it.
        torch_config=torch_config(backend, cfg.dist.timeout_s),
        scaling_config=ScalingConfig(num_workers=plan.num_workers, use_gpu=False,
                                     resources_per_worker={"CPU": plan.cpus_per_worker},
                                     label_selector=plan.label_selector),
        run_config=RunConfig(name=f"train-{time.strftime('%Y%m%d-%H%M%S')}",
                             storage_path=str(run_dir / "ray_train"),  # Ray Train V2 wants it absolute
                             failure_config=FailureConfig(max_failures=0)))
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
    """The job for scripts/ray_job.py's parsed arguments (see the module doc)."""
    from cluster.config import absolute_path_overrides, load_config  # before the heavy imports: bad input fails fast

    base = (args.base_dir or Path.cwd()).resolve()
    config_path = Path(args.config).resolve()
    if config_path.is_relative_to(ROOT):  # the workers find it in their node's copy of the working directory
        config_path = config_path.relative_to(ROOT)
    overrides = command_overrides(args)
    cfg = load_config(args.config, overrides)
    resolved = absolute_path_overrides(cfg, base)
    overrides += resolved
    cfg = load_config(args.config, overrides)
    if resolved and args.base_dir is None and "runtime_resources" in str(base):
        log.warning("%s resolved against Ray's temporary copy of the working directory (%s); pass --base-dir "
                    "or absolute paths to keep results and find inputs",
                    ", ".join(o.partition("=")[0] for o in resolved), base)
    from ray.train import TrainingFailedError

    from cluster.commands.prepare import run_prepare
    from cluster.distributed import choose_backend

    backend = choose_backend(cfg.dist.backend)
    print(f"run dir: {cfg.run_dir}", flush=True)

    ray.init(logging_level=logging.WARNING)  # joins the job's cluster (RAY_ADDRESS)
    cluster = ray.cluster_resources()
    print(f"Ray cluster: {len(cpu_nodes())} node(s) with CPUs, {int(cluster.get('CPU', 0))} CPUs", flush=True)

    prepared = run_prepare(cfg)
    print(f"prepare: {prepared.line()}; {len(prepared.rows)} clips in {prepared.store_root}", flush=True)

    nodes = cpu_nodes()
    layout = domain_layout(nodes, cfg.dist) if args.workers is None or args.cpus_per_worker is None else {}
    plan = plan_workers({n["NodeID"]: int(n["Resources"]["CPU"]) for n in nodes}, layout, cfg.dist.per,
                        args.workers, args.cpus_per_worker)
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
