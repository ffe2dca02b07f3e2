"""Huber loss (docs/method.md §9) against the official ``SmoothL1Loss`` outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.losses import huber


def test_matches_official_oracle(shared_dir):
    ref = np.load(shared_dir / "oracle" / "huber.npz")
    t = {k: torch.from_numpy(ref[k]) for k in ("x1", "y1", "x2", "y2")}
    np.testing.assert_allclose(huber(t["x1"], t["y1"]).item(), ref["loss1"], rtol=1e-6)
    np.testing.assert_allclose(huber(t["x1"], t["y1"], size_average=False).item(),
                               ref["loss1_size_average_false"], rtol=1e-6)
    np.testing.assert_allclose(huber(t["x2"], t["y2"]).item(), ref["loss2"], rtol=1e-6)


def test_hand_computed_branches():
    x = torch.tensor([[0.005, 0.02], [-0.03, 0.0]], dtype=torch.float64)
    y = torch.zeros_like(x)
    per = np.array([[0.5 * 0.005 ** 2, 0.01 * (0.02 - 0.005)], [0.01 * (0.03 - 0.005), 0.0]])
    assert huber(x, y).item() == pytest.approx(per.mean(), rel=1e-12)
    assert huber(x, y, size_average=False).item() == pytest.approx(per.mean(axis=-1).sum(), rel=1e-12)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shapes differ"):
        huber(torch.zeros(2, 3), torch.zeros(3, 2))


# ------------------------------------------------------------------------------------------------------------
# synthetic and distillation terms against float64 numpy / hand computations
# ------------------------------------------------------------------------------------------------------------
from model.losses import (  # noqa: E402
    map_distillation_loss,
    mano_joint_loss,
    mano_vertex_loss,
    mpe_joint_distillation_loss,
    mpe_mesh_distillation_loss,
    negative_scale_loss,
    p2m_loss,
    pixel_map_loss,
    pwe_joint_distillation_loss,
    pwe_joint_loss,
    shape_prior_loss,
)
from model.offsets import encode_offsets  # noqa: E402


def _np_huber(z, delta=0.01):
    z = np.abs(np.asarray(z, dtype=np.float64))
    return np.where(z < delta, 0.5 * z * z, delta * (z - 0.5 * delta)).mean()


@pytest.mark.parametrize("fn,shape", [
    (pwe_joint_loss, (2, 21, 3)), (mano_joint_loss, (2, 21, 3)), (mano_vertex_loss, (2, 779, 3)),
    (pwe_joint_distillation_loss, (2, 21, 3)), (mpe_joint_distillation_loss, (3, 21, 3)),
    (mpe_mesh_distillation_loss, (1, 779, 3)), (p2m_loss, (2, 21, 3)), (map_distillation_loss, (2, 84, 4, 4)),
])
def test_regression_terms_match_numpy_huber(fn, shape):
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 0.02, shape), rng.normal(0, 0.02, shape)  # both Huber branches present
    got = fn(torch.from_numpy(x), torch.from_numpy(y)).item()
    assert got == pytest.approx(_np_huber(x - y), rel=1e-12)
    assert fn(torch.from_numpy(x), torch.from_numpy(x)).item() == 0.0


@pytest.mark.parametrize("fn", [map_distillation_loss, pwe_joint_distillation_loss, mpe_joint_distillation_loss,
                                mpe_mesh_distillation_loss, p2m_loss])
def test_distillation_teacher_gets_no_gradient(fn):
    shape = (2, 84, 4, 4) if fn is map_distillation_loss else (2, 21, 3)
    student = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    fn(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_pixel_map_loss_zero_at_target_and_known_shift():
    torch.manual_seed(0)
    depth = torch.ones(2, 1, 128, 128, dtype=torch.float64)
    depth[:, :, 40:90, 30:100] = 0.1  # a foreground slab
    joints = (torch.rand(2, 21, 3, dtype=torch.float64) - 0.5) * 0.6
    target = encode_offsets(joints, depth, feature_size=64)
    assert pixel_map_loss(target, joints, depth).item() == 0.0
    shift = torch.zeros_like(target)
    shift[0, 5, 3, 7] = 0.5  # one linear-branch entry
    shift[1, 70, 10, 11] = -0.004  # one quadratic-branch entry
    expected = (0.01 * (0.5 - 0.005) + 0.5 * 0.004 ** 2) / target.numel()
    pred = (target + shift).requires_grad_(True)
    loss = pixel_map_loss(pred, joints.requires_grad_(True), depth)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert joints.grad is None  # the encoded target is a constant


def test_shape_prior_and_negative_scale_hand_computed():
    theta = torch.zeros(2, 62, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        theta[0, 48:58] = torch.arange(10, dtype=torch.float64)  # sum of squares 285
        theta[1, 48] = 2.0
        theta[0, 58], theta[1, 58] = -0.5, 0.3
        theta[:, 3:48] = 7.0  # other slices must not count
    assert shape_prior_loss(theta).item() == pytest.approx((285 + 4) / 20, rel=1e-12)
    assert negative_scale_loss(theta).item() == pytest.approx(0.25, rel=1e-12)
    negative_scale_loss(theta).backward()
    g = theta.grad
    assert g[0, 58].item() == pytest.approx(-0.5) and g[1, 58].item() == 0.0  # d|min(s,0)|/ds = -1, / B
    assert g[:, :58].abs().sum() == 0 and g[:, 59:].abs().sum() == 0
