"""NYU Hand Pose dataset: the real tree (or the stand-in of :mod:`dataloader.standin_nyu`) as crops + labels.

Layout (docs/formats.md §3.1)::

    <root>/{train,test}/joint_data.mat           labels, 3 views x N x 36 x 3, xyz y-up
    <root>/{train,test}/{depth,synthdepth}_{view}_{frame:07d}.png
    <root>/{train,test}/center_{split}_{view-1}_refined.txt
                                                 DSF's per-view refined centres (y down, docs/formats.md §3.6)
    <root>/{train,test}/center_{split}_refined.txt
                                                 V2V / AWR single file, Kinect 1 only (y up); also looked up
                                                 in <root>/ itself

Everything leaving this module is in the internal frame (mm, y down). Items (dicts, default-collate friendly):

- ``depth`` (1, S, S) float32 in [-1, 1], background +1 (DeepPrior++ crop, ``premax`` quirk);
- ``joints_xyz_norm`` (14, 3) ``(X - C) / (cube / 2)``; ``joints_uvd_norm`` (14, 3) crop-normalised uvd;
- ``center_xyz`` (3,) mm; ``cube`` (3,) mm; ``M`` (3, 3) full image -> crop pixels; ``index`` frame index
  (0-based);
- with ``joints21=True`` also ``joints_xyz_norm21`` / ``joints_uvd_norm21`` (21, 3) in MANO order;
- with ``point_labels`` also ``points_xyz_norm`` / ``points_uvd_norm`` (P, 3) (e.g. MANO-fit joints and
  vertices, :class:`dataloader.nyu_fits.FitPointLabels`), augmented like the joints.

Use :func:`norm_xyz_to_mm` / :func:`norm_uvd_to_image_uvd` to go back to mm / full-image (u, v, d).
"""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from dataloader.augment import AugParams, augment_crop
from dataloader.crop import CROP_SAMPLINGS, crop_depth, crop_depth_mm
from dataloader.depth_io import (DataFileError, JointData, center_problems, check_depth_png, decode_depth,
                                 depth_png_name, describe_invalid_joint, invalid_joints, list_dir, load_centers,
                                 load_joint_data)
from dataloader.real_sample import SplitAccessors, crop_item, draw_aug, norm_labels
from util.camera import CENTER_DEPTH_RANGES, CUBE_SIZES, NYU_CAMERA
from util.geometry import flip_y, norm_uvd_to_uvd, norm_xyz_to_xyz
from util.joints import NYU36_TO_MANO21, NYU_EVAL_14, NYU_TEST_FRAMES, NYU_TEST_SPLIT

__all__ = [
    "NYUDataset", "decode_depth", "crop_depth", "norm_xyz_to_mm", "norm_uvd_to_image_uvd", "yup_to_ydown",
    "center_frame_offsets", "resolve_center_frame", "find_center_file",
]

SPLITS = ("train", "test")
CENTER_TYPES = ("refine", "joint_mean")
CENTER_FRAMES = ("auto", "y_down", "y_up")
DEPTH_KINDS = ("depth", "synthdepth")
_PER_VIEW_CENTER = re.compile(r"center_(train|test)_(\d)_refined\.txt$")
#: a candidate frame must beat the file-name default by this factor (mean offset) to override it
_FRAME_OVERRIDE_RATIO = 0.5


# ----------------------------------------------------------------------------------------------------
# inverse mappings (used by the evaluator's prediction files) and the file-frame converter: aliases of the
# util.geometry functions under the names this module's items are documented with
# ----------------------------------------------------------------------------------------------------
#: norm-xyz (..., J, 3) -> camera-frame mm, y down (``X_n S/2 + C``); numpy or torch
norm_xyz_to_mm = norm_xyz_to_xyz
#: norm-uvd (..., J, 3) -> full-image (u px, v px, d mm) through ``M^-1`` (the community file format)
norm_uvd_to_image_uvd = norm_uvd_to_uvd
#: NYU file frame (y up) -> internal frame (y down): negate y
yup_to_ydown = flip_y


