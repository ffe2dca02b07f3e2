"""Differentiable hard z-buffer depth rasterizer of triangle meshes (pure PyTorch; docs/method.md §8).

Conventions (the repo's, see util/geometry.py): vertices in mm in the camera frame (+x right, +y down, +z
forward); pinhole ``camera = (fx, fy, cx, cy)``; pixel (row i, column j) samples the ray through the image
point (u, v) = (j, i) with u = cx + fx·x/z, v = cy + fy·y/z (OpenCV integer-centre convention, the one of the
crop warp).

Semantics (those of pytorch3d's ``MeshRasterizer`` with ``faces_per_pixel=1, blur_radius=0``):

- a pixel is covered by a face when its centre lies *strictly* inside the projected triangle (all three screen
  barycentrics > 0); front and back faces both count; the nearest face (largest 1/z) wins, ties go to the
  lower face index; background depth is 0, ``face_index`` -1;
- the visible face of each pixel is chosen without gradient; the depth of the winning (pixel, face) pair is
  then recomputed differentiably as the perspective-correct barycentric interpolation 1/z = Σ b_k / z_k with
  the screen barycentrics b_k of the pixel centre, i.e. the exact depth of the triangle's plane along the
  pixel ray (pytorch3d >= 0.5 default ``perspective_correct=True``; DSF's pytorch3d 0.4.0 interpolated z
  linearly in screen space, which differs by < 0.25 mm for MANO hands at 500-1200 mm). Gradients reach the
  vertices through this interpolation only (no silhouette gradients), as in pytorch3d;
- near plane: faces with any vertex at or behind z = ``z_near`` (default 1 mm) are **dropped**, not clipped
  (rendered hands are never that close, and clipping would create new vertices and change face indices);
  degenerate faces (doubled screen area <= ``MIN_AREA2`` px², non-finite vertices) are dropped too;
- precision: the selection runs in float32 whatever the input dtype (like pytorch3d); the depth is computed in
  the dtype of ``verts`` from edge functions taken relative to the pixel (float32: within ~1e-3 mm of float64
  at 1 m).

Efficiency: faces are never tested against all pixels. Each face enumerates only the pixel centres strictly
inside its screen bounding box (clipped to the image), vectorised over all faces of the batch; the z-buffer is
resolved with one ``scatter_reduce(amax)`` over a packed (1/z, face) key. Candidate pairs are processed in
chunks of at most ``max_pairs`` (about 100 bytes each; the z-buffer merge is associative, so chunking changes
nothing but peak memory). On CPU the same selection runs in a compiled numba kernel when numba is importable
(same float32 arithmetic, same result, several times faster); CUDA tensors always take the torch path. Only
the visible faces are then projected again, with gradient.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from render.constant_check import index_range
from util.geometry import crop_intrinsics, crop_matrix_batch, normalize_depth

CameraLike = Union[Tensor, np.ndarray, Sequence[float]]

#: default near plane in mm (faces with a vertex at or in front of it are dropped)
Z_NEAR = 1.0
#: default bound on the number of (face, pixel) candidate pairs processed at once (~100 MB of temporaries)
MAX_PAIRS = 1 << 20
#: faces whose doubled screen area is at most this (px^2) are dropped as degenerate
MIN_AREA2 = 1e-5
#: largest H*W: window coordinates are recovered with float32 division, exact below 2**23
MAX_PIXELS = 1 << 23
_LOW32 = (1 << 32) - 1


@dataclass(frozen=True)
class Rendered:
    """Output of a depth render.

    Attributes:
        depth: (B, H, W) mm, 0 where no face covers the pixel; differentiable w.r.t. the vertices.
        mask: (B, H, W) bool, True where a face covers the pixel.
        face_index: (B, H, W) int64 index into ``faces`` of the visible face, -1 where empty.
    """

    depth: Tensor
    mask: Tensor
    face_index: Tensor


# ----------------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------------
def _check_inputs(verts: Tensor, faces: Tensor, image_size: Sequence[int]) -> tuple[int, int]:
    if not isinstance(verts, Tensor) or verts.ndim != 3 or verts.shape[-1] != 3 \
            or not verts.is_floating_point():
        got = getattr(verts, "shape", type(verts))
        raise ValueError(f"verts must be a float tensor (B, V, 3) in mm, got {got}")
    if not isinstance(faces, Tensor) or faces.ndim != 2 or faces.shape[-1] != 3 \
            or faces.is_floating_point():
        got = getattr(faces, "shape", type(faces))
        raise ValueError(f"faces must be an integer tensor (F, 3), got {got}")
    if faces.numel() and not (0 <= (r := index_range(faces))[0] and r[1] < verts.shape[1]):
        raise ValueError(f"faces index vertices outside [0, {verts.shape[1]})")
    if len(image_size) != 2 or int(image_size[0]) <= 0 or int(image_size[1]) <= 0 \
            or int(image_size[0]) * int(image_size[1]) > MAX_PIXELS:
        raise ValueError(f"image_size must be (H, W) with positive entries and H*W <= {MAX_PIXELS}, "
                         f"got {tuple(image_size)}")
    return int(image_size[0]), int(image_size[1])


def camera_tensor(camera: CameraLike, batch: int, like: Tensor) -> Tensor:
    """Intrinsics as a (B, 4) tensor (fx, fy, cx, cy) with the dtype/device of ``like``.

    ``camera`` is a 4-sequence shared by the batch, or a (B, 4) / (4,) tensor or array.
    """
    cam = torch.as_tensor(camera, dtype=like.dtype, device=like.device)
    if cam.shape == (4,):
        return cam.expand(batch, 4)
    if cam.shape == (batch, 4):
        return cam
    raise ValueError(f"camera must be (fx, fy, cx, cy) or a ({batch}, 4) tensor, got {tuple(cam.shape)}")


# ----------------------------------------------------------------------------------------------------
# selection (no gradient): which face is visible at each pixel
# ----------------------------------------------------------------------------------------------------
def _to_pixels(xy: Tensor, cam: Tensor, origin: Tensor | float = 0.0) -> Tensor:
    """Normalised image coordinates (..., 2) = (x/z, y/z) -> pixel position relative to ``origin`` (..., 2).

    ``f·x/z + (c - origin)`` with cam (..., 4) = (fx, fy, cx, cy) broadcast against xy: subtracting the
    origin from the principal point first keeps float32 precision in the small relative numbers.
    """
    return cam[..., 0:2] * xy + (cam[..., 2:4] - origin)


def _edge_coefficients(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Edge function of the screen edge a -> b as an affine function of the pixel offset p = (dj, di).

    a, b (..., 2) relative to the same origin as p; w(p) = d.u (p.v - a.v) - d.v (p.u - a.u) with d = b - a.
    For the edge opposite corner k (a = corner k+1, b = corner k+2) the screen barycentric is
    b_k = w_k / sum(w), the sum being twice the signed area (the same at every pixel). Returns the
    coefficients of dj, di and 1.
    """
    du, dv = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    return -dv, du, dv * a[..., 0] - du * a[..., 1]


