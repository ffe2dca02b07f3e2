"""DSF entry point: ``python train_render.py key=value ...`` (every key is a field of ``config.Config``).

Modes (docs/method.md, "Modes"):

- ``phase=train train_stage=pretrain``: synthetic batches only (rendered on the fly, occlusion masks, no view
  augmentation), through the frozen transfer generator unless ``transfer=none``; synthetic losses on every stage.
- ``phase=train train_stage=finetune``: starts from ``finetune_dir`` (the pre-training checkpoint; required); per
  iteration one synthetic batch (view augmentation on) and one real, unlabeled batch; the stage-2 teacher,
  inter-branch and model-fitting losses (``stage_num=1``: the single-stage ablation). Real labels only feed the
  logged errors, never a loss.
- ``phase=test``: exactly one checkpoint (``load_model``: ours or the released DSF weights, strict key layout), the
  views of ``test_views``, both stages and both branches scored; result files in the run folder.
- ``train_stage=transfer`` is the Consis-CycleGAN training (``model.transfer_train``), ``phase=annotate`` the
  annotation writer (``util.annotate``).
- ``demo=true``: the whole method on generated stand-in assets (pre-train, fine-tune, test, error table, plots) in
  minutes on a CPU, through this same code path with the overrides of :data:`DEMO_PROFILE`.

One iteration top to bottom: :func:`pretrain_step` / :func:`finetune_step` return dicts of named, unweighted loss
terms (``<domain>/<term>/s<stage>``); :func:`weighted_total` applies the config weights of :func:`loss_weights`;
:func:`train` owns the optimiser, schedule, logging and checkpoints; :func:`test` and :func:`evaluate_view` score.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from config import Config, ConfigError, load_config
from util.distributed import unwrap_model

#: the demo profile: overrides applied by ``demo=true`` unless given on the command line. The network runs at an
#: eighth of its width and batch 8 so that the whole method fits in minutes on a 2-core CPU (printed by the demo).
DEMO_PROFILE: dict[str, Any] = {
    "width": 0.125, "batch_size": 8, "transfer": "none", "num_workers": 0, "max_epoch": 2, "step_size": 10,
    "demo_train_frames": 256, "demo_test_frames": 64, "img_log_every": 50, "log_every": 5, "test_views": (1,),
    # hands held up like the stand-in's real frames (natural capture views), and the same synthetic distribution
    # in both phases (no fine-tuning view rotation): the few hundred demo iterations cannot cover all orientations
    "synth_builtin_rotation": "upright", "finetune_view_aug": "none",
    # without a trained Consis-CycleGAN the synthetic and real BN statistics differ: the test uses the real ones
    "bn_recalibration": 32,
}
#: iterations of each demo phase over all its epochs (pre-training gets more: it starts from scratch);
#: ``iters_per_epoch=N`` on the command line replaces both (smoke runs)
DEMO_PRETRAIN_ITERS = int(os.environ.get("DSF_DEMO_PRETRAIN_ITERS", 500))
DEMO_FINETUNE_ITERS = int(os.environ.get("DSF_DEMO_FINETUNE_ITERS", 200))


# ------------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------------
def resolve_device(cfg: Config) -> torch.device:
    """``cfg.device`` or CUDA when available, else CPU."""
    if cfg.device:
        return torch.device(cfg.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_dir(cfg: Config) -> str:
    """``<output_dir>/<dataset>/<run_name>``; the name is derived from the mode when not given."""
    name = cfg.run_name or f"{cfg.phase}_{cfg.train_stage}_s{cfg.stage_num}_w{cfg.width:g}" + ("_demo" if cfg.demo else "")
    return os.path.join(cfg.output_dir, cfg.dataset, name)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


# ------------------------------------------------------------------------------------------------------
# loss weights: one table from the config (docs/method.md, losses; hidden official constants exposed)
# ------------------------------------------------------------------------------------------------------
def loss_weights(cfg: Config) -> dict[str, float]:
    """Weight of each term name (the middle part of ``<domain>/<term>/s<stage>``).

    ``inter_branch=false`` (ablation) zeroes the inter-branch terms P2M, M2P and the stage-1 MANO-joint
    distillation from the teacher's pixel joints.
    """
    ib = 1.0 if cfg.inter_branch else 0.0
    return {
        "pix": cfg.deconv_weight, "coord": cfg.coord_weight, "joint": cfg.coord_weight, "vert": cfg.coord_weight,
        "shape": cfg.shape_prior_weight, "negscale": cfg.neg_scale_weight, "coll": cfg.coll_weight,
        "distil_map": cfg.deconv_weight, "distil_pwe": cfg.coord_weight, "distil_joint": cfg.coord_weight * ib,
        "distil_mesh": cfg.coord_weight, "p2m": cfg.coord_weight * ib,
        "m2d": cfg.m2d_scale * cfg.model_weight, "d2m": cfg.model_weight, "pd2m": cfg.partICP_weight,
        "m2p": cfg.coord_weight * cfg.M2P_weight * ib,
    }


def weighted_total(terms: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """Sum of ``weights[term] * value`` over ``terms`` named ``<domain>/<term>/s<k>``."""
    total = None
    for name, value in terms.items():
        w = weights[name.split("/")[1]]
        if w == 0.0:
            continue
        total = value * w if total is None else total + value * w
    if total is None:
        raise ValueError("every loss term has weight 0")
    return total


# ------------------------------------------------------------------------------------------------------
# models bundle
# ------------------------------------------------------------------------------------------------------
@dataclass
class Models:
    """Everything one step needs: the (possibly DDP-wrapped) pose network, its prediction renderer (MANO layer +
    rasterizer), and the frozen transfer generator (None = identity)."""

    net: nn.Module
    renderer: Any
    transfer: nn.Module | None = None
    amp: bool = False  # bf16 autocast around the network (CUDA; the renderer is then a float32 island)

    @property
    def layer(self):
        return self.renderer.mano_layer

    def forward(self, depth: Tensor, batch: dict):
        if not self.amp:
            return self.net(depth, batch["center_xyz"], batch["cube"], renderer=self.renderer)
        from util.precision import autocast_context, to_float32

        with autocast_context(depth.device, True):
            out = self.net(depth, batch["center_xyz"], batch["cube"], renderer=self.renderer)
        return to_float32(out)  # losses, MANO and distances in float32


def translate(models: Models, depth: Tensor) -> Tensor:
    """Synthetic crop -> network input: G_A(depth) (frozen, no gradient) or the crop itself (``transfer=none``)."""
    if models.transfer is None:
        return depth
    with torch.no_grad():
        return models.transfer(depth)


# ------------------------------------------------------------------------------------------------------
# the shared synthetic loss (pre-training and the synthetic half of fine-tuning, both stages)
# ------------------------------------------------------------------------------------------------------
def _stage_mano(out, k: int, layer) -> tuple[Tensor, Tensor]:
    """MANO joints (B, 21, 3) and vertices (B, 779, 3) in norm-xyz of stage k (0-based) of ``out``; stage 1 reuses
    the stage-2 remap's evaluation when there is one."""
    from render.mano_layer import DSF_GLOBAL_SCALE

    if k == 0 and out.render is not None:
        return out.render.joints_xyz, out.render.verts_xyz
    m = layer.forward_dsf(out.stages[k].mano, global_scale=DSF_GLOBAL_SCALE)
    return m.joints, m.vertices


