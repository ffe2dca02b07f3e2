"""Reading and writing MANO model files without chumpy (formats.md §1).

Two containers are accepted:

- ``MANO_RIGHT.pkl`` (MANO v1.2): a Python-2 pickle of a plain ``dict``. It is untrusted input, so it is
  read by a restricted unpickler that accepts exactly the 7 globals the official file uses (numpy array
  reconstruction, ``set``, the chumpy ``Ch`` / ``Select`` classes and ``scipy.sparse.csc.csc_matrix``;
  formats.md §1.1, plus the two Python-3 spellings §1.3 names) and refuses every other global *before*
  anything can be called. Each accepted global resolves to an immutable sentinel or record class that can
  only produce fresh inert records of arguments and state; arrays, chumpy values and the sparse regressor
  are computed afterwards with plain numpy from validated records (no chumpy, no scipy needed).
- ``.npz`` (no pickle) with the same key names, dense ``J_regressor`` (``save_mano_npz`` writes one).

Everything is validated; any problem raises ``ManoFormatError`` naming the file, the key and what was
expected. Geometry stays in metres, as stored.
"""
from __future__ import annotations

import io
import math
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
# The C unpickler can reach a resolved global in four ways: call it (REDUCE / OBJ / INST), instantiate it
# (NEWOBJ / NEWOBJ_EX, which require a class), BUILD on it (``__setstate__`` or setattr), or push it as a
# value. Hence:
# - the numpy globals and ``set`` resolve to *per-unpickler* sentinel instances of ``__slots__ = ()`` classes
#   (no ``__dict__``: nothing can be set on them); ``__setstate__`` refuses, ``__call__`` only ever returns a
#   fresh record (or a fresh ``set``); ``numpy.ndarray`` is not callable and is recognised by identity;
# - the chumpy / csc globals resolve to record classes (NEWOBJ needs a class) whose metaclass refuses
#   attribute assignment, so BUILD on the class itself changes nothing; ``__new__`` makes a fresh record
#   whose ``__setstate__`` accepts exactly one state of the expected type.
# Unpickling thus only builds records, dicts, tuples, lists, sets and strings. Arrays are made afterwards by
# ``np.frombuffer`` from validated records, so no numpy code (not even ``dtype.__setstate__``) ever sees
# untrusted arguments.


class _Frozen(type):
    """Metaclass of every class a pickle can reach: assigning or deleting class attributes is refused."""

    def __setattr__(cls, name, value):
        raise ManoFormatError(f"refusing to set attribute {name!r} on {cls.__name__}")

    def __delattr__(cls, name):
        raise ManoFormatError(f"refusing to delete attribute {name!r} of {cls.__name__}")


class _InstanceOnly:
    """Descriptor for ``_Record.__setstate__``: BUILD on a record *class* (the global itself) is refused."""

    def __init__(self, fn):
        self.fn = fn

    def __get__(self, obj, owner):
        if obj is None:
            def refuse(*_):
                raise ManoFormatError(f"refusing BUILD on the global {owner.global_name}")
            return refuse
        return self.fn.__get__(obj, owner)


class _Record(metaclass=_Frozen):
    """A fresh inert stand-in object: the constructor arguments and the one ``BUILD`` state."""

    __slots__ = ("args", "state")
    global_name = "?"  # class constants (read-only through the metaclass)
    _state_type: type = dict

    def __new__(cls, *args):
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    @_InstanceOnly
    def __setstate__(self, state):
        if self.state is not None or not isinstance(state, self._state_type):
            raise ManoFormatError(
                f"{self.global_name}: expected one {self._state_type.__name__} state, got "
                f"{type(state).__name__}{' (a second BUILD)' if self.state is not None else ''}"
            )
        self.state = state


class _ChumpyCh(_Record):
    """``chumpy.ch.Ch``: value = ``state['x']``."""

    __slots__ = ()
    global_name = "chumpy.ch.Ch"


class _ChumpySelect(_Record):
    """``chumpy.reordering.Select``: value = ``a.ravel()[idxs].reshape(preferred_shape)``."""

    __slots__ = ()
    global_name = "chumpy.reordering.Select"


class _CscMatrix(_Record):
    """``scipy.sparse.csc.csc_matrix``: ``_shape/data/indices/indptr``, densified by ``_densify_csc``."""

    __slots__ = ()
    global_name = "scipy.sparse.csc.csc_matrix"


class _DtypeRecord(_Record):
    """``numpy.dtype(code, align, copy)`` + state ``(version, byteorder, ...)``."""

    __slots__ = ()
    global_name = "numpy.dtype"
    _state_type = tuple


class _ArrayRecord(_Record):
    """``_reconstruct(ndarray, (0,), 'b')`` + state ``(1, shape, dtype, is_fortran, raw bytes)``."""

    __slots__ = ()
    global_name = "numpy.core.multiarray._reconstruct"
    _state_type = tuple