def _face_setup(verts: Tensor, faces: Tensor, cam: Tensor, H: int, W: int, z_near: float):
    """Candidate windows and float32 pixel functions of all faces, flattened over the batch (no gradient).

    Returns:
        box: (B*F, 4) int64 (j0, i0, bw, bh): first pixel and size of the window of pixel centres strictly
            inside the face's screen bounding box, clipped to the image (all 0 for dropped or off-image
            faces).
        table: (B*F, 12) float32: (b0, b1, b2, 1/z) each as coefficients of (dj, di, 1) with
            (dj, di) = (j - j0, i - i0); 1/z = sum_k b_k / z_k is the perspective-correct interpolation (the
            exact depth of the face's plane).
    """
    v = verts.detach().float()
    c = cam.detach().float()[:, None]  # (B, 1, 4)
    xyz = torch.cat([v[..., :2] / v[..., 2:], v[..., 2:]], -1)  # (B, V, 3) = (x/z, y/z, z)
    corners = [xyz[:, faces[:, k]] for k in range(3)]  # 3 x (B, F, 3)
    uv = [_to_pixels(p[..., :2], c) for p in corners]
    lo = torch.minimum(torch.minimum(uv[0], uv[1]), uv[2])  # (B, F, 2)
    hi = torch.maximum(torch.maximum(uv[0], uv[1]), uv[2])
    size = torch.tensor([W, H], dtype=lo.dtype, device=lo.device)
    # centres strictly inside: lo < j < hi, within [0, size - 1]; clamping first keeps integer casts in range
    first = torch.floor(torch.clamp(lo, min=-torch.ones_like(size), max=size)) + 1  # >= 0
    last = torch.ceil(torch.clamp(hi, min=-torch.ones_like(size), max=size)) - 1  # <= size - 1
    extent = last - first + 1
    rel = [_to_pixels(p[..., :2], c, first) for p in corners]  # corners relative to the window corner
    edges = [_edge_coefficients(rel[(k + 1) % 3], rel[(k + 2) % 3]) for k in range(3)]
    area2 = edges[0][2] + edges[1][2] + edges[2][2]  # twice the signed screen area
    rows = [[coef / area2 for coef in e] for e in edges]  # barycentric coefficients
    z0, z1, z2 = (p[..., 2] for p in corners)
    invz = [rows[0][m] / z0 + rows[1][m] / z1 + rows[2][m] / z2 for m in range(3)]
    table = torch.stack(rows[0] + rows[1] + rows[2] + invz, -1)  # (B, F, 12)
    # NaN compares False, so non-finite faces drop too; a (near-)zero screen area would give noise or inf
    # coefficients (pytorch3d skips such faces too)
    ok = (z0 > z_near) & (z1 > z_near) & (z2 > z_near) & (extent[..., 0] > 0) & (extent[..., 1] > 0)
    ok &= (area2.abs() > MIN_AREA2) & torch.isfinite(invz[2])
    box = torch.where(ok[..., None], torch.cat([first, extent], -1), 0).long().reshape(-1, 4)
    return box, table.reshape(-1, 12)


