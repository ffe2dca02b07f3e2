"""Huber loss (dsf-method.md §6.0) against the official ``SmoothL1Loss`` outputs."""
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