def synthetic_losses(out, batch: dict, layer, cfg: Config, *, pretrain: bool) -> dict[str, Tensor]:
    """Supervised terms of every stage of ``out`` on a labelled batch (docs/method.md, synthetic losses).

    Args:
        out: ``PoseNetOutput`` of the batch's (translated) crops.
        batch: ``depth`` (B, 1, 128, 128) the clean occlusion-masked crop (targets are encoded and predictions
            decoded against it, not against the translated input); ``mano_joints_uvd_norm`` /
            ``mano_joints_xyz_norm`` (B, 21, 3); ``mano_verts_xyz_norm`` (B, 779, 3).
        layer: the MANO layer.
        pretrain: True adds the shape prior and the negative-scale penalty (pre-training); False adds the
            collision term (fine-tuning's synthetic half).
    Returns:
        ``syn/{pix,coord,joint,vert,shape,negscale|coll}/s{k}`` unweighted scalars.
    """
    import model.losses as L
    from model.offsets import decode_offsets

    d, K = cfg.huber_delta, cfg.offset_kernel
    depth = batch["depth"]
    gt_uvd, gt_xyz, gt_verts = batch["mano_joints_uvd_norm"], batch["mano_joints_xyz_norm"], batch["mano_verts_xyz_norm"]
    terms: dict[str, Tensor] = {}
    for k, stage in enumerate(out.stages):
        s = f"s{k + 1}"
        joints, verts = _stage_mano(out, k, layer)
        terms[f"syn/pix/{s}"] = L.pixel_map_loss(stage.maps, gt_uvd, depth, K, d)
        terms[f"syn/coord/{s}"] = L.pwe_joint_loss(decode_offsets(stage.maps, depth, K, cfg.decode_temperature),
                                                   gt_uvd, d)
        terms[f"syn/joint/{s}"] = L.mano_joint_loss(joints, gt_xyz, d)
        terms[f"syn/vert/{s}"] = L.mano_vertex_loss(verts, gt_verts, d)
        if pretrain:
            terms[f"syn/shape/{s}"] = L.shape_prior_loss(stage.mano)
            terms[f"syn/negscale/{s}"] = L.negative_scale_loss(stage.mano)
        else:
            terms[f"syn/coll/{s}"] = _collision(layer, joints, verts, cfg)
    return terms


def _collision(layer, joints: Tensor, verts: Tensor, cfg: Config) -> Tensor:
    """Sphere collision of one prediction; the mesh (radii) is detached inside (docs/method.md, gradient flow)."""
    import model.losses as L

    return L.prediction_collision_loss(layer, joints, verts, cfg.coll_row_threshold)


# ------------------------------------------------------------------------------------------------------
# the real (unlabeled) half of fine-tuning
# ------------------------------------------------------------------------------------------------------
@dataclass
class RealFit:
    """Non-differentiable pre-processing of a real batch: the hand crop, the point sets and their part labels."""

    crop: Tensor  # (B, 1, H, W) real crop with everything outside the hand box set to +1
    box_joints: Tensor  # (B, 21, 3) norm-xyz joints defining the hand box (applied to every render as well)
    points: Tensor  # (B, P, 3) norm-xyz, all hand-crop pixels
    finger_points: Tensor  # (B, P, 3) norm-xyz, finger pixels only
    finger_labels: Tensor  # (B, P) part labels 1..15 (0 = palm)
    spheres: Any = None  # render.spheres.HandSpheres used for the segmentation


def _margins(cfg: Config) -> tuple[float, float, float]:
    """Hand-box margins (xy, z near, z far) mm (official "25/20/20": 25, 20 + 20 mm hand thickness, 20)."""
    return (cfg.crop_hand_xy_margin, cfg.crop_hand_z_near, cfg.crop_hand_z_far)


@torch.no_grad()
def prepare_real(depth: Tensor, batch: dict, box_joints: Tensor, centre_joints: Tensor, radius_joints: Tensor,
                 radius_verts: Tensor, layer, cfg: Config, generator: torch.Generator | None) -> RealFit:
    """Hand crop (box of ``box_joints``), segmentation (sphere centres ``centre_joints``, radii from
    ``radius_joints`` / ``radius_verts``), point sampling. All inputs norm-xyz, detached."""
    from model.point_cloud import crop_hand, foreground_points, sample_points, segment_crop, segment_points
    from render.spheres import hand_spheres

    C, S, M, cam = batch["center_xyz"], batch["cube"], batch["M"], cfg.camera
    crop = crop_hand(depth, box_joints, C, S, M, cam, margins=_margins(cfg))
    spheres = hand_spheres(layer, radius_joints, radius_verts, centre_joints=centre_joints)
    points = sample_points(foreground_points(crop, C, S, M, cam), cfg.num_points, generator)
    labels = segment_crop(crop, spheres, C, S, M, cam)  # (B, 1, H, W), 0 on palm and background
    finger = torch.where(labels > 0, crop, torch.ones_like(crop))
    finger_points = sample_points(foreground_points(finger, C, S, M, cam), cfg.num_points, generator)
    return RealFit(crop, box_joints, points, finger_points, segment_points(finger_points, spheres), spheres)


def model_fit_terms(rendered, fit: RealFit, batch: dict, layer, cfg: Config, s: str) -> tuple[dict, dict]:
    """m2d, d2m, pd2m and collision of one rendered MANO prediction against the prepared real batch.

    Returns (terms ``real/{m2d,d2m,pd2m,coll}/<s>``, raw per-sample values for the M2P selection:
    ``icp`` (B,), ``part_icp`` (B, 15), ``crop`` the hand-cropped render (B, 1, H, W)).
    """
    import model.losses as L
    from model.point_cloud import crop_hand

    rcrop = crop_hand(rendered.depth, fit.box_joints, batch["center_xyz"], batch["cube"], rendered.M, cfg.camera,
                      margins=_margins(cfg))
    faces = layer.faces_closed
    icp = L.icp_loss(fit.points, rendered.verts_xyz, faces)
    part = L.part_icp_loss(fit.finger_points, fit.finger_labels, rendered.verts_xyz, faces, layer.part_bits)
    terms = {f"real/m2d/{s}": L.m2d_loss(fit.crop, rcrop).mean(), f"real/d2m/{s}": icp.mean(),
             f"real/pd2m/{s}": part.mean(),
             f"real/coll/{s}": _collision(layer, rendered.joints_xyz, rendered.verts_xyz, cfg)}
    return terms, {"icp": icp, "part_icp": part, "crop": rcrop}


def m2p_terms(pwe_uvd: Tensor, mano_uvd: Tensor, real_crop: Tensor, rendered_crop: Tensor, raw: dict, cfg: Config,
              s: str, foreground: float | None = None, denominator: str = "union") -> tuple[dict, dict]:
    """M2P: pixel joints learn from the (detached) MANO joints on the reliable (sample, joint) pairs.

    Returns (``real/m2p/<s>``, stats with ``m2p_selected`` (selected pairs) and ``m2p_samples`` (samples passing
    the depth and global-fit tests))."""
    import model.losses as L

    kw = {"denominator": denominator, **({} if foreground is None else {"foreground": foreground})}
    depth_ok, fit_ok, joint_mask = L.m2p_selection(real_crop, rendered_crop.detach(), raw["icp"].detach(),
                                                   raw["part_icp"].detach(), cfg.m2p_depth_threshold,
                                                   cfg.m2p_fit_threshold, **kw)
    sample_ok = depth_ok & fit_ok
    sel = sample_ok[:, None] & joint_mask
    stats = {"m2p_selected": float(sel.sum()), "m2p_samples": float(sample_ok.sum())}
    return {f"real/m2p/{s}": L.m2p_loss(pwe_uvd, mano_uvd.detach(), sel)}, stats


