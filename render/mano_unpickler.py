"""Restricted reader of the MANO v1.2 pickle container (docs/formats.md §1.1, §1.3), used by ``render.mano_io``.

``MANO_RIGHT.pkl`` is untrusted input: :func:`read_pickle` unpickles it with an unpickler that accepts exactly
the 7 globals the official file uses (plus the two Python-3 spellings docs/formats.md §1.3 names) and refuses
every other global *before* anything can be called. Each accepted global resolves to an immutable sentinel or
record class that can only produce fresh inert records of arguments and state; arrays are then made with
``np.frombuffer`` from validated records, and :func:`evaluate_record` turns the chumpy ``Ch`` / ``Select``
records and the old-scipy ``csc_matrix`` record into dense numpy arrays (no chumpy, no scipy needed).
Every problem raises ``ManoFormatError`` naming the file and what was expected.
"""
from __future__ import annotations

import io
import math
import pickle
import pickletools
import re
from pathlib import Path

import numpy as np

from render.mano_format import NUM_JOINTS, NUM_VERTS, ManoFormatError


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
#: the 7 globals of docs/formats.md §1.1, plus the two alternative spellings docs/formats.md §1.3 names: a pickle
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
#: resource bounds for untrusted files (docs/DEVIATIONS.md "Input validation"); the real MANO_RIGHT.pkl is about
#: 3.8 MB, builds < 100 containers and nests tuples 3 deep (array state -> shape), so each bound is far away:
MAX_FILE_BYTES = 256 * 2**20
#: containers and values visited when replacing array records (memo-shared lists are visited once each)
MAX_ELEMENTS = 10**6
#: tuples (and frozensets) inside tuples: hashing a 200,000-deep tuple overflows the C stack (a segfault), and
#: the C unpickler hashes dict keys and set members itself, so the opcodes are checked before unpickling
MAX_TUPLE_DEPTH = 16
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
                "chumpy Ch/Select and scipy.sparse.csc.csc_matrix (docs/formats.md §1.1)"
            )
        return self._sentinels.get(kind, kind)

    def persistent_load(self, pid):
        raise ManoFormatError("refusing a persistent id: a MANO pickle has none")


