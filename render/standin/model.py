"""Assembly and writing of the procedural stand-in ``MANO_RIGHT.pkl`` (MANO v1.2 container, no MANO data).

``python -m render.standin --out PATH [--npz]`` (:func:`main`) writes a right-hand model that goes through the same
restricted reader as the licensed file (docs/formats.md §1.1-1.2, §2): a protocol-2 pickle of a 13-key dict with
exactly the 7 globals of the real file, ``shapedirs`` as chumpy ``Select(Ch(778x3x20))``, ``J_regressor`` as
an old-style CSC state. Real chumpy (chumpy-fixed) also loads it.

Geometry (metres, rest pose = flat right hand): fingers along -x, index on +z, pinky on -z, thumb on the +z/+x
side slightly towards -y; y is the palm normal, the palm faces -y and finger flexion is a positive rotation
about ~+z. The mesh is one consistently oriented triangulated disk (V = 778, F = 1538) whose only boundary
is the wrist loop ``util.joints.WRIST_LOOP_VERTEX_IDS`` in that cyclic order: the fan
``(loop[i], loop[i+1], 778)`` closes it with outward normals, as in DSF. Construction: a palm tube of vertex
rings grows from the wrist ring to a "knuckle ring" made of the four finger base rings joined by small web
patches; the thumb tube leaves a 3x2-quad window cut out of the palm grid; every finger ends in a rounded cap
whose apex is the reserved fingertip vertex. Deterministic; float arrays are rounded to float32-representable
values so that the bytes do not depend on last-ulp differences of libm / LAPACK between machines.

This module assembles the model and writes it; the parts live in ``render.standin.geometry`` (dimensions and
vertex rings), ``render.standin.mesh`` (triangulation, orientation, MANO vertex ids), ``render.standin.rig``
(skinning weights, joint regressor, shape blend shapes), ``render.standin.pose`` (pose prior / PCA) and
``render.standin.mano_pickle`` (the v1.2 pickle writer).
"""
from __future__ import annotations

import argparse
import copy
import functools
import io
import os
import tempfile
from fractions import Fraction

import numpy as np

from render.mano_format import NUM_FACES, NUM_JOINTS, NUM_VERTS
from render.mano_io import ManoModel, load_mano
from render.standin.mano_pickle import v12_pickle_bytes
from render.standin.mesh import _build_mesh, _orient, _permutation
from render.standin.pose import _pose_prior
from render.standin.rig import _shape_fields, _weights_and_regressor
from util.joints import MANO_PARENTS

KEY_ORDER = ("hands_components", "f", "J_regressor", "kintree_table", "J", "bs_style", "hands_coeffs",
             "weights", "posedirs", "hands_mean", "v_template", "shapedirs", "bs_type")


