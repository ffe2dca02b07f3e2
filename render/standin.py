"""Procedural stand-in for ``MANO_RIGHT.pkl`` (MANO v1.2 container, built from scratch, no MANO data).

``python -m render.standin --out PATH [--npz]`` writes a right-hand model that goes through the same
restricted reader as the licensed file (formats.md §1.1-1.2, §2): a protocol-2 pickle of a 13-key dict with
exactly the 7 globals of the real file, ``shapedirs`` as chumpy ``Select(Ch(778x3x20))``, ``J_regressor`` as
an old-style CSC state. Real chumpy (chumpy-fixed) also loads it.

Geometry (metres, rest pose = flat right hand): fingers along -x, index on +z, pinky on -z, thumb on the +z/+x
side slightly towards -y; y is the palm normal, the palm faces -y and finger flexion is a positive rotation
about ~+z. The mesh is one consistently oriented triangulated disk (V = 778, F = 1538) whose only boundary
is the wrist loop ``util.joints.WRIST_LOOP_VERTEX_IDS`` in that cyclic order: the fan
``(loop[i], loop[i+1], 778)`` closes it with outward normals, as in DSF. Construction: a palm tube of vertex
rings grows from the wrist ring to a "knuckle ring" made of the four finger base rings joined by small web
patches; the thumb tube leaves a 3x2-quad window cut out of the palm grid; every finger ends in a rounded cap
whose apex is the reserved fingertip vertex. Deterministic; float arrays are rounded to float32-representable
values so that the bytes do not depend on last-ulp differences of libm / LAPACK between machines.
"""
from __future__ import annotations

import argparse
import copyreg
import io
import math
import os
import pickle
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import sparse

from util.joints import FINGERTIP_VERTEX_IDS, MANO_PARENTS, WRIST_LOOP_VERTEX_IDS

MM = 1e-3
RING_N = 8                 # vertices per finger ring (multiple of 4: dorsal, sides, palmar)
THUMB_N = 10               # thumb ring = boundary of a 3 (around) x 2 (along) quad window of the palm grid
PALM_N = 4 * RING_N - 6    # knuckle ring: four finger base rings minus the 6 web-side vertices
WRIST_N = 16
NUM_VERTS, NUM_FACES, NUM_JOINTS = 778, 1538, 16
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
KEY_ORDER = ("hands_components", "f", "J_regressor", "kintree_table", "J", "bs_style", "hands_coeffs",
             "weights", "posedirs", "hands_mean", "v_template", "shapedirs", "bs_type")


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------- mesh builder
class _Mesh:
    """Vertices with per-vertex bookkeeping used later for skinning and shape fields."""

    def __init__(self) -> None:
        self.pos: list[np.ndarray] = []
        self.chain: list[int] = []        # -1 palm, 0..3 finger (FINGERS order), 4 thumb
        self.ell: list[float] = []        # axial coordinate along the chain (0 at MCP / CMC), m
        self.center: list[np.ndarray] = []  # point on the chain axis of the vertex's ring
        self.axis: list[np.ndarray] = []    # chain direction at that ring
        self.faces: list[tuple[int, int, int]] = []

    def add(self, p, chain=-1, ell=0.0, center=None, axis=None) -> int:
        self.pos.append(np.asarray(p, float))
        self.chain.append(chain)
        self.ell.append(ell)
        self.center.append(np.asarray(p if center is None else center, float))
        self.axis.append(np.zeros(3) if axis is None else np.asarray(axis, float))
        return len(self.pos) - 1

    def quads(self, a: list[int], b: list[int]) -> None:
        """Quad strip between two closed rings of equal size, vertex a[j] facing b[j]."""
        n = len(a)
        for j in range(n):
            k = (j + 1) % n
            self.faces += [(a[j], a[k], b[k]), (a[j], b[k], b[j])]

    def zipper(self, a: list[int], ua: np.ndarray, b: list[int], ub: np.ndarray) -> None:
        """Triangles between closed rings of any sizes; u* = increasing parameter in [0, 1), u[0] = 0."""
        m, n = len(a), len(b)
        ua, ub = np.append(ua, 1.0), np.append(ub, 1.0)
        i = j = 0
        while i < m or j < n:
            if j == n or (i < m and ua[i + 1] <= ub[j + 1]):
                self.faces.append((a[i], a[(i + 1) % m], b[j % n]))
                i += 1
            else:
                self.faces.append((a[i % m], b[(j + 1) % n], b[j]))
                j += 1

    def fan(self, ring: list[int], apex: int) -> None:
        n = len(ring)
        self.faces += [(ring[j], ring[(j + 1) % n], apex) for j in range(n)]


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


