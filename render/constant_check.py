"""Checks of constant index tensors (faces, part bits) that do not cost a host sync on every call.

Validating ``faces`` of a CUDA tensor needs its min/max on the host: one sync per render / distance call,
although the faces of a model never change. :func:`checked_stats` computes such facts once per live tensor
and version (an in-place change bumps the version, so it is checked again) and keeps them; CPU tensors are
simply recomputed (no sync, microseconds for a model's faces).
"""
from __future__ import annotations

import weakref
from typing import Callable

import torch
from torch import Tensor

_MAX_ENTRIES = 64
_CACHE: dict[tuple[int, str], tuple[weakref.ref, int, tuple]] = {}


def checked_stats(t: Tensor, name: str, compute: Callable[[Tensor], tuple]) -> tuple:
    """``compute(t)`` (Python values), cached under ``name`` for non-CPU tensors while ``t`` lives unchanged.

    The entry holds a weak reference to ``t`` itself, so a new tensor that happens to reuse the address of a
    freed one is never mistaken for it. Inference tensors carry no version counter: always recomputed.
    """
    if t.device.type == "cpu" or t.is_inference():
        return compute(t)
    key = (id(t), name)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is t and hit[1] == t._version:
        return hit[2]
    value = compute(t)
    if len(_CACHE) >= _MAX_ENTRIES:  # drop entries of tensors that are gone, else everything
        for k in [k for k, v in _CACHE.items() if v[0]() is None] or list(_CACHE):
            del _CACHE[k]
    _CACHE[key] = (weakref.ref(t), t._version, value)
    return value


def index_range(t: Tensor) -> tuple[int, int]:
    """(min, max) of a non-empty integer tensor; one host sync per new (or changed) CUDA tensor."""
    return checked_stats(t, "index_range", _min_max)


def _min_max(x: Tensor) -> tuple[int, int]:
    return tuple(torch.stack(x.aminmax()).tolist())  # one host transfer for both