class _Sentinel(metaclass=_Frozen):
    """What a numpy / ``set`` global resolves to; made per unpickler, compared by identity, immutable."""

    __slots__ = ()
    global_name = "?"

    def __setstate__(self, state):
        raise ManoFormatError(f"refusing BUILD on the global {self.global_name}")

    def __call__(self, *args):
        raise ManoFormatError(f"the global {self.global_name} is not callable in a MANO pickle")


class _NdarraySentinel(_Sentinel):
    """``numpy.ndarray``: only ever the first argument of ``_reconstruct``."""

    __slots__ = ()
    global_name = "numpy.ndarray"


class _ReconstructSentinel(_Sentinel):
    __slots__ = ()
    global_name = "numpy.core.multiarray._reconstruct"

    def __call__(self, *args):
        return _ArrayRecord(*args)


class _DtypeSentinel(_Sentinel):
    __slots__ = ()
    global_name = "numpy.dtype"

    def __call__(self, *args):
        return _DtypeRecord(*args)


class _SetSentinel(_Sentinel):
    __slots__ = ()
    global_name = "set"

    def __call__(self, *args):
        if len(args) > 1:
            raise ManoFormatError("set() takes at most one argument")
        return set(*args)  # a fresh builtin set (chumpy's ``_dirty_vars``); its contents are never used


#: module + name as a pickle spells it -> what it resolves to (a sentinel kind or a record class). Exactly
#: the 7 globals of formats.md §1.1, plus the two alternative spellings formats.md §1.3 names: a pickle
#: re-written by Python 3 / numpy 2 says ``builtins.set`` and ``numpy._core.multiarray._reconstruct``.
_ALLOWED_GLOBALS: dict[tuple[str, str], type] = {
    ("numpy.core.multiarray", "_reconstruct"): _ReconstructSentinel,
    ("numpy._core.multiarray", "_reconstruct"): _ReconstructSentinel,
    ("numpy", "ndarray"): _NdarraySentinel,
    ("numpy", "dtype"): _DtypeSentinel,
    ("__builtin__", "set"): _SetSentinel,
    ("builtins", "set"): _SetSentinel,
    ("chumpy.ch", "Ch"): _ChumpyCh,
    ("chumpy.reordering", "Select"): _ChumpySelect,
    ("scipy.sparse.csc", "csc_matrix"): _CscMatrix,
}
_MAX_NESTING = 8  # the real file nests dict -> Select -> dict -> Ch -> dict -> array
_DTYPE_CODE = re.compile(r"f[248]|[iu][1248]|b1")  # numeric dtypes only (float, int, uint, bool)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of the official MANO pickle; anything else is refused, never imported."""

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        # one sentinel per kind for this unpickler; the record classes are immutable and shared
        kinds = set(_ALLOWED_GLOBALS.values())
        self._sentinels = {kind: kind() for kind in kinds if issubclass(kind, _Sentinel)}
        self.ndarray = self._sentinels[_NdarraySentinel]

    def find_class(self, module: str, name: str):
        kind = _ALLOWED_GLOBALS.get((module, name))
        if kind is None:
            raise ManoFormatError(
                f"refusing global {module}.{name}: a MANO pickle only references numpy arrays, set, "
                "chumpy Ch/Select and scipy.sparse.csc.csc_matrix (formats.md §1.1)"
            )
        return self._sentinels.get(kind, kind)

    def persistent_load(self, pid):
        raise ManoFormatError("refusing a persistent id: a MANO pickle has none")


#: what unpickling corrupt or truncated bytes, or computing on a hostile file's values, can raise
_CONTENT_FAILURES = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
    OverflowError, MemoryError, RecursionError,
)


def _make_array(record: _ArrayRecord, ndarray: _NdarraySentinel) -> np.ndarray:
    """The ndarray an ``_ArrayRecord`` describes, after checking every field (raises ValueError)."""
    state = record.state
    if not isinstance(state, tuple) or len(state) not in (4, 5) or record.args[:1] != (ndarray,):
        raise ValueError("malformed ndarray record")
    shape, dtype_rec, fortran, raw = state[-4:]  # version 1 states lead with the version number
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise ValueError(f"bad array shape {shape!r}")
    code = dtype_rec.args[0] if isinstance(dtype_rec, _DtypeRecord) and dtype_rec.args else None
    if not isinstance(code, str) or not _DTYPE_CODE.fullmatch(code):
        raise ValueError(f"unsupported array dtype {code!r} (numeric arrays only)")
    order = dtype_rec.state[1] if isinstance(dtype_rec.state, tuple) and len(dtype_rec.state) > 1 else "="
    dtype = np.dtype((order if order in ("<", ">") else "=") + code)
    data = raw.encode("latin1") if isinstance(raw, str) else raw  # Py2 str payloads arrive as latin1 str
    count = math.prod(shape)  # exact Python int: a huge declared shape cannot wrap around
    if not isinstance(data, bytes) or len(data) != count * dtype.itemsize:
        raise ValueError(f"array payload does not hold {count} values of {dtype}")
    arr = np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")
    return arr.astype(dtype.newbyteorder("="))  # an owned, writable, native-order copy


