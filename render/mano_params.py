"""The DSF MANO parameter vector — the single owner of its layout (docs/method.md §4.2).

62-d (network output, axis-angle root)::

    [ global_orient 3 | pose PCA 45 | betas 10 | scale 1 | transl 3 ]
      0:3               3:48          48:58      58:59     59:62

63-d variant (synthetic renderer): the root is a quaternion (w, x, y, z), not necessarily normalised, and
every later slice moves up by one. No other module slices a parameter vector by number: use ``ManoParams``
or the ``ParamLayout`` constants below.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from render.mano_format import NUM_BETAS, NUM_HAND_POSE

NUM_POSE_PCA = NUM_HAND_POSE  # MANO's PCA basis is square: 45 coefficients for the 45 finger axis-angles


@dataclass(frozen=True)
class ParamLayout:
    """Named slices of one parameter-vector layout (last dimension)."""

    global_orient: slice
    pose_pca: slice
    betas: slice
    scale: slice
    transl: slice

    @property
    def dim(self) -> int:
        return self.transl.stop


def _layout(rot_dim: int) -> ParamLayout:
    pose_end = rot_dim + NUM_POSE_PCA
    betas_end = pose_end + NUM_BETAS
    return ParamLayout(
        global_orient=slice(0, rot_dim),
        pose_pca=slice(rot_dim, pose_end),
        betas=slice(pose_end, betas_end),
        scale=slice(betas_end, betas_end + 1),
        transl=slice(betas_end + 1, betas_end + 4),
    )


#: 62-d layout with an axis-angle root (the network's output)
LAYOUT_AXIS_ANGLE = _layout(3)
#: 63-d layout with a (w, x, y, z) quaternion root
LAYOUT_QUATERNION = _layout(4)
PARAM_DIM = LAYOUT_AXIS_ANGLE.dim  # 62
PARAM_DIM_QUAT = LAYOUT_QUATERNION.dim  # 63


def layout_for(dim: int) -> ParamLayout:
    """The layout of a vector whose last dimension is ``dim`` (62 or 63)."""
    if dim == PARAM_DIM:
        return LAYOUT_AXIS_ANGLE
    if dim == PARAM_DIM_QUAT:
        return LAYOUT_QUATERNION
    raise ValueError(f"MANO parameter vectors have {PARAM_DIM} (axis-angle) or {PARAM_DIM_QUAT} (quaternion) "
                     f"entries, got {dim}")


@dataclass
class ManoParams:
    """DSF MANO parameters, batched over leading dimensions ``(...,)`` (usually ``(B,)``).

    Attributes:
        global_orient: (..., 3) root axis-angle (radians), or (..., 4) quaternion (w, x, y, z).
        pose_pca: (..., 45) pose PCA coefficients (finger axis-angle = pca @ hands_components + hands_mean).
        betas: (..., 10) shape coefficients.
        scale: (..., 1) per-sample scale s (dimensionless).
        transl: (..., 3) translation t, in the output unit (mm with global_scale None, norm-xyz with 1/125).
    """

    global_orient: torch.Tensor
    pose_pca: torch.Tensor
    betas: torch.Tensor
    scale: torch.Tensor
    transl: torch.Tensor

    @property
    def is_quaternion(self) -> bool:
        return self.global_orient.shape[-1] == 4

    @classmethod
    def from_vector(cls, vec: torch.Tensor) -> ManoParams:
        """Split a (..., 62) or (..., 63) vector into named parts (views, so gradients flow back)."""
        lay = layout_for(vec.shape[-1])
        return cls(
            global_orient=vec[..., lay.global_orient],
            pose_pca=vec[..., lay.pose_pca],
            betas=vec[..., lay.betas],
            scale=vec[..., lay.scale],
            transl=vec[..., lay.transl],
        )

    def to_vector(self) -> torch.Tensor:
        """Concatenate back to (..., 62) (axis-angle root) or (..., 63) (quaternion root)."""
        if self.global_orient.shape[-1] not in (3, 4):
            raise ValueError(f"global_orient must have 3 (axis-angle) or 4 (quaternion) entries, "
                             f"got {tuple(self.global_orient.shape)}")
        parts = (self.global_orient, self.pose_pca, self.betas, self.scale, self.transl)
        expected = (self.global_orient.shape[-1], NUM_POSE_PCA, NUM_BETAS, 1, 3)
        names = ("global_orient", "pose_pca", "betas", "scale", "transl")
        for name, part, size in zip(names, parts, expected):
            if part.shape[-1] != size:
                raise ValueError(f"ManoParams.{name} must have {size} entries in its last dimension, "
                                 f"got shape {tuple(part.shape)}")
        return torch.cat(parts, dim=-1)