# ---------------------------------------------------------------------------------------------- assembly
def _f32(x: np.ndarray) -> np.ndarray:
    """float64 array holding float32-representable values (bytes robust to last-ulp libm/BLAS differences)."""
    return np.asarray(x, np.float32).astype(np.float64)


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (float64) with each entry the exact sum of exact products, rounded once to float64.

    No BLAS (whose blocking and FMA use vary by machine): every entry is the correctly rounded exact value,
    so the result, and the file bytes, are the same on every IEEE-754 machine. Zeros of ``a`` are skipped
    (the regressor is sparse), which keeps the exact rational arithmetic cheap.
    """
    out = np.empty((a.shape[0], b.shape[1]))
    for i in range(a.shape[0]):
        nz = np.flatnonzero(a[i])
        terms = [(Fraction(float(a[i, k])), [Fraction(float(x)) for x in b[k]]) for k in nz]
        for j in range(b.shape[1]):
            exact = sum((w * row[j] for w, row in terms), Fraction(0))
            out[i, j] = float(exact)  # int / int true division: correctly rounded
    return out


def _build() -> tuple[dict, np.ndarray]:
    """The 13 model entries (plain arrays, MANO vertex ids) and the 20-component shape array (778, 3, 20)."""
    layout = _build_mesh()
    pos = np.asarray(layout.mesh.pos)
    faces = _orient(np.asarray(layout.mesh.faces, np.int64), pos, layout.wrist)
    new_id = _permutation(layout, faces)
    weights, reg = _weights_and_regressor(layout)
    v_template = np.empty((NUM_VERTS, 3))
    v_template[new_id] = _f32(pos)
    j_reg = np.empty((NUM_JOINTS, NUM_VERTS))
    j_reg[:, new_id] = reg
    wrist = _exact_matmul(j_reg[:1], v_template)[0]
    shapes = np.empty((NUM_VERTS, 3, 20))
    shapes[new_id] = _f32(_shape_fields(layout, wrist))
    w = np.empty((NUM_VERTS, NUM_JOINTS))
    w[new_id] = weights
    mean, comps, coeffs = _pose_prior()
    parents = np.array([2 ** 32 - 1 if p < 0 else p for p in MANO_PARENTS], np.int64)
    model = {
        "hands_components": _f32(comps),
        "f": new_id[faces].astype(np.uint32),
        "J_regressor": j_reg,
        "kintree_table": np.stack([parents, np.arange(NUM_JOINTS, dtype=np.int64)]),
        "J": _exact_matmul(j_reg, v_template),  # fixed, exact arithmetic: same bytes everywhere
        "bs_style": "lbs",
        "hands_coeffs": _f32(coeffs),
        "weights": w,
        "posedirs": np.zeros((NUM_VERTS, 3, 135)),
        "hands_mean": _f32(mean),
        "v_template": v_template,
        "shapedirs": shapes[:, :, :10].copy(),
        "bs_type": "lrotmin",
    }
    assert tuple(model) == KEY_ORDER
    return model, shapes


def build_standin() -> dict:
    """The stand-in model as plain numpy arrays / strs, keyed and ordered like MANO v1.2 (docs/formats.md §1.2).

    Returns:
        dict with ``hands_components`` (45, 45), ``f`` (1538, 3) uint32, ``J_regressor`` (16, 778) dense,
        ``kintree_table`` (2, 16) int64, ``J`` (16, 3), ``bs_style`` 'lbs', ``hands_coeffs`` (1554, 45),
        ``weights`` (778, 16), ``posedirs`` (778, 3, 135) zeros, ``hands_mean`` (45,),
        ``v_template`` (778, 3), ``shapedirs`` (778, 3, 10), ``bs_type`` 'lrotmin'; floats are float64,
        lengths in metres, angles in radians.
    """
    return _build()[0]


def standin_bytes() -> bytes:
    """The complete stand-in ``MANO_RIGHT.pkl`` file content (deterministic)."""
    return v12_pickle_bytes(*_build())


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def write_standin(path: str) -> None:
    """Write the stand-in model to ``path`` in the MANO v1.2 pickle container (docs/formats.md §1.1, §2.3)."""
    _write(path, standin_bytes())


@functools.lru_cache(maxsize=1)
def _read_back() -> ManoModel:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "MANO_RIGHT.pkl")
        write_standin(path)  # a real file, so the whole reader path (magic sniff, open, unpickle) runs
        model = load_mano(path)
    model.source = "procedural stand-in MANO_RIGHT.pkl (render.standin)"  # the temporary file is gone
    return model


def load_standin() -> ManoModel:
    """The stand-in as a ``ManoModel``: written to a temporary ``MANO_RIGHT.pkl`` and read back through
    ``render.mano_io.load_mano`` (the restricted reader of the real file). Built once per process; each call
    returns a fresh deep copy, so callers may modify it."""
    return copy.deepcopy(_read_back())


def _npz_bytes(model: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in model.items()})
    return buf.getvalue()


def write_standin_npz(path: str) -> None:
    """Chumpy-free copy at ``path`` (name kept as given): the 13 entries of :func:`build_standin`, dense
    ``J_regressor``, ``bs_style`` / ``bs_type`` as 0-d str arrays."""
    _write(path, _npz_bytes(build_standin()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the procedural MANO-format stand-in hand model.")
    parser.add_argument("--out", required=True, help="output path, e.g. MANO/MANO_RIGHT.pkl")
    parser.add_argument("--npz", action="store_true", help="write a chumpy-free .npz, not the v1.2 pickle")
    args = parser.parse_args(argv)
    (write_standin_npz if args.npz else write_standin)(args.out)
    print(f"stand-in MANO model ({'npz' if args.npz else 'v1.2 pickle'}) -> {args.out}: "
          f"V={NUM_VERTS} F={NUM_FACES} joints={NUM_JOINTS} size={os.path.getsize(args.out)} bytes")
