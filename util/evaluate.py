"""NYU hand-pose evaluation with the community protocol (docs/formats.md §4), as functions and as a CLI.

Protocol (awesome-hand-pose-estimation ``evaluation/src``): predictions and ground truth are text files with
one frame per line, 14 joints x (u px, v px, d mm) = 42 whitespace-separated numbers (joint order
``NYU_EVAL_14_NAMES``, Kinect view 1, 8,252 test frames). Both are lifted to xyz with the NYU intrinsics
(588.03, 587.07, 320, 240; the community passes fy = -587.07, i.e. y up, which changes no distance), the error
of a joint is its Euclidean distance in mm, and the success rate at D is the fraction of frames whose
**maximum** joint error is <= D (D = 0..80 mm).

The published result files (checked on the six in ``../shared/nyu/published_results``) are all 8,252 lines x
42 numbers; they differ only in number formatting: most print 3 decimals, MURAUER prints 4 (hence the larger
file; ``n72757`` in its name is the number of real training frames its model used, not a frame count),
CrossInfoNet prints up to 4 decimals with trailing zeros dropped (``196.112``, ``250.579``). Any whitespace,
CRLF line ends and trailing blank lines are accepted; blank lines inside the file, other column counts, text,
NaN and inf are not.

ICVL and MSRA (docs/formats.md §5) use the same file format with 16 / 21 joints and their own intrinsics
(:data:`PROTOCOLS`, :func:`evaluate_dataset`); MSRA adds per-subject means and yaw/pitch error curves.

CLI::

    python -m util.evaluate PRED [PRED ...] [--names N ...] [--gt GT] [--split K] [--out DIR]
    python -m util.evaluate --dataset icvl|msra PRED [PRED ...] [--gt GT] [--list L] [--angles A] [--out DIR]
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from util.camera import ICVL_CAMERA, MSRA_CAMERA, NYU_CAMERA, Intrinsics
from util.geometry import uvd_to_xyz
from util.joints import (ICVL_DSF_DEPTH_BIAS_MM, ICVL_DSF_JOINTS, ICVL_JOINT_NAMES, ICVL_TEST_SEQ_FRAMES,
                         MSRA_DSF_JOINTS, MSRA_JOINT_NAMES, MSRA_SUBJECT_FRAMES, MSRA_SUBJECTS, NYU_DSF_11,
                         NYU_EVAL_14_NAMES, NYU_TEST_FRAMES, NYU_TEST_SPLIT)

NUM_JOINTS = len(NYU_EVAL_14_NAMES)
VALUES_PER_LINE = 3 * NUM_JOINTS
#: thresholds D (mm) of the success curve, D = 0, 1, ..., 80
SUCCESS_THRESHOLDS_MM = np.arange(81, dtype=np.float64)
#: default ground truth: the read-only reference folder beside the repository
DEFAULT_GT = Path(__file__).resolve().parents[1].parent / "shared" / "nyu" / "test_groundtruth_uvd.txt"
_COORDS = ("u", "v", "d")
_EXPECTED = f"{VALUES_PER_LINE} numbers per line ({NUM_JOINTS} joints x u v d)"


class PredictionFormatError(ValueError):
    """A prediction / ground-truth text file that does not follow the community format.

    ``str(err)`` names the file, the 1-based line (when one is at fault) and what was expected.
    """

    def __init__(self, path: str | Path, line: int | None, what: str):
        self.path, self.line, self.what = str(path), line, what
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {what}")


# --- reading / writing the community format ---------------------------------------------------------------

def load_predictions(path: str | Path, num_frames: int | None = None,
                     joint_names: Sequence[str] = NYU_EVAL_14_NAMES) -> np.ndarray:
    """Read a community-format file: one frame per line, J x (u, v, d).

    Args:
        path: text file, ``N`` lines of 3 J whitespace-separated numbers (u, v in px, d in mm).
        num_frames: if given, the number of lines the file must have.
        joint_names: the J joints of a line (NYU 14 by default; ``PROTOCOLS[name].joint_names`` for others).
    Returns:
        (N, J, 3) float64 array of (u px, v px, d mm).
    Raises:
        PredictionFormatError: wrong line count, wrong column count, unparsable text, NaN/inf, or not text.
        FileNotFoundError: missing file.
    """
    path = Path(path)
    nj = len(joint_names)
    expected = _expected(nj)
    if path.is_dir():
        raise PredictionFormatError(path, None, f"a directory; expected a text file with {expected}")
    raw = path.read_bytes()
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise PredictionFormatError(path, line, f"non-ASCII byte {raw[err.start]:#04x}; expected {expected}")
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # a trailing newline / trailing blank lines are harmless
        lines.pop()
    if not lines:
        raise PredictionFormatError(path, None, f"empty file; expected one line per frame with {expected}")
    # Fast path: numpy's C parser (~15 ms per 8252-line file). It skips blank lines and reports errors in its
    # own words, so any disagreement falls back to the line-by-line diagnosis below.
    try:
        arr = np.loadtxt(lines, dtype=np.float64, comments=None, ndmin=2)
    except ValueError as err:
        _diagnose(path, lines, joint_names)
        raise PredictionFormatError(path, None, f"unreadable ({err}); expected {expected}") from err
    if arr.shape[0] != len(lines):
        _diagnose(path, lines, joint_names)
    if arr.shape[1] != 3 * nj:
        raise PredictionFormatError(path, 1, f"expected {expected}, found {arr.shape[1]}")
    bad = np.argwhere(~np.isfinite(arr))
    if len(bad):
        row, col = (int(i) for i in bad[0])
        raise _non_finite(path, row + 1, col, lines[row].split()[col], joint_names)
    if num_frames is not None and arr.shape[0] != num_frames:
        raise PredictionFormatError(
            path, None, f"{arr.shape[0]} lines (frames), expected {num_frames} (one line per test frame)")
    uvd = arr.reshape(-1, nj, 3)
    bad = _implausible(uvd)
    if bad.any():
        row, joint = (int(i) for i in np.argwhere(bad)[0])
        raise PredictionFormatError(
            path, row + 1, f"joint {joint + 1} ({joint_names[joint]}) has (u, v, d) = "
                           f"({', '.join(f'{v:.6g}' for v in uvd[row, joint])}); {_PLAUSIBLE} "
                           f"({int(bad.sum())} joints in {int(bad.any(1).sum())} lines fail)")
    return uvd


#: bounds of a usable (u, v, d): a depth <= 0 has no 3D point and a huge value (1e308) overflows the lifting to
#: xyz, so either is a broken file, not a poor prediction. Generous: real NYU / ICVL labels have d in 190-1170 mm.
MAX_DEPTH_MM = 1e5
MAX_ABS_PIXEL = 1e6
_PLAUSIBLE = f"expected 0 < d <= {MAX_DEPTH_MM:g} mm and |u|, |v| <= {MAX_ABS_PIXEL:g} px"


def _implausible(uvd: np.ndarray) -> np.ndarray:
    """(N, J) bool: joints of finite (N, J, 3) uvd outside the usable bounds above."""
    d = uvd[..., 2]
    return (d <= 0) | (d > MAX_DEPTH_MM) | (np.abs(uvd[..., :2]) > MAX_ABS_PIXEL).any(-1)


def _check_plausible(name: str, uvd: np.ndarray) -> None:
    bad = _implausible(uvd)
    if bad.any():
        frame, joint = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}: frame {frame}, joint {joint} has (u, v, d) = "
                         f"({', '.join(f'{v:.6g}' for v in uvd[frame, joint])}); {_PLAUSIBLE} "
                         f"({int(bad.sum())} joints in {int(bad.any(1).sum())} frames fail)")


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)


def _expected(num_joints: int) -> str:
    return f"{3 * num_joints} numbers per line ({num_joints} joints x u v d)"


def _non_finite(path: Path, line: int, col: int, token: str,
                joint_names: Sequence[str] = NYU_EVAL_14_NAMES) -> PredictionFormatError:
    joint, coord = joint_names[col // 3], _COORDS[col % 3]
    return PredictionFormatError(
        path, line, f"column {col + 1} ({joint} {coord}) is {token!r}; expected finite numbers")


def _diagnose(path: Path, lines: Sequence[str], joint_names: Sequence[str] = NYU_EVAL_14_NAMES) -> None:
    """Slow path: raise the error of the first offending line (does nothing if every line is fine)."""
    expected = _expected(len(joint_names))
    for i, line in enumerate(lines, start=1):
        tokens = line.split()
        if len(tokens) != 3 * len(joint_names):
            raise PredictionFormatError(path, i, f"expected {expected}, found {len(tokens)}")
        for col, tok in enumerate(tokens):
            if not _NUMBER.fullmatch(tok):
                raise PredictionFormatError(
                    path, i, f"column {col + 1}: cannot parse {tok!r} as a number; expected {expected}")
            if not np.isfinite(float(tok)):
                raise _non_finite(path, i, col, tok, joint_names)


def save_predictions(path: str | Path, uvd, decimals: int = 4, num_joints: int = NUM_JOINTS) -> None:
    """Write (N, J, 3) (u px, v px, d mm) in the community format (``%.4f``, single spaces, '\\n' ends).

    J = ``num_joints`` (NYU 14; ICVL 16, MSRA 21).

    4 decimals (as MURAUER's file) change a lifted joint by < 1e-4 mm, and 3-decimal community values
    round-trip exactly. Accepts numpy arrays or torch tensors; creates the parent folder.
    """
    if hasattr(uvd, "detach"):
        uvd = uvd.detach().cpu().numpy()
    arr = np.asarray(uvd, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (num_joints, 3):
        raise ValueError(f"save_predictions: expected uvd of shape (N, {num_joints}, 3), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"save_predictions: uvd has {int((~np.isfinite(arr)).sum())} non-finite values")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = " ".join([f"%.{decimals}f"] * (3 * num_joints))
    rows = arr.reshape(len(arr), 3 * num_joints)
    path.write_text("".join(fmt % tuple(r) + "\n" for r in rows.tolist()), encoding="ascii")


# --- metrics ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NYUScores:
    """Community NYU scores of one method, all errors in mm.

    mean_14: mean over frames and the 14 joints; mean_11: over DSF's 11 (the first 11, without palm/wrist);
    per_joint (14,): per-joint means in ``NYU_EVAL_14_NAMES`` order; seq1 / seq2: 14-joint means over frames
    [0, split) and [split, N) (None without a split); success (81,): fraction of frames whose max joint error
    <= D for D = 0..80 mm; auc: trapezoid area under ``success`` over 0..80 mm divided by 80 (in [0, 1]).
    """

    mean_14: float
    mean_11: float
    per_joint: np.ndarray
    seq1: float | None
    seq2: float | None
    success: np.ndarray
    auc: float
    num_frames: int
    split: int | None

    def to_dict(self) -> dict:
        """JSON-ready dict (arrays as lists)."""
        d = asdict(self)
        d["per_joint"] = self.per_joint.tolist()
        d["success"] = self.success.tolist()
        return d


def joint_errors_mm(pred_uvd: np.ndarray, gt_uvd: np.ndarray, camera: Intrinsics = NYU_CAMERA) -> np.ndarray:
    """Per-frame, per-joint 3D error (N, J) mm of (N, J, 3) uvd arrays, both lifted with ``camera``."""
    cam = camera.as_tuple()
    return np.linalg.norm(uvd_to_xyz(pred_uvd, cam) - uvd_to_xyz(gt_uvd, cam), axis=-1)


def success_curve(errors_mm: np.ndarray, thresholds_mm: np.ndarray = SUCCESS_THRESHOLDS_MM) -> np.ndarray:
    """Fraction of frames whose maximum joint error is <= D, for each D of ``thresholds_mm`` (T,)."""
    worst = np.sort(errors_mm.max(axis=1))  # (N,)
    return np.searchsorted(worst, thresholds_mm, side="right") / len(worst)


def success_auc(success: np.ndarray) -> float:
    """Trapezoid area under a :func:`success_curve` over ``SUCCESS_THRESHOLDS_MM`` divided by its last threshold."""
    return float(np.trapezoid(success, SUCCESS_THRESHOLDS_MM) / SUCCESS_THRESHOLDS_MM[-1])


def _as_uvd(name: str, a) -> np.ndarray:
    """(N, 14, 3) float64 NYU (u, v, d), validated (see :func:`_as_uvd_j`)."""
    return _as_uvd_j(name, a, NUM_JOINTS)


def evaluate_nyu(pred_uvd, gt_uvd, split: int | None = None, camera: Intrinsics = NYU_CAMERA) -> NYUScores:
    """Score (N, 14, 3) predicted uvd against (N, 14, 3) ground-truth uvd (u, v px; d mm).

    Args:
        split: first frame of the second test sequence; defaults to ``NYU_TEST_SPLIT`` when N is the full
            test set (``NYU_TEST_FRAMES``); otherwise no sequence split is reported unless given
            (0 < split < N).
        camera: intrinsics used to lift both to xyz.
    """
    pred, gt = _as_uvd("pred_uvd", pred_uvd), _as_uvd("gt_uvd", gt_uvd)
    n = len(gt)
    if len(pred) != n:
        raise ValueError(f"prediction has {len(pred)} frames but the ground truth has {n}")
    if split is None and n == NYU_TEST_FRAMES:
        split = NYU_TEST_SPLIT
    if split is not None and not 0 < split < n:
        raise ValueError(f"split must lie in (0, {n}) for {n} frames, got {split}")
    err = joint_errors_mm(pred, gt, camera)  # (N, 14)
    success = success_curve(err)
    return NYUScores(
        mean_14=float(err.mean()),
        mean_11=float(err[:, list(NYU_DSF_11)].mean()),
        per_joint=err.mean(axis=0),
        seq1=None if split is None else float(err[:split].mean()),
        seq2=None if split is None else float(err[split:].mean()),
        success=success,
        auc=success_auc(success),
        num_frames=n,
        split=split,
    )


# --- ICVL / MSRA (and NYU) through one interface ------------------------------------------------------------

_SHARED = Path(__file__).resolve().parents[1].parent / "shared"
#: MSRA viewpoint bins (deg) of the community curves: yaw -40..40, pitch -10..90, 2-degree steps
MSRA_YAW_BINS = np.arange(-40, 41, 2, dtype=np.float64)
MSRA_PITCH_BINS = np.arange(-10, 91, 2, dtype=np.float64)
DATASETS = ("nyu", "icvl", "msra")


@dataclass(frozen=True)
class DatasetProtocol:
    """Community evaluation protocol of one data set (files of (u px, v px, d mm) per joint, lifted with
    ``camera``; the joint order of ``joint_names``).

    dsf_joints: the joints DSF's own test compares (its NYU slicing applied to every data set; see
    docs/DEVIATIONS.md "Datasets ICVL/MSRA"); seq_frames: sizes of the two test sequences when the full
    test set (``test_frames``) is scored, else None; default_gt: public ground truth beside the repo, if any.
    """

    name: str
    camera: Intrinsics
    joint_names: tuple[str, ...]
    dsf_joints: tuple[int, ...]
    test_frames: int
    seq_frames: tuple[int, int] | None
    default_gt: Path | None

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)


PROTOCOLS: dict[str, DatasetProtocol] = {
    "nyu": DatasetProtocol("nyu", NYU_CAMERA, NYU_EVAL_14_NAMES, NYU_DSF_11, NYU_TEST_FRAMES,
                           (NYU_TEST_SPLIT, NYU_TEST_FRAMES - NYU_TEST_SPLIT), DEFAULT_GT),
    "icvl": DatasetProtocol("icvl", ICVL_CAMERA, ICVL_JOINT_NAMES, ICVL_DSF_JOINTS, sum(ICVL_TEST_SEQ_FRAMES),
                            ICVL_TEST_SEQ_FRAMES, _SHARED / "icvl" / "icvl_test_groundtruth_label.txt"),
    "msra": DatasetProtocol("msra", MSRA_CAMERA, MSRA_JOINT_NAMES, MSRA_DSF_JOINTS, sum(MSRA_SUBJECT_FRAMES),
                            None, None),
}
#: MSRA per-frame (yaw, pitch) of the ground truth, community order (76,375 lines)
DEFAULT_MSRA_ANGLES = _SHARED / "msra" / "msra_angle.txt"


def _protocol(dataset: str) -> DatasetProtocol:
    if dataset not in PROTOCOLS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    return PROTOCOLS[dataset]


@dataclass(frozen=True)
class DatasetScores:
    """Community scores of one method on one data set, all errors in mm.

    mean: over all frames and the data set's J joints (the published number); per_joint (J,);
    seq1 / seq2: means over the two test sequences (ICVL 702 + 894 frames, NYU split at 2440; None for MSRA
    or a partial test set); success (81,): fraction of frames whose max joint error <= D, D = 0..80 mm;
    auc: area under ``success`` / 80; dsf: mean over ``PROTOCOLS[dataset].dsf_joints`` (the joints DSF's own
    test compares; no bias constants); per_subject (9,): MSRA means per subject P0..P8 (NaN for a subject
    without frames), None elsewhere or without subject ids.
    """

    dataset: str
    mean: float
    per_joint: np.ndarray
    seq1: float | None
    seq2: float | None
    success: np.ndarray
    auc: float
    num_frames: int
    dsf: float
    per_subject: np.ndarray | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict (arrays as lists, NaN as None)."""
        d = asdict(self)
        for key in ("per_joint", "success", "per_subject"):
            v = getattr(self, key)
            d[key] = None if v is None else [None if not np.isfinite(x) else float(x) for x in v]
        return d


