"""Exact squared point-to-triangle distances for the ICP losses (docs/method.md §9: d2m, part-aware ICP).

For each point of a batch of point clouds: the squared Euclidean distance to the nearest triangle of its
mesh (all meshes share one face list), over the whole mesh or over the faces of one part. Units are the
inputs' (norm-xyz in the losses, so norm units²). This stands in for pytorch3d's ``point_face_distance`` of
the official code and, like pytorch3d ≤ 0.6.1, it is the *exact* distance: no "small triangles are
degenerate" shortcut (pytorch3d ≥ 0.6.2's ``min_triangle_area`` would mangle every MANO triangle in norm
units).

Two steps:
1. **Selection** (no gradient) of each point's nearest face. ``search="bvh"`` (default on CPU): a bounding
   volume hierarchy per mesh, built and walked by numba in float64 (:mod:`render.mesh_bvh`); it equals brute
   force up to exact ties. Part queries walk the same tree: faces and nodes carry bit masks of the parts they
   belong to. ``search="brute"`` (default on CUDA, where numba is not used, and where numba is not installed,
   e.g. in the separate pytorch3d venv): all point-face pairs in torch, in chunks of at most ``chunk_pairs``
   pairs, in the input dtype.
2. **Distance** (differentiable, torch, input dtype) to the chosen face via the closest point q = Σ w_i v_i.
   The bvh kernel returns w (float64: the plane projection if inside, else the nearest edge point); otherwise
   w comes from Ericson's region formula in torch (Real-Time Collision Detection §5.1.5, 7 Voronoi regions),
   guarded by the three edge candidates. Either way zero-area or collinear triangles get their exact segment
   distance, never NaN. The weights are held constant in d = |p − q|²: by Danskin's theorem this is the exact
   gradient of min_{w ∈ simplex} |p − Σ w_i v_i|² (∂d/∂p = 2(p − q), ∂d/∂v_i = −2 w_i (p − q)), continuous
   across region boundaries and finite for degenerate triangles, unlike differentiating through the branches.

``backend="pytorch3d"`` uses pytorch3d's ``point_face_distance`` with ``min_triangle_area=0`` instead
(imported only then; an optional dependency, see requirements-pytorch3d.txt).
"""
from __future__ import annotations

import inspect
from typing import Sequence

import torch
from torch import Tensor

from render.constant_check import checked_stats, index_range

try:
    from render import mesh_bvh
except ModuleNotFoundError as _err:  # numba missing (e.g. the separate pytorch3d venv): brute force only
    if _err.name != "numba":
        raise
    mesh_bvh, _NO_BVH = None, str(_err)

_MAX_PARTS = 62  # part bits in an int64 (bit 0 = whole mesh)
_DEFAULT_CHUNK_PAIRS = {"cpu": 1 << 17, "cuda": 1 << 24}  # point-face pairs per brute-force chunk


# ------------------------------------------------------------------------------------------------------------
# nearest-face selection: plane projection if inside, else nearest edge point (numba BVH or torch brute)
# ------------------------------------------------------------------------------------------------------------
def _face_constants(tri: Tensor) -> Tensor:
    """(..., F, 3, 3) triangles -> (..., F, 17) per-face constants (layout: render/mesh_bvh.py docstring)."""
    a, b, c = tri.unbind(-2)
    ab, ac, bc = b - a, c - a, c - b
    ab2, ac2, abac, bc2 = _dot(ab, ab), _dot(ac, ac), _dot(ab, ac), _dot(bc, bc)
    det = ab2 * ac2 - abac * abac
    # sin² of the angle at a below 16 eps (~3e-6° in float64, ~0.08° in float32): taken as its 3 edges
    proper = det > 16 * torch.finfo(tri.dtype).eps * ab2 * ac2
    inv = [torch.where(x > 0, 1 / torch.where(x > 0, x, 1), 0) for x in (det, ab2, ac2, bc2)]
    inv[0] = torch.where(proper, inv[0], 0)
    return torch.cat([a, ab, ac, torch.stack([ab2, ac2, abac, bc2] + inv, -1)], -1)


