"""Training checkpoints: atomic writes, exact-resume contents, compatibility checks, rotation, non-finite guard.

A training checkpoint is one dict written by :func:`save_checkpoint`::

    {"format": "dsf-training-checkpoint", "version": 1,
     "model": state dict (no DDP / torch.compile prefixes), "optimizer": state dict | None,
     "scheduler": state dict | None, "epoch": int, "step": int (iterations done inside ``epoch``),
     "config": dict of plain values, "rng": rng_state(...), "extra": dict, "torch_version": str}

Everything in it is a tensor or a plain container, so :func:`load_checkpoint` reads it with
``torch.load(weights_only=True)``: checkpoints are untrusted input and never run code on load. Writes go to a
temporary file in the same folder that is flushed, fsynced and renamed over the target (then the folder is
fsynced), so a crash mid-write leaves the previous file intact.
"""
from __future__ import annotations

import math
import os
import random
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from model.checkpoint import CheckpointError, as_state_dict, check_state_dict, read_checkpoint
from util.distributed import DistInfo, any_rank, unwrap_model

CHECKPOINT_FORMAT = "dsf-training-checkpoint"
CHECKPOINT_VERSION = 1
LATEST_NAME = "latest.pth"
BEST_NAME = "best.pth"
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pth$")
_TEMP_FILE = re.compile(r"^\..+\.tmp$")


class NonFiniteError(RuntimeError):
    """Too many consecutive training steps had a non-finite loss or gradient."""


