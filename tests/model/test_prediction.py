"""Prediction placement (docs/method.md §4.4) and the pixel-branch conversion to mm."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.prediction import norm_uvd_joints_to_mm, place_mano_prediction
from util.camera import NYU_CAMERA
from tests.reference import literal_crop_matrix
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


def test_predict_default_crop_matrix_and_explicit_camera(splat_renderer):
    """``predict(net, depth, C, S, camera=...)``: M defaults to the shared crop matrix of each sample's (C, S) under
    the given camera; the camera has no default (a library signature carries no data set)."""
    from model import build_pose_net, predict
    from util.camera import ICVL_CAMERA

    torch.manual_seed(0)
    net = build_pose_net(width=0.25)
    g = torch.Generator().manual_seed(1)
    depth = torch.rand(2, 1, 128, 128, generator=g) * 2 - 1
    center = torch.tensor([[30.0, -40.0, 650.0], [-80.0, 20.0, 900.0]])
    cube = torch.tensor([[250.0] * 3, [208.0] * 3])

    def same(a, b) -> None:
        for sa, sb in zip(a.stages, b.stages):
            for name in ("pwe_uvd", "pwe_mm", "mano_mm"):
                torch.testing.assert_close(getattr(sa, name), getattr(sb, name), rtol=0, atol=1e-4, msg=name)

    nyu = NYU_CAMERA.as_tuple()
    explicit = predict(net, depth, center, cube, crop_matrix_batch(center, cube, nyu), camera=nyu,
                       renderer=splat_renderer)
    same(net.predict(depth, center, cube, camera=nyu, renderer=splat_renderer), explicit)
    with pytest.raises(TypeError, match="camera"):
        predict(net, depth, center, cube, renderer=splat_renderer)
    with pytest.raises(ValueError, match="renderer"):  # a two-stage net needs its renderer passed in
        predict(net, depth, center, cube, camera=nyu, mano_layer=splat_renderer.mano_layer)
    icvl = predict(net, depth, center, cube, camera=ICVL_CAMERA, renderer=splat_renderer)
    same(icvl, predict(net, depth, center, cube, M=crop_matrix_batch(center, cube, ICVL_CAMERA.as_tuple()),
                       camera=ICVL_CAMERA, renderer=splat_renderer))
    # independent float64 check that the default M and the back-projection used ICVL's camera: norm-uvd ->
    # crop pixels -> full image through the inverse per-sample crop matrix -> camera frame
    fx, fy, cx, cy = ICVL_CAMERA.as_tuple()
    uvd = icvl.final.pwe_uvd.double().numpy()
    for b in range(2):
        c, s = center[b].double().numpy(), cube[b].double().numpy()
        M = literal_crop_matrix(c, s, ICVL_CAMERA.as_tuple())
        crop_px = np.stack([(uvd[b, :, 0] + 1) * 64, (uvd[b, :, 1] + 1) * 64, np.ones(21)])
        u, v, _ = np.linalg.inv(M) @ crop_px
        d = uvd[b, :, 2] * s[2] / 2 + c[2]
        expect = np.stack([(u - cx) * d / fx, (v - cy) * d / fy, d], axis=-1)
        np.testing.assert_allclose(icvl.final.pwe_mm[b].numpy(), expect, atol=1e-2)
    assert (icvl.final.pwe_mm - explicit.final.pwe_mm).abs().max() > 0.1  # the camera matters here