def _pair_sqdist(p: Tensor, k: Tensor) -> Tensor:
    """``mesh_bvh.face_closest``'s distance for all pairs: p (..., N, 3), k (..., F, 17) -> (..., N, F)."""
    k = k.unsqueeze(-3)  # (..., 1, F, 17)
    ab2, ac2, abac, bc2, inv_det, inv_ab2, inv_ac2, inv_bc2 = k[..., 9:].unbind(-1)
    ap = [p[..., None, i] - k[..., i] for i in range(3)]
    ap2 = ap[0] * ap[0] + ap[1] * ap[1] + ap[2] * ap[2]
    d1 = ap[0] * k[..., 3] + ap[1] * k[..., 4] + ap[2] * k[..., 5]
    d2 = ap[0] * k[..., 6] + ap[1] * k[..., 7] + ap[2] * k[..., 8]
    del ap
    v, w = (ac2 * d1 - abac * d2) * inv_det, (ab2 * d2 - abac * d1) * inv_det
    inside = (inv_det > 0) & (v >= 0) & (w >= 0) & (v + w <= 1)
    plane = ap2 - v * d1 - w * d2
    t = (d1 * inv_ab2).clamp_(0, 1)
    best = ap2 - t * (2 * d1 - t * ab2)
    t = (d2 * inv_ac2).clamp_(0, 1)
    best = torch.minimum(best, ap2 - t * (2 * d2 - t * ac2))
    e = d2 - d1 - abac + ab2
    t = (e * inv_bc2).clamp_(0, 1)
    best = torch.minimum(best, ap2 - 2 * d1 + ab2 - t * (2 * e - t * bc2))
    return torch.where(inside, plane, best).clamp_min_(0)