def _select_torch(box: Tensor, table: Tensor, B: int, F: int, H: int, W: int, max_pairs: int) -> Tensor:
    """Visible face per pixel: flat (B*H*W,) int64 batch-flat face id (b*F + f), -1 where empty."""
    device = box.device
    HW = H * W
    counts = box[:, 2] * box[:, 3]
    live = torch.nonzero(counts > 0).squeeze(1)  # only faces with candidate pixels
    key = torch.full((B * HW,), -1, dtype=torch.int64, device=device)
    if live.numel() == 0:
        return key
    box = box[live]
    counts = counts[live]
    # per live face: float32 pixel functions (12 numbers) and the flat index of its window's first pixel
    table = table[live].t().contiguous()  # (12, n): column gathers are much faster than row gathers on CPU
    base = torch.div(live, F, rounding_mode="floor") * HW + box[:, 1] * W + box[:, 0]
    ends_cpu = torch.cumsum(counts, 0).cpu()
    budget = max(int(max_pairs), HW)  # one face never has more than H*W candidates
    start, done = 0, 0
    while start < live.numel():
        stop = max(int(torch.searchsorted(ends_cpu, done + budget, right=True)), start + 1)
        sl = slice(start, stop)
        end = int(ends_cpu[stop - 1])
        _scatter_chunk(key, table[:, sl], base[sl], box[sl, 2], counts[sl], live[sl], W, end - done)
        done, start = end, stop
    return torch.where(key >= 0, (key & _LOW32) ^ _LOW32, key)  # undo the complement of the face id


