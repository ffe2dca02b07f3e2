"""The gradient-flow checker of the DSF-claim benchmark (bench/dsf_grad_flow.py) on a toy network whose
parameter names follow PoseNet's: it must flag a target that is not detached and a prediction cut from its
branch, and pass the correct wiring."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.dsf_grad_flow import GROUPS, gradient_flow, group_of, violations


def test_group_names_follow_posenet():
    from model.pose_net import build_pose_net

    groups = {group_of(n) for n, _ in build_pose_net(2, 21, width=0.125).named_parameters()}
    assert groups == set(GROUPS)
    assert group_of("finals_s2.0.weight") == "s2_pwe" and group_of("fusion.0.weight") == "s2_trunk"
    assert group_of("mano_regress.2.bias") == "s1_mano" and group_of("layer3.1.conv1.weight") == "s1_trunk"


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Linear(2, 2)
        self.finals = nn.Linear(2, 2)
        self.mano_regress = nn.Linear(2, 2)
        self.layer1_s2 = nn.Linear(2, 2)
        self.finals_s2 = nn.Linear(2, 2)
        self.mano_regress_s2 = nn.Linear(2, 2)

    def forward(self, x):
        f1 = self.layer1(x)
        f2 = self.layer1_s2(f1)
        return self.finals(f1), self.mano_regress(f1), self.finals_s2(f2), self.mano_regress_s2(f2)


@pytest.mark.parametrize("detach", [True, False])
def test_checker_flags_a_missing_detach(detach):
    torch.manual_seed(0)
    net = Toy()
    p1, m1, p2, m2 = net(torch.randn(3, 2))
    teacher = p2.detach() if detach else p2
    terms = {"real/distil_pwe/s1": ((p1 - teacher) ** 2).mean(),
             "real/p2m/s2": ((m2 - p2.detach()) ** 2).mean(),
             "real/m2p/s2": ((p2 - (m2.detach() if detach else m2)) ** 2).mean(),
             "syn/coord/s1": (p1 ** 2).mean()}
    flow = gradient_flow(net, terms)
    assert set(flow) == {"distil_pwe/s1", "p2m/s2", "m2p/s2"}
    values = {k: float(v.detach()) for k, v in ((n.split("/", 1)[1], t) for n, t in terms.items())}
    bad = violations(flow, values)
    if detach:
        assert bad == []
        assert flow["p2m/s2"]["s2_pwe"] == 0.0 and flow["p2m/s2"]["s2_mano"] > 0
    else:
        assert any(b.startswith("distil_pwe/s1 reaches s2_pwe") for b in bad)
        assert any(b.startswith("m2p/s2 reaches s2_mano") for b in bad)


def test_checker_flags_a_prediction_without_gradient():
    net = Toy()
    p1, m1, p2, m2 = net(torch.randn(3, 2))
    terms = {"real/p2m/s2": ((m2.detach() - p2.detach()) ** 2).mean() + 0 * p1.sum()}  # cut from the MANO head
    flow = gradient_flow(net, terms)
    bad = violations(flow, {"p2m/s2": float(terms["real/p2m/s2"].detach())})
    assert bad and "sends no gradient into s2_mano" in bad[0]
    # an empty M2P selection (value 0) is not a violation
    terms = {"real/m2p/s2": 0 * p2.sum()}
    assert violations(gradient_flow(net, terms), {"m2p/s2": 0.0}) == []
