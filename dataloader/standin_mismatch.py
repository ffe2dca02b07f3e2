"""Model-mismatch geometry for the stand-in's "real" hands (benchmark of issue 16; docs/DEVIATIONS.md
``## Benchmark``).

Real hands are never exact MANO hands. These options change the *rendered surface* of a posed MANO hand in
ways that MANO's shape space (betas, a global scale) cannot represent, while the skeleton -- and therefore
every joint label and the released-format MANO fit of the frame -- stays the MANO one:

- ``thick``: every vertex moves outward along its vertex normal by an amount that grows towards the
  fingertips (per skinning level: palm 0, proximal phalanx 1/3, middle 2/3, distal 1 of ``amount`` mm),
  i.e. bulbous, cone-shaped fingers;
- ``smooth``: ``iterations`` Taubin lambda|mu smoothing passes of the posed surface (umbrella operator:
  v <- v + lam (mean of the 1-ring - v), then the same with mu = -(lam + 0.03)): knuckle creases and
  other surface detail flattened without the shrinkage of plain Laplacian smoothing -- a non-MANO surface.

All functions are numpy, float64, batched over frames; vertices (B, 779, 3) mm in any frame (the closed
DSF mesh: vertex 778 is the wrist-loop centre and is recomputed from the moved loop).
"""
from __future__ import annotations

import numpy as np
from scipy import sparse

from util.joints import WRIST_LOOP_VERTEX_IDS

MISMATCHES = ("none", "thick", "smooth")
#: skinning level of each native MANO joint: 0 wrist, 1 proximal (MCP / thumb CMC), 2 middle, 3 distal
JOINT_LEVEL = np.array([0, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3], np.float64)
DEFAULT_AMOUNT = {"none": 0.0, "thick": 3.0, "smooth": 0.5}
SMOOTH_ITERATIONS = 10
#: Taubin's mu = -(lam + this): the inflating step that cancels the shrinkage of the smoothing step
TAUBIN_PASSBAND = 0.03


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(B, V, 3) unit area-weighted vertex normals of the triangle mesh ``faces`` (F, 3) (outward for
    counter-clockwise faces seen from outside; a vertex in no face gets 0)."""
    a, b, c = (verts[:, faces[:, k]] for k in range(3))
    fn = np.cross(b - a, c - a)  # (B, F, 3), length = 2 x area
    out = np.zeros_like(verts)
    for k in range(3):
        np.add.at(out, (slice(None), faces[:, k]), fn)
    norm = np.linalg.norm(out, axis=2, keepdims=True)
    return np.divide(out, norm, out=np.zeros_like(out), where=norm > 0)


def thickness_profile(weights: np.ndarray) -> np.ndarray:
    """(778, 16) skinning weights -> (778,) in [0, 1]: weighted skinning level / 3 (0 palm .. 1 distal)."""
    return (np.asarray(weights, np.float64) @ JOINT_LEVEL) / 3.0


def adjacency(faces: np.ndarray, num_verts: int) -> sparse.csr_matrix:
    """Row-normalised vertex adjacency (V, V) of the mesh edges (umbrella operator weights)."""
    i = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2], faces[:, 0]])
    j = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1], faces[:, 2]])
    A = sparse.coo_matrix((np.ones(i.size), (i, j)), shape=(num_verts, num_verts)).tocsr()
    A.data[:] = 1.0  # an edge shared by two faces counts once
    deg = np.asarray(A.sum(1)).ravel()
    return sparse.diags(np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)) @ A


def _close_wrist(verts: np.ndarray) -> np.ndarray:
    out = verts.copy()
    out[:, 778] = verts[:, list(WRIST_LOOP_VERTEX_IDS)].mean(1)
    return out


def apply_mismatch(verts: np.ndarray, faces: np.ndarray, weights: np.ndarray, kind: str,
                   amount: float | None = None, iterations: int = SMOOTH_ITERATIONS) -> np.ndarray:
    """Deform posed closed MANO meshes; returns new (B, 779, 3) vertices (the input is not modified).

    Args:
        verts: (B, 779, 3) mm, the closed DSF mesh (vertex 778 = wrist-loop centre).
        faces: (1554, 3) closed faces (``ManoLayer.faces_closed``).
        weights: (778, 16) skinning weights of the model.
        kind: one of :data:`MISMATCHES`.
        amount: ``thick``: outward offset at the distal phalanges in mm (default 3); ``smooth``: the step
            ``lam`` in (0, 1] (default 0.5).
        iterations: smoothing steps (``smooth`` only).
    """
    if kind not in MISMATCHES:
        raise ValueError(f"mismatch must be one of {MISMATCHES}, got {kind!r}")
    verts = np.asarray(verts, np.float64)
    if verts.ndim != 3 or verts.shape[1:] != (779, 3):
        raise ValueError(f"verts must be (B, 779, 3), got {verts.shape}")
    amount = DEFAULT_AMOUNT[kind] if amount is None else float(amount)
    faces = np.asarray(faces, np.int64)
    if kind == "none":
        return verts.copy()
    if kind == "thick":
        offset = np.zeros(779)
        offset[:778] = amount * thickness_profile(weights)
        moved = verts + vertex_normals(verts, faces) * offset[None, :, None]
        return _close_wrist(moved)
    if not 0.0 < amount <= 1.0:
        raise ValueError(f"smooth amount (step lam) must be in (0, 1], got {amount}")
    L = adjacency(faces, 779)
    out = verts.copy()
    for _ in range(iterations):
        for step in (amount, -(amount + TAUBIN_PASSBAND)):
            out = out + step * (umbrella_mean(L, out) - out)
    return _close_wrist(out)


def umbrella_mean(L: sparse.csr_matrix, verts: np.ndarray) -> np.ndarray:
    """(B, V, 3): mean of each vertex's 1-ring neighbours (``L`` from :func:`adjacency`)."""
    return np.stack([L @ v for v in verts])
