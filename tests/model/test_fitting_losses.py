"""Real-batch fine-tuning terms (docs/method.md, fine-tuning losses): collision per-row rule, ICP against closed
forms and a float64 brute force, part-ICP's zero-distance exclusion, m2d, every M2P selection case, and the
gradient flow (detached teacher / collision mesh, constant masks, finite differences)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model.losses import (
    collision_loss, icp_loss, m2d_loss, m2p_loss, m2p_selection, part_icp_loss, prediction_collision_loss,
)
from render.spheres import HandSpheres

D = torch.float64


# ------------------------------------------------------------------------------------------------ collision
def _grid_spheres(b=1, r=0.01):
    grid = torch.stack(torch.meshgrid(torch.arange(5.0), torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1)
    c = grid.reshape(-1, 3)[:66].to(D) * 2.0 + 10.0
    return c[None].repeat(b, 1, 1), torch.full((b, 66), r, dtype=D)


def _pen(d, ra, rb):
    return ra + rb - np.sqrt(d * d + 1e-8)


def test_collision_no_penetration_and_masked_pairs():
    c, r = _grid_spheres()
    assert collision_loss(HandSpheres(c, r)).item() == 0.0
    c[0, 1] = c[0, 0] + 0.01  # two palm spheres overlapping: palm-palm pairs are inactive
    c[0, 22] = c[0, 21] + 0.01  # two spheres of one bone: inactive
    assert collision_loss(HandSpheres(c, r)).item() == 0.0


def test_collision_rows_below_threshold_count_even_when_the_sample_total_is_not():
    c, r = _grid_spheres()
    r[0, [0, 21, 1, 30]] = 0.1
    c[0, 21] = c[0, 0] + torch.tensor([0.14, 0, 0], dtype=D)  # palm 0 vs finger 21: 0.06 each
    c[0, 30] = c[0, 1] + torch.tensor([0, 0.14, 0], dtype=D)  # palm 1 vs finger 30 (bone 3): 0.06 each
    e = _pen(0.14, 0.1, 0.1)
    # four rows of 0.06 (< 0.1 each), sample total 0.24 >= 0.1: everything counts (per-row rule)
    assert collision_loss(HandSpheres(c, r)).item() == pytest.approx(4 * e / 66, rel=1e-12)


def test_collision_row_at_or_above_threshold_is_zeroed():
    c, r = _grid_spheres(b=2)
    r[:, [0, 21, 22]] = 0.1
    c[:, 21] = c[:, 0] + torch.tensor([0.14, 0, 0], dtype=D)
    c[:, 22] = c[:, 0] - torch.tensor([0.14, 0, 0], dtype=D)  # 21 and 22 are one bone: no pair between them
    e = _pen(0.14, 0.1, 0.1)
    # sample 0: row 0 = 2e ~ 0.12 >= 0.1 -> dropped; rows 21, 22 = e each -> kept. sample 1: nothing.
    c[1] = _grid_spheres()[0][0]
    r[1] = 0.01
    assert collision_loss(HandSpheres(c, r)).item() == pytest.approx(2 * e / (2 * 66), rel=1e-12)
    # threshold sensitivity: with a larger row threshold, row 0 counts too
    assert collision_loss(HandSpheres(c, r), row_threshold=0.2).item() == pytest.approx(4 * e / 132, rel=1e-12)


def test_collision_finite_differences():
    c, r = _grid_spheres()
    r[0, [0, 21, 1, 40]] = 0.1
    c[0, 21] = c[0, 0] + torch.tensor([0.13, 0.02, -0.01], dtype=D)
    c[0, 40] = c[0, 1] + torch.tensor([0.01, 0.15, 0.02], dtype=D)
    c.requires_grad_(True)
    r.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda cc, rr: collision_loss(HandSpheres(cc, rr)), (c, r))


def test_prediction_collision_mesh_gets_no_gradient():
    rng = np.random.default_rng(0)
    support = torch.zeros(16, 778, dtype=torch.bool)
    joints = rng.uniform(-0.4, 0.4, (2, 21, 3))
    verts = np.full((2, 779, 3), 9.0)
    for j in range(16):  # 12 support vertices 0.03 around each joint: radii ~0.03, some spheres overlap
        support[j, 12 * j:12 * j + 12] = True
        verts[:, 12 * j:12 * j + 12] = joints[:, j:j + 1] + rng.normal(0, 1, (2, 12, 3)) * 0.03 / np.sqrt(3)
    layer = SimpleNamespace(regressor_support=support)
    joints = torch.from_numpy(joints).requires_grad_(True)
    verts = torch.from_numpy(verts).requires_grad_(True)
    loss = prediction_collision_loss(layer, joints, verts)
    assert loss.item() > 0
    loss.backward()
    assert verts.grad is None and joints.grad.abs().sum() > 0
    # radii move with the joints (distances to the fixed mesh): finite differences through centres and radii
    n = max(range(2), key=lambda i: prediction_collision_loss(layer, joints[i:i + 1], verts[i:i + 1]).item())
    j0, v0 = joints.detach()[n:n + 1].clone().requires_grad_(True), verts.detach()[n:n + 1]
    assert prediction_collision_loss(layer, j0, v0).item() > 0
    assert torch.autograd.gradcheck(lambda j: prediction_collision_loss(layer, j, v0), (j0,), fast_mode=True)


# ------------------------------------------------------------------------------------------------ ICP
SQUARE_V = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=D)
SQUARE_F = torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_icp_closed_form_on_a_square():
    pts = torch.tensor([[0.3, 0.6, 0.5],  # above the interior: h^2 = 0.25
                        [1.5, 0.5, 0.0],  # beside an edge, in plane: 0.25
                        [2.0, 2.0, 1.0],  # beyond a corner: 1 + 1 + 1 = 3
                        [0.5, -0.2, -0.1],  # below an edge: 0.04 + 0.01
                        [0.7, 0.7, 0.0]], dtype=D)  # on the surface: 0
    got = icp_loss(pts[None], SQUARE_V[None], SQUARE_F)
    assert got.shape == (1,)
    assert got.item() == pytest.approx((0.25 + 0.25 + 3 + 0.05 + 0) / 5, rel=1e-12)


def _np_point_triangle_sq(p, a, b, c):
    """Independent exact reference: the plane projection if it falls inside, else the best of the 3 edges."""
    n = np.cross(b - a, c - a)
    n = n / np.linalg.norm(n)
    q = p - np.dot(p - a, n) * n
    T = np.stack([b - a, c - a], 1)
    lam = np.linalg.lstsq(T, q - a, rcond=None)[0]
    if lam[0] >= 0 and lam[1] >= 0 and lam.sum() <= 1:
        return float(np.dot(p - q, p - q))
    best = np.inf
    for x, y in ((a, b), (b, c), (c, a)):
        t = np.clip(np.dot(p - x, y - x) / np.dot(y - x, y - x), 0, 1)
        e = p - (x + t * (y - x))
        best = min(best, float(np.dot(e, e)))
    return best


def _random_mesh(seed, n_v=30, n_f=40, n_p=50, b=2):
    rng = np.random.default_rng(seed)
    verts = rng.uniform(-1, 1, (b, n_v, 3))
    faces = np.stack([rng.choice(n_v, 3, replace=False) for _ in range(n_f)])
    pts = rng.uniform(-1.3, 1.3, (b, n_p, 3))
    return verts, faces, pts


def test_icp_against_float64_brute_force():
    verts, faces, pts = _random_mesh(1)
    ref = np.array([[min(_np_point_triangle_sq(p, *verts[n][f]) for f in faces) for p in pts[n]]
                    for n in range(len(pts))]).mean(-1)
    got = icp_loss(torch.from_numpy(pts), torch.from_numpy(verts), torch.from_numpy(faces))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-14)


def test_part_icp_excludes_zero_distances_and_empty_parts():
    # part 1 = face 0, part 2 = face 1, part 3 = both (the square of the closed-form test)
    parts = [torch.tensor([0]), torch.tensor([1]), torch.tensor([0, 1])]
    pts = torch.tensor([[[1.0, 0.0, 0.0],  # a vertex of face 0: distance 0 -> excluded from part 1's mean
                         [0.8, 0.3, 0.2],  # above face 0: 0.04
                         [0.8, 0.3, -0.4],  # below face 0: 0.16
                         [0.0, 1.0, 0.0],  # part 2, only a zero distance -> part 2 value 0
                         [0.3, 0.3, 0.0],  # label 0: ignored
                         [0.5, 0.5, 0.0]]], dtype=D)  # part 3 on the diagonal: 0
    labels = torch.tensor([[1, 1, 1, 2, 0, 3]])
    got = part_icp_loss(pts, labels, SQUARE_V[None], SQUARE_F, parts)
    assert got.shape == (1, 3)
    np.testing.assert_allclose(got[0].numpy(), [(0.04 + 0.16) / (2 + 1e-8), 0.0, 0.0], rtol=1e-12)
    # the face restriction matters: a point above face 1 but labelled part 1 measures to face 0 only
    far = torch.tensor([[[0.1, 0.9, 0.3]]], dtype=D)
    d_face0 = _np_point_triangle_sq(far[0, 0].numpy(), *SQUARE_V[SQUARE_F[0]].numpy())
    val = part_icp_loss(far, torch.tensor([[1]]), SQUARE_V[None], SQUARE_F, parts)[0, 0].item()
    assert val == pytest.approx(d_face0 / (1 + 1e-8), rel=1e-12) and d_face0 > 0.09 + 1e-3


def test_part_icp_with_layer_part_bits_shape(standin_model):
    from render.mano_layer import ManoLayer

    layer = ManoLayer(standin_model)
    theta = torch.zeros(2, 62)
    theta[:, 58] = 1.0
    out = layer.forward_dsf(theta, global_scale=1 / 125)
    pts = out.vertices[:, :100] + 0.01
    labels = torch.randint(0, 16, (2, 100), generator=torch.Generator().manual_seed(0))
    a = part_icp_loss(pts, labels, out.vertices, layer.faces_closed, layer.part_bits)
    b = part_icp_loss(pts, labels, out.vertices, layer.faces_closed, layer.part_face_ids)
    assert a.shape == (2, 15)
    torch.testing.assert_close(a, b)


def test_icp_finite_differences():
    verts, faces, pts = _random_mesh(2, n_v=12, n_f=10, n_p=15, b=1)
    v = torch.from_numpy(verts).requires_grad_(True)
    p = torch.from_numpy(pts).requires_grad_(True)
    f = torch.from_numpy(faces)
    assert torch.autograd.gradcheck(lambda vv, pp: icp_loss(pp, vv, f), (v, p))
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 3, (1, 15)))
    parts = [torch.arange(0, 5), torch.arange(4, 10)]
    assert torch.autograd.gradcheck(lambda vv, pp: part_icp_loss(pp, labels, vv, f, parts), (v, p))


# ------------------------------------------------------------------------------------------------ m2d
def test_m2d_hand_computed_and_gradient_only_through_render():
    real = torch.tensor([[[[0.2, 1.0], [1.0, 0.1]]], [[[1.0, 1.0], [1.0, 1.0]]]], dtype=D)
    rend = torch.tensor([[[[0.3, 0.5], [1.0, 0.1]]], [[[1.0, 1.0], [1.0, 1.0]]]], dtype=D, requires_grad=True)
    got = m2d_loss(real, rend)
    # sample 0: union = 3 pixels, |diff| = 0.1 + 0.5 + 0; sample 1: no foreground -> 0
    np.testing.assert_allclose(got.detach().numpy(), [0.6 / (3 + 1e-8), 0.0], rtol=1e-12)
    got.sum().backward()
    # analytic gradient d/d rend = -sign(real - rend) / |U| on the union (0 where the residual is 0)
    exp = torch.tensor([[[[1.0, -1.0], [0.0, 0.0]]], [[[0, 0], [0, 0]]]], dtype=D) / (3 + 1e-8)
    torch.testing.assert_close(rend.grad, exp)


def test_m2d_finite_differences():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(2, 1, 6, 6, dtype=D, generator=g) * 1.6 - 0.6
    rend = (torch.rand(2, 1, 6, 6, dtype=D, generator=g) * 1.6 - 0.6).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: m2d_loss(real, x), (rend,))


# ------------------------------------------------------------------------------------------------ M2P
def _crops(real_vals, rend_vals):
    return (torch.tensor(real_vals, dtype=D).view(len(real_vals), 1, 1, -1),
            torch.tensor(rend_vals, dtype=D).view(len(rend_vals), 1, 1, -1))


def test_m2p_depth_test_intersection_over_union():
    real, rend = _crops([[0.1, 0.2, 1.0, 1.0],  # I = {0}, U = {0,1,2}: a = 0.05 / 3 -> passes
                         [0.1, 0.5, 1.0, 1.0],  # I = {0, 1}, U = 2: a = (0.05 + 0.1) / 2 = 0.075 -> fails
                         [0.1, 1.0, 1.0, 1.0],  # disjoint foregrounds: a = 0 -> passes (a_b = 0 sample)
                         [1.0, 1.0, 1.0, 1.0]],  # nothing at all: a = 0 -> passes
                        [[0.15, 1.0, 0.3, 1.0],
                         [0.15, 0.4, 1.0, 1.0],
                         [1.0, -0.9, 1.0, 1.0],
                         [1.0, 1.0, 1.0, 1.0]])
    icp = torch.tensor([5e-4, 5e-4, 1e-3, 2e-3], dtype=D)  # strict < 1e-3
    depth_ok, fit_ok, joint_mask = m2p_selection(real, rend, icp, torch.zeros(4, 15, dtype=D))
    assert depth_ok.tolist() == [True, False, True, True]
    assert fit_ok.tolist() == [True, True, False, False]
    assert bool(joint_mask.all()) and joint_mask.shape == (4, 21)  # parts without points (value 0) are reliable
    assert not depth_ok.requires_grad and depth_ok.dtype == torch.bool


def test_m2p_single_stage_variant_threshold_and_intersection_denominator():
    real, rend = _crops([[0.1, 0.2, 1.0, 1.0],  # I = {0}: a = 0.05 / 1 -> fails (union: 0.05 / 3 passes)
                         [0.1, 1.0, 1.0, 1.0],  # no overlap: 0 / 0 = NaN -> fails (union: passes)
                         [0.96, 0.1, 1.0, 1.0]],  # 0.96 is background at threshold 0.95: I = {1}, a = 0
                        [[0.15, 1.0, 0.3, 1.0],
                         [1.0, -0.9, 1.0, 1.0],
                         [0.5, 0.1, 1.0, 1.0]])
    zeros = torch.zeros(3, dtype=D), torch.zeros(3, 15, dtype=D)
    ok, _, _ = m2p_selection(real, rend, *zeros, foreground=0.95, denominator="intersection")
    assert ok.tolist() == [False, False, True]
    ok, _, _ = m2p_selection(real, rend, *zeros)
    assert ok.tolist() == [True, True, False]  # at 0.99, pixel 0 of sample 2 overlaps: a = 0.46 / 2
    with pytest.raises(ValueError, match="denominator"):
        m2p_selection(real, rend, *zeros, denominator="mean")


def test_m2p_joint_mask_maps_parts_to_joints():
    part = torch.zeros(1, 15, dtype=D)
    part[0, [2, 6, 14]] = 2e-3  # parts 3, 7, 15 unreliable
    part[0, 9] = 1e-3  # part 10 exactly at the threshold: unreliable (strict <)
    real, rend = _crops([[0.1]], [[0.1]])
    _, _, jm = m2p_selection(real, rend, torch.zeros(1, dtype=D), part)
    bad = sorted(set(range(21)) - set(torch.nonzero(jm[0]).flatten().tolist()))
    assert bad == [3, 7, 10, 15, 16, 20]  # part j -> joint j; part 3 -> index tip 16, part 15 -> thumb tip 20
    _, _, jm = m2p_selection(real, rend, torch.zeros(1, dtype=D), torch.ones(1, 15, dtype=D))
    assert jm[0].tolist() == [True] + [False] * 20  # the wrist is always selected


def test_m2p_loss_selected_pairs_empty_and_index_zero():
    g = torch.Generator().manual_seed(0)
    pwe = (torch.rand(2, 21, 3, dtype=D, generator=g) * 0.1).requires_grad_(True)
    mano = (torch.rand(2, 21, 3, dtype=D, generator=g) * 0.1).requires_grad_(True)
    empty = torch.zeros(2, 21, dtype=torch.bool)
    loss = m2p_loss(pwe, mano, empty)
    assert loss.item() == 0.0
    loss.backward()
    assert pwe.grad.abs().sum() == 0 and mano.grad is None
    only_first = empty.clone()
    only_first[0, 0] = True  # the official index-sum test would have returned 0 here
    z = (pwe[0, 0] - mano[0, 0]).detach().abs().numpy()
    exp = np.where(z < 0.01, 0.5 * z * z, 0.01 * (z - 0.005)).mean()
    assert m2p_loss(pwe, mano, only_first).item() == pytest.approx(exp, rel=1e-12)
    sel = torch.rand(2, 21, generator=g) > 0.5
    zz = (pwe - mano).detach().numpy()[sel.numpy()]
    az = np.abs(zz)
    exp = np.where(az < 0.01, 0.5 * az * az, 0.01 * (az - 0.005)).mean()
    pwe.grad = None
    loss = m2p_loss(pwe, mano, sel)
    assert loss.item() == pytest.approx(exp, rel=1e-12)
    loss.backward()
    assert mano.grad is None  # the MANO target is detached
    assert torch.equal(pwe.grad.abs().sum(-1) > 0, sel)  # only selected pairs are taught
    assert torch.autograd.gradcheck(lambda p: m2p_loss(p, mano, sel), (pwe.detach().requires_grad_(True),))
