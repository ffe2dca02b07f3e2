"""Point-to-triangle distances (render/mesh_distance.py) against an independent float64 numpy brute force."""
from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from render import mesh_distance as md

REPO = Path(__file__).resolve().parents[2]
P3D_PYTHON = REPO / ".venv-p3d" / "bin" / "python"
P3D_SCRIPT = REPO / "bench" / "p3d_distance_ref.py"
NO_P3D = ("pytorch3d is neither importable here nor installed in .venv-p3d (python3 -m venv .venv-p3d && "
          ".venv-p3d/bin/pip install torch==2.12.1 easypytorch3d==0.7.9.post1 numpy)")


# ------------------------------------------------------------------------------------------------------------
# independent reference: projection onto the plane if it falls inside (cross-product side tests), else the
# nearest of the three edge segments; every point-face pair, float64
# ------------------------------------------------------------------------------------------------------------
def _seg_sq(p: np.ndarray, s0: np.ndarray, s1: np.ndarray) -> np.ndarray:
    e = s1 - s0
    ee = (e * e).sum(-1)
    t = np.clip(((p - s0) * e).sum(-1) / np.where(ee > 0, ee, 1.0), 0.0, 1.0)
    r = p - (s0 + t[..., None] * e)
    return (r * r).sum(-1)