def _as_uvd_j(name: str, a, num_joints: int) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (num_joints, 3) or len(arr) == 0:
        raise ValueError(f"{name}: expected shape (N >= 1, {num_joints}, 3) of (u, v, d), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: {int((~np.isfinite(arr)).sum())} values are NaN or inf")
    _check_plausible(name, arr)
    return arr


def evaluate_dataset(pred_uvd, gt_uvd, dataset: str, *, subjects=None,
                     camera: Intrinsics | None = None) -> DatasetScores:
    """Score (N, J, 3) predicted uvd against (N, J, 3) ground-truth uvd with ``dataset``'s protocol.

    Args:
        pred_uvd, gt_uvd: (u px, v px, d mm) in the data set's community joint order (ICVL 16, MSRA 21,
            NYU 14), original (un-mirrored) image coordinates.
        dataset: 'icvl' | 'msra' | 'nyu'.
        subjects: MSRA only, (N,) subject id 0..8 per frame; defaults to the community fold sizes
            (``MSRA_SUBJECT_FRAMES``) when N is the full test set (76,375 frames).
        camera: intrinsics to lift both with (default: the protocol's).
    """
    proto = _protocol(dataset)
    pred = _as_uvd_j("pred_uvd", pred_uvd, proto.num_joints)
    gt = _as_uvd_j("gt_uvd", gt_uvd, proto.num_joints)
    n = len(gt)
    if len(pred) != n:
        raise ValueError(f"prediction has {len(pred)} frames but the ground truth has {n}")
    err = joint_errors_mm(pred, gt, camera or proto.camera)  # (N, J)
    success = success_curve(err)
    seq1 = seq2 = None
    if proto.seq_frames is not None and n == proto.test_frames:
        split = proto.seq_frames[0]
        seq1, seq2 = float(err[:split].mean()), float(err[split:].mean())
    per_subject = None
    if dataset == "msra":
        if subjects is None and n == proto.test_frames:
            subjects = np.repeat(np.arange(MSRA_SUBJECTS), MSRA_SUBJECT_FRAMES)
        if subjects is not None:
            per_subject = subject_means(err.mean(1), subjects)
    elif subjects is not None:
        raise ValueError(f"subjects apply to MSRA only, not {dataset!r}")
    return DatasetScores(
        dataset=dataset, mean=float(err.mean()), per_joint=err.mean(axis=0), seq1=seq1, seq2=seq2,
        success=success, auc=success_auc(success),
        num_frames=n, dsf=float(err[:, list(proto.dsf_joints)].mean()), per_subject=per_subject)


