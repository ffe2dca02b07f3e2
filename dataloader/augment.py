"""Training augmentation of real crops, DeepPrior++ / DSF style (docs/method.md §3, ``augmentCrop``).

One mode per sample, uniformly among ``rot`` (in-plane rotation of the crop), ``com`` (centre moved in 3D,
re-crop), ``sc`` (cube scaled, re-crop) and ``none``. Works on the un-normalised crop (mm); the caller
normalises afterwards with the pre-augmentation ``premax``. Joints are absolute camera-frame mm (y down) and
are transformed consistently.

Deviation kept small on purpose (docs/DEVIATIONS.md "Data and crops"): the re-crop matrix is the shared
:func:`util.geometry.crop_matrix` of the new (C, S) instead of the official float-sized variant, so ``M``
always equals what the renderer computes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from dataloader.crop import threshold_depth
from util.geometry import crop_bounds, crop_matrix, uvd_to_xyz, xyz_to_uvd

AUG_MODES = ("rot", "com", "sc", "none")


@dataclass(frozen=True)
class AugParams:
    """One draw of augmentation parameters: ``mode`` in AUG_MODES; centre offset (3,) mm; rotation in degrees;
    cube scale factor. Only the parameter of the chosen mode is applied."""

    mode: str
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True)
class AugResult:
    """Augmented sample: crop (size, size) mm, joints (J, 3) mm, centre (3,) mm, cube (3,) mm, M (3, 3)."""

    crop_mm: np.ndarray
    joints_xyz: np.ndarray
    center_xyz: np.ndarray
    cube: np.ndarray
    M: np.ndarray


def sample_aug_params(rng: np.random.Generator, max_shift: float = 10.0, max_scale: float = 0.2,
                      max_rotation: float = 180.0, modes: Sequence[str] = AUG_MODES) -> AugParams:
    """Draw like the official ``rand_augment``: mode uniform; offset U(-shift, shift)^3 mm; rotation
    U(-rot, rot) degrees; scale |1 + U(-sc, sc)|."""
    for m in modes:
        if m not in AUG_MODES:
            raise ValueError(f"unknown augmentation mode {m!r}; expected one of {AUG_MODES}")
    mode = modes[int(rng.integers(len(modes)))]
    offset = tuple(float(v) for v in rng.uniform(-1.0, 1.0, 3) * max_shift)
    rotation = float(rng.uniform(-max_rotation, max_rotation))
    scale = abs(1.0 + float(rng.uniform(-1.0, 1.0)) * max_scale)
    return AugParams(mode, offset, rotation, scale)


def _recrop(crop_mm: np.ndarray, M_old: np.ndarray, M_new: np.ndarray, z_near: float,
            z_far: float) -> np.ndarray:
    """Warp a crop to a new crop box (nearest, zero border) and z-threshold it against the new range."""
    size = crop_mm.shape[1], crop_mm.shape[0]
    A = (M_new @ np.linalg.inv(M_old))[:2]  # old crop pixels -> new crop pixels (affine: no rotation in M)
    warped = cv2.warpAffine(crop_mm.astype(np.float32), A, size, flags=cv2.INTER_NEAREST,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return threshold_depth(warped, z_near, z_far)


def rotate_points_2d(uv: np.ndarray, center_uv: Sequence[float], angle_deg: float) -> np.ndarray:
    """Rotate image points (..., 2) about ``center_uv`` by ``angle_deg`` (the image rotation of
    :func:`augment_crop`: u' = c + R (u - c), R = [[cos, -sin], [sin, cos]] in pixel axes, i.e. clockwise on
    screen for angle > 0)."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    d = uv - np.asarray(center_uv[:2], np.float64)
    rotated = np.stack([c * d[..., 0] - s * d[..., 1], s * d[..., 0] + c * d[..., 1]], -1)
    return rotated + np.asarray(center_uv[:2])


def augment_crop(crop_mm: np.ndarray, joints_xyz: np.ndarray, center_xyz: np.ndarray, cube: np.ndarray,
                 M: np.ndarray, camera, params: AugParams) -> AugResult:
    """Apply one augmentation to a crop (mm) and its labels.

    Args:
        crop_mm: (size, size) crop in mm (0 = background), as from :func:`dataloader.crop.crop_depth_mm`.
        joints_xyz: (J, 3) joints, mm, camera frame (y down).
        center_xyz, cube: (3,) crop centre and cube in mm.
        M: (3, 3) crop matrix of (center_xyz, cube).
        camera: (fx, fy, cx, cy).
        params: the draw (see :func:`sample_aug_params`).
    Returns:
        :class:`AugResult` with the new crop, joints, centre, cube and crop matrix.
    """
    joints_xyz = np.asarray(joints_xyz, np.float64)
    center_xyz = np.asarray(center_xyz, np.float64)
    cube = np.asarray(cube, np.float64)
    if params.mode not in AUG_MODES:
        raise ValueError(f"unknown augmentation mode {params.mode!r}; expected one of {AUG_MODES}")
    if params.mode == "none" or not np.any(crop_mm > 0):  # empty crop: nothing to augment (as official)
        return AugResult(crop_mm, joints_xyz, center_xyz, cube, M)
    size = crop_mm.shape[0]
    if params.mode == "rot":
        # the crop turns about its centre pixel; labels turn in the full image about the centre's projection
        rot = cv2.getRotationMatrix2D((size // 2, size // 2), -params.rotation, 1.0)
        out = cv2.warpAffine(crop_mm.astype(np.float32), rot, (size, size), flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        uvd = xyz_to_uvd(joints_xyz, camera)
        uvd[:, :2] = rotate_points_2d(uvd[:, :2], xyz_to_uvd(center_xyz, camera), params.rotation)
        return AugResult(out, uvd_to_xyz(uvd, camera), center_xyz, cube, M)
    if params.mode == "com":
        new_center = center_xyz + np.asarray(params.offset, np.float64)
        new_cube = cube
    else:  # "sc"
        new_center = center_xyz
        new_cube = cube * params.scale
    new_uvd = xyz_to_uvd(new_center, camera)
    M_new = crop_matrix(new_uvd, new_cube, camera, size)
    _, _, _, _, z0, z1 = crop_bounds(new_uvd, new_cube, camera)
    # thresholding against the new range equals the official old-cube threshold once normalised (both clamp)
    out = _recrop(crop_mm, M, M_new, z0, z1)
    return AugResult(out, joints_xyz, new_center, new_cube, M_new)