@dataclass
class _Layout:
    """Natural-order mesh plus the vertex groups the rest of the construction refers to."""

    mesh: _Mesh
    wrist: list[int]                    # row 0 (the boundary loop)
    row1: list[int]
    fingers: list[list[list[int]]]      # [finger][ring][k], ring 0 = base ring
    finger_ells: list[list[float]]
    apex: list[int]                     # index, middle, ring, pinky, thumb
    window: list[int]
    thumb: list[list[int]]
    thumb_ts: list[float]
    thumb_joints_t: tuple[float, float]  # path length of the thumb MCP and IP
    palm_marks: tuple[int, int]          # palmar / dorsal mid-palm vertex


def _window_cells() -> tuple[list[tuple[int, int]], set[tuple[int, int]]]:
    """(row, column) cells of the thumb window: boundary loop (10, cyclic) and interior (never created)."""
    (r0, *mid, r1), (c0, *_, c1) = WINDOW_ROWS, WINDOW_COLS
    loop = ([(r0, c) for c in WINDOW_COLS] + [(r, c1) for r in (*mid, r1)]
            + [(r1, c) for c in WINDOW_COLS[-2::-1]] + [(r, c0) for r in mid[::-1]])
    interior = {(r, c) for r in mid for c in WINDOW_COLS[1:-1]}
    return loop, interior


def _palm_vertex(m: _Mesh, p: np.ndarray, s: float) -> int:
    yc, zc = _palm_section(s)[:2]
    return m.add(p, center=(p[0], yc, zc), axis=(-1.0, 0.0, 0.0))


