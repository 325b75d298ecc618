"""3D-ResNets-PyTorch's released checkpoints (Hara et al.): a model built from the file as it is, for scoring, or its
trunk loaded into a configured model, to fine-tune.

A release file holds {'epoch', 'arch', 'state_dict', 'optimizer'} (or a bare state_dict) and no model config: depth
and blocks come from its keys and `arch`, the shortcut from its `downsample` weights, width, classes and conv1's
temporal kernel from the tensors' shapes. The family (which code saved it: hara2018, the CVPR2018 branch, or
hara2020, master) is decided from the file's layout (`saved_family`: a `scheduler` entry is 2020's, `module.`-prefixed
keys 2018's), else `--family`, else the shortcut's family; it sets the input normalisation. What the weights cannot
show (conv1's temporal stride, max pooling, the segment size) comes from score's flags, else from the original's
opts.json beside the file (`release_opts`), else the original's defaults."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import NamedTuple

import torch

from data.errors import InputError
from trainer.checkpoint import (checkpoint_state, first_few, load_checkpoint_file, rebuilt_model, tensor_dict,
                                with_weights)
from trainer.model import BLOCKS_PER_DEPTH, ModelConfig, ResNet3D, family_shortcut

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ReleaseOptions:
    """What a 3D-ResNets-PyTorch file cannot say about its model, as the original tools' flags state it.

    None: what the file shows (depth, shortcut, family where it can tell), else the family's default; for the
    rest, what the original's opts.json beside the file states (release_opts), else the original's default
    (RELEASE_DEFAULTS).
    """

    depth: int | None = None  # --model_depth
    shortcut: str | None = None  # --resnet_shortcut
    family: str | None = None  # hara2018 | hara2020
    conv1_t_stride: int | None = None
    no_max_pool: bool | None = None
    sample_size: int | None = None
    sample_duration: int | None = None


class LoadedModel(NamedTuple):
    model: ResNet3D  # in eval mode
    config: ModelConfig
    release: bool  # a 3D-ResNets-PyTorch file (its own classes, e.g. Kinetics'), not a fightwatch checkpoint


def load_any_model(path: str | Path, release: ReleaseOptions, *, verify: bool = True) -> LoadedModel:
    """A fightwatch checkpoint (rebuilt from its 'model_config') or a 3D-ResNets-PyTorch file as it is, the
    model built from its weights and `release` (release_config)."""
    path = Path(path)
    obj = _release_file(path, load_checkpoint_file(path, verify, require_checksum=False))
    family = saved_family(obj)
    state = checkpoint_state(path, obj)
    if "model_config" in state:
        return LoadedModel(*rebuilt_model(path, state), release=False)
    model_cfg = release_config(path, state, release, family)
    return LoadedModel(with_weights(path, ResNet3D(model_cfg), state["state_dict"], "the model built from it"),
                       model_cfg, release=True)


# ---------------------------------------------------------------------------------------------------------------
# Pretrained 3D-ResNets-PyTorch weights

_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")
_ARCH = re.compile(r"^(\w+)-(\d+)$")
FAMILY_CODE = {"hara2018": "2018 (CVPR2018 branch) code", "hara2020": "2020 (master) code"}


def _release_file(path: Path, obj) -> dict:
    """A loaded 3D-ResNets-PyTorch file as a checkpoint dict: {'state_dict', ...} as saved, or a bare state_dict
    wrapped in one."""
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj}
    raise InputError(f"{path}: not a 3D-ResNets-PyTorch checkpoint (neither a dict with 'state_dict' "
                     "nor a bare state_dict)")


def saved_family(obj) -> str | None:
    """Which 3D-ResNets-PyTorch code saved a loaded file, where its layout tells: the 2020 code saves a
    'scheduler' and unwraps DataParallel; the 2018 code saves neither, keeping DataParallel's `module.` prefix."""
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        return None
    if "scheduler" in obj:
        return "hara2020"
    return "hara2018" if any(str(k).startswith("module.") for k in obj["state_dict"]) else None


