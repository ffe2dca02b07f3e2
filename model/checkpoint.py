"""Reading checkpoint files safely and checking state dicts against a module, with errors that name the file.

Checkpoints are untrusted input: they are always read with ``torch.load(..., weights_only=True)`` (tensors and plain
containers only, no arbitrary pickled code), and every failure becomes one :class:`CheckpointError` that names the
file, what was expected and - for a state dict that does not fit - the missing, unexpected, mis-shaped and mis-typed
keys. A file refused for needing a Python global names that global (it may execute code); the advice to disable the
check is never given. NaN / inf weights and a state dict holding both ``module.k`` and ``k`` are refused by key.
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
                              f"torch.save and loadable with weights_only=True): {_load_failure(err)}") from None


def _load_failure(err: Exception) -> str:
    """A one-line reason from a ``torch.load(weights_only=True)`` exception, never suggesting to disable the check.

    A file refused because it references a Python global outside torch's safe set (tensors and plain containers)
    is reported with that global's name and the warning that it may execute code; other refusals keep only the
    weights-only unpickler's detail (e.g. an unsupported opcode for garbage); torch's advice to retry with
    ``weights_only=False`` is dropped - wrong advice for an untrusted file.
    """
    text = str(err).strip()
    refused = _REFUSED_GLOBAL.search(text)
    if refused:
        return (f"refused: it needs the Python global '{refused.group(1)}', which is outside the safe set of a "
                "checkpoint (tensors and plain containers); a file that needs it may execute code when loaded")
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", text, re.DOTALL)
    if detail:
        reason = " ".join(detail.group(1).split(". Please")[0].split())
        return f"content refused by the weights-only unpickler ({reason})"
    if text.startswith("Weights only load failed"):  # the rest of torch's text is the weights_only=False advice
        return "content refused by the weights-only unpickler"
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first[:200]}"


#: torch's wording for a refused global: "Unsupported global: GLOBAL mod.name was not an allowed global" or
#: "Trying to load unsupported GLOBAL mod.name whose module mod is blocked"
_REFUSED_GLOBAL = re.compile(r"\bGLOBAL\s+([A-Za-z_][\w.]*)")


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
        if value.is_floating_point() or value.is_complex():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise CheckpointError(f"{source}: entry {key!r} holds {bad} NaN or infinite value(s) of "
                                      f"{value.numel()}; expected {expected} with finite weights")
        if key.startswith("module.") and key[len("module."):] in obj:
            raise CheckpointError(f"{source}: holds both {key!r} and {key[len('module.'):]!r} (a DataParallel prefix "
                                  f"on some keys only); expected {expected} with one entry per parameter")
    return dict(obj)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_KEYS_SHOWN])
    return shown + (f", ... ({len(keys) - _KEYS_SHOWN} more)" if len(keys) > _KEYS_SHOWN else "")


def _dtype_kind(t: torch.Tensor) -> str:
    """'float', 'complex', 'bool' or 'int': the kinds that must agree between a file and a module."""
    if t.is_floating_point():
        return "float"
    if t.is_complex():
        return "complex"
    return "bool" if t.dtype == torch.bool else "int"


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str, expected: str) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly the keys, shapes and dtype kinds (float / int /
    bool / complex) of ``module.state_dict()``.

    The message names the missing keys, the unexpected keys and the keys whose shapes or dtype kinds differ (first
    few of each).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mis_shaped = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
                  if k in state and state[k].shape != v.shape]
    # load_state_dict would silently cast an integer tensor into a float parameter (and back)
    mis_typed = [f"{k} {state[k].dtype} for {v.dtype}" for k, v in own.items()
                 if k in state and _dtype_kind(state[k]) != _dtype_kind(v)]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if mis_shaped:
        problems.append(f"shape mismatches ({len(mis_shaped)}, file != model): {_listing(mis_shaped)}")
    if mis_typed:
        problems.append(f"dtype mismatches ({len(mis_typed)}, file for model): {_listing(mis_typed)}")
    if problems:
        raise CheckpointError(f"{source}: does not match {expected}: " + "; ".join(problems))


__all__ = ["CheckpointError", "read_checkpoint", "as_state_dict", "check_state_dict"]
