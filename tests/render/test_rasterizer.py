"""Depth rasterizer against analytic depths, float64 numpy coverage, finite differences and pytorch3d."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from render.rasterizer import Rendered, get_rasterizer, render_crop, render_depth
from util import geometry as g
from util.camera import NYU_CAMERA

REPO = Path(__file__).resolve().parents[2]
P3D_PYTHON = REPO / ".venv-p3d" / "bin" / "python"
SIZE_CROP = 128
CROP_CAM = (301.07, 300.58, 63.5, 63.5)  # NYU focal scaled to a 250 mm cube in a 128 crop
# both selection kernels (numba on CPU, the torch path used on CUDA) must satisfy every test
PATHS = [pytest.param(False, id="torch"), pytest.param(None, id="default")]


# ----------------------------------------------------------------------------------------------------
# independent references (numpy float64)
# ----------------------------------------------------------------------------------------------------
def uv_sphere(n_lon: int = 32, n_lat: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Closed unit UV sphere (V = n_lon*n_lat + 2) with outward faces."""
    th = np.linspace(0, np.pi, n_lat + 2)[1:-1]
    ph = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    T, P = np.meshgrid(th, ph, indexing="ij")
    v = np.stack([np.sin(T) * np.cos(P), np.sin(T) * np.sin(P), np.cos(T)], -1).reshape(-1, 3)
    v = np.concatenate([[[0, 0, 1.0]], v, [[0, 0, -1.0]]])
    ring = lambda r, c: 1 + r * n_lon + c % n_lon  # noqa: E731
    f = [[0, ring(0, c), ring(0, c + 1)] for c in range(n_lon)]
    f += [[len(v) - 1, ring(n_lat - 1, c + 1), ring(n_lat - 1, c)] for c in range(n_lon)]
    for r in range(n_lat - 1):
        for c in range(n_lon):
            a, b, d, e = ring(r, c), ring(r + 1, c), ring(r + 1, c + 1), ring(r, c + 1)
            f += [[a, b, d], [a, d, e]]
    return v, np.asarray(f, np.int64)


