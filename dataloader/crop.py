"""DeepPrior++ crop of a full depth frame and its normalisation (docs/method.md §3).

Numpy, one frame at a time (the loader's worker-side work). The crop matrix comes from the shared
:func:`util.geometry.crop_matrix`, so real crops and rendered crops use the very same ``M`` for a given
(C, S).
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from util.geometry import crop_bounds, crop_matrix, crop_resize_shape, xyz_to_uvd

#: how crop pixels sample the frame (config ``crop_sampling``): ``resize`` = the official
#: ``cv2.resize(INTER_NEAREST)`` of DeepPrior++/DSF (default; ``floor`` mapping: about half a frame pixel up-left
#: of the rendered crops); ``warp`` = the frame pixel nearest to ``M^-1 (j, i)``, the point whose ray the
#: renderer samples (rendered and real crops line up, mean offset 0; docs/DEVIATIONS.md "Data and crops").
CROP_SAMPLINGS = ("resize", "warp")


def _resample_nearest(patch: np.ndarray, rw: int, rh: int, s: float) -> np.ndarray:
    """(rh, rw) resized patch whose pixel (i, j) is the patch pixel nearest to (j / s, i / s) (round half up)."""
    cols = np.minimum(np.floor(np.arange(rw) / s + 0.5).astype(np.int64), patch.shape[1] - 1)
    rows = np.minimum(np.floor(np.arange(rh) / s + 0.5).astype(np.int64), patch.shape[0] - 1)
    return patch[rows[:, None], cols[None, :]]


def threshold_depth(depth_mm: np.ndarray, z_near: float, z_far: float) -> np.ndarray:
    """The crop's z-threshold, in place: 0 < d < near -> near; d > far -> 0 (drops NYU's 2001, arm behind)."""
    near = (depth_mm < z_near) & (depth_mm != 0)
    far = (depth_mm > z_far) & (depth_mm != 0)
    depth_mm[near] = z_near
    depth_mm[far] = 0.0
    return depth_mm


def _cut_padded(depth: np.ndarray, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
    """depth[y0:y1, x0:x1] with zeros where the box leaves the image."""
    h, w = depth.shape
    out = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), np.float32)
    sx0, sx1, sy0, sy1 = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = depth[sy0:sy1, sx0:sx1]
    return out


def crop_depth_mm(depth_mm: np.ndarray, center_xyz: Sequence[float], cube: Sequence[float], camera,
                  size: int = 128, sampling: str = "resize") -> tuple[np.ndarray, np.ndarray]:
    """Cut the cube around a centre from a full frame and resize it into a ``size x size`` crop (depth in mm).

    Args:
        depth_mm: (H, W) full frame in mm (0 or values beyond the far plane = no surface).
        center_xyz: (3,) crop centre C, mm, camera frame (y down).
        cube: (3,) cube edges S in mm.
        camera: (fx, fy, cx, cy).
        size: crop size in pixels.
        sampling: ``resize`` (default; the official cv2.resize) or ``warp`` (aligned with rendered crops).
    Returns:
        crop (size, size) float32 mm (0 = background; values clipped up to the near plane), M (3, 3) float64
        mapping full-image pixels (u, v, 1) to crop pixels.
    """
    center_uvd = xyz_to_uvd(np.asarray(center_xyz, np.float64), camera)
    if not np.isfinite(center_uvd).all() or center_uvd[2] <= 0:
        raise ValueError(f"crop centre must be finite with z > 0 mm, got {tuple(center_xyz)}")
    x0, x1, y0, y1, z0, z1 = crop_bounds(center_uvd, cube, camera)
    patch = threshold_depth(_cut_padded(np.asarray(depth_mm, np.float32), x0, x1, y0, y1), z0, z1)
    s, rw, rh, ox, oy = crop_resize_shape(x0, x1, y0, y1, size)
    if sampling == "warp":
        resized = _resample_nearest(patch, rw, rh, s)
    elif sampling == "resize":  # INTER_NEAREST (floor-mapped), as the DeepPrior++ / DSF loaders
        resized = cv2.resize(patch, (rw, rh), interpolation=cv2.INTER_NEAREST)
    else:
        raise ValueError(f"sampling must be one of {CROP_SAMPLINGS}, got {sampling!r}")
    out = np.zeros((size, size), np.float32)
    out[oy:oy + rh, ox:ox + rw] = resized
    return out, crop_matrix(center_uvd, cube, camera, size)


def normalize_crop(crop_mm: np.ndarray, premax: float, center_z: float, cube_z: float) -> np.ndarray:
    """Crop in mm -> [-1, 1] with the loader's ``premax`` quirk (docs/method.md §3; kept as in the official code).

    Pixels equal to ``premax`` (the maximum of the crop *before* augmentation) and zeros become the far plane,
    everything is clamped to ``[C_z - S_z/2, C_z + S_z/2]`` and mapped to ``(d - C_z) / (S_z/2)``
    (background +1). The quirk turns the farthest in-range pixel into background even when it is hand.

    The arithmetic is the official loader's, in float32 with the planes, ``C_z`` and ``S_z/2`` rounded to float32
    first (the official numpy's value-based casting), so crops are bit-exact with the official ones
    (tests/dataloader/test_official_crop.py). The clamped values are therefore ``+-1`` up to two float32 ulps
    (exactly ``+-1`` for the usual cube of 250 mm), never a different pixel class.
    Returns a new (H, W) float32 array.
    """
    crop = np.array(crop_mm, dtype=np.float32)  # a copy: the caller's crop stays in mm
    far = np.float32(float(center_z) + float(cube_z) / 2.0)
    near = np.float32(float(center_z) - float(cube_z) / 2.0)
    crop[crop == np.float32(premax)] = far
    crop[crop == 0] = far
    crop[crop >= far] = far
    crop[crop <= near] = near
    crop -= np.float32(center_z)
    crop /= np.float32(float(cube_z) / 2.0)
    return crop


def crop_depth(depth_mm: np.ndarray, center_xyz: Sequence[float], cube: Sequence[float], camera,
               size: int = 128, sampling: str = "resize") -> tuple[np.ndarray, np.ndarray]:
    """Crop and normalise one frame (test-time path of the NYU loader).

    Args/shapes as :func:`crop_depth_mm`. Returns (crop_norm (size, size) float32 in [-1, 1], M (3, 3)
    float64).
    """
    crop, M = crop_depth_mm(depth_mm, center_xyz, cube, camera, size, sampling)
    return normalize_crop(crop, float(crop.max()), float(center_xyz[2]), float(cube[2])), M