def _materialise(obj, ndarray: _NdarraySentinel, where: str = "", depth: int = 0):
    """Replace array records by ndarrays inside containers and record states (depth-limited: no cycles).

    ``where`` names the top-level key for error messages.
    """
    if depth > _MAX_NESTING:
        raise ManoFormatError(f"{where}: objects nested deeper than {_MAX_NESTING} levels")
    if isinstance(obj, _ArrayRecord):
        try:
            return _make_array(obj, ndarray)
        except ValueError as err:
            raise ManoFormatError(f"{where}: {err}") from None
    if isinstance(obj, dict):
        return {k: _materialise(v, ndarray, where or f"key {k!r}", depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v, ndarray, where, depth + 1) for v in obj)
    if isinstance(obj, (_ChumpyCh, _ChumpySelect, _CscMatrix)):
        obj.state = _materialise(obj.state, ndarray, where, depth + 1)
    return obj


def _unpickle(path: Path) -> dict:
    raw = path.read_bytes()
    try:
        unpickler = _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1")
        obj = _materialise(unpickler.load(), unpickler.ndarray)
    except ManoFormatError as err:
        raise ManoFormatError(f"{path}: {err}") from None
    except _CONTENT_FAILURES as err:  # untrusted bytes: the unpickler failing means "not a MANO pickle"
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


#: the only sparse entry of MANO v1.2 and its (rows, cols); a csc_matrix anywhere else is refused
_SPARSE_SHAPES = {"J_regressor": (NUM_JOINTS, NUM_VERTS)}


def _densify_csc(state, key: str, path: Path) -> np.ndarray:
    """Dense (rows, cols) float64 array from a pickled old-scipy ``csc_matrix`` state.

    Column j owns entries ``indptr[j]:indptr[j+1]``; duplicate entries accumulate. Everything is checked
    against the expected shape *before* anything is allocated, so a hostile ``_shape`` cannot ask for memory.
    """
    where = f"{path}: key '{key}'"
    expected = _SPARSE_SHAPES.get(key)
    if expected is None:
        raise ManoFormatError(f"{where}: unexpected csc_matrix (only J_regressor is sparse in MANO v1.2)")
    rows, cols = expected
    if not isinstance(state, dict) or not {"data", "indices", "indptr"} <= set(state):
        raise ManoFormatError(f"{where}: csc_matrix without data/indices/indptr")
    shape = state.get("_shape", state.get("shape"))
    if not (isinstance(shape, (tuple, list)) and all(type(s) is int for s in shape)
            and tuple(shape) == expected):
        raise ManoFormatError(f"{where}: csc_matrix '_shape' must be {expected}, got {shape!r}")
    data, indices, indptr = (np.asarray(state[k]) for k in ("data", "indices", "indptr"))
    if not (data.ndim == 1 and data.dtype.kind in "fiu" and indices.dtype.kind in "iu"
            and indices.shape == data.shape):
        raise ManoFormatError(
            f"{where}: csc_matrix needs 1-D numeric 'data' and integer 'indices' of the same length, got "
            f"{data.dtype}{data.shape} and {indices.dtype}{indices.shape}"
        )
    if not (indptr.dtype.kind in "iu" and indptr.shape == (cols + 1,)):
        raise ManoFormatError(
            f"{where}: csc_matrix of shape {expected} needs an integer 'indptr' of {cols + 1} entries, got "
            f"{indptr.dtype}{indptr.shape}"
        )
    # int64 before differencing: unsigned differences would wrap instead of going negative
    indptr, indices = indptr.astype(np.int64), indices.astype(np.int64)
    if not (indptr[0] == 0 and indptr[-1] == data.size and np.all(np.diff(indptr) >= 0)):
        raise ManoFormatError(
            f"{where}: csc_matrix 'indptr' must rise monotonically from 0 to {data.size} (the entry count)"
        )
    if indices.size and (indices.min() < 0 or indices.max() >= rows):
        raise ManoFormatError(f"{where}: csc_matrix row indices must lie in 0..{rows - 1}")
    dense = np.zeros(expected, dtype=np.float64)
    col_of_entry = np.repeat(np.arange(cols), np.diff(indptr))
    np.add.at(dense, (indices, col_of_entry), data.astype(np.float64))
    return dense


def _read_npz(path: Path) -> dict:
    try:  # our own handle: numpy leaks the one it opens when the zip is corrupt
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, MemoryError) as err:
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
    try:
        return _build_model(raw, path)
    except ManoFormatError:
        raise
    except _CONTENT_FAILURES as err:  # a check missed by the validation: still "bad file", never a traceback
        raise ManoFormatError(
            f"{path}: invalid MANO model content ({type(err).__name__}: {err}); expected formats.md §1.2"
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
