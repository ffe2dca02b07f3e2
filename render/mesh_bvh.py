"""Nearest-triangle search with a bounding volume hierarchy (numba, float64), for render/mesh_distance.py.

For each query point of a batch: the nearest triangle of its own mesh among the faces its query bit mask
allows (bit 0 = every face, bit k = part k), and the barycentric weights of the closest point on it. One
median-split BVH per mesh is built and walked in numba; a subtree is skipped only when the squared distance to
its box, a lower bound for all its faces, is no smaller than the best so far, so the result equals brute force
up to exact ties. Faces and nodes carry the OR of their part bits, so part queries walk the same tree.

Works on numpy arrays only (no torch): :mod:`render.mesh_distance` converts, computes the per-face constants
(``_face_constants``, layout below) and turns the weights into a differentiable distance. The selection
distance here (``face_closest``) is the same formula as its torch brute force (``_pair_sqdist``): the plane
projection if it falls inside the triangle, else the nearest edge point.

Per-face constants, (F, 17) float64: a (0:3), ab (3:6), ac (6:9), |ab|², |ac|², ab·ac, |bc|², then the
inverses of det = |ab|²|ac|² − (ab·ac)² (0 for a (near-)degenerate triangle), |ab|², |ac|², |bc|² (0 for a
zero length).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np

LEAF_SIZE = 4  # faces per BVH leaf
_STACK_SIZE = 64  # traversal stack; a median-split tree over F faces is about log2(F / 4) + 1 deep


@nb.njit(cache=True, inline="always")
def face_closest(px, py, pz, k):
    """(squared distance, barycentric weights u, v, w) of the point of the face with constants k (17,)
    closest to p = (px, py, pz)."""
    apx, apy, apz = px - k[0], py - k[1], pz - k[2]
    ap2 = apx * apx + apy * apy + apz * apz
    d1 = apx * k[3] + apy * k[4] + apz * k[5]  # ab·ap
    d2 = apx * k[6] + apy * k[7] + apz * k[8]  # ac·ap
    ab2, ac2, abac, bc2 = k[9], k[10], k[11], k[12]
    v, w = (ac2 * d1 - abac * d2) * k[13], (ab2 * d2 - abac * d1) * k[13]
    if k[13] > 0.0 and v >= 0.0 and w >= 0.0 and v + w <= 1.0:
        return max(ap2 - v * d1 - w * d2, 0.0), 1.0 - v - w, v, w
    t = min(max(d1 * k[14], 0.0), 1.0)  # edge ab
    best, u, v, w = ap2 - t * (2.0 * d1 - t * ab2), 1.0 - t, t, 0.0
    t = min(max(d2 * k[15], 0.0), 1.0)  # edge ac
    d = ap2 - t * (2.0 * d2 - t * ac2)
    if d < best:
        best, u, v, w = d, 1.0 - t, 0.0, t
    e = d2 - d1 - abac + ab2  # edge bc; e = bc·bp
    t = min(max(e * k[16], 0.0), 1.0)
    d = ap2 - 2.0 * d1 + ab2 - t * (2.0 * e - t * bc2)
    if d < best:
        best, u, v, w = d, 0.0, 1.0 - t, t
    return max(best, 0.0), u, v, w


@nb.njit(cache=True, inline="always")
def _box_sq(px, py, pz, lo, hi):
    gx = max(lo[0] - px, px - hi[0], 0.0)
    gy = max(lo[1] - py, py - hi[1], 0.0)
    gz = max(lo[2] - pz, pz - hi[2], 0.0)
    return gx * gx + gy * gy + gz * gz


@nb.njit(cache=True)
def _build(tri, face_bits, order, lo, hi, first, count, bits):
    """Median-split BVH over the faces ``tri`` (F, 3, 3) of one mesh; fills ``order`` (faces in leaf order)
    and the node arrays (internal node n: children first[n] and first[n] + 1, count[n] = 0; leaf: count[n]
    faces from order[first[n]])."""
    n_f = tri.shape[0]
    cen = np.empty((n_f, 3))
    for f in range(n_f):
        for i in range(3):
            cen[f, i] = (tri[f, 0, i] + tri[f, 1, i] + tri[f, 2, i]) / 3.0
        order[f] = f
    st_node, st_s, st_e = np.empty(n_f, np.int64), np.empty(n_f, np.int64), np.empty(n_f, np.int64)
    st_node[0], st_s[0], st_e[0] = 0, 0, n_f
    sp, n_nodes = 1, 1
    while sp > 0:
        sp -= 1
        node, s, e = st_node[sp], st_s[sp], st_e[sp]
        clo, chi = np.full(3, np.inf), np.full(3, -np.inf)
        lo[node], hi[node], bits[node] = np.inf, -np.inf, 0
        for j in range(s, e):
            f = order[j]
            bits[node] |= face_bits[f]
            for i in range(3):
                lo[node, i] = min(lo[node, i], tri[f, 0, i], tri[f, 1, i], tri[f, 2, i])
                hi[node, i] = max(hi[node, i], tri[f, 0, i], tri[f, 1, i], tri[f, 2, i])
                clo[i], chi[i] = min(clo[i], cen[f, i]), max(chi[i], cen[f, i])
        if e - s <= LEAF_SIZE:
            first[node], count[node] = s, e - s
            continue
        axis = np.argmax(chi - clo)
        if chi[axis] > clo[axis]:  # else all centroids coincide and any split is as good
            sub = order[s:e].copy()
            order[s:e] = sub[np.argsort(cen[sub, axis], kind="mergesort")]
        mid = (s + e) // 2
        first[node], count[node] = n_nodes, 0
        st_node[sp], st_s[sp], st_e[sp] = n_nodes, s, mid
        st_node[sp + 1], st_s[sp + 1], st_e[sp + 1] = n_nodes + 1, mid, e
        sp, n_nodes = sp + 2, n_nodes + 2


@nb.njit(cache=True, nogil=True)
def _nearest_bvh(points, qbits, tri, const, face_bits, out, weights):
    """out[b, p] = the nearest face among those with ``face_bits & qbits[b, p] != 0`` (-1 where qbits is 0),
    weights[b, p] (3,) = barycentric weights of the closest point on it.

    points (B, P, 3), qbits (B, P), tri (B, F, 3, 3), const (B, F, 17), face_bits (F,), all float64 / int64.
    Serial and GIL-free: the caller runs batch slices in threads (``parallel=True`` triples the JIT time)."""
    n_b, n_p, n_f = points.shape[0], points.shape[1], tri.shape[1]
    order = np.empty(n_f, np.int64)
    lo, hi = np.empty((2 * n_f, 3)), np.empty((2 * n_f, 3))
    first, count, bits = np.empty(2 * n_f, np.int64), np.empty(2 * n_f, np.int64), np.empty(2 * n_f, np.int64)
    leaf_const, leaf_bits = np.empty((n_f, const.shape[2])), np.empty(n_f, np.int64)
    stack, bound = np.empty(_STACK_SIZE, np.int64), np.empty(_STACK_SIZE)
    for b in range(n_b):
        _build(tri[b], face_bits, order, lo, hi, first, count, bits)
        for j in range(n_f):  # faces in leaf order: contiguous reads in the query
            leaf_const[j], leaf_bits[j] = const[b, order[j]], face_bits[order[j]]
        for p in range(n_p):
            q = qbits[b, p]
            out[b, p] = -1
            if q == 0:
                continue
            px, py, pz = points[b, p, 0], points[b, p, 1], points[b, p, 2]
            best = np.inf
            stack[0], bound[0], sp = 0, 0.0, 1
            while sp > 0:
                sp -= 1
                node = stack[sp]
                if bound[sp] >= best:
                    continue
                if count[node] > 0:  # leaf
                    for j in range(first[node], first[node] + count[node]):
                        if leaf_bits[j] & q:
                            d = face_closest(px, py, pz, leaf_const[j])[0]
                            if d < best:
                                best, out[b, p] = d, order[j]
                    continue
                c0 = first[node]
                d0, d1 = _box_sq(px, py, pz, lo[c0], hi[c0]), _box_sq(px, py, pz, lo[c0 + 1], hi[c0 + 1])
                near, far, dn, df = (c0, c0 + 1, d0, d1) if d0 <= d1 else (c0 + 1, c0, d1, d0)
                if df < best and bits[far] & q:  # pushed first, popped after the nearer child
                    stack[sp], bound[sp], sp = far, df, sp + 1
                if dn < best and bits[near] & q:
                    stack[sp], bound[sp], sp = near, dn, sp + 1
            if out[b, p] < 0:  # only with non-finite input, which the callers reject
                continue
            kb = const[b, out[b, p]]
            _, weights[b, p, 0], weights[b, p, 1], weights[b, p, 2] = face_closest(px, py, pz, kb)


def nearest_faces_bvh(points: np.ndarray, qbits: np.ndarray, tri: np.ndarray, const: np.ndarray,
                      face_bits: np.ndarray, n_threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Nearest allowed face of each point, in ``n_threads`` threads over batch slices.

    Args:
        points: (B, P, 3) float64; qbits: (B, P) int64 query bit masks (0 = no query);
        tri: (B, F, 3, 3) float64 triangles; const: (B, F, 17) float64 their constants (module docstring);
        face_bits: (F,) int64 part bit masks of the faces.
    Returns:
        face ids (B, P) int64 (-1 where qbits is 0) and barycentric weights (B, P, 3) float64 of the closest
        points (0 where qbits is 0).
    """
    # contiguous float64 / int64 arrays: one compiled specialisation of the kernel (and of its disk cache)
    points, tri, const = (np.ascontiguousarray(x, np.float64) for x in (points, tri, const))
    qbits, face_bits = np.ascontiguousarray(qbits, np.int64), np.ascontiguousarray(face_bits, np.int64)
    out, weights = np.empty(qbits.shape, np.int64), np.zeros((*qbits.shape, 3))
    n_jobs = max(1, min(len(points), n_threads))
    edges = np.linspace(0, len(points), n_jobs + 1).astype(int)

    def run(s: slice) -> None:
        _nearest_bvh(points[s], qbits[s], tri[s], const[s], face_bits, out[s], weights[s])

    with ThreadPoolExecutor(n_jobs) as pool:
        list(pool.map(run, [slice(e0, e1) for e0, e1 in zip(edges[:-1], edges[1:])]))
    return out, weights
