"""Rendered crops line up with real crops: the loader's crop of a full-frame render equals the direct crop render.

The real-data path crops a 640x480 frame (``dataloader.crop``); the method renders predictions straight into the
crop (``render.rasterizer.render_crop``). The m2d loss and the M2P selection compare the two pixel by pixel, so
their silhouettes must coincide up to edge pixels, with no systematic offset.
"""
import numpy as np
import pytest
import torch

from dataloader.crop import crop_depth_mm
from render.mano_layer import ManoLayer
from render.rasterizer import render_crop, render_depth
from util.camera import NYU_CAMERA

CAM = NYU_CAMERA.as_tuple()


def _hands(standin_model, depths):
    layer = ManoLayer(standin_model)
    gen = torch.Generator().manual_seed(3)
    B = len(depths)
    pose = layer.hands_mean.expand(B, 45) + 0.3 * torch.randn(B, 45, generator=gen)
    rot = torch.tensor([[np.pi / 2, 0.0, 0.0]]).expand(B, 3) + 0.3 * torch.randn(B, 3, generator=gen)
    out = layer(rot, pose, torch.zeros(B, 10))
    verts = out.vertices - out.joints.mean(1, keepdim=True)
    centre = torch.stack([torch.tensor([30.0 * k - 40.0, 20.0 - 15.0 * k, d]) for k, d in enumerate(depths)])
    return torch.cat([verts, verts[:, :1] * 0], 1) + centre[:, None], centre, layer


@pytest.mark.parametrize("sampling,max_offset", [("warp", 0.2), ("resize", None)])
def test_loader_crop_of_full_render_matches_direct_crop_render(standin_model, sampling, max_offset):
    depths = [520.0, 640.0, 800.0, 1000.0]
    verts, centre, layer = _hands(standin_model, depths)
    faces = layer.faces  # open mesh is enough for the silhouette comparison
    verts = verts[:, :778]
    full = render_depth(verts, faces, CAM, (480, 640)).depth.numpy()
    cube = torch.full((len(depths), 3), 250.0)
    direct, M = render_crop(verts, faces, centre, cube, CAM, 128)
    offsets, mismatch = [], []
    for b in range(len(depths)):
        crop, M_loader = crop_depth_mm(full[b], centre[b].double().numpy(), cube[b].double().numpy(), CAM, 128,
                                       sampling=sampling)
        np.testing.assert_allclose(M_loader, M[b].double().numpy(), atol=1e-4)
        a, r = crop > 0, direct.mask[b].numpy()
        mismatch.append((a ^ r).sum() / r.sum())
        ia, ir = np.argwhere(a).mean(0), np.argwhere(r).mean(0)
        offsets.append(ia - ir)  # (row, col) centroid offset in crop pixels
        both = a & r
        np.testing.assert_array_less(np.median(np.abs(crop[both] - direct.depth[b].numpy()[both])), 1.0)
    offsets = np.array(offsets)
    if max_offset is not None:
        # nearest sampling of M^-1 (j, i): no systematic offset, differences only along the silhouette
        assert np.abs(offsets).max() < max_offset, offsets
        assert np.abs(offsets.mean(0)).max() < max_offset / 2, offsets
        assert max(mismatch) < 0.05, mismatch
    else:
        # the official cv2.resize samples frame pixel floor(j / s), left of / above the ray through the crop pixel:
        # its content lands down-right of the render by up to half a frame pixel (documented deviation)
        assert (offsets.mean(0) > 0.1).all(), offsets
