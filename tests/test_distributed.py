"""DDP on CPUs for real: gloo process groups on loopback, torchrun agents, a rank killed mid-epoch."""

import functools
import gc
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cluster.distributed import CCL_HINT, DistConfig, choose_backend, rendezvous_from_env
from data.errors import InputError
from tests.support.commands import FIGHTWATCH, ROOT, assert_one_line_error, clean_env, fightwatch, free_port
from tests.support.training import (TINY, TORCHRUN, TRAIN, assert_resumed, copy_of, interrupted_epoch, mlflow_runs,
                                    weights)
from trainer.batches import MicroBatchSampler, accumulation_steps, epoch_batches, rank_micro_batches, shard
from trainer.ddp import GradSync, bf16_allreduce_hook, destroy_process_group, wrap_head

pytestmark = pytest.mark.slow  # every test here starts processes or clusters

# ---- planning: pure functions ----

@pytest.mark.parametrize("global_batch, per_rank, world_size, expected", [
    (8, None, 1, (8, 1)), (8, None, 2, (4, 1)), (8, 2, 2, (2, 2)), (8, 4, 1, (4, 2)), (32, 8, 4, (8, 1)),
])
def test_accumulation_steps(global_batch, per_rank, world_size, expected):
    assert accumulation_steps(global_batch, per_rank, world_size) == expected


@pytest.mark.parametrize("global_batch, per_rank, world_size", [(8, None, 3), (8, 3, 1), (8, 8, 2)])
def test_accumulation_steps_that_do_not_divide(global_batch, per_rank, world_size):
    with pytest.raises(ValueError, match="not a multiple"):
        accumulation_steps(global_batch, per_rank, world_size)


def test_every_rank_shape_runs_the_same_micro_batches():
    """1x4, 2x2 and 4x1 (ranks x accumulated micro-batches) split each global batch the same way."""
    batches = epoch_batches(50, 8, seed=3, epoch=2)
    assert len(batches) == 6 and len(set(np.concatenate(batches))) == 48  # full batches only, no repeats
    assert not np.array_equal(batches[0], epoch_batches(50, 8, seed=3, epoch=3)[0])  # reshuffled per epoch
    for batch in batches:
        shapes = []
        for world_size, accumulation in [(1, 4), (2, 2), (4, 1)]:
            micro = {}
            for rank in range(world_size):
                for a, indices in enumerate(rank_micro_batches(batch, rank, world_size, accumulation)):
                    micro[a * world_size + rank] = sorted(indices.tolist())
            shapes.append([micro[slot] for slot in range(4)])
        assert shapes[0] == shapes[1] == shapes[2]


def test_sampler_and_shards():
    rank0, rank1 = (list(MicroBatchSampler(20, 8, None, r, 2, seed=0)) for r in (0, 1))
    assert len(rank0) == len(rank1) == 2 and all(len(b) == 4 for b in rank0 + rank1)
    assert not set(sum(rank0, [])) & set(sum(rank1, []))
    with pytest.raises(ValueError, match="fewer than train.batch_size"):
        MicroBatchSampler(5, 8, None, 0, 1, seed=0)
    assert sorted(shard(7, 0, 3) + shard(7, 1, 3) + shard(7, 2, 3)) == list(range(7))


def test_rendezvous_from_each_launcher():
    torchrun = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                "MASTER_ADDR": "node0", "MASTER_PORT": "29400", "SLURM_PROCID": "9", "SLURM_NTASKS": "2"}
    r = rendezvous_from_env(torchrun)
    assert (r.rank, r.world_size, r.local_rank, r.local_world_size, r.master_addr, r.master_port, r.launcher) == (
        3, 4, 1, 2, "node0", 29400, "torchrun")  # torchrun's variables win over Slurm's (srun starts torchrun)
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NNODES": "4",
             "SLURM_JOB_NODELIST": "cpu[01-04]"}
    r = rendezvous_from_env(slurm, first_host=lambda nodelist: {"cpu[01-04]": "cpu01"}[nodelist])
    assert (r.rank, r.world_size, r.local_rank, r.local_world_size, r.master_addr, r.master_port, r.launcher) == (
        5, 8, 1, 2, "cpu01", 29500, "slurm")
    assert rendezvous_from_env({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}).launcher == "none"
    assert rendezvous_from_env({}).world_size == 1
    with pytest.raises(InputError, match="WORLD_SIZE='two'"):
        rendezvous_from_env({"RANK": "0", "WORLD_SIZE": "two"})


def test_backend_choice():
    assert choose_backend("auto", lambda: False) == "gloo"
    assert choose_backend("gloo", lambda: True) == "gloo"
    with pytest.raises(InputError, match="oneccl_bindings_for_pytorch is not installed"):
        choose_backend("ccl", lambda: False)
    with pytest.raises(ValueError, match="timeout_s"):
        DistConfig("auto", "numa", False, 0, None, 0, 25, "bf16", None)
    with pytest.raises(ValueError, match="local_ranks"):
        DistConfig("auto", "numa", False, 0, None, 60, 25, "bf16", 0)


