"""MSRA hand gesture dataset (Sun et al. 2015) as crops + labels, with DSF's conventions (``msra_loader``).

Layout (docs/formats.md §5)::

    <root>/P<k>/<gesture>/joint.txt           frame count, then 21 x (x y z) mm per line, y up, z negative
    <root>/P<k>/<gesture>/<NNNNNN>_depth.bin  6 int32 (width, height, left, top, right, bottom), then float32
                                              depth (mm) of the bounding box, row-major; 0 = background
    <root>/center_{train,test}_<k>_refined.txt refined centres of the fold with test subject k (x y z mm,
                                              y up, z positive; one line per frame of the split)

Subjects P0..P8, gestures ``util.joints.MSRA_GESTURES``; frames are enumerated subject by subject, gesture by
gesture, file by file (the community test-list order). Leave-one-subject-out: split 'test' is subject
``test_subject``, 'train' the other eight. Labels are converted to the internal frame by negating z and y
(DSF: z negated, then y flipped); centres by negating y. Each subject has its own cube
(``util.camera.MSRA_SUBJECT_CUBES``). Unlike the official loader no MANO fits are needed and no side files
are written.

Items are the dicts of :mod:`dataloader.real_sample` (the keys of :class:`dataloader.nyu.NYUDataset`); labels
are the 21 MSRA joints (``util.joints.MSRA_JOINT_NAMES``).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dataloader.crop import CROP_SAMPLINGS
from dataloader.depth_io import DataFileError, load_centers
from dataloader.nyu import resolve_center_frame
from dataloader.real_sample import RealFrameDataset
from util.camera import CENTER_DEPTH_RANGES, MSRA_CAMERA, MSRA_SUBJECT_CUBES
from util.geometry import xyz_to_uvd
from util.joints import MSRA_GESTURES, MSRA_JOINT_NAMES, MSRA_SUBJECTS

__all__ = ["MSRADataset", "read_msra_bin", "write_msra_bin", "read_joint_txt", "write_joint_txt",
           "msra_file_to_internal", "internal_to_msra_file", "frame_name", "center_file_name"]

SPLITS = ("train", "test")
NUM_JOINTS = len(MSRA_JOINT_NAMES)
IMAGE_SHAPE = (MSRA_CAMERA.height, MSRA_CAMERA.width)
_HEADER = 6  # int32 values before the depth


# ----------------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------------
def frame_name(index: int) -> str:
    """File name of frame ``index`` (0-based) in a gesture folder: ``000012_depth.bin``."""
    return f"{index:06d}_depth.bin"


def center_file_name(split: str, test_subject: int) -> str:
    """Refined-centre file of a fold, e.g. ``center_train_3_refined.txt``."""
    return f"center_{split}_{test_subject}_refined.txt"


def read_msra_bin(path: str | os.PathLike, shape: tuple[int, int] = IMAGE_SHAPE) -> np.ndarray:
    """(H, W) float32 depth mm of an MSRA ``.bin`` frame (zeros outside its bounding box).

    Raises FileNotFoundError (missing) or DataFileError (header / size / values), naming the file.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"MSRA depth file not found: {p}")
    raw = np.fromfile(p, dtype=np.uint8)
    if raw.size < 4 * _HEADER:
        raise DataFileError(f"{p}: {raw.size} bytes; expected a 24-byte header (width height left top right "
                            "bottom) and float32 depth")
    w, h, left, top, right, bottom = (int(v) for v in raw[:4 * _HEADER].view("<i4"))
    if (h, w) != tuple(shape) or not (0 <= left < right <= w and 0 <= top < bottom <= h):
        raise DataFileError(f"{p}: header width={w} height={h} box=({left}, {top}, {right}, {bottom}); expected "
                            f"a {shape[1]}x{shape[0]} frame and 0 <= left < right <= width, "
                            "0 <= top < bottom <= height")
    n = (right - left) * (bottom - top)
    if raw.size != 4 * (_HEADER + n):
        raise DataFileError(f"{p}: {raw.size} bytes; the header's {right - left}x{bottom - top} box needs "
                            f"{4 * (_HEADER + n)}")
    box = raw[4 * _HEADER:].view("<f4").reshape(bottom - top, right - left)
    if not np.isfinite(box).all() or (box < 0).any():
        raise DataFileError(f"{p}: depth values must be finite and >= 0 mm")
    depth = np.zeros((h, w), np.float32)
    depth[top:bottom, left:right] = box
    return depth


