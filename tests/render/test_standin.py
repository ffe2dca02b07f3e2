"""Procedural MANO stand-in: v1.2 container (docs/formats.md §1.1-1.2, §2.3), topology and geometry (§2.1 there)."""
from __future__ import annotations

import importlib.util
import io
import math
import pickle
import pickletools
import warnings
from collections import Counter

import numpy as np
import pytest

from render.standin import build_standin, main, standin_bytes, write_standin
from util.joints import FINGERTIP_VERTEX_IDS, MANO_PARENTS, WRIST_LOOP_VERTEX_IDS

KEYS = ("hands_components", "f", "J_regressor", "kintree_table", "J", "bs_style", "hands_coeffs", "weights",
        "posedirs", "hands_mean", "v_template", "shapedirs", "bs_type")
GLOBALS_V12 = {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype", "__builtin__ set",
               "chumpy.ch Ch", "chumpy.reordering Select", "scipy.sparse.csc csc_matrix"}
# (distal joint, tip vertex, other reserved tip-region vertices) of index, middle, pinky, ring, thumb
TIPS = ((3, 333, (317, 320)), (6, 444, (443, 445)), (9, 672, (671, 673)), (12, 555, (554, 556)),
        (15, 744, (745,)))


@pytest.fixture(scope="module")
def model() -> dict:
    return build_standin()


@pytest.fixture(scope="module")
def raw_bytes() -> bytes:
    return standin_bytes()


# ------------------------------------------------------------------------------------------------ container
class _Stub:
    def __setstate__(self, state):
        self.state = state


class _Ch(_Stub):
    pass


class _Select(_Stub):
    pass


class _Csc(_Stub):
    pass


