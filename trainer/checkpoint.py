"""Checkpoints in the format of 3D-ResNets-PyTorch, written atomically with a checksum.

That repository saves {'epoch', 'arch', 'state_dict', 'optimizer'}; ours add
'model_config' so a checkpoint alone rebuilds its model for scoring, plus any
`extra` items the training loop wants back on resume. Loading uses
weights_only=True: a .pth from the internet must not run pickled code.

Every checkpoint we write gets a sidecar `<name>.sha256` in `sha256sum` format
(`<hex digest>  <name>`, so `sha256sum -c epoch_0010.pth.sha256` works),
written atomically after the checkpoint itself. A checkpoint whose sidecar
disagrees with its bytes is corrupt or half-written; one without a sidecar is
either not ours (e.g. a released 3D-ResNets-PyTorch model, accepted by
default) or was cut off between the two renames (refused with
`require_checksum=True`, as `latest_checkpoint` does when choosing where to
resume).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import torch

from data.errors import InputError
from data.files import atomic_path
from trainer.model import BLOCKS_PER_DEPTH, ModelConfig, ResNet3D, family_shortcut

log = logging.getLogger(__name__)

CHECKSUM_SUFFIX = ".sha256"
RESERVED_KEYS = frozenset({"epoch", "arch", "state_dict", "optimizer", "model_config"})
_SCALAR_TYPES = (type(None), bool, int, float, complex, str, bytes)
_CONTAINER_TYPES = (dict, OrderedDict, list, tuple, set)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def checksum_path(path: str | Path) -> Path:
    """The sidecar holding `path`'s sha256: `epoch_0010.pth` -> `epoch_0010.pth.sha256`."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


# ---------------------------------------------------------------------------------------------------------------
# Writing


