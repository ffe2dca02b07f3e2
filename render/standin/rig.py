"""Rigging of the procedural stand-in hand (internal to ``render.standin``).

Skinning weights, the dense joint regressor and the 20 shape blend shapes, all in the natural vertex order of
``render.standin.mesh`` (renumbered to MANO ids by ``render.standin``).
"""
from __future__ import annotations

import numpy as np

from render.mano_format import NUM_JOINTS, NUM_VERTS
from render.standin.geometry import BLEND, FINGERS, JOINT_HALF_GAP, MM, PALM_TAIL, _palm_section, _unit
from render.standin.mesh import _Layout


# ---------------------------------------------------------------------------------------------- skinning
def _ramp(x):
    return np.clip(x, 0.0, 1.0)


def _weights_and_regressor(layout: _Layout):
    """Skinning weights (778, 16) and dense joint regressor (16, 778), natural vertex order."""
    m = layout.mesh
    chain, ell = np.asarray(m.chain), np.asarray(m.ell)
    w = np.zeros((NUM_VERTS, NUM_JOINTS))
    w[chain < 0, 0] = 1.0
    reg = np.zeros((NUM_JOINTS, NUM_VERTS))
    reg[0, layout.wrist + layout.row1] = 1.0
    h = JOINT_HALF_GAP
    chains = [(fi, f.joints, (0.0, f.lengths[0], f.lengths[0] + f.lengths[1]), layout.fingers[fi],
               layout.finger_ells[fi]) for fi, f in enumerate(FINGERS)]
    t_m, t_i = layout.thumb_joints_t
    chains.append((4, (13, 14, 15), (0.0, t_m, t_i), layout.thumb, layout.thumb_ts))
    for ci, joints, at, rings, ells in chains:
        sel = chain == ci
        e = ell[sel]
        # t_k = share of the vertex that follows joint k or its descendants (linear across +-BLEND)
        t1 = _ramp(e / (10 * MM)) if ci == 4 else _ramp((e - at[0] + BLEND) / (2 * BLEND))
        t2 = _ramp((e - at[1] + BLEND) / (2 * BLEND))
        t3 = _ramp((e - at[2] + BLEND) / (2 * BLEND))
        w[np.flatnonzero(sel)[:, None], [0, *joints]] = np.stack([1 - t1, t1 - t2, t2 - t3, t3], -1)
        for k, (j, a) in enumerate(zip(joints, at)):
            if ci == 4 and k == 0:
                reg[j, layout.window] = 1.0     # thumb CMC: centre of the palm window it leaves from
                continue
            for target in (a - h, a + h):
                ri = int(np.argmin(np.abs(np.asarray(ells) - target)))
                if abs(ells[ri] - target) > 1e-9:
                    raise RuntimeError(f"no ring at {target} m for joint {j}")
                reg[j, rings[ri]] = 1.0
    reg /= reg.sum(1, keepdims=True)
    return w, reg


def _shape_fields(layout: _Layout, wrist: np.ndarray) -> np.ndarray:
    """20 smooth blend shapes (778, 3, 20) in metres per unit beta, natural vertex order.

    0 scale about the wrist, 1 finger length, 2 palm width, 3 finger thickness, 4 palm thickness, 5..19 smooth
    random fields (1 mm, then 0.5 mm amplitude).
    """
    m = layout.mesh
    pos, chain, ell = np.asarray(m.pos), np.asarray(m.chain), np.asarray(m.ell)
    centre, axis = np.asarray(m.center), np.asarray(m.axis)
    out = np.zeros((NUM_VERTS, 3, 20))
    out[:, :, 0] = 0.03 * (pos - wrist)
    limb = chain >= 0
    out[limb, :, 1] = 0.05 * np.maximum(ell[limb], 0.0)[:, None] * axis[limb]
    # palm width: palm vertices spread in z; fingers move with their base (ramp over the first 10 mm)
    base_z = np.array([f.mcp[2] for f in FINGERS] + [pos[layout.window, 2].mean()])
    ramp = np.where(chain == 4, _ramp(ell / (10 * MM)), _ramp((ell + PALM_TAIL) / (10 * MM)))
    z_ref = np.where(limb, (1 - ramp) * pos[:, 2] + ramp * base_z[np.maximum(chain, 0)], pos[:, 2])
    out[:, 2, 2] = 0.06 * (z_ref - _palm_section(0.5)[1])
    # thickness: radial about the finger axis (zero at the base ring / window), palm in y
    fade = np.where(chain == 4, _ramp(ell / (8 * MM)), _ramp((ell + PALM_TAIL) / PALM_TAIL))
    fade = np.where(limb, fade, 0.0)
    out[:, :, 3] = 0.12 * fade[:, None] * (pos - centre)
    out[:, 1, 4] = 0.08 * (1 - fade) * (pos[:, 1] - centre[:, 1])
    rng = np.random.default_rng(20240607)
    for k in range(5, 20):
        amp = 1.0 * MM if k < 10 else 0.5 * MM
        for _ in range(3):
            direction = _unit(rng.normal(size=3))
            omega = _unit(rng.normal(size=3)) * 2 * np.pi / rng.uniform(0.12, 0.30)
            out[:, :, k] += amp / 3 * np.sin(pos @ omega + rng.uniform(0, 2 * np.pi))[:, None] * direction
    return out