def subject_means(frame_errors_mm: np.ndarray, subjects) -> np.ndarray:
    """(9,) mean per-frame error of MSRA subjects P0..P8 (NaN for a subject without frames).

    Args:
        frame_errors_mm: (N,) mean joint error of each frame; subjects: (N,) ids 0..8.
    """
    subj = np.asarray(subjects)
    if subj.shape != frame_errors_mm.shape:
        raise ValueError(f"subjects: expected shape {frame_errors_mm.shape}, got {subj.shape}")
    if subj.size and (subj.min() < 0 or subj.max() >= MSRA_SUBJECTS):
        raise ValueError(f"subjects must lie in 0..{MSRA_SUBJECTS - 1}")
    sums = np.bincount(subj, weights=frame_errors_mm, minlength=MSRA_SUBJECTS)
    counts = np.bincount(subj, minlength=MSRA_SUBJECTS)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def viewpoint_curve(frame_errors_mm: np.ndarray, angles_deg: np.ndarray, bins_deg: np.ndarray) -> np.ndarray:
    """Mean per-frame error per 2-degree viewpoint bin, as the community MSRA plot (NaN for an empty bin).

    A frame falls in bin b when ``round(angle / 2) * 2 == b`` (numpy rounding: half to even).
    Args: frame_errors_mm (N,), angles_deg (N,) yaw or pitch, bins_deg (K,). Returns (K,).
    """
    key = np.round(np.asarray(angles_deg, np.float64) * 0.5) * 2
    out = np.full(len(bins_deg), np.nan)
    for k, b in enumerate(bins_deg):
        sel = key == b
        if sel.any():
            out[k] = float(frame_errors_mm[sel].mean())
    return out


