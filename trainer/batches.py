"""Which clips go into which micro-batch on which rank: the same experiment on any number of ranks.

An epoch is a seeded permutation of the training clips, cut into full global batches (what one
optimizer step sees; the last partial batch is dropped). Each global batch is split into
`world_size x accumulation` equal micro-batches by striding: micro-batch slot s takes
batch[s::world_size * accumulation], and rank r runs slots r, r + world_size, ... accumulating their
gradients. So 1 process accumulating 2 micro-batches of 4 and 2 ranks with one micro-batch of 4 each
see the same clips in the same BatchNorm groups and take the same step (DDP averages over ranks,
accumulation over its micro-batches). It plays the part of torch's DistributedSampler, which pads
instead of dropping and cannot split a batch for accumulation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def accumulation_steps(global_batch: int, per_rank: int | None, world_size: int) -> tuple[int, int]:
    """(micro-batch size per rank, micro-batches accumulated per step); ValueError when they do not divide."""
    if per_rank is None:
        if global_batch % world_size:
            raise ValueError(f"train.batch_size {global_batch} is not a multiple of the {world_size} ranks; "
                             "set train.batch_size_per_rank")
        per_rank = global_batch // world_size
    if per_rank < 1 or global_batch % (per_rank * world_size):
        raise ValueError(f"train.batch_size {global_batch} is not a multiple of train.batch_size_per_rank "
                         f"{per_rank} x {world_size} ranks")
    return per_rank, global_batch // (per_rank * world_size)


def epoch_batches(n_clips: int, global_batch: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The epoch's global batches: a permutation seeded by (seed, epoch), full batches only."""
    order = np.random.default_rng((seed, epoch)).permutation(n_clips)
    return [order[i:i + global_batch] for i in range(0, n_clips - global_batch + 1, global_batch)]


def rank_micro_batches(batch: np.ndarray, rank: int, world_size: int, accumulation: int) -> list[np.ndarray]:
    """This rank's micro-batches of one global batch, in the order it runs them."""
    slots = world_size * accumulation
    return [batch[a * world_size + rank::slots] for a in range(accumulation)]


def shard(n: int, rank: int, world_size: int) -> list[int]:
    """The indices of n items one rank evaluates; the ranks together cover each exactly once."""
    return list(range(rank, n, world_size))


class MicroBatchSampler(Sampler[list[int]]):
    """A batch sampler yielding this rank's micro-batches of every global batch of the epoch (set_epoch)."""

    def __init__(self, n_clips: int, global_batch: int, per_rank: int | None, rank: int, world_size: int,
                 seed: int):
        self.per_rank, self.accumulation = accumulation_steps(global_batch, per_rank, world_size)
        if n_clips < global_batch:
            raise ValueError(f"the training set has {n_clips} clips, fewer than train.batch_size {global_batch}")
        self.n_clips, self.global_batch, self.rank, self.world_size, self.seed = (
            n_clips, global_batch, rank, world_size, seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps (global batches) per epoch."""
        return self.n_clips // self.global_batch

    def __len__(self) -> int:
        return self.steps_per_epoch * self.accumulation

    def __iter__(self) -> Iterator[list[int]]:
        for batch in epoch_batches(self.n_clips, self.global_batch, self.seed, self.epoch):
            for micro in rank_micro_batches(batch, self.rank, self.world_size, self.accumulation):
                yield micro.tolist()
