"""The trunk cache on a prepared run dir's clips, as the trunk cache tests build it: the tiny model (MODEL) split
at its fine-tuning stage, the run dir's training and validation clip sets, and a TrunkCache over them."""

from pathlib import Path

import torch

from data.dataset import ClipDataset
from data.store import ClipStore, read_manifest
from trainer.accel import AccelPlan
from trainer.model import ModelConfig, ResNet3D, freeze_before, split
from trainer.trunk_cache import TrunkCache, TrunkCacheConfig

MODEL = ModelConfig(depth=10, shortcut="A", width=4, n_classes=2, sample_size=32, sample_duration=8, pretrained=None,
                    ft_begin="layer4", mean=(114.8, 107.7, 99.5), std=(1.0, 1.0, 1.0), value_scale=255.0)
FP32 = AccelPlan("fp32", "torch", False, "test")


def clip_sets(run_dir: Path) -> tuple[ClipDataset, ClipDataset]:
    rows, store = read_manifest(run_dir / "manifest.jsonl"), ClipStore(run_dir / "clips")
    return tuple(ClipDataset(store, [r for r in rows if r["subset"] == subset], MODEL.sample_size,
                             MODEL.sample_duration, MODEL.normalization, train=subset == "training", seed=0)
                 for subset in ("training", "validation"))


def model_parts(seed=0, ft_begin="layer4"):
    torch.manual_seed(seed)
    model = ResNet3D(MODEL)
    freeze_before(model, ft_begin)
    return model, *split(model, ft_begin)


def cache_for(root, trunk, sets, views=3, plan=FP32, runtime="auto"):
    return TrunkCache(root, TrunkCacheConfig(views), trunk, plan, *sets, runtime)