def msra_viewpoint_angles(gt_uvd: np.ndarray) -> np.ndarray:
    """(N, 2) (yaw, pitch) in degrees of MSRA ground truth (N, 21, 3) uvd, as REN's ``evaluation/get_angle.py``
    made ``msra_angle.txt``: lift with the MSRA intrinsics (y down); palm axis y = unit(middle MCP - wrist);
    pitch = -asin(y_z), yaw = -asin(-y_x / cos(pitch)) (the palm frame's other axes do not enter)."""
    xyz = uvd_to_xyz(np.asarray(gt_uvd, np.float64), MSRA_CAMERA.as_tuple())
    wrist, middle = xyz[:, 0], xyz[:, MSRA_JOINT_NAMES.index("Mid.M")]
    y = middle - wrist
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    pitch = -np.arcsin(np.clip(y[:, 2], -1.0, 1.0))
    yaw = -np.arcsin(np.clip(-y[:, 0] / np.cos(pitch), -1.0, 1.0))
    return np.degrees(np.stack([yaw, pitch], 1))


def load_angles(path: str | Path, num_frames: int | None = None) -> np.ndarray:
    """Read an MSRA viewpoint file: one ``yaw pitch`` line (degrees) per frame -> (N, 2)."""
    path = Path(path)
    try:
        arr = np.loadtxt(path, dtype=np.float64, ndmin=2, comments=None)
    except ValueError as err:
        raise PredictionFormatError(path, None, f"unreadable ({err}); expected 'yaw pitch' per line") from err
    if arr.shape[1] != 2 or not np.isfinite(arr).all():
        raise PredictionFormatError(path, None, f"expected 2 finite numbers (yaw pitch) per line, got "
                                                f"{arr.shape[1]} columns")
    if num_frames is not None and len(arr) != num_frames:
        raise PredictionFormatError(path, None, f"{len(arr)} lines, expected {num_frames} (one per frame)")
    return arr


