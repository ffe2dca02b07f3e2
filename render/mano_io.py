"""Reading and writing MANO model files without chumpy (docs/formats.md §1).

Two containers are accepted:

- ``MANO_RIGHT.pkl`` (MANO v1.2): a Python-2 pickle of a plain ``dict``. It is untrusted input, so it is
  read by a restricted unpickler that accepts exactly the 7 globals the official file uses (numpy array
  reconstruction, ``set``, the chumpy ``Ch`` / ``Select`` classes and ``scipy.sparse.csc.csc_matrix``;
  docs/formats.md §1.1, plus the two Python-3 spellings docs/formats.md §1.3 names) and refuses every other global *before*
  anything can be called. Each accepted global resolves to an immutable sentinel or record class that can
  only produce fresh inert records of arguments and state; arrays, chumpy values and the sparse regressor
  are computed afterwards with plain numpy from validated records (no chumpy, no scipy needed).
- ``.npz`` (no pickle) with the same key names, dense ``J_regressor`` (``save_mano_npz`` writes one).

Everything is validated; any problem raises ``ManoFormatError`` naming the file, the key and what was
expected. Geometry stays in metres, as stored.

The restricted unpickler and its inert records live in ``render.mano_unpickler``; the format sizes and
``ManoFormatError`` in ``render.mano_format`` (re-exported here). This module validates and builds the model.
"""
from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from render.mano_format import (  # noqa: F401  (all re-exported: this module is the public entry point)
    NUM_BETAS, NUM_FACES, NUM_HAND_POSE, NUM_JOINTS, NUM_POSE_BASIS, NUM_VERTS, ManoFormatError,
)
from render.mano_unpickler import MAX_FILE_BYTES, CONTENT_FAILURES, evaluate_record, read_pickle

#: rows of the skinning weights and of the joint regressor must sum to 1; loose enough for float32 files
ROW_SUM_TOL = 1e-4
#: weights and regressor entries must be >= -NEGATIVE_TOL (the real file's are all >= 0)
NEGATIVE_TOL = 1e-6
#: the root's parent as stored in ``kintree_table`` (uint32 -1)
_ROOT_PARENT_STORED = 2**32 - 1

MANO_DOWNLOAD_HINT = (
    "The real model comes from https://mano.is.tue.mpg.de (register, accept the licence, download MANO v1.2; "
    "the file is mano_v1_2/models/MANO_RIGHT.pkl). Put it at MANO/MANO_RIGHT.pkl in the repository or pass "
    "mano_path=... . For tests/demo, `python -m render.standin --out PATH` writes a procedural stand-in in "
    "the same format."
)


@dataclass
class ManoModel:
    """The arrays of a MANO model, float64 (faces/parents int64), metres as stored.

    Attributes:
        v_template: (778, 3) rest mesh.
        shapedirs: (778, 3, 10) shape blend shapes (metres per unit beta).
        posedirs: (778, 3, 135) pose-corrective blend shapes.
        J_regressor: (16, 778) dense joint regressor, rows sum to 1.
        weights: (778, 16) skinning weights, rows sum to 1.
        faces: (1538, 3) 0-based triangle vertex indices.
        parents: (16,) parent of each joint, -1 for the root; parents precede children.
        hands_components: (45, 45) pose PCA basis, one component per row (orthogonal, not unit length).
        hands_mean: (45,) mean finger pose (axis-angle).
        hands_coeffs: (N, 45) PCA coefficients of the training poses, or None when the file has none.
        source: path of the file the model was read from.
    """

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    faces: np.ndarray
    parents: np.ndarray
    hands_components: np.ndarray
    hands_mean: np.ndarray
    hands_coeffs: np.ndarray | None
    source: str


def _read_npz(path: Path) -> dict:
    """The MANO members of an ``.npz``: only the expected keys are read, each after its ``.npy`` header (shape,
    dtype, size) has been checked, so an unused or oversized member costs nothing."""
    wanted = {**_FLOAT_KEYS, **_INT_KEYS, **_OPTIONAL_KEYS, **{k: () for k in _STRING_KEYS}}
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            members = set(zf.namelist())
            for key, shape in wanted.items():
                if key + ".npy" in members:
                    out[key] = _read_npz_member(zf, key, shape, path)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, MemoryError, KeyError) as err:
        if isinstance(err, ManoFormatError):
            raise
        raise ManoFormatError(f"{path}: not a readable MANO .npz ({type(err).__name__}: {err})") from None
    return out