def write_msra_bin(path: str | os.PathLike, depth_mm: np.ndarray) -> tuple[int, int, int, int]:
    """Write (H, W) depth mm (0 = background) as an MSRA ``.bin`` with the tight bounding box of the non-zero
    pixels (a 1x1 box at the origin for an empty frame). Returns (left, top, right, bottom)."""
    d = np.asarray(depth_mm, np.float32)
    h, w = d.shape
    rows, cols = np.flatnonzero(d.any(1)), np.flatnonzero(d.any(0))
    if rows.size:
        top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    else:
        top, bottom, left, right = 0, 1, 0, 1
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(os.fspath(path), "wb") as fh:
        fh.write(np.array([w, h, left, top, right, bottom], "<i4").tobytes())
        fh.write(np.ascontiguousarray(d[top:bottom, left:right], "<f4").tobytes())
    return left, top, right, bottom


def read_joint_txt(path: str | os.PathLike) -> np.ndarray:
    """(N, 21, 3) joints of a gesture folder's ``joint.txt`` as stored (mm, y up, z negative)."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"MSRA joint file not found: {p}")
    with open(p, "r", encoding="utf-8", errors="replace") as fh:
        lines = [ln for ln in fh.read().splitlines() if ln.strip()]
    try:
        count = int(lines[0].split()[0]) if lines else -1
    except ValueError:
        count = -1
    if count < 0:
        raise DataFileError(f"{p}, line 1: expected the frame count")
    if len(lines) - 1 != count:
        raise DataFileError(f"{p}: header says {count} frames, found {len(lines) - 1} joint lines")
    out = np.zeros((count, NUM_JOINTS, 3))
    for i, line in enumerate(lines[1:]):
        try:
            vals = np.array([float(t) for t in line.split()])
        except ValueError:
            raise DataFileError(f"{p}, line {i + 2}: cannot parse {line[:60]!r}") from None
        if vals.size != 3 * NUM_JOINTS or not np.isfinite(vals).all():
            raise DataFileError(f"{p}, line {i + 2}: expected {3 * NUM_JOINTS} finite numbers (21 joints x y z), "
                                f"got {vals.size}")
        out[i] = vals.reshape(NUM_JOINTS, 3)
    return out


def write_joint_txt(path: str | os.PathLike, joints_file: np.ndarray) -> None:
    """Write (N, 21, 3) joints in the file frame (y up, z negative) as ``joint.txt``."""
    arr = np.asarray(joints_file, np.float64).reshape(-1, 3 * NUM_JOINTS)
    with open(os.fspath(path), "w", encoding="ascii", newline="\n") as fh:
        fh.write(f"{len(arr)}\n")
        for row in arr:
            fh.write(" ".join(f"{v:.6f}" for v in row) + "\n")


def msra_file_to_internal(xyz: np.ndarray) -> np.ndarray:
    """MSRA ``joint.txt`` frame (y up, z negative) -> internal (y down, z forward): negate y and z."""
    out = np.array(xyz, np.float64, copy=True)
    out[..., 1:] *= -1.0
    return out


#: the conversion is its own inverse
internal_to_msra_file = msra_file_to_internal


# ----------------------------------------------------------------------------------------------------
# dataset
# ----------------------------------------------------------------------------------------------------
class MSRADataset(RealFrameDataset):
    """Crops and 21-joint labels of one leave-one-subject-out split of an MSRA tree.

    Args:
        root: tree root (``P0`` .. ``P8``, centre files).
        split: 'train' (all subjects but ``test_subject``) | 'test' (``test_subject`` only).
        test_subject: 0..8.
        cubes: cube edge (mm) per subject (DSF per-subject cubes).
        size: crop size in pixels; camera: (fx, fy, cx, cy) (241.42, 241.42, 160, 120).
        center_type: 'refine' (the fold's refined-centre file) | 'joint_mean' (label centroid; uses labels).
        center_file: explicit centre file (default ``<root>/center_{split}_{test_subject}_refined.txt``).
        center_frame: 'auto' | 'y_up' | 'y_down' frame of the centre file (DSF: y up; 'auto' checks it against
            the labels, see :func:`dataloader.nyu.resolve_center_frame`).
        augment: training augmentation; default on for 'train' only.
        aug_rotation, aug_shift, aug_scale: max rotation (deg), centre shift (mm), relative cube change.
        gestures: gesture folders read per subject (all 17 by default; a missing one is an error).
        subjects: subjects present in the tree (default all 9; a smaller tree for tests / demos).
        frames: optional subset of 0-based frame indices of the split.
        skip_bad: leave out frames with missing ``.bin`` files (one summary warning) instead of stopping.
        center_depth_range: (min, max) mm a centre's z may take (a centre outside it, or off the camera's
            view, is an error naming its line).
        crop_sampling: 'warp' | 'resize'.
    """

    def __init__(self, root, split: str, test_subject: int = 0, *, cubes: Sequence[float] = MSRA_SUBJECT_CUBES,
                 size: int = 128, camera: Sequence[float] = MSRA_CAMERA.as_tuple(), center_type: str = "refine",
                 center_file=None, center_frame: str = "auto", augment: bool | None = None,
                 aug_rotation: float = 180.0, aug_shift: float = 10.0, aug_scale: float = 0.2,
                 gestures: Sequence[str] = MSRA_GESTURES, subjects: Sequence[int] | None = None,
                 frames: Sequence[int] | None = None, skip_bad: bool = False, crop_sampling: str = "resize",
                 center_depth_range: tuple[float, float] = CENTER_DEPTH_RANGES["msra"]) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not 0 <= int(test_subject) < MSRA_SUBJECTS:
            raise ValueError(f"test_subject must be 0..{MSRA_SUBJECTS - 1}, got {test_subject!r}")
        if center_type not in ("refine", "joint_mean"):
            raise ValueError(f"center_type must be 'refine' or 'joint_mean', got {center_type!r}")
        if crop_sampling not in CROP_SAMPLINGS:
            raise ValueError(f"crop_sampling must be one of {CROP_SAMPLINGS}, got {crop_sampling!r}")
        if len(cubes) != MSRA_SUBJECTS:
            raise ValueError(f"cubes must hold one edge per subject ({MSRA_SUBJECTS}), got {len(cubes)}")
        self.root, self.split, self.test_subject = Path(root), split, int(test_subject)
        self.size, self.camera, self.crop_sampling = int(size), tuple(float(c) for c in camera), crop_sampling
        self.augment = (split == "train") if augment is None else bool(augment)
        self.aug_rotation, self.aug_shift, self.aug_scale = aug_rotation, aug_shift, aug_scale
        self.skip_bad = bool(skip_bad)
        self.skipped: list[tuple[int, str]] = []
        present = range(MSRA_SUBJECTS) if subjects is None else sorted(int(s) for s in subjects)
        self.subjects = ([self.test_subject] if split == "test"
                         else [s for s in present if s != self.test_subject])

        keys, joints_file = [], []
        for s in self.subjects:
            for g in gestures:
                j = read_joint_txt(self.root / f"P{s}" / g / "joint.txt")
                joints_file.append(j)
                keys += [(s, g, i) for i in range(len(j))]
        if not keys:
            raise DataFileError(f"{self.root}: no {split} frames for test subject {self.test_subject}")
        self.keys: list[tuple[int, str, int]] = keys  # (subject, gesture, index in the folder) per frame
        self._joints_file = np.concatenate(joints_file)  # (N, 21, 3) as stored
        self._joints = msra_file_to_internal(self._joints_file)
        n = len(keys)
        self.center_frame: str | None = None
        if center_type == "joint_mean":
            centers = self._joints.mean(1)
        else:
            cpath = Path(center_file) if center_file else self.root / center_file_name(split, self.test_subject)
            raw, _ = load_centers(cpath, num_frames=n, z_range=center_depth_range)
            self.center_frame = resolve_center_frame(raw, self._joints, "y_up", center_frame, str(cpath))
            centers = raw.copy()
            if self.center_frame == "y_up":
                centers[:, 1] *= -1.0
        self._centers = centers
        self._subject_of = np.array([k[0] for k in keys], np.int64)
        self._cubes = np.repeat(np.asarray(cubes, np.float64)[self._subject_of][:, None], 3, 1)
        self.frames = self._select_frames(n, frames, None, "MSRA depth file not found:", "missing",
                                          f"{self.root} ({self.split}, test subject {self.test_subject})")

    def _path(self, frame: int) -> Path:
        s, g, i = self.keys[frame]
        return self.root / f"P{s}" / g / frame_name(i)

    def read_depth(self, i: int) -> np.ndarray:
        """(240, 320) depth mm of item i (0 = background)."""
        return read_msra_bin(self._path(int(self.frames[i])))

    # --- whole-split accessors (evaluation, annotation) ----------------------------------------------
    def joints_uvd(self) -> np.ndarray:
        """(len, 21, 3) labels as community (u, v, d) (what ``msra_test_groundtruth_label.txt`` holds)."""
        return xyz_to_uvd(self._joints[self.frames], self.camera)

    def subjects_of_frames(self) -> np.ndarray:
        """(len,) subject id of each selected frame."""
        return self._subject_of[self.frames].copy()

    def frame_keys(self) -> list[tuple[int, str, int]]:
        """(subject, gesture, index in folder) of each selected frame."""
        return [self.keys[f] for f in self.frames]
