"""The 3D ResNet family of Hara et al. (3D-ResNets-PyTorch), fine-tunable.

Module and parameter names follow that repository's `models/resnet.py`, so its
Kinetics checkpoints load as they are (after dropping DataParallel's
`module.` prefix). Shortcut A is a parameter-free strided, zero-padded
identity, hence has no `downsample.*` keys; shortcut B is a 1x1x1 projection.
`width` scales every stage (Hara's models use 64; the 2020 code's
`--resnet_widen_factor` k is width 64k); the demo and tests use a narrow
network to stay fast on two cores.

The repository has two families of released weights, which differ in what the
weights cannot show: the 2018 (CVPR2018 branch) Kinetics models saw 0-255
pixels minus the ActivityNet mean, and ResNet-18/34 use shortcut A; the 2020
(master) models saw 0-1 pixels normalised with the Kinetics mean and std, and
use shortcut B. `ModelConfig.family` sets those defaults; `conv1_t_size`,
`conv1_t_stride` and `no_max_pool` are the 2020 code's options of the same
names (7, 1 and false in every released model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from data.dataset import Normalization

STAGES = ("conv1", "layer1", "layer2", "layer3", "layer4", "fc")
BLOCKS_PER_DEPTH = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}


Family = Literal["hara2018", "hara2020"]
FAMILY_NORMALIZATION: dict[str, Normalization] = {
    "hara2018": Normalization((114.7748, 107.7354, 99.4750), (1.0, 1.0, 1.0), 255.0),  # ActivityNet mean, 0-255
    "hara2020": Normalization((0.4345, 0.4051, 0.3775), (0.2768, 0.2713, 0.2737), 1.0),  # Kinetics mean/std, 0-1
}


def family_shortcut(family: str, depth: int) -> str:
    """The shortcut the family's released models use: 2018: A below depth 50, else B; 2020: B."""
    return "A" if family == "hara2018" and BLOCKS_PER_DEPTH[depth][0] == "basic" else "B"


@dataclass(frozen=True)
class ModelConfig:
    """The network and the input it expects. shortcut, mean, std and value_scale may be None: the family's."""

    depth: int
    shortcut: Literal["A", "B"] | None
    width: int
    n_classes: int
    sample_size: int
    sample_duration: int
    pretrained: str | None = field(metadata={"path": True})
    ft_begin: Literal["conv1", "layer1", "layer2", "layer3", "layer4", "fc"]
    # Input normalisation the weights expect: pixels scaled to 0..value_scale, then (x - mean) / std.
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    value_scale: float | None
    # Defaults only for Python callers and checkpoints written before these options; config files state them all.
    family: Family = "hara2018"
    conv1_t_size: int = 7
    conv1_t_stride: int = 1
    no_max_pool: bool = False

    def __post_init__(self):
        if self.family not in FAMILY_NORMALIZATION:
            raise ValueError(f"family {self.family!r} is not one of {', '.join(FAMILY_NORMALIZATION)}")
        if self.depth not in BLOCKS_PER_DEPTH:
            raise ValueError(f"depth {self.depth} is not one of {sorted(BLOCKS_PER_DEPTH)}")
        defaults = FAMILY_NORMALIZATION[self.family]
        for name, value in (("shortcut", family_shortcut(self.family, self.depth)), ("mean", defaults.mean),
                            ("std", defaults.std), ("value_scale", defaults.value_scale)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)  # frozen: resolved once, so checkpoints store the values
        if self.conv1_t_size < 1 or self.conv1_t_stride < 1:
            raise ValueError("conv1_t_size and conv1_t_stride must be >= 1")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0 or self.value_scale <= 0:
            raise ValueError("mean and std need 3 values each, std > 0, value_scale > 0")
        if self.width < 1 or self.n_classes < 2 or self.sample_size < 16 or self.sample_duration < 1:
            raise ValueError("width >= 1, n_classes >= 2, sample_size >= 16 and sample_duration >= 1 are required")

    @property
    def normalization(self) -> Normalization:
        return Normalization(self.mean, self.std, self.value_scale)

    @property
    def arch(self) -> str:
        """The `arch` string 3D-ResNets-PyTorch stores in its checkpoints."""
        return f"resnet-{self.depth}"


