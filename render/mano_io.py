"""Reading and writing MANO model files without chumpy (formats.md §1).

Two containers are accepted:

- ``MANO_RIGHT.pkl`` (MANO v1.2): a Python-2 pickle of a plain ``dict``. It is untrusted input, so it is
  read by a restricted unpickler that accepts exactly the globals the official file uses (numpy array
  reconstruction, ``set``, the chumpy ``Ch`` / ``Select`` classes and scipy's ``csc_matrix``) and refuses
  every other global *before* anything can be called. Each accepted global is replaced by an inert record
  of its arguments and state; arrays, chumpy values and the sparse regressor are computed afterwards with
  plain numpy from validated records (no chumpy, no scipy needed).
- ``.npz`` (no pickle) with the same key names, dense ``J_regressor`` (``save_mano_npz`` writes one).

Everything is validated; any problem raises ``ManoFormatError`` naming the file, the key and what was
expected. Geometry stays in metres, as stored.
"""
from __future__ import annotations

import io
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NUM_VERTS = 778
NUM_FACES = 1538
NUM_JOINTS = 16
NUM_BETAS = 10
NUM_POSE_BASIS = 135  # 15 finger joints x 9 entries of (R - I)
NUM_HAND_POSE = 45  # 15 finger joints x 3 axis-angle values
#: rows of the skinning weights and of the joint regressor must sum to 1; loose enough for float32 files
ROW_SUM_TOL = 1e-4
#: the root's parent as stored in ``kintree_table`` (uint32 -1)
_ROOT_PARENT_STORED = 2**32 - 1

MANO_DOWNLOAD_HINT = (
    "The real model comes from https://mano.is.tue.mpg.de (register, accept the licence, download MANO v1.2; "
    "the file is mano_v1_2/models/MANO_RIGHT.pkl). Put it at MANO/MANO_RIGHT.pkl in the repository or pass "
    "mano_path=... . For tests/demo, `python -m render.standin --out PATH` writes a procedural stand-in in "
    "the same format."
)


class ManoFormatError(ValueError):
    """A MANO model file is not what formats.md §1 describes (message names the file and the key)."""


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


# --------------------------------------------------------------------------------------------------
# restricted unpickling
#
# Every allowed global maps to an inert recorder: unpickling only builds these records, dicts, tuples, lists,
# sets and strings. Arrays are made afterwards by ``np.frombuffer`` from validated records, so no numpy code
# (not even ``dtype.__setstate__``) ever sees untrusted arguments.


class _Recorded:
    """Base of the inert stand-ins: accepts constructor arguments and keeps the ``BUILD`` state."""

    def __init__(self, *args):
        self.args = args
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _ChumpyCh(_Recorded):
    """``chumpy.ch.Ch``: value = ``state['x']``."""


class _ChumpySelect(_Recorded):
    """``chumpy.reordering.Select``: value = ``a.ravel()[idxs].reshape(preferred_shape)``."""


class _CscMatrix(_Recorded):
    """``scipy.sparse.csc_matrix``: ``data/indices/indptr/_shape``, densified by ``_densify_csc``."""


class _DtypeRecord(_Recorded):
    """``numpy.dtype(code, align, copy)`` + state ``(version, byteorder, ...)``."""


class _ArrayRecord(_Recorded):
    """``_reconstruct(ndarray, (0,), 'b')`` + state ``(1, shape, dtype, is_fortran, raw bytes)``."""


class _NdarrayMarker:
    """Stands for the ``numpy.ndarray`` global (only ever an argument of ``_reconstruct``)."""


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _ArrayRecord,
    ("numpy._core.multiarray", "_reconstruct"): _ArrayRecord,
    ("numpy", "ndarray"): _NdarrayMarker,
    ("numpy", "dtype"): _DtypeRecord,
    ("__builtin__", "set"): set,
    ("builtins", "set"): set,
    ("chumpy.ch", "Ch"): _ChumpyCh,
    ("chumpy.reordering", "Select"): _ChumpySelect,
    ("scipy.sparse.csc", "csc_matrix"): _CscMatrix,
    ("scipy.sparse._csc", "csc_matrix"): _CscMatrix,
    ("scipy.sparse", "csc_matrix"): _CscMatrix,
}
_MAX_NESTING = 8  # the real file nests dict -> Select -> dict -> Ch -> dict -> array
_DTYPE_CODE = re.compile(r"[fiub][1248]")  # numeric dtypes only (float, int, uint, bool)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of the official MANO pickle; anything else is refused, never imported."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ManoFormatError(
                f"refusing global {module}.{name}: a MANO pickle only references numpy arrays, set, "
                "chumpy Ch/Select and scipy csc_matrix"
            ) from None

    def persistent_load(self, pid):
        raise ManoFormatError("refusing a persistent id: a MANO pickle has none")


