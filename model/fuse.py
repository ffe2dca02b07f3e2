"""Inference-only folding of BatchNorm into the preceding (transposed) convolution.

In eval mode ``BN(conv(x)) = conv'(x)`` with ``W' = W * g``, ``b' = (b - mean) * g + beta`` and
``g = gamma / sqrt(var + eps)`` per output channel; the BN layer becomes an identity. This removes one full pass
over every feature map per layer (a memory-bound operation on CPU). Together with channels-last weights this is
:func:`prepare_for_inference`, the fastest CPU path measured by ``bench/network.py``. The folded copy must not
be trained (the statistics are frozen into the weights) and its state dict no longer matches the checkpoint
layout.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from model.resnet import BasicBlock

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


@torch.no_grad()
def _fold_pair(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (eval statistics) into ``conv`` in place (adds a bias when the conv had none)."""
    transpose = isinstance(conv, nn.ConvTranspose2d)  # weight (C_in, C_out / groups, k, k): gain on dim 1
    if transpose and conv.groups != 1:
        raise ValueError("folding BN into a grouped ConvTranspose2d is not supported")
    conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                  bn.eps, bn.weight, bn.bias, transpose=transpose)


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A frozen eval-mode copy of ``net`` in which every BatchNorm that directly follows a convolution
    (adjacent in an ``nn.Sequential``, or ``conv1/bn1`` and ``conv2/bn2`` of a :class:`BasicBlock`) is folded
    into it and replaced by ``nn.Identity``. Outputs equal ``net.eval()``'s up to float rounding."""
    folded = copy.deepcopy(net).eval()
    for module in list(folded.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names[:-1], names[1:]):
                conv, bn = module._modules[a], module._modules[b]
                if isinstance(conv, _CONVS) and isinstance(bn, nn.BatchNorm2d):
                    _fold_pair(conv, bn)
                    module._modules[b] = nn.Identity()
        elif isinstance(module, BasicBlock):
            for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2")):
                _fold_pair(getattr(module, conv_name), getattr(module, bn_name))
                setattr(module, bn_name, nn.Identity())
    folded.requires_grad_(False)
    return folded


def prepare_for_inference(net: nn.Module, *, channels_last: bool = True) -> nn.Module:
    """The fastest CPU inference form found by ``bench/network.py``: BN folded into the convolutions and the
    4-D weights in channels-last layout (oneDNN's native layout; inputs may stay contiguous). A frozen copy."""
    folded = fold_batchnorm(net)
    return folded.to(memory_format=torch.channels_last) if channels_last else folded
