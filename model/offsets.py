"""The pixel-wise joint representation of DSF ("offset" maps, docs/method.md §6) as pure, differentiable functions.

Maps live on an F x F grid (F = 64 for 128 x 128 crops). Pixel p = (row i, column j) sits at
``P_p = (u_p, v_p, d_p)`` with ``u_p = 2 (j + 0.5) / F - 1``, ``v_p = 2 (i + 0.5) / F - 1`` (pixel-centre
convention (a) of docs/method.md §2.3) and ``d_p`` = the normalised crop depth nearest-downsampled to F x F (every second pixel
starting at 0 for 128 -> 64). A pixel is foreground when ``d_p < 0.99``.

Channel layout of a map tensor (B, 4J, F, F): channels ``3k .. 3k+2`` = unit offset of joint k (u, v, d),
channels ``3J + k`` = closeness ("heat") of joint k.

Used by the network (stage-2 remap), by the losses (targets, decoding) and by evaluation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from util.geometry import FOREGROUND_THRESHOLD, pixel_points

#: kernel radius K of the representation (norm-uvd units; official ``feature_para = [0.8]``)
OFFSET_KERNEL = 0.8
#: softmax temperature of the decoder (official ``offset2joint_softmax(scale=30)``)
DECODE_TEMPERATURE = 30.0
#: resolution of the maps for 128 x 128 crops
FEATURE_SIZE = 64


def depth_at_feature_size(depth: torch.Tensor, feature_size: int) -> torch.Tensor:
    """Nearest-downsample a normalised crop (B, 1, H, W) to (B, 1, F, F) (PyTorch default ``interpolate``)."""
    if depth.shape[-1] == feature_size and depth.shape[-2] == feature_size:
        return depth
    return F.interpolate(depth, size=(feature_size, feature_size), mode="nearest")


def _check_depth(depth: torch.Tensor) -> None:
    if depth.ndim != 4 or depth.shape[1] != 1:
        raise ValueError(f"depth must be (B, 1, H, W), got {tuple(depth.shape)}")


def encode_offsets(joints_uvd: torch.Tensor, depth: torch.Tensor, K: float = OFFSET_KERNEL,
                   feature_size: int = FEATURE_SIZE) -> torch.Tensor:
    """Encode joints as unit-offset and closeness maps against a depth crop (official ``joint2offset``).

    ``delta = J_k - P_p``, ``r = sqrt(|delta|^2 + 1e-8)``, ``h = (K - r) / K``; valid where ``h >= 0`` and the
    pixel is foreground; offset = ``delta / r`` and heat = ``h`` on valid pixels, 0 elsewhere.
    Differentiable w.r.t. the joints and the depth values (the validity mask is piecewise constant).

    Args:
        joints_uvd: (B, J, 3) joints in norm-uvd.
        depth: (B, 1, H, W) normalised crop in [-1, 1] (background +1).
        K: kernel radius in norm-uvd units.
        feature_size: F, the map resolution.
    Returns:
        (B, 4J, F, F) maps: J*3 offset channels (joint-major, u/v/d) then J heat channels.
    """
    _check_depth(depth)
    b, j, _ = joints_uvd.shape
    f = feature_size
    depth_f = depth_at_feature_size(depth, f)
    points = pixel_points(depth_f)  # (B, 3, N)
    delta = joints_uvd.unsqueeze(-1) - points.unsqueeze(1)  # (B, J, 3, N)
    dist = torch.sqrt(delta.pow(2).sum(dim=2) + 1e-8)  # (B, J, N)
    heat = (K - dist) / K
    foreground = depth_f.reshape(b, 1, f * f) < FOREGROUND_THRESHOLD
    valid = ((heat >= 0) & foreground).to(joints_uvd.dtype)  # (B, J, N)
    offset = delta / dist.unsqueeze(2) * valid.unsqueeze(2)
    heat = heat * valid
    return torch.cat((offset.reshape(b, 3 * j, f, f), heat.reshape(b, j, f, f)), dim=1)


def decode_offsets(maps: torch.Tensor, depth: torch.Tensor, K: float = OFFSET_KERNEL,
                   temperature: float = DECODE_TEMPERATURE) -> torch.Tensor:
    """Decode joints from offset/closeness maps (official ``offset2joint_softmax``).

    Offsets and heats are zeroed on background pixels; ``w = softmax over all F*F pixels of temperature * heat``
    (background pixels take part with logit 0); ``J_k = sum_p w_kp (P_p + K (1 - heat_kp) offset_kp)``.
    Offsets are not re-normalised. Differentiable w.r.t. the maps and the depth values.

    Args:
        maps: (B, 4J, F, F) network output or encoded maps.
        depth: (B, 1, H, W) the normalised crop the maps belong to (downsampled to F x F here).
        K: kernel radius in norm-uvd units.
        temperature: softmax temperature.
    Returns:
        (B, J, 3) joints in norm-uvd.
    """
    _check_depth(depth)
    b, c, f, f2 = maps.shape
    if c % 4 != 0 or f != f2:
        raise ValueError(f"maps must be (B, 4J, F, F), got {tuple(maps.shape)}")
    j = c // 4
    depth_f = depth_at_feature_size(depth, f)
    points = pixel_points(depth_f).to(maps.dtype)  # (B, 3, N)
    foreground = (depth_f.reshape(b, 1, 1, f * f) < FOREGROUND_THRESHOLD).to(maps.dtype)
    offset = maps[:, : 3 * j].reshape(b, j, 3, f * f) * foreground  # (B, J, 3, N)
    heat = maps[:, 3 * j:].reshape(b, j, f * f) * foreground[:, :, 0]  # (B, J, N)
    weight = torch.softmax(heat * temperature, dim=-1)  # (B, J, N)
    votes = points.unsqueeze(1) + offset * (K * (1.0 - heat)).unsqueeze(2)  # (B, J, 3, N)
    return (votes * weight.unsqueeze(2)).sum(dim=-1)