def _scatter_chunk(key: Tensor, table: Tensor, base: Tensor, bw: Tensor, counts: Tensor, gids: Tensor,
                   W: int, n_pairs: int) -> None:
    """Enumerate the candidate pairs of one chunk of faces and max-merge their (1/z, face) keys into ``key``.

    table (12, n) float32, base (n,) flat first pixel, bw (n,) window width, counts (n,) window sizes,
    gids (n,) batch-flat face ids; n_pairs = counts.sum(), passed in (the caller has it on the host).
    """
    dev, n = key.device, n_pairs
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=dev), counts, output_size=n)
    first = torch.cumsum(counts, 0) - counts
    # rank of the pair inside its face's window
    k = torch.arange(n, device=dev) - first.index_select(0, owner)
    w = bw.index_select(0, owner)
    # row/column inside the window (float32 division is exact here: k < H*W <= 2**23 and +0.5 keeps the
    # quotient at least 0.5/w away from an integer)
    di = torch.floor((k.float() + 0.5) / w.float())
    dj = k.float() - di * w.float()
    c = table[:9].index_select(1, owner)  # (9, N) barycentric functions
    b0 = c[0] * dj + c[1] * di + c[2]
    b1 = c[3] * dj + c[4] * di + c[5]
    b2 = c[6] * dj + c[7] * di + c[8]
    inside = torch.nonzero((b0 > 0) & (b1 > 0) & (b2 > 0)).squeeze(1)
    dj, di, owner = dj[inside], di[inside], owner[inside]
    c = table[9:].index_select(1, owner)  # (3, N_inside) 1/z function
    invz = c[0] * dj + c[1] * di + c[2]
    pix = base.index_select(0, owner) + di.long() * W + dj.long()
    # 1/z > 0, so its float32 bit pattern orders like the value; the complemented face id in the low word
    # makes the lower face index win exact ties (pytorch3d's order)
    packed = (invz.view(torch.int32).long() << 32) | (gids.index_select(0, owner) ^ _LOW32)
    key.scatter_reduce_(0, pix, packed, reduce="amax")


# ----------------------------------------------------------------------------------------------------
# differentiable depth of the visible faces
# ----------------------------------------------------------------------------------------------------
def _pixel_depth(verts: Tensor, faces: Tensor, cam: Tensor, box: Tensor, pix: Tensor, gid: Tensor, H: int,
                 W: int) -> Tensor:
    """Differentiable perspective-correct depth (N,) of batch-flat faces ``gid`` at flat pixels ``pix``.

    Each visible face is projected once (with gradient); per pixel, the edge functions w_k at the pixel centre
    give z = sum_k w_k / sum_k (w_k / z_k), i.e. 1/z = sum_k b_k / z_k (see :func:`_edge_coefficients`).
    Numerator and denominator share the rounding of the w_k, which keeps float32 depth accurate even on sliver
    faces.
    """
    B, V, _ = verts.shape
    F = faces.shape[0]
    visible = torch.zeros(B * F, dtype=torch.bool, device=verts.device)
    visible[gid] = True
    vid = torch.nonzero(visible).squeeze(1)  # (Fv,) distinct visible faces
    slot = torch.zeros(B * F, dtype=torch.int64, device=verts.device)
    slot[vid] = torch.arange(vid.numel(), device=verts.device)
    b = torch.div(vid, F, rounding_mode="floor")
    tri = verts.reshape(B * V, 3)[faces[vid - b * F] + (b * V)[:, None]]  # (Fv, 3, 3)
    z = tri[..., 2:]
    corner = box[vid, :2].to(verts.dtype)  # the selection's window corner: small numbers keep precision
    rel = torch.cat([_to_pixels(tri[..., :2] / z, cam[b, None], corner[:, None]), z], -1)
    rem = pix - torch.div(gid, F, rounding_mode="floor") * (H * W)
    row = torch.div(rem, W, rounding_mode="floor")
    off = (torch.stack([rem - row * W, row], -1) - box[gid, :2]).to(verts.dtype)  # (N, 2) pixel - corner
    p = rel[slot[gid]]  # (N, 3, 3)
    du, dv = p[..., 0] - off[:, 0:1], p[..., 1] - off[:, 1:2]  # corners relative to the pixel centre
    w = du.roll(-1, 1) * dv.roll(-2, 1) - du.roll(-2, 1) * dv.roll(-1, 1)  # (N, 3) edge function opposite k
    return w.sum(1) / (w / p[..., 2]).sum(1)