def real_losses(out, real: dict, layer, renderer, cfg: Config, generator: torch.Generator | None
                ) -> tuple[dict, dict, RealFit]:
    """The real-batch terms of fine-tuning (docs/method.md, self-supervised fine-tuning).

    Two stages: teacher = detached stage 2 (pixel joints, MANO joints / mesh); stage 1 distils from it and fits the
    data; stage 2 learns P2M (MANO <- pixel joints) and the model-fitting terms, and its pixel branch M2P on
    reliable joints. One stage (ablation): no teacher, the stage teaches itself (P2M from its own detached pixel
    joints, M2P with the 0.95 foreground threshold and the uncropped render in the depth test).
    Returns (terms, stats, the prepared real batch).
    """
    import model.losses as L
    from model.offsets import decode_offsets
    from util.geometry import norm_uvd_to_norm_xyz

    K, T = cfg.offset_kernel, cfg.decode_temperature
    depth, C, S, M = real["depth"], real["center_xyz"], real["cube"], real["M"]

    def to_xyz(uvd: Tensor) -> Tensor:
        return norm_uvd_to_norm_xyz(uvd, C, S, M, cfg.camera, cfg.input_size)

    st1 = out.stages[0]
    uvd1 = decode_offsets(st1.maps, depth, K, T)
    terms: dict[str, Tensor] = {}
    if len(out.stages) == 2:
        st2 = out.stages[1]
        uvd2 = decode_offsets(st2.maps, depth, K, T)  # M2P's pixel joints; detached, the teacher's
        r1 = out.render  # the stage-1 hand rendered by the remap (with gradient)
        r2 = renderer.render_prediction(st2.mano, C, S)
        with torch.no_grad():
            t_uvd = uvd2.detach()
            t_xyz = to_xyz(t_uvd)
            # the teacher's MANO hand = the stage-2 render's mesh, detached (the same MANO evaluation)
            t_joints, t_verts = r2.joints_xyz.detach(), r2.verts_xyz.detach()
        fit = prepare_real(depth, real, t_joints, t_xyz, t_joints, t_verts, layer, cfg, generator)
        terms["real/distil_map/s1"] = L.map_distillation_loss(st1.maps, st2.maps)
        terms["real/distil_pwe/s1"] = L.pwe_joint_distillation_loss(uvd1, t_uvd)
        terms["real/distil_joint/s1"] = L.mpe_joint_distillation_loss(r1.joints_xyz, t_xyz)
        terms["real/distil_mesh/s1"] = L.mpe_mesh_distillation_loss(r1.verts_xyz, t_verts)
        fit1, _ = model_fit_terms(r1, fit, real, layer, cfg, "s1")
        fit2, raw2 = model_fit_terms(r2, fit, real, layer, cfg, "s2")
        terms.update(fit1)
        terms["real/p2m/s2"] = L.p2m_loss(r2.joints_uvd, t_uvd)
        terms.update(fit2)
        m2p, stats = m2p_terms(uvd2, r2.joints_uvd, fit.crop, raw2["crop"], raw2, cfg, "s2")
    else:
        r1 = renderer.render_prediction(st1.mano, C, S)
        fit = prepare_real(depth, real, r1.joints_xyz.detach(), to_xyz(uvd1.detach()), r1.joints_xyz.detach(),
                           r1.verts_xyz.detach(), layer, cfg, generator)
        terms["real/p2m/s1"] = L.p2m_loss(r1.joints_uvd, uvd1)
        fit1, raw1 = model_fit_terms(r1, fit, real, layer, cfg, "s1")
        terms.update(fit1)
        m2p, stats = m2p_terms(uvd1, r1.joints_uvd, fit.crop, r1.depth, raw1, cfg, "s1",
                               foreground=cfg.m2p_foreground_1stage, denominator="intersection")
    terms.update(m2p)
    return terms, stats, fit


# ------------------------------------------------------------------------------------------------------
# one iteration
# ------------------------------------------------------------------------------------------------------
@dataclass
class StepResult:
    """Named unweighted loss terms of one iteration, counters (not losses), and what the image log draws."""

    terms: dict[str, Tensor]
    stats: dict[str, float] = field(default_factory=dict)
    syn_out: Any = None
    real_out: Any = None
    fit: RealFit | None = None


def pretrain_step(models: Models, syn: dict, cfg: Config) -> StepResult:
    """Pre-training: the synthetic batch (translated unless ``transfer=none``) through every stage."""
    out = models.forward(translate(models, syn["depth"]), syn)
    return StepResult(synthetic_losses(out, syn, models.layer, cfg, pretrain=True), syn_out=out)


def finetune_step(models: Models, syn: dict, real: dict, cfg: Config, generator: torch.Generator | None = None
                  ) -> StepResult:
    """Fine-tuning: one synthetic (view-augmented, translated) and one real batch, two forward passes with BN in
    train mode (both domains update the BN statistics). ``real`` labels are never read here."""
    syn_out = models.forward(translate(models, syn["depth"]), syn)
    terms = synthetic_losses(syn_out, syn, models.layer, cfg, pretrain=False)
    real_in = {k: real[k] for k in ("depth", "center_xyz", "cube", "M")}  # labels cannot reach a loss
    real_out = models.forward(real_in["depth"], real_in)
    real_terms, stats, fit = real_losses(real_out, real_in, models.layer, models.renderer, cfg, generator)
    terms.update(real_terms)
    return StepResult(terms, stats, syn_out, real_out, fit)


def supervised_step(models: Models, real: dict, cfg: Config) -> StepResult:
    """Benchmark upper bound, NOT part of DSF (docs/DEVIATIONS.md, Benchmark): the pre-training losses on labelled
    real crops, labels from the released-format MANO fits (``model.supervised``); terms ``sup/<term>/s<k>``."""
    from model.supervised import supervised_targets

    target = supervised_targets(real)
    out = models.forward(target["depth"], target)
    terms = synthetic_losses(out, target, models.layer, cfg, pretrain=True)
    return StepResult({"sup/" + k.split("/", 1)[1]: v for k, v in terms.items()}, real_out=out)


# ------------------------------------------------------------------------------------------------------
# errors (logging / test)
# ------------------------------------------------------------------------------------------------------
def stage_joints_mm(out, batch: dict, layer, cfg: Config) -> list[dict[str, Tensor]]:
    """Per stage: ``pwe`` and ``mano`` joints (B, 21, 3) mm (camera frame), ``verts`` (B, 779, 3) mm, ``uvd``
    (B, 21, 3) norm-uvd of the pixel branch, ``theta`` (B, 62)."""
    from model.offsets import decode_offsets
    from model.prediction import norm_uvd_joints_to_mm
    from util.geometry import norm_xyz_to_xyz

    depth, C, S, M = batch["depth"], batch["center_xyz"], batch["cube"], batch["M"]
    res = []
    for k, stage in enumerate(out.stages):
        uvd = decode_offsets(stage.maps, depth, cfg.offset_kernel, cfg.decode_temperature)
        joints, verts = _stage_mano(out, k, layer)
        res.append({"uvd": uvd, "pwe": norm_uvd_joints_to_mm(uvd, C, S, M, cfg.camera),
                    "mano": norm_xyz_to_xyz(joints, C, S), "verts": norm_xyz_to_xyz(verts, C, S),
                    "theta": stage.mano})
    return res


def dsf11_errors(joints21_mm: Tensor, labels14_mm: Tensor) -> Tensor:
    """DSF's metric per frame (B,): mean distance (mm) over the 11 NYU joints that MANO has (MANO_TO_NYU[:11] vs
    the first 11 of the NYU-14 labels; palm / wrist points excluded)."""
    from util.joints import MANO_TO_NYU

    pred = joints21_mm[:, list(MANO_TO_NYU[:11])]
    return (pred - labels14_mm[:, :11]).norm(dim=-1).mean(-1)


@torch.no_grad()
@torch.no_grad()
def label_errors(out, real: dict, layer, cfg: Config) -> dict[str, Tensor]:
    """Logged-only errors of the train-mode outputs against the real labels (11 joints, mm), as 0-d tensors
    (the trainer copies them to the host together with the loss terms: :func:`host_scalars`)."""
    from util.geometry import norm_xyz_to_xyz

    from dataloader.dataset_joints import dsf_frame_errors

    gt = norm_xyz_to_xyz(real["joints_xyz_norm"], real["center_xyz"], real["cube"])
    res = {}
    for k, st in enumerate(stage_joints_mm(out, real, layer, cfg)):  # NYU: = dsf11_errors
        res[f"err/pwe_s{k + 1}"] = dsf_frame_errors(st["pwe"], gt, cfg.dataset).mean()
        res[f"err/mano_s{k + 1}"] = dsf_frame_errors(st["mano"], gt, cfg.dataset).mean()
    return res


def host_scalars(values: dict[str, Tensor]) -> dict[str, float]:
    """0-d tensors -> Python floats with one device-to-host copy (a ``float()`` per value would wait for the
    device once per value, every step)."""
    if not values:
        return {}
    flat = torch.stack([v.detach().reshape(()).float() for v in values.values()]).tolist()
    return dict(zip(values, flat))


# ------------------------------------------------------------------------------------------------------
# evaluation on a test view
# ------------------------------------------------------------------------------------------------------
BRANCHES = ("pwe", "mano")