class _SevenGlobals(pickle.Unpickler):
    """Independent restricted reader: real numpy for arrays, inert stubs for chumpy / old scipy."""

    table = {("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
             ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("__builtin__", "set"): set,
             ("chumpy.ch", "Ch"): _Ch, ("chumpy.reordering", "Select"): _Select,
             ("scipy.sparse.csc", "csc_matrix"): _Csc}

    def find_class(self, module, name):
        return self.table[(module, name)]


@pytest.fixture(scope="module")
def container(raw_bytes) -> dict:
    return _SevenGlobals(io.BytesIO(raw_bytes), encoding="latin1").load()


def test_pickle_is_protocol2_with_exactly_the_seven_v12_globals(raw_bytes):
    assert raw_bytes[:2] == b"\x80\x02"
    ops = list(pickletools.genops(raw_bytes))
    names = {op.name for op, _, _ in ops}
    assert [a for op, a, _ in ops if op.name == "PROTO"] == [2]
    assert {a for op, a, _ in ops if op.name == "GLOBAL"} == GLOBALS_V12
    # no other way of naming a callable, no persistent ids
    forbidden = {"STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID", "NEWOBJ_EX"}
    assert not names & forbidden
    assert {"NEWOBJ", "BUILD"} <= names


def test_keys_order_types_and_dtypes(container, model):
    assert tuple(container) == KEYS
    assert container["bs_style"] == "lbs" and container["bs_type"] == "lrotmin"
    for key in set(KEYS) - {"J_regressor", "shapedirs", "bs_style", "bs_type"}:
        assert type(container[key]) is np.ndarray, key
        np.testing.assert_array_equal(container[key], model[key], err_msg=key)
        assert container[key].dtype == model[key].dtype, key
    assert container["f"].dtype == np.uint32 and container["kintree_table"].dtype == np.int64
    for key in ("hands_components", "J", "hands_coeffs", "weights", "posedirs", "hands_mean", "v_template"):
        assert container[key].dtype == np.float64, key
    np.testing.assert_array_equal(container["kintree_table"][0],
                                  [2**32 - 1 if p < 0 else p for p in MANO_PARENTS])
    np.testing.assert_array_equal(container["kintree_table"][1], np.arange(16))


def test_regressor_is_old_style_csc_state(container, model):
    csc = container["J_regressor"]
    assert isinstance(csc, _Csc)
    st = csc.state
    assert list(st) == ["_shape", "data", "indices", "indptr", "maxprint", "format"]
    assert st["_shape"] == (16, 778) and st["format"] == "csc"
    assert st["indices"].dtype == np.int32 and st["indptr"].dtype == np.int32
    assert st["data"].dtype == np.float64
    assert st["indptr"].shape == (779,) and st["indptr"][-1] == st["data"].size
    dense = np.zeros((16, 778))
    for col in range(778):  # column j owns entries indptr[j]:indptr[j+1]
        sl = slice(st["indptr"][col], st["indptr"][col + 1])
        dense[st["indices"][sl], col] += st["data"][sl]
    np.testing.assert_array_equal(dense, model["J_regressor"])


def test_shapedirs_is_chumpy_select_of_20_components(container, model):
    sel = container["shapedirs"]
    assert isinstance(sel, _Select) and isinstance(sel.state["a"], _Ch)
    x = sel.state["a"].state["x"]
    assert x.shape == (778, 3, 20) and x.dtype == np.float64
    assert isinstance(sel.state["a"].state["_dirty_vars"], set)
    idxs = sel.state["idxs"]
    assert idxs.dtype == np.int64 and idxs.shape == (23340,)
    np.testing.assert_array_equal(idxs, np.arange(778 * 3 * 20).reshape(778, 3, 20)[:, :, :10].ravel())
    assert sel.state["preferred_shape"] == (778, 3, 10)
    # chumpy's Select.compute_r
    np.testing.assert_array_equal(x.ravel()[idxs].reshape(sel.state["preferred_shape"]), model["shapedirs"])
    assert np.abs(x[:, :, 10:]).max() > 0  # the 10 unused components are real fields too


def test_two_writes_are_byte_identical(tmp_path, raw_bytes):
    a, b = tmp_path / "a" / "MANO_RIGHT.pkl", tmp_path / "b.pkl"
    write_standin(str(a))
    write_standin(str(b))
    assert a.read_bytes() == b.read_bytes() == raw_bytes


@pytest.mark.skipif(importlib.util.find_spec("chumpy") is not None, reason="chumpy is installed here")
def test_plain_pickle_load_needs_chumpy_like_the_real_file(standin_pkl):
    with warnings.catch_warnings(), open(standin_pkl, "rb") as fh:
        warnings.simplefilter("ignore")  # numpy.core / scipy.sparse.csc deprecation on the way to chumpy
        with pytest.raises(ModuleNotFoundError, match="No module named 'chumpy'"):
            pickle.load(fh, encoding="latin1")


def test_restricted_reader_returns_the_arrays_bit_exactly(standin_model, model):
    m = standin_model
    pairs = {"v_template": m.v_template, "shapedirs": m.shapedirs, "posedirs": m.posedirs,
             "J_regressor": m.J_regressor, "weights": m.weights, "f": m.faces,
             "hands_components": m.hands_components, "hands_mean": m.hands_mean,
             "hands_coeffs": m.hands_coeffs}
    for key, value in pairs.items():
        np.testing.assert_array_equal(value, model[key], err_msg=key)
    np.testing.assert_array_equal(m.parents, MANO_PARENTS)


def test_load_standin_returns_independent_copies(standin_model):
    from render.standin import load_standin

    a = load_standin()
    a.v_template[:] = 0.0  # a caller modifying its copy must not change the next caller's model
    np.testing.assert_array_equal(load_standin().v_template, standin_model.v_template)
    assert np.abs(standin_model.v_template).max() > 0


def test_cli_writes_pickle_and_npz(tmp_path, capsys, model):
    from render.mano_io import load_mano

    main(["--out", str(tmp_path / "m.pkl")])
    assert "V=778 F=1538 joints=16" in capsys.readouterr().out
    main(["--out", str(tmp_path / "m.npz"), "--npz"])
    npz = load_mano(tmp_path / "m.npz")
    np.testing.assert_array_equal(npz.v_template, model["v_template"])
    np.testing.assert_array_equal(npz.J_regressor, model["J_regressor"])
    np.testing.assert_array_equal(npz.shapedirs, load_mano(tmp_path / "m.pkl").shapedirs)


# ------------------------------------------------------------------------------------------------ topology
def _edges(faces):
    directed = Counter((int(a), int(b)) for f in faces for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])))
    undirected = Counter((min(a, b), max(a, b)) for a, b in directed.elements())
    return directed, undirected


