"""A Kinect-1-like sensor model for clean rendered depth (the stand-in NYU frames, docs/formats.md §3.8).

Numpy/OpenCV, one frame (or one window of a frame) at a time, depth in mm with 0 = no surface.
Effects, in order:

1. edge dilation: near surfaces bleed one pixel into a farther neighbour (probability ``dilate_prob``);
2. axial noise growing with depth: sigma = ``noise_a + noise_b * z^2`` mm (~1.5 mm at 0.8 m);
3. disparity quantisation: z = fb / d with d rounded to ``1 / subpixel`` px (steps ~2 mm at 0.8 m,
   ~4 mm at 1.2 m);
4. missing pixels at depth discontinuities: a random part of the pixels next to an edge (more on its far side
   than on the object's own rim), plus the projector shadow (background pixels left of an occluder within
   ``fb (1/z_near - 1/z_far)`` px; the projector sits to the right);
5. random holes (small discs on surfaces) and sparse speckle dropouts;
6. everything missing or beyond ``max_depth`` becomes ``invalid`` (2001, like real NYU frames, docs/formats.md §6).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

_KERNEL3 = np.ones((3, 3), np.uint8)
_NONE = np.float32(1e9)  # stands for "no surface" in min filters


@dataclass(frozen=True)
class SensorModel:
    """Parameters of :func:`apply_sensor` (mm and pixels)."""

    noise_a: float = 0.5
    noise_b: float = 1.5e-6
    fb: float = 580.0 * 75.0  # focal length (px) x projector baseline (mm)
    subpixel: int = 8
    edge_threshold: float = 30.0  # a 3x3 neighbour this much nearer / farther marks a discontinuity
    edge_drop_prob: float = 0.5  # far side of a discontinuity (the background next to an object's rim)
    edge_drop_near: float = 0.15  # near side (the object's own rim)
    shadow: bool = True
    dilate_prob: float = 0.5
    holes: tuple[int, int] = (0, 3)  # number of holes per frame (inclusive range)
    hole_radius: tuple[float, float] = (1.5, 4.5)
    speckle_prob: float = 0.002
    max_depth: float = 2000.0
    invalid: float = 2001.0


def quantize(z: np.ndarray, model: SensorModel) -> np.ndarray:
    """Disparity quantisation of depth (mm): z -> fb / d with d rounded to 1/subpixel px; z <= 0 is kept."""
    z = np.asarray(z, np.float32)
    k = np.float32(model.fb * model.subpixel)
    q = np.maximum(z, np.float32(1.0))
    np.divide(k, q, out=q)  # disparity in 1/subpixel units
    np.round(q, out=q)
    np.maximum(q, np.float32(1.0), out=q)
    np.divide(k, q, out=q)
    return np.where(z > 0, q, z)


def finish(z: np.ndarray, bad: np.ndarray, model: SensorModel) -> np.ndarray:
    """Whole millimetres; ``bad``, non-positive or too far -> ``model.invalid``."""
    out = np.round(z).astype(np.float32)
    out[bad | (out > model.max_depth) | (out <= 0)] = model.invalid
    return out


def shadow_mask(z: np.ndarray, fb: float, min_step: float) -> np.ndarray:
    """(H, W) bool: pixels in the projector shadow of the nearest occluding edge to their right (same row).

    An occluding edge is a pixel nearer than its left neighbour by more than ``min_step`` mm; pixel j left of
    such an edge e is shadowed when e - j <= fb (1/z_e - 1/z_j) and z_j > z_e + min_step.
    """
    H, W = z.shape
    far = np.where(z > 0, z, _NONE)
    edge = np.zeros((H, W), bool)
    edge[:, 1:] = far[:, 1:] < far[:, :-1] - min_step
    cols = np.broadcast_to(np.arange(W), (H, W))
    idx = np.where(edge, cols, W)
    nxt = np.minimum.accumulate(idx[:, ::-1], axis=1)[:, ::-1]  # nearest edge at or right of j
    z_e = np.take_along_axis(far, np.minimum(nxt, W - 1), axis=1)
    width = fb * (1.0 / z_e - 1.0 / far)
    return (nxt < W) & (z > 0) & (far > z_e + min_step) & ((nxt - cols) <= width)


def _disc(mask: np.ndarray, ci: int, cj: int, r: float) -> None:
    """Set a disc of radius r px around pixel (ci, cj) in ``mask`` (in place, bounding window only)."""
    H, W = mask.shape
    k = int(r) + 1
    i0, i1, j0, j1 = max(ci - k, 0), min(ci + k + 1, H), max(cj - k, 0), min(cj + k + 1, W)
    di = np.arange(i0, i1)[:, None] - ci
    dj = np.arange(j0, j1)[None, :] - cj
    mask[i0:i1, j0:j1] |= di * di + dj * dj <= r * r


def apply_sensor(depth: np.ndarray, model: SensorModel, rng: np.random.Generator) -> np.ndarray:
    """Degrade clean depth (H, W) mm (0 = no surface) like a Kinect.

    Returns (H, W) float32 whole mm, ``model.invalid`` where there is no measurement.
    """
    z = np.asarray(depth, np.float32)
    H, W = z.shape
    big = np.where(z > 0, z, _NONE)
    near = cv2.erode(big, _KERNEL3)  # 3x3 minimum
    bleed = (near < big - model.edge_threshold) & (rng.random((H, W), np.float32) < model.dilate_prob)
    z = np.where(bleed, near, z)
    valid = z > 0
    lo = cv2.erode(np.where(valid, z, _NONE), _KERNEL3)
    hi = cv2.dilate(z, _KERNEL3)
    u = rng.random((H, W), np.float32)
    far_side = (z - lo > model.edge_threshold) & (u < model.edge_drop_prob)
    near_side = (hi - z > model.edge_threshold) & (u < model.edge_drop_near)
    drop = (far_side | near_side) & valid
    if model.shadow:
        drop |= shadow_mask(z, model.fb, model.edge_threshold)

    sigma = model.noise_a + model.noise_b * z * z
    zq = quantize(np.where(valid, z + rng.standard_normal((H, W), np.float32) * sigma, z), model)

    cand = np.flatnonzero(valid)
    n_holes = int(rng.integers(model.holes[0], model.holes[1] + 1))
    if n_holes and cand.size:
        for c in rng.choice(cand, n_holes):
            _disc(drop, *divmod(int(c), W), float(rng.uniform(*model.hole_radius)))
    drop |= rng.random((H, W), np.float32) < model.speckle_prob
    return finish(zq, ~valid | drop, model)


def apply_sensor_roi(depth: np.ndarray, boxes: Sequence[tuple[int, int, int, int]], model: SensorModel,
                     rng: np.random.Generator) -> np.ndarray:
    """:func:`apply_sensor` inside one window per frame, only quantisation outside (cheap full frames).

    Args:
        depth: (B, H, W) clean depth in mm (0 = no surface).
        boxes: B windows (i0, i1, j0, j1): rows i0:i1, columns j0:j1 (e.g. around the hand).
    Returns:
        (B, H, W) float32 mm as :func:`apply_sensor`.
    """
    z = np.asarray(depth, np.float32)
    out = finish(quantize(z, model), z <= 0, model)
    for b, (i0, i1, j0, j1) in enumerate(boxes):
        if i1 > i0 and j1 > j0:
            out[b, i0:i1, j0:j1] = apply_sensor(z[b, i0:i1, j0:j1], model, rng)
    return out
