"""The two-stage DSF pose network (docs/method.md §7; official ``MANO_OCR_stage('ResNet_stage_18', 21, True)``).

Stage 1: 5x5 stem + ResNet-18 trunk; a MANO head (62 numbers, layout of :class:`render.mano_params.ManoParams`)
and a 3-layer deconvolution head producing 4J maps at 64x64 (J*3 unit offsets + J closeness maps, see
:mod:`model.offsets`). Stage 2 ("remap"): the stage-1 MANO hand is rendered with the sample's own crop centre and
cube, its joints are offset-encoded against the rendered depth, fused with the stage-1 stem features, deconvolution
features and maps, and a second trunk predicts both outputs again. Gradients of stage 2 reach stage 1 through the
features, the maps and the (differentiable) rendering.

Attribute names mirror the official checkpoints (``pre``, ``layer1..4``, ``mano_regress.2``,
``deconv_layer4/3/2.{0,1}``, ``finals.{0,1}``, ``fusion.{0,1}`` and the ``_s2`` twins) so the released DSF
weights load with ``strict=True``.

The renderer is *not* part of the module (its MANO buffers would otherwise appear in the state dict): stage 2
receives it explicitly, ``forward(depth, center_xyz, cube, renderer=...)``. It must provide
``render_prediction(theta (B,62), center_xyz (B,3) mm, cube (B,3) mm)`` returning an object with ``depth``
(B,1,128,128) normalised crop and ``joints_uvd`` (B,J,3) norm-uvd (:class:`render.hand_renderer.HandRenderer`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from model.checkpoint import as_state_dict, check_state_dict, read_checkpoint
from model.offsets import OFFSET_KERNEL, encode_offsets
from model.prediction import PosePrediction, predict
from model.resnet import RESNET18_BLOCKS, make_deconv, make_res_layer, make_stem, scale_channels
from render.mano_params import PARAM_DIM as MANO_PARAM_DIM

#: stage-name suffixes of the official attribute names
_SUFFIXES = ("", "_s2")


class PredictionRenderer(Protocol):
    """What stage 2 needs from a renderer (see ``render.hand_renderer.HandRenderer``)."""

    def render_prediction(self, theta: torch.Tensor, center_xyz: torch.Tensor, cube: torch.Tensor) -> Any: ...


@dataclass
class StageOutput:
    """Outputs of one stage.

    maps: (B, 4J, 64, 64) pixel-wise maps (J*3 unit offsets, then J closeness maps).
    mano: (B, 62) MANO vector (rotation, pose PCA, shape, scale, translation in norm-xyz of the crop).
    """

    maps: torch.Tensor
    mano: torch.Tensor


@dataclass
class PoseNetOutput:
    """All stages (``stages[0]`` = stage 1) and, for two stages, the rendering of the stage-1 MANO hand."""

    stages: list[StageOutput]
    render: Any | None = None  # the renderer's PredictionRender of stage 1 (None for one stage)

    @property
    def final(self) -> StageOutput:
        """The last stage's outputs (the method's prediction)."""
        return self.stages[-1]


class PoseNet(nn.Module):
    """DSF pose network with ``stage_num`` in {1, 2} stages.

    Args:
        stage_num: 2 = official two-stage network with the rendered remap; 1 = single-stage ablation.
        joint_num: J, number of joints (maps have 4J channels).
        width: channel-width multiplier of every trunk / head layer (1.0 = the official network); the 4J map
            channels and the 62 MANO outputs are not scaled.
        offset_kernel: K of the remap encoding (norm-uvd units).
    Input: depth (B, 1, 128, 128) normalised crop in [-1, 1]; for stage 2 also the crop centre and cube (B, 3) mm.
    """

    def __init__(self, stage_num: int = 2, joint_num: int = 21, width: float = 1.0,
                 offset_kernel: float = OFFSET_KERNEL):
        super().__init__()
        if stage_num not in (1, 2):
            raise ValueError(f"stage_num must be 1 or 2, got {stage_num!r}")
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        self.stage_num = stage_num
        self.joint_num = joint_num
        self.width = float(width)
        self.offset_kernel = offset_kernel
        ch = {c: scale_channels(c, width) for c in (64, 128, 256, 512)}
        self._ch = ch
        self.pre = make_stem(ch[64])
        self._add_stage("", ch[64])
        if stage_num == 2:
            fusion_in = ch[64] + ch[256] + 2 * 4 * joint_num  # c0, deconv features, maps, remap
            self.fusion = nn.Sequential(nn.Conv2d(fusion_in, ch[256], 3, 1, 1), nn.BatchNorm2d(ch[256]), nn.ReLU())
            self._add_stage("_s2", ch[256])
        init_pose_net_weights(self)

    def _add_stage(self, suffix: str, in_ch: int) -> None:
        """Create ``layer1..4``, ``mano_regress``, ``deconv_layer4/3/2`` and ``finals`` with ``suffix``."""
        ch, j = self._ch, self.joint_num
        widths = (ch[64], ch[128], ch[256], ch[512])
        for k, (out_ch, blocks) in enumerate(zip(widths, RESNET18_BLOCKS)):
            setattr(self, f"layer{k + 1}{suffix}", make_res_layer(in_ch, out_ch, blocks, stride=1 if k == 0 else 2))
            in_ch = out_ch
        setattr(self, f"mano_regress{suffix}",
                nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch[512], MANO_PARAM_DIM)))
        setattr(self, f"deconv_layer4{suffix}", make_deconv(ch[512], ch[256]))
        setattr(self, f"deconv_layer3{suffix}", make_deconv(ch[256], ch[256]))
        setattr(self, f"deconv_layer2{suffix}", make_deconv(ch[256], ch[256]))
        setattr(self, f"finals{suffix}", nn.ModuleList([nn.Conv2d(ch[256], 3 * j, 1), nn.Conv2d(ch[256], j, 1)]))

    def _run_stage(self, suffix: str, x: torch.Tensor) -> tuple[StageOutput, torch.Tensor]:
        """Trunk and heads of one stage: x (B, C, 64, 64) -> (StageOutput, deconv features (B, 256w, 64, 64))."""
        for k in range(1, 5):
            x = getattr(self, f"layer{k}{suffix}")(x)  # ends at (B, 512w, 8, 8)
        mano = getattr(self, f"mano_regress{suffix}")(x)  # (B, 62)
        for k in (4, 3, 2):
            x = getattr(self, f"deconv_layer{k}{suffix}")(x)  # 8 -> 16 -> 32 -> 64
        maps = torch.cat([head(x) for head in getattr(self, f"finals{suffix}")], dim=1)  # (B, 4J, 64, 64)
        return StageOutput(maps=maps, mano=mano), x

    def forward(self, depth: torch.Tensor, center_xyz: torch.Tensor | None = None, cube: torch.Tensor | None = None,
                renderer: PredictionRenderer | None = None, num_stages: int | None = None) -> PoseNetOutput:
        """Run the network.

        Args:
            depth: (B, 1, 128, 128) normalised crop.
            center_xyz: (B, 3) crop centre, mm, camera frame (stage 2 only).
            cube: (B, 3) crop cube, mm (stage 2 only).
            renderer: prediction renderer for the stage-2 remap (required when stage 2 runs; unused otherwise).
            num_stages: run only the first ``num_stages`` stages (default: all).
        Returns:
            :class:`PoseNetOutput` with one :class:`StageOutput` per stage.
        """
        if depth.ndim != 4 or depth.shape[1] != 1:
            raise ValueError(f"depth must be (B, 1, H, W), got {tuple(depth.shape)}")
        n = self.stage_num if num_stages is None else num_stages
        if n not in range(1, self.stage_num + 1):
            raise ValueError(f"num_stages must be in 1..{self.stage_num}, got {num_stages!r}")
        if n == 2 and renderer is None:
            raise ValueError("stage 2 needs a prediction renderer: pass renderer=... (render.hand_renderer.HandRenderer)"
                             " or num_stages=1")
        if n == 2 and (center_xyz is None or cube is None):
            raise ValueError("stage 2 needs the crop centre and cube (B, 3) mm to render the stage-1 hand")
        c0 = self.pre(depth)  # (B, 64w, 64, 64)
        stage1, feat1 = self._run_stage("", c0)
        if n == 1:
            return PoseNetOutput(stages=[stage1])
        rendered = renderer.render_prediction(stage1.mano, center_xyz, cube)  # not detached (docs/method.md §7)
        remap = encode_offsets(rendered.joints_uvd, rendered.depth, self.offset_kernel, feat1.shape[-1])
        # keep the concatenation in the features' layout: one mixed-layout input makes torch.cat fall back to a
        # contiguous result that the next conv must convert again (channels-last inference, bench/network.py)
        remap = remap.to(c0.dtype).contiguous(memory_format=_layout_of(c0))
        fused = self.fusion(torch.cat((c0, feat1, stage1.maps, remap), dim=1))  # (B, 64w + 256w + 168, 64, 64)
        stage2, _ = self._run_stage("_s2", fused)
        return PoseNetOutput(stages=[stage1, stage2], render=rendered)

    def predict(self, depth: torch.Tensor, center_xyz: torch.Tensor, cube: torch.Tensor,
                M: torch.Tensor | None = None, *, camera: Any, **kwargs: Any) -> PosePrediction:
        """Joints in mm from both branches of every stage; see :func:`model.prediction.predict` (``M`` None =
        the un-augmented crop matrix of (centre, cube); ``camera`` is the data set's, always given by the caller)."""
        return predict(self, depth, center_xyz, cube, M, camera=camera, **kwargs)

    def load_official_state(self, state: Mapping[str, Any] | str | Path) -> None:
        """Load a DSF checkpoint strictly: a checkpoint file (read with ``weights_only=True``), a state dict, or the
        official ``{"model": state_dict, "optimizer": ..., "epoch": ...}`` content; a ``module.`` prefix
        (DataParallel) is stripped.

        Raises:
            FileNotFoundError: a path that does not exist.
            model.checkpoint.CheckpointError (a ValueError): an unreadable file, or keys / shapes that differ from
                this network (the message lists the missing, unexpected and mis-shaped keys).
        """
        if isinstance(state, (str, Path)):
            source, state = str(state), load_pose_checkpoint(state)
        else:
            source, state = "pose network state", unwrap_pose_state(state, source="pose network state")
        expected = f"the {self.stage_num}-stage DSF pose network (width {self.width:g}, {self.joint_num} joints)"
        check_state_dict(self, state, source=source, expected=expected)
        self.load_state_dict(state, strict=True)


_POSE_EXPECTED = "a DSF pose checkpoint ({'model': state_dict, ...} or a plain state dict)"


def unwrap_pose_state(obj: Any, *, source: str) -> dict[str, torch.Tensor]:
    """The network state dict of a DSF checkpoint object: ``obj["model"]`` when present, else ``obj`` itself;
    keys lose a ``module.`` (DataParallel) prefix. ``source`` names the origin in errors."""
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    state = as_state_dict(obj, source=source, expected=_POSE_EXPECTED)
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_pose_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a DSF pose checkpoint file (``weights_only=True``) and return its network state dict.

    Accepts the official / our trainer's ``{"model": state_dict, "optimizer": ..., "epoch": ...}`` and a plain state
    dict; strips ``module.``. Key matching against a network is :meth:`PoseNet.load_official_state`'s job.

    Raises:
        FileNotFoundError: no such file.
        model.checkpoint.CheckpointError (a ValueError): not a readable checkpoint, or no state dict of tensors in it.
    """
    raw = read_checkpoint(path, expected=_POSE_EXPECTED, map_location=map_location)
    return unwrap_pose_state(raw, source=str(path))


def _layout_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last when ``x`` is stored channels-last (and not also plain contiguous), else contiguous."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def init_pose_net_weights(net: nn.Module) -> None:
    """Official initialisation (docs/method.md §7).

    Conv2d: normal(0, sqrt(2 / (k_h k_w out))), biases keep PyTorch defaults; BatchNorm: weight 1, bias 0;
    ConvTranspose2d: normal(0, 0.001); Linear: weight normal(0, 0.001), bias PyTorch default;
    the 1x1 ``finals`` convs: weight normal(0, 0.001), bias 0.
    """
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            n = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.ConvTranspose2d):
            nn.init.normal_(module.weight, 0.0, 0.001)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.001)
    for suffix in _SUFFIXES:
        heads = getattr(net, f"finals{suffix}", None)
        for conv in heads if heads is not None else ():
            nn.init.normal_(conv.weight, 0.0, 0.001)
            nn.init.zeros_(conv.bias)


def build_pose_net(stage_num: int = 2, joint_num: int = 21, *, width: float = 1.0,
                   offset_kernel: float = OFFSET_KERNEL) -> PoseNet:
    """The DSF pose network on the CPU with the official initialisation (no MANO file, renderer or data needed)."""
    return PoseNet(stage_num=stage_num, joint_num=joint_num, width=width, offset_kernel=offset_kernel)


def stage_parameters(net: PoseNet, stage: int) -> list[nn.Parameter]:
    """Parameters of stage 1 (stem + trunk + heads) or stage 2 (fusion + second trunk + heads)."""
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    out = []
    for name, p in net.named_parameters():
        top = name.split(".")[0]
        in_stage2 = top == "fusion" or top.endswith("_s2")
        if in_stage2 == (stage == 2):
            out.append(p)
    return out


__all__ = ["PoseNet", "PoseNetOutput", "StageOutput", "PredictionRenderer", "build_pose_net",
           "init_pose_net_weights", "stage_parameters", "load_pose_checkpoint", "unwrap_pose_state"]
