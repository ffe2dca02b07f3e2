"""Offset representation (docs/method.md §6): oracle agreement, round trip, differentiability."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.offsets import decode_offsets, encode_offsets, pixel_points
from util.camera import NYU_CAMERA
from util.geometry import crop_intrinsics, crop_matrix_batch, normalize_depth, norm_xyz_to_norm_uvd

#: norm-uvd -> mm for the NYU cube (250 mm): 1 unit = S/2 = 125 mm in depth and ~125 mm in u/v at the centre depth
MM_PER_UNIT = 125.0


def test_matches_official_oracle(shared_dir):
    ref = np.load(shared_dir / "oracle" / "gfm_offset.npz")
    img, joints = torch.from_numpy(ref["img"]), torch.from_numpy(ref["joints_uvd"])
    maps = encode_offsets(joints, img, float(ref["kernel"]), int(ref["feature_size"]))
    np.testing.assert_allclose(maps.numpy(), ref["maps"], atol=1e-5, rtol=0)
    decoded = decode_offsets(torch.from_numpy(ref["maps"]), img, float(ref["kernel"]))
    np.testing.assert_allclose(decoded.numpy(), ref["decoded_from_maps"], atol=1e-5, rtol=0)


def test_pixel_grid_convention():
    """Pixel (row i, column j) of an F-wide map sits at u = 2(j + 0.5)/F - 1, v = 2(i + 0.5)/F - 1 (docs/method.md §2.3 (a))."""
    depth = torch.arange(16.0).reshape(1, 1, 4, 4)
    pts = pixel_points(depth).reshape(3, 4, 4)
    i, j = 1, 3
    assert pts[0, i, j].item() == pytest.approx(2 * (j + 0.5) / 4 - 1)
    assert pts[1, i, j].item() == pytest.approx(2 * (i + 0.5) / 4 - 1)
    assert pts[2, i, j].item() == depth[0, 0, i, j].item()


def _blob_crop(size: int = 128) -> torch.Tensor:
    """A smooth ellipsoidal 'hand' (foreground radius ~0.35 norm units), background +1."""
    c = (torch.arange(size, dtype=torch.float64) + 0.5) / (size / 2) - 1.0
    v, u = torch.meshgrid(c, c, indexing="ij")
    r2 = ((u - 0.1) / 0.3) ** 2 + ((v + 0.05) / 0.35) ** 2
    depth = torch.where(r2 < 1.0, -0.3 + 0.25 * r2, torch.ones_like(r2))
    return depth.float().view(1, 1, size, size)


def test_round_trip_synthetic_blob():
    depth = _blob_crop()
    g = torch.Generator().manual_seed(0)
    pts = pixel_points(depth[..., ::2, ::2])[0].T  # (4096, 3) at 64 x 64
    fg = pts[pts[:, 2] < 0.99]
    pick = fg[torch.randperm(fg.shape[0], generator=g)[:21]]
    # joints a little behind the visible surface (inside the hand), off the pixel centres
    joints = pick + torch.cat([(torch.rand(21, 2, generator=g) - 0.5) * 0.03,
                               0.03 + 0.05 * torch.rand(21, 1, generator=g)], dim=1)
    decoded = decode_offsets(encode_offsets(joints[None], depth), depth)[0]
    err_mm = (decoded - joints).norm(dim=-1).max().item() * MM_PER_UNIT
    assert err_mm < 0.01


def test_round_trip_rendered_hand(mano_model):
    """Encode/decode on rasterised MANO hands (oracle model or stand-in; joints inside the mesh).

    Exact recovery needs a foreground pixel near each joint (heat close to 1 outweighs the 4096 background
    pixels that vote with logit 0); joints hidden deep behind the surface (max heat < 0.5) are excluded.
    """
    from render.rasterizer import render_depth

    from render.mano_layer import DSF_GLOBAL_SCALE, ManoLayer
    from render.mano_params import LAYOUT_AXIS_ANGLE as LAYOUT

    layer = ManoLayer(mano_model)
    gen = torch.Generator().manual_seed(11)
    theta = torch.zeros(8, LAYOUT.dim)
    theta[:, LAYOUT.global_orient] = torch.randn(8, 3, generator=gen)
    theta[:, LAYOUT.pose_pca] = 0.5 * torch.randn(8, 45, generator=gen)
    theta[:, LAYOUT.scale] = 1.0
    out = layer.forward_dsf(theta, global_scale=DSF_GLOBAL_SCALE)  # norm-xyz, network convention
    shift = out.joints.mean(dim=1, keepdim=True)  # centre each hand in its crop
    verts_n, joints_n = out.vertices - shift, out.joints - shift
    faces = layer.faces_closed
    cam = NYU_CAMERA.as_tuple()
    b = joints_n.shape[0]
    center = torch.tensor([30.0, -20.0, 650.0]) + torch.linspace(0, 1, b)[:, None] * torch.tensor([-90.0, 60.0, 400.0])
    cube = torch.full((b, 3), 250.0)
    M = crop_matrix_batch(center, cube, cam)
    verts_mm = verts_n * 125.0 + center[:, None]
    depth_mm = torch.stack([render_depth(verts_mm[k:k + 1], faces, crop_intrinsics(cam, M[k]).tolist()).depth[0]
                            for k in range(b)])
    depth = normalize_depth(depth_mm, center[:, 2], cube[:, 2]).unsqueeze(1)
    joints_uvd = norm_xyz_to_norm_uvd(joints_n, center, cube, M, cam)
    maps = encode_offsets(joints_uvd, depth)
    near_surface = maps[:, 63:].amax(dim=(2, 3)) >= 0.5  # (B, 21)
    assert near_surface.float().mean() > 0.9
    err_mm = (decode_offsets(maps, depth) - joints_uvd).norm(dim=-1) * MM_PER_UNIT
    assert err_mm[near_surface].max().item() < 0.05  # << 1 mm


def test_background_pixels_have_zero_maps():
    depth = _blob_crop()
    joints = torch.tensor([[[0.1, -0.05, -0.2]]])
    maps = encode_offsets(joints, depth)
    bg = depth[..., ::2, ::2] >= 0.99
    assert maps.masked_select(bg.expand_as(maps)).abs().max() == 0
    offsets = maps[:, :3]
    norms = offsets.norm(dim=1)
    on = maps[:, 3] > 0
    np.testing.assert_allclose(norms[on].numpy(), 1.0, atol=1e-5)  # unit offsets inside the kernel


def test_decode_gradcheck():
    g = torch.Generator().manual_seed(1)
    maps = (torch.rand(1, 8, 4, 4, generator=g, dtype=torch.float64) - 0.5)
    depth = (torch.rand(1, 1, 8, 8, generator=g, dtype=torch.float64) - 0.5)
    depth[0, 0, 0, 2] = 1.0  # one background pixel at the 4 x 4 sampling grid
    maps.requires_grad_(True)
    depth.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m, d: decode_offsets(m, d, 0.8, 30.0), (maps, depth))


def test_encode_gradcheck():
    g = torch.Generator().manual_seed(2)
    joints = ((torch.rand(1, 2, 3, generator=g, dtype=torch.float64) - 0.5) * 0.6).requires_grad_(True)
    depth = ((torch.rand(1, 1, 8, 8, generator=g, dtype=torch.float64) - 0.5) * 0.4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda j, d: encode_offsets(j, d, 0.8, 4), (joints, depth))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="depth"):
        encode_offsets(torch.zeros(1, 21, 3), torch.zeros(1, 128, 128))
    with pytest.raises(ValueError, match="4J"):
        decode_offsets(torch.zeros(1, 83, 64, 64), torch.zeros(1, 1, 128, 128))
