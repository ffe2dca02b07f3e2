"""Builders: the one place where a :class:`config.Config` becomes models, data sets, loaders and samplers.

Library code never reads the Config; the trainer (``train_render.py``), the transfer trainer and the annotation
tool call these builders and hand plain objects on. Every builder takes the Config first.

- :func:`build_mano_layer` (MANO file -> ``ManoLayer`` on a device)
- :func:`build_real_dataset` / :func:`build_real_loader` (the real data set of ``cfg.dataset``; ``cfg.skip_bad`` is
  passed to every loader; DistributedSampler when ``dist.distributed``)
- :func:`build_synthetic` (pose source + batched synthetic renderer with the stage's view augmentation, per-rank
  seeds; ``.next_batch()`` returns one rendered batch)
- :func:`build_transfer_generator` (frozen Consis-CycleGAN G_A, or None for ``transfer=none``)
- :func:`build_pose_model` (pose network + prediction renderer; the renderer is passed to ``forward`` explicitly)
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

#: offsets added to ``cfg.seed`` so that the random streams of the stages and ranks never coincide
_STAGE_SEED = {"pretrain": 101, "finetune": 202, "transfer": 303}
_RANK_SEED = 10007
SYNTH_STAGES = tuple(_STAGE_SEED)
#: label keys of real items (dropped by ``build_real_dataset(..., labels=False)``)
LABEL_KEYS = ("joints_xyz_norm", "joints_uvd_norm", "joints_xyz_norm21", "joints_uvd_norm21")


def _rank(dist: Any) -> int:
    return int(getattr(dist, "rank", 0)) if dist is not None else 0


def _world(dist: Any) -> int:
    return int(getattr(dist, "world_size", 1)) if dist is not None else 1


# ----------------------------------------------------------------------------------------------------
# MANO
# ----------------------------------------------------------------------------------------------------
def build_mano_layer(cfg, device: torch.device | str = "cpu"):
    """The MANO layer of ``cfg.mano_path`` (pickle or npz, read by the restricted reader) on ``device``.

    Raises:
        FileNotFoundError: no MANO file at ``cfg.mano_path`` (the message says where to get it / the demo).
    """
    from render.mano_io import load_mano
    from render.mano_layer import ManoLayer

    if not os.path.isfile(cfg.mano_path):
        raise FileNotFoundError(f"MANO model not found: {cfg.mano_path} (download MANO_RIGHT.pkl from "
                                "https://mano.is.tue.mpg.de and pass mano_path=..., or run demo=true for the "
                                "procedural stand-in)")
    return ManoLayer(load_mano(cfg.mano_path)).to(device)


# ----------------------------------------------------------------------------------------------------
# real data
# ----------------------------------------------------------------------------------------------------
class _WithoutLabels(Dataset):
    """A real data set whose items lack the joint labels (only crop, centre, cube, M, index remain)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        return {k: v for k, v in self.base[i].items() if k not in LABEL_KEYS}

    def __getattr__(self, name: str):  # frames, joints_mm(), ... of the wrapped data set
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)


