"""Shape parameters and surface rings of the procedural stand-in hand (internal to ``render.standin``).

Metres, rest pose = flat right hand: fingers along -x, index on +z, pinky on -z, thumb on the +z/+x side
slightly towards -y; y is the palm normal, the palm faces -y and finger flexion is a positive rotation about
~+z. This module holds the tuned dimensions (rings, palm rows, thumb window, finger table) and the pure
functions that place vertex rings: finger rings and caps, the palm grid morphing into the knuckle ring, and
the thumb tube leaving the palm window. ``render.standin.mesh`` joins them into one triangulated disk.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MM = 1e-3
RING_N = 8                 # vertices per finger ring (multiple of 4: dorsal, sides, palmar)
THUMB_N = 10               # thumb ring = boundary of a 3 (around) x 2 (along) quad window of the palm grid
PALM_N = 4 * RING_N - 6    # knuckle ring: four finger base rings minus the 6 web-side vertices
WRIST_N = 16
# palm rows (fraction of the way from the wrist ring to the knuckle ring); row 1 takes the leftover count
PALM_ROWS = (0.0, 0.09, 0.2, 0.32, 0.44, 0.57, 0.7, 0.84)
WINDOW_ROWS, WINDOW_COLS = (2, 3, 4), (0, 1, 2, 3)
JOINT_HALF_GAP = 2.5 * MM  # the two rings regressing a joint sit at +-2.5 mm
MAX_GAP = 9.0 * MM         # longest distance between neighbouring finger rings
THUMB_MAX_GAP = 8.0 * MM
BLEND = 4.0 * MM           # skinning: linear blend with the parent joint within +-4 mm of a joint
WRIST_X = 0.100
PALM_TAIL = 6.0 * MM       # finger base ring sits this far proximal of the MCP joint


@dataclass(frozen=True)
class _Finger:
    joints: tuple[int, int, int]          # MANO ids of MCP, PIP, DIP
    mcp: tuple[float, float, float]       # MCP joint (m)
    yaw_deg: float                        # fan angle towards +z
    lengths: tuple[float, float, float]   # MCP->PIP, PIP->DIP, DIP->tip (m)
    radius: float                         # horizontal radius of the proximal phalanx (m)
    tips: tuple[int, int, int]            # reserved vertex ids: apex, two vertices of the last cap ring


# ordered from +z to -z (index, middle, ring, pinky): the knuckle ring walks them in this order
FINGERS = (
    _Finger((1, 2, 3), (0.004, 0.0, 0.033), 6.0, (0.038, 0.023, 0.020), 0.0090, (333, 317, 320)),
    _Finger((4, 5, 6), (-0.002, 0.0, 0.011), 1.0, (0.041, 0.025, 0.021), 0.0093, (444, 443, 445)),
    _Finger((10, 11, 12), (0.002, 0.0, -0.010), -4.0, (0.039, 0.024, 0.020), 0.0088, (555, 554, 556)),
    _Finger((7, 8, 9), (0.012, 0.0, -0.029), -10.0, (0.030, 0.018, 0.018), 0.0077, (672, 671, 673)),
)
THUMB_MCP = np.array([0.047, -0.016, 0.052])
THUMB_DIR = np.array([-0.72, -0.12, 0.68]) / np.linalg.norm([-0.72, -0.12, 0.68])
THUMB_LENGTHS = (0.029, 0.026)            # MCP->IP, IP->tip
THUMB_TIPS = (744, 745)
PALM_IDS = (95, 22)                       # a palmar and a dorsal mid-palm vertex


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _ring_positions(required: list[float], end: float, max_gap: float) -> list[float]:
    """Sorted ring coordinates: the required ones plus evenly spaced fillers so no gap exceeds max_gap."""
    pts = sorted(required + [end])
    out = [pts[0]]
    for a, b in zip(pts[:-1], pts[1:]):
        k = math.ceil((b - a) / max_gap - 1e-9)
        out += [a + (b - a) * i / k for i in range(1, k + 1)]
    return out


def _finger_frame(f: _Finger):
    yaw = math.radians(f.yaw_deg)
    d = np.array([-math.cos(yaw), 0.0, math.sin(yaw)])    # finger direction, fanned towards +z by yaw
    up = np.array([0.0, 1.0, 0.0])                        # dorsal
    side = np.cross(up, d)                                # ~ +z; also the flexion axis
    return d, up, side


def _finger_profile(f: _Finger, ell):
    """Horizontal and vertical ring radii (m) at axial coordinate ell (m)."""
    l1, l2, l3 = f.lengths
    knots = [-PALM_TAIL, 0.0, l1, l1 + l2, l1 + l2 + l3]
    rz = f.radius * np.interp(ell, knots, [1.06, 1.0, 0.93, 0.86, 0.80])
    ry = rz * np.interp(ell, knots, [1.22, 0.93, 0.88, 0.85, 0.85])
    return rz, ry


def _finger_ring(f: _Finger, ell: float, scale: float = 1.0) -> np.ndarray:
    d, up, side = _finger_frame(f)
    rz, ry = _finger_profile(f, ell)
    phi = 2 * np.pi * np.arange(RING_N) / RING_N          # k=0 dorsal, RING_N/4 -> +z side, RING_N/2 palmar
    c = np.asarray(f.mcp) + ell * d
    return c + scale * (ry * np.cos(phi)[:, None] * up + rz * np.sin(phi)[:, None] * side)


def _knuckle_ring_spec() -> list[tuple[int, int]]:
    """(finger, ring index) of the 26 knuckle-ring vertices: +z side -> palmar -> -z side -> dorsal."""
    q = RING_N // 4
    a, b, c, d = range(4)
    spec = [(a, k) for k in range(q, 3 * q)]                                   # index: +z side .. palmar
    for fi in (b, c):
        spec += [(fi, k) for k in range(q + 1, 3 * q)]                         # palmar, skipping web sides
    spec += [(d, k % RING_N) for k in range(q + 1, RING_N + q)]                # pinky: palmar, side, dorsal
    for fi in (c, b):
        spec += [(fi, k % RING_N) for k in range(3 * q + 1, RING_N + q)]       # dorsal
    spec += [(a, k % RING_N) for k in range(3 * q + 1, RING_N + q)]
    assert len(spec) == PALM_N
    return spec


def _palm_section(s: float):
    """Palm cross-section at row fraction s: centre (y, z), half extents (y, z)."""
    ay = np.interp(s, [0.0, 0.5, 1.0], [0.017, 0.0145, 0.0110])
    az = np.interp(s, [0.0, 0.5, 1.0], [0.0285, 0.0365, 0.0400])
    return 0.0, np.interp(s, [0.0, 1.0], [0.002, 0.0027]), ay, az


def _superellipse(theta, s):
    yc, zc, ay, az = _palm_section(s)
    e = 0.55  # < 1: rounded rectangle
    c, sn = np.cos(theta), np.sin(theta)
    return yc + ay * np.sign(sn) * np.abs(sn) ** e, zc + az * np.sign(c) * np.abs(c) ** e


CAP_ANGLES_DEG = (50.0,)   # latitude of the rings on the hemispherical finger/thumb caps


def _bezier(p0, p1, p2, p3, u):
    u = np.asarray(u)[:, None]
    pts = (1 - u) ** 3 * p0 + 3 * (1 - u) ** 2 * u * p1 + 3 * (1 - u) * u ** 2 * p2 + u ** 3 * p3
    tan = 3 * (1 - u) ** 2 * (p1 - p0) + 6 * (1 - u) * u * (p2 - p1) + 3 * u ** 2 * (p3 - p2)
    return pts, _unit(tan)


def _finger_rings(f: _Finger):
    """Ring list [(ell, positions (8,3))] from the base ring to the cap, plus the apex position."""
    d = _finger_frame(f)[0]
    l1, l2, l3 = f.lengths
    h, total = JOINT_HALF_GAP, sum(f.lengths)
    r_tip = _finger_profile(f, total)[0]
    ell_c = total - r_tip
    req = [-PALM_TAIL, -h, h, l1 - h, l1 + h, l1 + l2 - h, l1 + l2 + h]
    rings = [(e, _finger_ring(f, e)) for e in _ring_positions(req, ell_c, MAX_GAP)]
    for a in np.radians(CAP_ANGLES_DEG):
        ring = _finger_ring(f, ell_c, scale=math.cos(a)) + r_tip * math.sin(a) * d
        rings.append((ell_c + r_tip * math.sin(a), ring))
    return rings, np.asarray(f.mcp) + total * d


def _arc_theta(frac, s: float):
    """Superellipse angle at arc-length fraction ``frac`` of the palm section (walking +z -> palmar -> -z)."""
    th = np.linspace(0.0, -2 * np.pi, 2049)
    y, z = _superellipse(th, s)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(y), np.diff(z)))])
    return np.interp(frac, arc / arc[-1], th)


def _palm_grid(knuckle: np.ndarray):
    """Positions (rows 2.. of PALM_ROWS, PALM_N, 3) and the column parameters (arc fraction in [0, 1)).

    Lower rows have equally spaced columns; towards the knuckles each column slides to the arc fraction of
    its knuckle-ring vertex and the section morphs into the knuckle ring itself.
    """
    seg = np.hypot(*np.diff(np.vstack([knuckle[:, 1:], knuckle[:1, 1:]]), axis=0).T)
    f_k = np.concatenate([[0.0], np.cumsum(seg)[:-1]]) / seg.sum()
    f_u = np.arange(PALM_N) / PALM_N
    rows = []
    for s in PALM_ROWS[2:]:
        w_f = _smoothstep((s - 0.45) / 0.55)
        y, z = _superellipse(_arc_theta((1 - w_f) * f_u + w_f * f_k, s), s)
        w = _smoothstep((s - 0.6) / 0.4)
        x = WRIST_X + s * (knuckle[:, 0] - WRIST_X)
        rows.append(np.stack([x, (1 - w) * y + w * knuckle[:, 1], (1 - w) * z + w * knuckle[:, 2]], -1))
    return np.stack(rows), f_u


def _uniform_palm_ring(n: int, s: float, x: float):
    f = np.arange(n) / n
    y, z = _superellipse(_arc_theta(f, s), s)
    return np.stack([np.full(n, x), y, z], -1), f


def _thumb_rings(window: np.ndarray, palm_axis_point: np.ndarray):
    """Thumb rings [(t, positions (10,3), centre, tangent)] leaving the palm window; apex; t of MCP, IP, apex.

    t = arc length along the thumb axis from the window centre (the CMC joint), metres.
    """
    p0 = window.mean(0)
    along = window[8] - window[0] + window[5] - window[3]   # window loop: 0-3 first row, 5-8 last row
    n = _unit(np.cross(along, window[3] - window[0] + window[5] - window[8]))
    if np.dot(n, p0 - palm_axis_point) < 0:
        n = -n
    h = 0.4 * np.linalg.norm(THUMB_MCP - p0)
    bez = (p0, p0 + h * n, THUMB_MCP - h * THUMB_DIR, THUMB_MCP)
    u = np.linspace(0.0, 1.0, 4001)
    pts, _ = _bezier(*bez, u)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    t_m = arc[-1]
    t_i = t_m + THUMB_LENGTHS[0]
    total = t_i + THUMB_LENGTHS[1]

    def radius(t):
        return np.interp(t, [0.0, t_m, t_i, total], [0.0115, 0.0105, 0.0093, 0.0085])

    def path(t):
        if t <= t_m:
            p, tan = _bezier(*bez, [np.interp(t, arc, u)])
            return p[0], tan[0]
        return THUMB_MCP + (t - t_m) * THUMB_DIR, THUMB_DIR

    hg = JOINT_HALF_GAP
    t_c = total - radius(total)
    ts = _ring_positions([0.0, t_m - hg, t_m + hg, t_i - hg, t_i + hg], t_c, THUMB_MAX_GAP)[1:]
    # ring angles: start from the window vertices' directions, become uniform after three rings
    tan1 = path(ts[0])[1]
    e1 = _unit(window[0] - p0 - np.dot(window[0] - p0, tan1) * tan1)
    e2 = np.cross(tan1, e1)
    phi = np.unwrap(np.arctan2((window - p0) @ e2, (window - p0) @ e1))
    sgn = np.sign(phi[1] - phi[0])
    step = sgn * 2 * np.pi * np.arange(THUMB_N) / THUMB_N
    mean_off = np.angle(np.exp(1j * (phi - step)).mean())
    phi_u = mean_off + step
    rings = []
    for k, t in enumerate(ts):
        c, tan = path(t)
        e1 = _unit(e1 - np.dot(e1, tan) * tan)
        e2 = np.cross(tan, e1)
        a = min(1.0, (k + 1) / 3.0)
        ph = (1 - a) * phi + a * phi_u
        rings.append((t, c + radius(t) * (np.cos(ph)[:, None] * e1 + np.sin(ph)[:, None] * e2), c, tan))
    c, tan = path(t_c)
    r_tip = radius(total)
    for a in np.radians(CAP_ANGLES_DEG):
        ring = c + r_tip * (math.cos(a) * (np.cos(phi_u)[:, None] * e1 + np.sin(phi_u)[:, None] * e2)
                            + math.sin(a) * tan)
        rings.append((t_c + r_tip * math.sin(a), ring, c + r_tip * math.sin(a) * tan, tan))
    apex = c + r_tip * tan
    return rings, apex, t_m, t_i, total
