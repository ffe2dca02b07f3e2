"""BatchNorm running statistics re-estimated on one domain (model/bn_stats.py), against a float64 re-computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from model.bn_stats import batchnorm_layers, recalibrate_batchnorm


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1),
                         nn.BatchNorm2d(2, momentum=0.3))


def test_statistics_are_the_plain_average_over_the_batches():
    net = _net()
    batches = [torch.randn(4, 1, 5, 5, generator=torch.Generator().manual_seed(i)) * (i + 1) + i for i in range(3)]
    net.train()
    for b in batches[:2]:  # some other domain's history in the buffers first
        net(b * 10.0)
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "tracked" not in k}
    net.eval()
    used = recalibrate_batchnorm(net, batches + [batches[0]], net, max_batches=3)
    assert used == 3 and not net.training  # mode restored
    assert net[1].momentum == 0.1 and net[4].momentum == 0.3  # momenta restored
    for k, v in weights.items():
        assert torch.equal(net.state_dict()[k], v)  # weights untouched
    # float64 reference: first BN's input is the first conv's output
    w = net[0].weight.detach().double().numpy()
    bias = net[0].bias.detach().double().numpy()
    means, variances = [], []
    for b in batches:
        x = np.pad(b.double().numpy()[:, 0], ((0, 0), (1, 1), (1, 1)))
        out = np.zeros((4, 3, 5, 5))
        for c in range(3):
            for i in range(3):
                for j in range(3):
                    out[:, c] += w[c, 0, i, j] * x[:, i:i + 5, j:j + 5]
            out[:, c] += bias[c]
        flat = out.transpose(1, 0, 2, 3).reshape(3, -1)
        means.append(flat.mean(1))
        variances.append(flat.var(1, ddof=1))
    np.testing.assert_allclose(net[1].running_mean.double().numpy(), np.mean(means, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net[1].running_var.double().numpy(), np.mean(variances, 0), rtol=1e-5, atol=1e-6)
    assert int(net[1].num_batches_tracked) == 3


def test_zero_batches_keeps_the_statistics():
    net = _net()
    net.train()
    net(torch.randn(4, 1, 5, 5))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert recalibrate_batchnorm(net, [torch.randn(4, 1, 5, 5)], net, max_batches=0) == 0
    assert recalibrate_batchnorm(net, [], net, max_batches=5) == 0
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert len(batchnorm_layers(net)) == 2


def test_no_gradient_is_recorded():
    net = _net()
    recalibrate_batchnorm(net, [torch.randn(2, 1, 5, 5, requires_grad=True)], net, max_batches=1)
    assert all(p.grad is None for p in net.parameters())


def test_config_range():
    from config import ConfigError, load_config

    with pytest.raises(ConfigError, match="bn_recalibration"):
        load_config(["bn_recalibration=-1"])
    assert load_config(["bn_recalibration=4"]).bn_recalibration == 4