def _read_npz_member(zf: zipfile.ZipFile, key: str, shape: tuple, path: Path) -> np.ndarray:
    """One ``key.npy`` member, refused on its header unless it is a plain array of the expected shape."""
    with zf.open(key + ".npy") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy format version {version}")
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            stored_shape, _, dtype = read_header(fh)
        except ValueError as err:
            raise ManoFormatError(f"{path}: member '{key}.npy' is not a .npy array ({err})") from None
    kinds = "U" if key in _STRING_KEYS else ("iu" if key in _INT_KEYS else "fiu")
    if dtype.hasobject or dtype.kind not in kinds:
        raise ManoFormatError(f"{path}: member '{key}.npy': dtype {dtype} is not allowed for '{key}'")
    if len(stored_shape) != len(shape) or any(e is not None and e != s for e, s in zip(shape, stored_shape)):
        raise ManoFormatError(f"{path}: key '{key}': expected shape {_fmt(shape)}, got {stored_shape}")
    nbytes = math.prod(stored_shape) * dtype.itemsize
    if nbytes > MAX_MEMBER_BYTES:
        raise ManoFormatError(f"{path}: member '{key}.npy' holds {nbytes} bytes, more than {MAX_MEMBER_BYTES} "
                              "(the largest real MANO array, posedirs, has 2.5 MB)")
    with zf.open(key + ".npy") as fh:  # the header passed: read exactly the data it declares
        return np.lib.format.read_array(fh, allow_pickle=False)


# --------------------------------------------------------------------------------------------------
# validation

_FLOAT_KEYS = {  # key -> expected shape (None = any length on that axis)
    "v_template": (NUM_VERTS, 3),
    "shapedirs": (NUM_VERTS, 3, None),
    "posedirs": (NUM_VERTS, 3, NUM_POSE_BASIS),
    "J_regressor": (NUM_JOINTS, NUM_VERTS),
    "weights": (NUM_VERTS, NUM_JOINTS),
    "hands_components": (NUM_HAND_POSE, NUM_HAND_POSE),
    "hands_mean": (NUM_HAND_POSE,),
}
_INT_KEYS = {"f": (NUM_FACES, 3), "kintree_table": (2, NUM_JOINTS)}
_OPTIONAL_KEYS = {"hands_coeffs": (None, NUM_HAND_POSE)}
_STRING_KEYS = ("bs_style", "bs_type")
#: largest .npz member read (the real model's largest array, posedirs, has 2.5 MB; hands_coeffs 0.6 MB)
MAX_MEMBER_BYTES = 64 * 2**20
#: largest |value| a MANO hand model in metres can hold, per key (the real template spans about 0.2 m, blend
#: shapes move vertices by millimetres to centimetres per unit, pose values are radians); far beyond, the
#: forward pass overflows to NaN or the file is in the wrong unit
MAX_ABS_VALUE = {
    "v_template": 1.0,  # m
    "shapedirs": 1.0,  # m per unit beta
    "posedirs": 1.0,  # m per unit entry of (R - I)
    "hands_components": 100.0,  # rad per unit PCA coefficient
    "hands_mean": 10.0,  # rad (axis-angle)
    "hands_coeffs": 1e4,  # PCA coefficients
}


