"""Triangulation of the procedural stand-in hand (internal to ``render.standin``).

The mesh is one consistently oriented triangulated disk (V = 778, F = 1538) whose only boundary is the wrist
loop ``util.joints.WRIST_LOOP_VERTEX_IDS`` in that cyclic order: the fan ``(loop[i], loop[i+1], 778)`` closes
it with outward normals, as in DSF. Construction: a palm tube of vertex rings grows from the wrist ring to a
"knuckle ring" made of the four finger base rings joined by small web patches; the thumb tube leaves a
3x2-quad window cut out of the palm grid; every finger ends in a rounded cap whose apex is the reserved
fingertip vertex. This module holds the mesh builder, the natural-order construction (:func:`_build_mesh`),
the winding fix (:func:`_orient`) and the renumbering onto MANO's reserved vertex ids (:func:`_permutation`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from render.mano_format import NUM_VERTS
from render.standin.geometry import (
    FINGERS, PALM_IDS, PALM_N, PALM_ROWS, RING_N, THUMB_DIR, THUMB_N, THUMB_TIPS, WINDOW_COLS, WINDOW_ROWS,
    WRIST_N, WRIST_X, _finger_frame, _finger_rings, _knuckle_ring_spec, _palm_grid, _palm_section,
    _thumb_rings, _uniform_palm_ring,
)
from util.joints import FINGERTIP_VERTEX_IDS, WRIST_LOOP_VERTEX_IDS


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
