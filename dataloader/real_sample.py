"""One real training / test sample from a full depth frame: crop, optional augmentation, normalised labels.

Shared by the ICVL and MSRA loaders (:mod:`dataloader.icvl`, :mod:`dataloader.msra`); it builds exactly the
item dict of :class:`dataloader.nyu.NYUDataset` (same keys, shapes and conventions), so the trainer uses every
data set unchanged:

- ``depth`` (1, S, S) float32 in [-1, 1], background +1 (DeepPrior++ crop with the ``premax`` quirk);
- ``joints_xyz_norm`` (J, 3) ``(X - C) / (cube / 2)``; ``joints_uvd_norm`` (J, 3) crop-normalised uvd;
- ``center_xyz`` (3,) mm; ``cube`` (3,) mm; ``M`` (3, 3) full image -> crop pixels; ``index`` frame index.

:class:`SplitAccessors` holds the whole-split accessors of every real loader (NYU, ICVL, MSRA);
:class:`RealFrameDataset` the item access shared by ICVL and MSRA.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dataloader.augment import AugParams, augment_crop, sample_aug_params
from dataloader.crop import crop_depth_mm, normalize_crop
from dataloader.depth_io import DataFileError
from util.geometry import uvd_to_norm_uvd, xyz_to_norm_xyz, xyz_to_uvd


def draw_aug(max_shift: float, max_scale: float, max_rotation: float) -> AugParams:
    """One augmentation draw from torch's generator (seeded per DataLoader worker: reproducible runs)."""
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
    return sample_aug_params(rng, max_shift, max_scale, max_rotation)


def make_sample(depth_mm: np.ndarray, joints_xyz: np.ndarray, center_xyz: np.ndarray, cube: np.ndarray,
                camera: Sequence[float], size: int, crop_sampling: str, index: int,
                aug: AugParams | None = None) -> dict:
    """Crop ``depth_mm`` around ``center_xyz`` and return the item dict of the module docstring.

    Args:
        depth_mm: (H, W) full frame in mm (0 or beyond the cube = no surface).
        joints_xyz: (J, 3) labels in mm, camera frame, y down.
        center_xyz: (3,) crop centre mm; cube: (3,) cube edges mm.
        camera: (fx, fy, cx, cy); size: crop size in pixels; crop_sampling: 'warp' | 'resize'.
        index: frame index reported as ``index``.
        aug: augmentation to apply (None = none).
    """
    center, cube = np.asarray(center_xyz, np.float64).copy(), np.asarray(cube, np.float64).copy()
    joints = np.asarray(joints_xyz, np.float64)
    crop, M = crop_depth_mm(depth_mm, center, cube, camera, size, crop_sampling)
    premax = float(crop.max())  # before augmentation (docs/method.md, premax quirk)
    if aug is not None:
        res = augment_crop(crop, joints, center, cube, M, camera, aug)
        crop, center, cube, M, joints = res.crop_mm, res.center_xyz, res.cube, res.M, res.joints_xyz
    return {**crop_item(crop, premax, center, cube, M, index), **norm_labels(joints, center, cube, M, camera, size)}


def crop_item(crop_mm: np.ndarray, premax: float, center: np.ndarray, cube: np.ndarray, M: np.ndarray,
              index: int) -> dict:
    """The label-free keys of an item: normalised ``depth`` (premax quirk), ``center_xyz``, ``cube``, ``M``,
    ``index``."""
    return {"depth": torch.from_numpy(normalize_crop(crop_mm, premax, center[2], cube[2]))[None],
            "center_xyz": torch.as_tensor(center, dtype=torch.float32),
            "cube": torch.as_tensor(cube, dtype=torch.float32),
            "M": torch.as_tensor(M, dtype=torch.float32),
            "index": int(index)}


def norm_labels(joints: np.ndarray, center: np.ndarray, cube: np.ndarray, M: np.ndarray,
                camera: Sequence[float], size: int, tag: str = "") -> dict:
    """``joints_xyz_norm{tag}`` / ``joints_uvd_norm{tag}`` (J, 3) float32 of (J, 3) joints in mm."""
    xyz_n = xyz_to_norm_xyz(joints, center, cube)
    uvd_n = uvd_to_norm_uvd(xyz_to_uvd(joints, camera), center, cube, M, size)
    return {f"joints_xyz_norm{tag}": torch.as_tensor(xyz_n, dtype=torch.float32),
            f"joints_uvd_norm{tag}": torch.as_tensor(uvd_n, dtype=torch.float32)}