def _build_mesh() -> _Layout:
    """All vertices and faces in natural order (palm, fingers, thumb), before orientation and renumbering."""
    m = _Mesh()
    fdata = [_finger_rings(f) for f in FINGERS]
    spec = _knuckle_ring_spec()
    knuckle = np.stack([fdata[fi][0][0][1][k] for fi, k in spec])
    grid, f_u = _palm_grid(knuckle)
    loop_rc, interior = _window_cells()
    window_pos = np.stack([grid[r - 2, c] for r, c in loop_rc])
    yc, zc = _palm_section(PALM_ROWS[WINDOW_ROWS[1]])[:2]
    trings, tapex, t_m, t_i, t_total = _thumb_rings(window_pos, np.array([window_pos[:, 0].mean(), yc, zc]))

    # palm row 1 takes whatever count makes V = 778 (it is zipped to its neighbours, any size works)
    n_fingers = sum(len(rings) * RING_N + 1 for rings, _ in fdata)
    n_palm = WRIST_N + grid.shape[0] * PALM_N - len(interior)
    n1 = NUM_VERTS - n_fingers - n_palm - len(trings) * THUMB_N - 1
    if not WRIST_N <= n1 <= PALM_N:
        raise RuntimeError(f"palm row 1 would need {n1} vertices; retune ring spacing")
    x_end = knuckle[:, 0].mean()
    low = [_uniform_palm_ring(n, s, WRIST_X + s * (x_end - WRIST_X))
           for n, s in zip((WRIST_N, n1), PALM_ROWS)]
    low_ids = [[_palm_vertex(m, p, s) for p in pos] for (pos, _), s in zip(low, PALM_ROWS)]
    grid_ids = {(r, c): _palm_vertex(m, grid[r - 2, c], PALM_ROWS[r])
                for r in range(2, len(PALM_ROWS)) for c in range(PALM_N) if (r, c) not in interior}

    fingers, apex = [], []
    for fi, (rings, tip) in enumerate(fdata):
        f = FINGERS[fi]
        d = _finger_frame(f)[0]
        ids = [[m.add(p, fi, e, np.asarray(f.mcp) + e * d, d) for p in pos] for e, pos in rings]
        apex.append(m.add(tip, fi, sum(f.lengths), tip, d))
        for a, b in zip(ids[:-1], ids[1:]):
            m.quads(a, b)
        m.fan(ids[-1], apex[-1])
        fingers.append(ids)
    window = [grid_ids[rc] for rc in loop_rc]
    thumb = [[m.add(p, 4, t, c, tan) for p in pos] for t, pos, c, tan in trings]
    apex.append(m.add(tapex, 4, t_total, tapex, THUMB_DIR))
    for a, b in zip([window] + thumb[:-1], thumb):
        m.quads(a, b)
    m.fan(thumb[-1], apex[-1])

    # palm: wrist -> row 1 -> row 2 (different sizes), then the regular grid up to the knuckle ring
    m.zipper(low_ids[0], low[0][1], low_ids[1], low[1][1])
    m.zipper(low_ids[1], low[1][1], [grid_ids[2, c] for c in range(PALM_N)], f_u)
    rows = [[grid_ids.get((r, c)) for c in range(PALM_N)] for r in range(2, len(PALM_ROWS))]
    rows.append([fingers[fi][0][k] for fi, k in spec])
    for r, (a, b) in enumerate(zip(rows[:-1], rows[1:]), start=2):
        for c in range(PALM_N):
            if r in WINDOW_ROWS[:-1] and c in WINDOW_COLS[:-1]:
                continue  # the thumb window
            k = (c + 1) % PALM_N
            m.faces += [(a[c], a[k], b[k]), (a[c], b[k], b[c])]
    # webs between neighbouring fingers: hexagon x(3q-1, 3q, 3q+1), y(q-1, q, q+1) around the gap x(3q)-y(q)
    q = RING_N // 4
    for x, y in zip(fingers[:-1], fingers[1:]):
        bx, by = x[0], y[0]
        m.faces += [(bx[3 * q], bx[3 * q + 1], by[q - 1]), (bx[3 * q], by[q - 1], by[q]),
                    (bx[3 * q - 1], bx[3 * q], by[q]), (bx[3 * q - 1], by[q], by[q + 1])]
    mid = len(PALM_ROWS) // 2 + 1
    palm_marks = (grid_ids[mid, PALM_N // 4], grid_ids[mid, 3 * PALM_N // 4])
    ells = [[e for e, _ in rings] for rings, _ in fdata]
    return _Layout(m, low_ids[0], low_ids[1], fingers, ells, apex, window, thumb, [t for t, *_ in trings],
                   (t_m, t_i), palm_marks)


# ---------------------------------------------------------------------------------------------- topology
def _orient(faces: np.ndarray, pos: np.ndarray, loop: list[int]) -> np.ndarray:
    """Consistent winding by propagation over shared edges; outward = positive volume, wrist capped."""
    faces = faces.copy()
    edge_faces: dict[tuple[int, int], list[int]] = {}
    for fi, f in enumerate(faces):
        for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            edge_faces.setdefault((min(a, b), max(a, b)), []).append(fi)
    if any(len(v) > 2 for v in edge_faces.values()):
        raise RuntimeError("non-manifold edge in the stand-in mesh")
    done = np.zeros(len(faces), bool)
    done[0] = True
    stack = [0]
    while stack:
        fi = stack.pop()
        f = faces[fi]
        for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            for g in edge_faces[(min(a, b), max(a, b))]:
                if done[g]:
                    continue
                fg = list(faces[g])
                if any((fg[i], fg[(i + 1) % 3]) == (a, b) for i in range(3)):
                    faces[g] = faces[g][::-1]  # same directed edge -> opposite winding
                done[g] = True
                stack.append(g)
    if not done.all():
        raise RuntimeError("stand-in mesh is not connected")
    centre = pos[loop].mean(0)
    tri = pos[faces]
    vol = np.einsum("ij,ij->i", tri[:, 0] - centre, np.cross(tri[:, 1] - centre, tri[:, 2] - centre)).sum()
    return faces if vol > 0 else faces[:, ::-1].copy()


def _permutation(layout: _Layout, faces: np.ndarray) -> np.ndarray:
    """new_id[natural] moving the wrist loop, fingertips and palm marks onto the reserved MANO ids."""
    wrist = list(layout.wrist)
    directed = {(a, b) for f in faces for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}
    # the fan (loop[i], loop[i+1], centre) is consistent iff the mesh walks wrist edges loop[i+1] -> loop[i]
    if (wrist[0], wrist[1]) in directed:
        wrist = [wrist[0]] + wrist[:0:-1]
    reserved = dict(zip(wrist, WRIST_LOOP_VERTEX_IDS))
    half = RING_N // 2
    for fi, f in enumerate(FINGERS):
        last = layout.fingers[fi][-1]
        reserved.update({layout.apex[fi]: f.tips[0], last[half]: f.tips[1], last[0]: f.tips[2]})
    reserved.update({layout.apex[4]: THUMB_TIPS[0], layout.thumb[-1][0]: THUMB_TIPS[1]})
    reserved.update(dict(zip(layout.palm_marks, PALM_IDS)))
    assert sorted(FINGERTIP_VERTEX_IDS) == sorted([f.tips[0] for f in FINGERS] + [THUMB_TIPS[0]])
    new_id = np.full(NUM_VERTS, -1, np.int64)
    for nat, new in reserved.items():
        new_id[nat] = new
    free = sorted(set(range(NUM_VERTS)) - set(reserved.values()))
    new_id[new_id < 0] = free
    return new_id


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


# ---------------------------------------------------------------------------------------------- assembly
def _f32(x: np.ndarray) -> np.ndarray:
    """float64 array holding float32-representable values (bytes robust to last-ulp libm/BLAS differences)."""
    return np.asarray(x, np.float32).astype(np.float64)


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (float64) with each entry the exact sum of exact products, rounded once to float64.

    No BLAS (whose blocking and FMA use vary by machine): every entry is the correctly rounded exact value,
    so the result, and the file bytes, are the same on every IEEE-754 machine. Zeros of ``a`` are skipped
    (the regressor is sparse), which keeps the exact rational arithmetic cheap.
    """
    out = np.empty((a.shape[0], b.shape[1]))
    for i in range(a.shape[0]):
        nz = np.flatnonzero(a[i])
        terms = [(Fraction(float(a[i, k])), [Fraction(float(x)) for x in b[k]]) for k in nz]
        for j in range(b.shape[1]):
            exact = sum((w * row[j] for w, row in terms), Fraction(0))
            out[i, j] = float(exact)  # int / int true division: correctly rounded
    return out


def _build() -> tuple[dict, np.ndarray]:
    """The 13 model entries (plain arrays, MANO vertex ids) and the 20-component shape array (778, 3, 20)."""
    layout = _build_mesh()
    pos = np.asarray(layout.mesh.pos)
    faces = _orient(np.asarray(layout.mesh.faces, np.int64), pos, layout.wrist)
    new_id = _permutation(layout, faces)
    weights, reg = _weights_and_regressor(layout)
    v_template = np.empty((NUM_VERTS, 3))
    v_template[new_id] = _f32(pos)
    j_reg = np.empty((NUM_JOINTS, NUM_VERTS))
    j_reg[:, new_id] = reg
    wrist = _exact_matmul(j_reg[:1], v_template)[0]
    shapes = np.empty((NUM_VERTS, 3, 20))
    shapes[new_id] = _f32(_shape_fields(layout, wrist))
    w = np.empty((NUM_VERTS, NUM_JOINTS))
    w[new_id] = weights
    mean, comps, coeffs = _pose_prior()
    parents = np.array([2 ** 32 - 1 if p < 0 else p for p in MANO_PARENTS], np.int64)
    model = {
        "hands_components": _f32(comps),
        "f": new_id[faces].astype(np.uint32),
        "J_regressor": j_reg,
        "kintree_table": np.stack([parents, np.arange(NUM_JOINTS, dtype=np.int64)]),
        "J": _exact_matmul(j_reg, v_template),  # fixed, exact arithmetic: same bytes everywhere
        "bs_style": "lbs",
        "hands_coeffs": _f32(coeffs),
        "weights": w,
        "posedirs": np.zeros((NUM_VERTS, 3, 135)),
        "hands_mean": _f32(mean),
        "v_template": v_template,
        "shapedirs": shapes[:, :, :10].copy(),
        "bs_type": "lrotmin",
    }
    assert tuple(model) == KEY_ORDER
    return model, shapes


def build_standin() -> dict:
    """The stand-in model as plain numpy arrays / strs, keyed and ordered like MANO v1.2 (formats.md §1.2).

    Returns:
        dict with ``hands_components`` (45, 45), ``f`` (1538, 3) uint32, ``J_regressor`` (16, 778) dense,
        ``kintree_table`` (2, 16) int64, ``J`` (16, 3), ``bs_style`` 'lbs', ``hands_coeffs`` (1554, 45),
        ``weights`` (778, 16), ``posedirs`` (778, 3, 135) zeros, ``hands_mean`` (45,),
        ``v_template`` (778, 3), ``shapedirs`` (778, 3, 10), ``bs_type`` 'lrotmin'; floats are float64,
        lengths in metres, angles in radians.
    """
    return _build()[0]


# ---------------------------------------------------------------------------------------------- v1.2 writer
class _Foreign:
    """Object of a class the reader must not import (chumpy, old scipy): written as NEWOBJ + BUILD(state)."""

    def __init__(self, state: dict) -> None:
        self.state = state


class _Ch(_Foreign):
    pass


class _Select(_Foreign):
    pass


class _CscMatrix(_Foreign):
    pass


# markers standing for numpy objects in the file; classes (not functions) so that pickle's type dispatch
# routes them through _V12Pickler.save_global
class _ReconstructMarker:
    pass


class _NdarrayMarker:
    pass


class _DtypeMarker:
    pass


#: every global the file may reference -> (module, name) as written by Python 2 (formats.md §1.1)
_GLOBALS = {
    _ReconstructMarker: ("numpy.core.multiarray", "_reconstruct"),
    _NdarrayMarker: ("numpy", "ndarray"),
    _DtypeMarker: ("numpy", "dtype"),
    set: ("__builtin__", "set"),
    _Ch: ("chumpy.ch", "Ch"),
    _Select: ("chumpy.reordering", "Select"),
    _CscMatrix: ("scipy.sparse.csc", "csc_matrix"),
}


class _V12Pickler(pickle._Pickler):
    """Pure-Python protocol-2 pickler emitting only the 7 globals of MANO v1.2 (formats.md §2.3)."""

    def __init__(self, file) -> None:
        super().__init__(file, protocol=2)

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            # numpy's legacy reduce; the raw buffer as a latin-1 str, like a Python 2 str payload
            arr = np.ascontiguousarray(obj)
            state = (1, tuple(int(n) for n in arr.shape), arr.dtype, False, arr.tobytes().decode("latin1"))
            return _ReconstructMarker, (_NdarrayMarker, (0,), "b"), state
        if isinstance(obj, np.dtype):
            return _DtypeMarker, (obj.str[1:], 0, 1), (3, obj.str[0], None, None, None, -1, -1, 0)
        if isinstance(obj, _Foreign):
            return copyreg.__newobj__, (type(obj),), obj.state
        return NotImplemented

    def save_global(self, obj, name=None):
        try:
            module, qualname = _GLOBALS[obj]
        except (KeyError, TypeError):
            raise pickle.PicklingError(f"stand-in writer refuses global {obj!r}") from None
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("ascii"))
        self.memoize(obj)


def _chumpy_internals() -> dict:
    """The bookkeeping entries chumpy's ``Ch.__getstate__`` leaves in a state (after evaluation)."""
    return {"_dirty_vars": set(), "_itr": None, "_make_dense": False, "_make_sparse": False,
            "_depends_on_deps": {}}


def _container(model: dict, shapes20: np.ndarray) -> dict:
    """The 13 entries with shapedirs / J_regressor replaced by their chumpy / old-scipy objects."""
    csc = sparse.csc_matrix(model["J_regressor"])
    csc.sort_indices()
    out = dict(model)
    out["J_regressor"] = _CscMatrix({
        "_shape": (NUM_JOINTS, NUM_VERTS), "data": csc.data.astype(np.float64),
        "indices": csc.indices.astype(np.int32), "indptr": csc.indptr.astype(np.int32),
        "maxprint": 50, "format": "csc"})
    ch = _Ch({**_chumpy_internals(), "x": shapes20})
    idxs = np.arange(shapes20.size, dtype=np.int64).reshape(shapes20.shape)[:, :, :10].ravel()
    out["shapedirs"] = _Select({**_chumpy_internals(), "a": ch, "idxs": idxs,
                                "preferred_shape": (NUM_VERTS, 3, 10)})
    return out


def _pickle_bytes(model: dict, shapes20: np.ndarray) -> bytes:
    buf = io.BytesIO()
    _V12Pickler(buf).dump(_container(model, shapes20))
    return buf.getvalue()


def standin_bytes() -> bytes:
    """The complete stand-in ``MANO_RIGHT.pkl`` file content (deterministic)."""
    return _pickle_bytes(*_build())


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def write_standin(path: str) -> None:
    """Write the stand-in model to ``path`` in the MANO v1.2 pickle container (formats.md §1.1, §2.3)."""
    _write(path, standin_bytes())


def _npz_bytes(model: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in model.items()})
    return buf.getvalue()


def write_standin_npz(path: str) -> None:
    """Chumpy-free copy at ``path`` (name kept as given): the 13 entries of :func:`build_standin`, dense
    ``J_regressor``, ``bs_style`` / ``bs_type`` as 0-d str arrays."""
    _write(path, _npz_bytes(build_standin()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the procedural MANO-format stand-in hand model.")
    parser.add_argument("--out", required=True, help="output path, e.g. MANO/MANO_RIGHT.pkl")
    parser.add_argument("--npz", action="store_true", help="write a chumpy-free .npz, not the v1.2 pickle")
    args = parser.parse_args(argv)
    model, shapes20 = _build()
    _write(args.out, _npz_bytes(model) if args.npz else _pickle_bytes(model, shapes20))
    print(f"stand-in MANO model ({'npz' if args.npz else 'v1.2 pickle'}) -> {args.out}: "
          f"V={len(model['v_template'])} F={len(model['f'])} joints={len(model['J'])} "
          f"size={os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
