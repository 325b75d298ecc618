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

3D-ResNets-PyTorch's released files, which carry no model config, are read by trainer/releases.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import warnings
from collections import OrderedDict
from pathlib import Path

import torch

from data.errors import InputError
from data.files import atomic_path
from trainer.model import ModelConfig, ResNet3D

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


def load_checkpoint_file(path: str | Path, verify: bool, require_checksum: bool):
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


def tensor_dict(path: Path, state_dict) -> dict[str, torch.Tensor]:
    if not isinstance(state_dict, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise InputError(f"{path}: not a checkpoint ('state_dict' is not a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def checkpoint_state(path: Path, obj) -> dict:
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise InputError(f"{path}: not a checkpoint (no 'state_dict')")
    obj["state_dict"] = tensor_dict(path, obj["state_dict"])
    return obj


def read_checkpoint(path: str | Path, verify: bool = True, *, require_checksum: bool = False) -> dict:
    """The checkpoint dict, with DataParallel's `module.` prefix dropped from its state_dict keys.

    verify: when a `.sha256` sidecar exists, the file's bytes must match it. require_checksum: the sidecar must
    exist too (implies verify); off by default so released 3D-ResNets-PyTorch files, which have none, load.
    Raises InputError (one line, naming the file) for a missing, corrupt or non-checkpoint file.
    """
    path = Path(path)
    return checkpoint_state(path, load_checkpoint_file(path, verify, require_checksum))


def load_model(path: str | Path, *, verify: bool = True,
               require_checksum: bool = False) -> tuple[ResNet3D, ModelConfig]:
    """Rebuild a fightwatch checkpoint's model in eval mode, ready to score."""
    path = Path(path)
    state = read_checkpoint(path, verify, require_checksum=require_checksum)
    if "model_config" not in state:
        raise InputError(f"{path}: checkpoint has no 'model_config' (a 3D-ResNets-PyTorch file?): `fightwatch "
                         "score` reads those as they are; to detect fights, fine-tune it first (model.pretrained)")
    return rebuilt_model(path, state)


def rebuilt_model(path: Path, state: dict) -> tuple[ResNet3D, ModelConfig]:
    try:
        model_cfg = ModelConfig(**state["model_config"])
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: checkpoint's model_config does not fit this fightwatch version: {e}") from None
    return with_weights(path, ResNet3D(model_cfg), state["state_dict"], "the checkpoint's own model_config"), model_cfg


def with_weights(path: Path, model: ResNet3D, weights: dict, what: str) -> ResNet3D:
    """`model` in eval mode holding exactly `weights` (BatchNorm's num_batches_tracked, which old PyTorch
    versions did not save, may be missing); InputError naming what the weights failed to fit."""
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise InputError(f"{path}: weights do not fit {what}: {_shape_errors(str(e))}") from None
    missing = [k for k in result.missing_keys if not k.endswith(".num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise InputError(f"{path}: weights do not fit {what}: {len(missing)} missing key(s) ({first_few(missing)}), "
                         f"{len(result.unexpected_keys)} unexpected ({first_few(result.unexpected_keys)})")
    return model.eval()


def _shape_errors(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if "size mismatch" in line]
    return first_few(lines, 2) if lines else text.strip().splitlines()[0]


def first_few(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


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