def build_real_dataset(cfg, split: str, *, labels: bool = True, view: int | None = None,
                       augment: bool | None = None, point_labels=None) -> Dataset:
    """The real data set of ``cfg.dataset`` for ``split`` ('train' | 'test').

    Args:
        cfg: the Config (data_root, view, cube, camera, centre type, augmentation, skip_bad, crop_sampling).
        split: 'train' | 'test'.
        labels: False drops the joint labels from every item (self-supervised consumers that must not see them).
        view: Kinect view (default ``cfg.view``).
        augment: training augmentation (default: ``cfg.augment`` for 'train', off for 'test').
        point_labels: NYU only: per-frame labelled points (``NYUDataset(point_labels=...)``, e.g. the MANO-fit
            labels of the benchmark's supervised upper bound, :class:`dataloader.nyu_fits.FitPointLabels`).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if cfg.dataset == "nyu":
        from dataloader.nyu import NYUDataset

        ds = NYUDataset(cfg.data_root, split, view=cfg.view if view is None else view, cube=cfg.cube,
                        size=cfg.input_size, camera=cfg.camera, center_type=cfg.center_type,
                        augment=(cfg.augment and split == "train") if augment is None else augment,
                        aug_rotation=cfg.aug_rotation, aug_shift=cfg.aug_shift, aug_scale=cfg.aug_scale,
                        test_cube_split=cfg.test_cube_split, test_cube_scale=cfg.test_cube_scale,
                        skip_bad=cfg.skip_bad, image_shape=cfg.image_size, crop_sampling=cfg.crop_sampling,
                        center_depth_range=cfg.center_depth_limits, point_labels=point_labels)
    elif point_labels is not None:
        raise NotImplementedError(f"point_labels (MANO-fit labels) are implemented for NYU only, not {cfg.dataset!r}")
    elif cfg.dataset == "icvl":
        from dataloader.icvl import ICVLDataset

        ds = ICVLDataset(cfg.data_root, split, cube=cfg.cube, size=cfg.input_size, camera=cfg.camera,
                         center_type=cfg.center_type,
                         augment=(cfg.augment and split == "train") if augment is None else augment,
                         aug_rotation=cfg.aug_rotation, aug_shift=cfg.aug_shift, aug_scale=cfg.aug_scale,
                         mirror_width=cfg.icvl_mirror_width, skip_bad=cfg.skip_bad,
                         crop_sampling=cfg.crop_sampling, center_depth_range=cfg.center_depth_limits)
    elif cfg.dataset == "msra":
        from dataloader.msra import MSRADataset
        from util.camera import MSRA_SUBJECT_CUBES

        cubes = (cfg.cube_size,) * len(MSRA_SUBJECT_CUBES) if cfg.cube_size > 0 else MSRA_SUBJECT_CUBES
        ds = MSRADataset(cfg.data_root, split, cfg.test_subject, cubes=cubes, size=cfg.input_size,
                         camera=cfg.camera, center_type=cfg.center_type,
                         augment=(cfg.augment and split == "train") if augment is None else augment,
                         aug_rotation=cfg.aug_rotation, aug_shift=cfg.aug_shift, aug_scale=cfg.aug_scale,
                         gestures=_msra_gestures(cfg.data_root), skip_bad=cfg.skip_bad,
                         crop_sampling=cfg.crop_sampling, center_depth_range=cfg.center_depth_limits)
    else:
        raise NotImplementedError(f"dataset={cfg.dataset!r}: no loader")
    return ds if labels else _WithoutLabels(ds)


def _msra_gestures(root: str) -> tuple[str, ...]:
    """All 17 MSRA gestures, or those of a stand-in tree that records fewer (``standin_msra.json``)."""
    import json

    from util.joints import MSRA_GESTURES

    info = os.path.join(root, "standin_msra.json")
    if os.path.isfile(info):
        try:
            with open(info) as fh:
                return tuple(json.load(fh)["gestures"])
        except (ValueError, KeyError, TypeError):
            pass
    return MSRA_GESTURES


def build_real_loader(cfg, split: str, *, train: bool, dist: Any = None, labels: bool = True,
                      view: int | None = None, batch_size: int | None = None,
                      pin_memory: bool = False, point_labels=None) -> DataLoader:
    """DataLoader over :func:`build_real_dataset`.

    ``train=True``: shuffled, augmentation per ``cfg.augment``, last partial batch kept (official: the last NYU
    batch has 21 samples). The order comes from a :class:`util.distributed.ResumableSampler` (a DistributedSampler,
    one replica without ``dist``): a function of (``cfg.seed``, epoch), sharded over the ranks, able to start
    inside an epoch; each item is augmented under its own seed (:class:`util.seed.SeededItems`), so the data do
    not depend on the worker count or the resume point. The trainer calls ``sampler.set_epoch`` and
    ``dataset.set_epoch`` each epoch. ``train=False``: fixed order, no augmentation (DistributedSampler when
    ``dist.distributed``). ``pin_memory``: page-locked batches for fast copies to a GPU.
    """
    ds = build_real_dataset(cfg, split, labels=labels, view=view, augment=None if train else False,
                            point_labels=point_labels)
    sampler = None
    if train:
        from util.distributed import DistInfo, ResumableSampler
        from util.seed import SeededItems

        ds = SeededItems(ds, cfg.seed)
        sampler = ResumableSampler(ds, dist if dist is not None else DistInfo(), shuffle=True, seed=cfg.seed)
    elif dist is not None and getattr(dist, "distributed", False):
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(ds, num_replicas=_world(dist), rank=_rank(dist), shuffle=False,
                                     seed=cfg.seed, drop_last=False)
    gen = torch.Generator().manual_seed(cfg.seed + _RANK_SEED * _rank(dist))
    return DataLoader(ds, batch_size=batch_size or cfg.batch_size, shuffle=False,
                      sampler=sampler, num_workers=cfg.num_workers, drop_last=False, generator=gen,
                      persistent_workers=False, pin_memory=pin_memory)


# ----------------------------------------------------------------------------------------------------
# synthetic data
# ----------------------------------------------------------------------------------------------------
def view_aug_for(cfg, stage: str) -> str:
    """The view augmentation of a synthetic stage: ``pretrain_view_aug`` (default none) for pre-training,
    ``finetune_view_aug`` (default octant) for fine-tuning and for the transfer-net training (its domain A follows
    the fine-tuning rendering, docs/method.md §12)."""
    if stage not in SYNTH_STAGES:
        raise ValueError(f"stage must be one of {SYNTH_STAGES}, got {stage!r}")
    return cfg.pretrain_view_aug if stage == "pretrain" else cfg.finetune_view_aug


class SyntheticSource:
    """Endless synthetic batches: a reshuffling parameter sampler + the batched renderer, one stage's settings.

    ``next_batch() -> dict`` of tensors on ``device`` (keys of :func:`dataloader.synthetic.render_synthetic_batch`:
    ``depth`` (B, 1, S, S) occlusion-masked clean render, ``joints_uvd_norm21`` / ``joints_xyz_norm21`` (B, 21, 3),
    ``verts_xyz_norm`` (B, 779, 3), ``center_xyz`` / ``cube`` (B, 3) mm, ``M`` (B, 3, 3), ...).
    ``generator`` (CPU torch.Generator) drives every rendering draw; :meth:`state_dict` (generator state and
    position in the pose order) resumes the stream exactly.
    """

    def __init__(self, params, renderer, batch_size: int, seed: int, device: torch.device, view_aug: str) -> None:
        self.params, self.renderer, self.batch_size = params, renderer, int(batch_size)
        self.device, self.view_aug = torch.device(device), view_aug
        self.source = params.source
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._restart(0)

    def _restart(self, drawn: int) -> None:
        """Pose order from its beginning, advanced past ``drawn`` indices (index draws only, nothing rendered)."""
        from dataloader.synthetic import InfiniteShuffleSampler

        self._order: Iterator[int] = iter(InfiniteShuffleSampler(len(self.params), self.seed))
        for _ in range(drawn):
            next(self._order)
        self.drawn = drawn

    def next_batch(self) -> dict:
        idx = torch.tensor([next(self._order) for _ in range(self.batch_size)])
        self.drawn += self.batch_size
        theta = self.params.params[idx].to(self.device)
        return self.renderer(theta, self.generator)

    def state_dict(self) -> dict:
        """{"generator": uint8 tensor, "drawn": pose indices used so far} (plain values, checkpointable)."""
        return {"generator": self.generator.get_state(), "drawn": self.drawn}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._restart(int(state["drawn"]))


def _synthetic_settings(cfg, view_aug: str) -> dict:
    """Keyword settings of :func:`dataloader.synthetic.render_synthetic_batch` from the Config."""
    return dict(size=cfg.input_size, depth_range=cfg.synth_depth_range, shape_noise=cfg.synth_shape_noise,
                center_jitter=cfg.synth_center_jitter, cube_jitter=cfg.synth_cube_jitter, view_aug=view_aug,
                occlusion=cfg.occlusion, occlusion_joints=tuple(int(v) for v in cfg.occlusion_joints),
                occlusion_offset=cfg.occlusion_offset, occlusion_radius=cfg.occlusion_radius)


def build_synthetic(cfg, device: torch.device | str, stage: str, *, mano_layer=None, dist: Any = None,
                    batch_size: int | None = None) -> SyntheticSource:
    """The synthetic source of ``stage`` ('pretrain' | 'finetune' | 'transfer').

    Pose source: ``cfg.hands_para_dir``, else the official HANDS files found next to the data root, else the
    built-in source from the MANO file's captured poses (documented substitute, DEVIATIONS.md). Seeds:
    ``cfg.seed`` + a per-stage and per-rank offset (each rank draws different hands).
    """
    import dataloader.synthetic as synthetic

    view_aug = view_aug_for(cfg, stage)
    layer = mano_layer if mano_layer is not None else build_mano_layer(cfg, device)
    seed = cfg.seed + _STAGE_SEED[stage] + _RANK_SEED * _rank(dist)
    hands_coeffs = _hands_coeffs(cfg)
    params = synthetic.SyntheticParams.from_source(
        cfg.hands_para_dir, hands_coeffs, n_builtin=cfg.synth_builtin_poses, seed=seed,
        pose_noise=cfg.synth_pose_noise, cube=cfg.cube,
        search_roots=(os.path.dirname(os.path.abspath(cfg.data_root)), cfg.data_root),
        rotation=cfg.synth_builtin_rotation, cone_deg=cfg.synth_builtin_cone_deg)
    settings = synthetic.SyntheticSettings(cube=cfg.cube, **_synthetic_settings(cfg, view_aug))
    renderer = synthetic.SyntheticRenderer(layer, cfg.camera, settings)
    return SyntheticSource(params, renderer, batch_size or cfg.batch_size, seed, torch.device(device), view_aug)


def _hands_coeffs(cfg):
    """The MANO file's captured PCA poses (the built-in pose source), None when the file has none."""
    from render.mano_io import load_mano

    return getattr(load_mano(cfg.mano_path), "hands_coeffs", None)


