"""Mixed precision on CUDA: bf16 autocast for the convolutional network, float32 islands for geometry.

The MANO layer (blend shapes, kinematic chain, mm-scale vertices), the depth rasterizer and the point-to-mesh
distance kernels lose millimetres in bf16 (8 mantissa bits: ~4 mm steps at 1000 mm), so they always run in
float32: :class:`Float32Calls` wraps such an object so that every method call runs with autocast off and float32
tensor arguments. On the CPU autocast is never enabled (the official recipe is float32; CPU runs stay exact).
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """``torch.autocast(cuda, bfloat16)`` when ``enabled`` and ``device`` is CUDA, else a no-op context."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


_LOW_PRECISION = (torch.bfloat16, torch.float16)


def to_float32(obj: Any) -> Any:
    """bf16 / fp16 tensors (also inside lists, tuples and dicts) as float32; everything else (float64 included)
    unchanged."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.dtype in _LOW_PRECISION else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_float32(v) for v in obj)
    if isinstance(obj, dict):
        return {k: to_float32(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):  # e.g. PoseNetOutput / StageOutput
        return dataclasses.replace(obj, **{f.name: to_float32(getattr(obj, f.name))
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


def float32_call(fn):
    """``fn`` run with autocast disabled and bf16 / fp16 tensor arguments promoted to float32."""
    def call(*args, **kwargs):
        with torch.autocast(device_type="cuda", enabled=False), torch.autocast(device_type="cpu", enabled=False):
            return fn(*to_float32(args), **to_float32(kwargs))
    call.__wrapped__ = fn
    return call


class Float32Calls:
    """Proxy for a geometry object (prediction renderer, MANO layer): calling it, or any of its methods, runs in
    float32 outside autocast (half-precision arguments promoted). Other attributes (sub-modules, buffers) are
    passed through unchanged."""

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        wrap = callable(attr) and not isinstance(attr, (torch.nn.Module, type))  # methods, functions
        return float32_call(attr) if wrap else attr

    def __call__(self, *args, **kwargs):
        return float32_call(self._target)(*args, **kwargs)

    def unwrap(self) -> Any:
        return self._target


__all__ = ["autocast_context", "to_float32", "float32_call", "Float32Calls"]
