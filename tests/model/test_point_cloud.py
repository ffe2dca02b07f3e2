"""Real-crop pre-processing (docs/method.md, fine-tuning real part): back-projection against a float64 numpy
re-computation, the hand crop's margins and strict inequalities, the sampling rule's branches, segmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.point_cloud import (
    HandBoxMargins, backproject_crop, crop_hand, foreground_points, sample_points, segment_points,
)
from render.spheres import HandSpheres
from util.geometry import crop_matrix_batch

CAM = (588.03, 587.07, 320.0, 240.0)


def _setup(b=2, size=16, cube_z=256.0, dtype=torch.float64):
    centre = torch.tensor([[20.0, -30.0, 500.0], [-40.0, 10.0, 650.0]], dtype=dtype)[:b]
    cube = torch.tensor([[256.0, 256.0, cube_z]], dtype=dtype).expand(b, 3)
    M = crop_matrix_batch(centre, cube, CAM, size=size, dtype=dtype)
    return centre, cube, M


def _np_backproject(depth, centre, cube, M, cam):
    """Independent float64 reference of the official uvdImg2xyzImg, pixel by pixel."""
    b, _, h, w = depth.shape
    fx, fy, cx, cy = cam
    out = np.zeros((b, 3, h, w))
    for n in range(b):
        Minv = np.linalg.inv(M[n])
        for i in range(h):
            for j in range(w):
                uc, vc = (2 * j / (w - 1)) * w / 2, (2 * i / (h - 1)) * h / 2  # ((2j/(W-1) - 1) + 1) W/2
                u, v, _ = Minv @ np.array([uc, vc, 1.0])
                d = depth[n, 0, i, j] * cube[n, 2] / 2 + centre[n, 2]
                X = np.array([(u - cx) * d / fx, (v - cy) * d / fy, d])
                out[n, :, i, j] = (X - centre[n]) / (cube[n] / 2)
    return out


def test_backproject_matches_float64_reference():
    centre, cube, M = _setup()
    depth = torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    got = backproject_crop(depth, centre, cube, M, CAM)
    ref = _np_backproject(depth.numpy(), centre.numpy(), cube.numpy(), M.numpy(), CAM)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)


def test_crop_hand_z_margins_are_strict_and_asymmetric():
    centre, cube, M = _setup(b=1, size=8)
    # joints spread over the whole crop in x/y, all at z = C_z (exact): z box = (C_z - 40, C_z + 20) mm
    joints = torch.tensor([[[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [0.3, -0.2, 0.0]]], dtype=torch.float64)
    half = 128.0  # cube_z / 2: depth value d_n -> d_n * 128 mm, exact for these binary fractions
    values = [-40 / half, -39 / half, 19 / half, 20 / half, 0.0, 1.0]  # -40 mm, -39 mm, +19, +20, 0, background
    depth = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    for k, val in enumerate(values):
        depth[0, 0, 3, k + 1] = val
    out = crop_hand(depth, joints, centre, cube, M, CAM)
    row = out[0, 0, 3, 1:7].tolist()
    assert row == [1.0, -39 / half, 19 / half, 1.0, 0.0, 1.0]  # 40 mm near / 20 mm far margins, strict
    wider = crop_hand(depth, joints, centre, cube, M, CAM, HandBoxMargins(xy=25.0, z_near=41.0, z_far=21.0))
    assert wider[0, 0, 3, 1:7].tolist() == [-40 / half, -39 / half, 19 / half, 20 / half, 0.0, 1.0]


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("side", [-1, 1])
def test_crop_hand_xy_margin_is_25mm(axis, side):
    centre, cube, M = _setup(b=1, size=8)
    depth = torch.full((1, 1, 8, 8), 0.1, dtype=torch.float64)
    pix = (backproject_crop(depth, centre, cube, M, CAM)[0, :, 4, 4] * 128 + centre[0]).tolist()  # mm
    for eps, inside in ((1e-6, True), (-1e-6, False)):
        # one joint: the box edge on `side` of pixel (4, 4) lies eps beyond it (inside) or eps short (outside)
        joint = list(pix)
        joint[axis] = pix[axis] - side * (25.0 - eps)
        joints = ((torch.tensor(joint, dtype=torch.float64) - centre[0]) / 128.0).view(1, 1, 3)
        out = crop_hand(depth, joints, centre, cube, M, CAM)
        assert (out[0, 0, 4, 4].item() == 0.1) is inside


def test_crop_hand_keeps_value_gradient_not_box_gradient():
    centre, cube, M = _setup(b=1, size=8)
    depth = torch.full((1, 1, 8, 8), 0.05, dtype=torch.float64, requires_grad=True)
    joints = torch.zeros(1, 3, 3, dtype=torch.float64, requires_grad=True)
    out = crop_hand(depth, joints, centre, cube, M, CAM)
    (out * torch.arange(64.0, dtype=torch.float64).view(1, 1, 8, 8)).sum().backward()
    kept = out.detach() != 1.0
    assert kept.any() and (~kept).any()
    assert torch.equal(depth.grad != 0, kept & (torch.arange(64).view(1, 1, 8, 8) > 0))
    assert joints.grad is None


def test_foreground_points_use_le_and_row_major():
    centre, cube, M = _setup(b=2, size=8)
    depth = torch.ones(2, 1, 8, 8, dtype=torch.float64)
    depth[0, 0, 1, 2], depth[0, 0, 0, 5], depth[0, 0, 6, 0] = 0.99, 0.2, -0.3
    depth[0, 0, 2, 2] = 0.995  # above the threshold: dropped
    pts = foreground_points(depth, centre, cube, M, CAM)
    xyz = backproject_crop(depth, centre, cube, M, CAM)
    assert pts[1].shape == (0, 3)
    expected = torch.stack([xyz[0, :, 0, 5], xyz[0, :, 1, 2], xyz[0, :, 6, 0]])
    torch.testing.assert_close(pts[0], expected, rtol=0, atol=0)


def _coded(n):
    return torch.arange(n, dtype=torch.float64).view(n, 1).repeat(1, 3)


def test_sample_points_three_branches():
    g = torch.Generator().manual_seed(3)
    big, exact, small, tiny, empty = _coded(5000), _coded(2048), _coded(700), _coded(1), _coded(0)
    out = sample_points([big, exact, small, tiny, empty], 2048, generator=g)
    assert out.shape == (5, 2048, 3)
    ids = out[..., 0].long()
    assert len(set(ids[0].tolist())) == 2048 and int(ids[0].max()) < 5000  # subset without replacement
    assert sorted(ids[1].tolist()) == list(range(2048))  # N == num_points: a permutation
    assert torch.equal(ids[2, :1400], torch.arange(700).repeat(2))  # floor(2048/700) = 2 full copies, in order
    assert len(set(ids[2, 1400:].tolist())) == 648  # + a remainder subset without replacement
    assert bool((ids[3] == 0).all())  # one point repeated 2048 times
    assert bool((out[4] == 0).all())  # no point: the origin
    again = sample_points([big, exact, small, tiny, empty], 2048, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, again)


def _far_spheres():
    """66 spheres on a coarse grid (2 units apart), radius 0.1: no two are near each other."""
    grid = torch.stack(torch.meshgrid(torch.arange(5.0), torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1)
    centres = grid.reshape(-1, 3)[:66].to(torch.float64) * 2.0
    return HandSpheres(centres=centres[None].clone(), radii=torch.full((1, 66), 0.1, dtype=torch.float64))


def test_segment_points_on_known_spheres_and_tie():
    s = _far_spheres()
    d = torch.tensor([0.0, 0.6, 0.8], dtype=torch.float64)
    pts = [s.centres[0, 21 + 3 * 7 + 1] + 0.1 * d,  # on the surface of a bone-7 sphere -> part 8
           s.centres[0, 21 + 3 * 14 + 2] - 0.1 * d,  # bone 14 -> part 15
           s.centres[0, 21] + 0.05 * d,  # inside bone 0's first sphere -> part 1
           s.centres[0, 5] + 0.1 * d,  # palm sphere 5 -> 0
           s.centres[0, 0] + 0.3 * d]  # near the wrist sphere -> 0
    labels = segment_points(torch.stack(pts)[None], s)
    assert labels.tolist() == [[8, 15, 1, 0, 0]]
    # a palm/finger tie goes to the finger (the palm wins only when strictly closer)
    c = s.centres.clone()
    c[0, 0] = torch.tensor([-1.0, 20.0, 20.0], dtype=torch.float64)
    c[0, 21 + 3 * 4] = torch.tensor([1.0, 20.0, 20.0], dtype=torch.float64)
    tie = HandSpheres(centres=c, radii=s.radii)
    p = torch.tensor([[[0.0, 20.0, 20.0], [-0.01, 20.0, 20.0]]], dtype=torch.float64)
    assert segment_points(p, tie).tolist() == [[5, 0]]


def test_segment_crop_equals_segmenting_every_pixel():
    from model.point_cloud import segment_crop

    centre, cube, M = _setup(b=2, size=16)
    g = torch.Generator().manual_seed(1)
    depth = torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=g) * 0.6 - 0.3
    depth[:, :, :, :5] = 1.0  # background columns
    depth[1] = 1.0  # an empty crop
    spheres = HandSpheres(centres=torch.rand(2, 66, 3, dtype=torch.float64, generator=g) - 0.5,
                          radii=torch.rand(2, 66, dtype=torch.float64, generator=g) * 0.1)
    pix = backproject_crop(depth, centre, cube, M, CAM).flatten(2).transpose(1, 2)
    ref = segment_points(pix, spheres).view(2, 1, 16, 16)
    ref = torch.where(depth < 0.99, ref, torch.zeros_like(ref))
    got = segment_crop(depth, spheres, centre, cube, M, CAM)
    assert torch.equal(got, ref) and int((got[0] > 0).sum()) > 20 and len(set(got[0].flatten().tolist())) > 3


def test_segment_points_matches_float64_numpy_rule():
    rng = np.random.default_rng(5)
    c, r = rng.uniform(-0.6, 0.6, (3, 66, 3)), rng.uniform(0.01, 0.12, (3, 66))
    pts = rng.uniform(-0.8, 0.8, (3, 500, 3))
    e = np.abs(np.sqrt(((pts[:, :, None] - c[:, None]) ** 2).sum(-1) + 1e-8) - r[:, None])  # (3, 500, 66)
    ref = np.where(e[..., :21].min(-1) < e[..., 21:].min(-1), 0, e[..., 21:].argmin(-1) // 3 + 1)
    got = segment_points(torch.from_numpy(pts), HandSpheres(torch.from_numpy(c), torch.from_numpy(r)))
    np.testing.assert_array_equal(got.numpy(), ref)
    assert len(np.unique(ref)) == 16  # every label occurs
