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
  :func:`prediction_collision_loss`, :func:`m2d_loss`, :func:`m2p_selection`, :func:`m2p_loss`.

Units: PWE joints and maps in norm-uvd of the 128 x 128 crop, MANO joints / vertices in norm-xyz of the crop,
depth crops normalised to [-1, 1] with background +1 (a pixel is foreground when < 0.99).
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from model.offsets import OFFSET_KERNEL, encode_offsets
from render.mano_params import layout_for
from render.mesh_distance import point_mesh_sqdist, point_part_sqdist
from render.spheres import DIST_EPS, HandSpheres, collision_mask, hand_spheres
from util.geometry import FOREGROUND_THRESHOLD
from util.joints import NUM_PARTS, TIP_PARTS

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
# synthetic terms (pre-training, docs/method.md §10, and the synthetic half of fine-tuning)
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


# ------------------------------------------------------------------------------------------------------------
# real batch: model-fitting terms (collision, data-to-model ICP, part-aware ICP, model-to-data depth) and M2P
# ------------------------------------------------------------------------------------------------------------
#: the official foreground test of normalised crops (``lt(0.99)``)
FOREGROUND = FOREGROUND_THRESHOLD
#: the official row outlier threshold of the collision term (norm-xyz units summed over one sphere's pairs)
COLLISION_ROW_THRESHOLD = 0.1
#: M2P: a sample's depth agreement must be below this (norm units, ~5 mm at cube 250)
M2P_DEPTH_THRESHOLD = 0.04
#: M2P: d2m and per-part ICP values below this count as a good fit (norm units^2, RMS ~3.95 mm at cube 250)
M2P_FIT_THRESHOLD = 1e-3
#: official ``1e-8`` guards of the m2d / M2P / part-ICP denominators
_DEN_EPS = 1e-8


@functools.lru_cache(maxsize=8)
def _pair_mask(device: torch.device, dtype: torch.dtype) -> Tensor:
    """:func:`render.spheres.collision_mask` as a constant of one device and dtype, built once (not copied to the
    device, a host sync, on every step). Made outside inference mode so that autograd may save it."""
    with torch.inference_mode(False):
        return collision_mask(device).to(dtype)


def collision_loss(spheres: HandSpheres, row_threshold: float = COLLISION_ROW_THRESHOLD) -> Tensor:
    """Sphere self-collision penalty (official ``calculate_coll``), unweighted (``coll_weight`` = 1).

    Penetration ``e_ij = max(r_i + r_j - sqrt(|c_i - c_j|^2 + 1e-8), 0) * mask_ij`` over the 3,408 active pairs of
    :func:`render.spheres.collision_mask`; each sphere's row sum ``rho_bi = sum_j e_bij`` is kept only when
    ``rho_bi < row_threshold`` (the outlier rule is **per sphere row**, not per sample: docs/DEVIATIONS.md,
    losses); loss = mean over (B, 66) of the kept row sums (each pair counted in both rows).

    Build the spheres with the **detached** mesh, ``hand_spheres(layer, joints, verts.detach())``, or use
    :func:`prediction_collision_loss`, which does so.

    Args:
        spheres: HandSpheres, centres (B, 66, 3) and radii (B, 66), norm-xyz.
    Returns:
        scalar.
    """
    c, r = spheres.centres, spheres.radii
    diff = c.unsqueeze(2) - c.unsqueeze(1)  # (B, 66, 66, 3)
    dist = torch.sqrt(diff.square().sum(-1) + DIST_EPS)
    pen = torch.clamp(r.unsqueeze(2) + r.unsqueeze(1) - dist, min=0.0)
    pen = pen * _pair_mask(c.device, c.dtype)
    rows = pen.sum(-1)  # (B, 66)
    keep = (rows.detach() < row_threshold).to(rows.dtype)  # a constant mask, as in the official code
    return (rows * keep).mean()


def prediction_collision_loss(layer, joints: Tensor, verts: Tensor,
                              row_threshold: float = COLLISION_ROW_THRESHOLD) -> Tensor:
    """Collision term of one prediction: ``L_coll(J_xyz(Theta), sg(V(Theta)))``.

    Args:
        layer: ``ManoLayer`` (its regressor support defines the radii).
        joints: (B, 21, 3) predicted MANO joints, norm-xyz (centres and radii get gradient through them).
        verts: (B, 779, 3) predicted mesh, norm-xyz (detached here: the mesh gets no gradient from this term).
    """
    return collision_loss(hand_spheres(layer, joints, verts.detach()), row_threshold)