def describe_input(model_cfg: ModelConfig, source: str | None = None) -> str:
    """The input the weights expect and the layers they cannot show, for the log line beside the weights;
    `source`: where those settings came from (default: the model config's keys)."""
    source = source or f"model.family {model_cfg.family} and model.*: the weights cannot show these"
    return (f"input: pixels scaled to 0-{model_cfg.value_scale:g}, mean {list(model_cfg.mean)}, std "
            f"{list(model_cfg.std)}; conv1 temporal stride {model_cfg.conv1_t_stride}, max pool "
            f"{'off' if model_cfg.no_max_pool else 'on'} ({source})")


def _check_conv1(path: Path, weights: dict[str, torch.Tensor]) -> torch.Tensor:
    conv1 = weights.get("conv1.weight")
    if conv1 is None or conv1.ndim != 5:
        raise InputError(f"{path}: not a 3D ResNet of 3D-ResNets-PyTorch (no 5-d conv1.weight)")
    if conv1.shape[1] != 3:
        raise InputError(f"{path}: conv1 takes {conv1.shape[1]} input channels (the original's --n_input_channels; "
                         "e.g. 2 for optical flow); fightwatch feeds RGB frames, 3 channels")
    return conv1


RELEASE_DEFAULTS = {"conv1_t_stride": 1, "no_max_pool": False, "sample_size": 112, "sample_duration": 16}  # opts.py's
_OPTS_TYPES = {"model_depth": int, "resnet_shortcut": str, "conv1_t_size": int, "n_classes": int,
               "n_finetune_classes": int, "conv1_t_stride": int, "no_max_pool": bool, "sample_size": int,
               "sample_duration": int}


