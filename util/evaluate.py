"""NYU hand-pose evaluation with the community protocol (formats.md §4), as functions and as a CLI.

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

CLI::

    python -m util.evaluate PRED [PRED ...] [--names N ...] [--gt GT] [--split K] [--out DIR]
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

from util.camera import NYU_CAMERA, Intrinsics
from util.geometry import uvd_to_xyz
from util.joints import NYU_DSF_11, NYU_EVAL_14_NAMES, NYU_TEST_FRAMES, NYU_TEST_SPLIT

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

def load_predictions(path: str | Path, num_frames: int | None = None) -> np.ndarray:
    """Read a community-format file: one frame per line, 14 x (u, v, d).

    Args:
        path: text file, ``N`` lines of 42 whitespace-separated numbers (u, v in px, d in mm).
        num_frames: if given, the number of lines the file must have.
    Returns:
        (N, 14, 3) float64 array of (u px, v px, d mm).
    Raises:
        PredictionFormatError: wrong line count, wrong column count, unparsable text, NaN/inf, or not text.
        FileNotFoundError: missing file.
    """
    path = Path(path)
    if path.is_dir():
        raise PredictionFormatError(path, None, f"a directory; expected a text file with {_EXPECTED}")
    raw = path.read_bytes()
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise PredictionFormatError(path, line, f"non-ASCII byte {raw[err.start]:#04x}; expected {_EXPECTED}")
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # a trailing newline / trailing blank lines are harmless
        lines.pop()
    if not lines:
        raise PredictionFormatError(path, None, f"empty file; expected one line per frame with {_EXPECTED}")
    # Fast path: numpy's C parser (~15 ms per 8252-line file). It skips blank lines and reports errors in its
    # own words, so any disagreement falls back to the line-by-line diagnosis below.
    try:
        arr = np.loadtxt(lines, dtype=np.float64, comments=None, ndmin=2)
    except ValueError as err:
        _diagnose(path, lines)
        raise PredictionFormatError(path, None, f"unreadable ({err}); expected {_EXPECTED}") from err
    if arr.shape[0] != len(lines):
        _diagnose(path, lines)
    if arr.shape[1] != VALUES_PER_LINE:
        raise PredictionFormatError(path, 1, f"expected {_EXPECTED}, found {arr.shape[1]}")
    bad = np.argwhere(~np.isfinite(arr))
    if len(bad):
        row, col = (int(i) for i in bad[0])
        raise _non_finite(path, row + 1, col, lines[row].split()[col])
    if num_frames is not None and arr.shape[0] != num_frames:
        raise PredictionFormatError(
            path, None, f"{arr.shape[0]} lines (frames), expected {num_frames} (one line per test frame)")
    return arr.reshape(-1, NUM_JOINTS, 3)


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)


def _non_finite(path: Path, line: int, col: int, token: str) -> PredictionFormatError:
    joint, coord = NYU_EVAL_14_NAMES[col // 3], _COORDS[col % 3]
    return PredictionFormatError(
        path, line, f"column {col + 1} ({joint} {coord}) is {token!r}; expected finite numbers")


def _diagnose(path: Path, lines: Sequence[str]) -> None:
    """Slow path: raise the error of the first offending line (does nothing if every line is fine)."""
    for i, line in enumerate(lines, start=1):
        tokens = line.split()
        if len(tokens) != VALUES_PER_LINE:
            raise PredictionFormatError(path, i, f"expected {_EXPECTED}, found {len(tokens)}")
        for col, tok in enumerate(tokens):
            if not _NUMBER.fullmatch(tok):
                raise PredictionFormatError(
                    path, i, f"column {col + 1}: cannot parse {tok!r} as a number; expected {_EXPECTED}")
            if not np.isfinite(float(tok)):
                raise _non_finite(path, i, col, tok)


def save_predictions(path: str | Path, uvd, decimals: int = 4) -> None:
    """Write (N, 14, 3) (u px, v px, d mm) in the community format (``%.4f``, single spaces, '\\n' ends).

    4 decimals (as MURAUER's file) change a lifted joint by < 1e-4 mm, and 3-decimal community values
    round-trip exactly. Accepts numpy arrays or torch tensors; creates the parent folder.
    """
    if hasattr(uvd, "detach"):
        uvd = uvd.detach().cpu().numpy()
    arr = np.asarray(uvd, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"save_predictions: expected uvd of shape (N, {NUM_JOINTS}, 3), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"save_predictions: uvd has {int((~np.isfinite(arr)).sum())} non-finite values")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = " ".join([f"%.{decimals}f"] * VALUES_PER_LINE)
    rows = arr.reshape(len(arr), VALUES_PER_LINE)
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


def _as_uvd(name: str, a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (NUM_JOINTS, 3) or len(arr) == 0:
        raise ValueError(f"{name}: expected shape (N >= 1, {NUM_JOINTS}, 3) of (u, v, d), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: {int((~np.isfinite(arr)).sum())} values are NaN or inf")
    return arr


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
        auc=float(np.trapezoid(success, SUCCESS_THRESHOLDS_MM) / SUCCESS_THRESHOLDS_MM[-1]),
        num_frames=n,
        split=split,
    )


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


def default_name(path: str | Path) -> str:
    """Method name from a file name: ``CVPR18_NYU_V2V_PoseNet.txt`` -> ``V2V_PoseNet``."""
    return re.sub(r"^[A-Za-z]+\d*_NYU_", "", Path(path).stem)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the exit status (2 on bad input, with the reason on stderr)."""
    ap = argparse.ArgumentParser(prog="python -m util.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("pred", nargs="+", help="prediction files: one frame per line, 14 x (u v d)")
    ap.add_argument("--names", nargs="+", help="method names (default: from the file names)")
    ap.add_argument("--gt", default=str(DEFAULT_GT), help="ground truth in the same format [%(default)s]")
    ap.add_argument("--split", type=int, default=None,
                    help=f"first frame of test sequence 2 (default: {NYU_TEST_SPLIT} for the full test set)")
    ap.add_argument("--out", default=None, help="folder for plots (PNG), scores.csv and scores.json")
    args = ap.parse_args(argv)
    if args.names is not None and len(args.names) != len(args.pred):
        ap.error(f"--names has {len(args.names)} entries for {len(args.pred)} prediction files")
    names = args.names or [default_name(p) for p in args.pred]
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
        for path in write_results(args.out, names, args.pred, scores, args.gt):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