def blobs(B: int, seed: int = 0, z_range=(500.0, 1200.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """Hand-sized deformed spheres (semi-axes ~90/45/25 mm), random rotation and depth, near the axis."""
    rng = np.random.default_rng(seed)
    v0, f = uv_sphere()
    out = []
    for _ in range(B):
        bump = 1 + 0.08 * np.sin(v0 @ rng.normal(size=(3, 3))).sum(-1, keepdims=True)
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        z = rng.uniform(*z_range)
        out.append((v0 * np.array([90, 45, 25]) * rng.uniform(0.8, 1.2, 3) * bump) @ q.T
                   + [*rng.uniform(-0.1, 0.1, 2) * z, z])
    return torch.tensor(np.stack(out), dtype=torch.float32), torch.from_numpy(f)


def pixel_rays(H: int, W: int, cam) -> np.ndarray:
    """(H, W, 3) ray directions with z = 1 through the pixel centres (u, v) = (j, i)."""
    fx, fy, cx, cy = cam
    i, j = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    return np.stack([(j - cx) / fx, (i - cy) / fy, np.ones_like(i)], -1)


def plane_depth(tri: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """Depth (z) where each ray hits the plane of the 3D triangle ``tri`` (3, 3)."""
    n = np.cross(tri[1] - tri[0], tri[2] - tri[0])
    return (n @ tri[0]) / (rays @ n)


def screen_barycentrics(tri: np.ndarray, H: int, W: int, cam) -> np.ndarray:
    """(H, W, 3) float64 screen barycentrics of every pixel centre w.r.t. the projected triangle."""
    fx, fy, cx, cy = cam
    u = cx + fx * tri[:, 0] / tri[:, 2]
    v = cy + fy * tri[:, 1] / tri[:, 2]
    i, j = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    area = (u[1] - u[0]) * (v[2] - v[0]) - (v[1] - v[0]) * (u[2] - u[0])
    w = [(u[b] - u[a]) * (i - v[a]) - (v[b] - v[a]) * (j - u[a]) for a, b in ((1, 2), (2, 0), (0, 1))]
    return np.stack(w, -1) / area


def render(verts, faces, cam, hw, use_numba=None, **kw) -> Rendered:
    return render_depth(torch.as_tensor(verts), torch.as_tensor(faces), cam, hw, use_numba=use_numba, **kw)


# ----------------------------------------------------------------------------------------------------
# analytic scenes
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_numba", PATHS)
def test_fronto_parallel_rectangle_exact_depth_and_coverage(use_numba):
    H, W, z = 48, 64, 700.0
    fx, fy, cx, cy = cam = (500.0, 480.0, 31.5, 22.25)
    # corners at non-integer pixel positions; the diagonal avoids pixel centres
    u0, u1, v0, v1 = 10.3, 50.6, 5.7, 40.2
    corners = [(u0, v0), (u1, v0), (u1, v1), (u0, v1)]
    quad = np.array([[(u - cx) * z / fx, (v - cy) * z / fy, z] for u, v in corners])
    r = render(quad[None], np.array([[0, 1, 2], [0, 2, 3]]), cam, (H, W), use_numba)
    i, j = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    inside = (j > u0) & (j < u1) & (i > v0) & (i < v1)
    diag = (j - u0) * (v1 - v0) - (i - v0) * (u1 - u0)
    assert np.abs(diag[inside]).min() > 1e-3  # precondition: no centre on the shared edge
    np.testing.assert_array_equal(r.mask[0].numpy(), inside)
    # float64 input: exact up to rounding
    np.testing.assert_allclose(r.depth[0][r.mask[0]].numpy(), z, rtol=1e-13)
    assert (r.depth[0][~r.mask[0]] == 0).all()
    # face 0 = corners (u0,v0),(u1,v0),(u1,v1): the half right of the diagonal (diag > 0)
    np.testing.assert_array_equal(r.face_index[0].numpy(), np.where(inside, np.where(diag > 0, 0, 1), -1))


@pytest.mark.parametrize("dtype,tol_mm", [(torch.float32, 1e-2), (torch.float64, 1e-8)])
def test_tilted_triangle_exact_perspective_depth(dtype, tol_mm):
    H, W, cam = 64, 80, (210.0, 205.0, 40.3, 30.9)
    tri = np.array([[-160.0, -120.0, 420.0], [190.0, -60.0, 780.0], [-20.0, 170.0, 610.0]])
    r = render_depth(torch.tensor(tri[None], dtype=dtype), torch.tensor([[0, 2, 1]]), cam, (H, W))
    bary = screen_barycentrics(tri, H, W, cam)
    inside = (bary > 0).all(-1)
    assert inside.sum() > 500
    np.testing.assert_array_equal(r.mask[0].numpy(), inside)
    expect = plane_depth(tri, pixel_rays(H, W, cam))[inside]
    assert r.depth.dtype == dtype
    np.testing.assert_allclose(r.depth[0].double().numpy()[inside], expect, rtol=0, atol=tol_mm)


@pytest.mark.parametrize("use_numba", PATHS)
def test_closed_sphere_matches_ray_cast_within_tessellation(use_numba):
    H = W = 96
    cam = (260.0, 260.0, 47.5, 47.5)
    R, C = 60.0, np.array([8.0, -5.0, 400.0])
    v, f = uv_sphere(48, 32)
    r = render((v * R + C)[None], f, cam, (H, W), use_numba)
    rays = pixel_rays(H, W, cam)
    # |t r - C|^2 = R^2, nearest root
    a, b, c = (rays ** 2).sum(-1), -2 * rays @ C, C @ C - R ** 2
    disc = b ** 2 - 4 * a * c
    hit = disc > 0
    t = (-b - np.sqrt(np.where(hit, disc, 0))) / (2 * a)
    normal = (t[..., None] * rays - C) / R
    cos_inc = np.abs((normal * rays).sum(-1)) / np.linalg.norm(rays, axis=-1)
    # the mesh is inscribed: it lies inside the sphere, at most a sagitta R(1 - cos alpha) away radially,
    # alpha = largest angular circumradius of a face
    tri = v[f]
    cen = tri.mean(1)
    cen = cen / np.linalg.norm(cen, axis=1)[:, None]
    alpha = np.arccos(np.clip((tri * cen[:, None]).sum(-1), -1, 1)).max()
    sagitta = R * (1 - np.cos(alpha))
    mask, depth = r.mask[0].numpy(), r.depth[0].double().numpy()
    assert not (mask & ~hit).any()  # never outside the sphere's silhouette
    core = hit & (cos_inc > 0.5)
    assert mask[core].all()
    err = depth[core] - t[core]  # depth of the ray point, z = t since r_z = 1
    assert err.min() > -1e-2 and err.max() < sagitta / 0.5 * 1.01
    assert np.median(err) < sagitta  # and it is a real bound, not a loose one


@pytest.mark.parametrize("use_numba", PATHS)
def test_small_triangles_cover_exactly_the_predicted_pixels(use_numba):
    H, W, cam = 40, 40, CROP_CAM[:2] + (19.5, 19.5)
    rng = np.random.default_rng(3)
    for _ in range(20):
        z = rng.uniform(500, 1200)
        uv = rng.uniform(2, 38, 2) + rng.uniform(-3, 3, (3, 2))  # a few pixels wide, sometimes sliver-like
        tri = np.concatenate([(uv - cam[2:]) * z / np.array(cam[:2]), z + rng.uniform(-5, 5, (3, 1))], 1)
        r = render(tri[None].astype(np.float32), np.array([[0, 1, 2]]), cam, (H, W), use_numba)
        bary = screen_barycentrics(tri.astype(np.float32).astype(np.float64), H, W, cam)
        clear = np.abs(bary).min(-1) > 1e-4  # pixel centres not within float32 noise of an edge
        expect = (bary > 0).all(-1)
        got = r.mask[0].numpy()
        np.testing.assert_array_equal(got[clear], expect[clear])
        assert (~clear).sum() <= 2
        np.testing.assert_array_equal(r.face_index[0].numpy()[got], 0)


@pytest.mark.parametrize("use_numba", PATHS)
def test_overlapping_and_intersecting_triangles_resolve_by_depth(use_numba):
    H, W, cam = 50, 60, (300.0, 300.0, 29.5, 24.5)
    near = np.array([[-40.0, -35.0, 500.0], [45.0, -30.0, 520.0], [0.0, 40.0, 540.0]])
    far = np.array([[-30.0, 30.0, 480.0], [50.0, 25.0, 620.0], [10.0, -45.0, 560.0]])  # crosses `near`
    rays = pixel_rays(H, W, cam)
    d = np.stack([plane_depth(t, rays) for t in (near, far)])  # (2, H, W)
    ins = np.stack([(screen_barycentrics(t, H, W, cam) > 0).all(-1) for t in (near, far)])
    expect_depth = np.where(ins, d, np.inf).min(0)
    covered = ins.any(0)
    both = ins.all(0)
    assert both.sum() > 100 and (d[0] < d[1])[both].any() and (d[0] > d[1])[both].any()
    for order in ([0, 1], [1, 0]):
        verts = np.concatenate([near, far])[None].astype(np.float32)
        faces = np.array([[0, 1, 2], [3, 4, 5]])[order]
        r = render(verts, faces, cam, (H, W), use_numba)
        np.testing.assert_array_equal(r.mask[0].numpy(), covered)
        got = r.depth[0].double().numpy()[covered]
        np.testing.assert_allclose(got, expect_depth[covered], atol=2e-3)
        winner = np.where(d[0] <= d[1], 0, 1)  # which triangle is nearer where both cover
        sure = both & (np.abs(d[0] - d[1]) > 1e-2)
        np.testing.assert_array_equal(r.face_index[0].numpy()[sure], np.array(order).argsort()[winner[sure]])


def test_gradient_matches_central_differences_float64():
    gen = torch.Generator().manual_seed(0)
    H, W, cam = 24, 28, (120.0, 118.0, 13.7, 11.2)
    v, f = uv_sphere(8, 6)
    verts = torch.tensor(v * [40.0, 30.0, 25.0] + [3.0, -2.0, 200.0], dtype=torch.float64)[None]
    verts = verts + torch.randn(verts.shape, generator=gen, dtype=torch.float64)
    faces = torch.from_numpy(f)
    weights = torch.rand(1, H, W, dtype=torch.float64, generator=gen)

    def loss_and_faces(x):
        r = render_depth(x, faces, cam, (H, W))
        return (r.depth * weights).sum(), r.face_index

    x = verts.clone().requires_grad_(True)
    loss, base = loss_and_faces(x)
    (grad,) = torch.autograd.grad(loss, x)
    # every coordinate of a visible vertex, plus a few of hidden ones (their gradient must be 0)
    visible = torch.unique(faces[base[base >= 0]])
    hidden = torch.tensor(sorted(set(range(verts.shape[1])) - set(visible.tolist()))[:4])
    coords = [(int(i), c) for i in torch.cat([visible, hidden]) for c in range(3)]
    eps, checked = 1e-4, 0
    for i, c in coords:
        dx = torch.zeros_like(verts)
        dx[0, i, c] = eps
        (lp, fp), (lm, fm) = loss_and_faces(verts + dx), loss_and_faces(verts - dx)
        if torch.equal(fp, base) and torch.equal(fm, base):  # FD only while visibility is unchanged
            torch.testing.assert_close(grad[0, i, c], (lp - lm) / (2 * eps), rtol=1e-5, atol=1e-6)
            checked += 1
    assert checked > 0.9 * len(coords) and len(visible) > 10 and grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------
# robustness: off-image, behind the camera, empty, degenerate, batching
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_numba", PATHS)
def test_mesh_partly_off_image_equals_window_of_larger_render(use_numba):
    verts, faces = blobs(3, seed=1, z_range=(300, 400))
    verts = verts + torch.tensor([60.0, -40.0, 0.0])  # pushes the blobs over the right/top borders
    H, W, pad = 64, 64, 40
    small = render(verts, faces, CROP_CAM, (H, W), use_numba)
    big_cam = (CROP_CAM[0], CROP_CAM[1], CROP_CAM[2] + pad, CROP_CAM[3] + pad)
    big = render(verts, faces, big_cam, (H + 2 * pad, W + 2 * pad), use_numba)
    win = (slice(None), slice(pad, pad + H), slice(pad, pad + W))
    assert big.mask.sum() > big.mask[win].sum() > 0  # really partly outside
    np.testing.assert_array_equal(small.face_index.numpy(), big.face_index[win].numpy())
    torch.testing.assert_close(small.depth, big.depth[win], atol=1e-3, rtol=0)


@pytest.mark.parametrize("use_numba", PATHS)
def test_faces_at_or_behind_near_plane_are_dropped(use_numba):
    verts, faces = blobs(1, seed=2, z_range=(15, 15))  # the blob straddles z = 0 and z_near = 1 mm
    z = verts[0, :, 2]
    assert (z <= 0).any() and (z > 1).any()
    r = render(verts, faces, CROP_CAM, (64, 64), use_numba)
    keep = (z[faces] > 1.0).all(1)
    ref = render(verts, faces[keep], CROP_CAM, (64, 64), use_numba)
    kept_ids = torch.nonzero(keep).squeeze(1)
    expect = torch.where(ref.face_index >= 0, kept_ids[ref.face_index.clamp(min=0)], ref.face_index)
    assert r.mask.any()
    np.testing.assert_array_equal(r.face_index.numpy(), expect.numpy())
    torch.testing.assert_close(r.depth, ref.depth)
    assert (r.depth[r.mask] > 1.0).all()
    # entirely behind the camera -> empty
    behind = render(verts - torch.tensor([0.0, 0.0, 200.0]), faces, CROP_CAM, (64, 64), use_numba)
    assert not behind.mask.any()
    with pytest.raises(ValueError, match="z_near"):
        render(verts, faces, CROP_CAM, (64, 64), z_near=0.0)


@pytest.mark.parametrize("use_numba", PATHS)
def test_empty_images_and_degenerate_faces(use_numba):
    verts, faces = blobs(2, seed=4)
    # no faces, and a mesh far off to the side: all background, and backward still works
    for f, shift in ((faces[:0], 0.0), (faces, 5000.0)):
        x = (verts + torch.tensor([shift, 0.0, 0.0])).requires_grad_(True)
        r = render_depth(x, f, CROP_CAM, (32, 48), use_numba=use_numba)
        assert r.depth.shape == (2, 32, 48) and r.face_index.dtype == torch.int64
        assert not r.mask.any() and (r.face_index == -1).all() and (r.depth == 0).all()
        r.depth.sum().backward()
        assert (x.grad == 0).all()
    # degenerate faces (repeated vertex, collinear, NaN vertex) never cover anything and change nothing else
    v = torch.cat([verts, torch.tensor([[[0.0, 0.0, 700.0], [10.0, 10.0, 710.0], [20.0, 20.0, 720.0],
                                         [float("nan"), 0.0, 700.0]]]).expand(2, -1, -1)], 1)
    n = verts.shape[1]
    bad = torch.tensor([[n, n, n + 1], [n, n + 1, n + 2], [n + 3, n, n + 1], [n, n + 2, n + 1]])
    r = render(v, torch.cat([bad, faces]), CROP_CAM, (128, 128), use_numba)
    ref = render(verts, faces, CROP_CAM, (128, 128), use_numba)
    np.testing.assert_array_equal(r.face_index.numpy(), torch.where(ref.mask, ref.face_index + 4, -1).numpy())
    torch.testing.assert_close(r.depth, ref.depth)


def test_batching_chunking_and_per_sample_cameras_agree():
    verts, faces = blobs(40, seed=5)
    gen = torch.Generator().manual_seed(5)
    cams = torch.tensor(CROP_CAM).repeat(40, 1) * (0.8 + 0.4 * torch.rand(40, 4, generator=gen))
    full = render(verts, faces, cams, (128, 128), use_numba=False)
    # the smallest chunks (H*W candidate pairs each): ~50 chunks
    chunked = render(verts, faces, cams, (128, 128), use_numba=False, max_pairs=1)
    fast = render(verts, faces, cams, (128, 128))  # numba kernel on CPU
    for other in (chunked, fast):
        np.testing.assert_array_equal(other.face_index.numpy(), full.face_index.numpy())
        torch.testing.assert_close(other.depth, full.depth, atol=0, rtol=0)
    for b in (0, 17, 39):  # B = 1 with a shared 4-tuple camera gives the same image
        one = render(verts[b:b + 1], faces, tuple(cams[b].tolist()), (128, 128))
        np.testing.assert_array_equal(one.face_index[0].numpy(), full.face_index[b].numpy())
        torch.testing.assert_close(one.depth[0], full.depth[b])
    assert full.mask.float().mean() > 0.05


def test_bad_inputs_raise_clear_errors():
    verts, faces = blobs(1)
    with pytest.raises(ValueError, match="verts"):
        render_depth(verts[0], faces, CROP_CAM)
    with pytest.raises(ValueError, match="faces"):
        render_depth(verts, faces.float(), CROP_CAM)
    with pytest.raises(ValueError, match="outside"):
        render_depth(verts, faces + 10_000, CROP_CAM)
    with pytest.raises(ValueError, match="camera"):
        render_depth(verts, faces, torch.ones(3, 4))
    with pytest.raises(ValueError, match="renderer"):
        get_rasterizer("opengl")
    assert get_rasterizer("torch") is render_depth


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    verts, faces = blobs(8, seed=6)
    cpu = render(verts, faces, CROP_CAM, (128, 128))
    x = verts.cuda().requires_grad_(True)
    gpu = render_depth(x, faces.cuda(), CROP_CAM, (128, 128))
    gpu.depth.sum().backward()
    assert gpu.depth.device == x.device and x.grad is not None
    assert (gpu.face_index.cpu() != cpu.face_index).float().mean() < 1e-4
    same = gpu.face_index.cpu() == cpu.face_index
    torch.testing.assert_close(gpu.depth.cpu()[same], cpu.depth[same], atol=1e-2, rtol=0)


# ----------------------------------------------------------------------------------------------------
# crop camera: direct 128x128 render == official full-frame 640x480 render + nearest crop
# ----------------------------------------------------------------------------------------------------
def _full_frame_then_crop(verts, faces, M: np.ndarray, size: int = 128):
    """The official route: render 640x480, then sample the crop pixel (j, i) at the full-image point
    M^-1 (j, i, 1) (nearest, zero outside). Returns sampled depth and face index (B, size, size), the sample
    points (B, size, size, 2) and the full render."""
    full = render_depth(verts, faces, NYU_CAMERA.as_tuple(), (NYU_CAMERA.height, NYU_CAMERA.width))
    i, j = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    pts = np.einsum("bkl,hwl->bhwk", np.linalg.inv(M), np.stack([j, i, np.ones_like(i)], -1))[..., :2]
    col, row = np.floor(pts[..., 0] + 0.5).astype(int), np.floor(pts[..., 1] + 0.5).astype(int)
    ok = (col >= 0) & (col < NYU_CAMERA.width) & (row >= 0) & (row < NYU_CAMERA.height)
    b = np.arange(len(M))[:, None, None]
    depth = np.where(ok, full.depth.numpy()[b, row.clip(0, 479), col.clip(0, 639)], 0)
    face = np.where(ok, full.face_index.numpy()[b, row.clip(0, 479), col.clip(0, 639)], -1)
    return depth, face, pts, full


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_crop_render_equals_full_frame_render_and_crop_when_sampling_is_exact(scale):
    # cube 250 mm at depth d spans 250 * fx / d px; 1/scale * 128 px makes M^-1 map crop pixel centres onto
    # full-image pixel centres (integer scale 1/s and integer offset), so nearest sampling is exact
    d = 125 * NYU_CAMERA.fx / (64 / scale)
    verts, faces = blobs(4, seed=7, z_range=(d, d))
    center = verts.mean(1) + torch.tensor([[4.0, -3.0, 0.0]])
    center[:, 2] = d
    cube = torch.full((4, 3), 250.0)
    crop, M = render_crop(verts, faces, center, cube, NYU_CAMERA.as_tuple())
    M64 = g.crop_matrix_batch(center.double().numpy(), cube.double().numpy(), NYU_CAMERA.as_tuple())
    Minv = np.linalg.inv(M64)  # precondition: integer scale and offset of M^-1
    assert np.allclose(M64[:, 0, 0], scale) and np.allclose(Minv[:, :2, 2], np.round(Minv[:, :2, 2]))
    torch.testing.assert_close(M, torch.as_tensor(M64, dtype=torch.float32))
    depth, face, _, _ = _full_frame_then_crop(verts, faces, M64)
    assert crop.mask.float().mean() > 0.1
    np.testing.assert_array_equal(crop.face_index.numpy(), face)
    np.testing.assert_allclose(crop.depth.numpy(), depth, atol=1e-3, rtol=0)


def test_crop_render_matches_full_frame_render_and_crop_up_to_edge_pixels():
    """General scale: crop pixel (j, i) samples the ray of (u, v) = M^-1 (j, i), the official route the ray of
    the nearest full-image pixel centre, up to 0.5 px away. Hence coverage differs only where the 2x2
    full-image pixels around (u, v) disagree, and where all of them see one face, the depth lies within the
    range of their depths."""
    v, f = uv_sphere()
    rng = np.random.default_rng(8)
    zs = rng.uniform(600, 1100, 4)
    verts = torch.tensor(np.stack([v * 60 + [rng.uniform(-80, 80), rng.uniform(-60, 60), z] for z in zs]),
                         dtype=torch.float32)
    faces = torch.from_numpy(f)
    center = verts.mean(1) + torch.tensor(rng.uniform(-20, 20, (4, 3)), dtype=torch.float32)
    cube = torch.full((4, 3), 250.0)
    crop, M = render_crop(verts, faces, center, cube, NYU_CAMERA.as_tuple())
    assert not np.allclose(1 / M[:, 0, 0].numpy(), np.round(1 / M[:, 0, 0].numpy()))  # general scales
    _, face, pts, full = _full_frame_then_crop(verts, faces, M.double().numpy())
    c0, r0 = np.floor(pts[..., 0]).astype(int), np.floor(pts[..., 1]).astype(int)
    b = np.arange(4)[:, None, None]
    corners = [(r0 + di, c0 + dj) for di in (0, 1) for dj in (0, 1)]
    cov4 = np.stack([full.mask.numpy()[b, r, c] for r, c in corners])  # (4, B, 128, 128)
    dep4 = np.stack([full.depth.numpy()[b, r, c] for r, c in corners])
    face4 = np.stack([full.face_index.numpy()[b, r, c] for r, c in corners])
    mism = crop.mask.numpy() != (face >= 0)
    assert mism.sum() > 0 and not (mism & cov4.all(0)).any() and not (mism & ~cov4.any(0)).any()
    # where the 2x2 pixels and the direct render all see the same (planar) face, depth = 1 / affine(u, v) is
    # monotone along every line, so the direct depth lies within the 2x2 range
    planar = (face4 == crop.face_index.numpy()).all(0) & crop.mask.numpy()
    dd = crop.depth.numpy()[planar]
    assert planar.sum() > 1000
    assert (dd >= dep4.min(0)[planar] - 1e-3).all() and (dd <= dep4.max(0)[planar] + 1e-3).all()


# ----------------------------------------------------------------------------------------------------
# parity with pytorch3d (in-process when importable, else through the separate venv .venv-p3d)
# ----------------------------------------------------------------------------------------------------
def _pytorch3d_importable() -> bool:
    try:
        import pytorch3d.renderer  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


NO_P3D = ("pytorch3d is neither importable here nor installed in .venv-p3d (python3 -m venv .venv-p3d && "
          ".venv-p3d/bin/pip install torch==2.12.1 easypytorch3d==0.7.9.post1 numpy)")


def _assert_parity(mine: Rendered, p3d_depth, p3d_face, mine_grad=None, p3d_grad=None, faces=None):
    """Same depth on pixels both assign to the same face (1e-2 mm), coverage equal except along edges."""
    p3d_depth, p3d_face = np.asarray(p3d_depth), np.asarray(p3d_face)
    covered = mine.mask.numpy() | (p3d_face >= 0)
    differ = mine.face_index.numpy() != p3d_face
    assert differ.sum() <= 1e-3 * covered.sum(), f"{differ.sum()} of {covered.sum()} covered pixels differ"
    same = ~differ & covered
    assert np.abs(mine.depth.detach().numpy()[same] - p3d_depth[same]).max() < 1e-2
    if mine_grad is not None:
        # vertices of faces seen at a differing pixel get a different gradient; compare all others
        touched = np.zeros(mine_grad.shape[:2], bool)
        for fi in (mine.face_index.numpy(), p3d_face):
            b, _, _ = np.nonzero(differ & (fi >= 0))
            touched[b[:, None], faces[fi[differ & (fi >= 0)]]] = True
        ok = ~touched
        err = np.linalg.norm(mine_grad[ok] - p3d_grad[ok]) / np.linalg.norm(p3d_grad[ok])
        assert err < 1e-3, f"relative gradient difference {err:.2e}"
    return int(differ.sum()), int(covered.sum())


def test_parity_with_pytorch3d_reference_script(shared_dir, tmp_path):
    script = shared_dir / "tools" / "p3d_reference.py"
    if not (P3D_PYTHON.exists() and script.exists()):
        pytest.skip(NO_P3D)
    verts, faces = blobs(6, seed=9)
    weights = torch.rand(6, 128, 128, generator=torch.Generator().manual_seed(9))
    src, dst = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(src, verts=verts.numpy(), faces=faces.numpy(), intrinsics=np.array(CROP_CAM, np.float32),
             image_size=np.array([128, 128]), weights=weights.numpy())
    proc = subprocess.run([str(P3D_PYTHON), str(script), "render", str(src), str(dst), "--repeat", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ref = np.load(dst)
    x = verts.clone().requires_grad_(True)
    mine = render_depth(x, faces, CROP_CAM, (128, 128))
    (mine.depth * weights).sum().backward()
    _assert_parity(mine, ref["depth"], ref["pix_to_face"], x.grad.numpy(), ref["grad_verts"], faces.numpy())


# run by .venv-p3d's python from the repo root: both backends on the scene in argv[1], results to argv[2]
_BACKEND_CHECK = """
import sys, numpy as np, torch
sys.path.insert(0, '.')
from render.rasterizer import get_rasterizer
d = np.load(sys.argv[1])
x = torch.from_numpy(d['verts']).requires_grad_(True)
out = {}
for name in ('torch', 'pytorch3d'):
    r = get_rasterizer(name)(x, torch.from_numpy(d['faces']), torch.from_numpy(d['cams']), tuple(d['hw']))
    (grad,) = torch.autograd.grad((r.depth * torch.from_numpy(d['weights'])).sum(), x)
    out.update({name + '_depth': r.depth.detach().numpy(), name + '_face': r.face_index.numpy(),
                name + '_grad': grad.numpy()})
np.savez(sys.argv[2], **out)
"""


def test_pytorch3d_backend_matches_torch_backend(tmp_path):
    """render.pytorch3d_backend (per-sample cameras, principal point +0.5, near-plane faces) vs torch."""
    verts, faces = blobs(4, seed=10)
    # straddles the near plane: kept faces differ
    verts[1] -= verts[1].mean(0) - torch.tensor([0.0, 0.0, 20.0])
    cams = torch.tensor(CROP_CAM).repeat(4, 1) * torch.tensor([[1.0, 1, 1, 1], [1.1, 1.2, 0.9, 1.1],
                                                             [0.9, 0.9, 1.3, 0.8], [1.2, 1.1, 1.0, 1.0]])
    hw = (120, 136)
    scene = {"verts": verts.numpy(), "faces": faces.numpy(), "cams": cams.numpy(), "hw": np.array(hw),
             "weights": torch.rand(4, *hw, generator=torch.Generator().manual_seed(10)).numpy()}
    np.savez(tmp_path / "scene.npz", **scene)
    if _pytorch3d_importable():
        subprocess_python = sys.executable
    elif P3D_PYTHON.exists():
        subprocess_python = str(P3D_PYTHON)
    else:
        pytest.skip(NO_P3D)
    proc = subprocess.run([subprocess_python, "-c", _BACKEND_CHECK, str(tmp_path / "scene.npz"),
                           str(tmp_path / "out.npz")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = np.load(tmp_path / "out.npz")
    mine = Rendered(torch.from_numpy(res["torch_depth"]), torch.from_numpy(res["torch_face"] >= 0),
                    torch.from_numpy(res["torch_face"]))
    _assert_parity(mine, res["pytorch3d_depth"], res["pytorch3d_face"], res["torch_grad"],
                   res["pytorch3d_grad"], faces.numpy())
    assert (res["pytorch3d_face"][1] >= 0).any() and (res["torch_face"][1] >= 0).any()


def test_choosing_missing_pytorch3d_fails_with_install_line():
    if _pytorch3d_importable():
        pytest.skip("pytorch3d is installed here")
    with pytest.raises(ImportError, match=r"pip install torch==2\.12\.1 easypytorch3d==0\.7\.9\.post1"):
        get_rasterizer("pytorch3d")


# ----------------------------------------------------------------------------------------------------
# stand-in MANO hands in their crops
# ----------------------------------------------------------------------------------------------------
def test_standin_hands_render_into_crops_consistently(standin_model):
    from render.mano_layer import ManoLayer
    from render.mano_params import NUM_BETAS, NUM_POSE_PCA, ManoParams

    layer = ManoLayer(standin_model)
    gen = torch.Generator().manual_seed(11)
    B = 6
    params = ManoParams(global_orient=torch.randn(B, 3, generator=gen),
                        pose_pca=torch.randn(B, NUM_POSE_PCA, generator=gen),
                        betas=torch.randn(B, NUM_BETAS, generator=gen), scale=torch.ones(B, 1),
                        transl=torch.zeros(B, 3))
    with torch.no_grad():
        out = layer.forward_dsf(params.to_vector())
    # DSF synthetic hands (docs/method.md §8.2): centred hand at 500-1200 mm on the axis; one at an exact crop scale (s = 1/2), others general
    depth = torch.tensor([125 * NYU_CAMERA.fx / 128, 520.0, 700.0, 850.0, 1000.0, 1190.0])
    on_axis = torch.stack([torch.zeros(B), torch.zeros(B), depth], 1)
    verts = out.vertices - out.joints.mean(1, keepdim=True) + on_axis[:, None]
    centre = on_axis + 40 * torch.rand(B, 3, generator=gen) - 20
    centre[0, 2] = depth[0]
    cube = torch.full((B, 3), 250.0)
    faces = layer.faces_closed
    crop, M = render_crop(verts, faces, centre, cube, NYU_CAMERA.as_tuple())
    assert crop.mask.float().mean() > 0.05 and faces.shape == (1554, 3)
    # exact-scale sample: identical to the official full-frame route
    M64 = M.double().numpy()
    assert np.isclose(M64[0, 0, 0], 0.5) and np.allclose(np.linalg.inv(M64[0])[:2, 2] % 1, 0)
    depth_ff, face_ff, _, _ = _full_frame_then_crop(verts[:1], faces, M64[:1])
    np.testing.assert_array_equal(crop.face_index[0].numpy(), face_ff[0])
    np.testing.assert_allclose(crop.depth[0].numpy(), depth_ff[0], atol=1e-3)
    # every sample: the silhouette hugs the vertices projected through K and M (norm-uvd labels, no
    # half-pixel shift)
    uvd = g.xyz_to_uvd(verts.double(), NYU_CAMERA.as_tuple())
    uvd_n = g.uvd_to_norm_uvd(uvd, centre.double(), cube.double(), M.double())
    uc, vc = ((uvd_n[..., 0] + 1) * 64).numpy(), ((uvd_n[..., 1] + 1) * 64).numpy()
    checked = 0
    for b in range(B):
        rows, cols = np.nonzero(crop.mask[b].numpy())
        # per side where the hand is not clipped by the crop border: covered centres lie strictly inside the
        # projected extent and reach to within 2 px of it
        for lo_px, hi_px, lo_pr, hi_pr in ((cols.min(), cols.max(), uc[b].min(), uc[b].max()),
                                           (rows.min(), rows.max(), vc[b].min(), vc[b].max())):
            if lo_pr > 0:
                assert 0 < lo_px - lo_pr < 2.0
                checked += 1
            if hi_pr < SIZE_CROP - 1:
                assert 0 < hi_pr - hi_px < 2.0
                checked += 1
        zs = verts[b, :, 2]
        assert zs.min() - 1e-3 <= crop.depth[b][crop.mask[b]].min() and crop.depth[b].max() <= zs.max() + 1e-3
    assert checked >= 2 * B
