"""From network outputs to joints in mm (inference entry point and the prediction placement of docs/method.md §4.4).

- MANO branch (MPE): the 62-d vector is evaluated with the global scale g = 1/125, so the predicted scale s and
  translation t place the hand directly in norm-xyz of the crop (``X_n = s (1000 g V) + t``); mm follow with
  ``X = X_n S / 2 + C``.
- Pixel branch (PWE): joints are decoded from the maps in norm-uvd (:func:`model.offsets.decode_offsets`), then
  taken back to full-image (u, v, d) with the crop matrix M and back-projected with the camera.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from model.offsets import DECODE_TEMPERATURE, decode_offsets
from render.mano_layer import DSF_GLOBAL_SCALE, DsfManoOutput
from util.geometry import crop_matrix_batch, norm_uvd_to_uvd, norm_xyz_to_xyz, uvd_to_xyz


@dataclass
class PlacedMano:
    """A predicted MANO hand: vertices (B, 779, 3) and joints (B, 21, 3), both in norm-xyz and in mm."""

    verts_norm: torch.Tensor
    joints_norm: torch.Tensor
    verts_mm: torch.Tensor
    joints_mm: torch.Tensor


def place_mano_prediction(mano_layer: Any, theta: torch.Tensor, center_xyz: torch.Tensor,
                          cube: torch.Tensor) -> PlacedMano:
    """Evaluate a predicted MANO vector in the crop and place it in the camera frame.

    Args:
        mano_layer: ``render.mano_layer.ManoLayer`` (anything with ``forward_dsf(params, global_scale)``).
        theta: (B, 62) predicted MANO vector (scale / translation in norm-xyz units of the crop).
        center_xyz: (B, 3) crop centre C, mm, camera frame.
        cube: (B, 3) crop cube S, mm.
    Returns:
        :class:`PlacedMano` (differentiable w.r.t. theta).
    """
    out: DsfManoOutput = mano_layer.forward_dsf(theta, global_scale=DSF_GLOBAL_SCALE)
    return _placed_from_norm(out.vertices, out.joints, center_xyz, cube)


def _placed_from_norm(verts_norm: torch.Tensor, joints_norm: torch.Tensor, center_xyz: torch.Tensor,
                      cube: torch.Tensor) -> PlacedMano:
    """A hand already in norm-xyz (B, V, 3) / (B, J, 3) -> :class:`PlacedMano` (mm with ``X_n S / 2 + C``)."""
    return PlacedMano(verts_norm=verts_norm, joints_norm=joints_norm,
                      verts_mm=norm_xyz_to_xyz(verts_norm, center_xyz, cube),
                      joints_mm=norm_xyz_to_xyz(joints_norm, center_xyz, cube))


def norm_uvd_joints_to_mm(joints_uvd: torch.Tensor, center_xyz: torch.Tensor, cube: torch.Tensor, M: torch.Tensor,
                          camera) -> torch.Tensor:
    """Pixel-branch joints (B, J, 3) norm-uvd -> (B, J, 3) mm in the camera frame (label convention (b) of docs/method.md §2.3).

    ``M`` (B, 3, 3) full image -> crop pixels; ``camera`` (fx, fy, cx, cy) or (B, 4).
    """
    return uvd_to_xyz(norm_uvd_to_uvd(joints_uvd, center_xyz, cube, M), camera)


@dataclass
class StagePrediction:
    """One stage's joints: pixel branch in norm-uvd and mm, MANO branch in mm (all (B, J, 3))."""

    pwe_uvd: torch.Tensor
    pwe_mm: torch.Tensor
    mano_mm: torch.Tensor
    mano_verts_mm: torch.Tensor


@dataclass
class PosePrediction:
    """Per-stage predictions (``stages[-1]`` is the method's final output)."""

    stages: list[StagePrediction]

    @property
    def final(self) -> StagePrediction:
        return self.stages[-1]


def _camera_tuple(camera) -> Any:
    return camera.as_tuple() if hasattr(camera, "as_tuple") else camera


def _render_crop_matrix(rendered: Any, renderer: Any, camera: Any, size: int, dtype: torch.dtype
                        ) -> torch.Tensor | None:
    """The stage-1 render's ``M`` (B, 3, 3) when it is the default matrix :func:`predict` would compute: same
    camera (a shared 4-tuple), crop size and dtype; else None."""
    M = getattr(rendered, "M", None)
    if M is None or M.dtype != dtype or isinstance(camera, (torch.Tensor, np.ndarray)):
        return None
    same_camera = tuple(float(c) for c in camera) == tuple(float(c) for c in getattr(renderer, "camera", ()))
    return M if same_camera and getattr(renderer, "size", None) == size else None


def predict(net: torch.nn.Module, depth: torch.Tensor, center_xyz: torch.Tensor, cube: torch.Tensor,
            M: torch.Tensor | None = None, *, camera: Any, renderer: Any = None,
            mano_layer: Any = None, temperature: float = DECODE_TEMPERATURE) -> PosePrediction:
    """Inference: joints in mm from both branches of every stage (network in eval mode, no gradients).

    Args:
        net: a :class:`model.pose_net.PoseNet`.
        depth: (B, 1, S, S) normalised crops (S = 128).
        center_xyz: (B, 3) crop centres, mm; cube: (B, 3) crop cubes, mm.
        M: (B, 3, 3) crop matrices (full image -> crop pixels) of these crops; None = the un-augmented DeepPrior++
            matrix of (centre, cube, camera), :func:`util.geometry.crop_matrix_batch` - the one the test loader and
            the renderer use. Pass the loader's ``M`` for augmented (rotated / scaled / shifted) crops.
        camera: (fx, fy, cx, cy), a (B, 4) tensor or a ``util.camera.Intrinsics`` of the data set (no default:
            the caller knows which sensor the crops come from).
        renderer: prediction renderer for stage 2 (required for a two-stage network).
        mano_layer: MANO layer for the MANO branch (default: ``renderer.mano_layer``).
        temperature: decoding softmax temperature.
    Returns:
        :class:`PosePrediction`.
    """
    mano_layer = mano_layer if mano_layer is not None else getattr(renderer, "mano_layer", None)
    if mano_layer is None:
        raise ValueError("predict needs a MANO layer for the MANO branch: pass mano_layer=... or a renderer "
                         "that has a .mano_layer")
    camera = _camera_tuple(camera)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(depth, center_xyz, cube, renderer=renderer)
            rendered = out.render  # the stage-1 hand, already evaluated (and its M computed) by the stage-2 remap
            if M is None:
                M = _render_crop_matrix(rendered, renderer, camera, depth.shape[-1], center_xyz.dtype)
            if M is None:
                M = crop_matrix_batch(center_xyz, cube, camera, depth.shape[-1]).to(dtype=center_xyz.dtype)
            stages = []
            for k, stage in enumerate(out.stages):
                uvd = decode_offsets(stage.maps, depth, net.offset_kernel, temperature)
                if k == 0 and rendered is not None and mano_layer is getattr(renderer, "mano_layer", None):
                    placed = _placed_from_norm(rendered.verts_xyz, rendered.joints_xyz, center_xyz, cube)
                else:
                    placed = place_mano_prediction(mano_layer, stage.mano, center_xyz, cube)
                stages.append(StagePrediction(
                    pwe_uvd=uvd, pwe_mm=norm_uvd_joints_to_mm(uvd, center_xyz, cube, M, camera),
                    mano_mm=placed.joints_mm, mano_verts_mm=placed.verts_mm))
    finally:
        net.train(was_training)
    return PosePrediction(stages=stages)
