"""Reading and writing the NYU file formats (docs/formats.md §3.2-3.6): depth PNGs, ``joint_data.mat``, centre
files.

Every reader validates what it gets and raises one error that names the file and what was expected:
:class:`FileNotFoundError` for a missing file, :class:`DataFileError` for an unreadable or malformed one.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import cv2
import numpy as np
import scipy.io

from util.joints import NYU_JOINT_NAMES_36

PathLike = Union[str, os.PathLike]

#: largest depth a 16-bit NYU PNG can hold (mm)
MAX_DEPTH_MM = 65535
#: largest centre file read whole (one short line per frame: 64 MiB is about a million frames)
MAX_CENTER_FILE_BYTES = 64 * 2**20


class DataFileError(ValueError):
    """A data file exists but cannot be read or does not have the expected format (message names the file)."""


def _require_file(path: PathLike, what: str) -> str:
    """``path`` as a str; FileNotFoundError when nothing is there, DataFileError for a directory or device."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        if os.path.exists(p):
            kind = "a directory" if os.path.isdir(p) else "not a regular file"
            raise DataFileError(f"{p}: is {kind}; expected the {what}")
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


# ----------------------------------------------------------------------------------------------------
# depth PNG: depth_mm = (G << 8) | B, R unused (docs/formats.md §3.2)
# ----------------------------------------------------------------------------------------------------
def decode_depth(path: PathLike, shape: tuple[int, int] = (480, 640)) -> np.ndarray:
    """Read an NYU depth (or synthdepth) PNG.

    Args:
        path: a 3x8-bit PNG whose green byte is the high and blue byte the low byte of the depth.
        shape: (height, width) the frame must have. The PNG header is checked against it (and 8-bit RGB)
            *before* decoding, so a wrong-size, huge or non-PNG file is refused without decoding it.
    Returns:
        (H, W) float32 depth in mm (640x480 frames give (480, 640)); real frames use 2001 for missing/far
        depth, synthdepth frames 0 for background.
    """
    p = _require_file(path, "depth PNG")
    check_depth_png(p, shape)  # a 20000x20000 PNG would decode to gigabytes; a JPEG named .png is refused
    img = cv2.imread(p, cv2.IMREAD_UNCHANGED)  # BGR order; None when the file cannot be decoded
    if img is None:
        raise DataFileError(f"{p}: cannot decode PNG (corrupt or not an image)")
    if img.shape != (*shape, 3) or img.dtype != np.uint8:  # the header said so; the decoder must agree
        raise DataFileError(f"{p}: expected an 8-bit 3-channel NYU depth PNG of {shape[1]}x{shape[0]}, got "
                            f"{img.shape} {img.dtype}")
    # widen before shifting: uint8 << 8 overflows (the numpy-2 pitfall of the official reader)
    depth = (img[:, :, 1].astype(np.uint16) << 8) | img[:, :, 0].astype(np.uint16)
    return depth.astype(np.float32)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last 12 bytes of every complete PNG


def check_depth_png(path: PathLike, shape: tuple[int, int] = (480, 640)) -> None:
    """Cheap validity check of a depth PNG without decoding it (two small reads; for whole-split scans).

    Checks the PNG signature, the IHDR header (``shape`` = (height, width), 8-bit RGB, colour type 2, as the
    NYU files and :func:`write_depth_png`) and the IEND trailer (catches truncated files). Corruption inside
    the compressed data still passes; :func:`decode_depth` reports it.

    Raises:
        FileNotFoundError: no such file. DataFileError: anything else, naming the file and what was expected.
    """
    p = _require_file(path, "depth PNG")
    with open(p, "rb") as fh:
        head = fh.read(33)
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(size - 12, 0))
        tail = fh.read(12)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise DataFileError(f"{p}: not a PNG file (bad signature or header)")
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    bit_depth, colour_type = head[24], head[25]
    if (height, width) != tuple(shape) or bit_depth != 8 or colour_type != 2:
        raise DataFileError(f"{p}: expected an 8-bit RGB PNG of {shape[1]}x{shape[0]}, got {width}x{height} "
                            f"with bit depth {bit_depth} and colour type {colour_type}")
    if tail != _PNG_IEND:
        raise DataFileError(f"{p}: truncated PNG (no IEND trailer)")