class Conv3d(nn.Conv3d):
    """nn.Conv3d that runs a single-frame input (T = 1) as the equal Conv2d with its kernel's middle time slice.

    With T = 1, an odd temporal kernel k and temporal padding k // 2, every other slice only ever meets the zero
    padding: the 2D convolution is exactly the 3D one, forward and backward (those slices get zero gradient
    either way). ResNet-34's layer4 runs on one frame after its first strided conv (16 frames at 112 px), and
    oneDNN's 2D kernels are much better tuned: fwd+bwd of a 512-channel 3x3x3 conv on 1x4x4 measured ~4x faster
    as 2D (scripts/bench/bench_head_levers.py). Parameters, names and checkpoints stay 3D.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size[0]
        if x.shape[2] != 1 or k % 2 == 0 or self.padding[0] != k // 2 or self.dilation[0] != 1 or self.groups != 1:
            return super().forward(x)
        weight = self.weight[:, :, k // 2]
        return F.conv2d(x[:, :, 0], weight, self.bias, self.stride[1:], self.padding[1:], self.dilation[1:]).unsqueeze(2)


def conv3x3x3(in_planes: int, out_planes: int, stride=1) -> Conv3d:
    return Conv3d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class ZeroPadShortcut(nn.Module):
    """Shortcut A: subsample by `stride` and zero-pad the new channels (no parameters)."""

    def __init__(self, planes: int, stride: int):
        super().__init__()
        self.planes, self.stride = planes, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, 0, 0, self.planes - x.shape[1]))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv3x3x3(planes, planes)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = Conv3d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv3x3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = Conv3d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet3D(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        kind, blocks = BLOCKS_PER_DEPTH[cfg.depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        w = cfg.width
        self.inplanes = w
        t = cfg.conv1_t_size
        self.conv1 = nn.Conv3d(3, w, kernel_size=(t, 7, 7), stride=(cfg.conv1_t_stride, 2, 2),
                               padding=(t // 2, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if cfg.no_max_pool else nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, w, blocks[0], cfg.shortcut, stride=1)
        self.layer2 = self._make_layer(block, 2 * w, blocks[1], cfg.shortcut, stride=2)
        self.layer3 = self._make_layer(block, 4 * w, blocks[2], cfg.shortcut, stride=2)
        self.layer4 = self._make_layer(block, 8 * w, blocks[3], cfg.shortcut, stride=2)
        # Adaptive pooling equals Hara's fixed AvgPool3d at 16x112x112 and also serves other sizes.
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(8 * w * block.expansion, cfg.n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes: int, n_blocks: int, shortcut: str, stride: int) -> nn.Sequential:
        out_planes = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_planes:
            downsample = (
                ZeroPadShortcut(out_planes, stride)
                if shortcut == "A"
                else nn.Sequential(
                    Conv3d(self.inplanes, out_planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm3d(out_planes),
                )
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = out_planes
        layers += [block(out_planes, planes) for _ in range(1, n_blocks)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled feature vector (512-d for Hara's ResNet-18/34)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def stage_module(model: ResNet3D, stage: str) -> nn.Module:
    """One of STAGES as a module (conv1 with its BatchNorm, ReLU and pooling; fc with the pooling before it).

    Chained in STAGES order they compute model(x); they share the model's parameters.
    """
    if stage == "conv1":
        return nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    if stage == "fc":
        return nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)
    return getattr(model, stage)


def split(model: ResNet3D, ft_begin: str) -> tuple[nn.Sequential, nn.Sequential]:
    """(trunk, head): the stages before `ft_begin` and the stages from it on; head(trunk(x)) == model(x).

    The head is what a fine-tune trains, and all that DDP wraps and synchronises.
    """
    stages = [stage_module(model, stage) for stage in STAGES]
    first = STAGES.index(ft_begin)
    return nn.Sequential(*stages[:first]), nn.Sequential(*stages[first:])


def freeze_before(model: ResNet3D, ft_begin: str) -> list[nn.Parameter]:
    """Freeze every stage before `ft_begin`; return the parameters left to train.

    Frozen stages also keep their BatchNorm in eval mode (see `train_mode`), so
    they compute the same function every epoch.
    """
    trunk, head = split(model, ft_begin)
    trunk.requires_grad_(False)
    head.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def train_mode(model: ResNet3D) -> None:
    """model.train(), except that BatchNorm of frozen stages stays in eval mode."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.weight.requires_grad:
            m.eval()
