"""Consis-CycleGAN networks (docs/method.md §12): the ResNet generator G_A (synthetic -> real-looking depth) and
the PatchGAN discriminator used to train it.

Ported from the junyanz pytorch-CycleGAN-and-pix2pix design (``networks.ResnetGenerator``,
``networks.NLayerDiscriminator``): the layers sit in one ``nn.Sequential`` called ``model`` so that checkpoint
keys keep the CycleGAN ``model.<index>`` layout and the released ``latest_net_G_A.pth`` loads with
``strict=True``. Code <-> paper: ``netG_A`` = the "image-to-image translation network" of DSF; domain A =
synthetic crops, B = real crops; only G_A is used by the pose training (frozen).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import init

from model.checkpoint import as_state_dict, check_state_dict, read_checkpoint

NORMS = ("instance", "batch", "none")
INITS = ("normal", "xavier", "kaiming", "orthogonal")


def _norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """CycleGAN ``get_norm_layer``: InstanceNorm without affine / running stats, or BatchNorm, or nothing."""
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "none":
        return lambda channels: nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


class ResnetBlock(nn.Module):
    """Reflection-pad 1, conv 3x3, norm, ReLU, reflection-pad 1, conv 3x3, norm; identity skip.

    Keys: ``conv_block.1`` and ``conv_block.5`` are the convs (CycleGAN layout, no dropout).
    """

    def __init__(self, dim: int, norm_layer: Callable[[int], nn.Module], use_bias: bool):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, padding=0, bias=use_bias), norm_layer(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, padding=0, bias=use_bias), norm_layer(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN ResNet generator: c7s1-ngf, two stride-2 downsamplings, ``n_blocks`` residual blocks, two
    transposed-conv upsamplings, c7s1-out_ch, tanh.

    For 9 blocks the ``model`` indices are: convs 1, 4, 7; blocks 10..18; transposed convs 19, 22; last conv 26.
    (B, in_ch, H, W) -> (B, out_ch, H, W) in (-1, 1); H, W divisible by 4.
    """

    def __init__(self, in_ch: int, out_ch: int, ngf: int, n_blocks: int, norm: str):
        super().__init__()
        norm_layer = _norm_layer(norm)
        use_bias = norm == "instance"  # CycleGAN: convs before a BatchNorm carry no bias
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7, padding=0, bias=use_bias),
                                   norm_layer(ngf), nn.ReLU(True)]
        for i in range(2):  # downsampling
            mult = 2 ** i
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias),
                       norm_layer(ngf * mult * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, norm_layer, use_bias) for _ in range(n_blocks)]
        for i in range(2):  # upsampling
            mult = 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1,
                                          bias=use_bias),
                       norm_layer(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """CycleGAN PatchGAN (``netD = 'basic'`` for ``n_layers = 3``): 4x4 convs, LeakyReLU 0.2, 1-channel map.

    (B, in_ch, H, W) -> (B, 1, H / 8 - 2, W / 8 - 2) for 3 layers (14 x 14 patches scores for 128 x 128 input).
    """

    def __init__(self, in_ch: int, ndf: int, n_layers: int, norm: str):
        super().__init__()
        norm_layer = _norm_layer(norm)
        use_bias = norm == "instance"
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=use_bias),
                       norm_layer(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=use_bias),
                   norm_layer(ndf * mult), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_cyclegan_weights(net: nn.Module, init_type: str, gain: float) -> None:
    """CycleGAN ``init_weights``: conv / linear weights by ``init_type`` (with ``gain``), biases 0;
    BatchNorm weight normal(1, gain), bias 0."""
    if init_type not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init_type!r}")
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if init_type == "normal":
                init.normal_(m.weight, 0.0, gain)
            elif init_type == "xavier":
                init.xavier_normal_(m.weight, gain=gain)
            elif init_type == "kaiming":
                init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            else:
                init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            init.normal_(m.weight, 1.0, gain)
            init.zeros_(m.bias)


def build_transfer_generator(*, in_ch: int = 1, out_ch: int = 1, ngf: int = 64, n_blocks: int = 9,
                             norm: str = "instance", init_type: str = "xavier", gain: float = 0.02) -> ResnetGenerator:
    """G_A as built by DSF: ``define_G(1, 1, 64, 'resnet_9blocks', 'instance', False, 'xavier')`` (gain 0.02).

    11,365,633 parameters with the defaults; on the CPU.
    """
    if n_blocks < 0:
        raise ValueError(f"n_blocks must be >= 0, got {n_blocks!r}")
    net = ResnetGenerator(in_ch, out_ch, ngf, n_blocks, norm)
    init_cyclegan_weights(net, init_type, gain)
    return net


def build_transfer_discriminator(*, in_ch: int = 1, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                                 init_type: str = "xavier", gain: float = 0.02) -> NLayerDiscriminator:
    """PatchGAN discriminator for Consis-CycleGAN training (our reconstruction, docs/DEVIATIONS.md "Consis-CycleGAN": 3 layers, ndf 64, instance
    norm). The init follows the generator's (CycleGAN applies one ``init_type`` to G and D)."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers!r}")
    net = NLayerDiscriminator(in_ch, ndf, n_layers, norm)
    init_cyclegan_weights(net, init_type, gain)
    return net


def _generator_size(state: dict) -> dict:
    """``ngf`` / ``n_blocks`` of a generator state dict (first conv's output channels, number of residual blocks):
    reduced generators trained with ``transfer_ngf`` / ``transfer_n_blocks`` (benchmarks on a CPU) load too. Missing
    or odd keys fall back to the default size, whose strict check then names the mismatch."""
    first = state.get("model.1.weight")
    if not isinstance(first, torch.Tensor) or first.ndim != 4:
        return {}
    blocks = {k.split(".")[1] for k in state if ".conv_block." in k}
    return {"ngf": int(first.shape[0]), "n_blocks": len(blocks)}


def load_transfer_generator(path: str | Path, *, map_location: str | torch.device = "cpu") -> ResnetGenerator:
    """Load a CycleGAN ``latest_net_G_A.pth`` (a plain state dict) into a generator of its size (default: DSF's
    ngf 64, 9 blocks; a reduced one is recognised from the first conv and the block count), strictly.

    The file is read with ``weights_only=True``. Keys ``running_mean`` / ``running_var`` / ``num_batches_tracked``
    of InstanceNorm layers, written by PyTorch < 0.4 checkpoints, are dropped (as CycleGAN's own loader does). The
    generator is returned frozen in eval mode.

    Raises:
        FileNotFoundError: no such file.
        model.checkpoint.CheckpointError (a ValueError): the file is not a readable checkpoint, not a state dict, or
            its keys / shapes differ from the resnet_9blocks generator (the message lists them).
    """
    expected = "a CycleGAN resnet_9blocks / instance-norm generator state dict (latest_net_G_A.pth, keys 'model.<i>.')"
    raw = read_checkpoint(path, expected=expected, map_location=map_location)
    state = as_state_dict(raw, source=str(path), expected=expected)
    net = build_transfer_generator(**_generator_size(state))
    norm_names = {name for name, m in net.named_modules() if isinstance(m, nn.InstanceNorm2d)}
    legacy = ("running_mean", "running_var", "num_batches_tracked")
    state = {k: v for k, v in state.items()
             if not (k.rsplit(".", 1)[0] in norm_names and k.rsplit(".", 1)[-1] in legacy)}
    check_state_dict(net, state, source=str(path), expected=expected)
    net.load_state_dict(state, strict=True)
    net.requires_grad_(False)
    return net.eval()