def encode_depth(depth_mm: np.ndarray) -> np.ndarray:
    """Depth (H, W) in mm -> (H, W, 3) uint8 BGR image ``[d & 255, d >> 8, 0]`` (rounded to whole mm)."""
    d = np.asarray(depth_mm)
    if d.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("depth contains NaN or inf")
    d = np.rint(d)
    if d.min(initial=0) < 0 or d.max(initial=0) > MAX_DEPTH_MM:
        raise ValueError(f"depth must lie in [0, {MAX_DEPTH_MM}] mm, got [{d.min()}, {d.max()}]")
    d = d.astype(np.uint16)
    out = np.zeros(d.shape + (3,), np.uint8)
    out[:, :, 0] = (d & 0xFF).astype(np.uint8)
    out[:, :, 1] = (d >> 8).astype(np.uint8)
    return out


def write_depth_png(path: PathLike, depth_mm: np.ndarray, compression: int | None = None) -> None:
    """Write depth (H, W) mm as an NYU-format PNG (readable by :func:`decode_depth`, PIL and OpenCV alike).

    ``compression``: zlib level 0..9 (``cv2.IMWRITE_PNG_COMPRESSION``; 1 = fastest); None = OpenCV's default.
    """
    p = os.fspath(path)
    params = [] if compression is None else [cv2.IMWRITE_PNG_COMPRESSION, int(compression)]
    if not cv2.imwrite(p, encode_depth(depth_mm), params):
        raise OSError(f"cannot write PNG {p}")


# ----------------------------------------------------------------------------------------------------
# joint_data.mat (docs/formats.md §3.3)
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JointData:
    """Contents of ``joint_data.mat``: per Kinect view, N frames of 36 joints.

    ``joint_uvd`` (V, N, 36, 3): (u, v) px, d mm; ``joint_xyz`` (V, N, 36, 3): mm, camera frame, **y up** (as
    stored); ``names``: the 36 joint names.
    """

    joint_uvd: np.ndarray
    joint_xyz: np.ndarray
    names: tuple[str, ...]

    @property
    def num_views(self) -> int:
        return int(self.joint_xyz.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.joint_xyz.shape[1])


def _matlab_kind(value) -> str:
    """What a MATLAB variable read by scipy holds, for messages (cell / struct / char / ...)."""
    if not isinstance(value, np.ndarray):
        return type(value).__name__
    kind = {"O": "a cell array", "V": "a struct", "U": "a char array (text)", "S": "a char array (text)",
            "c": "a complex array", "b": "a logical array"}.get(value.dtype.kind, f"dtype {value.dtype}")
    return f"{kind} of shape {value.shape}"


def _cell_strings(cell: np.ndarray) -> tuple[str, ...]:
    """scipy's view of a MATLAB cell array of strings (any orientation) -> tuple of str."""
    out = []
    for item in np.asarray(cell, dtype=object).ravel():
        while isinstance(item, np.ndarray) and item.dtype == object and item.size == 1:
            item = item.ravel()[0]
        out.append(str(np.asarray(item).ravel()[0]) if isinstance(item, np.ndarray) else str(item))
    return tuple(out)


