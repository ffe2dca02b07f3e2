"""ICVL Hand Posture dataset (Tang et al. 2014) as crops + labels, with DSF's conventions (``flip_icvl_loader``).

Layout (the official DSF / DeepPrior++ tree; docs/formats.md §5)::

    <root>/train.txt                      one line per image: ``relative/path.png`` + 16 x (u v d)
    <root>/test_seq_1.txt, test_seq_2.txt the two test sequences (702 + 894 lines, CRLF in the public files)
    <root>/center_{train,test}_refined.txt one refined centre per label line (x y z mm, y down) or ``invalid``
    <root>/Depth/<relative/path.png>      320 x 240 single-channel 16-bit PNG, depth in mm

Conventions (docs/DEVIATIONS.md "Datasets ICVL/MSRA"):

- the frames are **mirrored** left-right so that MANO's right hand fits: the image array is flipped and
  labels / centres map u' = 320 - u (``ICVL_MIRROR_WIDTH``; the official value, not 319 - u, which leaves
  the labels one frame pixel right of the flipped image; ``mirror_width=319`` aligns them exactly);
- training keeps only the original, non-rotated sequences (DeepPrior++'s folder-name rule with subsequence
  '0': a first path component longer than 6 characters, or exactly '0'); ``all_sequences=True`` keeps the
  in-plane rotated copies too;
- test = test_seq_1 + test_seq_2 in that order (the community ground-truth order);
- a centre line ``invalid`` drops its frame.

Items are the dicts of :mod:`dataloader.real_sample` (the keys of :class:`dataloader.nyu.NYUDataset`), labels
are the 16 ICVL joints (``util.joints.ICVL_JOINT_NAMES``) in the mirrored frame. :meth:`ICVLDataset.to_file_uvd`
maps predictions back to the original image (the community file frame).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dataloader.crop import CROP_SAMPLINGS
from dataloader.depth_io import DataFileError, load_centers
from dataloader.real_sample import RealFrameDataset
from util.camera import CENTER_DEPTH_RANGES, CUBE_SIZES, ICVL_CAMERA, ICVL_MIRROR_WIDTH
from util.geometry import uvd_to_xyz, xyz_to_uvd
from util.joints import ICVL_JOINT_NAMES

__all__ = ["ICVLDataset", "ICVLLabels", "read_icvl_labels", "write_icvl_labels", "read_icvl_depth",
           "write_icvl_depth", "is_original_sequence", "mirror_uvd", "LABEL_FILES"]

SPLITS = ("train", "test")
NUM_JOINTS = len(ICVL_JOINT_NAMES)
#: label files per split, concatenated in this order
LABEL_FILES = {"train": ("train.txt",), "test": ("test_seq_1.txt", "test_seq_2.txt")}
DEPTH_DIR = "Depth"
IMAGE_SHAPE = (ICVL_CAMERA.height, ICVL_CAMERA.width)


# ----------------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ICVLLabels:
    """Lines of ICVL label files: ``names`` (N,) relative image paths, ``uvd`` (N, 16, 3) (u px, v px, d mm)
    in the original (un-mirrored) image, ``sources`` (N,) the file each line came from."""

    names: tuple[str, ...]
    uvd: np.ndarray
    sources: tuple[str, ...]


def read_icvl_labels(paths: Sequence[str | os.PathLike]) -> ICVLLabels:
    """Read and concatenate ICVL label files (any line ends; blank lines skipped as the official reader).

    Raises:
        FileNotFoundError: a missing file. DataFileError: a line without a name + 48 finite numbers (names
        the file and line).
    """
    names, rows, sources = [], [], []
    for path in paths:
        p = os.fspath(path)
        if not os.path.isfile(p):
            raise FileNotFoundError(f"ICVL label file not found: {p}")
        with open(p, "r", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
        for i, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 1 + 3 * NUM_JOINTS:
                raise DataFileError(f"{p}, line {i}: expected an image name and {3 * NUM_JOINTS} numbers "
                                    f"(16 joints x u v d), got {len(fields)} fields")
            try:
                vals = [float(f) for f in fields[1:]]
            except ValueError:
                raise DataFileError(f"{p}, line {i}: cannot parse the numbers of {line[:60]!r}") from None
            if not np.isfinite(vals).all():
                raise DataFileError(f"{p}, line {i}: non-finite label value")
            names.append(fields[0])
            rows.append(vals)
            sources.append(p)
    uvd = np.asarray(rows, np.float64).reshape(-1, NUM_JOINTS, 3)
    return ICVLLabels(tuple(names), uvd, tuple(sources))


def write_icvl_labels(path: str | os.PathLike, names: Sequence[str], uvd: np.ndarray, crlf: bool = False) -> None:
    """Write an ICVL label file: ``name`` + 16 x (u v d) with 3 decimals per line (the public files' format;
    ``crlf`` for the test-sequence files' line ends). ``uvd`` (N, 16, 3) in the original image frame."""
    arr = np.asarray(uvd, np.float64).reshape(len(names), 3 * NUM_JOINTS)
    end = "\r\n" if crlf else "\n"
    with open(os.fspath(path), "w", encoding="ascii", newline="") as fh:
        for name, row in zip(names, arr):
            fh.write(name + " " + " ".join(f"{v:.3f}" for v in row) + end)


def read_icvl_depth(path: str | os.PathLike, shape: tuple[int, int] = IMAGE_SHAPE) -> np.ndarray:
    """(H, W) float32 depth in mm from a single-channel 16-bit ICVL PNG (0 = no measurement)."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"ICVL depth PNG not found: {p}")
    img = cv2.imread(p, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataFileError(f"{p}: cannot decode PNG (corrupt or not an image)")
    if img.ndim != 2 or img.dtype != np.uint16 or img.shape != tuple(shape):
        raise DataFileError(f"{p}: expected a single-channel 16-bit {shape[1]}x{shape[0]} ICVL depth PNG, got "
                            f"{img.shape} {img.dtype}")
    return img.astype(np.float32)


def write_icvl_depth(path: str | os.PathLike, depth_mm: np.ndarray, compression: int = 1) -> None:
    """Write (H, W) depth in mm as a single-channel 16-bit PNG (rounded, clipped to 0..65535)."""
    d = np.clip(np.round(np.asarray(depth_mm, np.float64)), 0, 65535).astype(np.uint16)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(os.fspath(path), d, [cv2.IMWRITE_PNG_COMPRESSION, compression]):
        raise OSError(f"cannot write {path}")


def is_original_sequence(name: str) -> bool:
    """DeepPrior++ / DSF subsequence rule with subsequences ['0']: the original sequences live in folders with
    names longer than 6 characters (``201403121135/...``), rotated copies in short angle-named folders; a
    short folder is kept only if it is '0'."""
    first = name.replace("\\", "/").split("/")[0]
    return len(first) > 6 or first == "0"


def mirror_uvd(uvd: np.ndarray, width: float = ICVL_MIRROR_WIDTH) -> np.ndarray:
    """u -> width - u on (..., 3) (u, v, d); its own inverse."""
    out = np.array(uvd, np.float64, copy=True)
    out[..., 0] = width - out[..., 0]
    return out


# ----------------------------------------------------------------------------------------------------
# dataset
# ----------------------------------------------------------------------------------------------------
class ICVLDataset(RealFrameDataset):
    """Crops and 16-joint labels of one ICVL split (mirrored, see the module docstring).

    Args:
        root: tree root (label files, centre files, ``Depth/``).
        split: 'train' | 'test'.
        cube: crop cube edge in mm (DSF 200).
        size: crop size in pixels.
        camera: (fx, fy, cx, cy) (ICVL 240.99, 240.96, 160, 120).
        center_type: 'refine' (refined-centre file) | 'joint_mean' (label centroid; uses labels).
        center_file: explicit centre file (default ``<root>/center_{split}_refined.txt``).
        augment: training augmentation (rot / com / sc / none); default on for 'train' only.
        aug_rotation, aug_shift, aug_scale: max rotation (deg), centre shift (mm), relative cube change.
        mirror: flip frames left-right (DSF); False keeps ICVL's own (left-hand) view.
        mirror_width: u' = mirror_width - u for labels and centres (official 320).
        all_sequences: also keep the in-plane rotated training copies.
        frames: optional subset of 0-based label-line indices.
        skip_bad: leave out frames with missing PNGs (with one summary warning) instead of stopping.
        center_depth_range: (min, max) mm a centre's z may take (a centre outside it, or off the camera's
            view, is an error naming its line).
        crop_sampling: 'warp' | 'resize' (see :mod:`dataloader.crop`).
    """

    def __init__(self, root, split: str, *, cube: float = CUBE_SIZES["icvl"], size: int = 128,
                 camera: Sequence[float] = ICVL_CAMERA.as_tuple(), center_type: str = "refine",
                 center_file=None, augment: bool | None = None, aug_rotation: float = 180.0,
                 aug_shift: float = 10.0, aug_scale: float = 0.2, mirror: bool = True,
                 mirror_width: float = ICVL_MIRROR_WIDTH, all_sequences: bool = False,
                 frames: Sequence[int] | None = None, skip_bad: bool = False, crop_sampling: str = "resize",
                 center_depth_range: tuple[float, float] = CENTER_DEPTH_RANGES["icvl"]) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if center_type not in ("refine", "joint_mean"):
            raise ValueError(f"center_type must be 'refine' or 'joint_mean', got {center_type!r}")
        if crop_sampling not in CROP_SAMPLINGS:
            raise ValueError(f"crop_sampling must be one of {CROP_SAMPLINGS}, got {crop_sampling!r}")
        self.root, self.split = Path(root), split
        self.size, self.camera, self.crop_sampling = int(size), tuple(float(c) for c in camera), crop_sampling
        self.augment = (split == "train") if augment is None else bool(augment)
        self.aug_rotation, self.aug_shift, self.aug_scale = aug_rotation, aug_shift, aug_scale
        self.mirror, self.mirror_width = bool(mirror), float(mirror_width)
        self.skip_bad = bool(skip_bad)
        self.skipped: list[tuple[int, str]] = []

        labels = read_icvl_labels([self.root / f for f in LABEL_FILES[split]])
        n = len(labels.names)
        if n == 0:
            raise DataFileError(f"{self.root}: the {split} label files hold no frames")
        self._names = labels.names
        self._sources = tuple(Path(src).name for src in labels.sources)
        self._uvd_file = labels.uvd  # (N, 16, 3) original image
        uvd = mirror_uvd(labels.uvd, self.mirror_width) if self.mirror else labels.uvd
        self._joints = uvd_to_xyz(uvd, self.camera)  # (N, 16, 3) mm, y down, loader frame
        if center_type == "joint_mean":
            centers = self._joints.mean(1)
        else:
            cpath = Path(center_file) if center_file else self.root / f"center_{split}_refined.txt"
            # y down, original image; NaN rows = 'invalid'
            raw, _ = load_centers(cpath, num_frames=n, z_range=center_depth_range)
            if self.mirror:  # project, mirror u, back-project (the official order of operations)
                ok = np.isfinite(raw).all(1)
                raw[ok] = uvd_to_xyz(mirror_uvd(xyz_to_uvd(raw[ok], self.camera), self.mirror_width),
                                     self.camera)
            centers = raw
        self._centers = centers
        self._cubes = np.full((n, 3), float(cube), np.float64)
        keep = None if all_sequences else (lambda f: is_original_sequence(self._names[f]))
        self.frames = self._select_frames(n, frames, keep, "depth PNG not found:", "missing PNG",
                                          f"{self.root} ({self.split})")

    def _path(self, frame: int) -> Path:
        return self.root / DEPTH_DIR / self._names[frame]

    def read_depth(self, i: int) -> np.ndarray:
        """(240, 320) depth mm of item i in the loader frame (mirrored when ``mirror``)."""
        depth = read_icvl_depth(self._path(int(self.frames[i])))
        return np.ascontiguousarray(depth[:, ::-1]) if self.mirror else depth

    # --- whole-split accessors (evaluation, annotation) ----------------------------------------------
    @property
    def names(self) -> list[str]:
        """Relative image paths of the selected frames (the label files' first column)."""
        return [self._names[f] for f in self.frames]

    def label_files(self) -> list[str]:
        """Label file (``train.txt``, ``test_seq_1.txt``, ...) each selected frame was read from."""
        return [self._sources[f] for f in self.frames]

    def joints_uvd_file(self) -> np.ndarray:
        """(len, 16, 3) labels as stored in the label files (original image)."""
        return self._uvd_file[self.frames].copy()

    def to_file_uvd(self, uvd: np.ndarray) -> np.ndarray:
        """Loader-frame (u, v, d) (..., 3) -> the original image (the community / label-file frame)."""
        return mirror_uvd(uvd, self.mirror_width) if self.mirror else np.array(uvd, np.float64, copy=True)