# ----------------------------------------------------------------------------------------------------
# transfer generator and pose network
# ----------------------------------------------------------------------------------------------------
def transfer_generator_path(cfg) -> str:
    """``cfg.transfer_net_path`` as a file: a folder means its ``latest_net_G_A.pth``."""
    path = cfg.transfer_net_path
    return os.path.join(path, "latest_net_G_A.pth") if os.path.isdir(path) else path


def build_transfer_generator(cfg, device: torch.device | str = "cpu") -> nn.Module | None:
    """The frozen Consis-CycleGAN G_A (eval mode, no gradients) or None when ``cfg.transfer == 'none'``.

    Raises:
        ValueError: ``transfer=consis`` without ``transfer_net_path`` (a random generator is never used,
            DEVIATIONS.md, Trainer).
        FileNotFoundError / model.checkpoint.CheckpointError: a missing or unusable generator file.
    """
    if cfg.transfer == "none":
        return None
    if not cfg.transfer_net_path:
        raise ValueError("transfer=consis needs transfer_net_path=<folder with latest_net_G_A.pth> (train one with "
                         "train_stage=transfer, or download the released Consis-CycleGAN), or transfer=none to "
                         "feed synthetic crops untranslated")
    from model.transfer_net import load_transfer_generator

    return load_transfer_generator(transfer_generator_path(cfg), map_location="cpu").to(device)


