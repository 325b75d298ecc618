"""The frozen trunk's activations, computed once per clip and view instead of once per clip and epoch.

A fine-tune from layer4 spends ~95 % of its forward FLOPs in conv1..layer3, which are frozen: the same
function of the same clips, every epoch. With `trunk_cache: {views: K}` each training clip gets K
augmented views, view v being exactly the one the uncached Dataset draws in epoch v + 1 (random
temporal crop, multi-scale corner crop, flip); the trunk runs on them once, with its BatchNorm in eval
mode (the pretrained statistics, as in the uncached run), and each epoch trains the head on one cached
view per clip, drawn with a seed from (seed, epoch, clip). Validation clips cache their centre view.

On disk, beside the clip store: `<run_dir>/trunk_cache/<key>/{train,val}/<clip>.npy` (K views of one clip;
bf16 as uint16 bits when the precision is bf16, else fp32) with a `.sha256` sidecar. The key hashes the
trunk's weights (so a changed checkpoint or ft_begin gives a new key), the stored clips' index entries (a
re-extraction with other settings gives a new key), the input size, normalisation,
precision, seed and K; caches under other keys are removed when a new one is built. Files are written
atomically and verified against their sidecar before use: an interrupted build resumes from the clips
it finished (removing the temp files a kill left), and a corrupt file is rebuilt, never read. Under DDP
each rank builds its shard of clips. The passes run as inference does: the stem in fp32 where that measures faster
(trainer/accel.py), compiled where `--runtime auto` would compile the trunk (trainer/compiled.py: a real ResNet's
conv1..layer3, K passes per clip), else eager.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import urllib.parse
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from data.dataset import ClipDataset
from data.errors import InputError
from data.files import atomic_write, file_sha256, remove_stale_temps
from trainer.accel import AccelPlan, stem_in_fp32
from trainer.batches import shard
from trainer.compiled import choose_runtime, compiled_model
from trainer.ddp import barrier, world

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrunkCacheConfig:
    views: int  # augmented views cached per training clip; each epoch draws one

    def __post_init__(self):
        if self.views < 1:
            raise ValueError(f"views must be >= 1, got {self.views} (to train without the cache: trunk_cache: off)")


def cache_key(trunk: torch.nn.Module, dataset: ClipDataset, precision: str, views: int,
              val_set: ClipDataset | None = None) -> str:
    digest = hashlib.sha256()
    for clips in (dataset, val_set or dataset):  # the stored clips: re-extracted ones (other frames, sizes) differ
        digest.update(json.dumps([[row["clip_id"], clips.store.index[row["clip_id"]]] for row in clips.rows]).encode())
    digest.update(repr(trunk).encode())  # the layers' settings no weight shows: strides, pooling
    for name, tensor in trunk.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    digest.update(json.dumps([dataset.sample_size, dataset.duration, list(dataset.norm.mean), list(dataset.norm.std),
                              dataset.norm.value_scale, dataset.seed, precision, views]).encode())
    return digest.hexdigest()[:16]


def _file(directory: Path, row: dict) -> Path:
    """A clip's cached views; a repeated clip's copies (cluster/commands/train.py: training_rows) have their own."""
    copy = f"~{row['copy']}" if row.get("copy") else ""
    return directory / f"{urllib.parse.quote(row['clip_id'], safe='')}{copy}.npy"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _valid(path: Path) -> bool:
    sidecar = _sidecar(path)
    if not (path.is_file() and sidecar.is_file()):
        return False
    if sidecar.read_text().strip() == file_sha256(path):
        return True
    log.warning("%s does not match its checksum: rebuilding it", path)
    return False


def _to_numpy(activations: torch.Tensor, precision: str) -> np.ndarray:
    if precision == "bf16":  # numpy has no bfloat16: keep its bits
        return activations.to(torch.bfloat16).contiguous().view(torch.uint16).numpy()
    return activations.float().contiguous().numpy()


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.array(array))
    return tensor.view(torch.bfloat16) if tensor.dtype == torch.uint16 else tensor


def _write(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array))
    atomic_write(_sidecar(path), lambda f: f.write(file_sha256(path).encode()))


class TrunkCache:
    """Builds (or finds) the cache for a trunk and the train/val datasets; hands out cached Datasets."""

    def __init__(self, root: Path, cfg: TrunkCacheConfig, trunk: torch.nn.Module, plan: AccelPlan,
                 train_set: ClipDataset, val_set: ClipDataset, runtime: str = "auto"):
        self.cfg, self.trunk, self.plan, self.train_set, self.val_set = cfg, trunk, plan, train_set, val_set
        self.runtime = runtime
        self.key = cache_key(trunk, train_set, plan.precision, cfg.views, val_set)
        self.root, self.dir = Path(root), Path(root) / self.key

    def build(self) -> dict[str, int]:
        """Compute what is missing or corrupt (this rank's shard); returns counts of built and reused files."""
        rank, world_size = world()
        try:
            if rank == 0 and self.root.is_dir():
                for stale in (p for p in self.root.iterdir() if p.is_dir() and p.name != self.key):
                    log.info("removing the trunk cache of another trunk or input: %s", stale)
                    shutil.rmtree(stale)
            counts = {"built": 0, "reused": 0}
            for subset, dataset, draws in (("train", self.train_set, range(1, self.cfg.views + 1)),
                                           ("val", self.val_set, None)):
                directory = self.dir / subset
                directory.mkdir(parents=True, exist_ok=True)
                mine = [(i, _file(directory, dataset.rows[i])) for i in shard(len(dataset), rank, world_size)]
                remove_stale_temps(directory, {name for _, path in mine for name in (path.name, _sidecar(path).name)})
                todo = []
                for index, path in mine:
                    if _valid(path):
                        counts["reused"] += 1
                    else:
                        todo.append((index, path))
                for index, path in tqdm(todo, desc=f"trunk cache ({subset})", unit="clip", disable=rank != 0):
                    _write(path, self._activations(dataset, index, draws))
                    counts["built"] += 1
        except OSError as e:
            raise InputError(f"{self.dir}: cannot write the trunk cache ({e.strerror or e}); free space there, "
                             "point run_dir at a writable disk, or set train.trunk_cache=off") from None
        log.info("trunk cache %s: %d clip file(s) built, %d reused (rank %d)", self.dir, counts["built"],
                 counts["reused"], rank)
        barrier()  # every rank's shard is on disk before any rank reads
        return counts

    def _activations(self, dataset: ClipDataset, index: int, draws) -> np.ndarray:
        inputs = [dataset[index][0]] if draws is None else [dataset.view(index, draw)[0] for draw in draws]
        with torch.no_grad(), self.plan.autocast():
            return _to_numpy(self._forward(self.plan.input(torch.stack(inputs))), self.plan.precision)

    @cached_property
    def _forward(self) -> torch.nn.Module:
        """The trunk as the passes run it (eval mode: the pretrained BatchNorm statistics), compiled or eager."""
        self.trunk.eval()
        runtime, why = choose_runtime(self.runtime, sum(p.numel() for p in self.trunk.parameters()),
                                      self.plan.kernels)
        shape = (3, self.train_set.duration, self.train_set.sample_size, self.train_set.sample_size)
        trunk, stem = stem_in_fp32(self.trunk, self.plan, shape)
        log.info("trunk cache passes: %s (%s%s)", runtime, why, f"; {stem}" if stem else "")
        return compiled_model(trunk, self.plan, shape) if runtime == "compile" else trunk

    def datasets(self) -> tuple["CachedViews", "CachedViews"]:
        return (CachedViews(self.dir / "train", self.train_set, self.cfg.views, self.train_set.seed),
                CachedViews(self.dir / "val", self.val_set, 1, self.train_set.seed))


class CachedViews(Dataset):
    """(trunk activations, label) per clip: one of its `views` cached views per epoch, memory-mapped."""

    def __init__(self, directory: Path, clips: ClipDataset, views: int, seed: int):
        self.paths = [_file(directory, row) for row in clips.rows]
        self.labels = [int(row["label_id"]) for row in clips.rows]
        self.views, self.seed, self.epoch = views, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def view_of(self, index: int) -> int:
        """The view trained in this epoch: a seeded draw per (seed, epoch, clip)."""
        return int(np.random.default_rng((self.seed, self.epoch, index, 1)).integers(self.views))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        array = np.load(self.paths[index], mmap_mode="r")
        return _from_numpy(array[self.view_of(index)]), self.labels[index]