def ref_sqdist(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(N, 3) points, (F, 3, 3) triangles -> (N, F) squared distances."""
    p = points[:, None, :]
    a, b, c = tris[None, :, 0], tris[None, :, 1], tris[None, :, 2]
    n = np.cross(b - a, c - a)
    nn = (n * n).sum(-1)
    h = ((p - a) * n).sum(-1)
    q = p - (h / np.where(nn > 0, nn, 1.0))[..., None] * n
    inside = np.broadcast_to(nn > 0, h.shape).copy()
    for s0, s1 in ((a, b), (b, c), (c, a)):
        inside &= (np.cross(s1 - s0, q - s0) * n).sum(-1) >= 0
    plane = np.where(inside, h * h / np.where(nn > 0, nn, 1.0), np.inf)
    return np.minimum.reduce([plane, _seg_sq(p, a, b), _seg_sq(p, b, c), _seg_sq(p, c, a)])


def ref_mesh(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, face_sel=None) -> np.ndarray:
    """(B, P) squared distance to the nearest face (of ``face_sel`` if given)."""
    f = faces.numpy() if face_sel is None else faces.numpy()[np.asarray(face_sel)]
    pts, vts = points.double().numpy(), verts.double().numpy()
    return np.stack([ref_sqdist(p, v[f]).min(1) for p, v in zip(pts, vts)])


# ------------------------------------------------------------------------------------------------------------
# test geometry
# ------------------------------------------------------------------------------------------------------------
def closed_mesh(n_lon: int = 37, n_lat: int = 22) -> tuple[torch.Tensor, torch.Tensor]:
    """A closed, bumpy, elongated UV sphere (default 779 vertices, 1554 faces like the closed MANO mesh)."""
    vs = [[0.0, 0.0, 1.0]]
    for i in range(1, n_lat):
        th = math.pi * i / n_lat
        phi = [2 * math.pi * j / n_lon for j in range(n_lon)]
        vs += [[math.sin(th) * math.cos(ph), math.sin(th) * math.sin(ph), math.cos(th)] for ph in phi]
    vs.append([0.0, 0.0, -1.0])
    ring = lambda i, j: 1 + (i - 1) * n_lon + j % n_lon  # noqa: E731
    fs = [[0, ring(1, j), ring(1, j + 1)] for j in range(n_lon)]
    for i in range(1, n_lat - 1):
        for j in range(n_lon):
            fs += [[ring(i, j), ring(i + 1, j), ring(i + 1, j + 1)],
                   [ring(i, j), ring(i + 1, j + 1), ring(i, j + 1)]]
    fs += [[len(vs) - 1, ring(n_lat - 1, j + 1), ring(n_lat - 1, j)] for j in range(n_lon)]
    v = torch.tensor(vs, dtype=torch.float64) * torch.tensor([0.9, 0.35, 0.5], dtype=torch.float64)
    v = v * (1 + 0.15 * torch.sin(5 * v[:, :1]) * torch.cos(7 * v[:, 2:]))
    return v, torch.tensor(fs)


def near_surface_points(verts: torch.Tensor, faces: torch.Tensor, n: int, gen: torch.Generator,
                        noise: float = 0.03) -> torch.Tensor:
    """Points on random faces, pushed off by Gaussian noise, plus a few far ones: (B, n, 3)."""
    n_b = verts.shape[0]
    fi = torch.randint(0, faces.shape[0], (n_b, n), generator=gen)
    w = -torch.log(torch.rand(n_b, n, 3, generator=gen, dtype=verts.dtype))
    w = w / w.sum(-1, keepdim=True)
    tri = verts[torch.arange(n_b).view(-1, 1, 1), faces[fi]]  # (B, n, 3, 3)
    pts = (w.unsqueeze(-1) * tri).sum(-2) + noise * torch.randn(n_b, n, 3, generator=gen, dtype=verts.dtype)
    pts[:, : n // 20] *= 3.0  # far away
    return pts


def overlapping_parts(verts: torch.Tensor, faces: torch.Tensor, k: int = 15) -> list[torch.Tensor]:
    """k face sets around k seed faces; a face joins every part whose seed is within 1.4x its nearest seed."""
    cen = verts[faces].mean(1)
    seeds = cen[torch.linspace(0, len(cen) - 1, k).long()]
    dist = torch.cdist(cen, seeds)
    near = dist <= 1.4 * dist.min(1, keepdim=True).values
    return [torch.nonzero(near[:, j]).squeeze(1) for j in range(k)]


@pytest.fixture(scope="module")
def mesh_batch():
    gen = torch.Generator().manual_seed(0)
    v, f = closed_mesh()
    verts = torch.stack([v @ torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=v.dtype))[0],
                         v + 0.02 * torch.randn(v.shape, generator=gen, dtype=v.dtype)])
    return verts, f, near_surface_points(verts, f, 300, gen)


# ------------------------------------------------------------------------------------------------------------
# values
# ------------------------------------------------------------------------------------------------------------
def test_single_triangle_all_regions_analytic():
    tri = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    cases = [  # point, squared distance (by hand)
        ([0.2, 0.3, 0.5], 0.25),  # above the face
        ([0.2, 0.3, 0.0], 0.0),  # on the face
        ([0.5, 0.5, 0.0], 0.0),  # on the hypotenuse
        ([0.0, 0.0, 0.0], 0.0),  # on a vertex
        ([0.5, -1.0, 2.0], 5.0),  # beyond edge ab
        ([-3.0, 0.4, 0.0], 9.0),  # beyond edge ac
        ([1.0, 1.0, 1.0], 1.5),  # beyond edge bc: closest (0.5, 0.5, 0)
        ([-1.0, -2.0, 0.0], 5.0),  # vertex a region
        ([3.0, -1.0, 0.0], 5.0),  # vertex b region
        ([-1.0, 4.0, 2.0], 14.0),  # vertex c region
        ([100.0, 100.0, -100.0], 2 * 99.5**2 + 1e4),  # far, bc region
    ]
    pts = torch.tensor([[p for p, _ in cases]], dtype=torch.float64)
    want = torch.tensor([[d for _, d in cases]], dtype=torch.float64)
    for search in ("bvh", "brute"):
        got = md.point_mesh_sqdist(pts, tri, faces, search=search)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ref_mesh(pts, tri, faces), want.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("search", ["bvh", "brute"])
def test_random_triangle_soup_matches_reference(search):
    gen = torch.Generator().manual_seed(1)
    verts = torch.randn(3, 40, 3, generator=gen, dtype=torch.float64)
    faces = torch.randint(0, 40, (90, 3), generator=gen)
    pts = 1.5 * torch.randn(3, 300, 3, generator=gen, dtype=torch.float64)
    idx = md.nearest_faces(pts, verts, faces, search=search)
    got = md.point_face_sqdist(pts, verts, faces, idx)
    want = ref_mesh(pts, verts, faces)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-14)
    # the chosen face itself is at that distance in the reference (not only the value)
    chosen = np.stack([ref_sqdist(p, v[faces.numpy()])[np.arange(300), i]
                       for p, v, i in zip(pts.numpy(), verts.numpy(), idx.numpy())])
    np.testing.assert_allclose(chosen, want, rtol=1e-10, atol=1e-14)


def test_closed_mesh_matches_reference_and_surface_points_are_zero(mesh_batch):
    verts, faces, pts = mesh_batch
    got = md.point_mesh_sqdist(pts, verts, faces)
    np.testing.assert_allclose(got.numpy(), ref_mesh(pts, verts, faces), rtol=1e-10, atol=1e-14)
    # points exactly on the surface (convex combinations of a face's vertices) are at distance 0
    gen = torch.Generator().manual_seed(2)
    on = near_surface_points(verts, faces, 200, gen, noise=0.0)[:, 10:]
    assert md.point_mesh_sqdist(on, verts, faces).max() < 1e-24  # distance < 1e-12
    # also the mesh vertices themselves
    assert md.point_mesh_sqdist(verts, verts, faces).max() == 0


def test_float32_close_to_float64_reference(mesh_batch):
    verts, faces, pts = mesh_batch
    got = md.point_mesh_sqdist(pts.float(), verts.float(), faces)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), ref_mesh(pts, verts, faces), rtol=2e-4, atol=1e-7)


def test_brute_chunking_and_bvh_agree(mesh_batch):
    verts, faces, pts = mesh_batch
    small = md.point_mesh_sqdist(pts, verts, faces, search="brute", chunk_pairs=5000)  # 3 points per chunk
    big = md.point_mesh_sqdist(pts, verts, faces, search="brute", chunk_pairs=1 << 24)  # whole batch at once
    bvh = md.point_mesh_sqdist(pts, verts, faces, search="bvh")
    torch.testing.assert_close(small, big, rtol=0, atol=0)
    torch.testing.assert_close(bvh, big, rtol=1e-12, atol=1e-16)


# ------------------------------------------------------------------------------------------------------------
# parts
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("search", ["bvh", "brute"])
def test_part_distance_matches_reference_restricted_to_part(mesh_batch, search):
    verts, faces, pts = mesh_batch
    parts = overlapping_parts(verts[0], faces)
    assert sum(len(p) for p in parts) > faces.shape[0]  # they do overlap
    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 16, pts.shape[:2], generator=gen)
    got = md.point_part_sqdist(pts, verts, faces, parts, labels, search=search)
    want = np.zeros(labels.shape)
    for k, sel in enumerate(parts, start=1):
        m = (labels == k).numpy()
        want[m] = ref_mesh(pts, verts, faces, sel)[m]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-14)
    assert (got[labels == 0] == 0).all()
    # the part distance is never below the whole-mesh distance, and differs from it somewhere
    whole = md.point_mesh_sqdist(pts, verts, faces)[labels > 0]
    assert (got[labels > 0] >= whole - 1e-15).all() and (got[labels > 0] > whole + 1e-6).any()
    # parts given as part bits (ManoLayer.part_bits) mean the same, and convert back to the same ids
    bits = md.part_bits(parts, faces.shape[0])
    as_bits = md.point_part_sqdist(pts, verts, faces, bits, labels, search=search)
    torch.testing.assert_close(as_bits, got, rtol=0, atol=0)
    back = [p.tolist() for p in md.part_face_ids(bits, len(parts))]
    assert back == [sorted(set(p.tolist())) for p in parts]
    if search == "brute":
        return
    # all-parts variant agrees on the labelled entries (first 40 points: K times the cost)
    every = md.point_each_part_sqdist(pts[:, :40], verts, faces, parts, search=search)
    assert every.shape == (2, 40, 15)
    lab, sub = labels[:, :40].clamp_min(1) - 1, labels[:, :40] > 0
    torch.testing.assert_close(every.gather(-1, lab.unsqueeze(-1)).squeeze(-1)[sub], got[:, :40][sub])


# ------------------------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------------------------
def _generic_points(verts, faces, n, gen, margin=1e-3):
    """Random points whose two nearest faces differ by more than ``margin`` (no ties under FD)."""
    pts = 1.2 * torch.randn(1, 4 * n, 3, generator=gen, dtype=torch.float64)
    d = np.sort(ref_sqdist(pts[0].numpy(), verts[0].numpy()[faces.numpy()]), axis=1)
    keep = np.nonzero(d[:, 1] - d[:, 0] > margin)[0][:n]
    return pts[:, keep].clone()


def test_gradients_match_central_differences():
    gen = torch.Generator().manual_seed(4)
    verts = torch.randn(1, 7, 3, generator=gen, dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [3, 4, 5], [1, 5, 6], [2, 4, 6], [0, 6, 4]])
    pts = _generic_points(verts, faces, 12, gen)
    parts = [torch.tensor([0, 1, 2]), torch.tensor([2, 3, 4, 5])]
    labels = (torch.arange(pts.shape[1]) % 2 + 1).unsqueeze(0)
    for fn in (lambda p, v: md.point_mesh_sqdist(p, v, faces),
               lambda p, v: md.point_part_sqdist(p, v, faces, parts, labels)):
        inputs = (pts.requires_grad_(), verts.requires_grad_())
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("point", [[0.2, 0.3, 0.5], [0.5, -1.0, 0.7], [-3.0, 0.4, -0.2], [1.0, 1.0, 1.0],
                                   [-1.0, -2.0, 0.3], [3.0, -1.0, 0.1], [-1.0, 4.0, 2.0]],
                         ids=["face", "edge_ab", "edge_ac", "edge_bc", "vertex_a", "vertex_b", "vertex_c"])
def test_gradient_in_each_voronoi_region(point, request):
    tri = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    pts = torch.tensor([[point]], dtype=torch.float64)
    w, _ = md.closest_point_weights(pts, tri[:, 0], tri[:, 1], tri[:, 2])
    region = request.node.callspec.id
    assert int((w > 0).sum()) == {"face": 3, "edge": 2, "vertex": 1}[region.split("_")[0]]
    faces, idx = torch.tensor([[0, 1, 2]]), torch.zeros(1, 1, dtype=torch.long)
    for fn in (lambda p, v: md.point_mesh_sqdist(p, v, faces),  # weights from the bvh kernel
               lambda p, v: md.point_face_sqdist(p, v, faces, idx)):  # weights from Ericson's regions
        assert torch.autograd.gradcheck(fn, (pts.requires_grad_(), tri.requires_grad_()), eps=1e-6, atol=1e-8)


def test_degenerate_triangles_exact_and_finite():
    # zero area: all three vertices equal, two equal, collinear; plus a sliver of tiny but non-zero area
    verts = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0],
                           [0.5, 1e-9, 0.0], [0.3, 0.0, 0.0]]], dtype=torch.float64)
    cases = [[0, 0, 0], [0, 1, 2], [0, 2, 3], [2, 0, 3], [0, 2, 4], [1, 1, 3], [5, 2, 3]]
    gen = torch.Generator().manual_seed(5)
    on_line = torch.tensor([[[0.5, 0.0, 0.0], [1.5, 0.0, 0.0], [0.25, 0.0, 0.0]]], dtype=torch.float64)
    pts = torch.cat([torch.randn(1, 50, 3, generator=gen, dtype=torch.float64), on_line], 1)
    for f in cases:
        faces = torch.tensor([f])
        for search in ("bvh", "brute"):
            p, v = pts.clone().requires_grad_(), verts.clone().requires_grad_()
            d = md.point_mesh_sqdist(p, v, faces, search=search)
            np.testing.assert_allclose(d.detach().numpy(), ref_mesh(pts, verts, faces), rtol=1e-9, atol=1e-15)
            d.sum().backward()
            assert torch.isfinite(p.grad).all() and torch.isfinite(v.grad).all()
            # d/dp of a squared distance to a fixed set is 2 (p - q): |grad|^2 / 4 equals the distance
            torch.testing.assert_close((p.grad.square().sum(-1) / 4), d.detach(), rtol=1e-9, atol=1e-15)
    # all of them in one mesh with a proper triangle: the selection handles degenerate faces too
    verts = torch.cat([verts, torch.tensor([[[0.0, 1.0, 0.5]]], dtype=torch.float64)], 1)
    faces = torch.tensor(cases + [[0, 2, 6]])
    for search in ("bvh", "brute"):
        d = md.point_mesh_sqdist(pts, verts, faces, search=search)
        np.testing.assert_allclose(d.numpy(), ref_mesh(pts, verts, faces), rtol=1e-9, atol=1e-15)


# ------------------------------------------------------------------------------------------------------------
# hand mesh (stand-in MANO) when the modules exist, devices, backends, errors
# ------------------------------------------------------------------------------------------------------------
def test_hand_mesh_whole_and_parts_match_reference(request):
    try:
        from render.mano_layer import ManoLayer

        layer = ManoLayer(request.getfixturevalue("standin_model")).double()
    except ImportError as err:  # the stand-in generator is written in parallel with this module
        pytest.skip(f"stand-in MANO not available: {err}")
    gen = torch.Generator().manual_seed(6)
    f64 = dict(generator=gen, dtype=torch.float64)
    out = layer(0.5 * torch.randn(2, 3, **f64), 0.4 * torch.randn(2, 45, **f64), torch.zeros(2, 10).double())
    wrist_centre = out.vertices[:, layer.wrist_loop].mean(1, keepdim=True)
    verts = torch.cat([out.vertices, wrist_centre], 1)  # closed: 779 vertices
    verts = (verts - out.joints[:, :1]) / 125.0  # norm-xyz-like: cube 250 mm around the wrist
    faces, parts = layer.faces_closed, layer.part_bits
    assert faces.shape == (1554, 3) and parts.shape == (1554,)
    pts = near_surface_points(verts, faces, 250, gen, noise=0.02)
    got = md.point_mesh_sqdist(pts, verts, faces)
    np.testing.assert_allclose(got.numpy(), ref_mesh(pts, verts, faces), rtol=1e-10, atol=1e-14)
    labels = torch.randint(0, 16, pts.shape[:2], generator=gen)
    got = md.point_part_sqdist(pts, verts, faces, parts, labels)
    ids = layer.part_face_ids
    assert len(ids) == 15
    want = np.zeros(labels.shape)
    for k, sel in enumerate(ids, start=1):
        m = (labels == k).numpy()
        want[m] = ref_mesh(pts, verts, faces, sel)[m]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-14)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(mesh_batch):
    verts, faces, pts = mesh_batch
    parts = overlapping_parts(verts[0], faces)
    labels = torch.randint(0, 16, pts.shape[:2])
    gpu = md.point_part_sqdist(pts.cuda(), verts.cuda(), faces.cuda(), [p.cuda() for p in parts],
                               labels.cuda())
    torch.testing.assert_close(gpu.cpu(), md.point_part_sqdist(pts, verts, faces, parts, labels))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_faces_check_is_cached_but_sees_in_place_changes(mesh_batch):
    verts, faces, pts = (t.cuda() for t in mesh_batch)
    for _ in range(2):  # the second call takes the cached range of the same faces tensor
        torch.testing.assert_close(md.point_mesh_sqdist(pts, verts, faces, search="brute").cpu(),
                                   md.point_mesh_sqdist(*(t.cpu() for t in (pts, verts, faces))))
    faces[0, 0] = verts.shape[1]  # in place: the version changes, so the range is checked again
    with pytest.raises(ValueError, match="face vertex ids must lie"):
        md.point_mesh_sqdist(pts, verts, faces, search="brute")


@pytest.mark.skipif(importlib.util.find_spec("pytorch3d") is not None, reason="pytorch3d is installed")
def test_pytorch3d_backend_missing_gives_clear_error(mesh_batch):
    verts, faces, pts = mesh_batch
    with pytest.raises(ImportError, match="pytorch3d"):
        md.point_mesh_sqdist(pts, verts, faces, backend="pytorch3d")


@pytest.mark.skipif(importlib.util.find_spec("pytorch3d") is None,
                    reason="pytorch3d not importable here (the .venv-p3d parity test runs it apart)")
def test_pytorch3d_backend_agrees(mesh_batch):
    verts, faces, pts = (t.float() if t.is_floating_point() else t for t in mesh_batch)
    parts = overlapping_parts(verts[0], faces)
    labels = torch.randint(0, 16, pts.shape[:2])
    for fn in (lambda **kw: md.point_mesh_sqdist(pts, verts, faces, **kw),
               lambda **kw: md.point_part_sqdist(pts, verts, faces, parts, labels, **kw)):
        # float32 cancellation near the surface: compare distances (see the parity test below)
        torch.testing.assert_close(fn(backend="pytorch3d").sqrt(), fn(backend="torch").sqrt(), rtol=1e-5,
                                   atol=5e-6)


def test_parity_with_pytorch3d_point_face_distance(mesh_batch, tmp_path):
    """Ours vs pytorch3d's point_face_distance (min_triangle_area=0), run by bench/p3d_distance_ref.py in
    pytorch3d's own venv: values and gradients of a weighted sum, whole mesh and per part, float32."""
    if importlib.util.find_spec("pytorch3d") is not None:
        python = sys.executable
    elif P3D_PYTHON.exists():
        python = str(P3D_PYTHON)
    else:
        pytest.skip(NO_P3D)
    verts, faces, pts = mesh_batch
    verts, pts = verts.float(), pts.float()
    parts = overlapping_parts(verts[0], faces)
    gen = torch.Generator().manual_seed(7)
    labels = torch.randint(0, 16, pts.shape[:2], generator=gen)
    weights = torch.rand(pts.shape[:2], generator=gen)
    np.savez(tmp_path / "in.npz", points=pts.numpy(), verts=verts.numpy(), faces=faces.numpy(),
             weights=weights.numpy(), part_ids=torch.cat(parts).numpy(),
             part_sizes=np.array([len(p) for p in parts]), labels=labels.numpy())
    proc = subprocess.run([python, str(P3D_SCRIPT), str(tmp_path / "in.npz"), str(tmp_path / "out.npz"),
                           "--repo"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ref = dict(np.load(tmp_path / "out.npz"))
    calls = {"mesh": lambda p, v: md.point_mesh_sqdist(p, v, faces),
             "part": lambda p, v: md.point_part_sqdist(p, v, faces, parts, labels)}
    for name, fn in calls.items():
        p, v = pts.clone().requires_grad_(), verts.clone().requires_grad_()
        d = fn(p, v)
        grad_p, grad_v = torch.autograd.grad((weights * d).sum(), (p, v))
        # float32 |p - q|² near the surface loses digits to cancellation (both codes, pytorch3d's ~10x more
        # than ours against float64): compare the distances, 1e-5 relative plus 5e-6 of this unit-size mesh
        np.testing.assert_allclose(d.detach().sqrt().numpy(), np.sqrt(ref[f"{name}_sqdist"]), rtol=1e-5,
                                   atol=5e-6)
        far = ref[f"{name}_sqdist"] > 1e-2
        np.testing.assert_allclose(d.detach().numpy()[far], ref[f"{name}_sqdist"][far], rtol=1e-5)
        np.testing.assert_allclose(grad_p.numpy(), ref[f"{name}_grad_points"], rtol=1e-4, atol=1e-5)
        err = np.linalg.norm(grad_v.numpy() - ref[f"{name}_grad_verts"]) / np.linalg.norm(grad_v.numpy())
        assert err < 1e-4, f"{name}: relative vertex-gradient difference {err:.1e}"
        # the repo's own backend="pytorch3d" (run there, in whichever search numba's presence allows)
        np.testing.assert_allclose(ref[f"repo_{name}_sqdist"], ref[f"{name}_sqdist"], rtol=1e-6, atol=0)
        np.testing.assert_allclose(ref[f"repo_{name}_grad_verts"], ref[f"{name}_grad_verts"], rtol=1e-5,
                                   atol=1e-7)
    # pytorch3d's default min_triangle_area (5e-3) would treat this mesh's small triangles as mere edges
    default = ref["mesh_sqdist_default_area"]
    assert (default >= ref["mesh_sqdist"] - 1e-9).all() and (default > 2 * ref["mesh_sqdist"] + 1e-6).any()


def test_invalid_inputs_raise_clear_errors():
    v = torch.zeros(2, 4, 3)
    p = torch.zeros(2, 5, 3)
    f = torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match=r"points \(B, P, 3\)"):
        md.point_mesh_sqdist(p[0], v, f)
    with pytest.raises(ValueError, match="batch sizes"):
        md.point_mesh_sqdist(p[:1], v, f)
    with pytest.raises(ValueError, match=r"face vertex ids must lie in \[0, 4\)"):
        md.point_mesh_sqdist(p, v, torch.tensor([[0, 1, 4]]))
    with pytest.raises(ValueError, match="finite"):
        md.point_mesh_sqdist(p.clone().fill_(float("nan")), v, f)
    with pytest.raises(ValueError, match="labels must lie in"):
        md.point_part_sqdist(p, v, f, [torch.tensor([0])], torch.full((2, 5), 2))
    with pytest.raises(ValueError, match="part 1: face ids"):
        md.point_part_sqdist(p, v, f, [torch.tensor([1])], torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="part 2: expected a non-empty integer"):
        md.part_bits([torch.tensor([0]), torch.tensor([[0, 2, 1]])], 1)
    with pytest.raises(ValueError, match="part 1: expected a non-empty integer"):
        md.part_bits([torch.zeros(0, dtype=torch.long)], 1)
    with pytest.raises(ValueError, match=r"part bits must be an int64 tensor \(1,\)"):
        md.point_part_sqdist(p, v, f, torch.tensor([3, 3]), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="bit 0 set for every face"):
        md.point_part_sqdist(p, v, f, torch.tensor([2]), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):  # K from the highest part bit
        md.point_part_sqdist(p, v, f, torch.tensor([3]), torch.full((2, 5), 2))
    with pytest.raises(ValueError, match="search must be one of"):
        md.point_mesh_sqdist(p, v, f, search="kd")
    with pytest.raises(ValueError, match="backend must be one of"):
        md.point_mesh_sqdist(p, v, f, backend="kaolin")
