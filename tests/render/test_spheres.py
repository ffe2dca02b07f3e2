"""The 66-sphere hand model (docs/method.md, sphere model): collision mask rules, radii and centres on a hand
whose radii are known by construction, the wrist-radius clamp."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from render.spheres import collision_mask, hand_spheres

CHILD = (2, 3, 16, 5, 6, 17, 8, 9, 18, 11, 12, 19, 14, 15, 20)


def test_collision_mask_count_symmetry_and_rules():
    m = collision_mask()
    assert m.shape == (66, 66) and m.dtype == torch.bool
    assert torch.equal(m, m.T) and not m.diagonal().any()
    # all ordered off-diagonal pairs, minus palm-palm, minus the 54 same/neighbouring-bone pairs of each finger,
    # minus 5 proximal bones x 3 spheres x 2 orders vs their ray end, minus the thumb root's 4 spheres x 21 palm
    # x 2 orders except the 6 already removed by the previous rule
    assert int(m.sum()) == 66 * 65 - 21 * 20 - 5 * 54 - 30 - (4 * 21 * 2 - 6) == 3408
    assert not m[:21, :21].any()
    f = lambda b, k=0: 21 + 3 * b + k  # noqa: E731  (sphere k of bone b)
    assert not m[f(0), f(1)] and not m[f(1), f(2)] and not m[f(1), f(0)]  # neighbouring phalanges
    assert m[f(2), f(0)] and m[f(0, 2), f(2, 1)]  # distal vs proximal is active
    assert m[f(0), f(3)] and m[f(2), f(14)]  # different fingers
    assert not m[f(0), 4] and not m[f(3, 2), 8] and not m[f(9, 1), 16]  # proximal bone vs its own ray end
    assert m[f(0), 8] and m[f(0), 3] and m[f(1), 4]  # ...but not other palm spheres / other bones
    assert not m[f(12, 2), 0] and not m[f(13, 0), 11]  # thumb root and first sphere of bone 13 vs all palm
    assert m[f(13, 1), 0] and m[f(14), 20]


def _known_hand(radii16: np.ndarray, seed: int = 0):
    """Joints (1, 21, 3) and a 779-vertex mesh where joint j's 10 nearest support vertices lie at radii16[j];
    non-support vertices sit much closer (they must be ignored)."""
    rng = np.random.default_rng(seed)
    joints = rng.uniform(-0.8, 0.8, (21, 3))
    verts = np.full((779, 3), 50.0)  # far away, no support
    support = np.zeros((16, 778), dtype=bool)
    v = 0
    for j in range(16):
        for n in range(12):
            d = rng.normal(size=3)
            d /= np.linalg.norm(d)
            verts[v] = joints[j] + d * (radii16[j] if n < 10 else 3 * radii16[j])  # 2 farther support vertices
            support[j, v] = True
            v += 1
        verts[v] = joints[j] + 1e-3  # a non-support vertex right next to the joint
        v += 1
    layer = SimpleNamespace(regressor_support=torch.from_numpy(support))
    return layer, torch.from_numpy(joints)[None], torch.from_numpy(verts)[None]


@pytest.mark.parametrize("r0,wrist", [(0.2, 0.15), (0.03, 0.01), (0.6, 0.4)])  # inside, lower and upper clamp
def test_spheres_on_a_hand_with_known_radii(r0, wrist):
    radii16 = np.linspace(0.02, 0.09, 16)
    radii16[0] = r0
    layer, joints, verts = _known_hand(radii16)
    s = hand_spheres(layer, joints, verts)
    assert s.centres.shape == (1, 66, 3) and s.radii.shape == (1, 66)
    r = np.sqrt(radii16 ** 2 + 1e-8)  # distances carry the official +1e-8 under the root
    r = np.concatenate([r, r[[3, 6, 9, 12, 15]] / 1.5])
    w = np.clip(r[0] - 0.05, 0.01, 0.4)
    assert w == pytest.approx(wrist, abs=1e-6)
    J = joints[0].numpy()
    exp_c, exp_r = [J[0]], [w]
    for m in (1, 4, 7, 10, 13):
        for t in (0.2, 0.4, 0.6, 0.8):
            exp_c.append(J[0] + t * (J[m] - J[0]))
            exp_r.append(w + t * (r[m] - w))
    for b in range(15):
        p, c = b + 1, CHILD[b]
        for t in (0.0, 1 / 3, 2 / 3):
            exp_c.append(J[p] + t * (J[c] - J[p]))
            exp_r.append(r[p] + t * (r[c] - r[p]))
    np.testing.assert_allclose(s.centres[0].numpy(), np.array(exp_c), atol=1e-12)
    np.testing.assert_allclose(s.radii[0].numpy(), np.array(exp_r), rtol=1e-6)


def test_centre_joints_move_centres_not_radii():
    layer, joints, verts = _known_hand(np.linspace(0.02, 0.09, 16))
    other = joints + 0.25
    a, b = hand_spheres(layer, joints, verts), hand_spheres(layer, joints, verts, centre_joints=other)
    torch.testing.assert_close(b.radii, a.radii)
    torch.testing.assert_close(b.centres, a.centres + 0.25)


def test_standin_mano_spheres(standin_model):
    from render.mano_layer import ManoLayer

    layer = ManoLayer(standin_model)
    theta = torch.zeros(2, 62)
    theta[:, 58] = 1.0
    out = layer.forward_dsf(theta, global_scale=1 / 125)
    s = hand_spheres(layer, out.joints, out.vertices)
    assert s.centres.shape == (2, 66, 3) and bool((s.radii > 0).all()) and bool(torch.isfinite(s.radii).all())