def load_joint_data(path: PathLike) -> JointData:
    """Read and validate an NYU ``joint_data.mat`` (MATLAB v5; ``joint_uvd``/``joint_xyz`` 3 x N x 36 x 3)."""
    p = _require_file(path, "NYU label file")
    try:
        mat = scipy.io.loadmat(p)
    except Exception as e:  # scipy raises many types for truncated/garbage files; report them all alike
        raise DataFileError(f"{p}: cannot read as a MATLAB v5 joint_data.mat ({type(e).__name__}: {e})") \
            from e
    arrays = {}
    for key in ("joint_uvd", "joint_xyz"):
        if key not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise DataFileError(f"{p}: missing variable '{key}' (found {found})")
        stored = mat[key]
        if not isinstance(stored, np.ndarray) or stored.dtype.kind not in "fiu":
            raise DataFileError(f"{p}: '{key}' must be a numeric (views, N, 36, 3) array, got "
                                f"{_matlab_kind(stored)}")
        a = np.asarray(stored, dtype=np.float64)
        if a.ndim != 4 or a.shape[2] != 36 or a.shape[3] != 3 or a.shape[0] < 1:
            raise DataFileError(f"{p}: '{key}' must be (views, N, 36, 3), got {a.shape}")
        arrays[key] = a
    if arrays["joint_uvd"].shape != arrays["joint_xyz"].shape:
        raise DataFileError(f"{p}: joint_uvd {arrays['joint_uvd'].shape} and joint_xyz "
                            f"{arrays['joint_xyz'].shape} differ in shape")
    names = _cell_strings(mat["joint_names"]) if "joint_names" in mat else NYU_JOINT_NAMES_36
    if len(names) != 36:
        raise DataFileError(f"{p}: 'joint_names' must hold 36 names, got {len(names)}")
    if names != NYU_JOINT_NAMES_36:
        warnings.warn(f"{p}: joint_names differ from the standard NYU order (first: {names[:3]}); "
                      "using the standard index maps anyway", stacklevel=2)
    return JointData(arrays["joint_uvd"], arrays["joint_xyz"], names)


def invalid_joints(labels: JointData, view: int) -> np.ndarray:
    """(N, 36) bool: joints of Kinect ``view`` (1-based) whose ``joint_xyz`` or ``joint_uvd`` has a
    non-finite value or a depth (z / d) that is not > 0 mm."""
    bad = np.zeros(labels.joint_xyz.shape[1:3], bool)
    for a in (labels.joint_xyz[view - 1], labels.joint_uvd[view - 1]):
        bad |= ~np.isfinite(a).all(-1) | ~(a[..., 2] > 0)
    return bad


def describe_invalid_joint(labels: JointData, view: int, frame: int, joint: int) -> str:
    """Human-readable reason why (frame, joint) of ``view`` failed :func:`invalid_joints`."""
    parts = []
    for key in ("joint_xyz", "joint_uvd"):
        v = getattr(labels, key)[view - 1, frame, joint]
        if not np.isfinite(v).all() or not v[2] > 0:
            parts.append(f"{key} = {np.array2string(v, precision=2)}")
    name = labels.names[joint] if joint < len(labels.names) else str(joint)
    return (f"view {view}, frame index {frame} (file number {frame + 1}), joint {joint} ({name}): "
            f"{'; '.join(parts)} (need finite values and depth > 0 mm)")


def write_joint_data(path: PathLike, joint_uvd: np.ndarray, joint_xyz: np.ndarray,
                     names: Sequence[str] = NYU_JOINT_NAMES_36) -> None:
    """Write ``joint_data.mat`` like the real one: float64 (V, N, 36, 3) arrays (xyz y up), a (1, 36) cell."""
    cell = np.empty((1, len(names)), dtype=object)
    for i, n in enumerate(names):
        cell[0, i] = str(n)
    scipy.io.savemat(os.fspath(path), {"joint_uvd": np.asarray(joint_uvd, np.float64),
                                       "joint_xyz": np.asarray(joint_xyz, np.float64),
                                       "joint_names": cell}, format="5", do_compression=False)


# ----------------------------------------------------------------------------------------------------
# centre files (docs/formats.md §3.6): one line per frame, "x y z" mm or "invalid"
# ----------------------------------------------------------------------------------------------------
def center_problems(centers: np.ndarray, z_range: tuple[float, float]) -> dict[int, str]:
    """Rows of (N, 3) centres (mm; NaN rows = ``invalid``, ignored) that no sensor can have produced.

    A centre needs ``z_range[0] <= z <= z_range[1]`` (a tiny z asks for a huge crop, z = 0 divides by zero) and
    ``|x|, |y| <= z`` (within 45 degrees of the optical axis: every depth camera here sees less). Returns
    {row: reason}.
    """
    lo, hi = z_range
    out = {}
    c = np.asarray(centers, np.float64)
    ok = np.isfinite(c).all(1)
    z = c[:, 2]
    for i in np.flatnonzero(ok & ~((z >= lo) & (z <= hi))):
        out[int(i)] = f"centre z = {z[i]:.6g} mm outside the plausible range {lo:g}-{hi:g} mm"
    for i in np.flatnonzero(ok & (z >= lo) & (z <= hi) & (np.abs(c[:, :2]).max(1) > z)):
        out[int(i)] = (f"centre ({c[i, 0]:.6g}, {c[i, 1]:.6g}, {z[i]:.6g}) mm lies outside the camera's view "
                       "(need |x|, |y| <= z)")
    return out


