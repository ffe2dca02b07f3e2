"""The 36 NYU joints placed on a MANO hand (stand-in NYU labels and the NYU-order labels of synthetic
batches).

21 of the 36 are MANO joints (``util.joints.NYU36_TO_MANO21``); the other 15 are defined here once, from the
MANO joints of the posed hand (which the layer regresses from the posed mesh, so they stay on the mesh
consistently):

- fingers: ``KNU2_A`` = midpoint of PIP and DIP, ``KNU1_A`` = midpoint of MCP and PIP (phalanx midpoints,
  docs/formats.md §3.8); thumb ``TH_KNU2_A`` = midpoint of IP and MCP, ``TH_KNU1_B`` = midpoint of CMC and wrist;
- palm: ``PALM_2`` = the MANO wrist (as in ``NYU36_TO_MANO21``); ``PALM_1`` = the wrist moved towards the
  pinky side by ``WRIST_SPREAD`` times the wrist -> middle-MCP length (real NYU: PALM_1 / PALM_2 lie 31 mm
  apart, PALM_1 nearer the pinky; a bit less here so that PALM_1 stays inside the wrist); ``PALM_3`` =
  ``PALM3_FRACTION`` of the way from the wrist to the mean of the four finger MCPs (real NYU: ~72 mm from both
  wrist points); ``PALM_4..6`` = midpoints wrist-index MCP, wrist-pinky MCP, wrist-thumb CMC (their real
  semantics are unknown; they are not evaluated).
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch

from util.joints import NYU36_TO_MANO21

Array = Union[np.ndarray, torch.Tensor]

#: lateral offset of PALM_1 from the wrist, as a fraction of the wrist -> middle-MCP length (~18 mm for a
#: 90 mm palm; real NYU has 31 mm, but that would put PALM_1 outside the wrist of MANO-like meshes)
WRIST_SPREAD = 0.2
#: PALM_3 position along wrist -> mean finger MCP
PALM3_FRACTION = 0.78

#: MANO joint ids (docs/method.md §2.5) that define the hand axes and the palm joints
MANO_WRIST, MANO_INDEX_MCP, MANO_MIDDLE_MCP, MANO_PINKY_MCP, MANO_RING_MCP = 0, 1, 4, 7, 10
# (NYU id, MANO a, MANO b): NYU joint = midpoint of MANO joints a and b
_MIDPOINTS = (
    (2, 8, 9), (4, 7, 8),      # F1 pinky: KNU2_A (PIP-DIP), KNU1_A (MCP-PIP)
    (8, 11, 12), (10, 10, 11),  # F2 ring
    (14, 5, 6), (16, 4, 5),    # F3 middle
    (20, 2, 3), (22, 1, 2),    # F4 index
    (26, 15, 14), (29, 13, 0),  # thumb: KNU2_A (IP-MCP), KNU1_B (CMC-wrist)
    (33, 0, 1), (34, 0, 7), (35, 0, 13),  # PALM_4..6
)


def _dot(a: Array, b: Array) -> Array:
    """Inner product over the last axis, kept as a size-1 axis."""
    return (a * b).sum(-1, keepdim=True) if isinstance(a, torch.Tensor) else (a * b).sum(-1, keepdims=True)


def _normalize(v: Array) -> Array:
    n = _dot(v, v) ** 0.5
    return v / (n.clamp_min(1e-12) if isinstance(n, torch.Tensor) else np.maximum(n, 1e-12))


def hand_axes(joints21: Array) -> tuple[Array, Array]:
    """Unit axes of the posed hand from (..., 21, 3) MANO-order joints (numpy or torch, any unit / frame).

    Returns ``(f, l)``, each (..., 3): ``f`` the finger direction wrist -> middle MCP; ``l`` the lateral
    direction pinky MCP -> index MCP (towards the thumb side) made orthogonal to ``f`` (Gram-Schmidt).
    """
    j = joints21
    f = _normalize(j[..., MANO_MIDDLE_MCP, :] - j[..., MANO_WRIST, :])
    lat = j[..., MANO_INDEX_MCP, :] - j[..., MANO_PINKY_MCP, :]
    return f, _normalize(lat - _dot(lat, f) * f)


def nyu36_from_mano21(joints21: Array) -> Array:
    """(..., 21, 3) MANO-order joints -> (..., 36, 3) NYU-order joints (any unit or frame; numpy or torch)."""
    is_torch = isinstance(joints21, torch.Tensor)
    j = joints21
    out = (torch.zeros(j.shape[:-2] + (36, 3), dtype=j.dtype, device=j.device) if is_torch
           else np.zeros(j.shape[:-2] + (36, 3), dtype=np.result_type(j.dtype, np.float32)))
    out[..., list(NYU36_TO_MANO21), :] = j
    for nyu, a, b in _MIDPOINTS:
        out[..., nyu, :] = 0.5 * (j[..., a, :] + j[..., b, :])
    wrist = j[..., MANO_WRIST, :]
    forward = j[..., MANO_MIDDLE_MCP, :] - wrist
    length = _dot(forward, forward) ** 0.5
    _, thumb_side = hand_axes(j)
    out[..., 30, :] = wrist - WRIST_SPREAD * length * thumb_side  # PALM_1: towards the pinky (ulnar)
    mcp_mean = (j[..., MANO_INDEX_MCP, :] + j[..., MANO_MIDDLE_MCP, :] + j[..., MANO_RING_MCP, :]
                + j[..., MANO_PINKY_MCP, :]) / 4.0
    out[..., 32, :] = wrist + PALM3_FRACTION * (mcp_mean - wrist)
    return out
