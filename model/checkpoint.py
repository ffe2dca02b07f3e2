"""Reading checkpoint files safely and checking state dicts against a module, with errors that name the file.

Checkpoints are untrusted input: they are always read with ``torch.load(..., weights_only=True)`` (tensors and plain
containers only, no arbitrary pickled code), and every failure becomes one :class:`CheckpointError` that names the
file, what was expected and - for a state dict that does not fit - the missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: how many keys of each kind an error message lists before summarising the rest
_KEYS_SHOWN = 8


class CheckpointError(ValueError):
    """A checkpoint file or state dict that cannot be used (the message names the source and what was expected)."""


def read_checkpoint(path: str | Path, *, expected: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one clear error for a missing, corrupt or unsafe file.

    Args:
        path: checkpoint file.
        expected: what the file should hold, for the messages (e.g. ``"a CycleGAN generator state dict"``).
        map_location: where the tensors are loaded.
    Returns:
        the loaded object (a state dict or a dict holding one).
    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is not a PyTorch checkpoint readable with ``weights_only=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (expected {expected})")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch.load signals a bad file with many types (UnpicklingError, RuntimeError, EOF...)
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (expected {expected}, saved with "
                              f"torch.save and loadable with weights_only=True): {_load_failure(err)}") from err


def _load_failure(err: Exception) -> str:
    """A one-line reason from a ``torch.load`` exception.

    torch's weights-only message is long and suggests ``weights_only=False``, which is wrong for untrusted files;
    keep only its ``WeightsUnpickler error`` detail (an unsupported pickle opcode for garbage, or the refused
    Python class for a file holding objects other than tensors and plain containers).
    """
    text = str(err).strip()
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", text, re.DOTALL)
    if detail:
        reason = detail.group(1).split(". Please")[0].strip()
        return f"content refused by the weights-only unpickler ({' '.join(reason.split())})"
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first[:200]}"


def as_state_dict(obj: Any, *, source: str, expected: str) -> dict[str, torch.Tensor]:
    """Check that ``obj`` is a mapping of string keys to tensors and return it as a dict.

    ``source`` (a file name or a description) and ``expected`` only shape the error message.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected {expected}, got a {type(obj).__name__}")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: expected {expected} (str keys -> tensors), but entry {key!r} holds "
                                  f"a {type(value).__name__}")
    return dict(obj)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_KEYS_SHOWN])
    return shown + (f", ... ({len(keys) - _KEYS_SHOWN} more)" if len(keys) > _KEYS_SHOWN else "")


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str, expected: str) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly the keys and shapes of ``module.state_dict()``.

    The message names the missing keys, the unexpected keys and the keys whose shapes differ (first few of each).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mis_shaped = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
                  if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if mis_shaped:
        problems.append(f"shape mismatches ({len(mis_shaped)}, file != model): {_listing(mis_shaped)}")
    if problems:
        raise CheckpointError(f"{source}: does not match {expected}: " + "; ".join(problems))


__all__ = ["CheckpointError", "read_checkpoint", "as_state_dict", "check_state_dict"]