#: what unpickling corrupt or truncated bytes, or computing on a hostile file's values, can raise
CONTENT_FAILURES = (
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


def check_opcodes(raw: bytes) -> None:
    """Refuse a pickle whose tuples nest deeper than ``MAX_TUPLE_DEPTH``, before the C unpickler runs.

    A light simulation of the unpickler's stack (``pickletools``, pure Python, no recursion): every stack item
    and memo entry carries its tuple depth (1 + the deepest tuple among a tuple's items, 0 for anything else).
    Tuples are immutable, so the depth fixed at creation is exact; a list, dict or record in between is not
    hashed through (unhashable or hashed by identity), so only tuple / frozenset chains matter.
    """
    mark = -1
    stack: list[int] = []
    marks: list[int] = []  # stack positions of the open marks (no scans: linear in the opcode count)
    memo: dict[int, int] = {}

    def pop_to_mark() -> list[int]:
        if not marks:
            raise ValueError("MARK missing")
        i = marks.pop()
        items = stack[i + 1:]
        del stack[i:]
        return items

    for op, arg, _ in pickletools.genops(io.BytesIO(raw)):
        name = op.name
        tuple_arity = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}.get(name)
        if tuple_arity is not None or name in ("TUPLE", "FROZENSET"):
            if tuple_arity is None:
                items = pop_to_mark()
            else:
                items = stack[len(stack) - tuple_arity:] if tuple_arity else []
                if len(items) != tuple_arity or mark in items:
                    raise ValueError(f"{name} on a short stack")
                del stack[len(stack) - tuple_arity:]
            depth = 1 + max(items, default=0)
            if depth > MAX_TUPLE_DEPTH:
                raise ManoFormatError(f"tuples nested deeper than {MAX_TUPLE_DEPTH} levels (a MANO pickle nests "
                                      "them 3 deep; deeper ones could crash the interpreter when hashed)")
            stack.append(depth)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if not stack or stack[-1] == mark:
                raise ValueError(f"{name} on an empty stack")
            memo[len(memo) if name == "MEMOIZE" else int(arg)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if int(arg) not in memo:
                raise ValueError(f"memo key {arg} missing")
            stack.append(memo[int(arg)])
        elif name == "DUP":
            if not stack or stack[-1] == mark:
                raise ValueError("DUP without an object on the stack")
            stack.append(stack[-1])
        else:  # generic stack effect: what pickletools documents for the opcode; results are not tuples
            before, after = op.stack_before, op.stack_after
            if pickletools.markobject in before or (name == "POP" and stack and stack[-1] == mark):
                pop_to_mark()
                keep = before.index(pickletools.markobject) if pickletools.markobject in before else 0
            else:
                keep = len(before)
            if keep:
                if len(stack) < keep or mark in stack[len(stack) - keep:]:
                    raise ValueError(f"{name} on a short stack")
                del stack[len(stack) - keep:]
            for a in after:
                if a is pickletools.markobject:
                    marks.append(len(stack))
                    stack.append(mark)
                else:
                    stack.append(0)


def _materialise(obj, ndarray: _NdarraySentinel, where: str = "", depth: int = 0, seen: dict | None = None,
                 budget: list[int] | None = None):
    """Replace array records by ndarrays inside containers and record states (depth-limited: no cycles).

    ``where`` names the top-level key for error messages. A container reached again through the pickle memo is
    replaced once (``seen``: id -> result), so shared structure stays shared instead of being rebuilt per
    reference, and every visit spends one unit of ``budget`` (``MAX_ELEMENTS`` in all).
    """
    seen = {} if seen is None else seen
    budget = [MAX_ELEMENTS] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise ManoFormatError(f"more than {MAX_ELEMENTS} values in containers (the real MANO file has < 1000)")
    if depth > _MAX_NESTING:
        raise ManoFormatError(f"{where}: objects nested deeper than {_MAX_NESTING} levels")
    if id(obj) in seen:
        return seen[id(obj)][1]
    if isinstance(obj, _ArrayRecord):
        try:
            out = _make_array(obj, ndarray)
        except ValueError as err:
            raise ManoFormatError(f"{where}: {err}") from None
    elif isinstance(obj, dict):
        out = {k: _materialise(v, ndarray, where or f"key {k!r}", depth + 1, seen, budget) for k, v in obj.items()}
    elif isinstance(obj, (list, tuple)):
        out = type(obj)(_materialise(v, ndarray, where, depth + 1, seen, budget) for v in obj)
    else:
        if isinstance(obj, (_ChumpyCh, _ChumpySelect, _CscMatrix)):
            obj.state = _materialise(obj.state, ndarray, where, depth + 1, seen, budget)
        out = obj
    seen[id(obj)] = (obj, out)  # keep obj alive: its id must not be reused while the table exists
    return out


def read_pickle(path: Path) -> dict:
    """The top-level dict of the MANO pickle at ``path`` (raises ``ManoFormatError`` naming ``path``).

    Array records are already numpy arrays; chumpy / csc values are still records, see
    :func:`evaluate_record`.
    """
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ManoFormatError(f"{path}: {size} bytes, more than a MANO model can need ({MAX_FILE_BYTES}; the "
                              "real MANO_RIGHT.pkl has about 3.8 MB)")
    raw = path.read_bytes()
    try:
        check_opcodes(raw)
        unpickler = _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1")
        obj = _materialise(unpickler.load(), unpickler.ndarray)
    except ManoFormatError as err:
        raise ManoFormatError(f"{path}: {err}") from None
    except CONTENT_FAILURES as err:  # untrusted bytes: the unpickler failing means "not a MANO pickle"
        raise ManoFormatError(
            f"{path}: not a readable MANO pickle ({type(err).__name__}: {err}); expected a protocol-2 pickle "
            "of a dict"
        ) from None
    if not isinstance(obj, dict):
        raise ManoFormatError(f"{path}: top-level object is {type(obj).__name__}, expected a dict")
    return obj


def evaluate_record(value, key: str, path: Path, depth: int = 0):
    """Turn chumpy / sparse stubs into dense numpy arrays (docs/formats.md §1.3); other values pass through."""
    if depth > _MAX_NESTING:  # a hostile pickle can make a Ch contain itself
        raise ManoFormatError(f"{path}: key '{key}': chumpy objects nested too deeply")
    if isinstance(value, _ChumpyCh):
        if not isinstance(value.state, dict) or "x" not in value.state:
            raise ManoFormatError(f"{path}: key '{key}': chumpy Ch without an 'x' array")
        return _require_array(evaluate_record(value.state["x"], key, path, depth + 1), "chumpy Ch 'x'", key, path)
    if isinstance(value, _ChumpySelect):
        state = value.state
        if not isinstance(state, dict) or not {"a", "idxs", "preferred_shape"} <= set(state):
            raise ManoFormatError(
                f"{path}: key '{key}': chumpy Select lacks 'a', 'idxs' or 'preferred_shape'"
            )
        source = _require_array(evaluate_record(state["a"], key, path, depth + 1), "chumpy Select 'a'", key,
                                path).ravel()
        idxs = _require_array(state["idxs"], "chumpy Select 'idxs'", key, path)
        if idxs.dtype.kind not in "iu" or (idxs.size and (idxs.min() < 0 or idxs.max() >= source.size)):
            raise ManoFormatError(
                f"{path}: key '{key}': chumpy Select indices out of range 0..{source.size - 1}"
            )
        shape = state["preferred_shape"]
        if not (isinstance(shape, (tuple, list)) and len(shape) <= _MAX_NESTING
                and all(type(n) is int and n >= 0 for n in shape) and math.prod(shape) == idxs.size):
            raise ManoFormatError(f"{path}: key '{key}': chumpy Select 'preferred_shape' must be a tuple of at "
                                  f"most {_MAX_NESTING} sizes holding its {idxs.size} indices")
        return source[idxs.ravel()].reshape(tuple(shape))
    if isinstance(value, _CscMatrix):
        return _densify_csc(value.state, key, path)
    return value


def _require_array(value, what: str, key: str, path: Path) -> np.ndarray:
    """``value`` when it is a numpy array; anything else is refused *before* numpy converts it (converting a
    memo-shared nested list would allocate its full, exponentially large, expansion)."""
    if not isinstance(value, np.ndarray):
        raise ManoFormatError(f"{path}: key '{key}': {what} must be a numpy array, got {type(value).__name__}")
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
    data, indices, indptr = (_require_array(state[k], f"csc_matrix '{k}'", key, path)
                             for k in ("data", "indices", "indptr"))
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
