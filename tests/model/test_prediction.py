"""Prediction placement (dsf-method.md §3.4) and the pixel-branch conversion to mm."""
from __future__ import annotations

import numpy as np
import torch

from model.prediction import norm_uvd_joints_to_mm, place_mano_prediction
from util.camera import NYU_CAMERA
from util.geometry import crop_matrix_batch, uvd_to_norm_uvd, xyz_to_uvd


def test_place_mano_prediction_matches_oracle(oracle_model, shared_dir):
    """Network-convention parameters (g = 1/125) -> the official norm-xyz mesh, then mm with C and S."""
    from render.mano_layer import ManoLayer

    ref = np.load(shared_dir / "oracle" / "mano_forward.npz")
    theta = torch.from_numpy(ref["params_b"])
    b = theta.shape[0]
    center = torch.tensor([40.0, -25.0, 700.0]).repeat(b, 1)
    cube = torch.tensor([250.0, 250.0, 250.0]).repeat(b, 1)
    placed = place_mano_prediction(ManoLayer(oracle_model), theta, center, cube)
    np.testing.assert_allclose(placed.verts_norm.numpy(), ref["verts_b"], atol=1e-5)
    np.testing.assert_allclose(placed.joints_norm.numpy(), ref["joints_b"], atol=1e-5)
    # X = X_n * S / 2 + C, recomputed in float64
    expect = ref["joints_b"].astype(np.float64) * 125.0 + center.numpy()[:, None].astype(np.float64)
    np.testing.assert_allclose(placed.joints_mm.numpy(), expect, atol=2e-3)


def test_pixel_joints_back_to_mm():
    cam = NYU_CAMERA.as_tuple()
    center = torch.tensor([[30.0, -40.0, 650.0], [-80.0, 20.0, 900.0]], dtype=torch.float64)
    cube = torch.tensor([[250.0] * 3, [208.0] * 3], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    joints_mm = center[:, None] + (torch.rand(2, 21, 3, generator=g, dtype=torch.float64) - 0.5) * 150
    M = crop_matrix_batch(center, cube, cam).double()
    joints_uvd = uvd_to_norm_uvd(xyz_to_uvd(joints_mm, cam), center, cube, M)
    back = norm_uvd_joints_to_mm(joints_uvd, center, cube, M, cam)
    np.testing.assert_allclose(back.numpy(), joints_mm.numpy(), atol=1e-6)