def test_disk_with_the_reserved_wrist_loop_as_only_boundary(model):
    v, f = model["v_template"], model["f"].astype(np.int64)
    assert v.shape == (778, 3) and f.shape == (1538, 3)
    assert np.all(np.sort(f, 1)[:, :-1] != np.sort(f, 1)[:, 1:])  # no degenerate faces
    assert np.unique(f).size == 778  # every vertex used
    directed, undirected = _edges(f)
    assert max(directed.values()) == 1  # consistent winding
    assert set(undirected.values()) <= {1, 2}  # manifold
    assert len(v) - len(undirected) + len(f) == 1  # Euler characteristic of a disk
    boundary = [e for e, n in undirected.items() if n == 1]
    assert len(boundary) == 16
    # the boundary edges are exactly the consecutive pairs of the reserved loop, in its cyclic order
    loop = WRIST_LOOP_VERTEX_IDS
    assert set(boundary) == {(min(a, b), max(a, b)) for a, b in zip(loop, loop[1:] + loop[:1])}
    # connected: union-find over the edges
    parent = list(range(778))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in undirected:
        parent[root(a)] = root(b)
    assert len({root(i) for i in range(778)}) == 1


def _closed(model):
    loop = WRIST_LOOP_VERTEX_IDS
    fan = np.array([(loop[i], loop[(i + 1) % 16], 778) for i in range(16)])
    verts = np.vstack([model["v_template"], model["v_template"][list(loop)].mean(0)])
    return verts, np.vstack([model["f"].astype(np.int64), fan]), fan


def test_wrist_fan_closes_a_consistent_outward_surface(model):
    verts, faces, _ = _closed(model)
    directed, undirected = _edges(faces)
    assert max(directed.values()) == 1 and set(undirected.values()) == {2}
    tri = verts[faces]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert 1.5e-4 < volume < 6e-4  # m^3: positive (outward normals), hand-sized


def test_fan_orientation_matches_the_official_closure(model, shared_dir):
    official = np.load(shared_dir / "oracle" / "mano_forward.npz")["faces1554"]
    np.testing.assert_array_equal(official[1538:], _closed(model)[2])