def render_depth(verts: Tensor, faces: Tensor, camera: CameraLike, image_size: Sequence[int] = (128, 128), *,
                 z_near: float = Z_NEAR, max_pairs: int = MAX_PAIRS,
                 use_numba: bool | None = None) -> Rendered:
    """Rasterise triangle meshes into depth maps (hard z-buffer, pytorch3d semantics, see module docstring).

    Args:
        verts: (B, V, 3) float, mm, camera frame (+x right, +y down, +z forward).
        faces: (F, 3) int64, shared by the batch (either winding).
        camera: (fx, fy, cx, cy) shared, or a (B, 4) tensor per sample; pixels.
        image_size: (H, W).
        z_near: faces with a vertex at z <= z_near (mm) are dropped (must be > 0).
        max_pairs: bound on (face, pixel) candidate pairs held in memory at once (torch path).
        use_numba: None = numba kernel for CPU tensors when numba is importable; False = the torch path.
    Returns:
        :class:`Rendered` with depth (B, H, W) in the dtype of ``verts`` (differentiable), mask, face_index.
    """
    H, W = _check_inputs(verts, faces, image_size)
    if not z_near > 0:
        raise ValueError(f"z_near must be > 0 mm, got {z_near}")
    B, F = verts.shape[0], faces.shape[0]
    faces = faces.to(device=verts.device, dtype=torch.int64)
    cam = camera_tensor(camera, B, verts)
    with torch.no_grad():
        box, table = _face_setup(verts, faces, cam, H, W, z_near)
        if _want_numba(use_numba, verts):
            flat = _select_numba(box, table, B, F, H, W)
        else:
            flat = _select_torch(box, table, B, F, H, W, max_pairs)
        covered = flat >= 0
        pix = torch.nonzero(covered).squeeze(1)
        gid = flat[pix]
        face_index = flat.index_put((pix,), gid - torch.div(gid, F, rounding_mode="floor") * F)
    zvals = _pixel_depth(verts, faces, cam, box, pix, gid, H, W)
    depth = torch.zeros(B * H * W, dtype=verts.dtype, device=verts.device).index_put((pix,), zvals)
    shape = (B, H, W)
    return Rendered(depth.reshape(shape), covered.reshape(shape), face_index.reshape(shape))


def render_crop(verts: Tensor, faces: Tensor, center_xyz: Tensor, cube: Tensor, camera: CameraLike,
                size: int = 128, *, rasterizer: Callable[..., Rendered] | None = None,
                **kwargs) -> tuple[Rendered, Tensor]:
    """Render meshes directly into their DeepPrior++ crops (docs/method.md §2.4, §8.1 recommended route).

    The crop's affine ``M`` (no rotation) composed with the full-frame camera gives the crop intrinsics
    ``K' = M K``; rendering with K' at ``size x size`` samples, at crop pixel (j, i), exactly the ray of the
    full-image point ``M^-1 (j, i, 1)``, so the result lines up pixel-exactly with the real crop warped by M.

    Args:
        verts: (B, V, 3) mm camera frame; faces: (F, 3).
        center_xyz: (B, 3) crop centres in mm (camera frame); cube: (B, 3) or (3,) cube edges in mm.
        camera: full-frame (fx, fy, cx, cy) or (B, 4).
        size: crop edge in pixels.
        rasterizer: a callable with :func:`render_depth`'s interface (default :func:`render_depth`).
        **kwargs: passed to the rasterizer.
    Returns:
        (Rendered of shape (B, size, size), M (B, 3, 3) in the dtype/device of ``verts``).
    """
    B, dev = verts.shape[0], verts.device
    # M and K' in float64 on the vertices' device: K' stays exact, no host round trip in the training step
    center = torch.as_tensor(center_xyz).to(dev).reshape(B, 3)
    cam = torch.as_tensor(camera, dtype=torch.float64).to(dev)
    M = crop_matrix_batch(center, torch.as_tensor(cube).to(dev), cam, size, dtype=torch.float64)  # (B, 3, 3)
    k_crop = crop_intrinsics(cam, M).to(verts.dtype)  # (B, 4)
    out = (rasterizer or render_depth)(verts, faces, k_crop, (size, size), **kwargs)
    return out, M.to(verts.dtype)


