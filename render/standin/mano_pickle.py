"""Writer of the MANO v1.2 pickle container (docs/formats.md §1.1, §2.3), used by ``render.standin``.

A pure-Python protocol-2 pickler that emits exactly the 7 globals of the licensed ``MANO_RIGHT.pkl`` (numpy
array reconstruction, ``set``, chumpy ``Ch`` / ``Select``, old-scipy ``csc_matrix``) and refuses any
other: ``shapedirs`` is written as chumpy ``Select(Ch(778x3x20))`` and ``J_regressor`` as an old-style CSC
state, with inert placeholder classes standing for the foreign ones, so neither chumpy nor old scipy is
needed to write.
"""
from __future__ import annotations

import copyreg
import io
import pickle

import numpy as np
from scipy import sparse

from render.mano_format import NUM_BETAS, NUM_JOINTS, NUM_VERTS


class _Foreign:
    """Object of a class the reader must not import (chumpy, old scipy): written as NEWOBJ + BUILD(state)."""

    def __init__(self, state: dict) -> None:
        self.state = state


class _Ch(_Foreign):
    pass


class _Select(_Foreign):
    pass


class _CscMatrix(_Foreign):
    pass


# markers standing for numpy objects in the file; classes (not functions) so that pickle's type dispatch
# routes them through _V12Pickler.save_global
class _ReconstructMarker:
    pass


class _NdarrayMarker:
    pass


class _DtypeMarker:
    pass


#: every global the file may reference -> (module, name) as written by Python 2 (docs/formats.md §1.1)
_GLOBALS = {
    _ReconstructMarker: ("numpy.core.multiarray", "_reconstruct"),
    _NdarrayMarker: ("numpy", "ndarray"),
    _DtypeMarker: ("numpy", "dtype"),
    set: ("__builtin__", "set"),
    _Ch: ("chumpy.ch", "Ch"),
    _Select: ("chumpy.reordering", "Select"),
    _CscMatrix: ("scipy.sparse.csc", "csc_matrix"),
}


class _V12Pickler(pickle._Pickler):
    """Pure-Python protocol-2 pickler emitting only the 7 globals of MANO v1.2 (docs/formats.md §2.3)."""

    def __init__(self, file) -> None:
        super().__init__(file, protocol=2)

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            # numpy's legacy reduce; the raw buffer as a latin-1 str, like a Python 2 str payload
            arr = np.ascontiguousarray(obj)
            state = (1, tuple(int(n) for n in arr.shape), arr.dtype, False, arr.tobytes().decode("latin1"))
            return _ReconstructMarker, (_NdarrayMarker, (0,), "b"), state
        if isinstance(obj, np.dtype):
            return _DtypeMarker, (obj.str[1:], 0, 1), (3, obj.str[0], None, None, None, -1, -1, 0)
        if isinstance(obj, _Foreign):
            return copyreg.__newobj__, (type(obj),), obj.state
        return NotImplemented

    def save_global(self, obj, name=None):
        try:
            module, qualname = _GLOBALS[obj]
        except (KeyError, TypeError):
            raise pickle.PicklingError(f"stand-in writer refuses global {obj!r}") from None
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("ascii"))
        self.memoize(obj)


def _chumpy_internals() -> dict:
    """The bookkeeping entries chumpy's ``Ch.__getstate__`` leaves in a state (after evaluation)."""
    return {"_dirty_vars": set(), "_itr": None, "_make_dense": False, "_make_sparse": False,
            "_depends_on_deps": {}}


def _container(model: dict, shapes20: np.ndarray) -> dict:
    """The 13 entries with shapedirs / J_regressor replaced by their chumpy / old-scipy objects."""
    csc = sparse.csc_matrix(model["J_regressor"])
    csc.sort_indices()
    out = dict(model)
    out["J_regressor"] = _CscMatrix({
        "_shape": (NUM_JOINTS, NUM_VERTS), "data": csc.data.astype(np.float64),
        "indices": csc.indices.astype(np.int32), "indptr": csc.indptr.astype(np.int32),
        "maxprint": 50, "format": "csc"})
    ch = _Ch({**_chumpy_internals(), "x": shapes20})
    idxs = np.arange(shapes20.size, dtype=np.int64).reshape(shapes20.shape)[:, :, :NUM_BETAS].ravel()
    out["shapedirs"] = _Select({**_chumpy_internals(), "a": ch, "idxs": idxs,
                                "preferred_shape": (NUM_VERTS, 3, NUM_BETAS)})
    return out


def v12_pickle_bytes(model: dict, shapes20: np.ndarray) -> bytes:
    """The MANO v1.2 pickle of ``model``.

    Args:
        model: the 13 entries (plain arrays / strs, dense (16, 778) ``J_regressor``) in file order.
        shapes20: (778, 3, 20) all shape components; ``shapedirs`` is written as a chumpy ``Select`` of its
            first 10 components, as in the licensed file.

    Returns:
        The file content (deterministic for a given input).
    """
    buf = io.BytesIO()
    _V12Pickler(buf).dump(_container(model, shapes20))
    return buf.getvalue()