# what unpickling corrupt or truncated bytes (or the recorders on bad arguments) can raise
_UNPICKLING_FAILURES = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
    OverflowError, MemoryError, RecursionError,
)


def _make_array(record: _ArrayRecord) -> np.ndarray:
    """The ndarray an ``_ArrayRecord`` describes, after checking every field (raises ValueError)."""
    state = record.state
    if not isinstance(state, tuple) or len(state) not in (4, 5) or record.args[:1] != (_NdarrayMarker,):
        raise ValueError("malformed ndarray record")
    shape, dtype_rec, fortran, raw = state[-4:]  # version 1 states lead with the version number
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise ValueError(f"bad array shape {shape!r}")
    code = dtype_rec.args[0] if isinstance(dtype_rec, _DtypeRecord) and dtype_rec.args else None
    if not isinstance(code, str) or not _DTYPE_CODE.fullmatch(code):
        raise ValueError(f"unsupported array dtype {code!r} (numeric arrays only)")
    order = dtype_rec.state[1] if isinstance(dtype_rec.state, tuple) and len(dtype_rec.state) > 1 else "="
    dtype = np.dtype((order if order in ("<", ">") else "=") + code)
    data = raw.encode("latin1") if isinstance(raw, str) else raw  # Py2 str payloads arrive as latin1 str
    count = int(np.prod(shape, dtype=np.int64))
    if not isinstance(data, bytes) or len(data) != count * dtype.itemsize:
        raise ValueError(f"array payload does not hold {count} values of {dtype}")
    arr = np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")
    return arr.astype(dtype.newbyteorder("="))  # an owned, writable, native-order copy


def _materialise(obj, where: str = "", depth: int = 0):
    """Replace array records by ndarrays inside containers and stub states (depth-limited: no cycles).

    ``where`` names the top-level key for error messages.
    """
    if depth > _MAX_NESTING:
        raise ManoFormatError(f"{where}: objects nested deeper than {_MAX_NESTING} levels")
    if isinstance(obj, _ArrayRecord):
        try:
            return _make_array(obj)
        except ValueError as err:
            raise ManoFormatError(f"{where}: {err}") from None
    if isinstance(obj, dict):
        return {k: _materialise(v, where or f"key {k!r}", depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v, where, depth + 1) for v in obj)
    if isinstance(obj, (_ChumpyCh, _ChumpySelect, _CscMatrix)):
        obj.state = _materialise(obj.state, where, depth + 1)
    return obj


def _unpickle(path: Path) -> dict:
    raw = path.read_bytes()
    try:
        obj = _materialise(_RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load())
    except ManoFormatError as err:
        raise ManoFormatError(f"{path}: {err}") from None
    except _UNPICKLING_FAILURES as err:  # untrusted bytes: the unpickler failing means "not a MANO pickle"
        raise ManoFormatError(
            f"{path}: not a readable MANO pickle ({type(err).__name__}: {err}); expected a protocol-2 pickle "
            "of a dict"
        ) from None
    if not isinstance(obj, dict):
        raise ManoFormatError(f"{path}: top-level object is {type(obj).__name__}, expected a dict")
    return obj


def _evaluate(value, key: str, path: Path, depth: int = 0):
    """Turn chumpy / sparse stubs into dense numpy arrays (formats.md §1.3); other values pass through."""
    if depth > _MAX_NESTING:  # a hostile pickle can make a Ch contain itself
        raise ManoFormatError(f"{path}: key '{key}': chumpy objects nested too deeply")
    if isinstance(value, _ChumpyCh):
        if not isinstance(value.state, dict) or "x" not in value.state:
            raise ManoFormatError(f"{path}: key '{key}': chumpy Ch without an 'x' array")
        return np.asarray(_evaluate(value.state["x"], key, path, depth + 1))
    if isinstance(value, _ChumpySelect):
        state = value.state
        if not isinstance(state, dict) or not {"a", "idxs", "preferred_shape"} <= set(state):
            raise ManoFormatError(
                f"{path}: key '{key}': chumpy Select lacks 'a', 'idxs' or 'preferred_shape'"
            )
        source = np.asarray(_evaluate(state["a"], key, path, depth + 1)).ravel()
        idxs = np.asarray(state["idxs"])
        if idxs.dtype.kind not in "iu" or (idxs.size and (idxs.min() < 0 or idxs.max() >= source.size)):
            raise ManoFormatError(
                f"{path}: key '{key}': chumpy Select indices out of range 0..{source.size - 1}"
            )
        try:
            return source[idxs.ravel()].reshape(tuple(state["preferred_shape"]))
        except (TypeError, ValueError) as err:
            raise ManoFormatError(f"{path}: key '{key}': chumpy Select cannot be reshaped ({err})") from None
    if isinstance(value, _CscMatrix):
        return _densify_csc(value.state, key, path)
    return value