def _two_product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p, e) with p + e == a * b exactly (Dekker / Veltkamp splitting, float64, no over/underflow here)."""
    def halves(x):
        c = 134217729.0 * x  # 2**27 + 1
        hi = c - (c - x)
        return hi, x - hi

    p = a * b
    (ah, al), (bh, bl) = halves(a), halves(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def test_template_joints_are_the_correctly_rounded_regressor_product(model):
    """J = J_regressor @ v_template, each entry the exact dot rounded once (no BLAS last-bit drift)."""
    r, v = model["J_regressor"], model["v_template"]
    exact = np.empty((16, 3))
    for i in range(16):
        for c in range(3):
            p, e = _two_product(r[i], v[:, c])
            exact[i, c] = math.fsum(np.concatenate([p, e]))  # fsum: correctly rounded sum of exact terms
    np.testing.assert_array_equal(model["J"], exact)
    np.testing.assert_allclose(model["J"], r @ v, rtol=0, atol=1e-12)


# -------------------------------------------------------------------------------------------- hand geometry
def test_rest_pose_layout_and_sizes(model):
    v, j = model["v_template"], model["J"]
    np.testing.assert_allclose(j, model["J_regressor"] @ v, rtol=0, atol=1e-15)
    tips = v[list(FINGERTIP_VERTEX_IDS)]  # index, middle, pinky, ring, thumb
    assert np.all(tips[:4, 0] < j[[1, 4, 7, 10], 0])  # fingers point to -x
    assert tips[0, 2] > tips[1, 2] > tips[3, 2] > tips[2, 2]  # index +z ... pinky -z
    assert tips[4, 2] > j[1, 2] and tips[4, 1] < -0.005  # thumb on the +z side, towards the palm (-y)
    assert 0.17 < np.linalg.norm(tips[1] - j[0]) < 0.20  # wrist -> middle tip
    no_thumb = model["weights"][:, 13:].sum(1) == 0
    assert 0.07 < np.ptp(v[no_thumb & (np.abs(v[:, 0] - j[4, 0]) < 0.015), 2]) < 0.09  # width at the knuckles
    mid = np.abs(v[:, 0] - 0.5 * (j[0, 0] + j[4, 0])) < 0.01
    assert 0.024 < np.ptp(v[mid & (np.abs(v[:, 2] - j[4, 2]) < 0.01), 1]) < 0.034  # palm thickness
    for joint in (2, 5, 11, 8):  # finger radius at the PIP: regressor ring around the joint
        ring = v[model["J_regressor"][joint] > 0]
        assert 0.006 < np.linalg.norm(ring - j[joint], axis=1).mean() < 0.011


def test_reserved_tip_vertices_are_at_the_fingertips(model):
    v, w, j = model["v_template"], model["weights"], model["J"]
    for distal, tip, others in TIPS:
        finger = np.flatnonzero(w[:, distal] > 0.5)
        dist = np.linalg.norm(v[finger] - j[0], axis=1)
        assert np.linalg.norm(v[tip] - j[0]) >= dist.max() - 1e-3
        assert tip in finger and set(others) <= set(finger)
        assert np.all(np.linalg.norm(v[list(others)] - v[tip], axis=1) < 0.008)
    assert w[95, 0] == 1.0 and w[22, 0] == 1.0  # palm


def test_weights_follow_the_kinematic_segments(model):
    w = model["weights"]
    assert np.all(w >= 0)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=0, atol=1e-12)
    for row in w:
        nz = np.flatnonzero(row)
        assert len(nz) <= 2
        if len(nz) == 2:  # blend band: a joint and its parent
            assert MANO_PARENTS[nz[1]] == nz[0]
    assert np.all(w.max(0) == 1.0)  # every joint owns some vertices outright
    blended = (w > 0).sum(1) == 2
    assert set(np.flatnonzero(w[blended].sum(0))) == set(range(16))  # every joint has a blend band
    # a vertex skinned to finger joint k lies beyond joint k along its bone (towards the child)
    v, j = model["v_template"], model["J"]
    for k in range(1, 16):
        child = k + 1 if k % 3 else None
        own = w[:, k] == 1.0
        if child is not None:
            bone = (j[child] - j[k]) / np.linalg.norm(j[child] - j[k])
            assert np.all((v[own] - j[k]) @ bone > 0)


def test_regressor_rings(model):
    r, v = model["J_regressor"], model["v_template"]
    assert np.all(r >= 0)
    np.testing.assert_allclose(r.sum(1), 1.0, rtol=0, atol=1e-12)
    counts = (r > 0).sum(1)
    assert counts.min() >= 10
    assert set(np.flatnonzero(r[0])) >= set(WRIST_LOOP_VERTEX_IDS)
    for k in range(16):  # local support: the vertices surround their joint
        assert np.linalg.norm(v[r[k] > 0] - model["J"][k], axis=1).max() < 0.04


def test_shape_blend_shapes_are_realistic(model, standin_model):
    s, v = model["shapedirs"], model["v_template"]
    assert s.shape == (778, 3, 10)
    amplitude = np.abs(s).max(axis=(0, 1))
    assert np.all(amplitude > 2e-4) and np.all(amplitude < 0.01)  # metres per unit beta: sub-mm to a few mm
    # beta 0: uniform scale about the wrist joint
    j0 = model["J"][0]
    ratio = np.einsum("vc,vc->v", s[:, :, 0], v - j0) / np.einsum("vc,vc->v", v - j0, v - j0)
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)
    assert 0.01 < ratio[0] < 0.05
    # beta 1 lengthens the middle finger by a few mm; beta 2 widens the palm
    jr = model["J_regressor"]

    def middle_length(beta):  # middle MCP joint -> middle tip vertex
        shaped = v + beta * s[:, :, 1]
        return np.linalg.norm(shaped[444] - jr[4] @ shaped)

    assert 0.002 < middle_length(1.0) - middle_length(0.0) < 0.008

    def mcp_spread(beta):  # index MCP -> pinky MCP across the palm
        return np.ptp((jr @ (v + beta * s[:, :, 2]))[[1, 4, 7, 10], 2])

    assert 0.001 < mcp_spread(1.0) - mcp_spread(0.0) < 0.006


# ------------------------------------------------------------------------------------------------ pose prior
def _rodrigues(r):
    angle = np.linalg.norm(r)
    if angle == 0:
        return np.eye(3)
    k = np.array([[0, -r[2], r[1]], [r[2], 0, -r[0]], [-r[1], r[0], 0]]) / angle
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _lbs(model, hand_pose):
    """float64 MANO LBS (docs/formats.md §1.5, zero posedirs/betas) -> posed vertices (778, 3)."""
    j = model["J_regressor"] @ model["v_template"]
    rot = [np.eye(3)] + [_rodrigues(r) for r in hand_pose.reshape(15, 3)]
    world = []
    for k, p in enumerate(MANO_PARENTS):
        local = np.eye(4)
        local[:3, :3] = rot[k]
        local[:3, 3] = j[k] - (j[p] if p >= 0 else 0)
        world.append(local if p < 0 else world[p] @ local)
    rel = np.stack(world)
    rel[:, :3, 3] -= np.einsum("kij,kj->ki", rel[:, :3, :3], j)
    skin = np.einsum("vk,kij->vij", model["weights"], rel)
    return np.einsum("vij,vj->vi", skin[:, :3, :3], model["v_template"]) + skin[:, :3, 3]


def test_pca_basis_rows_orthogonal_with_decreasing_norm(model):
    comps, coeffs = model["hands_components"], model["hands_coeffs"]
    assert comps.shape == (45, 45) and coeffs.shape == (1554, 45) and model["hands_mean"].shape == (45,)
    gram = comps @ comps.T
    norms = np.sqrt(np.diag(gram))
    np.testing.assert_allclose(gram / np.outer(norms, norms), np.eye(45), atol=1e-6)
    assert np.all(np.diff(norms) <= 0) and norms[-1] > 0
    # coefficients of the sampled poses: centred, unit variance along every component (row norm = std)
    np.testing.assert_allclose(coeffs.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(coeffs.std(0, ddof=1), 1.0, atol=1e-5)


def test_mean_pose_curls_fingers_towards_the_palm(model):
    rest = model["v_template"]
    posed = _lbs(model, model["hands_mean"])
    for _, tip, _ in TIPS:
        assert posed[tip, 1] < rest[tip, 1] - 0.01  # towards -y, the palm side
    for tip in (333, 444, 672, 555):
        assert posed[tip, 0] > rest[tip, 0] + 0.005  # and back towards the wrist
    # two standard deviations further along the first component (overall curl): tips come closer to the wrist
    first = model["hands_components"][0]
    fist = model["hands_mean"] + 2.0 * first * np.sign(first @ model["hands_mean"])
    assert np.all(_lbs(model, fist)[[333, 444, 672, 555], 0] > posed[[333, 444, 672, 555], 0] + 0.01)
