"""Pure geometry shared by loaders, renderer, network and evaluation (numpy **and** torch inputs).

Conventions (see docs/method.md §2):
- camera frame in mm, +x right, +y down, +z forward; ``camera = (fx, fy, cx, cy)``;
- the DeepPrior++ crop: a cube of edge ``S`` (mm) around a centre ``C`` is cut from the full image and resized
  (keeping aspect) into a ``size x size`` crop; ``M`` (3x3) maps full-image pixels (u, v, 1) to crop pixels;
- norm-xyz ``X_n = (X - C) / (S / 2)``; norm-uvd ``(u_c / (size/2) - 1, v_c / (size/2) - 1, (d - C_z) / (S_z / 2))``
  with ``(u_c, v_c) = M (u, v, 1)`` (no half-pixel shift);
- crop depth normalisation: ``(d - C_z) / (S_z / 2)`` clipped to [-1, 1], background = +1.

Every function accepts numpy arrays or torch tensors (batched over leading dimensions) and returns the same kind.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]
Camera = Sequence[float]  # (fx, fy, cx, cy)


def _stack(xs: list, like: Array) -> Array:
    if isinstance(like, torch.Tensor):
        return torch.stack(xs, dim=-1)
    return np.stack(xs, axis=-1)


def _cam(camera, like: Array):
    """Split a camera into fx, fy, cx, cy broadcastable against ``like[..., 0]``.

    ``camera`` is a 4-sequence shared by all points, or an array (B, 4) per batch element (then ``like`` is
    (B, ..., 3) and the values are reshaped to broadcast over the middle dimensions).
    """
    if isinstance(camera, (torch.Tensor, np.ndarray)) and camera.ndim == 2:
        extra = like.ndim - 2  # dims between batch and coordinate
        shape = (camera.shape[0],) + (1,) * extra
        return tuple(camera[:, i].reshape(shape) for i in range(4))
    return tuple(float(c) for c in camera)


def xyz_to_uvd(xyz: Array, camera) -> Array:
    """Project camera-frame points (..., 3) mm (y down) to image (u, v) px and depth d mm."""
    fx, fy, cx, cy = _cam(camera, xyz)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    return _stack([cx + fx * x / z, cy + fy * y / z, z], xyz)


def uvd_to_xyz(uvd: Array, camera) -> Array:
    """Back-project image points (..., 3) = (u px, v px, d mm) to the camera frame (mm, y down)."""
    fx, fy, cx, cy = _cam(camera, uvd)
    u, v, d = uvd[..., 0], uvd[..., 1], uvd[..., 2]
    return _stack([(u - cx) * d / fx, (v - cy) * d / fy, d], uvd)


def flip_y(xyz: Array) -> Array:
    """Convert between the y-up frame of NYU files and the internal y-down frame (an involution)."""
    out = xyz.clone() if isinstance(xyz, torch.Tensor) else np.array(xyz, copy=True)
    out[..., 1] = -out[..., 1]
    return out


# ----------------------------------------------------------------------------------------------------
# crop (DeepPrior++ style, docs/method.md §2.4)
# ----------------------------------------------------------------------------------------------------
def crop_bounds(center_uvd: Sequence[float], cube: Sequence[float], camera, ) -> tuple[int, int, int, int, float, float]:
    """Integer pixel box ``(x0, x1, y0, y1)`` and depth range ``(z0, z1)`` of the cube around one centre.

    Args:
        center_uvd: (3,) centre projected to the image, (u px, v px, d mm).
        cube: (3,) cube edge lengths in mm.
        camera: (fx, fy, cx, cy).
    """
    fx, fy = float(camera[0]), float(camera[1])
    u, v, d = (float(c) for c in center_uvd)
    sx, sy, sz = (float(c) for c in cube)
    x0 = math.floor(u - sx / 2.0 * fx / d + 0.5)
    x1 = math.floor(u + sx / 2.0 * fx / d + 0.5)
    y0 = math.floor(v - sy / 2.0 * fy / d + 0.5)
    y1 = math.floor(v + sy / 2.0 * fy / d + 0.5)
    return x0, x1, y0, y1, d - sz / 2.0, d + sz / 2.0


def crop_resize_shape(x0: int, x1: int, y0: int, y1: int, size: int = 128) -> tuple[float, int, int, int, int]:
    """Scale ``s``, resized patch (width, height) and paste offsets (o_x, o_y) of the crop box."""
    w, h = x1 - x0, y1 - y0
    if w > h:
        s = size / w
        rw, rh = size, int(math.floor(h * size / w))
    else:
        s = size / h
        rw, rh = int(math.floor(w * size / h)), size
    ox = int(math.floor(size / 2.0 - rw / 2.0))
    oy = int(math.floor(size / 2.0 - rh / 2.0))
    return s, rw, rh, ox, oy


def crop_matrix(center_uvd: Sequence[float], cube: Sequence[float], camera, size: int = 128) -> np.ndarray:
    """3x3 affine ``M`` (float64) mapping full-image pixels (u, v, 1) to crop pixels, for one sample.

    ``M = T(o_x, o_y) · diag(s, s, 1) · T(-x0, -y0)``; no rotation.
    """
    x0, x1, y0, y1, _, _ = crop_bounds(center_uvd, cube, camera)
    s, _, _, ox, oy = crop_resize_shape(x0, x1, y0, y1, size)
    return np.array([[s, 0.0, ox - s * x0], [0.0, s, oy - s * y0], [0.0, 0.0, 1.0]], dtype=np.float64)


def crop_matrix_batch(center_xyz: Array, cube: Array, camera, size: int = 128, dtype=None) -> Array:
    """Batched ``M`` (B, 3, 3) from centres (B, 3) mm (camera frame) and cubes (B, 3) or (3,) mm.

    Vectorised, with exactly the float64 operations of :func:`crop_matrix` (same numbers bit for bit). Torch in
    -> torch out on the input's device (no host round trip; no gradient: M is piecewise constant), float32 unless
    ``dtype`` is given; numpy in -> float64 numpy. ``camera`` is (fx, fy, cx, cy) or (B, 4).
    """
    if isinstance(center_xyz, torch.Tensor):
        dev = center_xyz.device
        c = center_xyz.detach().to(dev, torch.float64).reshape(-1, 3)
        s = torch.as_tensor(cube, dtype=torch.float64).to(dev).detach().expand(c.shape[0], 3)
        cam = torch.as_tensor(camera, dtype=torch.float64).to(dev).detach()
        floor, where, stack = torch.floor, torch.where, torch.stack
    else:
        c = np.asarray(center_xyz, np.float64).reshape(-1, 3)
        s = np.broadcast_to(np.asarray(cube, np.float64), c.shape)
        cam = np.asarray(camera, np.float64)
        floor, where, stack = np.floor, np.where, np.stack
    fx, fy, cx, cy = (cam[..., k] for k in range(4))  # scalars or (B,)
    u, v, d = cx + fx * c[:, 0] / c[:, 2], cy + fy * c[:, 1] / c[:, 2], c[:, 2]
    x0, x1 = floor(u - s[:, 0] / 2.0 * fx / d + 0.5), floor(u + s[:, 0] / 2.0 * fx / d + 0.5)
    y0, y1 = floor(v - s[:, 1] / 2.0 * fy / d + 0.5), floor(v + s[:, 1] / 2.0 * fy / d + 0.5)
    w, h = x1 - x0, y1 - y0
    wide = w > h  # the longer side spans the crop (crop_resize_shape)
    scale = where(wide, size / w, size / h)
    rw = where(wide, size + 0.0 * w, floor(w * size / h))
    rh = where(wide, floor(h * size / w), size + 0.0 * h)
    ox, oy = floor(size / 2.0 - rw / 2.0), floor(size / 2.0 - rh / 2.0)
    zero, one = 0.0 * scale, 0.0 * scale + 1.0
    M = stack([stack([scale, zero, ox - scale * x0], -1), stack([zero, scale, oy - scale * y0], -1),
               stack([zero, zero, one], -1)], -2)  # (B, 3, 3)
    if isinstance(M, torch.Tensor):
        return M.to(torch.float32 if dtype is None else dtype)
    return M


def crop_intrinsics(camera, M: Array) -> Array:
    """Intrinsics (..., 4) = (fx', fy', cx', cy') of the crop: ``K' = M K`` (M has no rotation/shear).

    A mesh rendered with these intrinsics at ``size x size`` lands pixel-exactly on the crop.
    ``M`` is (3, 3) or (B, 3, 3); returns (4,) or (B, 4).
    """
    fx, fy, cx, cy = (float(c) for c in camera) if not isinstance(camera, (np.ndarray, torch.Tensor)) or \
        camera.ndim == 1 else (camera[..., 0], camera[..., 1], camera[..., 2], camera[..., 3])
    sx, sy = M[..., 0, 0], M[..., 1, 1]
    tx, ty = M[..., 0, 2], M[..., 1, 2]
    return _stack([sx * fx, sy * fy, sx * cx + tx, sy * cy + ty], M[..., 0, :])


def _apply_affine(M: Array, u: Array, v: Array) -> tuple[Array, Array]:
    """(u', v') = M (u, v, 1) with M (..., 3, 3) broadcast over the point dims of u, v (..., N)."""
    if M.ndim == 3:
        m = [[M[:, i, j].reshape((-1,) + (1,) * (u.ndim - 1)) for j in range(3)] for i in range(2)]
    else:
        m = [[M[i, j] for j in range(3)] for i in range(2)]
    return m[0][0] * u + m[0][1] * v + m[0][2], m[1][0] * u + m[1][1] * v + m[1][2]


def _inv(M: Array) -> Array:
    return torch.linalg.inv(M) if isinstance(M, torch.Tensor) else np.linalg.inv(M)


def _bc(a: Array, like: Array) -> Array:
    """Reshape per-sample (B, 3) centres/cubes to broadcast against (B, N, 3) points."""
    if a.ndim == 2 and like.ndim == 3:
        return a[:, None, :]
    return a


def xyz_to_norm_xyz(xyz: Array, center_xyz: Array, cube: Array) -> Array:
    """mm -> norm-xyz ``(X - C) / (S / 2)``. xyz (B, N, 3) or (N, 3); C, S (B, 3) or (3,)."""
    return (xyz - _bc(center_xyz, xyz)) / (_bc(cube, xyz) / 2.0)


def norm_xyz_to_xyz(xyz_n: Array, center_xyz: Array, cube: Array) -> Array:
    """norm-xyz -> mm ``X_n S / 2 + C``."""
    return xyz_n * (_bc(cube, xyz_n) / 2.0) + _bc(center_xyz, xyz_n)


def uvd_to_norm_uvd(uvd: Array, center_xyz: Array, cube: Array, M: Array, size: int = 128) -> Array:
    """Full-image (u, v, d) -> norm-uvd of the crop (convention (b): crop pixel p -> p / (size/2) - 1)."""
    uc, vc = _apply_affine(M, uvd[..., 0], uvd[..., 1])
    half = size / 2.0
    cz = _bc(center_xyz, uvd)[..., 2]
    sz = _bc(cube, uvd)[..., 2]
    return _stack([uc / half - 1.0, vc / half - 1.0, (uvd[..., 2] - cz) / (sz / 2.0)], uvd)


def norm_uvd_to_uvd(uvd_n: Array, center_xyz: Array, cube: Array, M: Array, size: int = 128) -> Array:
    """Inverse of :func:`uvd_to_norm_uvd`: norm-uvd -> full-image (u px, v px, d mm)."""
    half = size / 2.0
    uc, vc = (uvd_n[..., 0] + 1.0) * half, (uvd_n[..., 1] + 1.0) * half
    u, v = _apply_affine(_inv(M), uc, vc)
    cz = _bc(center_xyz, uvd_n)[..., 2]
    sz = _bc(cube, uvd_n)[..., 2]
    return _stack([u, v, uvd_n[..., 2] * (sz / 2.0) + cz], uvd_n)


def norm_xyz_to_norm_uvd(xyz_n: Array, center_xyz: Array, cube: Array, M: Array, camera, size: int = 128) -> Array:
    """norm-xyz -> norm-uvd (``xyz_nl2uvdnl``)."""
    xyz = norm_xyz_to_xyz(xyz_n, center_xyz, cube)
    return uvd_to_norm_uvd(xyz_to_uvd(xyz, camera), center_xyz, cube, M, size)


def norm_uvd_to_norm_xyz(uvd_n: Array, center_xyz: Array, cube: Array, M: Array, camera, size: int = 128) -> Array:
    """norm-uvd -> norm-xyz (``uvd_nl2xyznl``)."""
    xyz = uvd_to_xyz(norm_uvd_to_uvd(uvd_n, center_xyz, cube, M, size), camera)
    return xyz_to_norm_xyz(xyz, center_xyz, cube)


# ----------------------------------------------------------------------------------------------------
# depth normalisation (docs/method.md §3)
# ----------------------------------------------------------------------------------------------------
def normalize_depth(depth_mm: Array, center_z: Array, cube_z: Array) -> Array:
    """Crop depth in mm -> [-1, 1]; 0 (no surface) -> far plane -> +1.

    ``depth_mm`` (B, ..., H, W) or (H, W); ``center_z``, ``cube_z`` scalars or (B,) (broadcast over the image).
    The loader's ``premax`` quirk (farthest in-range pixel -> background) is applied by the loader itself.
    """
    cz, sz = center_z, cube_z
    if isinstance(cz, (np.ndarray, torch.Tensor)) and cz.ndim == 1:
        shape = (-1,) + (1,) * (depth_mm.ndim - 1)
        cz, sz = cz.reshape(shape), sz.reshape(shape)
    half = sz / 2.0
    if isinstance(depth_mm, torch.Tensor):
        far = cz + half
        d = torch.where(depth_mm <= 0, far + torch.zeros_like(depth_mm), depth_mm)
        out = (d - cz) / half
        return out.clamp(-1.0, 1.0)
    d = np.where(depth_mm <= 0, cz + half, depth_mm)
    return np.clip((d - cz) / half, -1.0, 1.0).astype(np.asarray(depth_mm).dtype, copy=False)


def denormalize_depth(depth_n: Array, center_z: Array, cube_z: Array) -> Array:
    """[-1, 1] -> mm (background +1 maps to the far plane ``C_z + S_z / 2``)."""
    cz, sz = center_z, cube_z
    if isinstance(cz, (np.ndarray, torch.Tensor)) and cz.ndim == 1:
        shape = (-1,) + (1,) * (depth_n.ndim - 1)
        cz, sz = cz.reshape(shape), sz.reshape(shape)
    return depth_n * (sz / 2.0) + cz


#: a pixel of a normalised crop is hand/foreground when its value is below this (DSF ``lt(0.99)``)
FOREGROUND_THRESHOLD = 0.99


def pixel_points(depth: torch.Tensor) -> torch.Tensor:
    """Pixel positions ``P_p`` (B, 3, H*W) = (u_p, v_p, d_p) of a normalised crop (B, 1, H, W), row-major.

    Pixel-centre convention (a) of docs/method.md §2.3: pixel (row i, column j) sits at
    ``u_p = 2 (j + 0.5) / W - 1``, ``v_p = 2 (i + 0.5) / H - 1``; ``d_p`` is the pixel's own value.
    """
    b, _, h, w = depth.shape
    u = 2.0 * (torch.arange(w, device=depth.device, dtype=depth.dtype) + 0.5) / w - 1.0  # (W,)
    v = 2.0 * (torch.arange(h, device=depth.device, dtype=depth.dtype) + 0.5) / h - 1.0  # (H,)
    uv = torch.stack((u.view(1, w).expand(h, w), v.view(h, 1).expand(h, w)), dim=0)  # column j -> u, row i -> v
    return torch.cat((uv.reshape(1, 2, h * w).expand(b, 2, h * w), depth.reshape(b, 1, h * w)), dim=1)
