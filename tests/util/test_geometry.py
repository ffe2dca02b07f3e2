"""Geometry helpers: projection round trips, DeepPrior++ crop matrix, normalised coordinates."""
import math

import numpy as np
import torch

from util.camera import NYU_CAMERA
from util import geometry as g

CAM = NYU_CAMERA.as_tuple()


def test_project_backproject_roundtrip_numpy_and_torch():
    rng = np.random.default_rng(0)
    xyz = np.stack([rng.uniform(-200, 200, 50), rng.uniform(-150, 150, 50), rng.uniform(300, 1500, 50)], -1)
    uvd = g.xyz_to_uvd(xyz, CAM)
    # analytic projection, independent formula
    np.testing.assert_allclose(uvd[:, 0], 320 + 588.03 * xyz[:, 0] / xyz[:, 2])
    np.testing.assert_allclose(uvd[:, 1], 240 + 587.07 * xyz[:, 1] / xyz[:, 2])
    np.testing.assert_allclose(g.uvd_to_xyz(uvd, CAM), xyz, atol=1e-9)
    t = torch.tensor(xyz, dtype=torch.float64)
    torch.testing.assert_close(g.uvd_to_xyz(g.xyz_to_uvd(t, CAM), CAM), t)


def test_crop_matrix_maps_box_to_crop_and_keeps_aspect():
    center_xyz = np.array([-30.0, 40.0, 700.0])
    cube = np.array([250.0, 250.0, 250.0])
    uvd = g.xyz_to_uvd(center_xyz, CAM)
    x0, x1, y0, y1, z0, z1 = g.crop_bounds(uvd, cube, CAM)
    assert (z0, z1) == (575.0, 825.0)
    assert x0 == math.floor(uvd[0] - 125 * 588.03 / 700 + 0.5)
    M = g.crop_matrix(uvd, cube, CAM)
    w, h = x1 - x0, y1 - y0
    s = 128 / max(w, h)
    np.testing.assert_allclose(M[0, 0], s)
    # the long side of the box spans exactly [0, 128] of the crop
    if w > h:
        np.testing.assert_allclose((M @ [x0, y0, 1])[0], 0.0, atol=1e-9)
        np.testing.assert_allclose((M @ [x1, y0, 1])[0], 128.0, atol=1e-9)
    else:
        np.testing.assert_allclose((M @ [x0, y0, 1])[1], 0.0, atol=1e-9)
        np.testing.assert_allclose((M @ [x0, y1, 1])[1], 128.0, atol=1e-9)
    Mb = g.crop_matrix_batch(torch.tensor(center_xyz[None]), torch.tensor(cube[None]), CAM)
    torch.testing.assert_close(Mb[0].double(), torch.tensor(M), atol=1e-5, rtol=0)


def test_norm_uvd_xyz_roundtrip_batched_torch():
    torch.manual_seed(0)
    B = 4
    C = torch.stack([torch.empty(B).uniform_(-100, 100), torch.empty(B).uniform_(-80, 80),
                     torch.empty(B).uniform_(500, 1100)], -1).double()
    S = torch.full((B, 3), 250.0, dtype=torch.float64) * torch.empty(B, 1).uniform_(0.8, 1.2).double()
    M = g.crop_matrix_batch(C, S, CAM).double()
    xyz_n = torch.rand(B, 21, 3, dtype=torch.float64) * 2 - 1
    uvd_n = g.norm_xyz_to_norm_uvd(xyz_n, C, S, M, CAM)
    back = g.norm_uvd_to_norm_xyz(uvd_n, C, S, M, CAM)
    torch.testing.assert_close(back, xyz_n)
    # the crop centre projects to (about) the middle of the crop
    c_n = g.norm_xyz_to_norm_uvd(torch.zeros(B, 1, 3, dtype=torch.float64), C, S, M, CAM)
    assert c_n[..., :2].abs().max() < 2.5 / 64


def test_crop_intrinsics_equal_M_times_K():
    uvd = g.xyz_to_uvd(np.array([10.0, -20.0, 800.0]), CAM)
    M = g.crop_matrix(uvd, [250.0] * 3, CAM)
    K = np.array([[CAM[0], 0, CAM[2]], [0, CAM[1], CAM[3]], [0, 0, 1]])
    Kc = M @ K
    fx, fy, cx, cy = g.crop_intrinsics(CAM, M)
    np.testing.assert_allclose([fx, fy, cx, cy], [Kc[0, 0], Kc[1, 1], Kc[0, 2], Kc[1, 2]])


def test_depth_normalisation_roundtrip_and_background():
    d = np.array([[0.0, 600.0], [700.0, 900.0]], np.float32)
    n = g.normalize_depth(d, 700.0, 250.0)
    np.testing.assert_allclose(n, [[1.0, -0.8], [0.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(g.denormalize_depth(n, 700.0, 250.0)[1, 0], 700.0)
    t = g.normalize_depth(torch.tensor(d)[None], torch.tensor([700.0]), torch.tensor([250.0]))
    torch.testing.assert_close(t[0], torch.tensor(n))


def test_batched_crop_matrix_is_bit_identical_to_the_scalar_one():
    rng = np.random.default_rng(1)
    n = 300
    c = np.stack([rng.uniform(-300, 300, n), rng.uniform(-200, 200, n), rng.uniform(150, 1500, n)], 1)
    s = np.repeat(rng.uniform(150, 400, (n, 1)), 3, 1)
    s[:, 1] *= rng.uniform(0.8, 1.2, n)  # boxes both wider and taller than high
    ref = np.stack([g.crop_matrix(g.xyz_to_uvd(c[b], CAM), s[b], CAM) for b in range(n)])
    assert np.array_equal(g.crop_matrix_batch(c, s, CAM), ref)
    per_sample_cam = np.tile(CAM, (n, 1))
    assert np.array_equal(g.crop_matrix_batch(c, s, per_sample_cam), ref)
    t = g.crop_matrix_batch(torch.tensor(c), torch.tensor(s), CAM, dtype=torch.float64)
    assert t.dtype == torch.float64 and np.array_equal(t.numpy(), ref)
    assert g.crop_matrix_batch(torch.tensor(c), torch.tensor(s), CAM).dtype == torch.float32


def test_pixel_points_non_square_grid():
    """Pixel (row i, column j) of an H x W crop sits at (2(j + 0.5)/W - 1, 2(i + 0.5)/H - 1, depth[i, j])."""
    depth = torch.rand(2, 1, 3, 5, dtype=torch.float64)
    pts = g.pixel_points(depth)
    assert pts.shape == (2, 3, 15) and pts.dtype == torch.float64
    i, j = np.meshgrid(np.arange(3), np.arange(5), indexing="ij")
    ref = np.stack([2 * (j + 0.5) / 5 - 1, 2 * (i + 0.5) / 3 - 1], 0).reshape(2, 15)
    for b in range(2):
        np.testing.assert_allclose(pts[b, :2].numpy(), ref, rtol=0, atol=1e-15)
        np.testing.assert_array_equal(pts[b, 2].numpy(), depth[b, 0].numpy().reshape(15))
