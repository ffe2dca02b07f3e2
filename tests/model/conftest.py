"""Test-only stand-ins for the prediction renderer (the real one is ``render.hand_renderer``).

``SplatRenderer`` renders a tiny linear "MANO-ish" point model as Gaussian splats into the 128 x 128 crop with the
real crop geometry (util.geometry): differentiable in the parameters, cheap, independent of the rasterizer.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from render.mano_layer import DSF_GLOBAL_SCALE
from render.mano_params import ManoParams
from util.camera import NYU_CAMERA
from util.geometry import crop_matrix_batch, norm_xyz_to_norm_uvd


@dataclass
class StandinMano:
    """``forward_dsf``-compatible linear point model: X = s * (1000 g (T + B [rot, pose, betas])) + t (metres)."""

    template: torch.Tensor  # (V + J, 3) metres
    basis: torch.Tensor  # (58, V + J, 3) metres per unit coefficient
    num_joints: int = 21

    @classmethod
    def make(cls, num_verts: int = 160, seed: int = 0) -> "StandinMano":
        g = torch.Generator().manual_seed(seed)
        n = num_verts + 21
        template = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.14, 0.16, 0.03])
        basis = torch.randn(58, n, 3, generator=g) * 0.003
        return cls(template, basis)

    def forward_dsf(self, params: torch.Tensor, global_scale: float | None = None):
        p = ManoParams.from_vector(params)
        coeffs = torch.cat((p.global_orient, p.pose_pca, p.betas), dim=-1)  # (B, 58)
        pts = self.template.to(params) + torch.einsum("bk,knc->bnc", coeffs, self.basis.to(params))
        pts = pts * 1000.0 * (1.0 if global_scale is None else global_scale)
        pts = pts * p.scale[:, None] + p.transl[:, None]
        nv = pts.shape[1] - self.num_joints
        return _MeshOut(vertices=pts[:, :nv], joints=pts[:, nv:])


@dataclass
class _MeshOut:
    vertices: torch.Tensor
    joints: torch.Tensor


@dataclass
class SplatRender:
    depth: torch.Tensor  # (B, 1, 128, 128) normalised
    joints_uvd: torch.Tensor  # (B, 21, 3) norm-uvd
    joints_xyz: torch.Tensor  # (B, 21, 3) norm-xyz
    verts_xyz: torch.Tensor  # (B, V, 3) norm-xyz


class SplatRenderer:
    """Gaussian-splat stand-in with the interface of ``HandRenderer.render_prediction``."""

    def __init__(self, mano_layer, camera=NYU_CAMERA.as_tuple(), size: int = 128, sigma_px: float = 3.0):
        self.mano_layer, self.camera, self.size, self.sigma = mano_layer, camera, size, sigma_px

    def render_prediction(self, theta: torch.Tensor, center_xyz: torch.Tensor, cube: torch.Tensor) -> SplatRender:
        out = self.mano_layer.forward_dsf(theta, DSF_GLOBAL_SCALE)
        M = crop_matrix_batch(center_xyz, cube, self.camera, self.size).to(theta)
        joints_uvd = norm_xyz_to_norm_uvd(out.joints, center_xyz, cube, M, self.camera, self.size)
        verts_uvd = norm_xyz_to_norm_uvd(out.vertices, center_xyz, cube, M, self.camera, self.size)
        half = self.size / 2.0
        px = (verts_uvd[..., :2] + 1.0) * half  # (B, V, 2) crop pixels, pixel (i, j) centre at (j, i)
        grid = torch.arange(self.size, dtype=theta.dtype, device=theta.device)
        du = grid.view(1, 1, 1, -1) - px[..., 0].unsqueeze(-1).unsqueeze(-1)  # (B, V, 1, W)
        dv = grid.view(1, 1, -1, 1) - px[..., 1].unsqueeze(-1).unsqueeze(-1)  # (B, V, H, 1)
        w = torch.exp(-(du * du + dv * dv) / (2.0 * self.sigma ** 2))  # (B, V, H, W)
        total = w.sum(dim=1)
        mix = (w * verts_uvd[..., 2, None, None]).sum(dim=1) / (total + 1e-6)
        cover = 1.0 - torch.exp(-4.0 * total)
        depth = (cover * mix + (1.0 - cover)).clamp(-1.0, 1.0).unsqueeze(1)
        return SplatRender(depth=depth, joints_uvd=joints_uvd, joints_xyz=out.joints, verts_xyz=out.vertices)


@pytest.fixture(scope="session")
def splat_renderer() -> SplatRenderer:
    return SplatRenderer(StandinMano.make())