def msra_subjects_from_list(path: str | Path) -> np.ndarray:
    """(N,) subject ids from an MSRA test list (``P<k>/<gesture>/<NNNNNN>_depth.bin`` per line)."""
    path = Path(path)
    out = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        m = re.match(r"P(\d)[/\\]", line)
        if m is None:
            raise PredictionFormatError(path, i, f"expected 'P<subject>/<gesture>/<frame>_depth.bin', "
                                                 f"got {line[:60]!r}")
        out.append(int(m.group(1)))
    return np.asarray(out, np.int64)


def dsf_icvl_bias_mean(pred_uvd, gt_uvd) -> float:
    """Mean error after the official trainer's ICVL depth bias hack (``ICVL_DSF_DEPTH_BIAS_MM`` subtracted
    from the predicted z of each joint in xyz). Only for a separate, labelled column: not a community number.
    """
    cam = ICVL_CAMERA.as_tuple()
    pred = uvd_to_xyz(_as_uvd_j("pred_uvd", pred_uvd, 16), cam)
    pred[..., 2] -= np.asarray(ICVL_DSF_DEPTH_BIAS_MM)
    gt = uvd_to_xyz(_as_uvd_j("gt_uvd", gt_uvd, 16), cam)
    return float(np.linalg.norm(pred - gt, axis=-1).mean())