def _select_bvh(points: Tensor, tri: Tensor, face_bits: Tensor, qbits: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`render.mesh_bvh.nearest_faces_bvh` in ``torch.get_num_threads()`` threads -> ids (B, P) and
    weights (B, P, 3) in the dtype of ``points``."""
    if mesh_bvh is None:
        raise ImportError(f"search='bvh' needs numba, which is not importable here ({_NO_BVH}); use "
                          "search='brute' or 'auto'")
    tri64 = tri.to("cpu", torch.float64)
    ids, weights = mesh_bvh.nearest_faces_bvh(points.to("cpu", torch.float64).numpy(), qbits.cpu().numpy(),
                                              tri64.numpy(), _face_constants(tri64).numpy(),
                                              face_bits.cpu().numpy(), torch.get_num_threads())
    return torch.from_numpy(ids).to(points.device), torch.from_numpy(weights).to(points.device, points.dtype)


def _select_brute(points: Tensor, tri: Tensor, face_bits: Tensor, qbits: Tensor, chunk_pairs: int) -> Tensor:
    """Nearest allowed face (B, P) from all point-face pairs, at most ``chunk_pairs`` pairs at a time."""
    (n_b, n_p), n_f = qbits.shape, tri.shape[1]
    const = _face_constants(tri)  # (B, F, 17)
    rows = max(1, chunk_pairs // n_f)
    pc, bc = min(n_p, rows), max(1, rows // n_p)  # points per chunk, samples per chunk
    out = torch.empty(n_b, n_p, dtype=torch.long, device=points.device)
    for b0 in range(0, n_b, bc):
        for p0 in range(0, n_p, pc):
            d = _pair_sqdist(points[b0:b0 + bc, p0:p0 + pc], const[b0:b0 + bc])  # (bc, pc, F)
            allowed = (qbits[b0:b0 + bc, p0:p0 + pc, None] & face_bits) != 0
            out[b0:b0 + bc, p0:p0 + pc] = d.masked_fill_(~allowed, torch.inf).argmin(-1)
    return out.masked_fill(qbits == 0, -1)


# ------------------------------------------------------------------------------------------------------------
# differentiable distance to a given face
# ------------------------------------------------------------------------------------------------------------
def _dot(x: Tensor, y: Tensor) -> Tensor:
    return (x * y).sum(-1)


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den where den > 0, else 0."""
    pos = den > 0
    return torch.where(pos, num / torch.where(pos, den, torch.ones_like(den)), torch.zeros_like(num))


def closest_point_weights(p: Tensor, a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Closest point of triangle (a, b, c) to p as barycentric weights, and the squared distance (no grad).

    Args:
        p, a, b, c: (..., 3), broadcastable, any float dtype.
    Returns:
        weights (..., 3) with q = w0 a + w1 b + w2 c the closest point, and |p − q|² (...).
    """
    ab, ac, ap, bp, cp = b - a, c - a, p - a, p - b, p - c
    d1, d2, d3 = _dot(ab, ap), _dot(ac, ap), _dot(ab, bp)
    d4, d5, d6 = _dot(ac, bp), _dot(ab, cp), _dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    zero, one = torch.zeros_like(d1), torch.ones_like(d1)
    v, w = _ratio(vb, va + vb + vc), _ratio(vc, va + vb + vc)  # face region: Ericson's fall-through case
    for mask, rv, rw in (  # Ericson's region tests in reverse order, so that the first one that holds decides
        ((va <= 0) & (d4 >= d3) & (d5 >= d6), None, _ratio(d4 - d3, (d4 - d3) + (d5 - d6))),  # edge bc
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), zero, _ratio(d2, d2 - d6)),  # edge ac
        ((d6 >= 0) & (d5 <= d6), zero, one),  # vertex c
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), _ratio(d1, d1 - d3), zero),  # edge ab
        ((d3 >= 0) & (d4 <= d3), one, zero),  # vertex b
        ((d1 <= 0) & (d2 <= 0), zero, zero),  # vertex a
    ):
        v, w = torch.where(mask, one - rw if rv is None else rv, v), torch.where(mask, rw, w)
    # Guard for (near-)degenerate triangles, where the region tests or the face weights break down: the edges'
    # closest points are valid candidates too; for a proper triangle none of them beats Ericson's point.
    cands = [torch.stack([one - v - w, v, w], -1)]
    for s0, s1, i0, i1 in ((a, b, 0, 1), (a, c, 0, 2), (b, c, 1, 2)):
        t = _ratio(_dot(p - s0, s1 - s0), _dot(s1 - s0, s1 - s0)).clamp(0, 1)
        wts = [zero, zero, zero]
        wts[i0], wts[i1] = one - t, t
        cands.append(torch.stack(wts, -1))
    wts = torch.stack(cands, -2)  # (..., 4, 3)
    q = (wts.unsqueeze(-1) * torch.stack(torch.broadcast_tensors(a, b, c), -2).unsqueeze(-3)).sum(-2)
    d = (p.unsqueeze(-2) - q).square().sum(-1)  # (..., 4)
    # face weights outside the simplex are not a point of the triangle
    d[..., 0] = torch.where((wts[..., 0, :] >= 0).all(-1), d[..., 0], torch.inf)
    k = d.argmin(-1, keepdim=True)
    return wts.gather(-2, k.unsqueeze(-1).expand(*k.shape, 3)).squeeze(-2), d.gather(-1, k).squeeze(-1)


def point_face_sqdist(points: Tensor, verts: Tensor, faces: Tensor, face_idx: Tensor) -> Tensor:
    """Differentiable squared distance from each point to one given triangle of its mesh.

    Args:
        points: (B, P, 3); verts: (B, V, 3); faces: (F, 3) integer; face_idx: (B, P) int64 into ``faces``
            (-1 = none).
    Returns:
        (B, P) squared distances (units²), 0 without gradient where ``face_idx`` is -1. Gradients reach
        ``points`` and ``verts`` (exact, see the module docstring).
    """
    return _sqdist_to_faces(points, verts, faces, face_idx, None)


def _sqdist_to_faces(points: Tensor, verts: Tensor, faces: Tensor, face_idx: Tensor,
                     weights: Tensor | None) -> Tensor:
    """``point_face_sqdist`` given the closest points' barycentric weights (B, P, 3) if already known."""
    n_b, n_p, _ = points.shape
    n_v = verts.shape[1]
    offset = n_v * torch.arange(n_b, device=points.device).view(-1, 1, 1)
    vid = faces.to(points.device).long()[face_idx.clamp_min(0)] + offset  # (B, P, 3) rows of flat vertices
    # index_select on the flattened vertices: its backward is an index_add, fast on the CPU
    tri = verts.reshape(n_b * n_v, 3).index_select(0, vid.reshape(-1)).view(n_b, n_p, 3, 3)
    if weights is None:
        with torch.no_grad():
            weights, _ = closest_point_weights(points, tri[..., 0, :], tri[..., 1, :], tri[..., 2, :])
    q = (weights.unsqueeze(-1) * tri).sum(-2)  # closest points with the weights held fixed (Danskin)
    d = (points - q).square().sum(-1)
    return torch.where(face_idx >= 0, d, torch.zeros_like(d))


# ------------------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------------------
def _check_inputs(points: Tensor, verts: Tensor, faces: Tensor) -> None:
    if points.ndim != 3 or points.shape[-1] != 3 or verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"expected points (B, P, 3) and verts (B, V, 3), got {tuple(points.shape)} and "
                         f"{tuple(verts.shape)}")
    if points.shape[0] != verts.shape[0]:
        raise ValueError(f"points and verts batch sizes differ: {points.shape[0]} vs {verts.shape[0]}")
    if not points.is_floating_point() or points.dtype != verts.dtype or points.device != verts.device:
        raise ValueError(f"points and verts must be floating tensors of one dtype and device, got "
                         f"{points.dtype}/{points.device} and {verts.dtype}/{verts.device}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] == 0 or faces.is_floating_point():
        raise ValueError(f"expected faces as a non-empty integer tensor (F, 3), got {faces.dtype} "
                         f"{tuple(faces.shape)}")
    lo, hi = index_range(faces)  # a model's constant faces: checked once per tensor on CUDA
    if lo < 0 or hi >= verts.shape[1]:
        raise ValueError(f"face vertex ids must lie in [0, {verts.shape[1]}), got [{lo}, {hi}]")
    if not bool(torch.isfinite(points).all() & torch.isfinite(verts).all()):  # one host sync
        raise ValueError("points and verts must be finite (found NaN or inf)")


def part_bits(part_face_ids: Sequence[Tensor], num_faces: int) -> Tensor:
    """Parts given as K face-id tensors -> the (F,) int64 part bits :func:`point_part_sqdist` takes.

    Layout: bit 0 set for every face, bit k for the faces of part k = 1..K (K ≤ 62; parts may overlap).
    ``ManoLayer.part_bits`` is built by this once; passing it saves the conversion on every call.

    Args:
        part_face_ids: K non-empty integer tensors (F_k,) of row indices into the (F, 3) faces.
        num_faces: F.
    """
    if not 1 <= len(part_face_ids) <= _MAX_PARTS:
        raise ValueError(f"expected 1..{_MAX_PARTS} part face sets, got {len(part_face_ids)}")
    dev = part_face_ids[0].device if isinstance(part_face_ids[0], Tensor) else None
    bits = torch.ones(num_faces, dtype=torch.long, device=dev)
    for k, ids in enumerate(part_face_ids, start=1):
        ids = torch.as_tensor(ids, device=dev)
        if ids.is_floating_point() or ids.ndim != 1 or ids.numel() == 0:
            raise ValueError(f"part {k}: expected a non-empty integer tensor of face ids (F_k,), got "
                             f"{ids.dtype} {tuple(ids.shape)}")
        lo, hi = index_range(ids)
        if lo < 0 or hi >= num_faces:
            raise ValueError(f"part {k}: face ids must lie in [0, {num_faces}), got [{lo}, {hi}]")
        bits[ids.long()] |= 1 << k
    return bits


def _bits_parts(bits: Tensor) -> tuple[int]:
    """(K,) of valid part bits: every face has bit 0, K = the highest part bit set; (-1,) if malformed."""
    lo, hi = (int(v) for v in torch.stack([(bits & 1).amin(), bits.amax()]).tolist())
    return (hi.bit_length() - 1 if lo == 1 else -1,)


def _parts(parts: Tensor | Sequence[Tensor], faces: Tensor) -> tuple[Tensor, int]:
    """Part bits (F,) on the faces' device and the number of parts K, from either accepted form."""
    if not isinstance(parts, Tensor):
        bits = part_bits(parts, faces.shape[0]).to(faces.device)
        return bits, len(parts)
    if parts.dtype != torch.long or parts.shape != faces.shape[:1]:
        raise ValueError(f"part bits must be an int64 tensor ({faces.shape[0]},) (see part_bits), got "
                         f"{parts.dtype} {tuple(parts.shape)}")
    (n_parts,) = checked_stats(parts, "part_bits", _bits_parts)
    if n_parts < 1:
        raise ValueError("part bits must have bit 0 set for every face and some part bit set (see part_bits)")
    return parts.to(faces.device), n_parts


def part_face_ids(bits: Tensor, n_parts: int) -> list[Tensor]:
    """The K face-id tensors (F_k,) of part bits (the inverse of :func:`part_bits`; one sync per part)."""
    return [torch.nonzero((bits >> k) & 1).squeeze(1) for k in range(1, n_parts + 1)]


def _label_bits(labels: Tensor, points: Tensor, n_parts: int) -> Tensor:
    """(B, P) int64: bit labels[b, p] set, or 0 where the label is 0."""
    if labels.shape != points.shape[:2] or labels.is_floating_point():
        raise ValueError(f"expected integer labels of shape {tuple(points.shape[:2])}, got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    labels = labels.to(device=points.device, dtype=torch.long)
    if labels.numel() and not (0 <= (r := torch.stack(labels.aminmax()).tolist())[0] and r[1] <= n_parts):
        raise ValueError(f"labels must lie in [0, {n_parts}] (0 = no part), got [{r[0]}, {r[1]}]")
    return torch.where(labels > 0, torch.ones_like(labels) << labels, torch.zeros_like(labels))


def nearest_faces(points: Tensor, verts: Tensor, faces: Tensor,
                  parts: Tensor | Sequence[Tensor] | None = None,
                  labels: Tensor | None = None, *, search: str = "auto",
                  chunk_pairs: int | None = None) -> Tensor:
    """Index of each point's nearest triangle (no gradient).

    Args:
        points: (B, P, 3) float; verts: (B, V, 3) same dtype and device; faces: (F, 3) integer, shared.
        parts, labels: optional, together: K parts (as in :func:`point_part_sqdist`) and labels (B, P) in
            0..K; a point labelled k ≥ 1 is matched against part k only, a point labelled 0 gets -1.
        search: "bvh" (numba tree, float64, on the CPU; CUDA inputs make a round trip), "brute" (all pairs in
            torch, input dtype) or "auto" (bvh for CPU tensors when numba is importable, brute otherwise).
        chunk_pairs: point-face pairs per brute-force chunk (memory bound); default 2**17 CPU, else 2**24.
    Returns:
        (B, P) int64 face ids (-1 for label 0) on the device of ``points``.
    """
    return _nearest(points, verts, faces, parts, labels, search, chunk_pairs)[0]


def _nearest(points: Tensor, verts: Tensor, faces: Tensor, parts: Tensor | Sequence[Tensor] | None,
             labels: Tensor | None, search: str, chunk_pairs: int | None) -> tuple[Tensor, Tensor | None]:
    """:func:`nearest_faces` plus the closest points' weights (B, P, 3) where the search gives them (bvh)."""
    _check_inputs(points, verts, faces)
    if (parts is None) != (labels is None):
        raise ValueError("parts and labels must be given together")
    if search not in ("auto", "bvh", "brute"):
        raise ValueError(f"search must be one of {{'auto', 'bvh', 'brute'}}, got {search!r}")
    faces = faces.to(points.device).long()
    if parts is None:
        face_bits = torch.ones(faces.shape[0], dtype=torch.long, device=points.device)
        qbits = torch.ones(points.shape[:2], dtype=torch.long, device=points.device)
    else:
        face_bits, n_parts = _parts(parts, faces)
        qbits = _label_bits(labels, points, n_parts)
    tri = verts.detach()[:, faces]  # (B, F, 3, 3)
    if search == "bvh" or (search == "auto" and points.device.type == "cpu" and mesh_bvh is not None):
        return _select_bvh(points.detach(), tri, face_bits, qbits)
    if chunk_pairs is None:
        chunk_pairs = _DEFAULT_CHUNK_PAIRS.get(points.device.type, _DEFAULT_CHUNK_PAIRS["cuda"])
    return _select_brute(points.detach(), tri, face_bits, qbits, int(chunk_pairs)), None


def point_mesh_sqdist(points: Tensor, verts: Tensor, faces: Tensor, *, backend: str = "torch",
                      search: str = "auto", chunk_pairs: int | None = None) -> Tensor:
    """Squared distance from each point to the nearest triangle of its mesh (the d2m ICP term, docs/method.md §9).

    Args:
        points: (B, P, 3) float, any units (norm-xyz in the losses); verts: (B, V, 3), same units, dtype and
            device;
        faces: (F, 3) integer vertex ids shared by all meshes.
        backend: "torch" (this module) or "pytorch3d" (``point_face_distance``, ``min_triangle_area=0``).
        search, chunk_pairs: nearest-face selection of the torch backend, see :func:`nearest_faces`.
    Returns:
        (B, P) squared distances (units²), differentiable w.r.t. ``points`` and ``verts``.
    """
    _check_backend(backend)
    if backend == "pytorch3d":
        _check_inputs(points, verts, faces)
        return _p3d_sqdist(points, verts, faces.to(points.device).long(), None)
    idx, weights = _nearest(points, verts, faces, None, None, search, chunk_pairs)
    return _sqdist_to_faces(points, verts, faces, idx, weights)


def point_part_sqdist(points: Tensor, verts: Tensor, faces: Tensor, parts: Tensor | Sequence[Tensor],
                      labels: Tensor, *, backend: str = "torch", search: str = "auto",
                      chunk_pairs: int | None = None) -> Tensor:
    """Squared distance from each point to the nearest triangle of its own part (part-aware ICP, docs/method.md §9).

    Only the point's own part is searched, which is all the loss needs (its mean for part k runs over the
    points labelled k), at about the cost of one whole-mesh query.

    Args:
        points, verts, faces: as in :func:`point_mesh_sqdist`.
        parts: the part bits (F,) int64 of :func:`part_bits` (``ManoLayer.part_bits``, the 15
            ``joint_faces``; checked once per tensor on CUDA), or K ≤ 62 integer tensors of face ids (F_k,),
            part k = ``parts[k-1]`` (converted on every call); parts may overlap.
        labels: (B, P) integer in 0..K; 0 = no part.
        backend, search, chunk_pairs: as in :func:`point_mesh_sqdist`.
    Returns:
        (B, P) squared distance to the nearest face of part ``labels[b, p]`` (units²); 0 without gradient
        where the label is 0.
    """
    _check_backend(backend)
    if backend == "pytorch3d":
        _check_inputs(points, verts, faces)
        faces = faces.to(points.device).long()
        bits, n_parts = _parts(parts, faces)
        _label_bits(labels, points, n_parts)  # validation
        labels = labels.to(points.device)
        out = torch.zeros(points.shape[:2], dtype=points.dtype, device=points.device)
        for k, ids in enumerate(part_face_ids(bits, n_parts), start=1):
            mask = labels == k
            if bool(mask.any()):
                out = out + _p3d_sqdist(points, verts, faces[ids], mask)
        return out
    idx, weights = _nearest(points, verts, faces, parts, labels, search, chunk_pairs)
    return _sqdist_to_faces(points, verts, faces, idx, weights)


def point_each_part_sqdist(points: Tensor, verts: Tensor, faces: Tensor, parts: Tensor | Sequence[Tensor], *,
                           backend: str = "torch", search: str = "auto",
                           chunk_pairs: int | None = None) -> Tensor:
    """(B, P, K): squared distance from every point to every part (K times the cost of one part query).

    What the official ``JointICPLoss`` evaluates before masking by labels; :func:`point_part_sqdist` gives the
    same values for the entries the loss keeps.
    """
    _check_inputs(points, verts, faces)
    bits, n_parts = _parts(parts, faces.to(points.device))
    ones = torch.ones(points.shape[:2], dtype=torch.long, device=points.device)
    return torch.stack([point_part_sqdist(points, verts, faces, bits, ones * k, backend=backend,
                                          search=search, chunk_pairs=chunk_pairs)
                        for k in range(1, n_parts + 1)], dim=-1)


# ------------------------------------------------------------------------------------------------------------
# optional pytorch3d backend
# ------------------------------------------------------------------------------------------------------------
def _check_backend(backend: str) -> None:
    if backend not in ("torch", "pytorch3d"):
        raise ValueError(f"backend must be one of {{'torch', 'pytorch3d'}}, got {backend!r}")


def _p3d_sqdist(points: Tensor, verts: Tensor, faces: Tensor, mask: Tensor | None) -> Tensor:
    """pytorch3d's squared distance to ``faces`` for all points or those in ``mask`` (B, P) (0 elsewhere)."""
    try:
        from pytorch3d.loss import point_mesh_distance as p3d
    except (ImportError, OSError) as err:  # OSError: a binary built against another torch
        raise ImportError(f"backend='pytorch3d' needs pytorch3d, which is not importable here ({err}); it "
                          "needs its own venv (requirements-pytorch3d.txt). Or use backend='torch'.") from err
    n_b, n_p, _ = points.shape
    tris = verts[:, faces]  # (B, F_k, 3, 3)
    if mask is None:
        mask = torch.ones(n_b, n_p, dtype=torch.bool, device=points.device)
    counts = mask.sum(1)
    keep = counts > 0  # clouds without points are left out of the packed batch
    counts, tris = counts[keep], tris[keep]
    first = torch.cumsum(counts, 0) - counts
    tris_first = torch.arange(tris.shape[0], device=points.device) * tris.shape[1]
    args = (points[mask], first, tris.reshape(-1, 3, 3), tris_first, int(counts.max()))
    # pytorch3d >= 0.6.2 takes triangles below min_triangle_area (default 5e-3) as degenerate: ask for none
    if "min_triangle_area" in inspect.signature(p3d._PointFaceDistance.forward).parameters:
        args = args + (0.0,)
    d = p3d.point_face_distance(*args)
    return torch.zeros(n_b, n_p, dtype=d.dtype, device=d.device).masked_scatter(mask, d)