# ---- real process groups ----

def _gloo_workers() -> int:
    names = (Path(task, "comm").read_text().strip() for task in Path("/proc/self/task").iterdir())
    return sum(name == "pt_gloo_runloop" for name in names)


def test_leaving_the_group_joins_gloos_threads_after_ddp():
    """DDP (a reference cycle through its reducer) and torch.distributed.nn.functional (default arguments) held the
    group, so its worker threads outlived dist.destroy_process_group() into interpreter shutdown."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    gc.disable()  # no automatic collection until the end: destroy_process_group must free DDP's cycle itself
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
        ddp(torch.randn(3, 4)).sum().backward()
        del ddp
        assert _gloo_workers() > 0
        destroy_process_group()
        assert _gloo_workers() == 0
    finally:
        gc.enable()
        if dist.is_initialized():
            dist.destroy_process_group()


def _in_process_group(rank: int, port: int, queue, grads: Callable[[int], Any]) -> None:
    """Rank `rank` of two on loopback puts (rank, grads(rank)) on the queue; DDP lives only inside grads."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        queue.put((rank, grads(rank)))
    finally:
        destroy_process_group()


def _bf16_grads(rank: int) -> np.ndarray:
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(64, 3))
    model.register_comm_hook(None, bf16_allreduce_hook)
    torch.manual_seed(1 + rank)  # each rank its own data
    model(torch.randn(5, 64)).square().sum().backward()
    return model.module.weight.grad.numpy().copy()  # by value: the process exits


def test_bf16_gradient_hook_averages_over_gloo():
    ctx = mp.get_context("spawn")
    queue, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_in_process_group, args=(rank, port, queue, _bf16_grads)) for rank in (0, 1)]
    for p in procs:
        p.start()
    grads = {rank: torch.from_numpy(g) for rank, g in (queue.get(timeout=120) for _ in procs)}
    for p in procs:
        p.join(60)
        assert p.exitcode == 0  # SIGABRT here was a group outliving the interpreter
    torch.manual_seed(0)
    reference = torch.nn.Linear(64, 3)
    expected = []
    for rank in (0, 1):
        reference.zero_grad()
        torch.manual_seed(1 + rank)
        reference(torch.randn(5, 64)).square().sum().backward()
        expected.append(reference.weight.grad.clone())
    average = (expected[0] + expected[1]) / 2
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
    torch.testing.assert_close(grads[0], average, rtol=1e-2, atol=1e-2)  # bf16 has 8 bits of mantissa
    assert GradSync(25, "bf16").grad_dtype == "bf16"


def _accumulated_grads(sync: GradSync, rank: int) -> list[np.ndarray]:
    torch.manual_seed(0)
    head = wrap_head(torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)), sync)
    assert (head.static_graph, head.gradient_as_bucket_view) == (sync.static_graph, sync.bucket_view)
    for _ in range(2):  # the second step runs on the buckets DDP rebuilt after the first
        head.zero_grad(set_to_none=True)
        torch.manual_seed(1 + rank)  # each rank its own data, the same in both steps
        with head.no_sync():  # accumulated as trainer/train.py does: all-reduced with the last micro-batch
            head(torch.randn(5, 64)).square().sum().backward()
        head(torch.randn(5, 64)).square().sum().backward()
    return [p.grad.numpy().copy() for p in head.parameters()]


@pytest.mark.parametrize("sync", [GradSync(0.001, "fp32", bucket_view=False), GradSync(25, "fp32", bucket_view=True)])
def test_accumulated_gradients_average_over_gloo_with_and_without_bucket_views(sync):
    """wrap_head's DDP with gradients copied into many tiny buckets, or as views of one, over micro-batches under
    no_sync: every rank ends with the average of all ranks' summed micro-batch gradients."""
    ctx = mp.get_context("spawn")
    queue, port = ctx.Queue(), free_port()
    grads_of = functools.partial(_accumulated_grads, sync)
    procs = [ctx.Process(target=_in_process_group, args=(rank, port, queue, grads_of)) for rank in (0, 1)]
    for p in procs:
        p.start()
    grads = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    expected = []
    for rank in (0, 1):
        torch.manual_seed(0)
        reference = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        torch.manual_seed(1 + rank)
        for _ in range(2):
            reference(torch.randn(5, 64)).square().sum().backward()
        expected.append([p.grad for p in reference.parameters()])
    for g0, g1, e0, e1 in zip(grads[0], grads[1], *expected):
        torch.testing.assert_close(torch.from_numpy(g0), torch.from_numpy(g1), rtol=0, atol=0)
        torch.testing.assert_close(torch.from_numpy(g0), (e0 + e1) / 2, rtol=1e-5, atol=1e-6)