def format_dataset_table(names: Sequence[str], scores: Sequence[DatasetScores],
                         extra: dict[str, Sequence[float]] | None = None) -> str:
    """Plain-text table, one row per method: frames, mean, DSF-joint mean, sequences, AUC, MSRA subjects,
    then any ``extra`` labelled columns."""
    width = max([len("method")] + [len(n) for n in names])
    subj = any(s.per_subject is not None for s in scores)
    extra = extra or {}
    cols = ["frames", "mean", "dsf", "seq1", "seq2", "AUC"] + (
        [f"P{k}" for k in range(MSRA_SUBJECTS)] if subj else []) + list(extra)
    head = f"{'method':<{width}}" + "".join(f"  {c:>7}" for c in cols)
    rows = [head, "-" * len(head)]

    def num(v) -> str:
        return f"{'-':>7}" if v is None or not np.isfinite(v) else f"{v:7.3f}"

    for i, (name, s) in enumerate(zip(names, scores)):
        cells = [f"{s.num_frames:>7d}", num(s.mean), num(s.dsf), num(s.seq1), num(s.seq2), f"{s.auc:7.4f}"]
        if subj:
            cells += [num(None if s.per_subject is None else v)
                      for v in (s.per_subject if s.per_subject is not None else [None] * MSRA_SUBJECTS)]
        cells += [num(v[i]) for v in extra.values()]
        rows.append(f"{name:<{width}}" + "".join(f"  {c}" for c in cells))
    return "\n".join(rows)


def write_dataset_results(out_dir: str | Path, dataset: str, names: Sequence[str], files: Sequence[str],
                          scores: Sequence[DatasetScores], gt_path: str, angles: np.ndarray | None = None,
                          frame_errors: Sequence[np.ndarray] | None = None,
                          extra: dict[str, Sequence[float]] | None = None) -> list[Path]:
    """Write ``scores.csv``, ``scores.json``, ``success_curve.png``, ``per_joint_error.png`` and, for MSRA with
    ``angles`` (N, 2) and per-method ``frame_errors`` (N,), ``yaw_pitch.png`` (+ the curves in the JSON)."""
    from util.plots import plot_per_joint_errors, plot_success_curves, plot_viewpoint_curves

    proto = _protocol(dataset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = extra or {}
    d_cols = [f"success_D{int(d)}" for d in SUCCESS_THRESHOLDS_MM]
    subj_cols = [f"P{k}" for k in range(MSRA_SUBJECTS)] if dataset == "msra" else []

    def fmt(v) -> str:
        return "" if v is None or not np.isfinite(v) else f"{v:.6f}"

    with open(out / "scores.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "file", "frames", "mean", "dsf", "seq1", "seq2", "auc", *subj_cols, *extra,
                    *proto.joint_names, *d_cols])
        for i, (name, f, s) in enumerate(zip(names, files, scores)):
            subj = [] if not subj_cols else [fmt(v) for v in (
                s.per_subject if s.per_subject is not None else [None] * MSRA_SUBJECTS)]
            w.writerow([name, f, s.num_frames, fmt(s.mean), fmt(s.dsf), fmt(s.seq1), fmt(s.seq2), fmt(s.auc),
                        *subj, *(fmt(v[i]) for v in extra.values()), *(fmt(v) for v in s.per_joint),
                        *(fmt(v) for v in s.success)])
    meta = {"dataset": dataset, "ground_truth": gt_path, "camera": list(proto.camera.as_tuple()), "units": "mm",
            "joint_names": list(proto.joint_names), "dsf_joints": list(proto.dsf_joints),
            "thresholds_mm": SUCCESS_THRESHOLDS_MM.tolist(),
            "methods": [{"name": n, "file": f, **s.to_dict(), **{k: v[i] for k, v in extra.items()}}
                        for i, (n, f, s) in enumerate(zip(names, files, scores))]}
    paths = [out / p for p in ("scores.csv", "scores.json", "success_curve.png", "per_joint_error.png")]
    title = dataset.upper()
    if dataset == "msra" and angles is not None and frame_errors is not None:
        yaw = [viewpoint_curve(e, angles[:, 0], MSRA_YAW_BINS) for e in frame_errors]
        pitch = [viewpoint_curve(e, angles[:, 1], MSRA_PITCH_BINS) for e in frame_errors]
        meta["viewpoint"] = {"yaw_bins": MSRA_YAW_BINS.tolist(), "pitch_bins": MSRA_PITCH_BINS.tolist(),
                             "yaw": [[None if not np.isfinite(x) else float(x) for x in c] for c in yaw],
                             "pitch": [[None if not np.isfinite(x) else float(x) for x in c] for c in pitch]}
        plot_viewpoint_curves(out / "yaw_pitch.png", names, MSRA_YAW_BINS, yaw, MSRA_PITCH_BINS, pitch,
                              title=title)
        paths.append(out / "yaw_pitch.png")
    (out / "scores.json").write_text(json.dumps(meta, indent=1))
    labels = [f"{n} ({s.mean:.2f} mm)" for n, s in zip(names, scores)]
    plot_success_curves(out / "success_curve.png", labels, SUCCESS_THRESHOLDS_MM, [s.success for s in scores],
                        title=title)
    plot_per_joint_errors(out / "per_joint_error.png", names, proto.joint_names,
                          [s.per_joint for s in scores], [s.mean for s in scores], title=title,
                          reverse=dataset == "nyu")
    return paths