@torch.no_grad()
def evaluate_view(models: Models, cfg: Config, view: int, out_dir: str | None = None, *, dist: Any = None,
                  progress: bool = True) -> dict:
    """Score every stage and branch on the test split of ``view`` (network in eval mode).

    Returns ``{"view", "frames", "scores": {"s{k}_{branch}": {"dsf11": mm, "evaluator": NYUScores dict,
    "file": ...}}}``. With ``out_dir``: the official per-view files ``result_0_<v-1>.txt`` (stage-2 pixel joints)
    and ``result_1_<v-1>.txt`` (stage-2 MANO joints), 21 (u px, v px, d mm) per line in MANO order; community
    14-joint uvd files ``predictions_s{k}_{branch}_v{view}.txt`` with the palm points filled from the MANO-order
    joints (``nyu36_from_mano21``; only the 11-joint score is comparable with DSF); with ``save_mesh`` the stage-2
    meshes (779 x 3 mm per line) and 62-d parameters; with ``save_obj`` one OBJ per frame.
    """
    from torch.utils.data import DataLoader, Subset

    from dataloader.builders import build_real_dataset
    from dataloader.nyu_joints import nyu36_from_mano21
    from util.distributed import DistInfo, gather_rows, shard_range
    from util.camera import Intrinsics
    from util.evaluate import evaluate_nyu, save_predictions
    from util.geometry import xyz_to_uvd
    from util.joints import NYU_EVAL_14

    ds = build_real_dataset(cfg, "test", view=view, augment=False)
    # several processes: each predicts its contiguous block of frames, gathered in frame order; rank 0 writes
    info = dist if dist is not None else DistInfo()
    if len(ds) < info.world_size:
        raise ValueError(f"test view {view} has {len(ds)} frames, fewer than the {info.world_size} processes")
    own = shard_range(len(ds), info)
    loader = DataLoader(Subset(ds, own) if info.distributed else ds, batch_size=cfg.batch_size, shuffle=False,
                        num_workers=cfg.num_workers)
    models = dataclasses.replace(models, net=unwrap_model(models.net))  # a DDP forward would be a collective
    out_dir = out_dir if info.is_main else None
    net = models.net
    was_training = net.training
    net.eval()
    acc: dict[str, list] = {}
    try:
        it = loader
        if progress and info.is_main:
            from tqdm import tqdm

            it = tqdm(loader, desc=f"test view {view}", leave=False, dynamic_ncols=True)
        for batch in it:
            b = _to(batch, next(unwrap_model(net).parameters()).device)
            out = models.forward(b["depth"], b)
            for k, st in enumerate(stage_joints_mm(out, b, models.layer, cfg)):
                for br in BRANCHES:
                    acc.setdefault(f"s{k + 1}_{br}", []).append(st[br].double().cpu())
                if k == len(out.stages) - 1:
                    acc.setdefault("verts", []).append(st["verts"].cpu())
                    acc.setdefault("theta", []).append(st["theta"].cpu())
    finally:
        net.train(was_training)
    acc = {k: gather_rows(torch.cat(v), len(ds), info) for k, v in acc.items()}  # (N, ...) in frame order
    if cfg.dataset != "nyu":
        return _evaluate_other(ds, acc, cfg, view, out_dir, models)
    gt_mm = torch.as_tensor(ds.joints_mm())  # (N, 14, 3) mm, y down
    cam = cfg.camera
    h, w = cfg.image_size
    intr = Intrinsics(*cam, w, h)
    gt_uvd = xyz_to_uvd(gt_mm, cam).numpy()
    res = {"view": view, "frames": len(ds), "scores": {}}
    last = f"s{cfg.stage_num}"
    for key in [k for k in acc if k.startswith("s")]:
        joints = acc[key]  # (N, 21, 3) mm
        nyu14 = nyu36_from_mano21(joints)[:, list(NYU_EVAL_14)]
        pred_uvd = xyz_to_uvd(nyu14, cam).numpy()
        scores = evaluate_nyu(pred_uvd, gt_uvd, camera=intr)
        entry = {"dsf11": float(dsf11_errors(joints, gt_mm).mean()), "evaluator": scores.to_dict()}
        if out_dir is not None:
            name = f"predictions_{key}_v{view}.txt"
            save_predictions(os.path.join(out_dir, name), pred_uvd)
            entry["file"] = name
            if key.startswith(last):  # the official per-view files hold the final stage
                idx = 0 if key.endswith("pwe") else 1
                _write_rows(os.path.join(out_dir, f"result_{idx}_{view - 1}.txt"), xyz_to_uvd(joints, cam).numpy())
        res["scores"][key] = entry
    if out_dir is not None and cfg.save_mesh:
        verts = acc["verts"].numpy()
        _write_rows(os.path.join(out_dir, f"mesh_result_{view - 1}.txt"), verts)
        _write_rows(os.path.join(out_dir, f"MANO_result_{view - 1}.txt"), acc["theta"].numpy())
    if out_dir is not None and cfg.save_obj:
        _write_objs(os.path.join(out_dir, "obj", f"view{view}"), acc["verts"].numpy(),
                    models.layer.faces_closed.cpu().numpy())
    return res


def _evaluate_other(ds, acc: dict, cfg: Config, view: int, out_dir: str | None, models: Models) -> dict:
    """ICVL / MSRA part of :func:`evaluate_view`: the data set's community protocol (``evaluate_dataset``, files in
    the community frame: ICVL un-mirrored) and DSF's own joints (stored under "dsf11" for the tables)."""
    from dataloader.dataset_joints import community_uvd, dataset_joints, dsf_frame_errors
    from util.evaluate import evaluate_dataset, save_predictions

    def _rows(v) -> torch.Tensor:  # per-batch lists or already gathered (N, ...) tensors
        return torch.cat(v) if isinstance(v, list) else v

    gt_mm = torch.as_tensor(ds.joints_mm())  # (N, J, 3) mm, loader frame
    gt_uvd = community_uvd(gt_mm, ds, cfg.camera)
    subjects = ds.subjects_of_frames() if cfg.dataset == "msra" else None
    res = {"view": view, "frames": len(ds), "scores": {}}
    last = f"s{cfg.stage_num}"
    for key in [k for k in acc if k.startswith("s")]:
        joints = _rows(acc[key])  # (N, 21, 3) mm
        pred_uvd = community_uvd(dataset_joints(joints, cfg.dataset), ds, cfg.camera)
        scores = evaluate_dataset(pred_uvd, gt_uvd, cfg.dataset, subjects=subjects)
        entry = {"dsf11": float(dsf_frame_errors(joints, gt_mm, cfg.dataset).mean()), "evaluator": scores.to_dict()}
        if out_dir is not None:
            name = f"predictions_{key}_v{view}.txt"
            save_predictions(os.path.join(out_dir, name), pred_uvd, num_joints=pred_uvd.shape[1])
            entry["file"] = name
            if key.startswith(last):  # official per-view files: 21 MANO-order joints (ICVL un-mirrored)
                idx = 0 if key.endswith("pwe") else 1
                _write_rows(os.path.join(out_dir, f"result_{idx}_{view - 1}.txt"),
                            community_uvd(joints, ds, cfg.camera))
        res["scores"][key] = entry
    if out_dir is not None and cfg.save_mesh:
        _write_rows(os.path.join(out_dir, f"mesh_result_{view - 1}.txt"), _rows(acc["verts"]).numpy())
        _write_rows(os.path.join(out_dir, f"MANO_result_{view - 1}.txt"), _rows(acc["theta"]).numpy())
    if out_dir is not None and cfg.save_obj:
        _write_objs(os.path.join(out_dir, "obj", f"view{view}"), _rows(acc["verts"]).numpy(),
                    models.layer.faces_closed.cpu().numpy())
    return res


def _write_rows(path: str, arr: np.ndarray) -> None:
    """One line per frame, all numbers of the frame with ``%.3f`` (the official result-file format)."""
    rows = np.asarray(arr, np.float64).reshape(len(arr), -1)
    tmp = path + ".tmp"
    np.savetxt(tmp, rows, fmt="%.3f")
    os.replace(tmp, path)


def _write_objs(folder: str, verts: np.ndarray, faces: np.ndarray) -> None:
    os.makedirs(folder, exist_ok=True)
    for i, v in enumerate(verts):
        with open(os.path.join(folder, f"{i:06d}.obj"), "w") as f:
            f.writelines(f"v {x:.3f} {y:.3f} {z:.3f}\n" for x, y, z in v)
            f.writelines(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces)


