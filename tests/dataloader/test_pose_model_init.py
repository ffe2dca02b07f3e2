"""Opt-in MANO scale initialisation of the pose network (config ``mano_scale_bias_init``)."""
import dataclasses

import torch

from config import Config
from dataloader.builders import build_pose_model, set_mano_scale_bias
from model.pose_net import build_pose_net


def test_scale_bias_sets_only_the_scale_output_of_every_mano_head():
    torch.manual_seed(0)
    net = build_pose_net(2, 21, width=0.125)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    set_mano_scale_bias(net, 1.0)
    after = net.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert sorted(changed) == ["mano_regress.2.bias", "mano_regress_s2.2.bias"]
    for k in changed:
        diff = (before[k] != after[k]).nonzero().flatten().tolist()
        assert diff == [58]  # 62-d layout: 3 rot | 45 pose | 10 beta | scale at 58 | 3 transl
        assert after[k][58].item() == 1.0


def test_zero_keeps_the_official_initialisation(standin_pkl):
    cfg = dataclasses.replace(Config(), mano_path=str(standin_pkl), width=0.125, device="cpu")
    torch.manual_seed(0)
    net0, _ = build_pose_model(cfg, "cpu")
    torch.manual_seed(0)
    net1, _ = build_pose_model(dataclasses.replace(cfg, mano_scale_bias_init=1.0), "cpu")
    b0, b1 = net0.mano_regress[2].bias, net1.mano_regress[2].bias
    assert abs(b0[58].item()) <= 1 / 8 and b1[58].item() == 1.0  # PyTorch default bias bound 1/sqrt(fan_in)
    assert torch.equal(b0[:58], b1[:58]) and torch.equal(b0[59:], b1[59:])