def _array(raw: dict, key: str, shape: tuple, kinds: str, path: Path) -> np.ndarray:
    if key not in raw:
        raise ManoFormatError(f"{path}: missing key '{key}' (expected an array of shape {_fmt(shape)})")
    value = raw[key]
    if not isinstance(value, np.ndarray):  # never let numpy expand a (memo-shared) nested list
        raise ManoFormatError(f"{path}: key '{key}': expected a numeric array of shape {_fmt(shape)}, got "
                              f"{type(value).__name__}")
    arr = value
    if arr.dtype.kind not in kinds:
        what = "an integer" if kinds == "iu" else "a numeric"
        raise ManoFormatError(f"{path}: key '{key}': expected {what} array, got dtype {arr.dtype}")
    if arr.ndim != len(shape) or any(e is not None and e != s for e, s in zip(shape, arr.shape)):
        raise ManoFormatError(f"{path}: key '{key}': expected shape {_fmt(shape)}, got {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ManoFormatError(f"{path}: key '{key}': contains NaN or infinite values")
    return arr


def _fmt(shape: tuple) -> str:
    return str(tuple("N" if s is None else s for s in shape)).replace("'", "")


def _check_nonnegative(arr: np.ndarray, key: str, path: Path) -> None:
    """Skinning weights and regressor entries are convex-combination coefficients: none may be negative."""
    if arr.min() < -NEGATIVE_TOL:
        row, col = np.unravel_index(int(arr.argmin()), arr.shape)
        raise ManoFormatError(
            f"{path}: key '{key}': entries must be >= 0 (tolerance {NEGATIVE_TOL}); entry ({row}, {col}) is "
            f"{arr[row, col]:.6g}"
        )


def _check_rows_sum_to_one(arr: np.ndarray, key: str, path: Path) -> None:
    err = np.abs(arr.sum(axis=1) - 1.0)
    if err.max() > ROW_SUM_TOL:
        row = int(err.argmax())
        raise ManoFormatError(
            f"{path}: key '{key}': every row must sum to 1 (tolerance {ROW_SUM_TOL}); row {row} sums to "
            f"{arr[row].sum():.6g}"
        )


def _parents_from_kintree(tree: np.ndarray, path: Path) -> np.ndarray:
    if not np.array_equal(tree[1], np.arange(NUM_JOINTS)):
        raise ManoFormatError(f"{path}: key 'kintree_table': row 1 must be 0..15, got {tree[1].tolist()}")
    parents = tree[0].astype(np.int64)
    parents[parents == _ROOT_PARENT_STORED] = -1
    if parents[0] != -1:
        raise ManoFormatError(f"{path}: key 'kintree_table': joint 0 must be the root (parent 2**32-1 or -1)")
    child = np.arange(1, NUM_JOINTS)
    bad = child[(parents[1:] < 0) | (parents[1:] >= child)]
    if bad.size:
        raise ManoFormatError(
            f"{path}: key 'kintree_table': parents must precede their children; joint {int(bad[0])} has "
            f"parent {int(parents[bad[0]])}"
        )
    return parents


def _check_string(raw: dict, key: str, expected: str, path: Path) -> None:
    if key not in raw:
        return
    value = raw[key]
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind == "U":  # as an .npz stores it
        value = str(value)
    if value != expected:
        shown = repr(value)[:60] if isinstance(value, str) else f"a {type(value).__name__}"
        raise ManoFormatError(f"{path}: key '{key}': expected '{expected}', got {shown}")


def _check_magnitudes(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Finite but absurd values (1e308, a model in mm, an all-zero pose basis) are refused by key."""
    for key, limit in MAX_ABS_VALUE.items():
        arr = arrays.get(key)
        if arr is None or arr.size == 0:
            continue
        idx = np.unravel_index(int(np.abs(arr).argmax()), arr.shape)
        if abs(arr[idx]) > limit:
            raise ManoFormatError(f"{path}: key '{key}': |values| must be <= {limit:g} for a hand model in metres "
                                  f"(docs/DEVIATIONS.md 'Input validation'); entry {tuple(map(int, idx))} is "
                                  f"{arr[idx]:.6g}")
    norms = np.linalg.norm(arrays["hands_components"], axis=1)
    if not np.all(norms > 0):
        raise ManoFormatError(f"{path}: key 'hands_components': every PCA component (row) must be non-zero; "
                              f"{int((norms == 0).sum())} of {len(norms)} rows are all zero")


def _build_model(raw: dict, path: Path) -> ManoModel:
    raw = {k: evaluate_record(v, k, path) for k, v in raw.items()}
    arrays = {k: _array(raw, k, shape, "fiu", path).astype(np.float64) for k, shape in _FLOAT_KEYS.items()}
    faces = _array(raw, "f", _INT_KEYS["f"], "iu", path).astype(np.int64)
    tree = _array(raw, "kintree_table", _INT_KEYS["kintree_table"], "iu", path)
    if arrays["shapedirs"].shape[2] < NUM_BETAS:
        raise ManoFormatError(
            f"{path}: key 'shapedirs': expected at least {NUM_BETAS} components, got shape "
            f"{arrays['shapedirs'].shape}"
        )
    for key in ("weights", "J_regressor"):
        _check_nonnegative(arrays[key], key, path)
        _check_rows_sum_to_one(arrays[key], key, path)
    if faces.min() < 0 or faces.max() >= NUM_VERTS:
        raise ManoFormatError(f"{path}: key 'f': vertex indices must lie in 0..{NUM_VERTS - 1}")
    parents = _parents_from_kintree(tree, path)
    _check_string(raw, "bs_style", "lbs", path)
    _check_string(raw, "bs_type", "lrotmin", path)
    coeffs = None
    if "hands_coeffs" in raw:
        coeffs = _array(raw, "hands_coeffs", (None, NUM_HAND_POSE), "fiu", path).astype(np.float64)
    _check_magnitudes({**arrays, "hands_coeffs": coeffs}, path)
    return ManoModel(
        v_template=arrays["v_template"],
        # the real file stores 20 shape components and MANO uses the first 10
        shapedirs=np.ascontiguousarray(arrays["shapedirs"][:, :, :NUM_BETAS]),
        posedirs=arrays["posedirs"],
        J_regressor=arrays["J_regressor"],
        weights=arrays["weights"],
        faces=faces,
        parents=parents,
        hands_components=arrays["hands_components"],
        hands_mean=arrays["hands_mean"],
        hands_coeffs=coeffs,
        source=str(path),
    )


# --------------------------------------------------------------------------------------------------
# public API


def load_mano(path: str | Path) -> ManoModel:
    """Read and validate a MANO model (``MANO_RIGHT.pkl`` v1.2 or an ``.npz`` with the same keys).

    The container is recognised by its content (zip magic = npz, otherwise pickle), not by the suffix.

    Raises:
        FileNotFoundError: no file at ``path`` (the message says where to get the real model / a stand-in).
        ManoFormatError: the file is not a valid MANO model (message names the file, key and expectation).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MANO model file not found: {path}. {MANO_DOWNLOAD_HINT}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ManoFormatError(f"{path}: {size} bytes, more than a MANO model can need ({MAX_FILE_BYTES}; the "
                              "real MANO_RIGHT.pkl has about 3.8 MB)")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    raw = _read_npz(path) if magic == b"PK\x03\x04" else read_pickle(path)
    try:
        return _build_model(raw, path)
    except ManoFormatError:
        raise
    except CONTENT_FAILURES as err:  # a check missed by the validation: still "bad file", never a traceback
        raise ManoFormatError(
            f"{path}: invalid MANO model content ({type(err).__name__}: {err}); expected docs/formats.md §1.2"
        ) from None


def save_mano_npz(model: ManoModel, path: str | Path) -> None:
    """Write ``model`` as a chumpy-free ``.npz`` with the MANO key names (readable by ``load_mano``).

    ``J_regressor`` is stored dense, ``kintree_table`` with the root parent as 2**32-1 (as in the pickle) and
    ``J = J_regressor @ v_template``.
    """
    parents = np.asarray(model.parents, dtype=np.int64).copy()
    parents[parents < 0] = _ROOT_PARENT_STORED
    arrays = {
        "v_template": model.v_template,
        "shapedirs": model.shapedirs,
        "posedirs": model.posedirs,
        "J_regressor": model.J_regressor,
        "weights": model.weights,
        "f": np.asarray(model.faces, dtype=np.int64),
        "kintree_table": np.stack([parents, np.arange(len(parents), dtype=np.int64)]),
        "hands_components": model.hands_components,
        "hands_mean": model.hands_mean,
        "J": model.J_regressor @ model.v_template,
        "bs_style": np.array("lbs"),
        "bs_type": np.array("lrotmin"),
    }
    if model.hands_coeffs is not None:
        arrays["hands_coeffs"] = model.hands_coeffs
    with open(path, "wb") as fh:  # an open handle keeps numpy from appending '.npz' to the name
        np.savez(fh, **arrays)
