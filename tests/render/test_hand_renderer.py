"""Prediction renderer: placement of the normalised MANO prediction and consistency with the crop geometry."""
import torch

from render.hand_renderer import HandRenderer
from render.mano_layer import ManoLayer
from render.mano_params import ManoParams
from util.camera import NYU_CAMERA
from util import geometry as g


def _theta(B, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rot = torch.randn(B, 3, generator=gen) * 0.5
    pose = torch.randn(B, 45, generator=gen) * 0.5
    betas = torch.randn(B, 10, generator=gen) * 0.5
    scale = torch.full((B, 1), 1.0)
    transl = (torch.rand(B, 3, generator=gen) - 0.5) * 0.1
    return ManoParams(rot, pose, betas, scale, transl).to_vector()


def test_prediction_lands_on_its_crop(standin_model):
    torch.manual_seed(0)
    renderer = HandRenderer(ManoLayer(standin_model), NYU_CAMERA.as_tuple())
    B = 4
    theta = _theta(B)
    center = torch.tensor([[0.0, 0.0, 600.0], [50.0, -30.0, 800.0], [-80.0, 40.0, 1000.0], [10.0, 10.0, 1150.0]])
    cube = torch.full((B, 3), 250.0) * torch.tensor([[1.0], [0.9], [1.1], [1.2]])
    out = renderer.render_prediction(theta, center, cube)
    assert out.depth.shape == (B, 1, 128, 128) and out.joints_uvd.shape == (B, 21, 3)
    assert out.verts_xyz.shape == (B, 779, 3)
    # the hand is visible, background is exactly +1, foreground within the cube
    fg = out.mask[:, 0]
    assert fg.sum(dim=(1, 2)).min() > 200
    assert torch.all(out.depth[:, 0][~fg] == 1.0)
    # independent check of the placement: project the mm joints with the full camera, then M
    joints_mm = out.joints_xyz * cube[:, None] / 2 + center[:, None]
    uvd = g.xyz_to_uvd(joints_mm.double(), NYU_CAMERA.as_tuple())
    M = g.crop_matrix_batch(center.double(), cube.double(), NYU_CAMERA.as_tuple()).double()
    uc = M[:, None, 0, 0] * uvd[..., 0] + M[:, None, 0, 2]
    vc = M[:, None, 1, 1] * uvd[..., 1] + M[:, None, 1, 2]
    torch.testing.assert_close(out.joints_uvd[..., 0].double(), uc / 64 - 1, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.joints_uvd[..., 1].double(), vc / 64 - 1, atol=1e-5, rtol=0)
    # most joints fall on rendered hand pixels whose surface lies in front of the joint (joints are inside)
    d_mm = g.denormalize_depth(out.depth[:, 0], center[:, 2], cube[:, 2])
    hits = 0
    for b in range(B):
        for j in range(21):
            col, row = int(round(uc[b, j].item())), int(round(vc[b, j].item()))
            if 0 <= row < 128 and 0 <= col < 128 and fg[b, row, col]:
                gap = joints_mm[b, j, 2].item() - d_mm[b, row, col].item()
                hits += int(-2.0 < gap < 40.0)
    assert hits >= 0.8 * B * 21


def test_rendered_depth_is_differentiable_in_theta(standin_model):
    renderer = HandRenderer(ManoLayer(standin_model), NYU_CAMERA.as_tuple())
    theta = _theta(2, seed=1).requires_grad_(True)
    center = torch.tensor([[0.0, 0.0, 700.0], [20.0, 0.0, 900.0]])
    out = renderer.render_prediction(theta, center, torch.full((2, 3), 250.0))
    loss = (out.depth * out.mask).sum()
    loss.backward()
    assert torch.isfinite(theta.grad).all() and theta.grad.abs().sum() > 0
    # moving the hand by t_z (norm units) moves covered surface depth by ~t_z (exactly for fronto-parallel
    # surfaces): the gradient of the summed depth w.r.t. t_z is close to the number of covered pixels
    g_tz = theta.grad[:, -1].double()
    cover = out.mask.sum(dim=(1, 2, 3)).double()
    assert torch.allclose(g_tz, cover, rtol=0.1)