def test_two_ranks_take_the_same_steps_as_one_process(prepared, tmp_path):
    """Global batch 4: one process accumulating 2 micro-batches of 2, and 2 gloo ranks with one each."""
    same = ["train.epochs=3", "train.batch_size=4", "train.batch_size_per_rank=2", "dist.grad_dtype=fp32"]
    one, two = copy_of(prepared, tmp_path, "one"), copy_of(prepared, tmp_path, "two")
    # one thread, as each rank has: reductions in another order drift apart over a few SGD steps
    single = subprocess.run([str(FIGHTWATCH), *TRAIN[2:], f"run_dir={one}", *same], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, env=clean_env(OMP_NUM_THREADS="1"))
    assert single.returncode == 0, single.stderr[-3000:]
    ranks = subprocess.run([str(FIGHTWATCH), *TRAIN[2:], f"run_dir={two}", *same, "--launch", "local",
                            "--nproc-per-node", "2"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env=clean_env())
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    # rank 1's lines go to the run log only (the console shows rank 0's)
    run_log = (two / "fightwatch.log").read_text()
    assert "rank 1 of 2" in run_log and "rank 1 of 2" not in ranks.stderr
    assert "2 clips per micro-batch, 1 micro-batch(es)" in ranks.stderr
    assert "2 clips per micro-batch, 2 micro-batch(es)" in single.stderr
    a, b = weights(one), weights(two)
    trained = [k for k in a if a[k].is_floating_point() and "running_" not in k]  # BN statistics are rank 0's
    for name in trained:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    client, runs = mlflow_runs(two)
    assert len(runs) == 1 and runs[0].data.params["world_size"] == "2"
    assert runs[0].data.params["dist.backend_used"] == "gloo" and runs[0].data.params["launcher"] == "torchrun"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_loss")] == [1, 2, 3]


def test_two_torchrun_agents_with_a_c10d_rendezvous(prepared, tmp_path):
    """Two simulated nodes on 127.0.0.1, one rank each, meeting at a c10d store the first agent hosts."""
    run_dir = copy_of(prepared, tmp_path, "run")
    port = free_port()
    agents = [subprocess.Popen([*TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                                "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes",
                                "--rdzv-conf", f"is_host={int(node == 0)}", "--local-addr", "127.0.0.1",
                                *TRAIN, f"run_dir={run_dir}", "train.epochs=2", "dist.timeout_s=60"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=clean_env()) for node in (0, 1)]
    outputs = [agent.communicate(timeout=600)[0] for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    run_log = (run_dir / "fightwatch.log").read_text()  # both agents' ranks append to the one run log
    assert "rank 0 of 2" in run_log and "rank 1 of 2" in run_log
    assert weights(run_dir)
    client, runs = mlflow_runs(run_dir)
    assert len(runs) == 1 and runs[0].data.params["world_size"] == "2"


def test_a_killed_rank_fails_the_job_fast_and_a_restart_resumes(prepared, tmp_path):
    run_dir = copy_of(prepared, tmp_path, "run")
    job = [*TORCHRUN, "--standalone", "--nproc-per-node", "2", "--max-restarts", "0", *TRAIN, f"run_dir={run_dir}",
           "train.epochs=30", "dist.timeout_s=20"]
    agent = subprocess.Popen(job, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=clean_env())
    marker = run_dir / "checkpoints" / "epoch_0004.pth.sha256"  # before epoch 4's last.pth: 3's is whole
    deadline = time.monotonic() + 300
    while not marker.exists() and agent.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    rank1 = [p for p in psutil.Process(agent.pid).children(recursive=True) if p.environ().get("LOCAL_RANK") == "1"]
    assert len(rank1) == 1, "rank 1 should be running"
    rank1[0].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = agent.communicate(timeout=120)
    assert agent.returncode != 0
    assert time.monotonic() - killed_at < 60, "the job should fail within the collective timeout, not hang"
    assert "SIGKILL" in stderr or "Signal 9" in stderr, stderr[-3000:]
    interrupted_at = interrupted_epoch(run_dir, 30)

    restart = subprocess.run(job, cwd=ROOT, capture_output=True, text=True, timeout=600, env=clean_env())
    assert restart.returncode == 0, restart.stderr[-3000:]
    assert_resumed(run_dir, restart.stderr, interrupted_at, 30)


def test_bad_distributed_input_is_one_line(prepared, tmp_path):
    run_dir = copy_of(prepared, tmp_path, "run")
    args = ["train", "--config", "configs/demo.yaml", f"run_dir={run_dir}", *TINY]
    assert_one_line_error(fightwatch(*args, "dist.backend=ccl"), "dist.backend=ccl", CCL_HINT[:40])
    cores = len(os.sched_getaffinity(0))
    assert_one_line_error(fightwatch(*args, "--launch", "local", "--nproc-per-node", str(cores + 1)),
                          "--nproc-per-node")
    assert_one_line_error(fightwatch(*args, "train.batch_size=4", "train.batch_size_per_rank=3"), "not a multiple")
