"""MANO as a batched, differentiable torch layer (docs/formats.md §1.5, docs/method.md §4).

Pure functions (``batch_rodrigues``, ``quat_to_rotmat``, ``batch_rigid_transform``, ``lbs``) work in the unit
of the model arrays (metres for MANO). ``ManoLayer`` holds the model as float32 buffers and returns
millimetres; the one metre -> mm conversion is ``metres_to_mm``. Two entry points:

- ``forward``: standard MANO (root + 15 finger axis-angles, betas, optional translation in mm)
  -> 778 vertices, 21 joints.
- ``forward_dsf``: DSF's 62-d (or 63-d quaternion) parameter vector (``render.mano_params``) -> 779 vertices
  (vertex 778 = centre of the wrist loop that closes the mesh), 21 joints, the 15 finger rotations; output
  ``V' = s * (1000 * g * V) + t``, multiplied in exactly that order as in the official code.

Joints are always the 16 regressed joints plus 5 fingertip vertices, all taken from the *posed* mesh (DSF,
after Baek et al.), not the kinematic-chain translations.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from render.mano_io import NUM_BETAS, NUM_HAND_POSE, NUM_VERTS, ManoFormatError, ManoModel
from render.mano_params import ManoParams
from util.joints import (
    FINGERTIP_VERTEX_IDS,
    MANO_PARENTS,
    MANO_TO_BIGHAND,
    MANO_TO_ICVL,
    MANO_TO_MSRA,
    MANO_TO_NYU,
    NUM_PARTS,
    WRIST_LOOP_VERTEX_IDS,
)

METRES_TO_MM = 1000.0
#: DSF's global scale for network predictions: 1/125 = 2/250 mm maps a NYU-cube crop to norm-xyz (docs/method.md §4.4)
DSF_GLOBAL_SCALE = 1.0 / 125.0
#: the official Rodrigues adds this to each axis-angle component before the norm (theta = 0 stays finite)
RODRIGUES_EPS = 1e-8
#: a face is in part k when one of its vertices has a skinning weight above this for joint k (docs/method.md §4.1)
PART_WEIGHT_THRESHOLD = 0.1
#: sphere radii average the 10 nearest regressor vertices of each joint (docs/method.md §5)
MIN_REGRESSOR_VERTICES = 10
WRIST_CENTRE_VERTEX = NUM_VERTS  # index of the extra vertex closing the wrist

DATASET_JOINT_MAPS = {
    "nyu": MANO_TO_NYU, "icvl": MANO_TO_ICVL, "msra": MANO_TO_MSRA, "bighand": MANO_TO_BIGHAND,
}


def metres_to_mm(x: torch.Tensor) -> torch.Tensor:
    """The single metre -> millimetre conversion of model outputs."""
    return x * METRES_TO_MM


@dataclass(frozen=True)
class ManoOutput:
    """``ManoLayer.forward`` result, mm, model frame (+ transl).

    vertices (B, 778, 3); joints (B, 21, 3) MANO-21 order; full_pose (B, 48) root + 15 finger axis-angles.
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    full_pose: torch.Tensor