def release_opts(path: Path) -> tuple[Path | None, dict]:
    """(its path, its options) of the opts.json beside a 3D-ResNets-PyTorch checkpoint, which the original's
    main.py writes into its result_path beside the save_N.pth files (vars(opt) of its opts.py); (None, {}) where
    there is none. InputError naming it when it is not such a file (not a JSON object, a key of another type)."""
    opts_path = path.parent / "opts.json"
    if not opts_path.is_file():
        return None, {}
    try:
        opts = json.loads(opts_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{opts_path}: not the original's opts.json: {e}") from None
    if not isinstance(opts, dict):
        raise InputError(f"{opts_path}: not the original's opts.json (not a JSON object)")
    for key, kind in _OPTS_TYPES.items():
        if opts.get(key) is not None and type(opts[key]) is not kind:
            raise InputError(f"{opts_path}: {key} is {opts[key]!r}, not {kind.__name__}: not the original's opts.json")
    return opts_path, opts


def release_config(path: Path, state: dict, options: ReleaseOptions, saved: str | None) -> ModelConfig:
    """The ModelConfig of a 3D-ResNets-PyTorch file: depth, shortcut, width, classes and conv1's temporal kernel
    from its weights (a flag, or the opts.json beside it, that contradicts them is an error), the family from its
    layout (saved_family) or options, else guessed from the shortcut and logged as such; conv1's temporal stride,
    max pooling and the input size from options, else that opts.json (a flag that contradicts it is an error), else
    the original's defaults, logged with the flags that state them."""
    weights = state["state_dict"]
    conv1, fc = _check_conv1(path, weights), weights.get("fc.weight")
    if fc is None or fc.ndim != 2:
        raise InputError(f"{path}: not a 3D ResNet of 3D-ResNets-PyTorch (no 2-d fc.weight)")
    kind, blocks = _structure(weights)
    depth = _depth_of(kind, blocks)
    if depth is None:
        raise InputError(f"{path}: {blocks} {kind} blocks per stage is no ResNet depth fightwatch builds "
                         f"({sorted(BLOCKS_PER_DEPTH)})")
    arch = state.get("arch")
    if arch is not None and arch != f"resnet-{depth}":
        raise InputError(f"{path}: the file's arch is {arch!r}, its weights a resnet-{depth}: only resnet-N files of "
                         "3D-ResNets-PyTorch load")
    if options.depth not in (None, depth):
        raise InputError(f"{path}: --model_depth {options.depth}, but the file holds a resnet-{depth}")
    shortcut = "B" if any(".downsample." in k for k in weights) else "A"
    if options.shortcut not in (None, shortcut):
        raise InputError(f"{path}: --resnet_shortcut {options.shortcut}, but the file's weights use shortcut "
                         f"{shortcut} ({'with' if shortcut == 'B' else 'no'} downsample.* projections)")
    if options.family is not None and saved not in (None, options.family):
        raise InputError(f"{path}: --family {options.family}, but the file was saved by the {FAMILY_CODE[saved]}")
    family = options.family or saved or ("hara2018" if family_shortcut("hara2018", depth) == shortcut else "hara2020")
    opts_path, opts = release_opts(path)
    # a fine-tune (--pretrain_path) replaced the fc: its classes are n_finetune_classes, n_classes the pretraining's
    classes = opts.get("n_finetune_classes") if opts.get("pretrain_path") else opts.get("n_classes")
    for key, stated, shown in (("model_depth", opts.get("model_depth"), depth),
                               ("resnet_shortcut", opts.get("resnet_shortcut"), shortcut),
                               ("conv1_t_size", opts.get("conv1_t_size"), conv1.shape[2]),
                               ("n_classes", classes, fc.shape[0])):
        if stated is not None and stated != shown:
            raise InputError(f"{path}: {opts_path} states {key} {stated}, but the weights show {shown}: the "
                             "opts.json of another run?")
    chosen = {}
    for key, default in RELEASE_DEFAULTS.items():
        flag, stated = getattr(options, key), opts.get(key)
        if flag is not None and stated is not None and flag != stated:
            raise InputError(f"{path}: {f'--{key}' if flag is True else f'--{key} {flag}'}, but {opts_path} states "
                             f"{key} {json.dumps(stated)}")
        chosen[key] = next(value for value in (flag, stated, default) if value is not None)
    try:
        model_cfg = ModelConfig(depth=depth, shortcut=shortcut, width=conv1.shape[0], n_classes=fc.shape[0],
                                sample_size=chosen["sample_size"], sample_duration=chosen["sample_duration"],
                                pretrained=None, ft_begin="fc", mean=None, std=None, value_scale=None, family=family,
                                conv1_t_size=conv1.shape[2], conv1_t_stride=chosen["conv1_t_stride"],
                                no_max_pool=chosen["no_max_pool"])
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    how = ("--family" if options.family else f"saved by the {FAMILY_CODE[saved]}" if saved
           else f"assumed from shortcut {shortcut}; --family to say otherwise")
    # Either value loads the same weights and runs, giving other features: only the log can tell what was assumed
    if opts_path is not None:
        source = f"from {opts_path}"
    elif options.conv1_t_stride is not None and options.no_max_pool is not None:
        source = "as stated by score's flags"
    else:
        source = ("assumed, as the weights cannot show them: for weights from a run with --no_max_pool or "
                  "--conv1_t_stride 2, pass score the same flags, or keep that run's opts.json beside the file")
    log.info("%s: 3D-ResNets-PyTorch %s (family %s: %s), width %d, %d classes, conv1 kernel %d frames, %d-frame "
             "segments of %dx%d; %s", path, model_cfg.arch, family, how, model_cfg.width, model_cfg.n_classes,
             model_cfg.conv1_t_size, model_cfg.sample_duration, model_cfg.sample_size, model_cfg.sample_size,
             describe_input(model_cfg, source))
    return model_cfg


def _structure(keys) -> tuple[str, tuple[int, int, int, int]]:
    """('basic' | 'bottleneck', blocks per stage) of a ResNet state_dict's key names."""
    blocks: list[set[int]] = [set(), set(), set(), set()]
    bottleneck = False
    for key in keys:
        m = _BLOCK_KEY.match(key)
        if m:
            blocks[int(m.group(1)) - 1].add(int(m.group(2)))
            bottleneck |= ".conv3." in key or ".bn3." in key
    return ("bottleneck" if bottleneck else "basic"), tuple(len(b) for b in blocks)


def _depth_of(kind: str, blocks: tuple[int, ...]) -> int | None:
    return next((d for d, (k, b) in BLOCKS_PER_DEPTH.items() if (k, b) == (kind, blocks)), None)


def _mismatch_hints(file_keys: dict[str, torch.Tensor], model_keys: dict[str, torch.Tensor],
                    mismatched: list[str], model_cfg: ModelConfig) -> list[str]:
    """Which ModelConfig option probably explains a key/shape mismatch, most telling first."""
    hints = []
    file_kind, file_blocks = _structure(file_keys)
    model_kind, model_blocks = _structure(model_keys)
    if any(file_blocks) and (file_kind, file_blocks) != (model_kind, model_blocks):
        depth = _depth_of(file_kind, file_blocks)
        blocks = f"{file_kind} blocks (conv3/bn3 keys)" if file_kind == "bottleneck" else f"{file_kind} blocks"
        if depth is not None:
            hints.append(f"model.depth (the file has {file_blocks} {blocks} per stage, i.e. resnet-{depth}: "
                         f"set model.depth={depth}, not {model_cfg.depth})")
        elif file_kind != model_kind:
            bound = "depth >= 50" if file_kind == "bottleneck" else "depth <= 34"
            hints.append(f"model.depth (the file has {blocks}: {bound}, not {model_cfg.depth})")
        else:
            hints.append(f"model.depth (the file has {file_blocks} blocks per stage, resnet-{model_cfg.depth} "
                         f"has {model_blocks})")
    file_ds = any(".downsample." in k for k in file_keys)
    model_ds = any(".downsample." in k for k in model_keys)
    if file_ds and not model_ds:
        hints.append("model.shortcut (the file has downsample.* projection weights: it was trained with shortcut B; "
                     "set model.shortcut=B)")
    elif model_ds and not file_ds:
        hints.append("model.shortcut (the file has no downsample.* weights: it was trained with shortcut A; "
                     "set model.shortcut=A)")
    t_file, t_model = (w.get("conv1.weight") for w in (file_keys, model_keys))
    if t_file is not None and t_model is not None and t_file.shape[2:] != t_model.shape[2:]:
        hints.append(f"model.conv1_t_size (the file's conv1 spans {t_file.shape[2]} frames: "
                     f"set model.conv1_t_size={t_file.shape[2]})")
    if mismatched:
        ref = next((k for k in ("conv1.weight", "bn1.weight") if k in file_keys and k in model_keys), None)
        if ref is not None and file_keys[ref].shape[0] != model_keys[ref].shape[0]:
            width = file_keys[ref].shape[0]
            hints.append(f"model.width (the file's {ref.split('.')[0]} has {width} channels, the model's "
                         f"{model_keys[ref].shape[0]}: set model.width={width}; Hara's models use 64)")
    return hints


def load_pretrained(model: ResNet3D, path: str | Path, model_cfg: ModelConfig, *, verify: bool = True) -> None:
    """Load a 3D-ResNets-PyTorch checkpoint's trunk into `model`; its fc keeps its fresh initialisation.

    Accepts {'epoch', 'arch', 'state_dict', 'optimizer'} (state_dict keys with or without DataParallel's
    `module.` prefix) or a bare state_dict, read with weights_only=True. The file's fc (e.g. Kinetics' 400
    classes) is skipped. Everything else must match exactly, names and shapes, else InputError (one line) that
    lists missing/unexpected/mismatched keys and names the model.* option that is probably wrong. BatchNorm's
    `num_batches_tracked`, absent from files saved by old PyTorch versions, may be missing.
    """
    path = Path(path)
    obj = _release_file(path, load_checkpoint_file(path, verify, require_checksum=False))
    arch, epoch = obj.get("arch"), obj.get("epoch")
    saved = saved_family(obj)
    weights = tensor_dict(path, obj["state_dict"])
    _check_conv1(path, weights)
    if saved is not None and saved != model_cfg.family:
        raise InputError(f"{path}: the file was saved by 3D-ResNets-PyTorch's {FAMILY_CODE[saved]}, model.family is "
                         f"{model_cfg.family}: set model.family={saved}, so the input normalisation and shortcut "
                         "match the weights")

    if arch is not None and arch != model_cfg.arch:
        m = _ARCH.match(str(arch))
        if m and m.group(1) == "resnet":
            raise InputError(f"{path}: the file holds a {arch} (its 'arch'), the model is {model_cfg.arch}: "
                             f"model.depth is probably wrong (set model.depth={m.group(2)})")
        raise InputError(f"{path}: the file holds arch {arch!r}; fightwatch builds plain 3D ResNets "
                         f"({model_cfg.arch} from model.depth): only resnet-N checkpoints of 3D-ResNets-PyTorch load")

    trunk = {k: v for k, v in weights.items() if not k.startswith("fc.")}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    missing = [k for k in own if k not in trunk and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in trunk if k not in own]
    mismatched = [k for k in trunk if k in own and trunk[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        hints = _mismatch_hints(trunk, own, mismatched, model_cfg)
        advice = ("probably wrong: " + "; ".join(hints) if hints else
                  "no model.* option explains this: is it a resnet checkpoint of 3D-ResNets-PyTorch?")
        details = []
        if missing:
            details.append(f"{len(missing)} missing key(s) ({first_few(missing)})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected key(s) ({first_few(unexpected)})")
        if mismatched:
            shapes = [f"{k} file {tuple(trunk[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched]
            details.append(f"{len(mismatched)} shape mismatch(es) ({first_few(shapes, 3)})")
        raise InputError(f"{path}: pretrained weights do not fit {model_cfg.arch} (shortcut {model_cfg.shortcut}, "
                         f"width {model_cfg.width}): {advice}; " + ", ".join(details))

    # A fightwatch checkpoint (a model to fine-tune further, e.g. on reviewed alerts) knows its whole function:
    # what it states must be what the config states, and its fc carries over.
    own_fc = "model_config" in obj and _check_stated(path, obj["model_config"], model_cfg)
    loaded = {**trunk, **({k: v for k, v in weights.items() if k.startswith("fc.")} if own_fc else {})}
    result = model.load_state_dict(loaded, strict=False)
    left = [k for k in result.missing_keys if not k.startswith("fc.") and not k.endswith(".num_batches_tracked")]
    if left or result.unexpected_keys:  # checked above; load_state_dict is the final word
        raise RuntimeError(f"pretrained load left {left} missing, {result.unexpected_keys} unexpected")
    fc = weights.get("fc.weight")
    head = ("fc from the file (a fightwatch model with the same classes)" if own_fc else
            f"fc stays freshly initialised ({fc.shape[0] if fc is not None else 'no'} -> {model_cfg.n_classes} classes)")
    log.info("loaded %d pretrained tensors from %s (%s, epoch %s, %s); %s; %s", len(loaded), path,
             arch or "bare state_dict", epoch, f"saved by the {FAMILY_CODE[saved]}" if saved else "saving code unknown",
             head, describe_input(model_cfg))


_STATED = ("family", "mean", "std", "value_scale", "conv1_t_stride", "no_max_pool")


def _check_stated(path: Path, stored: dict, model_cfg: ModelConfig) -> bool:
    """InputError unless a fightwatch checkpoint's input and layer settings (those no weight shows) are the
    config's; True when its classes are the config's too, so its fc can be kept."""
    for key in _STATED:
        if key in stored and not _same(stored[key], getattr(model_cfg, key)):
            raise InputError(f"{path}: the model was trained with model.{key}={stored[key]}, the config states "
                             f"{getattr(model_cfg, key)}: set model.{key} to match")
    return stored.get("n_classes") == model_cfg.n_classes


def _same(a, b) -> bool:
    return list(a) == list(b) if isinstance(a, (list, tuple)) else a == b