def _main_dataset(args, names: list[str]) -> int:
    """CLI path of ``--dataset icvl|msra``."""
    proto = PROTOCOLS[args.dataset]
    gt_path = args.gt or (str(proto.default_gt) if proto.default_gt else None)
    if gt_path is None:
        print(f"error: --dataset {args.dataset} needs --gt FILE (the ground truth is not public beside the "
              "repository)", file=sys.stderr)
        return 2
    try:
        gt = load_predictions(gt_path, joint_names=proto.joint_names)
        subjects = angles = None
        if args.dataset == "msra":
            if args.list:
                subjects = msra_subjects_from_list(args.list)
                if len(subjects) != len(gt):
                    raise PredictionFormatError(args.list, None, f"{len(subjects)} frames, but the ground "
                                                                 f"truth {gt_path} has {len(gt)}")
            angle_path = args.angles or (str(DEFAULT_MSRA_ANGLES) if len(gt) == proto.test_frames else None)
            # without a file the angles follow from the ground truth (the file was made that way)
            angles = load_angles(angle_path, num_frames=len(gt)) if angle_path else msra_viewpoint_angles(gt)
        scores, frame_errors, bias = [], [], []
        for p in args.pred:
            pred = load_predictions(p, joint_names=proto.joint_names)
            if len(pred) != len(gt):
                raise PredictionFormatError(
                    p, None, f"{len(pred)} lines (frames), but the ground truth {gt_path} has {len(gt)}")
            scores.append(evaluate_dataset(pred, gt, args.dataset, subjects=subjects))
            frame_errors.append(joint_errors_mm(pred, gt, proto.camera).mean(1))
            if args.dsf_bias:
                bias.append(dsf_icvl_bias_mean(pred, gt))
    except (PredictionFormatError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    extra = {"dsf_bias": bias} if args.dsf_bias else None
    print(format_dataset_table(names, scores, extra))
    if args.dsf_bias:
        print("dsf_bias: mean with the official trainer's per-joint ICVL depth bias subtracted from the "
              "predictions (not comparable with community numbers)")
    if args.out:
        try:
            for path in write_dataset_results(args.out, args.dataset, names, args.pred, scores, gt_path, angles,
                                              frame_errors, extra):
                print(f"wrote {path}")
        except OSError as err:  # e.g. no permission: the scores above stand, the files could not be written
            print(f"error: cannot write the results to --out {args.out}: {err}", file=sys.stderr)
            return 2
    return 0


# --- reporting ----------------------------------------------------------------------------------------------

def format_table(names: Sequence[str], scores: Sequence[NYUScores]) -> str:
    """Plain-text table, one row per method (errors in mm, AUC of the 0-80 mm success curve)."""
    width = max([len("method")] + [len(n) for n in names])
    head = (f"{'method':<{width}}  {'frames':>6}  {'mean14':>7}  {'mean11':>7}  {'seq1':>7}  {'seq2':>7}"
            f"  {'AUC':>6}")
    rows = [head, "-" * len(head)]
    for name, s in zip(names, scores):
        seq = [f"{v:7.3f}" if v is not None else f"{'-':>7}" for v in (s.seq1, s.seq2)]
        rows.append(f"{name:<{width}}  {s.num_frames:>6d}  {s.mean_14:7.3f}  {s.mean_11:7.3f}  "
                    f"{seq[0]}  {seq[1]}  {s.auc:6.4f}")
    return "\n".join(rows)


def write_results(out_dir: str | Path, names: Sequence[str], files: Sequence[str],
                  scores: Sequence[NYUScores], gt_path: str) -> list[Path]:
    """Write ``scores.csv``, ``scores.json``, ``success_curve.png``, ``per_joint_error.png``; return paths."""
    from util.plots import plot_per_joint_errors, plot_success_curves  # matplotlib only when plotting

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d_cols = [f"success_D{int(d)}" for d in SUCCESS_THRESHOLDS_MM]
    with open(out / "scores.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "file", "frames", "mean_14", "mean_11", "seq1", "seq2", "auc",
                    *NYU_EVAL_14_NAMES, *d_cols])
        for name, f, s in zip(names, files, scores):
            seq = ["" if v is None else f"{v:.6f}" for v in (s.seq1, s.seq2)]
            w.writerow([name, f, s.num_frames, f"{s.mean_14:.6f}", f"{s.mean_11:.6f}", *seq, f"{s.auc:.6f}",
                        *(f"{v:.6f}" for v in s.per_joint), *(f"{v:.6f}" for v in s.success)])
    meta = {"ground_truth": gt_path, "camera": list(NYU_CAMERA.as_tuple()), "units": "mm",
            "joint_names": list(NYU_EVAL_14_NAMES), "dsf_11_joints": list(NYU_DSF_11),
            "thresholds_mm": SUCCESS_THRESHOLDS_MM.tolist(),
            "methods": [{"name": n, "file": f, **s.to_dict()} for n, f, s in zip(names, files, scores)]}
    (out / "scores.json").write_text(json.dumps(meta, indent=1))
    labels = [f"{n} ({s.mean_14:.2f} mm)" for n, s in zip(names, scores)]
    plot_success_curves(out / "success_curve.png", labels, SUCCESS_THRESHOLDS_MM, [s.success for s in scores])
    plot_per_joint_errors(out / "per_joint_error.png", names, NYU_EVAL_14_NAMES,
                          [s.per_joint for s in scores], [s.mean_14 for s in scores])
    return [out / p for p in ("scores.csv", "scores.json", "success_curve.png", "per_joint_error.png")]