def icp_loss(points: Tensor, verts: Tensor, faces: Tensor, **distance_kw) -> Tensor:
    """Data-to-model ICP (official ``ICPLoss``): per sample, the mean over the P points of the squared **exact**
    point-to-triangle distance (norm units^2) to the nearest face of the closed mesh; points -> mesh only.

    Args:
        points: (B, P, 3) norm-xyz (Q_all, constants). verts: (B, 779, 3) predicted mesh, norm-xyz.
        faces: (1554, 3) ``ManoLayer.faces_closed``.
        distance_kw: passed to ``render.mesh_distance.point_mesh_sqdist`` (backend, search, chunk_pairs).
    Returns:
        (B,) per-sample values; the loss is their mean (weight ``model_weight`` = 1).
    """
    return point_mesh_sqdist(points, verts, faces, **distance_kw).mean(dim=-1)


def part_icp_loss(points: Tensor, labels: Tensor, verts: Tensor, faces: Tensor,
                  part_face_ids: Tensor | Sequence[Tensor], **distance_kw) -> Tensor:
    """Part-aware ICP (official ``JointICPLoss``): for part k = 1..K, the mean over the points labelled k **with a
    non-zero distance** of the squared exact distance to the nearest face of part k; 0 when there is none.

    ``value = sum d / (count + 1e-8)`` as in the official code. Points labelled 0 (palm) do not enter.

    Args:
        points: (B, P, 3) norm-xyz (Q_fin). labels: (B, P) int64 in 0..K (``segment_points``).
        verts: (B, 779, 3) predicted mesh. faces: (1554, 3) ``ManoLayer.faces_closed``.
        part_face_ids: ``ManoLayer.part_bits`` (F,) int64 or K face-id tensors (``ManoLayer.part_face_ids``).
        distance_kw: passed to ``render.mesh_distance.point_part_sqdist``.
    Returns:
        (B, K) (K = 15); the loss is its mean over parts and batch (weight ``partICP_weight`` = 1).
    """
    n_parts = NUM_PARTS if isinstance(part_face_ids, Tensor) else len(part_face_ids)
    d = point_part_sqdist(points, verts, faces, part_face_ids, labels, **distance_kw)  # (B, P), 0 for label 0
    parts = torch.arange(1, n_parts + 1, device=labels.device).view(1, -1, 1)
    member = (labels.unsqueeze(1) == parts) & (d.detach() > 0).unsqueeze(1)  # (B, K, P)
    total = (d.unsqueeze(1) * member.to(d.dtype)).sum(-1)
    count = member.sum(-1).to(d.dtype)
    return torch.where(count > 0, total / (count + _DEN_EPS), torch.zeros_like(total))


def m2d_loss(real_crop: Tensor, rendered_crop: Tensor) -> Tensor:
    """Model-to-data depth term: masked L1 between the hand-cropped real crop and the hand-cropped render.

    ``U = [real < 0.99] | [rendered < 0.99]`` (union of foregrounds, a constant mask);
    ``e_b = sum_p |real - rendered| U / (sum_p U + 1e-8)``. Gradient only through the rendered depth values.

    Args:
        real_crop, rendered_crop: (B, 1, H, W) normalised crops (both after ``crop_hand`` with the teacher's box).
    Returns:
        (B,) per-sample values; the loss is their mean (weight ``0.1 * model_weight``).
    """
    if real_crop.shape != rendered_crop.shape:
        raise ValueError(f"m2d_loss: shapes differ, {tuple(real_crop.shape)} vs {tuple(rendered_crop.shape)}")
    union = ((real_crop < FOREGROUND) | (rendered_crop.detach() < FOREGROUND)).to(rendered_crop.dtype)
    diff = (real_crop - rendered_crop).abs() * union
    return diff.flatten(1).sum(-1) / (union.flatten(1).sum(-1) + _DEN_EPS)