@dataclass(frozen=True)
class DsfManoOutput:
    """``ManoLayer.forward_dsf`` result in mm (global_scale None) or norm-xyz (global_scale 1/125).

    vertices (B, 779, 3) incl. the wrist centre 778; joints (B, 21, 3) MANO-21 order; rotations (B, 15, 3, 3)
    the finger rotation matrices (the official ``Rs``; without the root rotation).
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    rotations: torch.Tensor


# --------------------------------------------------------------------------------------------------
# pure functions


def quat_to_rotmat(quat: torch.Tensor) -> torch.Tensor:
    """(N, 4) quaternions (w, x, y, z), any non-zero norm -> (N, 3, 3) rotations (normalised first)."""
    q = quat / quat.norm(p=2, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    w2, x2, y2, z2 = w * w, x * x, y * y, z * z
    wx, wy, wz, xy, xz, yz = w * x, w * y, w * z, x * y, x * z, y * z
    rot = torch.stack([
        w2 + x2 - y2 - z2, 2 * (xy - wz), 2 * (wy + xz),
        2 * (wz + xy), w2 - x2 + y2 - z2, 2 * (yz - wx),
        2 * (xz - wy), 2 * (wx + yz), w2 - x2 - y2 + z2,
    ], dim=-1)
    return rot.view(*quat.shape[:-1], 3, 3)


def batch_rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """(N, 3) axis-angle (rad) -> (N, 3, 3) rotations, through a quaternion as in the official code.

    The angle is ``|theta + 1e-8|`` (epsilon added per component), so theta = 0 gives the identity with
    finite gradients; elsewhere the result equals the exact Rodrigues formula to ~1e-8.
    """
    angle = torch.norm(axis_angle + RODRIGUES_EPS, p=2, dim=-1, keepdim=True)  # (N, 1)
    axis = axis_angle / angle
    half = 0.5 * angle
    return quat_to_rotmat(torch.cat([torch.cos(half), torch.sin(half) * axis], dim=-1))


def _as_index(ids: list[int]) -> slice | list[int]:
    """``ids`` as a slice where possible (a view: no index tensor built per call), else the list.

    An increasing arithmetic progression is its slice; ids that are all equal become a one-element slice,
    which broadcasts against the level like the repeated ids would.
    """
    if len(set(ids)) == 1:
        return slice(ids[0], ids[0] + 1)
    step = ids[1] - ids[0]
    return slice(ids[0], ids[-1] + 1, step) if step > 0 and ids == list(range(ids[0], ids[-1] + 1, step)) \
        else ids


@functools.lru_cache(maxsize=8)
def _kinematic_levels(parents: tuple[int, ...]) -> list[tuple[slice | list[int], ...]]:
    """Group joints by tree depth so that each level is one batched matmul.

    Returns, per depth d: (joints at depth d, their parents' joint ids, their parents' positions in level
    d-1), as slices where possible (for MANO all are: depth d >= 1 holds joints d, d+3, ..., d+12); the
    parent entries are None at depth 0.
    """
    depth: list[int] = []
    for k, p in enumerate(parents):
        if p >= k:
            raise ValueError(f"parents must precede their children; joint {k} has parent {p}")
        depth.append(0 if p < 0 else depth[p] + 1)
    levels: list[tuple] = []
    prev: list[int] = []
    for d in range(max(depth) + 1):
        ids = [k for k in range(len(parents)) if depth[k] == d]
        par = [parents[k] for k in ids]
        levels.append((_as_index(ids),) + ((_as_index(par), _as_index([prev.index(p) for p in par])) if d
                                           else (None, None)))
        prev = ids
    return levels


def batch_rigid_transform(
    rotations: torch.Tensor, joints: torch.Tensor, parents: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward kinematics (docs/formats.md §1.5 steps 5-6).

    Args:
        rotations: (B, J, 3, 3) local joint rotations (joint 0 = root, turning about joint 0).
        joints: (B, J, 3) rest-pose joint positions.
        parents: J parent ids, -1 for the root; every parent precedes its children.

    Returns:
        posed_joints (B, J, 3): the chain translations G_k[:3, 3];
        transforms (B, J, 3, 4): rest pose removed, A_k = G_k * translate(-J_k) (top 3 rows).
    """
    levels = _kinematic_levels(tuple(int(p) for p in parents))
    rot_w, t_w = [], []  # per level: world rotations (B, n, 3, 3), world translations (B, n, 3)
    for ids, par, par_pos in levels:
        if par is None:  # roots: G = [R | J]
            rot_w.append(rotations[:, ids])
            t_w.append(joints[:, ids])
        else:  # G_k = G_parent [R_k | J_k - J_parent]
            r_par, bone = rot_w[-1][:, par_pos], joints[:, ids] - joints[:, par]
            rot_w.append(r_par @ rotations[:, ids])
            t_w.append((r_par @ bone.unsqueeze(-1)).squeeze(-1) + t_w[-1][:, par_pos])
    # back into joint order (slice assignments into fresh tensors; the levels are not read afterwards)
    rot, posed = torch.empty_like(rotations), torch.empty_like(joints)
    for (ids, _, _), r, t in zip(levels, rot_w, t_w):
        rot[:, ids], posed[:, ids] = r, t
    t_rel = posed - (rot @ joints.unsqueeze(-1)).squeeze(-1)  # remove the rest pose: - G_k (J_k, 0)
    return posed, torch.cat([rot, t_rel.unsqueeze(-1)], dim=-1)