def _out_dir_problem(out: str | None) -> str | None:
    """Why ``out`` cannot become the results folder (None when it can): an existing file, or a file on its path."""
    if not out:
        return None
    path = Path(out)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "is an existing file" if p == path else f"lies under {p}, which is a file"
                return f"{what}; expected a folder (existing or new) for the plots and score tables"
            return None
    return None


def default_name(path: str | Path) -> str:
    """Method name from a file name: ``CVPR18_NYU_V2V_PoseNet.txt`` -> ``V2V_PoseNet``."""
    return re.sub(r"^[A-Za-z]+\d*_(NYU|ICVL|MSRA)_", "", Path(path).stem)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the exit status (2 on bad input, with the reason on stderr)."""
    ap = argparse.ArgumentParser(prog="python -m util.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("pred", nargs="+", help="prediction files: one frame per line, J x (u v d)")
    ap.add_argument("--dataset", default="nyu", choices=DATASETS,
                    help="protocol: nyu (14 joints), icvl (16), msra (21) [%(default)s]")
    ap.add_argument("--names", nargs="+", help="method names (default: from the file names)")
    ap.add_argument("--gt", default=None,
                    help=f"ground truth in the same format [nyu: {DEFAULT_GT}; icvl: "
                         f"{PROTOCOLS['icvl'].default_gt}; msra: required]")
    ap.add_argument("--list", default=None,
                    help="msra: test list (P<k>/<gesture>/<frame>_depth.bin per line) giving each frame's "
                         "subject (default: the community fold sizes for the full 76,375-frame test set)")
    ap.add_argument("--angles", default=None,
                    help=f"msra: per-frame 'yaw pitch' for the viewpoint curves (default for the full test "
                         f"set: {DEFAULT_MSRA_ANGLES}; otherwise computed from --gt as REN's get_angle.py)")
    ap.add_argument("--dsf-bias", action="store_true",
                    help="icvl: add a labelled column with the official trainer's per-joint depth bias "
                         "subtracted (not a community number)")
    ap.add_argument("--split", type=int, default=None,
                    help=f"first frame of test sequence 2 (default: {NYU_TEST_SPLIT} for the full test set)")
    ap.add_argument("--out", default=None, help="folder for plots (PNG), scores.csv and scores.json")
    args = ap.parse_args(argv)
    if args.names is not None and len(args.names) != len(args.pred):
        ap.error(f"--names has {len(args.names)} entries for {len(args.pred)} prediction files")
    names = args.names or [default_name(p) for p in args.pred]
    if args.dsf_bias and args.dataset != "icvl":
        ap.error("--dsf-bias applies to --dataset icvl only")
    out_problem = _out_dir_problem(args.out)
    if out_problem:  # before any file is read: a bad --out must not cost a whole evaluation
        print(f"error: --out {args.out}: {out_problem}", file=sys.stderr)
        return 2
    if args.dataset != "nyu":
        return _main_dataset(args, names)
    args.gt = args.gt or str(DEFAULT_GT)
    try:
        gt = load_predictions(args.gt)
        scores = []
        for p in args.pred:
            pred = load_predictions(p)
            if len(pred) != len(gt):
                raise PredictionFormatError(
                    p, None, f"{len(pred)} lines (frames), but the ground truth {args.gt} has {len(gt)}")
            scores.append(evaluate_nyu(pred, gt, split=args.split))
    except (PredictionFormatError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(names, scores))
    if args.out:
        try:
            for path in write_results(args.out, names, args.pred, scores, args.gt):
                print(f"wrote {path}")
        except OSError as err:  # e.g. no permission: the scores above stand, the files could not be written
            print(f"error: cannot write the results to --out {args.out}: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