# ------------------------------------------------------------------------------------------------------
# atomic writes
# ------------------------------------------------------------------------------------------------------
def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles (Windows): the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` that never leaves a partly written ``path`` (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """``write(file)`` into ``path`` so that a partly written ``path`` never exists.

    Writes a temporary file ``.<name>.<random>.tmp`` in the same folder, flushes and fsyncs it, renames it over
    ``path`` (atomic on POSIX) and fsyncs the folder. On an exception the temporary file is removed; after a
    hard crash it may remain and is ignored by loaders (:func:`rotate_checkpoints` removes it).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)


# ------------------------------------------------------------------------------------------------------
# random number generator states
# ------------------------------------------------------------------------------------------------------
def _generator_state(gen: torch.Generator | np.random.Generator) -> Any:
    if isinstance(gen, torch.Generator):
        return gen.get_state()  # uint8 CPU tensor, also for CUDA generators
    if isinstance(gen, np.random.Generator):
        return gen.bit_generator.state  # plain dict of str / int (arbitrary-size ints pickle safely)
    raise TypeError(f"rng_state: generators must be torch.Generator or numpy.random.Generator, got "
                    f"{type(gen).__name__}")


def rng_state(generators: Mapping[str, torch.Generator | np.random.Generator] | None = None) -> dict:
    """Snapshot of every random number generator a training run draws from.

    Returns:
        {"python": {"version", "internal" (625,) int64, "gauss_next"}, "numpy": {"keys" (624,) int64, "pos",
        "has_gauss", "cached_gaussian"}, "torch": (N,) uint8, "cuda": [(N,) uint8 of the current device] (empty
        without CUDA), "generators": {name: state}} -- tensors and plain values only (``weights_only``-loadable).
    """
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    if name != "MT19937":
        raise RuntimeError(f"unexpected numpy global generator {name!r}")
    return {
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        # this process's device only: touching every GPU would open a CUDA context on each from every rank
        "cuda": [torch.cuda.get_rng_state().cpu()] if torch.cuda.is_available() else [],
        "generators": {key: _generator_state(gen) for key, gen in (generators or {}).items()},
    }


def set_rng_state(state: Mapping[str, Any],
                  generators: Mapping[str, torch.Generator | np.random.Generator] | None = None) -> None:
    """Restore what :func:`rng_state` captured, including the named ``generators`` (which must all be in it).

    The CUDA state goes to the current device (one process per GPU: each rank restores its own).

    Raises:
        ValueError: a part of ``state`` is missing or malformed (the message names it).
    """
    try:
        py = state["python"]
        internal = tuple(int(v) for v in py["internal"].tolist())
        random.setstate((int(py["version"]), internal, py["gauss_next"]))
        npst = state["numpy"]
        np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), int(npst["pos"]),
                             int(npst["has_gauss"]), float(npst["cached_gaussian"])))
        torch.set_rng_state(state["torch"])
        if torch.cuda.is_available() and state["cuda"]:
            torch.cuda.set_rng_state(state["cuda"][0])  # the current device (one process per GPU)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise ValueError(f"malformed RNG state ({type(err).__name__}: {err})") from err
    saved = state.get("generators", {})
    missing = [key for key in (generators or {}) if key not in saved]
    if missing:
        raise ValueError(f"RNG state has no generator(s) {missing}; saved: {sorted(saved)}")
    for key, gen in (generators or {}).items():
        try:
            if isinstance(gen, torch.Generator):
                gen.set_state(saved[key])
            else:
                gen.bit_generator.state = saved[key]
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"malformed state of generator {key!r} ({type(err).__name__}: {err})") from err


# ------------------------------------------------------------------------------------------------------
# save / load
# ------------------------------------------------------------------------------------------------------
_PLAIN = (str, int, float, bool, type(None), torch.dtype, torch.device, torch.Size)


def _check_plain(obj: Any, where: str) -> None:
    """Refuse (before writing) anything ``torch.load(weights_only=True)`` could not read back.

    Exact types: a ``str`` subclass such as ``torch.__version__`` pickles as its own class and is refused on load.
    """
    if type(obj) in _PLAIN or isinstance(obj, torch.Tensor):
        return
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for key, item in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"checkpoint entry {where} has a key of type {type(key).__name__}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"checkpoint entry {where} holds a {type(obj).__name__}; only tensors and plain containers "
                    "can be stored (they are read back with weights_only=True)")


def save_checkpoint(path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, epoch: int, step: int, config: Mapping[str, Any],
                    extra: Mapping[str, Any] | None = None,
                    generators: Mapping[str, torch.Generator | np.random.Generator] | None = None) -> None:
    """Write a training checkpoint atomically (layout in the module docstring).

    Args:
        model: the network; DDP / ``torch.compile`` wrappers are removed so the keys are the plain module's.
        epoch, step: position to resume from: ``step`` iterations of ``epoch`` are done.
        config: the run's resolved config as plain values (``dataclasses.asdict``).
        extra: anything else to restore (best metric, guard counters, sampler position ...), plain values.
        generators: named generators whose states are stored with the global ones.
    """
    payload = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch), "step": int(step), "config": dict(config), "rng": rng_state(generators),
        "extra": dict(extra or {}), "torch_version": str(torch.__version__),
    }
    _check_plain(payload, "checkpoint")
    atomic_save(payload, path)


def _check_archive(path: Path) -> None:
    """Refuse empty, truncated and bit-flipped files before unpickling: ``torch.save`` writes a zip archive
    whose central directory is at the end and whose members carry CRC-32 checksums."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: cannot be read as a DSF training checkpoint: the file is empty")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CheckpointError(f"{path}: cannot be read as a DSF training checkpoint: not a complete torch.save "
                              f"archive (truncated, corrupt or another format: {err})") from None
    if broken is not None:
        raise CheckpointError(f"{path}: cannot be read as a DSF training checkpoint: member {broken!r} fails its "
                              "CRC check (the file is corrupt)")


_REQUIRED = {"model": Mapping, "epoch": int, "step": int, "config": Mapping, "rng": Mapping}


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a :func:`save_checkpoint` file safely and check its layout.

    Returns:
        the checkpoint dict (see the module docstring); ``model`` is checked to be a state dict.
    Raises:
        FileNotFoundError: no such file.
        CheckpointError: truncated / corrupt file, a file holding anything but tensors and plain containers
            (e.g. pickled code), or a PyTorch file that is not a DSF training checkpoint; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (expected a DSF training checkpoint, e.g. "
                                f"<run dir>/{LATEST_NAME})")
    _check_archive(path)
    ckpt = read_checkpoint(path, expected="a DSF training checkpoint", map_location=map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        keys = sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not a DSF training checkpoint (expected a dict with format="
                              f"{CHECKPOINT_FORMAT!r} as written by save_checkpoint; found {keys}). A bare weights "
                              "file can start fine-tuning (finetune_dir) but cannot be resumed.")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint layout version {ckpt.get('version')!r}, this code reads "
                              f"version {CHECKPOINT_VERSION}")
    for key, kind in _REQUIRED.items():
        if not isinstance(ckpt.get(key), kind) or isinstance(ckpt.get(key), bool):
            raise CheckpointError(f"{path}: entry {key!r} must be a {kind.__name__}, found "
                                  f"{type(ckpt.get(key)).__name__}")
    ckpt["model"] = as_state_dict(ckpt["model"], source=str(path), expected="a model state dict")
    return ckpt


def _same(a: Any, b: Any) -> bool:
    """Config value equality that survives a save/load round trip (tuple == list, nan == nan, True != 1)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


_ABSENT = "<absent>"


def check_resume_compatible(saved_config: Mapping[str, Any], config: Mapping[str, Any], ignore: set[str],
                            *, source: str = "checkpoint") -> None:
    """Refuse to resume when any config value other than the ``ignore``d keys differs.

    Raises:
        CheckpointError: listing every differing key as ``key: saved -> now`` (``<absent>`` for a missing key).
    """
    diffs = []
    for key in sorted(set(saved_config) | set(config)):
        if key in ignore:
            continue
        old, new = saved_config.get(key, _ABSENT), config.get(key, _ABSENT)
        if not _same(old, new):
            diffs.append(f"{key}: {old!r} -> {new!r}")
    if diffs:
        raise CheckpointError(f"{source}: cannot resume, the run was saved with a different config "
                              f"({len(diffs)} key(s), saved -> now): " + "; ".join(diffs)
                              + ". Use the saved values, or start a new run (another run_name) instead of resuming.")


def restore_training_state(ckpt: Mapping[str, Any], *, model: nn.Module,
                           optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                           generators: Mapping[str, torch.Generator | np.random.Generator] | None = None,
                           source: str = "checkpoint") -> None:
    """Load a :func:`load_checkpoint` dict into the live objects: weights (exact keys and shapes), optimiser,
    scheduler and every RNG state.

    Raises:
        CheckpointError: the weights do not fit ``model``, or a saved optimiser / scheduler / RNG state is
            missing or does not fit (the message names ``source`` and what differs).
    """
    target = unwrap_model(model)
    check_state_dict(target, ckpt["model"], source=source, expected=f"the {type(target).__name__} being trained")
    target.load_state_dict(ckpt["model"])
    for name, live in (("optimizer", optimizer), ("scheduler", scheduler)):
        if live is None:
            continue
        if not isinstance(ckpt.get(name), Mapping):
            raise CheckpointError(f"{source}: has no {name} state to resume from")
        try:
            live.load_state_dict(ckpt[name])
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise CheckpointError(f"{source}: saved {name} state does not fit the current {name} "
                                  f"({type(err).__name__}: {err})") from None
    try:
        set_rng_state(ckpt["rng"], generators)
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from None


# ------------------------------------------------------------------------------------------------------
# run folder housekeeping
# ------------------------------------------------------------------------------------------------------
def epoch_checkpoint_name(epoch: int) -> str:
    """``epoch_XXX.pth`` (zero-padded to 3 digits, more when needed)."""
    return f"epoch_{epoch:03d}.pth"


def resolve_resume(resume: str, run_dir: str | os.PathLike, name: str = LATEST_NAME) -> Path | None:
    """The checkpoint a ``resume`` setting names: ``""`` -> None; ``"auto"`` -> ``<run_dir>/<name>`` or None
    when the run has none yet (a fresh start); a folder -> its ``<name>``; else the path itself. ``name``:
    ``latest.pth`` (pose training) or the Consis-CycleGAN state file.

    Raises:
        FileNotFoundError: an explicit path (or folder) without the checkpoint.
    """
    if not resume:
        return None
    if resume == "auto":
        latest = Path(run_dir) / name
        return latest if latest.is_file() else None
    path = Path(resume)
    if path.is_dir():
        path = path / name
    if not path.is_file():
        raise FileNotFoundError(f"resume={resume}: no checkpoint at {path} (use resume=auto to continue this run "
                                f"folder's {name}, or the path of a saved checkpoint)")
    return path


def keep_epoch_copy(run_dir: str | os.PathLike, epoch: int, keep_last: int) -> Path | None:
    """Keep ``latest.pth`` as ``epoch_XXX.pth`` (a hard link when possible: no extra disk space; the next atomic
    write of ``latest.pth`` makes a new file) and delete all but the last ``keep_last`` epoch files."""
    run_dir = Path(run_dir)
    if keep_last == 0:
        rotate_checkpoints(run_dir, 0)
        return None
    target = run_dir / epoch_checkpoint_name(epoch)
    tmp = run_dir / f".{target.name}.link.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(run_dir / LATEST_NAME, tmp)
    except OSError:  # file systems without hard links: a second copy
        atomic_save(torch.load(run_dir / LATEST_NAME, map_location="cpu", weights_only=True), tmp)
    os.replace(tmp, target)
    _fsync_dir(str(run_dir))
    rotate_checkpoints(run_dir, keep_last)
    return target


def rotate_checkpoints(run_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` highest-numbered ``epoch_XXX.pth`` files (and stale temp files).

    ``latest.pth``, ``best.pth`` and every other file are left alone. ``keep_last=0`` removes every
    epoch file. Returns the removed paths.
    """
    if keep_last < 0:
        raise ValueError(f"keep_last must be >= 0, got {keep_last}")
    run_dir = Path(run_dir)
    epochs = sorted((int(m.group(1)), p) for p in run_dir.iterdir() if (m := _EPOCH_FILE.match(p.name)))
    doomed = [p for _, p in (epochs[:-keep_last] if keep_last else epochs)]
    doomed += [p for p in run_dir.iterdir() if _TEMP_FILE.match(p.name) and p.is_file()]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


# ------------------------------------------------------------------------------------------------------
# non-finite guard
# ------------------------------------------------------------------------------------------------------
class NonFiniteGuard:
    """Skip training steps whose loss or gradients are not finite; stop after too many in a row.

    Call :meth:`check` after ``backward()`` and before ``optimizer.step()``. On a bad step it clears the
    gradients (so an optimiser step would not move any parameter) and returns False; the caller skips the step.
    With a distributed ``dist``, one rank's bad step makes every rank skip, so the replicas stay identical.

    Attributes:
        skipped: total number of skipped steps.
        consecutive: bad steps since the last good one.
    """

    def __init__(self, max_consecutive: int = 10, dist: DistInfo | None = None) -> None:
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive must be >= 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.dist = dist
        self.skipped = 0
        self.consecutive = 0

    @staticmethod
    def _finite(loss: torch.Tensor, model: nn.Module) -> torch.Tensor:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        flags = [torch.isfinite(loss.detach()).all()] + [torch.isfinite(g).all() for g in grads]
        return torch.stack(flags).all()  # one device -> host sync in the caller, not one per tensor

    def check(self, loss: torch.Tensor, model: nn.Module) -> bool:
        """True = the step may be taken; False = skip it (counted). Raises :class:`NonFiniteError` after
        ``max_consecutive`` bad steps in a row."""
        bad = not bool(self._finite(loss, model))
        if self.dist is not None:
            bad = any_rank(bad, self.dist)
        if not bad:
            self.consecutive = 0
            return True
        model.zero_grad(set_to_none=True)
        self.skipped += 1
        self.consecutive += 1
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteError(f"{self.consecutive} consecutive training steps had a non-finite loss or gradient "
                                 f"({self.skipped} skipped in total); stopping. Lower the learning rate or check "
                                 "the data of the last batches.")
        return False

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.skipped = int(state["skipped"])
        self.consecutive = int(state["consecutive"])


__all__ = ["CheckpointError", "NonFiniteError", "NonFiniteGuard", "atomic_save", "atomic_write", "rng_state",
           "set_rng_state", "save_checkpoint", "load_checkpoint", "restore_training_state",
           "check_resume_compatible", "rotate_checkpoints", "epoch_checkpoint_name", "resolve_resume",
           "keep_epoch_copy", "CHECKPOINT_FORMAT", "LATEST_NAME", "BEST_NAME"]
