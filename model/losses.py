"""Every loss term of DSF as a named, unweighted function (docs/method.md, losses; the trainer applies the weights).

Groups:
- regression loss: :func:`huber` (official ``SmoothL1Loss``, a Huber loss with delta 0.01, mean over elements);
- synthetic terms (pre-training and the synthetic half of fine-tuning): :func:`pixel_map_loss`,
  :func:`pwe_joint_loss`, :func:`mano_joint_loss`, :func:`mano_vertex_loss`, :func:`shape_prior_loss`,
  :func:`negative_scale_loss`;
- real-batch distillation / inter-branch terms (teacher = stage 2, always detached here):
  :func:`map_distillation_loss`, :func:`pwe_joint_distillation_loss`, :func:`mpe_joint_distillation_loss`,
  :func:`mpe_mesh_distillation_loss`, :func:`p2m_loss`;
- real-batch model-fitting terms: :func:`collision_loss`, :func:`icp_loss`, :func:`part_icp_loss`,
  :func:`m2d_loss`, :func:`m2p_selection`, :func:`m2p_loss`.

Units: PWE joints and maps in norm-uvd of the 128 x 128 crop, MANO joints / vertices in norm-xyz of the crop,
depth crops normalised to [-1, 1] with background +1 (a pixel is foreground when < 0.99).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from model.offsets import OFFSET_KERNEL, encode_offsets
from render.mano_params import layout_for

#: Huber threshold in normalised units (about 1.25 mm for the NYU cube)
HUBER_DELTA = 0.01


def huber(x: torch.Tensor, y: torch.Tensor, delta: float = HUBER_DELTA, size_average: bool = True) -> torch.Tensor:
    """Huber loss of ``x - y`` (official ``SmoothL1Loss``): ``0.5 z^2`` if ``|z| < delta`` else
    ``delta (|z| - delta / 2)``.

    Args:
        x, y: tensors of the same shape (..., D).
        delta: threshold between the quadratic and the linear branch.
        size_average: True -> mean over all elements; False -> mean over the last dimension, sum over the rest.
    Returns:
        scalar tensor.
    """
    if x.shape != y.shape:
        raise ValueError(f"huber: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    per_row = F.huber_loss(x, y, reduction="none", delta=delta).mean(dim=-1)
    return per_row.mean() if size_average else per_row.sum()


def _check_last(name: str, x: Tensor, ndim: int, last: int) -> None:
    if x.ndim != ndim or x.shape[-1] != last:
        raise ValueError(f"{name}: expected a {ndim}-d tensor with last dimension {last}, got {tuple(x.shape)}")


# ------------------------------------------------------------------------------------------------------------
# synthetic terms (pre-training §"synthetic pre-training" and the synthetic half of fine-tuning)
# ------------------------------------------------------------------------------------------------------------
def pixel_map_loss(maps: Tensor, joints_uvd: Tensor, depth: Tensor, K: float = OFFSET_KERNEL,
                   delta: float = HUBER_DELTA) -> Tensor:
    """Pixel (deconv) term: Huber between predicted maps and the maps encoded from the ground-truth joints.

    Target = ``encode_offsets(joints_uvd, depth, K)`` at the maps' resolution; ``depth`` is the **clean** rendered
    crop (after occlusion masking, before the transfer network), as in the official code. The target carries no
    gradient. Official weight ``deconv_weight`` = 1.

    Args:
        maps: (B, 4J, F, F) predicted offset / closeness maps (``P_k``).
        joints_uvd: (B, J, 3) ground-truth joints, norm-uvd.
        depth: (B, 1, 128, 128) clean normalised synthetic crop.
    Returns:
        scalar: mean over all B * 4J * F * F entries.
    """
    with torch.no_grad():
        target = encode_offsets(joints_uvd, depth, K=K, feature_size=maps.shape[-1]).to(maps.dtype)
    return huber(maps, target, delta)


def pwe_joint_loss(joints_uvd: Tensor, target_uvd: Tensor, delta: float = HUBER_DELTA) -> Tensor:
    """Coord term: Huber between decoded PWE joints ``dec(P_k; I_s)`` and ground-truth joints, both (B, J, 3)
    norm-uvd; mean over B * J * 3. Decode with the clean synthetic crop (``model.offsets.decode_offsets``).
    Official weight ``coord_weight`` = 100."""
    _check_last("pwe_joint_loss", joints_uvd, 3, 3)
    return huber(joints_uvd, target_uvd, delta)


def mano_joint_loss(joints_xyz: Tensor, target_xyz: Tensor, delta: float = HUBER_DELTA) -> Tensor:
    """MANO joint term: Huber between the predicted MANO joints ``J_xyz(Theta_k)`` and ground truth, both (B, 21, 3)
    norm-xyz; mean over all elements. Official weight ``coord_weight`` = 100."""
    _check_last("mano_joint_loss", joints_xyz, 3, 3)
    return huber(joints_xyz, target_xyz, delta)


def mano_vertex_loss(verts_xyz: Tensor, target_verts: Tensor, delta: float = HUBER_DELTA) -> Tensor:
    """MANO vertex term: Huber between predicted and ground-truth meshes, both (B, 779, 3) norm-xyz (the
    wrist-centre vertex included); mean over all elements. Official weight ``coord_weight`` = 100."""
    _check_last("mano_vertex_loss", verts_xyz, 3, 3)
    return huber(verts_xyz, target_verts, delta)


def shape_prior_loss(theta: Tensor) -> Tensor:
    """Pre-training shape prior ``mean(beta^2)`` over B * 10, beta = the shape slice of the (B, 62) MANO vector.
    Official weight ``coord_weight * 10`` = 1000 (config ``shape_prior_weight``); not used in fine-tuning."""
    _check_last("shape_prior_loss", theta, 2, theta.shape[-1])
    return theta[:, layout_for(theta.shape[-1]).betas].square().mean()


def negative_scale_loss(theta: Tensor) -> Tensor:
    """Pre-training penalty on negative MANO scale: ``mean_b |min(s_b, 0)|`` over the batch, s = the scale entry of
    the (B, 62) vector (positive scales cost nothing). Official weight 0.1 (config ``neg_scale_weight``)."""
    _check_last("negative_scale_loss", theta, 2, theta.shape[-1])
    s = theta[:, layout_for(theta.shape[-1]).scale].squeeze(-1)
    return torch.clamp(s, max=0.0).abs().mean()


# ------------------------------------------------------------------------------------------------------------
# real batch: stage-1 distillation and inter-branch terms (the teacher is detached here)
# ------------------------------------------------------------------------------------------------------------
def map_distillation_loss(maps: Tensor, teacher_maps: Tensor, delta: float = HUBER_DELTA) -> Tensor:
    """Stage-1 PWE map distillation ``H(P1, sg(P2))`` over all B * 84 * 64 * 64 entries, background included (the
    teacher's raw maps, not re-encoded). Official weight ``deconv_weight`` = 1."""
    return huber(maps, teacher_maps.detach(), delta)


def pwe_joint_distillation_loss(joints_uvd: Tensor, teacher_uvd: Tensor, delta: float = HUBER_DELTA) -> Tensor:
    """Stage-1 PWE joint distillation ``H(dec(P1; I_r), sg(dec(P2; I_r)))``, both (B, J, 3) norm-uvd, decoded with
    the real crop. Official weight ``coord_weight`` = 100."""
    _check_last("pwe_joint_distillation_loss", joints_uvd, 3, 3)
    return huber(joints_uvd, teacher_uvd.detach(), delta)


def mpe_joint_distillation_loss(mano_joints_xyz: Tensor, teacher_pwe_xyz: Tensor,
                                delta: float = HUBER_DELTA) -> Tensor:
    """Stage-1 MPE joint distillation (inter-branch): the stage-1 **MANO** joints ``J_xyz(Theta1)`` learn from the
    stage-2 **PWE** joints converted to norm-xyz (``norm_uvd_to_norm_xyz`` with the real crop's M); both
    (B, 21, 3) norm-xyz. Official weight ``coord_weight`` = 100."""
    _check_last("mpe_joint_distillation_loss", mano_joints_xyz, 3, 3)
    return huber(mano_joints_xyz, teacher_pwe_xyz.detach(), delta)


def mpe_mesh_distillation_loss(verts_xyz: Tensor, teacher_verts_xyz: Tensor, delta: float = HUBER_DELTA) -> Tensor:
    """Stage-1 MPE mesh distillation ``H(V(Theta1), sg(V(Theta2)))``, both (B, 779, 3) norm-xyz. Official weight
    ``coord_weight`` = 100."""
    _check_last("mpe_mesh_distillation_loss", verts_xyz, 3, 3)
    return huber(verts_xyz, teacher_verts_xyz.detach(), delta)


def p2m_loss(mano_joints_uvd: Tensor, teacher_pwe_uvd: Tensor, delta: float = HUBER_DELTA) -> Tensor:
    """P2M (PWE -> MPE): MANO joints in **norm-uvd** ``J_uvd(Theta)`` learn from detached PWE joints, both
    (B, 21, 3). Two-stage fine-tuning: Theta2 against the stage-2 (teacher) PWE joints; single-stage ablation:
    Theta1 against ``sg(dec(P1))``. Official weight ``coord_weight`` = 100."""
    _check_last("p2m_loss", mano_joints_uvd, 3, 3)
    return huber(mano_joints_uvd, teacher_pwe_uvd.detach(), delta)
