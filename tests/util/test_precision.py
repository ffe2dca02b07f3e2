"""util/precision.py: float32 islands inside bf16 autocast (checked with CPU autocast, which behaves the same)."""
from __future__ import annotations

import contextlib

import torch

from util.precision import Float32Calls, autocast_context, to_float32


class Geometry(torch.nn.Module):
    """Stands for the MANO layer / renderer: a matmul whose result dtype shows whether autocast applied."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("basis", torch.randn(4, 4))
        self.tag = "geometry"

    def forward(self, x):
        return x @ self.basis

    def project(self, x, *, extra):
        return {"out": x @ self.basis, "extra_dtype": extra.dtype}


def test_float32_island_inside_autocast():
    geo = Geometry()
    x = torch.randn(2, 4)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        assert geo(x).dtype == torch.bfloat16  # what happens without the island
        proxied = Float32Calls(geo)
        y = proxied(x.bfloat16())
        z = proxied.project(x.bfloat16(), extra=torch.ones(1, dtype=torch.float16))
    assert y.dtype == torch.float32 and z["out"].dtype == torch.float32 and z["extra_dtype"] == torch.float32
    torch.testing.assert_close(y, x.bfloat16().float() @ geo.basis, rtol=0, atol=0)
    assert proxied.tag == "geometry" and proxied.unwrap() is geo
    assert proxied.basis is geo.basis  # attributes pass through


def test_autocast_only_on_cuda_and_to_float32_containers():
    assert isinstance(autocast_context(torch.device("cpu"), True), contextlib.nullcontext)
    assert isinstance(autocast_context(torch.device("cuda"), False), contextlib.nullcontext)
    data = {"a": torch.ones(2, dtype=torch.bfloat16), "b": [torch.ones(1, dtype=torch.float64), torch.ones(1,
            dtype=torch.long)], "c": "x"}
    got = to_float32(data)
    assert got["a"].dtype == torch.float32 and got["b"][0].dtype == torch.float64  # never lowered
    assert got["b"][1].dtype == torch.long and got["c"] == "x"
    from model.pose_net import PoseNetOutput, StageOutput

    out = to_float32(PoseNetOutput([StageOutput(torch.ones(1, dtype=torch.bfloat16), torch.ones(1))], None))
    assert out.final.maps.dtype == torch.float32 and out.render is None
