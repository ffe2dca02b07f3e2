"""Pose prior of the procedural stand-in hand (internal to ``render.standin``).

A deterministic set of 1554 synthetic finger poses drawn from a few grasp archetypes, and its PCA: the
``hands_mean``, ``hands_components`` and ``hands_coeffs`` entries of the MANO v1.2 container.
"""
from __future__ import annotations

import numpy as np

from render.standin.geometry import FINGERS, THUMB_DIR, _finger_frame, _unit


# ---------------------------------------------------------------------------------------------- pose prior
NUM_POSES = 1554


def _joint_axes() -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per finger joint: (flexion, spread, twist) unit axes in the rest frame (MANO poses are rest-frame)."""
    axes = {}
    for f in FINGERS:
        d, up, side = _finger_frame(f)
        for j in f.joints:
            axes[j] = (side, up, d)  # +angle about `side` bends the finger towards -y (the palm)
    bend = np.array([0.0, -0.75, -0.55])
    bend = _unit(bend - np.dot(bend, THUMB_DIR) * THUMB_DIR)  # thumb bends towards the palm and the pinky
    flex = np.cross(THUMB_DIR, bend)
    for j in (13, 14, 15):
        axes[j] = (flex, np.array([0.0, -1.0, 0.0]), THUMB_DIR)  # spread: towards the index finger
    return axes


#: pose archetypes: probability, per-finger curl range (index, middle, ring, pinky), thumb curl range
_ARCHETYPES = {
    "open": (0.16, (0.0, 0.0, 0.0, 0.0), (0.25, 0.25, 0.25, 0.25), (0.0, 0.3)),
    "relaxed": (0.20, (0.15, 0.2, 0.25, 0.3), (0.45, 0.5, 0.55, 0.6), (0.2, 0.5)),
    "fist": (0.14, (0.8, 0.8, 0.8, 0.8), (1.0, 1.0, 1.0, 1.0), (0.6, 1.0)),
    "point": (0.10, (0.0, 0.75, 0.75, 0.75), (0.15, 1.0, 1.0, 1.0), (0.5, 0.9)),
    "pinch": (0.14, (0.35, 0.2, 0.1, 0.1), (0.6, 0.7, 0.8, 0.8), (0.5, 0.8)),
    "grasp": (0.14, (0.45, 0.45, 0.45, 0.45), (0.7, 0.7, 0.7, 0.7), (0.4, 0.7)),
    "random": (0.12, (0.0, 0.0, 0.0, 0.0), (1.0, 1.0, 1.0, 1.0), (0.0, 1.0)),
}
_SPREAD_GAIN = (0.15, 0.03, -0.10, -0.22)  # abduction of index, middle, ring, pinky per unit spread (rad)


def _sample_poses(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 45) axis-angle poses of joints 1..15 drawn from :data:`_ARCHETYPES` (curl in [0, 1] per finger)."""
    axes = _joint_axes()
    table = list(_ARCHETYPES.values())
    kinds = rng.choice(len(table), size=n, p=[t[0] for t in table])
    lo, hi, thumb = (np.array([t[i] for t in table]) for i in (1, 2, 3))
    curl = rng.uniform(lo[kinds], hi[kinds])                     # (n, 4) per finger, FINGERS order
    ct = rng.uniform(thumb[kinds, 0], thumb[kinds, 1])           # (n,)
    spread = rng.uniform(-0.3, 1.0, n)
    poses = np.zeros((n, 16, 3))
    for fi, f in enumerate(FINGERS):
        c = curl[:, fi]
        mcp = 1.35 * c + rng.normal(0, 0.07, n)
        pip = 1.6 * c + rng.normal(0, 0.07, n)
        dip = 0.7 * pip + rng.normal(0, 0.05, n)                 # DIP follows PIP (tendon coupling)
        spr = _SPREAD_GAIN[fi] * spread * (1 - c) + rng.normal(0, 0.03, n)
        for j, flex, spr_j in zip(f.joints, (mcp, pip, dip), (spr, 0 * spr, 0 * spr)):
            a_flex, a_spr, a_tw = axes[j]
            poses[:, j] = (np.maximum(flex, -0.2)[:, None] * a_flex + spr_j[:, None] * a_spr
                           + rng.normal(0, 0.03, n)[:, None] * a_tw)
    a_flex, a_spr, a_tw = axes[13]
    poses[:, 13] = ((0.45 * ct + rng.normal(0, 0.08, n))[:, None] * a_flex   # opposition towards the palm
                    + (0.3 * ct + rng.normal(0, 0.05, n))[:, None] * a_spr      # adduction towards the index
                    + (0.25 * ct + rng.normal(0, 0.05, n))[:, None] * a_tw)     # pronation
    poses[:, 14] = np.maximum(0.4 * ct + rng.normal(0, 0.07, n), -0.2)[:, None] * a_flex
    poses[:, 15] = np.maximum(0.7 * ct + rng.normal(0, 0.08, n), -0.2)[:, None] * a_flex
    poses = poses[:, 1:].reshape(n, 45)
    return poses + rng.normal(0, 0.02, poses.shape)  # keeps all 45 PCA directions populated


def _pose_prior() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hands_mean (45,), hands_components (45, 45; rows orthogonal, norm = std), hands_coeffs (1554, 45)."""
    poses = _sample_poses(NUM_POSES, np.random.default_rng(1554))
    mean = poses.mean(0)
    centred = poses - mean
    var, vecs = np.linalg.eigh(centred.T @ centred / (NUM_POSES - 1))
    vt = vecs[:, ::-1].T                                                 # rows, decreasing variance
    vt *= np.sign(vt[np.arange(45), np.abs(vt).argmax(1)])[:, None]      # deterministic sign
    std = np.sqrt(var[::-1])
    comps = std[:, None] * vt
    coeffs = centred @ vt.T / std
    return mean, comps, coeffs