# ----------------------------------------------------------------------------------------------------
# centre files: where, and which frame
# ----------------------------------------------------------------------------------------------------
def find_center_file(root: Path, split: str, view: int) -> tuple[Path, str]:
    """Locate the refined-centre file of (split, view) and its presumed frame ('y_down' or 'y_up').

    DSF's per-view file ``center_{split}_{view-1}_refined.txt`` is presumed y-down (its loader uses it
    unflipped); the V2V/AWR single file ``center_{split}_refined.txt`` (Kinect 1 only) is y-up.
    """
    split_dir = root / split
    candidates = [(split_dir / f"center_{split}_{view - 1}_refined.txt", "y_down")]
    if view == 1:
        candidates += [(split_dir / f"center_{split}_refined.txt", "y_up"), (root / f"center_{split}_refined.txt",
                                                                          "y_up")]
    tried = [p for p, _ in candidates]
    for p, frame in candidates:
        if p.is_file():
            return p, frame
        if p.exists():  # never fall back past a broken first choice to another file (another frame convention)
            raise DataFileError(f"{p}: is {'a directory' if p.is_dir() else 'not a regular file'}; expected "
                                f"the refined-centre text file of split {split!r}, view {view}")
    raise FileNotFoundError(f"no refined-centre file for split {split!r}, view {view}; tried "
                            + ", ".join(str(p) for p in tried)
                            + " (or pass center_file=..., or center_type='joint_mean' which uses the labels)")


def center_frame_offsets(centers_raw: np.ndarray, joints_ydown: np.ndarray) -> dict[str, float]:
    """Mean distance (mm) between centres and the label centroid if the centres were y-down or y-up.

    Args:
        centers_raw: (N, 3) centres as stored in the file (NaN rows ignored).
        joints_ydown: (N, J, 3) labels in the internal y-down frame.
    Returns:
        {'y_down': mm, 'y_up': mm}. The right frame gives the refined-centre offset (~20 mm on NYU: 21 mm for
        the V2V file read y-up, 134 mm read y-down, docs/formats.md §3.4).
    """
    ok = np.isfinite(centers_raw).all(1) & np.isfinite(joints_ydown).all((1, 2))
    if not ok.any():
        return {"y_down": float("nan"), "y_up": float("nan")}
    centroid = joints_ydown[ok].mean(1)
    c = centers_raw[ok]
    return {"y_down": float(np.linalg.norm(c - centroid, axis=1).mean()),
            "y_up": float(np.linalg.norm(flip_y(c) - centroid, axis=1).mean())}


def resolve_center_frame(centers_raw: np.ndarray, joints_ydown: np.ndarray | None, presumed: str,
                         requested: str = "auto", source: str = "centre file") -> str:
    """Decide the frame of a centre file ('y_down' / 'y_up'), validating against the labels when they exist.

    ``requested='auto'`` takes the file-name default unless the labels clearly say otherwise (the other
    frame's mean offset below half the default's), with a warning; an explicit request is kept but warned
    about when the labels contradict it.
    """
    if requested not in CENTER_FRAMES:
        raise ValueError(f"center_frame must be one of {CENTER_FRAMES}, got {requested!r}")
    frame = presumed if requested == "auto" else requested
    if joints_ydown is None:
        return frame
    off = center_frame_offsets(centers_raw, joints_ydown)
    other = "y_up" if frame == "y_down" else "y_down"
    if off[other] < _FRAME_OVERRIDE_RATIO * off[frame]:
        msg = (f"{source}: centres are {off[frame]:.1f} mm from the label centroid read {frame} but "
               f"{off[other]:.1f} mm read {other}")
        if requested == "auto":
            warnings.warn(msg + f"; using {other}", stacklevel=3)
            return other
        warnings.warn(msg + f"; keeping the requested {frame}", stacklevel=3)
    return frame


