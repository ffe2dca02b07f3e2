"""Consis-CycleGAN generator / discriminator (docs/method.md §12): CycleGAN key layout, counts, init, loading."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from model import CheckpointError, build_transfer_discriminator, build_transfer_generator, load_transfer_generator


def generator_layout(ngf: int = 64, n_blocks: int = 9) -> dict[str, tuple]:
    """CycleGAN ``resnet_9blocks`` keys: convs at 1, 4, 7; blocks 10..18 (convs conv_block.1 / .5);
    transposed convs 19, 22 (weights stored (in, out, k, k)); last conv 26. Instance norm has no state."""
    keys = {"model.1.weight": (ngf, 1, 7, 7), "model.1.bias": (ngf,),
            "model.4.weight": (2 * ngf, ngf, 3, 3), "model.4.bias": (2 * ngf,),
            "model.7.weight": (4 * ngf, 2 * ngf, 3, 3), "model.7.bias": (4 * ngf,)}
    for b in range(10, 10 + n_blocks):
        for c in (1, 5):
            keys[f"model.{b}.conv_block.{c}.weight"] = (4 * ngf, 4 * ngf, 3, 3)
            keys[f"model.{b}.conv_block.{c}.bias"] = (4 * ngf,)
    keys.update({"model.19.weight": (4 * ngf, 2 * ngf, 3, 3), "model.19.bias": (2 * ngf,),
                 "model.22.weight": (2 * ngf, ngf, 3, 3), "model.22.bias": (ngf,),
                 "model.26.weight": (1, ngf, 7, 7), "model.26.bias": (1,)})
    return keys


def discriminator_layout(ndf: int = 64) -> dict[str, tuple]:
    """PatchGAN n_layers 3 with instance norm: convs at 0, 2, 5, 8, 11 (LeakyReLU / norm in between)."""
    chans = [(1, ndf), (ndf, 2 * ndf), (2 * ndf, 4 * ndf), (4 * ndf, 8 * ndf), (8 * ndf, 1)]
    keys = {}
    for idx, (cin, cout) in zip((0, 2, 5, 8, 11), chans):
        keys[f"model.{idx}.weight"] = (cout, cin, 4, 4)
        keys[f"model.{idx}.bias"] = (cout,)
    return keys


def test_generator_layout_and_count():
    g = build_transfer_generator()
    layout = generator_layout()
    assert {k: tuple(v.shape) for k, v in g.state_dict().items()} == layout
    assert sum(math.prod(s) for s in layout.values()) == 11_365_633
    assert sum(p.numel() for p in g.parameters()) == 11_365_633
    assert isinstance(g.model[27], nn.Tanh)


def test_generator_forward_shape_and_range():
    g = build_transfer_generator().eval()
    x = torch.rand(2, 1, 128, 128) * 2 - 1
    with torch.no_grad():
        y = g(x)
    assert y.shape == (2, 1, 128, 128)
    assert y.abs().max() < 1


def test_generator_init_is_xavier_gain_002():
    g = build_transfer_generator()
    conv = g.model[10].conv_block[1]  # 256 -> 256, 3 x 3
    fan = 256 * 9
    expected = 0.02 * math.sqrt(2.0 / (fan + fan))
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert torch.all(conv.bias == 0)


def test_generator_checkpoint_round_trip(tmp_path):
    g = build_transfer_generator()
    torch.manual_seed(5)
    state = {k: torch.randn_like(v) for k, v in g.state_dict().items()}
    # a pre-0.4 CycleGAN checkpoint also stores instance-norm statistics; the loader drops them
    legacy = dict(state, **{"model.2.running_mean": torch.zeros(64), "model.2.running_var": torch.ones(64)})
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(legacy, path)
    loaded = load_transfer_generator(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_reduced_generator_loads_at_its_size(tmp_path):
    """A generator trained with transfer_ngf / transfer_n_blocks (CPU benchmarks) is rebuilt at its own size."""
    g = build_transfer_generator(ngf=8, n_blocks=2)
    torch.manual_seed(6)
    state = {k: torch.randn_like(v) for k, v in g.state_dict().items()}
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(state, path)
    loaded = load_transfer_generator(path)
    assert loaded.model[1].out_channels == 8 and len([m for m in loaded.model if hasattr(m, "conv_block")]) == 2
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k
    g.load_state_dict(state)
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    assert torch.equal(loaded(x), g.eval()(x))


def test_generator_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="latest_net_G_A"):
        load_transfer_generator(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"model.1.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="bad.pth"):
        load_transfer_generator(bad)


class _NotATensor:
    """A Python object that a weights-only load must refuse."""


def test_generator_unreadable_files(tmp_path):
    """Garbage, a truncated checkpoint and a pickled Python object: one clear error naming file and expectation."""
    garbage = tmp_path / "garbage_G_A.pth"
    garbage.write_bytes(np.random.default_rng(1).bytes(5000))
    good = tmp_path / "good.pth"
    torch.save({"model.1.weight": torch.zeros(64, 1, 7, 7)}, good)
    truncated = tmp_path / "truncated_G_A.pth"
    truncated.write_bytes(good.read_bytes()[:-200])
    unsafe = tmp_path / "object_G_A.pth"
    torch.save({"model.1.weight": _NotATensor()}, unsafe)
    for path, why in ((garbage, ""), (truncated, ""), (unsafe, "_NotATensor")):
        with pytest.raises(CheckpointError) as info:
            load_transfer_generator(path)
        msg = str(info.value)
        assert msg.startswith(str(path)) and "not a readable PyTorch checkpoint" in msg, msg
        assert "latest_net_G_A.pth" in msg and "weights_only=True" in msg and why in msg, msg
        assert isinstance(info.value, ValueError)


def test_generator_wrong_keys_are_named(tmp_path):
    state = build_transfer_generator().state_dict()
    state["model.27.weight"] = state.pop("model.26.weight")  # an off-by-one layout
    state["model.4.bias"] = torch.zeros(7)
    path = tmp_path / "shifted.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_transfer_generator(path)
    msg = str(info.value)
    assert "shifted.pth" in msg and "resnet_9blocks" in msg
    assert "missing keys (1): model.26.weight" in msg
    assert "unexpected keys (1): model.27.weight" in msg
    assert "model.4.bias (7,) != (128,)" in msg
    not_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_dict)
    with pytest.raises(CheckpointError, match=r"list\.pth: expected a CycleGAN .* got a list"):
        load_transfer_generator(not_dict)


def test_discriminator_layout_and_output():
    d = build_transfer_discriminator()
    assert {k: tuple(v.shape) for k, v in d.state_dict().items()} == discriminator_layout()
    assert d(torch.zeros(1, 1, 128, 128)).shape == (1, 1, 14, 14)


def test_bad_options():
    with pytest.raises(ValueError, match="norm"):
        build_transfer_generator(norm="group")
    with pytest.raises(ValueError, match="init"):
        build_transfer_discriminator(init_type="uniform")
    with pytest.raises(TypeError):
        build_transfer_generator(1, 1)  # keyword-only
