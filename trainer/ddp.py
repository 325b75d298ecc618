"""DDP for the fine-tune: only the trained head synchronises gradients, optionally as bf16.

The process group itself is set up by the launcher side (cluster/distributed.py, or Ray Train); the
trainer only asks whether there is one. With none, every helper here is the single-process identity.
"""

import gc
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
# DDP imports this lazily; imported once a group exists, its `group=group.WORLD` default arguments would hold that
# group for the life of the process (see destroy_process_group)
import torch.distributed.nn.functional  # noqa: F401
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class GradSync:
    bucket_mb: float  # DDP bucket size: the all-reduce starts as soon as a bucket's gradients are ready
    # bf16 halves the bytes all-reduced; the optimizer still steps in fp32 on the averaged gradient.
    grad_dtype: Literal["fp32", "bf16"]
    # gradients are views into the buckets: no copy into a bucket before its all-reduce, nor out of it after
    bucket_view: bool = True
    # DDP records the first step's graph and trusts it from then on. Not a config key: torch 2.13 fails when the
    # first backward is under no_sync, as accumulated micro-batches are (pytorch/pytorch#143580), and the head
    # has no unused parameters for it to save a search over; scripts/bench/bench_ddp.py --link measures it.
    static_graph: bool = False

    def __post_init__(self):
        if self.bucket_mb <= 0:
            raise ValueError(f"bucket_mb must be > 0, got {self.bucket_mb}")


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap_head(head: torch.nn.Module, sync: GradSync) -> torch.nn.Module:
    """The head in DDP when there are several ranks: the frozen trunk is not wrapped, so never synced."""
    if world()[1] == 1:
        return head
    ddp = DistributedDataParallel(head, bucket_cap_mb=sync.bucket_mb, gradient_as_bucket_view=sync.bucket_view,
                                  static_graph=sync.static_graph)
    if sync.grad_dtype == "bf16":
        ddp.register_comm_hook(None, bf16_allreduce_hook)
    return ddp


def bf16_allreduce_hook(process_group, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Average a gradient bucket in bf16.

    torch's own bf16_compress_hook is refused by DDP unless the backend is NCCL or XCCL, though gloo
    all-reduces bf16 fine; this is the same cast, average and cast back.
    """
    group = process_group or dist.group.WORLD
    buffer = bucket.buffer()
    compressed = buffer.to(torch.bfloat16).div_(group.size())
    future = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def decompress(fut):
        buffer.copy_(fut.value()[0])
        return buffer

    return future.then(decompress)


def sum_across(values: list[float]) -> list[float]:
    """Element-wise sums over the ranks."""
    if world()[1] == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather(obj: Any) -> list[Any]:
    """Every rank's obj, in rank order, on every rank."""
    if world()[1] == 1:
        return [obj]
    out = [None] * world()[1]
    dist.all_gather_object(out, obj)
    return out


def from_rank0(obj: Any) -> Any:
    """Rank 0's obj on every rank (e.g. which checkpoint to resume from)."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def destroy_process_group() -> None:
    """Leave the process group with its gloo worker threads joined, before the interpreter starts to shut down.

    Left running, a worker freeing a finished all-reduce that backward started (the work keeps backward's
    thread-local Python context) takes the GIL during shutdown, which kills the rank with SIGABRT ("terminate
    called without an active exception"; 7 ranks in ~90 two-rank runs of a 2-core accumulation test). Two things kept
    the group alive past dist.destroy_process_group(): DistributedDataParallel sits in a reference cycle holding
    it through its reducer (collected here), and torch.distributed.nn.functional's default arguments (imported
    above, before any group exists).
    """
    gc.collect()
    dist.destroy_process_group()