def render_normalised_crop(verts_mm: Tensor, faces: Tensor, center_xyz: Tensor, cube: Tensor,
                           camera: CameraLike, size: int = 128, *,
                           rasterizer: Callable[..., Rendered] | None = None
                           ) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`render_crop`, then the depth normalised like a real crop (``util.geometry.normalize_depth``).

    Args:
        verts_mm: (B, V, 3) mm camera frame; faces (F, 3); center_xyz (B, 3) mm; cube (B, 3) mm;
        camera, size, rasterizer: as in :func:`render_crop`.
    Returns:
        depth (B, 1, S, S) in [-1, 1], background +1 (differentiable w.r.t. the vertices);
        mask (B, 1, S, S) bool, covered pixels; M (B, 3, 3) the crop matrices.
    """
    rendered, M = render_crop(verts_mm, faces, center_xyz, cube, camera, size, rasterizer=rasterizer)
    depth = normalize_depth(rendered.depth, center_xyz[:, 2], cube[:, 2])
    return depth[:, None], rendered.mask[:, None], M


RENDERERS = ("torch", "pytorch3d")


def get_rasterizer(backend: str = "torch") -> Callable[..., Rendered]:
    """The depth rasterizer of a backend, with :func:`render_depth`'s interface (config key ``renderer``).

    ``"pytorch3d"`` imports :mod:`render.pytorch3d_backend` only now; it raises one ImportError with the
    install line when pytorch3d is missing.
    """
    if backend == "torch":
        return render_depth
    if backend == "pytorch3d":
        from render.pytorch3d_backend import render_depth_pytorch3d

        return render_depth_pytorch3d
    raise ValueError(f"renderer must be one of {RENDERERS}, got {backend!r}")


def _want_numba(use_numba: bool | None, verts: Tensor) -> bool:
    if use_numba is None:
        return verts.device.type == "cpu" and _numba_kernel() is not None
    if use_numba and (verts.device.type != "cpu" or _numba_kernel() is None):
        raise ValueError("use_numba=True needs CPU tensors and an importable numba (pip install numba)")
    return bool(use_numba)


_KERNEL: list = []  # [compiled kernel or None], filled on first use so importing this module stays cheap


def _numba_kernel() -> Callable | None:
    if not _KERNEL:
        try:
            import numba
        except ImportError:
            _KERNEL.append(None)
        else:
            try:  # compiled once, then loaded from numba's on-disk cache (import + load ~0.4 s)
                _KERNEL.append(numba.njit(cache=True, nogil=True)(_select_loops))
            except RuntimeError:  # no writable cache location: compile per process (~1 s)
                _KERNEL.append(numba.njit(nogil=True)(_select_loops))
    return _KERNEL[0]


def _select_loops(box: np.ndarray, table: np.ndarray, B: int, F: int, H: int, W: int,
                  out: np.ndarray) -> None:
    """numba kernel: same arithmetic (float32, same operation order) and tie rule as :func:`_scatter_chunk`.

    box (B*F, 4) int64 (j0, i0, bw, bh); table (B*F, 12) float32; out (B*H*W,) int64 filled with -1.
    """
    HW = H * W
    zbuf = np.zeros(HW, np.float32)  # best 1/z so far (> 0 when covered)
    for b in range(B):
        zbuf[:] = 0.0
        for f in range(F):
            g = b * F + f
            bw, bh = box[g, 2], box[g, 3]
            if bw == 0 or bh == 0:
                continue
            c = table[g]
            for di in range(bh):
                fi = np.float32(di)
                row = (box[g, 1] + di) * W + box[g, 0]
                for dj in range(bw):
                    fj = np.float32(dj)
                    if c[0] * fj + c[1] * fi + c[2] > 0 and c[3] * fj + c[4] * fi + c[5] > 0 \
                            and c[6] * fj + c[7] * fi + c[8] > 0:
                        iz = c[9] * fj + c[10] * fi + c[11]
                        if iz > zbuf[row + dj]:  # strict: the lower face index keeps ties
                            zbuf[row + dj] = iz
                            out[b * HW + row + dj] = g


def _select_numba(box: Tensor, table: Tensor, B: int, F: int, H: int, W: int) -> Tensor:
    out = np.full(B * H * W, -1, np.int64)
    _numba_kernel()(box.contiguous().numpy(), table.contiguous().numpy(), B, F, H, W, out)
    return torch.from_numpy(out)
