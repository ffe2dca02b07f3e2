"""ResNet-18 building blocks of the DSF pose network (docs/method.md §7), written here (no torchvision).

Module and attribute names follow torchvision's ``BasicBlock`` (``conv1, bn1, conv2, bn2, downsample.{0,1}``) so
the official DSF checkpoints, which were built from those names, load with ``strict=True``.
"""
from __future__ import annotations

import torch
from torch import nn

#: BatchNorm momentum of every BN layer of the pose network (official ``BN_MOMENTUM``)
BN_MOMENTUM = 0.1
#: BasicBlocks per ResNet-18 stage
RESNET18_BLOCKS = (2, 2, 2, 2)


def scale_channels(channels: int, width: float) -> int:
    """Channel count ``channels`` scaled by the width multiplier (at least 1; width 1.0 is the identity)."""
    return max(1, int(round(channels * width)))


class BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU-3x3 conv-BN plus (optionally projected) shortcut, then ReLU; torchvision layout.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        stride: stride of the first conv (and of the 1x1 projection).
        downsample: shortcut projection (``Sequential(conv1x1, BN)``) or None for the identity.
    Shapes: (B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, momentum=BN_MOMENTUM)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def make_res_layer(in_ch: int, out_ch: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """One ResNet stage of ``blocks`` BasicBlocks; the first one projects the shortcut when the shape changes."""
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
            nn.BatchNorm2d(out_ch, momentum=BN_MOMENTUM),
        )
    layers = [BasicBlock(in_ch, out_ch, stride, downsample)]
    layers += [BasicBlock(out_ch, out_ch) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def make_stem(out_ch: int) -> nn.Sequential:
    """``pre``: conv 5x5 (1 -> out_ch, stride 1, pad 2, no bias) -> BN -> ReLU -> max-pool 3x3/2.

    (B, 1, 128, 128) -> (B, out_ch, 64, 64).
    """
    return nn.Sequential(
        nn.Conv2d(1, out_ch, 5, stride=1, padding=2, bias=False),
        nn.BatchNorm2d(out_ch, momentum=BN_MOMENTUM),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )


def make_deconv(in_ch: int, out_ch: int) -> nn.Sequential:
    """ConvTranspose 4x4 stride 2 pad 1 (no bias) -> BN -> ReLU: doubles the resolution."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, output_padding=0, bias=False),
        nn.BatchNorm2d(out_ch, momentum=BN_MOMENTUM),
        nn.ReLU(inplace=True),
    )