class SplitAccessors:
    """Whole-split accessors (evaluation, annotation, centre checks) of a loader holding per-frame arrays of
    the whole split, ``_joints`` (N, J, 3) labels mm (y down, the loader's frame), ``_centers`` (N, 3) and
    ``_cubes`` (N, 3) mm, and the selected frame indices ``frames``."""

    _joints: np.ndarray
    _centers: np.ndarray
    _cubes: np.ndarray
    frames: np.ndarray

    def joints_mm(self) -> np.ndarray:
        """(len, J, 3) labels in mm, y down, loader frame, for the selected frames."""
        return self._joints[self.frames].copy()

    def centers_mm(self) -> np.ndarray:
        """(len, 3) crop centres in mm, loader frame (before augmentation)."""
        return self._centers[self.frames].copy()

    def cubes_mm(self) -> np.ndarray:
        """(len, 3) crop cubes in mm (before augmentation)."""
        return self._cubes[self.frames].copy()


class RealFrameDataset(SplitAccessors, Dataset):
    """Items of a single-view loader (ICVL, MSRA): subclasses set the arrays of :class:`SplitAccessors`,
    ``size``, ``camera``, ``crop_sampling``, ``augment`` and ``aug_{shift,scale,rotation}``, and define
    ``_path(frame)`` and ``read_depth(i)``."""

    def _path(self, frame: int) -> Path:
        raise NotImplementedError

    def _select_frames(self, n: int, frames: Sequence[int] | None, keep: Callable[[int], bool] | None,
                       missing_error: str, missing_reason: str, where: str) -> np.ndarray:
        """The usable frames of ``frames`` (default all ``n``) that ``keep`` accepts: frames with an 'invalid'
        centre are left out, a missing depth file raises ``FileNotFoundError`` (``missing_error`` + path)
        unless ``skip_bad`` (then left out as ``missing_reason`` + path); one summary warning (``where``:
        the split) and ``skipped`` list what was left out. Call it from ``__init__`` (the warning's
        stack level)."""
        cand = np.arange(n) if frames is None else np.asarray(frames, np.int64)
        if cand.size and (cand.min() < 0 or cand.max() >= n):
            raise ValueError(f"frames must lie in 0..{n - 1} for {self.root} ({self.split})")
        if keep is not None:
            cand = np.array([f for f in cand if keep(int(f))], np.int64)
        reasons: dict[int, str] = {}
        for f in cand[~np.isfinite(self._centers[cand]).all(1)]:
            reasons[int(f)] = "'invalid' centre"
        missing = [int(f) for f in cand if int(f) not in reasons and not self._path(int(f)).is_file()]
        if missing and not self.skip_bad:
            raise FileNotFoundError(f"{missing_error} {self._path(missing[0])} ({len(missing)} of "
                                    f"{cand.size} frames missing; skip_bad=True skips them)")
        for f in missing:
            reasons[f] = f"{missing_reason} {self._path(f)}"
        if reasons:
            self.skipped = sorted(reasons.items())
            warnings.warn(f"{where}: skipping {len(reasons)} of {cand.size} frames; first: "
                          f"frame {self.skipped[0][0]}: {self.skipped[0][1]}", stacklevel=3)
            cand = np.array([f for f in cand if int(f) not in reasons], np.int64)
        if cand.size == 0:
            raise DataFileError(f"{self.root}: no usable {self.split} frames")
        return cand

    def read_depth(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self.frames.size)

    def __getitem__(self, i: int) -> dict:
        return self.load(i)

    def load(self, i: int, aug: AugParams | None = None) -> dict:
        """Item i (see the module docstring); ``aug`` forces an augmentation draw."""
        frame = int(self.frames[i])
        if aug is None and self.augment:
            aug = draw_aug(self.aug_shift, self.aug_scale, self.aug_rotation)
        return make_sample(self.read_depth(i), self._joints[frame], self._centers[frame], self._cubes[frame],
                           self.camera, self.size, self.crop_sampling, frame, aug)

    def file_path(self, i: int) -> Path:
        """Depth file of item i."""
        return self._path(int(self.frames[i]))
