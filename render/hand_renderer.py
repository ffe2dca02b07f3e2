"""Render a predicted MANO hand into its sample's crop (the official ``Render.render``, docs/method.md §8.1).

The network predicts the 62-d MANO vector in the normalised space of the current crop (global scale 1/125,
docs/method.md §4.4). This module places the mesh in mm with the crop centre and cube, rasterises it **directly into the
128x128 crop** (crop intrinsics ``K' = M K``; the official code renders 640x480 and resamples — the same image at a
fraction of the cost) and normalises the depth exactly like a real crop. Crop pixel (i, j) samples the ray through
the frame point ``M^-1 (j, i)``; the NYU loader's ``crop_sampling='warp'`` takes the frame pixel nearest to that
point, so rendered and real crops line up without offset (tests/render/test_crop_alignment.py); the default
``resize`` is the official crop, about half a frame pixel off (docs/DEVIATIONS.md "Data and crops"). Used by stage 2 of the network (the
"remap"), by the fine-tuning losses and by the demo.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from render.mano_layer import DSF_GLOBAL_SCALE, ManoLayer
from render.rasterizer import Rendered, get_rasterizer, render_normalised_crop
from util.geometry import norm_xyz_to_norm_uvd, norm_xyz_to_xyz


@dataclass(frozen=True)
class PredictionRender:
    """Rendered prediction of a batch.

    depth (B, 1, S, S): normalised crop depth in [-1, 1], background +1 (differentiable w.r.t. theta);
    mask (B, 1, S, S) bool: pixels covered by the mesh;
    joints_uvd (B, 21, 3) norm-uvd; joints_xyz (B, 21, 3) norm-xyz; verts_xyz (B, 779, 3) norm-xyz;
    M (B, 3, 3): the crop matrix recomputed from (centre, cube).
    """

    depth: Tensor
    mask: Tensor
    joints_uvd: Tensor
    joints_xyz: Tensor
    verts_xyz: Tensor
    M: Tensor


class HandRenderer(nn.Module):
    """MANO layer + depth rasterizer bound to one sensor camera.

    Args:
        mano_layer: the MANO model (buffers move with ``.to(device)``).
        camera: full-frame intrinsics (fx, fy, cx, cy) of the target data set.
        size: crop edge in pixels (128).
        backend: ``"torch"`` (built-in rasterizer) or ``"pytorch3d"`` (optional).
    """

    def __init__(self, mano_layer: ManoLayer, camera: Sequence[float], size: int = 128, backend: str = "torch"):
        super().__init__()
        self.mano_layer = mano_layer
        self.camera = tuple(float(c) for c in camera)
        self.size = int(size)
        self.backend = backend
        self._rasterize: Callable[..., Rendered] = get_rasterizer(backend)

    def mesh(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Joints (B, 21, 3) and vertices (B, 779, 3) in norm-xyz of the crop (``get_mesh_xyz``)."""
        out = self.mano_layer.forward_dsf(theta, global_scale=DSF_GLOBAL_SCALE)
        return out.joints, out.vertices

    def render_mesh(self, verts_xyz: Tensor, center_xyz: Tensor, cube: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Render norm-xyz meshes (B, 779, 3): returns (depth (B,1,S,S) normalised, mask (B,1,S,S), M (B,3,3))."""
        cube = cube.to(verts_xyz).expand(verts_xyz.shape[0], 3)
        center = center_xyz.to(verts_xyz)
        verts_mm = norm_xyz_to_xyz(verts_xyz, center, cube)
        return render_normalised_crop(verts_mm, self.mano_layer.faces_closed, center, cube, self.camera,
                                      self.size, rasterizer=self._rasterize)

    def render_prediction(self, theta: Tensor, center_xyz: Tensor, cube: Tensor) -> PredictionRender:
        """Render predicted MANO vectors theta (B, 62) with each sample's crop centre (B, 3) mm and cube (B, 3) mm."""
        joints_xyz, verts_xyz = self.mesh(theta)
        depth, mask, M = self.render_mesh(verts_xyz, center_xyz, cube)
        cube = cube.to(theta).expand(theta.shape[0], 3)
        joints_uvd = norm_xyz_to_norm_uvd(joints_xyz, center_xyz.to(theta), cube, M, self.camera, self.size)
        return PredictionRender(depth, mask, joints_uvd, joints_xyz, verts_xyz, M)

    forward = render_prediction