def build_pose_model(cfg, device: torch.device | str, mano_layer=None):
    """(pose network, prediction renderer) on ``device``: official init, ``cfg.stage_num`` stages, ``cfg.width``.

    The renderer (MANO layer + rasterizer with the data set's camera) is returned separately: pass it to
    ``net(..., renderer=renderer)``; it is not part of the network's state dict.
    """
    from model.pose_net import build_pose_net
    from render.hand_renderer import HandRenderer

    layer = mano_layer if mano_layer is not None else build_mano_layer(cfg, device)
    renderer = HandRenderer(layer, cfg.camera, cfg.input_size, cfg.renderer).to(device)
    net = build_pose_net(cfg.stage_num, cfg.joint_num, width=cfg.width, offset_kernel=cfg.offset_kernel)
    if cfg.mano_scale_bias_init:
        set_mano_scale_bias(net, cfg.mano_scale_bias_init)
    return net.to(device), renderer


@torch.no_grad()
def set_mano_scale_bias(net, value: float) -> None:
    """Set the bias of the scale output s (index 58 of the 62-d vector) of every MANO head to ``value``.

    The official initialisation leaves s ~ 0 (a collapsed hand at the crop centre, docs/method.md §7); from there
    AdamW needs on the order of a thousand steps before the rendered hand covers the observed one. Short CPU runs
    (the demo) start from s = ``value`` instead (docs/DEVIATIONS.md "Network"). Checkpoint weights loaded later
    overwrite it.
    """
    from render.mano_params import LAYOUT_AXIS_ANGLE

    idx = LAYOUT_AXIS_ANGLE.scale.start
    heads = [m for name, m in net.named_modules() if name.startswith("mano_regress") and isinstance(m, torch.nn.Linear)]
    if not heads:
        raise ValueError("network has no MANO regression head (mano_regress*)")
    for lin in heads:
        lin.bias[idx] = value


__all__ = ["build_mano_layer", "build_real_dataset", "build_real_loader", "build_synthetic", "SyntheticSource",
           "build_transfer_generator", "build_pose_model", "set_mano_scale_bias", "view_aug_for", "transfer_generator_path", "LABEL_KEYS"]