def _densify_csc(state, key: str, path: Path) -> np.ndarray:
    """Dense (rows, cols) array from a pickled ``csc_matrix`` state; duplicate entries accumulate."""
    if not isinstance(state, dict) or not {"data", "indices", "indptr"} <= set(state):
        raise ManoFormatError(f"{path}: key '{key}': csc_matrix without data/indices/indptr")
    shape = state.get("_shape", state.get("shape"))
    data, indices, indptr = (np.asarray(state[k]) for k in ("data", "indices", "indptr"))
    try:
        rows, cols = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ManoFormatError(f"{path}: key '{key}': csc_matrix has no valid '_shape'") from None
    ok = (
        indptr.ndim == 1 and indptr.size == cols + 1 and indptr.dtype.kind in "iu"
        and indices.dtype.kind in "iu" and data.ndim == 1 and indices.shape == data.shape
        and indptr[0] == 0 and indptr[-1] == data.size and np.all(np.diff(indptr) >= 0)
        and (indices.size == 0 or (indices.min() >= 0 and indices.max() < rows))
    )
    if not ok:
        raise ManoFormatError(
            f"{path}: key '{key}': inconsistent csc_matrix arrays for shape ({rows}, {cols})"
        )
    dense = np.zeros((rows, cols), dtype=np.float64)
    col_of_entry = np.repeat(np.arange(cols), np.diff(indptr))  # column j owns entries indptr[j]:indptr[j+1]
    np.add.at(dense, (indices, col_of_entry), data)
    return dense


def _read_npz(path: Path) -> dict:
    try:  # our own handle: numpy leaks the one it opens when the zip is corrupt
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise ManoFormatError(f"{path}: not a readable MANO .npz ({type(err).__name__}: {err})") from None


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


def _array(raw: dict, key: str, shape: tuple, kinds: str, path: Path) -> np.ndarray:
    if key not in raw:
        raise ManoFormatError(f"{path}: missing key '{key}' (expected an array of shape {_fmt(shape)})")
    value = raw[key]
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        raise ManoFormatError(f"{path}: key '{key}': not an array ({type(value).__name__})") from None
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
    if key in raw and str(np.asarray(raw[key])) != expected:
        raise ManoFormatError(f"{path}: key '{key}': expected '{expected}', got {raw[key]!r}")


def _build_model(raw: dict, path: Path) -> ManoModel:
    raw = {k: _evaluate(v, k, path) for k, v in raw.items()}
    arrays = {k: _array(raw, k, shape, "fiu", path).astype(np.float64) for k, shape in _FLOAT_KEYS.items()}
    faces = _array(raw, "f", _INT_KEYS["f"], "iu", path).astype(np.int64)
    tree = _array(raw, "kintree_table", _INT_KEYS["kintree_table"], "iu", path)
    if arrays["shapedirs"].shape[2] < NUM_BETAS:
        raise ManoFormatError(
            f"{path}: key 'shapedirs': expected at least {NUM_BETAS} components, got shape "
            f"{arrays['shapedirs'].shape}"
        )
    _check_rows_sum_to_one(arrays["weights"], "weights", path)
    _check_rows_sum_to_one(arrays["J_regressor"], "J_regressor", path)
    if faces.min() < 0 or faces.max() >= NUM_VERTS:
        raise ManoFormatError(f"{path}: key 'f': vertex indices must lie in 0..{NUM_VERTS - 1}")
    parents = _parents_from_kintree(tree, path)
    _check_string(raw, "bs_style", "lbs", path)
    _check_string(raw, "bs_type", "lrotmin", path)
    coeffs = None
    if "hands_coeffs" in raw:
        coeffs = _array(raw, "hands_coeffs", (None, NUM_HAND_POSE), "fiu", path).astype(np.float64)
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
    with open(path, "rb") as fh:
        magic = fh.read(4)
    raw = _read_npz(path) if magic == b"PK\x03\x04" else _unpickle(path)
    return _build_model(raw, path)


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