class _HashingWriter:
    """A write-only file object that hashes what passes through it to the real file."""

    def __init__(self, f, digest):
        self._f, self._digest = f, digest

    def write(self, data) -> int:
        self._digest.update(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()


def _storable(value, where: str):
    """`value` with numpy scalars made Python scalars; TypeError unless torch.load(weights_only=True) reads it."""
    kind = type(value)
    if kind in _SCALAR_TYPES or kind in (torch.Tensor, torch.nn.Parameter, torch.Size, torch.dtype, torch.device):
        return value
    if kind in (dict, OrderedDict):
        return kind((_storable(k, f"{where} key {k!r}"), _storable(v, f"{where}[{k!r}]")) for k, v in value.items())
    if kind in (list, tuple, set):
        return kind(_storable(item, f"{where}[{i}]") for i, item in enumerate(value))
    numpy = kind.__module__.split(".")[0] == "numpy"
    if numpy and getattr(value, "ndim", None) == 0 and type(value.item()) in _SCALAR_TYPES:
        return value.item()  # np.float64 from sklearn and friends: exact as a Python float
    hint = " (numpy arrays: use .tolist() or torch.from_numpy())" if numpy else ""
    raise TypeError(f"checkpoint {where} is a {kind.__module__}.{kind.__qualname__}, which "
                    f"torch.load(weights_only=True) refuses{hint}; allowed: None, bool, int, float, complex, str, "
                    "bytes, numpy scalars (stored as Python scalars), torch.Tensor, torch.Size, torch.dtype, "
                    "torch.device, and dict/OrderedDict/list/tuple/set of those")


def save_checkpoint(path: Path, model: ResNet3D, model_cfg: ModelConfig, epoch: int,
                    optimizer: torch.optim.Optimizer | None = None, *, extra: dict | None = None) -> None:
    """Write a checkpoint atomically (temp file, fsync, rename), then its `.sha256` sidecar the same way; a full
    disk is a NoSpaceError (one line) that leaves the files there as they were.

    `extra` items go into the checkpoint dict beside 'epoch', 'arch', 'state_dict', 'optimizer' and
    'model_config' (those names are reserved: ValueError). They must load under weights_only=True, so only
    None, bool, int, float, complex, str, bytes, torch.Tensor, torch.Size, torch.dtype, torch.device and
    (exactly) dict, OrderedDict, list, tuple and set of those are allowed. numpy scalars (np.float64 metrics
    from sklearn, np.int64, np.bool_) are stored as the equal Python scalar. Anything else, numpy arrays and
    namedtuples included, is a TypeError here rather than an unreadable checkpoint later. So:
    `torch.get_rng_state()` and `Generator.get_state()` as they are, `random.getstate()` as it is,
    `np.random.get_state()` with its array turned into `.tolist()`, `scheduler.state_dict()` of the stock
    schedulers, run ids as str, metrics as float.
    """
    path = Path(path)
    extra = dict(extra or {})
    clash = sorted(RESERVED_KEYS & extra.keys())
    if clash:
        raise ValueError(f"checkpoint extra uses reserved key(s) {clash}")
    extra = _storable(extra, "extra")
    state = {
        "epoch": epoch,
        "arch": model_cfg.arch,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "model_config": dataclasses.asdict(model_cfg),
        **extra,
    }
    digest = hashlib.sha256()
    # Both temp files are written before either rename (the checkpoint's first): a full disk fails before
    # anything is replaced, instead of leaving a new checkpoint beside its predecessor's sidecar.
    with atomic_path(checksum_path(path)) as sidecar_tmp, atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(state, _HashingWriter(f, digest))
        sidecar_tmp.write_text(f"{digest.hexdigest()}  {path.name}\n")


# ---------------------------------------------------------------------------------------------------------------
# Reading


def _load_error(path: Path, e: Exception) -> str:
    """One line for a file torch.load rejected."""
    text = str(e)
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL (\S+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (f"{path}: not a readable checkpoint: it holds pickled Python objects{what} that weights-only loading "
                "refuses, since unpickling them could run code")
    if isinstance(e, (KeyError, EOFError)) or "invalid load key" in text:
        return f"{path}: not a readable checkpoint: not a file written by torch.save (or truncated)"
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return f"{path}: not a readable checkpoint: {first}"


def _expected_digest(path: Path, require_checksum: bool) -> str | None:
    sidecar = checksum_path(path)
    if not sidecar.is_file():
        if require_checksum:
            raise InputError(f"{path}: no checksum file {sidecar.name}: corrupt or half-written checkpoint")
        return None
    words = sidecar.read_text(errors="replace").split()
    if not words or not _HEX64.match(words[0].lower()):
        raise InputError(f"{sidecar}: not a sha256 checksum file")
    return words[0].lower()


def _load(path: str | Path, verify: bool, require_checksum: bool):
    """torch.load(weights_only=True) of `path`, after checking its sidecar; InputError for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    expected = _expected_digest(path, require_checksum) if verify or require_checksum else None
    with open(path, "rb") as f:  # one open file: a rename over `path` between hashing and loading cannot interfere
        if expected is not None:
            digest = hashlib.sha256()
            while chunk := f.read(1 << 20):
                digest.update(chunk)
            if digest.hexdigest() != expected:
                raise InputError(f"{path}: checksum mismatch: corrupt or half-written checkpoint")
            f.seek(0)
        try:
            with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise next to our own error
                warnings.simplefilter("ignore")
                return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several unrelated types for a file that is not a checkpoint
            raise InputError(_load_error(path, e)) from None


def _tensor_dict(path: Path, state_dict) -> dict[str, torch.Tensor]:
    if not isinstance(state_dict, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise InputError(f"{path}: not a checkpoint ('state_dict' is not a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _checkpoint_state(path: Path, obj) -> dict:
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise InputError(f"{path}: not a checkpoint (no 'state_dict')")
    obj["state_dict"] = _tensor_dict(path, obj["state_dict"])
    return obj


def read_checkpoint(path: str | Path, verify: bool = True, *, require_checksum: bool = False) -> dict:
    """The checkpoint dict, with DataParallel's `module.` prefix dropped from its state_dict keys.

    verify: when a `.sha256` sidecar exists, the file's bytes must match it. require_checksum: the sidecar must
    exist too (implies verify); off by default so released 3D-ResNets-PyTorch files, which have none, load.
    Raises InputError (one line, naming the file) for a missing, corrupt or non-checkpoint file.
    """
    path = Path(path)
    return _checkpoint_state(path, _load(path, verify, require_checksum))


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
    obj = _release_file(path, _load(path, verify, require_checksum=False))
    family = saved_family(obj)
    state = _checkpoint_state(path, obj)
    if "model_config" in state:
        return LoadedModel(*_rebuilt(path, state), release=False)
    model_cfg = release_config(path, state, release, family)
    return LoadedModel(_with_weights(path, ResNet3D(model_cfg), state["state_dict"], "the model built from it"),
                       model_cfg, release=True)


def load_model(path: str | Path, *, verify: bool = True,
               require_checksum: bool = False) -> tuple[ResNet3D, ModelConfig]:
    """Rebuild a fightwatch checkpoint's model in eval mode, ready to score."""
    path = Path(path)
    state = read_checkpoint(path, verify, require_checksum=require_checksum)
    if "model_config" not in state:
        raise InputError(f"{path}: checkpoint has no 'model_config' (a 3D-ResNets-PyTorch file?): `fightwatch "
                         "score` reads those as they are; to detect fights, fine-tune it first (model.pretrained)")
    return _rebuilt(path, state)


def _rebuilt(path: Path, state: dict) -> tuple[ResNet3D, ModelConfig]:
    try:
        model_cfg = ModelConfig(**state["model_config"])
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: checkpoint's model_config does not fit this fightwatch version: {e}") from None
    return _with_weights(path, ResNet3D(model_cfg), state["state_dict"], "the checkpoint's own model_config"), model_cfg


def _with_weights(path: Path, model: ResNet3D, weights: dict, what: str) -> ResNet3D:
    """`model` in eval mode holding exactly `weights` (BatchNorm's num_batches_tracked, which old PyTorch
    versions did not save, may be missing); InputError naming what the weights failed to fit."""
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise InputError(f"{path}: weights do not fit {what}: {_shape_errors(str(e))}") from None
    missing = [k for k in result.missing_keys if not k.endswith(".num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise InputError(f"{path}: weights do not fit {what}: {len(missing)} missing key(s) ({_few(missing)}), "
                         f"{len(result.unexpected_keys)} unexpected ({_few(result.unexpected_keys)})")
    return model.eval()


def _shape_errors(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if "size mismatch" in line]
    return _few(lines, 2) if lines else text.strip().splitlines()[0]


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
        model_cfg = ModelConfig(depth, shortcut, conv1.shape[0], fc.shape[0], chosen["sample_size"],
                                chosen["sample_duration"], None, "fc", None, None, None, family=family,
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


def _few(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


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
    obj = _release_file(path, _load(path, verify, require_checksum=False))
    arch, epoch = obj.get("arch"), obj.get("epoch")
    saved = saved_family(obj)
    weights = _tensor_dict(path, obj["state_dict"])
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
            details.append(f"{len(missing)} missing key(s) ({_few(missing)})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected key(s) ({_few(unexpected)})")
        if mismatched:
            shapes = [f"{k} file {tuple(trunk[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched]
            details.append(f"{len(mismatched)} shape mismatch(es) ({_few(shapes, 3)})")
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


# ---------------------------------------------------------------------------------------------------------------
# Resuming


def _peek_epoch(path: Path) -> int:
    """The stored epoch, reading only the pickle (tensors are memory-mapped, not read); unverified."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise InputError(_load_error(path, e)) from None
    epoch = state.get("epoch") if isinstance(state, dict) else None
    if type(epoch) is not int:
        raise InputError(f"{path}: not a checkpoint (no integer 'epoch')")
    return epoch


def latest_checkpoint(directory: str | Path) -> tuple[Path, dict] | None:
    """(path, state) of the `epoch_*.pth` or `last.pth` in `directory` with the highest stored epoch that reads
    and verifies against its checksum (require_checksum=True); None when there is none.

    Corrupt, half-written or sidecar-less files are skipped with a logging warning naming each and the
    checkpoint fallen back to. Ties in epoch go to the most recently written file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    paths = sorted(p for p in directory.glob("epoch_*.pth") if p.is_file())
    if (directory / "last.pth").is_file():
        paths.append(directory / "last.pth")
    skipped: list[tuple[Path, str]] = []
    ranked = []
    for path in paths:
        try:
            ranked.append((_peek_epoch(path), path.stat().st_mtime_ns, str(path), path))
        except InputError as e:
            skipped.append((path, str(e)))
    ranked.sort(reverse=True)
    for epoch, _, _, path in ranked:
        try:
            state = read_checkpoint(path, require_checksum=True)
        except InputError as e:
            skipped.append((path, str(e)))
            continue
        for bad, reason in skipped:
            log.warning("skipping checkpoint %s (%s); falling back to %s (epoch %d)",
                        bad, reason.removeprefix(f"{bad}: "), path, state["epoch"])
        return path, state
    for bad, reason in skipped:
        log.warning("skipping checkpoint %s (%s); no usable checkpoint left in %s",
                    bad, reason.removeprefix(f"{bad}: "), directory)
    return None
