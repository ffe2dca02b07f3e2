"""Consis-CycleGAN training model (model/cyclegan.py): network sizes, consistency term and metric, pool, schedule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.cyclegan import (
    CycleGANSettings, ImagePool, build_cyclegan, consistency_metric, discriminator_losses, foreground_consistency,
    generator_losses, linear_decay_factor, lsgan_loss,
)
from model.transfer_net import build_transfer_discriminator


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def patchgan_count(in_ch: int, ndf: int = 64, n_layers: int = 3) -> int:
    """Hand count of CycleGAN's ``basic`` PatchGAN (4x4 convs, all with bias under instance norm):
    in->ndf, then channels doubling (capped at 8 ndf) for n_layers - 1 stride-2 convs, one stride-1 conv to
    min(2^n_layers, 8) ndf, and a final conv to 1 channel."""
    chans = [in_ch] + [ndf * min(2 ** i, 8) for i in range(n_layers + 1)] + [1]
    return sum(cin * cout * 16 + cout for cin, cout in zip(chans[:-1], chans[1:]))


def test_parameter_counts():
    gens, discs = build_cyclegan(CycleGANSettings())
    assert count(gens.G_A) == count(gens.G_B) == 11_365_633  # docs/method.md §12
    # CycleGAN prints "[Network D_A] Total number of parameters : 2.765 M" for its 3-channel basic D
    assert round(patchgan_count(3) / 1e6, 3) == 2.765
    assert patchgan_count(1) == 2_762_689
    assert count(discs.D_A) == count(discs.D_B) == 2_762_689
    assert count(build_transfer_discriminator(in_ch=3)) == patchgan_count(3)


def test_consistency_term_zero_for_identity_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    x = torch.ones(2, 1, 16, 16)
    x[:, :, 4:12, 4:12] = torch.rand(2, 1, 8, 8, generator=g) * 1.5 - 1  # hand pixels below 0.99
    assert foreground_consistency(x, x.clone()).item() == 0.0
    assert consistency_metric(x, x.clone()).item() == 0.0
    assert consistency_metric(x, x.clone(), region="intersection").item() == 0.0
    y = x + 0.05 * torch.randn(x.shape, generator=g)
    assert foreground_consistency(x, y).item() > 0
    assert consistency_metric(x, y).item() > 0
    # background-only change: the foreground term ignores it, the official metric counts it
    y_bg = torch.where(x < 0.99, x, torch.full_like(x, 0.9))
    assert foreground_consistency(x, y_bg).item() == 0.0
    assert consistency_metric(x, y_bg).item() > 0


def test_consistency_values_against_float64_reference():
    rng = np.random.default_rng(3)
    x = np.where(rng.random((3, 1, 20, 20)) < 0.4, rng.uniform(-1, 0.98, (3, 1, 20, 20)), 1.0)
    y = np.clip(x + rng.normal(0, 0.2, x.shape), -1, 1)
    fg = x < 0.99
    ref_term = np.abs(y - x)[fg].sum() / fg.sum()
    inter = fg & (y < 0.99)
    ref_all = np.mean([np.abs(y[b] - x[b]).sum() / inter[b].sum() for b in range(3)])
    ref_int = np.mean([np.abs(y[b] - x[b])[inter[b]].sum() / inter[b].sum() for b in range(3)])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    assert foreground_consistency(xt, yt).item() == pytest.approx(ref_term, rel=1e-12)
    assert consistency_metric(xt, yt).item() == pytest.approx(ref_all, rel=1e-12)
    assert consistency_metric(xt, yt, region="intersection").item() == pytest.approx(ref_int, rel=1e-12)
    empty = torch.ones(1, 1, 4, 4)
    assert foreground_consistency(empty, empty * 0.5).item() == 0.0  # no hand pixel: no term
    with pytest.raises(ValueError, match="region"):
        consistency_metric(xt, yt, region="hand")


def test_consistency_gradient_reaches_only_hand_pixels():
    x = torch.ones(1, 1, 8, 8)
    x[..., 2:4, 2:4] = 0.0
    y = torch.full((1, 1, 8, 8), 0.5, requires_grad=True)
    foreground_consistency(x, y).backward()
    grad = y.grad[0, 0]
    assert torch.all(grad[2:4, 2:4] != 0) and grad.abs().sum() == grad[2:4, 2:4].abs().sum()


def test_lsgan_and_discriminator_loss_values():
    p = torch.tensor([[0.0, 2.0]])
    assert lsgan_loss(p, True).item() == pytest.approx((1 + 1) / 2)
    assert lsgan_loss(p, False).item() == pytest.approx((0 + 4) / 2)
    ones, zeros = torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)
    perfect = discriminator_losses((ones, zeros, ones, zeros))
    assert perfect["total"].item() == 0.0
    wrong = discriminator_losses((zeros, ones, zeros, ones))
    assert wrong["D_A"].item() == pytest.approx(1.0) and wrong["total"].item() == pytest.approx(2.0)


def test_generator_losses_weights():
    s = CycleGANSettings(ngf=4, n_blocks=1, ndf=4, lambda_cycle=10.0, lambda_identity=0.5, lambda_consistency=3.0,
                         lambda_consistency_b=2.0)
    torch.manual_seed(0)
    gens, discs = build_cyclegan(s)
    a = torch.ones(2, 1, 32, 32)
    a[..., 8:24, 8:24] = -0.5
    b = torch.rand(2, 1, 32, 32) * 2 - 1
    out = gens(a, b)
    terms = generator_losses(out, discs.D_A, discs.D_B, s)
    assert terms["cycle_A"].item() == pytest.approx(10 * (out.rec_A - a).abs().mean().item(), rel=1e-5)
    assert terms["idt_B"].item() == pytest.approx(5 * (out.idt_B - a).abs().mean().item(), rel=1e-5)
    assert terms["consis_A"].item() == pytest.approx(3 * foreground_consistency(a, out.fake_B).item(), rel=1e-5)
    assert terms["consis_B"].item() == pytest.approx(2 * foreground_consistency(b, out.fake_A).item(), rel=1e-5)
    parts = sum(v.item() for k, v in terms.items() if k != "total")
    assert terms["total"].item() == pytest.approx(parts, rel=1e-6)
    plain = generator_losses(out, discs.D_A, discs.D_B, CycleGANSettings(lambda_consistency=0.0,
                                                                         lambda_identity=0.0))
    assert plain["consis_A"].item() == 0.0 and plain["idt_A"].item() == 0.0


def _imgs(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1)


def test_image_pool_rule():
    assert torch.equal(ImagePool(0).query(_imgs([1, 2])), _imgs([1, 2]))  # size 0: pass-through
    pool = ImagePool(50, seed=1)
    first = pool.query(_imgs(range(30)))
    second = pool.query(_imgs(range(30, 50)))
    assert torch.equal(first, _imgs(range(30))) and torch.equal(second, _imgs(range(30, 50)))  # filling
    assert [float(i) for i in pool.images] == list(range(50))
    swaps, chosen = 0, set()
    n = 4000
    for k in range(n):
        before = [float(i) for i in pool.images]
        new = 1000.0 + k
        got = float(pool.query(_imgs([new]))[0])
        after = [float(i) for i in pool.images]
        if got == new:  # returned as is: the pool is unchanged
            assert after == before
        else:  # a stored image is returned and replaced by the new one, at its own slot
            slot = before.index(got)
            assert after == before[:slot] + [new] + before[slot + 1:]
            swaps += 1
            chosen.add(slot)
    assert abs(swaps / n - 0.5) < 0.04  # probability 1/2 (4000 draws: 3 sigma ~ 0.024)
    assert chosen == set(range(50))  # every slot can be chosen


def test_image_pool_state_round_trip():
    pool = ImagePool(5, seed=2)
    pool.query(torch.randn(7, 1, 4, 4))
    copy = ImagePool(5, seed=99)
    copy.load_state_dict(pool.state_dict())
    q = torch.randn(6, 1, 4, 4)
    assert torch.equal(pool.query(q), copy.query(q))
    with pytest.raises(ValueError, match="size"):
        ImagePool(4).load_state_dict(pool.state_dict())


def test_linear_decay_factor_matches_cyclegan():
    # CycleGAN 'linear' with n_epochs = n_epochs_decay = 20, epoch_count = 1
    factors = [linear_decay_factor(e, 20, 20) for e in range(40)]
    assert factors[:20] == [1.0] * 20
    assert factors[20] == pytest.approx(20 / 21) and factors[39] == pytest.approx(1 / 21)
    assert np.allclose(np.diff(factors[19:]), -1 / 21)