def load_centers(path: PathLike, num_frames: int | None = None, *, z_range: tuple[float, float] | None = None,
                 frames_source: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a refined-centre file.

    Args:
        path: text file, one line per frame: three numbers (mm, camera frame; the frame convention y-up/down
            depends on the file, see :mod:`dataloader.nyu`) or the word ``invalid`` (no hand in that frame).
        num_frames: if given, the file must have exactly this many lines.
        z_range: if given, (min, max) mm: a centre outside it (or off the camera's view, see
            :func:`center_problems`) is an error naming its line.
        frames_source: the file ``num_frames`` was counted in (named in the count-mismatch message).
    Returns:
        centres (N, 3) float64 (NaN rows for ``invalid``) and valid (N,) bool.
    """
    p = _require_file(path, "centre file")
    size = os.path.getsize(p)
    if size > MAX_CENTER_FILE_BYTES:
        raise DataFileError(f"{p}: {size} bytes, too large for a centre file (limit {MAX_CENTER_FILE_BYTES}; the "
                            "real 72,757-frame NYU train file has 3.3 MB)")
    with open(p, "r", encoding="utf-8", errors="replace") as fh:
        lines = fh.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # tolerate trailing blank lines only
    out = np.full((len(lines), 3), np.nan, np.float64)
    for i, line in enumerate(lines):
        fields = line.split()
        if len(fields) == 1 and fields[0].lower() == "invalid":
            continue
        try:
            if len(fields) != 3:
                raise ValueError
            out[i] = [float(f) for f in fields]
        except ValueError:
            raise DataFileError(f"{p}, line {i + 1}: expected 'x y z' or 'invalid', got {line[:60]!r}") \
                from None
        if not np.all(np.isfinite(out[i])) or out[i, 2] <= 0:
            raise DataFileError(f"{p}, line {i + 1}: centre must be finite with z > 0 mm, got {line[:60]!r}")
    if num_frames is not None and len(lines) != num_frames:
        counted = f" of {frames_source}" if frames_source else ""
        raise DataFileError(f"{p}: {len(lines)} centre lines, but the {num_frames} frames{counted} need one "
                            "line each (the two files do not belong together)")
    if z_range is not None:
        problems = center_problems(out, z_range)
        if problems:
            row = min(problems)
            raise DataFileError(f"{p}, line {row + 1}: {problems[row]} ({len(problems)} such lines; "
                                "config key center_depth_range sets the range)")
    return out, np.isfinite(out[:, 0])


def write_centers(path: PathLike, centers: np.ndarray) -> None:
    """Write centres (N, 3) mm one per line in ``%.14g`` style (NaN rows become ``invalid``)."""
    with open(os.fspath(path), "w", encoding="utf-8") as fh:
        for c in np.asarray(centers, np.float64):
            fh.write("invalid\n" if not np.all(np.isfinite(c)) else " ".join(f"{v:.14g}" for v in c) + "\n")


def depth_png_name(kind: str, view: int, frame: int) -> str:
    """File name of frame ``frame`` (0-based) of Kinect ``view`` (1..3): e.g. ``depth_1_0000001.png``."""
    return f"{kind}_{view}_{frame + 1:07d}.png"


def list_dir(path: PathLike) -> set[str]:
    """Names in a directory (one listing instead of one stat per frame)."""
    return set(os.listdir(path)) if Path(path).is_dir() else set()
