"""DSF's 66-sphere hand model, used by point segmentation and the collision loss (docs/method.md, sphere model).

Built from 21 MANO-order joints and a mesh, both in norm-xyz of the crop:

- per-joint radius ``r_j`` (j = 0..15): mean of the 10 smallest distances from joint j to the mesh vertices with a
  non-zero regressor weight for joint j (``ManoLayer.regressor_support``); tips ``r_16..20 = r_{3,6,9,12,15} / 1.5``;
- **21 palm spheres**: sphere 0 at the wrist with radius ``clamp(r_0 - 0.05, 0.01, 0.4)``; for each MCP
  m in (1, 4, 7, 10, 13), in that order, 4 spheres at t = 0.2, 0.4, 0.6, 0.8 on the segment wrist -> MCP;
- **45 finger spheres**: for bone b = 0..14 (joint b+1 -> its child) 3 spheres at t = 0, 1/3, 2/3, bone-major
  (sphere ``21 + 3 b + k``).

Centres and radii are linear interpolations ``(child - parent) t + parent`` of the end joints' centres / radii
(the official order of operations). Distances use ``sqrt(|.|^2 + 1e-8)`` as the official code does.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from util.joints import MANO_CHILDREN

NUM_PALM_SPHERES = 21
SPHERES_PER_BONE = 3
NUM_BONES = 15
NUM_SPHERES = NUM_PALM_SPHERES + SPHERES_PER_BONE * NUM_BONES  # 66
#: MCP joints ending the 5 palm rays, in sphere order (index, middle, pinky, ring, thumb CMC)
PALM_RAY_JOINTS = (1, 4, 7, 10, 13)
#: interpolation positions of the palm spheres on each wrist -> MCP ray
PALM_RAY_T = (0.2, 0.4, 0.6, 0.8)
#: tips (joints 16..20) take the radius of these DIP / IP joints divided by TIP_RADIUS_DIVISOR
TIP_RADIUS_FROM = (3, 6, 9, 12, 15)
TIP_RADIUS_DIVISOR = 1.5
#: joint radius = mean distance to this many nearest regressor-support vertices
RADIUS_NEIGHBOURS = 10
#: wrist sphere radius = clamp(r_0 - WRIST_RADIUS_SHRINK, *WRIST_RADIUS_RANGE) (norm-xyz units)
WRIST_RADIUS_SHRINK = 0.05
WRIST_RADIUS_RANGE = (0.01, 0.4)
#: distances inside the sphere model are sqrt(|d|^2 + DIST_EPS) (official)
DIST_EPS = 1e-8
#: MANO vertices used for radii (the extra wrist-centre vertex 778 has no regressor weight)
_NUM_MODEL_VERTS = 778


@dataclass(frozen=True)
class HandSpheres:
    """66 spheres per sample: ``centres`` (B, 66, 3) and ``radii`` (B, 66), norm-xyz of the crop.

    Order: 21 palm spheres (wrist, then 4 per palm ray), then 3 per bone, bone-major (sphere 21 + 3b + k).
    """

    centres: Tensor
    radii: Tensor


def _sphere_index(bone: int, k: int) -> int:
    return NUM_PALM_SPHERES + SPHERES_PER_BONE * bone + k


def collision_mask(device: torch.device | str | None = None) -> Tensor:
    """(66, 66) bool, symmetric, zero diagonal: the sphere pairs the collision loss penalises (3,408 entries).

    Rules: see :func:`_build_collision_mask`. Returns a fresh copy (built once per process).
    """
    mask = _cpu_collision_mask()
    return mask.to(device, copy=True) if device is not None else mask.clone()


@functools.lru_cache(maxsize=1)
def _cpu_collision_mask() -> Tensor:
    return _build_collision_mask()


def _build_collision_mask() -> Tensor:
    """(66, 66) bool, symmetric, zero diagonal: the sphere pairs the collision loss penalises (3,408 entries).

    Rules: palm-palm pairs inactive; every palm-finger and finger-finger pair active except
    (i) within one finger, a bone vs itself and its neighbouring bone(s) (distal vs proximal stays active);
    (ii) each proximal bone (0, 3, 6, 9, 12) vs the t = 0.8 palm sphere of its own ray (4, 8, 12, 16, 20);
    (iii) the thumb's first bone (12) and the first sphere of bone 13 vs all 21 palm spheres.
    """
    mask = torch.ones(NUM_SPHERES, NUM_SPHERES, dtype=torch.bool)
    palm = slice(0, NUM_PALM_SPHERES)
    mask[palm, palm] = False
    bone_range = [slice(_sphere_index(b, 0), _sphere_index(b, SPHERES_PER_BONE)) for b in range(NUM_BONES)]
    for b in range(NUM_BONES):
        finger, pos = divmod(b, 3)
        for b2 in range(3 * finger, 3 * finger + 3):
            if abs(b2 % 3 - pos) <= 1:  # (i) same or neighbouring phalanx of one finger
                mask[bone_range[b], bone_range[b2]] = False
        if pos == 0:  # (ii) proximal bone vs the last palm sphere of its ray
            ray_end = 1 + len(PALM_RAY_T) * finger + len(PALM_RAY_T) - 1
            mask[bone_range[b], ray_end] = False
            mask[ray_end, bone_range[b]] = False
    thumb_root = list(range(_sphere_index(12, 0), _sphere_index(13, 0) + 1))  # (iii) bone 12 + first of 13
    mask[thumb_root, palm] = False
    mask[palm, thumb_root] = False
    return mask


def joint_radii(regressor_support: Tensor, joints: Tensor, verts: Tensor) -> Tensor:
    """(B, 21) per-joint radii: mean distance from joint j < 16 to its 10 nearest support vertices; tips from DIPs.

    Args:
        regressor_support: (16, 778) bool, vertices with a non-zero regressor weight per joint.
        joints: (B, 21, 3) norm-xyz (only the first 16 are used here).
        verts: (B, >=778, 3) norm-xyz (vertices beyond 778 are ignored).
    """
    support = regressor_support.to(joints.device)
    n_joint = support.shape[0]
    diff = joints[:, :n_joint, None, :] - verts[:, None, :_NUM_MODEL_VERTS, :]  # (B, 16, 778, 3)
    dist = torch.sqrt(diff.square().sum(-1) + DIST_EPS)
    # vertices outside a joint's support get distance 100: never among the 10 nearest (>= 10 support vertices,
    # checked when the MANO model is loaded)
    dist = torch.where(support.unsqueeze(0), dist, torch.full_like(dist, 100.0))
    r = torch.topk(dist, RADIUS_NEIGHBOURS, dim=-1, largest=False).values.mean(-1)  # (B, 16)
    return torch.cat((r, r[:, list(TIP_RADIUS_FROM)] / TIP_RADIUS_DIVISOR), dim=1)


def _interpolate(values: Tensor, parents: list[int] | Tensor, children: list[int], t: Tensor) -> Tensor:
    """``(child - parent) t + parent`` for each (parent, child) pair and each t: values (B, 21, ...) ->
    (B, pairs * len(t), ...), pair-major."""
    parent = values[:, parents] if isinstance(parents, list) else parents
    child = values[:, children]
    extra = (1,) * (values.ndim - 2)
    out = (child - parent).unsqueeze(2) * t.view(1, 1, -1, *extra) + parent.unsqueeze(2)
    return out.reshape(values.shape[0], -1, *values.shape[2:])


def spheres_from_radii(centre_joints: Tensor, radii21: Tensor) -> HandSpheres:
    """The 66 spheres from centre joints (B, 21, 3) and per-joint radii (B, 21) (see the module docstring)."""
    dtype, dev = centre_joints.dtype, centre_joints.device
    t_palm = torch.linspace(0, 1, len(PALM_RAY_T) + 2, dtype=dtype, device=dev)[1:-1]  # 0.2 .. 0.8
    t_bone = torch.linspace(0, 1, SPHERES_PER_BONE + 1, dtype=dtype, device=dev)[:-1]  # 0, 1/3, 2/3
    rays = list(PALM_RAY_JOINTS)
    wrist_r = radii21[:, 0:1].sub(WRIST_RADIUS_SHRINK).clamp(*WRIST_RADIUS_RANGE)  # (B, 1)
    palm_r = _interpolate(radii21, wrist_r.expand(-1, len(rays)), rays, t_palm)
    palm_c = _interpolate(centre_joints, centre_joints[:, [0] * len(rays)], rays, t_palm)
    parents = list(range(1, NUM_BONES + 1))
    finger_r = _interpolate(radii21, parents, list(MANO_CHILDREN), t_bone)
    finger_c = _interpolate(centre_joints, parents, list(MANO_CHILDREN), t_bone)
    centres = torch.cat((centre_joints[:, 0:1], palm_c, finger_c), dim=1)
    radii = torch.cat((wrist_r, palm_r, finger_r), dim=1)
    return HandSpheres(centres=centres, radii=radii)


def hand_spheres(layer, joints: Tensor, verts: Tensor, centre_joints: Tensor | None = None) -> HandSpheres:
    """The 66-sphere model of a batch of hands (official ``get_sphere_radius``).

    Args:
        layer: a ``render.mano_layer.ManoLayer`` (only its ``regressor_support`` (16, 778) bool is used).
        joints: (B, 21, 3) MANO joints, norm-xyz: radii (and centres unless ``centre_joints`` is given).
        verts: (B, 779, 3) mesh, norm-xyz, for the radii. The collision loss passes the **detached** mesh
            (radii then get gradient only through the joints, docs/method.md gradient flow).
        centre_joints: optional (B, 21, 3) joints for the centres (segmentation: the teacher's PWE joints in
            norm-xyz, while radii come from the teacher's MANO joints and mesh).
    Returns:
        HandSpheres with centres (B, 66, 3) and radii (B, 66).
    """
    if joints.ndim != 3 or joints.shape[1:] != (21, 3) or verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"hand_spheres: expected joints (B, 21, 3) and verts (B, V, 3), got {tuple(joints.shape)} "
                         f"and {tuple(verts.shape)}")
    if centre_joints is not None and centre_joints.shape != joints.shape:
        raise ValueError(f"hand_spheres: centre_joints {tuple(centre_joints.shape)} must match joints "
                         f"{tuple(joints.shape)}")
    radii21 = joint_radii(layer.regressor_support, joints, verts)
    return spheres_from_radii(joints if centre_joints is None else centre_joints, radii21)