# ----------------------------------------------------------------------------------------------------
# dataset
# ----------------------------------------------------------------------------------------------------
class NYUDataset(SplitAccessors, Dataset):
    """Crops and labels of one split and Kinect view of an NYU-format tree.

    Args:
        root: tree root (holding ``train/`` and ``test/``).
        split: 'train' | 'test'.
        view: Kinect view 1..3 (1 = front, the benchmark view).
        cube: crop cube edge in mm (NYU 250).
        size: crop size in pixels.
        camera: (fx, fy, cx, cy); NYU Kinect by default.
        center_type: 'refine' (refined-centre file) | 'joint_mean' (label centroid; uses labels, not for
            self-supervised training).
        center_file: explicit centre file (otherwise looked up, see :func:`find_center_file`).
        center_frame: 'auto' | 'y_down' | 'y_up' frame of the centre file (see :func:`resolve_center_frame`).
        augment: training augmentation (one of rot / com / sc / none); default on for 'train' only.
        aug_rotation, aug_shift, aug_scale: max rotation (deg), centre shift (mm), relative cube change.
        test_cube_split, test_cube_scale, standard_test_frames: test frames >= split use cube * scale,
            only when the test split has exactly ``standard_test_frames`` frames (the real NYU test set).
        depth_kind: 'depth' (sensor) | 'synthdepth' (Tompson's rendered fits).
        joints21: also return the 21 MANO-order joints (``*_norm21``).
        point_labels: optional callable ``frame (0-based) -> (P, 3)`` mm (y down): extra labelled points
            returned as ``points_xyz_norm`` / ``points_uvd_norm``, transformed by the augmentation like the
            joints (the benchmark's supervised upper bound, docs/DEVIATIONS.md ``## Benchmark``).
        frames: optional subset of 0-based frame indices.
        skip_bad: leave out bad frames instead of stopping: labels with a non-finite value or depth <= 0 in
            the used view, missing depth PNGs, and PNGs failing :func:`check_depth_png` (header of an
            ``image_shape`` 8-bit RGB PNG, IEND trailer; checked for every frame at construction). ``frames``
            is then final: one summary warning gives the count, ``num_skipped`` / ``skipped`` the details.
            A frame that still fails to decode later raises (never replaced by another frame, which would
            misalign predictions and ground truth). Without it, the first bad label or missing PNG stops
            construction and a corrupt PNG stops ``__getitem__``, each with an error naming the file.
        image_shape: (height, width) of the depth PNGs: their header is checked before decoding (with
            ``skip_bad`` for every frame at construction).
        center_depth_range: (min, max) mm a crop centre's z may take; centres outside it or off the camera's
            view (:func:`dataloader.depth_io.center_problems`) stop construction naming the file and line, or
            are skipped and counted with ``skip_bad``.
        crop_sampling: ``resize`` (default: the official ``cv2.resize`` nearest, bit-exact with the official
            loader, about half a frame pixel up-left of the rendered crops) or ``warp`` (crop pixel = frame pixel
            nearest to ``M^-1 (j, i)``: lines up with rendered crops; docs/DEVIATIONS.md "Data and crops").

    Frames whose centre line reads ``invalid`` (no hand) are always left out; they are counted in the same
    summary warning and in ``num_skipped``.
    """

    def __init__(self, root, split: str, view: int = 1, *, cube: float = CUBE_SIZES["nyu"], size: int = 128,
                 camera: Sequence[float] = NYU_CAMERA.as_tuple(), center_type: str = "refine",
                 center_file=None, center_frame: str = "auto", augment: bool | None = None,
                 aug_rotation: float = 180.0, aug_shift: float = 10.0, aug_scale: float = 0.2,
                 test_cube_split: int = NYU_TEST_SPLIT, test_cube_scale: float = 5.0 / 6.0,
                 standard_test_frames: int = NYU_TEST_FRAMES, depth_kind: str = "depth",
                 joints21: bool = False, frames: Sequence[int] | None = None, skip_bad: bool = False,
                 image_shape: tuple[int, int] = (480, 640),
                 center_depth_range: tuple[float, float] = CENTER_DEPTH_RANGES["nyu"], crop_sampling: str = "resize",
                 point_labels=None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if center_type not in CENTER_TYPES:
            raise ValueError(f"center_type must be one of {CENTER_TYPES}, got {center_type!r}")
        if depth_kind not in DEPTH_KINDS:
            raise ValueError(f"depth_kind must be one of {DEPTH_KINDS}, got {depth_kind!r}")
        self.root, self.split, self.view = Path(root), split, int(view)
        self.dir = self.root / split
        self.size, self.camera = int(size), tuple(float(c) for c in camera)
        if crop_sampling not in CROP_SAMPLINGS:
            raise ValueError(f"crop_sampling must be one of {CROP_SAMPLINGS}, got {crop_sampling!r}")
        self.crop_sampling = crop_sampling
        self.depth_kind, self.joints21, self.skip_bad = depth_kind, joints21, skip_bad
        self.point_labels = point_labels
        self.augment = (split == "train") if augment is None else bool(augment)
        self.aug_rotation, self.aug_shift, self.aug_scale = aug_rotation, aug_shift, aug_scale
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.skipped: list[tuple[int, str]] = []  # (frame, reason) of the frames left out at construction

        labels = load_joint_data(self.dir / "joint_data.mat")
        if not 1 <= self.view <= labels.num_views:
            raise ValueError(f"view must be 1..{labels.num_views} for {self.dir / 'joint_data.mat'}, "
                             f"got {view}")
        n = labels.num_frames
        joints36 = yup_to_ydown(labels.joint_xyz[self.view - 1])  # (N, 36, 3) mm, y down
        self._bad_joints = invalid_joints(labels, self.view)  # (N, 36)
        joints36[self._bad_joints.any(1)] = np.nan  # keeps bad frames out of the centre-frame statistics
        self._joints = joints36[:, list(NYU_EVAL_14)].astype(np.float64)  # (N, 14, 3)
        self._joints21 = joints36[:, list(NYU36_TO_MANO21)].astype(np.float64) if joints21 else None

        self.center_frame: str | None = None
        if center_type == "joint_mean":
            centers = self._joints.mean(1)
        else:
            if center_file is None:
                cpath, presumed = find_center_file(self.root, split, self.view)
            else:
                cpath = Path(center_file)
                presumed = "y_down" if _PER_VIEW_CENTER.search(cpath.name) else "y_up"
            raw, _ = load_centers(cpath, num_frames=n, frames_source=str(self.dir / "joint_data.mat"))
            self.center_frame = resolve_center_frame(raw, self._joints, presumed, center_frame, str(cpath))
            centers = raw if self.center_frame == "y_down" else yup_to_ydown(raw)
        self._centers = centers
        self.center_depth_range = (float(center_depth_range[0]), float(center_depth_range[1]))
        self._center_problems = center_problems(centers, self.center_depth_range)
        if self._center_problems and not skip_bad:
            row = min(self._center_problems)
            source = (f"{cpath}, line {row + 1}" if center_type == "refine"
                      else f"{self.dir / 'joint_data.mat'}: frame index {row} (joint_mean centre)")
            raise DataFileError(f"{source}: {self._center_problems[row]} ({len(self._center_problems)} such "
                                "frames; center_depth_range sets the range, skip_bad=True skips them)")

        self._cubes = np.full((n, 3), float(cube), np.float64)
        if split == "test" and n == standard_test_frames:
            self._cubes[test_cube_split:] *= test_cube_scale
        self.frames = self._select_frames(n, frames, labels)

    def _select_frames(self, n: int, frames: Sequence[int] | None, labels: JointData) -> np.ndarray:
        """Usable 0-based frames: 'invalid' centres dropped; bad labels / PNGs skipped or raised."""
        cand = np.arange(n) if frames is None else np.asarray(frames, np.int64)
        if cand.size and (cand.min() < 0 or cand.max() >= n):
            raise ValueError(f"frames must lie in 0..{n - 1} for {self.dir}")
        mat = self.dir / "joint_data.mat"
        names = list_dir(self.dir)
        missing = [int(f) for f in cand if self._png_name(f) not in names]
        if missing and not self.skip_bad:
            raise FileNotFoundError(f"depth PNG not found: {self.dir / self._png_name(missing[0])} "
                                    f"({len(missing)} of {cand.size} frames missing; skip_bad=True skips "
                                    "them)")
        bad_rows = self._bad_joints[cand].any(1)

        def label_problem(f: int) -> str:  # the first bad joint of frame f
            joint = int(np.flatnonzero(self._bad_joints[f])[0])
            return f"{mat}: invalid label at {describe_invalid_joint(labels, self.view, f, joint)}"

        if bad_rows.any() and not self.skip_bad:
            raise DataFileError(f"{label_problem(int(cand[bad_rows][0]))}; {int(bad_rows.sum())} frames "
                                "affected (skip_bad=True skips them)")
        reasons: dict[int, tuple[str, str]] = {}  # frame -> (kind, detail)
        for f in cand[bad_rows]:  # first: a bad label also gives a NaN centre with center_type='joint_mean'
            reasons[int(f)] = ("bad label", label_problem(int(f)))
        for f in cand[~np.isfinite(self._centers[cand]).all(1)]:
            reasons.setdefault(int(f), ("'invalid' centre", f"frame index {f} has no hand"))
        for f in cand:
            if int(f) in self._center_problems:
                reasons.setdefault(int(f), ("implausible centre",
                                            f"frame index {f}: {self._center_problems[int(f)]}"))
        for f in missing:
            reasons.setdefault(f, ("missing PNG", f"not found: {self.dir / self._png_name(f)}"))
        if self.skip_bad:  # validate every remaining PNG now, so that the frame list is final
            for f in cand:
                if int(f) not in reasons:
                    try:
                        check_depth_png(self.dir / self._png_name(f), self.image_shape)
                    except (DataFileError, FileNotFoundError) as e:
                        reasons[int(f)] = ("bad PNG", str(e))
        if reasons:
            self.skipped = sorted((f, f"{kind}: {detail}") for f, (kind, detail) in reasons.items())
            counts: dict[str, int] = {}
            for kind, _ in reasons.values():
                counts[kind] = counts.get(kind, 0) + 1
            first = self.skipped[0][1]
            warnings.warn(f"{self.dir} (view {self.view}): skipping {len(reasons)} of {cand.size} frames ("
                          + ", ".join(f"{c} {k}" for k, c in counts.items()) + f"); first: {first}",
                          stacklevel=3)
            cand = np.array([f for f in cand if int(f) not in reasons], np.int64)
        if cand.size == 0:
            raise DataFileError(f"{self.dir}: no usable frames for view {self.view}")
        return cand

    def _png_name(self, frame: int) -> str:
        return depth_png_name(self.depth_kind, self.view, int(frame))

    def __len__(self) -> int:
        return int(self.frames.size)

    @property
    def num_skipped(self) -> int:
        """Frames left out at construction ('invalid' centres, and with skip_bad bad labels / PNGs)."""
        return len(self.skipped)

    def _read(self, i: int) -> tuple[int, np.ndarray]:
        """Frame index and depth (mm) of item i; a file that fails here raises, naming it (no substitute)."""
        frame = int(self.frames[i])
        try:
            return frame, decode_depth(self.dir / self._png_name(frame), self.image_shape)
        except (DataFileError, FileNotFoundError) as e:
            if not self.skip_bad:
                raise
            # substituting another frame would shift every later prediction against the ground truth
            raise type(e)(f"{e} (frame index {frame}: it passed the skip_bad check at construction; frames "
                          "are never substituted at read time)") from e

    def __getitem__(self, i: int) -> dict:
        return self.load(i)

    def load(self, i: int, aug: AugParams | None = None) -> dict:
        """Item i; ``aug`` forces an augmentation draw (tests), otherwise one is drawn when augmenting.

        Augmentation draws come from torch's generator (seeded per DataLoader worker), so runs are
        reproducible under ``torch.manual_seed``.
        """
        frame, depth = self._read(i)
        center, cube = self._centers[frame].copy(), self._cubes[frame].copy()
        joints = self._joints[frame]
        joints21 = self._joints21[frame] if self._joints21 is not None else None
        points = None if self.point_labels is None else np.asarray(self.point_labels(frame), np.float64)
        crop, M = crop_depth_mm(depth, center, cube, self.camera, self.size, self.crop_sampling)
        premax = float(crop.max())  # before augmentation (docs/method.md §3 quirk)
        if aug is None and self.augment:
            aug = draw_aug(self.aug_shift, self.aug_scale, self.aug_rotation)
        if aug is not None:
            parts = [joints] + [p for p in (joints21, points) if p is not None]
            res = augment_crop(crop, np.concatenate(parts), center, cube, M, self.camera, aug)
            crop, center, cube, M = res.crop_mm, res.center_xyz, res.cube, res.M
            moved = np.split(res.joints_xyz, np.cumsum([len(p) for p in parts])[:-1])
            joints = moved.pop(0)
            joints21 = None if joints21 is None else moved.pop(0)
            points = None if points is None else moved.pop(0)
        item = crop_item(crop, premax, center, cube, M, frame)
        item.update(self._labels(joints, center, cube, M, ""))
        if joints21 is not None:
            item.update(self._labels(joints21, center, cube, M, "21"))
        if points is not None:
            labels = self._labels(points, center, cube, M, "")
            item.update(points_xyz_norm=labels["joints_xyz_norm"], points_uvd_norm=labels["joints_uvd_norm"])
        return item

    def _labels(self, joints: np.ndarray, center: np.ndarray, cube: np.ndarray, M: np.ndarray,
                tag: str) -> dict:
        return norm_labels(joints, center, cube, M, self.camera, self.size, tag)

    # --- whole-split accessors (joints_mm / centers_mm / cubes_mm: SplitAccessors) ----------------------
    def file_path(self, i: int) -> Path:
        """Depth PNG of item i."""
        return self.dir / self._png_name(int(self.frames[i]))


if __name__ == "__main__":  # quick look: python -m dataloader.nyu ROOT [split] [view]
    import sys

    ds = NYUDataset(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "test",
                    int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    it = ds[0]
    print(len(ds), {k: (tuple(v.shape) if hasattr(v, "shape") else v) for k, v in it.items()})
    print("centre frame:", ds.center_frame, os.fspath(ds.file_path(0)))