def m2p_selection(real_crop: Tensor, rendered_crop: Tensor, icp: Tensor, part_icp: Tensor,
                  depth_threshold: float = M2P_DEPTH_THRESHOLD, fit_threshold: float = M2P_FIT_THRESHOLD,
                  *, foreground: float = FOREGROUND, denominator: str = "union") -> tuple[Tensor, Tensor, Tensor]:
    """The confidence rule of M2P: which (sample, joint) pairs of the stage-2 MANO prediction teach the PWE.

    - depth agreement: ``a_b = sum |real - rendered| I / (sum U + 1e-8)`` with the intersection
      ``I = [real < fg] & [rendered < fg]`` in the numerator and the union ``U`` in the denominator;
      ``depth_ok = a_b < depth_threshold`` (a sample whose foregrounds do not overlap has a_b = 0 and passes);
    - global fit: ``fit_ok = icp < fit_threshold`` (stage-2 d2m per sample);
    - per-joint fit: part k reliable when ``part_icp[:, k-1] < fit_threshold`` (a part without points has value 0:
      reliable); joint mask = [wrist: always; joint j = 1..15: part j; tips 16..20: parts 3, 6, 9, 12, 15].

    All outputs are constant bool masks (no gradient). ``joint_mask`` is not combined with the per-sample tests:
    the M2P selection is ``(depth_ok & fit_ok)[:, None] & joint_mask``.

    Args:
        real_crop, rendered_crop: (B, 1, H, W) hand-cropped real crop and stage-2 render.
        icp: (B,) stage-2 :func:`icp_loss`. part_icp: (B, 15) stage-2 :func:`part_icp_loss`.
        foreground: foreground threshold (0.99; the single-stage ablation uses 0.95 and the uncropped render).
        denominator: "union" (two-stage, ``sum U + 1e-8``) or "intersection" (the official single-stage
            ``Finetune``: ``sum I`` without the guard, so a sample without overlap gets NaN and fails the test).
    Returns:
        depth_ok (B,), fit_ok (B,), joint_mask (B, 21), all bool.
    """
    with torch.no_grad():
        real, rend = real_crop.detach(), rendered_crop.detach()
        fg_real, fg_rend = real < foreground, rend < foreground
        inter = (fg_real & fg_rend).to(real.dtype)
        union = (fg_real | fg_rend).to(real.dtype)
        if denominator == "union":
            den = union.flatten(1).sum(-1) + _DEN_EPS
        elif denominator == "intersection":
            den = inter.flatten(1).sum(-1)
        else:
            raise ValueError(f"m2p_selection: denominator must be 'union' or 'intersection', got {denominator!r}")
        agree = ((real - rend).abs() * inter).flatten(1).sum(-1) / den
        depth_ok = agree < depth_threshold
        fit_ok = icp.detach() < fit_threshold
        part_ok = part_icp.detach() < fit_threshold  # (B, 15)
        wrist = torch.ones_like(part_ok[:, :1])
        joint_mask = torch.cat((wrist, part_ok, part_ok[:, [p - 1 for p in TIP_PARTS]]), dim=1)
    return depth_ok, fit_ok, joint_mask


def m2p_loss(pwe_joints_uvd: Tensor, mano_joints_uvd: Tensor, selection: Tensor,
             delta: float = HUBER_DELTA) -> Tensor:
    """M2P (MPE -> PWE): Huber between the stage-2 decoded PWE joints and the **detached** stage-2 MANO joints, both
    (B, 21, 3) norm-uvd, averaged over the selected (sample, joint) pairs and their 3 coordinates only.

    ``selection`` (B, 21) bool = ``(depth_ok & fit_ok)[:, None] & joint_mask`` (:func:`m2p_selection`). With no
    pair selected the loss is exactly 0 (a count-based test: docs/DEVIATIONS.md, losses), still attached to the
    graph. Official weight ``coord_weight * M2P_weight`` = 100.
    """
    _check_last("m2p_loss", pwe_joints_uvd, 3, 3)
    if selection.shape != pwe_joints_uvd.shape[:2] or selection.dtype != torch.bool:
        raise ValueError(f"m2p_loss: selection must be bool {tuple(pwe_joints_uvd.shape[:2])}, got "
                         f"{selection.dtype} {tuple(selection.shape)}")
    target = mano_joints_uvd.detach()
    sel = selection.detach().unsqueeze(-1)
    # unselected pairs are replaced by their target: zero residual and zero gradient, no host sync on the count
    pred = torch.where(sel, pwe_joints_uvd, target)
    per_element = F.huber_loss(pred, target, reduction="none", delta=delta)
    count = sel.sum() * pwe_joints_uvd.shape[-1]
    return per_element.sum() / count.clamp_min(1).to(per_element.dtype)