def lbs(
    betas: torch.Tensor,
    rotations: torch.Tensor,
    v_template: torch.Tensor,
    shapedirs: torch.Tensor,
    posedirs: torch.Tensor,
    j_regressor: torch.Tensor,
    weights: torch.Tensor,
    parents: tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear blend skinning with 'lrotmin' pose blend shapes (docs/formats.md §1.5), in the model's unit.

    Args:
        betas: (B, K) shape coefficients.
        rotations: (B, J, 3, 3) joint rotations, root first.
        v_template: (V, 3) rest mesh.
        shapedirs: (K, V*3) shape blend shapes as a matrix (row k = component k, x/y/z interleaved).
        posedirs: (9*(J-1), V*3) pose blend shapes as a matrix.
        j_regressor: (J, V) joint regressor.
        weights: (V, J) skinning weights.
        parents: J parent ids (-1 for the root).

    Returns:
        vertices (B, V, 3) the posed mesh; chain_joints (B, J, 3) the kinematic-chain joint positions.
    """
    batch, num_verts = betas.shape[0], v_template.shape[0]
    v_shaped = v_template + (betas @ shapedirs).view(batch, num_verts, 3)
    rest_joints = j_regressor @ v_shaped  # (B, J, 3), regressed from the shaped, unposed mesh
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    pose_feature = (rotations[:, 1:] - eye).reshape(batch, -1)  # (B, 9*(J-1)): R_k - I, root excluded
    v_posed = v_shaped + (pose_feature @ posedirs).view(batch, num_verts, 3)
    chain_joints, transforms = batch_rigid_transform(rotations, rest_joints, parents)
    per_vertex = torch.einsum("vk,bkmn->bvmn", weights, transforms)  # (B, V, 3, 4): sum_k w_vk A_k
    vertices = torch.einsum("bvmn,bvn->bvm", per_vertex[..., :3], v_posed) + per_vertex[..., 3]
    return vertices, chain_joints


def to_dataset_order(joints: torch.Tensor, dataset: str) -> torch.Tensor:
    """(..., 21, 3) MANO-order joints -> ``dataset``'s joints (nyu: 12, icvl: 16, msra/bighand: 21)."""
    try:
        index = DATASET_JOINT_MAPS[dataset]
    except KeyError:
        raise ValueError(f"dataset must be one of {sorted(DATASET_JOINT_MAPS)}, got {dataset!r}") from None
    return joints[..., list(index), :]


def _check_batch(name: str, x: torch.Tensor, batch: int, width: int) -> None:
    if x.dim() != 2 or x.shape != (batch, width):
        raise ValueError(f"{name} must have shape ({batch}, {width}), got {tuple(x.shape)}")


# --------------------------------------------------------------------------------------------------
# the layer


class ManoLayer(nn.Module):
    """MANO right hand; every array is a float32 buffer (convert / move with ``.to``).

    Buffers besides the model arrays (docs/method.md §4.1):
        faces (1538, 3) long; faces_closed (1554, 3) long, the wrist fan to vertex 778 appended;
        J_regressor21 (778, 21): regressor + one-hot fingertip columns (official layout);
        regressor_support (16, 778) bool: vertices with a non-zero regressor weight per joint (sphere radii);
        part_bits (1554,) int64: bit 0 for every face of ``faces_closed``, bit k for part k = 1..15 (the
        form ``render.mesh_distance.point_part_sqdist`` takes); part_face_ids (property): the same as 15
        LongTensors (F_k,) of face ids.
    """

    def __init__(self, model: ManoModel):
        super().__init__()
        self.source = model.source
        self.parents = tuple(int(p) for p in model.parents)
        if self.parents != MANO_PARENTS:
            raise ManoFormatError(
                f"{model.source}: joint parents {self.parents} are not MANO's {MANO_PARENTS}"
            )
        _check_regressor_support(model)
        num_verts = model.v_template.shape[0]

        def f32(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

        # blend shapes as (components, V*3) matrices so that blending is one matmul
        self.register_buffer("v_template", f32(model.v_template))
        self.register_buffer("shapedirs", f32(model.shapedirs.reshape(num_verts * 3, -1).T))  # (10, 2334)
        self.register_buffer("posedirs", f32(model.posedirs.reshape(num_verts * 3, -1).T))  # (135, 2334)
        self.register_buffer("J_regressor", f32(model.J_regressor))  # (16, 778)
        self.register_buffer("weights", f32(model.weights))  # (778, 16)
        self.register_buffer("hands_components", f32(model.hands_components))  # (45, 45), rows = comps
        self.register_buffer("hands_mean", f32(model.hands_mean))  # (45,)

        tips = np.zeros((num_verts, len(FINGERTIP_VERTEX_IDS)))
        tips[list(FINGERTIP_VERTEX_IDS), np.arange(len(FINGERTIP_VERTEX_IDS))] = 1.0
        self.register_buffer("J_regressor21", f32(np.concatenate([model.J_regressor.T, tips], axis=1)))
        self.register_buffer("regressor_support", torch.as_tensor(model.J_regressor > 0))
        self.register_buffer("wrist_loop", torch.tensor(WRIST_LOOP_VERTEX_IDS, dtype=torch.long))

        faces_closed = close_wrist(model.faces, WRIST_LOOP_VERTEX_IDS, WRIST_CENTRE_VERTEX)
        self.register_buffer("faces", torch.as_tensor(model.faces, dtype=torch.long))
        self.register_buffer("faces_closed", torch.as_tensor(faces_closed, dtype=torch.long))
        from render.mesh_distance import part_bits  # here: keeps numba out of this module's import

        ids = part_face_sets(faces_closed, model.weights, model.source)
        self.register_buffer("part_bits", part_bits([torch.from_numpy(i) for i in ids], len(faces_closed)))

    @property
    def part_face_ids(self) -> list[torch.Tensor]:
        """15 LongTensors (F_k,): rows of ``faces_closed`` in part k = 1..15 (joint-k weight > 0.1)."""
        from render.mesh_distance import part_face_ids

        return part_face_ids(self.part_bits, NUM_PARTS)

    def pca_to_axis_angle(self, pose_pca: torch.Tensor) -> torch.Tensor:
        """(B, 45) PCA coefficients -> (B, 45) finger axis-angles ``pca @ components + hands_mean`` (DSF)."""
        return pose_pca @ self.hands_components + self.hands_mean

    def _posed_metres(
        self, rotations: torch.Tensor, betas: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 16, 3, 3) rotations, (B, 10) betas -> vertices (B, 778, 3), joints (B, 21, 3), metres."""
        vertices, _ = lbs(betas, rotations, self.v_template, self.shapedirs, self.posedirs,
                          self.J_regressor, self.weights, self.parents)
        joints = (vertices.transpose(1, 2) @ self.J_regressor21).transpose(1, 2)  # from the posed mesh
        return vertices, joints

    def forward(
        self,
        global_orient: torch.Tensor,
        hand_pose: torch.Tensor,
        betas: torch.Tensor,
        transl: torch.Tensor | None = None,
    ) -> ManoOutput:
        """Standard MANO forward.

        Args:
            global_orient: (B, 3) root axis-angle (rad), turning about the wrist joint.
            hand_pose: (B, 45) axis-angles of the 15 finger joints (full pose: no PCA, no mean added).
            betas: (B, 10) shape.
            transl: (B, 3) translation in mm, or None.

        Returns:
            ManoOutput: vertices (B, 778, 3) and joints (B, 21, 3) in mm, full_pose (B, 48).
        """
        batch = global_orient.shape[0]
        _check_batch("global_orient", global_orient, batch, 3)
        _check_batch("hand_pose", hand_pose, batch, NUM_HAND_POSE)
        _check_batch("betas", betas, batch, NUM_BETAS)
        full_pose = torch.cat([global_orient, hand_pose], dim=1)
        rotations = batch_rodrigues(full_pose.reshape(-1, 3)).view(batch, -1, 3, 3)
        vertices, joints = self._posed_metres(rotations, betas)
        vertices, joints = metres_to_mm(vertices), metres_to_mm(joints)
        if transl is not None:
            _check_batch("transl", transl, batch, 3)
            vertices = vertices + transl[:, None]
            joints = joints + transl[:, None]
        return ManoOutput(vertices=vertices, joints=joints, full_pose=full_pose)

    def forward_dsf(self, params: torch.Tensor, global_scale: float | None = None) -> DsfManoOutput:
        """DSF parameterisation (the official ``get_mano_vertices``).

        Args:
            params: (B, 62) ``[axis-angle 3 | pose PCA 45 | betas 10 | s 1 | t 3]``, or (B, 63) with a
                (w, x, y, z) quaternion root (normalised here); layout owned by ``render.mano_params``.
            global_scale: g. None for mm (synthetic ground truth); ``DSF_GLOBAL_SCALE`` for network
                predictions, whose output is then in norm-xyz of the crop.

        Returns:
            DsfManoOutput: vertices (B, 779, 3) and joints (B, 21, 3), both s * (1000 * g * X) + t;
            rotations (B, 15, 3, 3).
        """
        if params.dim() != 2:
            raise ValueError(f"params must have shape (B, 62) or (B, 63), got {tuple(params.shape)}")
        p = ManoParams.from_vector(params)
        batch = params.shape[0]
        root = quat_to_rotmat(p.global_orient) if p.is_quaternion else batch_rodrigues(p.global_orient)
        finger_aa = self.pca_to_axis_angle(p.pose_pca).reshape(-1, 3)
        fingers = batch_rodrigues(finger_aa).view(batch, -1, 3, 3)
        vertices, joints = self._posed_metres(torch.cat([root[:, None], fingers], dim=1), p.betas)
        wrist_centre = vertices[:, self.wrist_loop].mean(dim=1, keepdim=True)  # closes the open wrist
        vertices = torch.cat([vertices, wrist_centre], dim=1)

        def place(x: torch.Tensor) -> torch.Tensor:  # the official multiplication order (float32)
            x = metres_to_mm(x)
            if global_scale is not None:
                x = x * global_scale
            return x * p.scale[:, None] + p.transl[:, None]

        return DsfManoOutput(vertices=place(vertices), joints=place(joints), rotations=fingers)


# --------------------------------------------------------------------------------------------------
# construction helpers (numpy, run once)


def _check_regressor_support(model: ManoModel) -> None:
    counts = (model.J_regressor > 0).sum(axis=1)
    if counts.min() < MIN_REGRESSOR_VERTICES:
        j = int(counts.argmin())
        raise ManoFormatError(
            f"{model.source}: joint {j} has {int(counts[j])} vertices with a non-zero regressor weight; "
            f"the DSF sphere model needs at least {MIN_REGRESSOR_VERTICES} per joint"
        )


def close_wrist(faces: np.ndarray, loop: tuple[int, ...], centre: int) -> np.ndarray:
    """(F, 3) faces + a fan face (loop[i], loop[i+1], centre) per consecutive (cyclic) pair -> (F+L, 3)."""
    loop_arr = np.asarray(loop, dtype=np.int64)
    fan = np.stack([loop_arr, np.roll(loop_arr, -1), np.full_like(loop_arr, centre)], axis=1)
    return np.concatenate([np.asarray(faces, dtype=np.int64), fan], axis=0)


def part_face_sets(faces: np.ndarray, weights: np.ndarray, source: str = "") -> list[np.ndarray]:
    """For k = 1..15, the ids (ascending) of the faces touching a vertex whose joint-k weight exceeds 0.1.

    Args:
        faces: (F, 3); may reference the extra wrist-centre vertex (it has no weights: never in a part).
        weights: (V, 16) skinning weights.
    """
    extra = max(0, int(faces.max()) + 1 - weights.shape[0])
    padded = np.concatenate([weights, np.zeros((extra, weights.shape[1]))], axis=0)
    parts = []
    for k in range(1, NUM_PARTS + 1):
        in_part = (padded[:, k] > PART_WEIGHT_THRESHOLD)[faces].any(axis=1)
        if not in_part.any():
            raise ManoFormatError(
                f"{source}: no vertex has a skinning weight > {PART_WEIGHT_THRESHOLD} for joint {k}; the "
                "part-aware loss needs every part"
            )
        parts.append(np.flatnonzero(in_part))
    return parts
