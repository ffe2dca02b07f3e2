"""BatchNorm folding for inference (model/fuse.py): same outputs as the eval-mode network."""
from __future__ import annotations

import torch
from torch import nn

from model import build_pose_net
from model.fuse import fold_batchnorm, prepare_for_inference


def test_folded_network_matches_eval_outputs(splat_renderer):
    torch.manual_seed(0)
    net = build_pose_net(width=0.25)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial statistics and affine parameters everywhere, visible outputs
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
        for head in (*net.finals, *net.finals_s2):
            head.weight.normal_(0, 0.05, generator=g)
    net.eval()
    depth = torch.rand(2, 1, 128, 128, generator=g) * 2 - 1
    center = torch.tensor([[10.0, -20.0, 650.0], [-30.0, 15.0, 800.0]])
    cube = torch.full((2, 3), 250.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        ref = net(depth, center, cube, renderer=splat_renderer)
        out = folded(depth, center, cube, renderer=splat_renderer)
    for a, b in zip(ref.stages, out.stages):
        scale = a.maps.abs().max()
        assert scale > 1e-2
        assert (a.maps - b.maps).abs().max() < 1e-4 * scale
        assert (a.mano - b.mano).abs().max() < 1e-4 * a.mano.abs().max()
    for k, v in net.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k]), k
    fast = prepare_for_inference(net)
    assert fast.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = fast(depth, center, cube, renderer=splat_renderer)
    for a, b in zip(ref.stages, out.stages):
        assert (a.maps - b.maps).abs().max() < 1e-4 * a.maps.abs().max()