def score_table(results: Sequence[tuple[str, dict]]) -> str:
    """Plain-text error table: one row per (label, view result), DSF-11 of every stage / branch, and the
    evaluator's 14-joint mean of the final stage's branches."""
    keys = sorted({k for _, r in results for k in r["scores"]})
    head = f"{'model':<28} {'view':>4} {'frames':>6} " + " ".join(f"{k:>9}" for k in keys)
    lines = ["DSF error (mm; NYU 11 joints, ICVL 15, MSRA 19), per-frame mean over all frames (s = stage, "
             "pwe = pixel branch, mano = model branch)", head, "-" * len(head)]
    for label, r in results:
        lines.append(f"{label:<28} {r['view']:>4} {r['frames']:>6} "
                     + " ".join(f"{r['scores'][k]['dsf11']:9.2f}" if k in r["scores"] else f"{'-':>9}"
                                for k in keys))
    return "\n".join(lines)


def write_test_outputs(out: str, results: list[dict], label: str, extra: dict | None = None) -> None:
    """``test_scores.json`` (machine-readable), success-curve PNG per view."""
    from util.evaluate import SUCCESS_THRESHOLDS_MM
    from util.plots import plot_success_curves

    data = {"label": label, "views": results, **(extra or {})}
    tmp = os.path.join(out, "test_scores.json.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, os.path.join(out, "test_scores.json"))
    for r in results:
        keys = sorted(r["scores"])
        plot_success_curves(os.path.join(out, f"success_curves_v{r['view']}.png"), keys, SUCCESS_THRESHOLDS_MM,
                            [np.asarray(r["scores"][k]["evaluator"]["success"]) for k in keys])


# ------------------------------------------------------------------------------------------------------
# optimiser, schedule, checkpoints
# ------------------------------------------------------------------------------------------------------
def lr_factor(epoch: int, step_size: int, gamma: float, offbyone: bool) -> float:
    """LR multiplier of ``epoch`` (0-based). Official (``offbyone``): ``gamma ** floor(max(e - 1, 0) / step)``
    (11 epochs at the base rate for step 10: the official ``scheduler.step(epoch)`` shift); else
    ``gamma ** floor(e / step)``."""
    e = max(epoch - 1, 0) if offbyone else epoch
    return gamma ** (e // step_size)


def build_optimizer(cfg: Config, net: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW (lr, wd on every parameter incl. BN / biases, as the official code) and the per-epoch schedule."""
    params = net.parameters()
    if cfg.opt == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.opt == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.scheduler == "step":
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: lr_factor(e, cfg.step_size, cfg.gamma, cfg.lr_offbyone))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    return opt, sched


def recalibrate_bn(models: Models, cfg: Config, device: torch.device, dist: Any = None) -> int:
    """``bn_recalibration``: re-estimate the BN running statistics over the first ``cfg.bn_recalibration`` batches of
    the real train split (unaugmented, labels dropped), train-mode forward without gradient; the mean over the ranks
    when distributed. Weights are untouched. Returns the batches used (per rank)."""
    from dataloader.builders import build_real_loader
    from model.bn_stats import average_batchnorm_across_ranks, recalibrate_batchnorm

    loader = build_real_loader(cfg, "train", train=False, dist=dist, labels=False)
    plain = dataclasses.replace(models, net=unwrap_model(models.net))  # a DDP forward would be a collective

    def forward(batch: dict):
        batch = _to(batch, device)
        return plain.forward(batch["depth"], batch)

    used = recalibrate_batchnorm(plain.net, loader, forward, cfg.bn_recalibration)
    if dist is not None and getattr(dist, "distributed", False):
        average_batchnorm_across_ranks(plain.net)
    return used


def save_training_checkpoint(path: str, *, net: nn.Module, opt, sched, epoch: int, step: int, cfg: Config,
                             extra: dict, generators: dict[str, torch.Generator]) -> None:
    """Model, optimiser, scheduler, epoch, step, RNG states and the resolved config, written atomically
    (``util.checkpointing.save_checkpoint``; :func:`save_run` adds every rank's streams for exact resume)."""
    from util.checkpointing import save_checkpoint

    save_checkpoint(path, model=net, optimizer=opt, scheduler=sched, epoch=epoch, step=step,
                    config=cfg.to_dict(), extra=extra, generators=generators)


def load_training_checkpoint(path: str) -> dict:
    """Read one of our checkpoints with ``weights_only=True`` (one clear error naming the file)."""
    from util.checkpointing import load_checkpoint

    return load_checkpoint(path)


def _checkpoint_file(path: str) -> str:
    """A checkpoint path: a folder means its ``latest.pth``."""
    return os.path.join(path, "latest.pth") if os.path.isdir(path) else path


def load_network_weights(net: nn.Module, path: str) -> dict | None:
    """Load a pose checkpoint (ours or the official ``{"model", "optimizer", "epoch"}`` / plain state dict) into
    ``net`` strictly. Returns our checkpoint's saved config (None for other files)."""
    from model.checkpoint import read_checkpoint
    from model.pose_net import unwrap_pose_state

    path = _checkpoint_file(path)
    raw = read_checkpoint(path, expected="a DSF pose checkpoint ({'model': state_dict, ...} or a state dict)")
    state = unwrap_pose_state(raw, source=path)
    target = unwrap_model(net)
    if target.stage_num == 1 and any(_is_stage2_key(k) for k in state):
        # the single-stage ablation starts from a two-stage pre-training: its stage-1 weights, the rest dropped
        # (the official key-matched load ignores them silently; every remaining key must still match)
        state = {k: v for k, v in state.items() if not _is_stage2_key(k)}
        print(f"{path}: stage-2 weights not used by the single-stage network")
    target.load_official_state(state)
    return raw.get("config") if isinstance(raw, dict) and isinstance(raw.get("config"), dict) else None


def _is_stage2_key(key: str) -> bool:
    top = key.split(".")[0]
    return top == "fusion" or top.endswith("_s2")


def adopt_checkpoint_architecture(cfg: Config, path: str) -> Config:
    """Our checkpoints record width / stage_num / joint_num: use them for the network that loads the file."""
    from model.checkpoint import read_checkpoint

    raw = read_checkpoint(_checkpoint_file(path), expected="a DSF pose checkpoint")
    saved = raw.get("config") if isinstance(raw, dict) else None
    if not isinstance(saved, dict):
        return cfg
    arch = {k: saved[k] for k in ("width", "stage_num", "joint_num") if k in saved and saved[k] != getattr(cfg, k)}
    if arch:
        print(f"checkpoint {path}: network {arch} (from its saved config)")
        cfg = dataclasses.replace(cfg, **arch)
    return cfg


# ------------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------------
def _dist_info(cfg: Config):
    from util.distributed import init_distributed

    return init_distributed(cfg.device or "auto")


def build_models(cfg: Config, device: torch.device, *, transfer: bool) -> Models:
    from dataloader.builders import build_mano_layer, build_pose_model, build_transfer_generator

    layer = build_mano_layer(cfg, device)
    net, renderer = build_pose_model(cfg, device, layer)
    return Models(net, renderer, build_transfer_generator(cfg, device) if transfer else None)


def train(cfg: Config, out: str, device: torch.device, dist: Any = None) -> dict:
    """Pre-train or fine-tune (``cfg.train_stage``), test after each epoch (monitoring) and at the end (the last
    weights, every ``test_views`` view). Returns the final test results.

    Under ``torchrun`` every rank runs this (DDP); rank 0 logs, shows progress and writes checkpoints and files.
    ``resume=auto|PATH`` continues exactly where a checkpoint stopped (README, "Several GPUs and resuming").
    """
    from tqdm import tqdm

    from dataloader.builders import build_real_loader, build_synthetic
    from util.checkpointing import NonFiniteError, NonFiniteGuard, keep_epoch_copy, resolve_resume
    from util.distributed import DistInfo, check_replicas_in_sync, rank_seed, reduce_mean
    from util.train_log import TrainLog

    dist = dist if dist is not None else DistInfo(device=device)
    is_main = dist.is_main
    finetune = cfg.train_stage == "finetune"
    supervised = cfg.train_stage == "supervised"  # benchmark upper bound (labelled real crops), not DSF
    resume_path = resolve_resume(cfg.resume, out)
    if finetune and not cfg.finetune_dir and resume_path is None:
        raise ValueError("train_stage=finetune starts from a pre-training checkpoint: pass finetune_dir=<latest.pth "
                         "or its run folder> (train one with train_stage=pretrain)")
    models = build_models(cfg, device, transfer=not supervised)
    if cfg.finetune_dir and resume_path is None:  # a resumed run takes its weights from the checkpoint
        load_network_weights(models.net, cfg.finetune_dir)
        if is_main:
            print(f"initialised from {cfg.finetune_dir}")
    models = prepare_training_models(cfg, models, dist)
    opt, sched = build_optimizer(cfg, models.net)
    syn_src = build_synthetic(cfg, device, "finetune" if finetune else "pretrain", mano_layer=models.layer, dist=dist)
    real_loader = build_real_loader(cfg, "train", train=True, dist=dist,
                                    pin_memory=device.type == "cuda") if finetune else None
    if supervised:
        from model.supervised import fit_point_labels

        labels = fit_point_labels(cfg.fits_dir, cfg.data_root, "train", cfg.view, models.layer)
        real_loader = build_real_loader(cfg, "train", train=True, dist=dist, pin_memory=device.type == "cuda",
                                        point_labels=labels)
    point_gen = torch.Generator().manual_seed(rank_seed(cfg.seed + 7, dist))
    parts = TrainParts(models, opt, sched, syn_src, {"synthetic": syn_src.generator, "points": point_gen},
                       NonFiniteGuard(cfg.nan_max_consecutive, dist=dist))
    iters = epoch_iterations(cfg, syn_src, real_loader, dist)
    run = resume_run(resume_path, parts, cfg, dist, iters) if resume_path is not None else RunState()
    weights = loss_weights(cfg)
    log = TrainLog(out, enabled=is_main)
    if is_main:
        if resume_path is not None:
            print(f"resumed from {resume_path}: epoch {run.epoch}, iteration {run.in_epoch} of {iters}")
        print(f"{cfg.train_stage}: {cfg.max_epoch} epochs x {iters} iterations, batch {cfg.batch_size}"
              + (" + " + str(cfg.batch_size) + " real" if finetune else "")
              + (f" per process x {dist.world_size} processes" if dist.distributed else "")
              + f"; synthetic source: {syn_src.source}; view augmentation {syn_src.view_aug}; transfer {cfg.transfer}")
    latest = os.path.join(out, "latest.pth")
    t_start = time.time()
    for epoch in range(run.epoch, cfg.max_epoch):
        first = run.in_epoch if epoch == run.epoch else 0
        run.epoch, run.in_epoch = epoch, first
        models.net.train()  # BN in train mode for both domains' passes (official)
        real_iter = epoch_batches(real_loader, epoch, first, cfg.batch_size) if real_loader is not None else None
        bar = tqdm(range(first, iters), initial=first, total=iters, desc=f"{cfg.train_stage} epoch {epoch}",
                   disable=not is_main, dynamic_ncols=True)
        last = {}
        for it in bar:
            syn = syn_src.next_batch() if not supervised else None
            if supervised:
                real = _to(next(real_iter), device)
                res = supervised_step(models, real, cfg)
            elif finetune:
                real = _to(next(real_iter), device)
                res = finetune_step(models, syn, real, cfg, point_gen)
            else:
                res = pretrain_step(models, syn, cfg)
            total = weighted_total(res.terms, weights)
            opt.zero_grad(set_to_none=True)
            total.backward()
            run.step, run.in_epoch = run.step + 1, it + 1
            try:
                if parts.guard.check(total, models.net):  # non-finite loss / gradient: step skipped, counted
                    opt.step()
            except NonFiniteError as err:  # too many in a row: stop with the last good weights saved
                save_run(latest, parts, run, cfg, dist)
                raise NonFiniteError(f"{err} The last good weights are in {latest}; start a new run from them "
                                     f"with finetune_dir={latest} (e.g. with a lower lr).") from None
            logged = {f"loss/{k}": v for k, v in res.terms.items()}
            logged["loss/total"] = total
            if finetune or supervised:
                logged.update(label_errors(res.real_out, real, models.layer, cfg))  # logging only
            scal = host_scalars(logged)
            scal.update({f"stat/{k}": v for k, v in res.stats.items()})
            scal["stat/skipped_steps"] = parts.guard.skipped
            scal["lr"] = opt.param_groups[0]["lr"]
            if dist.distributed:
                scal = reduce_mean(scal, dist)  # logged values are means over the ranks
            log.scalars(run.step, scal, write_tb=run.step % max(cfg.log_every, 1) == 0)
            if is_main and run.step % max(cfg.img_log_every, 1) == 0:
                log_images(log, run.step, res, syn, real if finetune else None, models, cfg)
            last = scal
            bar.set_postfix({"loss": f"{scal['loss/total']:.4g}",
                             **({"m2p": int(res.stats["m2p_selected"])} if "m2p_selected" in res.stats else {})})
            if cfg.ckpt_every and run.step % cfg.ckpt_every == 0 and run.in_epoch < iters:
                save_run(latest, parts, run, cfg, dist)
        sched.step()
        line = {k: v for k, v in last.items() if k in ("loss/total", "lr", "stat/skipped_steps")
                or k.startswith("err/")}
        if finetune and cfg.bn_recalibration:  # opt-in: test-time BN statistics of the real domain only
            line["stat/bn_batches"] = recalibrate_bn(models, cfg, device, dist)
        if cfg.epoch_test:  # monitoring only; model selection on the test set is a diagnostic
            r = evaluate_view(models, cfg, cfg.test_views[0], None, dist=dist, progress=False)
            err = float(np.mean([s["dsf11"] for s in r["scores"].values()]))
            line.update({f"test/{k}": v["dsf11"] for k, v in r["scores"].items()})
            log.scalars(run.step, {f"test/{k}": v["dsf11"] for k, v in r["scores"].items()})
            run.epoch_results.append({"epoch": epoch, **{k: v["dsf11"] for k, v in r["scores"].items()}})
            if err <= run.best:
                run.best = err
                save_run(os.path.join(out, "best.pth"), parts, run, cfg, dist,
                         note="selected on the TEST set: diagnostic only")
        log.epoch_line(epoch, line)
        save_run(latest, parts, run, cfg, dist)
        if is_main:
            keep_epoch_copy(out, epoch, cfg.keep_last)
    train_seconds = time.time() - t_start
    if dist.distributed:
        check_replicas_in_sync(models.net, dist)  # bit-identical weights and buffers on every rank, or an error
        if is_main:
            print(f"replicas in sync: {dist.world_size} ranks hold bit-identical weights and buffers")
    results = [evaluate_view(models, cfg, view, out, dist=dist) for view in cfg.test_views]
    if is_main:
        log.plot_loss_curves()
        write_test_outputs(out, results, f"{cfg.train_stage} (last weights)",
                           {"train_seconds": train_seconds, "epochs": run.epoch_results, "checkpoint": latest,
                            "skipped_steps": parts.guard.skipped, "world_size": dist.world_size})
        print(score_table([(f"{cfg.train_stage} last", r) for r in results]))
    log.close()
    return {"results": results, "train_seconds": train_seconds, "skipped_steps": parts.guard.skipped}


# ------------------------------------------------------------------------------------------------------
# distributed / resume / speed (util/distributed.py, util/checkpointing.py; docs/DEVIATIONS.md)
# ------------------------------------------------------------------------------------------------------
#: config keys that may differ when a run is resumed: runtime, logging, speed options and paths
RESUME_MAY_CHANGE = frozenset({
    "resume", "device", "num_workers", "log_every", "img_log_every", "epoch_test", "test_views", "save_mesh",
    "save_obj", "max_epoch", "keep_last", "ckpt_every", "nan_max_consecutive", "amp", "torch_compile",
    "channels_last", "cudnn_benchmark", "deterministic", "data_root", "mano_path", "hands_para_dir",
    "transfer_net_path", "finetune_dir", "load_model", "output_dir", "run_name", "demo_dir",
})


@dataclass
class RunState:
    """Where a training run stands (stored in every checkpoint): ``epoch`` in progress, ``in_epoch`` iterations
    done in it, global ``step``, best per-epoch test error (diagnostic) and the per-epoch test errors."""

    epoch: int = 0
    in_epoch: int = 0
    step: int = 0
    best: float = math.inf
    epoch_results: list = field(default_factory=list)


@dataclass
class TrainParts:
    """The stateful objects a checkpoint saves and a resume restores."""

    models: Models
    opt: torch.optim.Optimizer
    sched: Any
    syn_src: Any
    generators: dict
    guard: Any


def prepare_training_models(cfg: Config, models: Models, dist) -> Models:
    """Speed options and DDP: channels-last and bf16 autocast on CUDA (geometry kept float32), SyncBatchNorm
    (``sync_bn``, CUDA), DistributedDataParallel when several processes run, ``torch.compile`` last."""
    from util.distributed import wrap_ddp
    from util.precision import Float32Calls

    cuda = dist.device.type == "cuda"
    net = models.net
    if cuda and cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if cuda and cfg.sync_bn and dist.distributed:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net = wrap_ddp(net, dist)
    if cfg.torch_compile:
        net = torch.compile(net)
    amp = cuda and cfg.amp
    renderer = Float32Calls(models.renderer) if amp else models.renderer
    return dataclasses.replace(models, net=net, renderer=renderer, amp=amp)


def epoch_iterations(cfg: Config, syn_src, real_loader, dist) -> int:
    """Iterations per epoch: this rank's real batches (fine-tuning), or one pass of the synthetic pose set over all
    ranks (pre-training); ``iters_per_epoch`` caps either."""
    if real_loader is not None:
        n = len(real_loader)
        return min(cfg.iters_per_epoch, n) if cfg.iters_per_epoch else n
    return cfg.iters_per_epoch or math.ceil(len(syn_src.params) / (cfg.batch_size * dist.world_size))


def epoch_batches(loader, epoch: int, skip: int, batch_size: int):
    """Iterator over ``loader``'s batches of ``epoch`` after the first ``skip`` (a resumed epoch)."""
    loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)  # per-item augmentation seeds (util.seed.SeededItems)
    loader.sampler.skip(min(skip * batch_size, len(loader.sampler)))
    return iter(loader)


def save_run(path: str, parts: TrainParts, run: RunState, cfg: Config, dist, note: str = "") -> None:
    """Write a training checkpoint on rank 0 holding every rank's random streams (call on all ranks)."""
    from util.checkpointing import rng_state, save_checkpoint
    from util.distributed import broadcast_buffers, gather_objects

    broadcast_buffers(parts.models.net, dist)  # rank 0's BN statistics: what DDP's next forward uses anyway
    ranks = gather_objects({"rng": rng_state(parts.generators), "synthetic": parts.syn_src.state_dict()}, dist)
    if dist.is_main:
        extra = {"global_step": run.step, "best": run.best, "epoch_results": run.epoch_results,
                 "world_size": dist.world_size, "ranks": ranks, "guard": parts.guard.state_dict()}
        save_checkpoint(path, model=parts.models.net, optimizer=parts.opt, scheduler=parts.sched, epoch=run.epoch,
                        step=run.in_epoch, config=cfg.to_dict(), generators=parts.generators,
                        extra={**extra, "note": note} if note else extra)


def resume_run(path, parts: TrainParts, cfg: Config, dist, iters: int) -> RunState:
    """Restore weights, optimiser, schedule, this rank's random streams and data positions from ``path``.

    Raises:
        model.checkpoint.CheckpointError: an unreadable file, another config (every differing key listed) or
            another number of processes.
    """
    from model.checkpoint import CheckpointError
    from util.checkpointing import check_resume_compatible, load_checkpoint, restore_training_state, set_rng_state

    ckpt = load_checkpoint(path)
    extra = ckpt["extra"]
    saved_world = extra.get("world_size")
    if saved_world != dist.world_size:
        raise CheckpointError(f"{path}: saved by a run of {saved_world} process(es), this one has "
                              f"{dist.world_size}; resume with the same number (data order and random streams "
                              "are per process)")
    # keys added to Config after the checkpoint was written count as their defaults
    saved_config = {**Config().to_dict(), **ckpt["config"]}
    check_resume_compatible(saved_config, cfg.to_dict(), RESUME_MAY_CHANGE, source=str(path))
    restore_training_state(ckpt, model=parts.models.net, optimizer=parts.opt, scheduler=parts.sched,
                           source=str(path))
    try:
        own = extra["ranks"][dist.rank]
        set_rng_state(own["rng"], parts.generators)
        parts.syn_src.load_state_dict(own["synthetic"])
        parts.guard.load_state_dict(extra["guard"])
        run = RunState(int(ckpt["epoch"]), int(ckpt["step"]), int(extra["global_step"]), float(extra["best"]),
                       list(extra["epoch_results"]))
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: incomplete training state ({type(err).__name__}: {err})") from None
    if run.in_epoch >= iters:  # saved at the end of an epoch
        run.epoch, run.in_epoch = run.epoch + 1, 0
    return run


@torch.no_grad()
def log_images(log, step: int, res: StepResult, syn: dict, real: dict | None, models: Models, cfg: Config) -> None:
    """TensorBoard images: input crops with both branches' skeletons (last stage), rendered vs observed depth,
    the hand crop and the part segmentation (fine-tuning)."""
    from util.geometry import norm_xyz_to_norm_uvd
    from util.visualize import _figure, draw_skeleton

    for tag, out, batch in (("synthetic", res.syn_out, syn), ("real", res.real_out, real)):
        if out is None or batch is None:
            continue
        st = stage_joints_mm(out, batch, models.layer, cfg)[-1]
        mano_uvd = norm_xyz_to_norm_uvd((st["mano"] - batch["center_xyz"][:, None]) / (batch["cube"][:, None] / 2),
                                        batch["center_xyz"], batch["cube"], batch["M"], cfg.camera, cfg.input_size)
        n = min(4, batch["depth"].shape[0])
        rows = 2 if tag == "synthetic" or res.fit is None else 4
        fig, axes = _figure(rows, n)
        rendered = models.renderer.render_prediction(out.stages[-1].mano, batch["center_xyz"], batch["cube"])
        if rows == 4:  # part labels of the hand crop (0 = palm), from the segmentation spheres of this step
            from model.point_cloud import segment_crop

            labels = segment_crop(res.fit.crop, res.fit.spheres, batch["center_xyz"], batch["cube"], batch["M"],
                                  cfg.camera)
        for i in range(n):
            axes[0, i].imshow(batch["depth"][i, 0].cpu().numpy(), cmap="viridis", vmin=-1, vmax=1)
            draw_skeleton(axes[0, i], st["uvd"][i].cpu().numpy(), "red")
            draw_skeleton(axes[0, i], mano_uvd[i].cpu().numpy(), "white")
            axes[1, i].imshow(rendered.depth[i, 0].cpu().numpy(), cmap="viridis", vmin=-1, vmax=1)
            if rows == 4:
                axes[2, i].imshow(res.fit.crop[i, 0].cpu().numpy(), cmap="viridis", vmin=-1, vmax=1)
                lab = labels[i, 0].float()
                lab[res.fit.crop[i, 0] >= 0.99] = -1  # background
                axes[3, i].imshow(lab.cpu().numpy(), cmap="tab20", vmin=-1, vmax=15)
        axes[0, 0].set_title(f"{tag}: input, PWE red / MANO white", fontsize=7)
        axes[1, 0].set_title("rendered MANO (last stage)", fontsize=7)
        if rows == 4:
            axes[2, 0].set_title("hand crop", fontsize=7)
            axes[3, 0].set_title("part segmentation", fontsize=7)
        fig.tight_layout()
        log.figure(f"images/{tag}", step, fig)


# ------------------------------------------------------------------------------------------------------
# test
# ------------------------------------------------------------------------------------------------------
def test(cfg: Config, out: str, device: torch.device, dist: Any = None) -> list[dict]:
    """Evaluate exactly one checkpoint (``load_model``) on every view of ``test_views``; write the result files,
    ``test_scores.json`` and success curves; print the table."""
    if not cfg.load_model:
        raise ValueError("phase=test evaluates exactly one checkpoint: pass load_model=<our latest.pth / best.pth, "
                         "a run folder, or the released DSF weights>")
    cfg = adopt_checkpoint_architecture(cfg, cfg.load_model)
    models = build_models(cfg, device, transfer=False)
    load_network_weights(models.net, cfg.load_model)
    if cfg.bn_recalibration:  # opt-in: score with BN statistics of the (unlabelled) real train split
        used = recalibrate_bn(models, cfg, device, dist)
        if dist is None or dist.is_main:
            print(f"BN running statistics re-estimated on {used} real train batches (bn_recalibration)")
    results = [evaluate_view(models, cfg, v, out, dist=dist) for v in cfg.test_views]  # sharded under torchrun
    if dist is None or dist.is_main:
        write_test_outputs(out, results, f"test of {cfg.load_model}", {"checkpoint": cfg.load_model})
        print(score_table([(os.path.basename(cfg.load_model.rstrip("/")), r) for r in results]))
        print("only the 11-joint numbers are comparable with DSF's; the 14-joint evaluator numbers in "
              "test_scores.json use palm points filled from the MANO joints (docs/DEVIATIONS.md, Trainer)")
    return results


# ------------------------------------------------------------------------------------------------------
# demo: the whole method on stand-in assets through the same code path
# ------------------------------------------------------------------------------------------------------
def ensure_demo_assets(cfg: Config) -> tuple[str, str]:
    """Generate (first use only) the stand-in MANO model and the data set's stand-in tree (NYU, ICVL or MSRA
    format); return their paths."""
    from dataloader.standin_nyu import ensure_standin_nyu
    from render.standin import write_standin

    os.makedirs(cfg.demo_dir, exist_ok=True)
    mano_path = os.path.join(cfg.demo_dir, "MANO_RIGHT.pkl")
    if not os.path.isfile(mano_path):
        print(f"generating the procedural stand-in MANO model -> {mano_path}")
        write_standin(mano_path)
    tree = os.path.join(cfg.demo_dir, cfg.dataset)
    print(f"stand-in {cfg.dataset.upper()} tree: {tree} (generated on first use)")
    if cfg.dataset == "icvl":
        from dataloader.standin_icvl import ensure_standin_icvl

        ensure_standin_icvl(tree, cfg.demo_train_frames, cfg.demo_test_frames, seed=cfg.seed, mano_path=mano_path)
    elif cfg.dataset == "msra":  # 9 subjects x 17 gestures: demo_train_frames spread over the 8 training subjects
        from dataloader.standin_msra import ensure_standin_msra

        ensure_standin_msra(tree, max(1, cfg.demo_train_frames // (8 * 17)), seed=cfg.seed, mano_path=mano_path)
    else:
        ensure_standin_nyu(tree, cfg.demo_train_frames, cfg.demo_test_frames, seed=cfg.seed, mano_path=mano_path,
                           views=3, view_mode="copy")
    return mano_path, tree


def run_demo(cfg: Config, out: str, device: torch.device) -> str:
    """Pre-train briefly, fine-tune briefly, test both, print the error table; returns the table."""
    mano_path, tree = ensure_demo_assets(cfg)
    base = dataclasses.replace(cfg, demo=False, mano_path=mano_path, data_root=tree, output_dir=out)
    print(f"demo profile: width {cfg.width:g} (the paper's network is width 1), batch {cfg.batch_size}, "
          f"{DEMO_PRETRAIN_ITERS} pre-training + {DEMO_FINETUNE_ITERS} fine-tuning iterations, transfer={cfg.transfer}"
          + (" (training the Consis-CycleGAN, train_stage=transfer, takes hours on a CPU: synthetic crops enter "
             "untranslated; transfer=consis transfer_net_path=<folder with latest_net_G_A.pth> uses one)"
             if cfg.transfer == "none" else ""))
    t0, cpu0 = time.time(), time.process_time()
    pre_iters = cfg.iters_per_epoch or DEMO_PRETRAIN_ITERS // cfg.max_epoch
    # fine-tuning epochs are passes over the stand-in train split: as many as DEMO_FINETUNE_ITERS need
    real_batches = max(cfg.demo_train_frames // cfg.batch_size, 1)
    fine_epochs = cfg.max_epoch if cfg.iters_per_epoch else max(cfg.max_epoch,
                                                                math.ceil(DEMO_FINETUNE_ITERS / real_batches))
    fine_iters = cfg.iters_per_epoch or math.ceil(DEMO_FINETUNE_ITERS / fine_epochs)
    pre = dataclasses.replace(base, phase="train", train_stage="pretrain", run_name="pretrain",
                              iters_per_epoch=max(pre_iters, 1))
    pre_out = os.path.join(out, "pretrain")
    os.makedirs(pre_out, exist_ok=True)
    pre_res = train(pre, pre_out, device)
    fine = dataclasses.replace(base, phase="train", train_stage="finetune", run_name="finetune",
                               finetune_dir=os.path.join(pre_out, "latest.pth"), iters_per_epoch=max(fine_iters, 1),
                               max_epoch=fine_epochs)
    fine_out = os.path.join(out, "finetune")
    os.makedirs(fine_out, exist_ok=True)
    fine_res = train(fine, fine_out, device)
    rows = [("pre-trained (synthetic only)", r) for r in pre_res["results"]]
    note = ""
    if cfg.bn_recalibration:  # control: how much of the fine-tuned gain is BN adaptation alone
        ctrl_out = os.path.join(out, "pretrain_bn")
        os.makedirs(ctrl_out, exist_ok=True)
        ctrl = dataclasses.replace(base, phase="test", load_model=os.path.join(pre_out, "latest.pth"),
                                   run_name="pretrain_bn")
        rows += [("pre-trained + real BN stats", r) for r in test(ctrl, ctrl_out, device)]
        note = ("\n'pre-trained + real BN stats' (a control, no training): the pre-trained weights with BN running "
                "statistics re-estimated on the unlabelled real train crops, as fine-tuning does (bn_recalibration)")
    rows += [("fine-tuned (self-supervised)", r) for r in fine_res["results"]]
    table = score_table(rows) + note
    print("\n" + table)
    print(f"demo finished in {time.time() - t0:.0f} s wall, {time.process_time() - cpu0:.0f} s CPU time, on {device} (width {cfg.width:g}, batch {cfg.batch_size}); run "
          f"folders {pre_out} and {fine_out}: checkpoints, result files, test_scores.json, loss_curves.png, "
          "success_curves_v*.png, TensorBoard events in runs/")
    with open(os.path.join(out, "demo_table.txt"), "w") as f:
        f.write(table + "\n")
    return table


# ------------------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------------------
def _explicit_keys(argv: Sequence[str]) -> set[str]:
    from config import _split_args

    return {k for k, _ in _split_args(argv)}


def apply_demo_profile(cfg: Config, argv: Sequence[str]) -> Config:
    """``demo=true``: the :data:`DEMO_PROFILE` overrides for every key not given on the command line."""
    given = _explicit_keys(argv)
    return dataclasses.replace(cfg, **{k: v for k, v in DEMO_PROFILE.items() if k not in given})


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = load_config(argv)
        if cfg.demo:
            cfg = apply_demo_profile(cfg, argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from util.checkpointing import NonFiniteError
    from util.distributed import cleanup_distributed
    from util.seed import configure_determinism, seed_everything

    try:
        dist = _dist_info(cfg)  # torchrun: joins the process group; otherwise one process, nothing initialised
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seed_everything(cfg.seed)  # the same on every rank (identical initial weights); data streams are per rank
    device = dist.device
    if device.type == "cuda":
        configure_determinism(deterministic=cfg.deterministic, cudnn_benchmark=cfg.cudnn_benchmark)
    out = run_dir(cfg)
    os.makedirs(out, exist_ok=True)
    if dist.is_main:
        cfg.save_json(os.path.join(out, "config.json"))
        print(f"run folder: {out} (resolved config in config.json); device: {device}"
              + (f"; {dist.world_size} processes" if dist.distributed else ""))
    try:
        if cfg.demo:
            run_demo(cfg, out, device)
        elif cfg.train_stage == "transfer":
            from model.transfer_train import train_transfer

            train_transfer(cfg, out, dist)
        elif cfg.phase == "annotate":
            from util.annotate import annotate

            annotate(cfg, out, dist)
        elif cfg.phase == "test":
            test(cfg, out, device, dist)
        else:
            train(cfg, out, device, dist)
    except (ImportError, FileNotFoundError, ValueError) as err:  # missing inputs / bad values: one message
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteError as err:  # the guard stopped the run (checkpoint saved)
        print(f"error: {err}", file=sys.stderr)
        return 3
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
