"""Real-crop pre-processing of self-supervised fine-tuning (docs/method.md, fine-tuning real part): per-pixel
back-projection, the hand-box crop that removes arm and background, foreground point clouds, the official
fixed-size point sampling, and point segmentation by the sphere model (:func:`segment_points` for point sets,
:func:`segment_crop` for the pixels of a crop).

Per-pixel back-projection uses the official ``uvdImg2xyzImg`` / ``Img2pcl`` pixel grid ("align-corners",
pixel-centre convention (c)): column j of a W-wide crop has ``u_n = 2 j / (W - 1) - 1`` and is placed at crop pixel
``(u_n + 1) W / 2`` (likewise rows), then mapped to the full image with ``M^-1`` and back-projected. This differs
from the offset maps' half-pixel grid (``util.geometry.pixel_points``) on purpose: the official code does both.

None of these functions is differentiable in the geometry: masks, labels and sampling are constants; only the depth
*values* that ``crop_hand`` keeps carry gradient (a rendered crop must stay differentiable through it).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from render.spheres import DIST_EPS, NUM_PALM_SPHERES, SPHERES_PER_BONE, HandSpheres
from util.geometry import FOREGROUND_THRESHOLD, norm_uvd_to_uvd, norm_xyz_to_xyz, uvd_to_xyz, xyz_to_norm_xyz

#: ``Img2pcl`` keeps pixels whose value is <= this (``le``; the foreground test elsewhere is ``lt(0.99)``)
POINT_CLOUD_THRESHOLD = 0.99


class HandBoxMargins(NamedTuple):
    """Margins (mm) of the hand box around the joints: x/y on both sides, z on the near side (the official 20 mm
    offset + 20 mm hand thickness), z on the far side. A tuple, so ``(25.0, 40.0, 20.0)`` works as well."""

    xy: float = 25.0
    z_near: float = 40.0
    z_far: float = 20.0


CROP_HAND_MARGINS = HandBoxMargins()
NUM_POINTS = 2048
#: (point, sphere) pairs per vectorised segmentation chunk (bounds the temporaries to ~16 MB in float32)
_SEGMENT_CHUNK = 1 << 22


def _align_corners_uvd(depth: Tensor) -> Tensor:
    """(B, 1, H, W) normalised crop -> (B, H*W, 3) norm-uvd points on the align-corners grid, row-major."""
    b, _, h, w = depth.shape
    u = 2.0 * torch.arange(w, device=depth.device, dtype=depth.dtype) / (w - 1.0) - 1.0
    v = 2.0 * torch.arange(h, device=depth.device, dtype=depth.dtype) / (h - 1.0) - 1.0
    uv = torch.stack((u.view(1, w).expand(h, w), v.view(h, 1).expand(h, w)), dim=-1).reshape(1, h * w, 2)
    return torch.cat((uv.expand(b, h * w, 2), depth.reshape(b, h * w, 1)), dim=-1)


def _check_crop(depth: Tensor) -> None:
    if depth.ndim != 4 or depth.shape[1] != 1 or depth.shape[2] != depth.shape[3]:
        raise ValueError(f"expected a square normalised crop (B, 1, S, S), got {tuple(depth.shape)}")


def _backproject_mm(depth: Tensor, center_xyz: Tensor, cube: Tensor, M: Tensor, camera) -> Tensor:
    """(B, H*W, 3) camera-frame mm of every crop pixel (official ``uvdImg2xyzImg``, first output)."""
    size = depth.shape[-1]
    uvd = norm_uvd_to_uvd(_align_corners_uvd(depth), center_xyz.to(depth), cube.to(depth), M.to(depth), size)
    return uvd_to_xyz(uvd, camera)


def backproject_crop(depth: Tensor, center_xyz: Tensor, cube: Tensor, M: Tensor, camera) -> Tensor:
    """Every crop pixel back-projected to norm-xyz (official ``uvdImg2xyzImg``, normalised output).

    Args:
        depth: (B, 1, H, W) normalised crop (H = W), background +1 (back-projected at the far plane like any
            other pixel).
        center_xyz: (B, 3) crop centre, mm, camera frame. cube: (B, 3) mm. M: (B, 3, 3) full image -> crop pixels.
        camera: (fx, fy, cx, cy) of the full image.
    Returns:
        (B, 3, H, W) norm-xyz ``(X - C) / (S / 2)`` of each pixel.
    """
    _check_crop(depth)
    b, _, h, w = depth.shape
    xyz = xyz_to_norm_xyz(_backproject_mm(depth, center_xyz, cube, M, camera), center_xyz.to(depth),
                          cube.to(depth))
    return xyz.permute(0, 2, 1).reshape(b, 3, h, w)


def crop_hand(depth: Tensor, joints: Tensor, center_xyz: Tensor, cube: Tensor, M: Tensor, camera,
              margins: Sequence[float] = CROP_HAND_MARGINS) -> Tensor:
    """Set every pixel outside a 3D box around the hand to background +1 (official ``crop_hand``).

    The box comes from the joints in mm: x, y in ``(min - margins[0], max + margins[0])``, z in
    ``(min - margins[1], max + margins[2])``, strict inequalities. Official arguments ``offsetxy=25, offsetz=20,
    hand_thickness=20`` give margins (25, 40, 20) (config ``crop_hand_xy_margin``, ``crop_hand_z_near``,
    ``crop_hand_z_far``). The box and the mask carry no gradient; kept pixels keep their values (and their
    gradient), so a rendered crop stays differentiable.

    Args:
        depth: (B, 1, H, W) normalised crop. joints: (B, J, 3) norm-xyz (the teacher's MANO joints).
        center_xyz, cube, M, camera: as in :func:`backproject_crop`.
        margins: :class:`HandBoxMargins` or any (xy, z near, z far) sequence, mm.
    Returns:
        (B, 1, H, W) the cropped image.
    """
    _check_crop(depth)
    with torch.no_grad():
        d = depth.detach()
        xyz = _backproject_mm(d, center_xyz, cube, M, camera).reshape(d.shape[0], 1, *d.shape[2:], 3)
        skel = norm_xyz_to_xyz(joints.detach().to(d), center_xyz.to(d), cube.to(d))  # (B, J, 3) mm
        lo, hi = skel.amin(dim=1), skel.amax(dim=1)  # (B, 3)
        m_xy, m_near, m_far = (float(m) for m in margins)
        lo = lo - torch.tensor([m_xy, m_xy, m_near], dtype=d.dtype, device=d.device)
        hi = hi + torch.tensor([m_xy, m_xy, m_far], dtype=d.dtype, device=d.device)
        inside = ((xyz > lo[:, None, None, None]) & (xyz < hi[:, None, None, None])).all(dim=-1)
    return torch.where(inside, depth, torch.ones_like(depth))


def foreground_points(depth: Tensor, center_xyz: Tensor, cube: Tensor, M: Tensor, camera) -> list[Tensor]:
    """Norm-xyz points (N_b, 3) of all pixels with value <= 0.99, row-major, one tensor per sample (``Img2pcl``
    before sampling)."""
    xyz = backproject_crop(depth, center_xyz, cube, M, camera)  # (B, 3, H, W)
    b = depth.shape[0]
    points = xyz.reshape(b, 3, -1).transpose(1, 2)
    keep = depth.reshape(b, -1) <= POINT_CLOUD_THRESHOLD
    return [points[i][keep[i]] for i in range(b)]


def sample_points(points: list[Tensor], num_points: int = NUM_POINTS,
                  generator: torch.Generator | None = None) -> Tensor:
    """Fixed-size clouds by the official rule (``Img2pcl``), (B, num_points, 3).

    N >= num_points: a uniformly random subset without replacement (random order). 0 < N < num_points: all points
    ``floor(num_points / N)`` times (the whole list tiled) followed by a random subset without replacement of the
    remainder. N = 0: ``num_points`` points at the origin.

    Args:
        points: B tensors (N_b, 3), e.g. from :func:`foreground_points`.
        generator: optional CPU ``torch.Generator`` for the random choices (reproducible runs).
    """
    out = []
    for p in points:
        n = p.shape[0]
        if n == 0:
            out.append(p.new_zeros(num_points, 3))
            continue
        if n >= num_points:
            idx = torch.randperm(n, generator=generator)[:num_points]
            out.append(p[idx.to(p.device)])
            continue
        mult = num_points // n
        rest = torch.randperm(n, generator=generator)[: num_points - mult * n]
        out.append(torch.cat((p.repeat(mult, 1), p[rest.to(p.device)]), dim=0))
    return torch.stack(out, dim=0)


def segment_crop(crop: Tensor, spheres: HandSpheres, center_xyz: Tensor, cube: Tensor, M: Tensor,
                 camera) -> Tensor:
    """Part label of every pixel of a (hand-cropped) crop, 0 on background (``>= 0.99``): (B, 1, H, W) int64.

    The same labels as ``segment_points(backproject_crop(crop, ...) as (B, H*W, 3), spheres)`` with the background
    zeroed (the official order), but only the foreground pixels are segmented (a hand covers about a tenth of the
    crop): they are packed to the front of each row (padding up to the largest count is segmented and discarded).
    """
    _check_crop(crop)
    b, _, h, w = crop.shape
    with torch.no_grad():
        d = crop.detach()
        xyz = backproject_crop(d, center_xyz, cube, M, camera).flatten(2).transpose(1, 2)  # (B, HW, 3)
        fg = d.reshape(b, -1) < FOREGROUND_THRESHOLD
        n_max = int(fg.sum(dim=1).max())
        labels = torch.zeros(b, h * w, dtype=torch.long, device=crop.device)
        if n_max == 0:
            return labels.view(b, 1, h, w)
        order = torch.argsort((~fg).to(torch.int8), dim=1, stable=True)[:, :n_max]  # foreground first, row-major
        packed = torch.gather(xyz, 1, order.unsqueeze(-1).expand(b, n_max, 3))
        lab = segment_points(packed, spheres)
        keep = torch.gather(fg, 1, order)
        labels.scatter_(1, order, torch.where(keep, lab, torch.zeros_like(lab)))
    return labels.view(b, 1, h, w)


def segment_points(points: Tensor, spheres: HandSpheres) -> Tensor:
    """Part label of each point by the sphere model (official ``seg_pcl``), no gradient.

    ``e_s(x) = |sqrt(|x - c_s|^2 + 1e-8) - r_s|`` (distance to the sphere surface); finger label
    ``argmin over the 45 finger spheres // 3 + 1`` in 1..15 (bone b -> part b + 1); 0 (palm) when the minimum
    over the 21 palm spheres is strictly smaller than the finger minimum (a tie goes to the finger).

    Args:
        points: (B, P, 3) norm-xyz. spheres: HandSpheres (centres (B, 66, 3), radii (B, 66)), norm-xyz.
    Returns:
        (B, P) int64 labels in 0..15.
    """
    with torch.no_grad():
        b, p = points.shape[:2]
        if b == 0 or p == 0:
            return torch.zeros(b, p, dtype=torch.long, device=points.device)
        centres, radii = spheres.centres.detach().to(points), spheres.radii.detach().to(points)
        step = max(1, _SEGMENT_CHUNK // max(1, p * centres.shape[1]))
        labels = []
        for b0 in range(0, b, step):  # a few large vectorised ops; (chunk, P, 66) temporaries
            x, c = points[b0:b0 + step].detach(), centres[b0:b0 + step]
            sq = (x[:, :, None, 0] - c[:, None, :, 0]).square_()
            for k in (1, 2):
                sq += (x[:, :, None, k] - c[:, None, :, k]).square_()
            e = sq.add_(DIST_EPS).sqrt_().sub_(radii[b0:b0 + step, None, :]).abs_()  # (chunk, P, 66)
            finger_min, finger_arg = e[..., NUM_PALM_SPHERES:].min(dim=-1)
            palm_min = e[..., :NUM_PALM_SPHERES].min(dim=-1).values
            label = torch.div(finger_arg, SPHERES_PER_BONE, rounding_mode="floor") + 1
            labels.append(torch.where(palm_min < finger_min, torch.zeros_like(label), label))
        return torch.cat(labels, dim=0)
