"""Model-mismatch options of the stand-in: the surface changes as specified (volume change of the thick
option against a first-order hand computation, one Taubin pass by explicit neighbour loops), while the scene,
labels and fits of a seed stay exactly those of the unchanged tree."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dataloader.depth_io import decode_depth, load_joint_data
from dataloader.nyu_fits import default_fits_dir, load_nyu_fits
from dataloader.standin_mismatch import TAUBIN_PASSBAND, apply_mismatch, thickness_profile
from dataloader.standin_nyu import (StandinConfig, ensure_standin_nyu, generate_standin_nyu,
                                    sample_standin_params)
from render.mano_layer import ManoLayer


@pytest.fixture(scope="module")
def posed(standin_model):
    layer = ManoLayer(standin_model)
    params = sample_standin_params(standin_model.hands_coeffs, 2, StandinConfig(), np.random.default_rng(1))
    with torch.no_grad():
        verts = layer.forward_dsf(torch.from_numpy(params)).vertices.double().numpy()
    return verts, layer.faces_closed.numpy(), standin_model.weights


def _volume(v: np.ndarray, f: np.ndarray) -> float:
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _vertex_areas(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    out = np.zeros(len(v))
    for k in range(3):
        np.add.at(out, f[:, k], area / 3.0)
    return out


def test_thick_grows_volume_by_offset_times_area(posed):
    verts, faces, weights = posed
    amount = 1.0  # small: the first-order volume change dV = sum(offset_i * area_i) holds to a few %
    moved = apply_mismatch(verts, faces, weights, "thick", amount)
    level = np.array([0, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3], float)  # wrist; per finger MCP, PIP, DIP
    offset = np.r_[amount * (weights @ level) / 3.0, 0.0]
    np.testing.assert_allclose(offset[:778], amount * thickness_profile(weights))
    for b in range(len(verts)):
        assert _volume(verts[b], faces) > 0  # outward faces: the normals point out
        expected = (offset * _vertex_areas(verts[b], faces)).sum()
        got = _volume(moved[b], faces) - _volume(verts[b], faces)
        assert got == pytest.approx(expected, rel=0.1)
        shift = np.linalg.norm(moved[b, :778] - verts[b, :778], axis=1)
        np.testing.assert_allclose(shift, offset[:778], atol=1e-9)  # along a unit normal
        tip = 333  # index fingertip: distal part, moved by nearly the full amount; the wrist loop does not move
        assert shift[tip] > 0.9 * amount and shift[[121, 214, 215]].max() < 0.2 * amount
        np.testing.assert_allclose(moved[b, 778], moved[b, [121, 214, 215, 279, 239, 234, 92, 38, 122, 118, 117,
                                                            119, 120, 108, 79, 78]].mean(0))


def test_smooth_is_taubin_by_explicit_neighbours(posed):
    verts, faces, weights = posed
    v = verts[:1]
    nbrs = [set() for _ in range(779)]
    for a, b, c in faces:
        nbrs[a] |= {b, c}
        nbrs[b] |= {a, c}
        nbrs[c] |= {a, b}
    ref = v[0].copy()
    for lam in (0.5, -(0.5 + TAUBIN_PASSBAND)):
        ref = ref + lam * (np.stack([ref[sorted(n)].mean(0) for n in nbrs]) - ref)
    ref[778] = ref[[121, 214, 215, 279, 239, 234, 92, 38, 122, 118, 117, 119, 120, 108, 79, 78]].mean(0)
    got = apply_mismatch(v, faces, weights, "smooth", 0.5, iterations=1)
    np.testing.assert_allclose(got[0], ref, atol=1e-9)
    ten = apply_mismatch(v, faces, weights, "smooth", 0.5)
    assert abs(_volume(ten[0], faces) / _volume(v[0], faces) - 1) < 0.1  # Taubin: little shrinkage
    assert np.abs(ten - v).max() > 0.5  # but the surface did change (mm)
    with pytest.raises(ValueError, match="mismatch must be one of"):
        apply_mismatch(v, faces, weights, "bulge")


def test_mismatch_tree_same_scenes_labels_fits(tmp_path, standin_pkl):
    kw = dict(n_train=3, n_test=2, seed=7, mano_path=str(standin_pkl), views=2, batch_size=2)
    base = generate_standin_nyu(tmp_path / "none", **kw)
    thick = generate_standin_nyu(tmp_path / "thick", **kw, mismatch="thick")
    for split, n in (("train", 3), ("test", 2)):
        a, b = load_joint_data(base / split / "joint_data.mat"), load_joint_data(thick / split / "joint_data.mat")
        np.testing.assert_array_equal(a.joint_xyz, b.joint_xyz)
        for v in (0, 1):
            name = f"center_{split}_{v}_refined.txt"
            assert (base / split / name).read_text() == (thick / split / name).read_text()
            np.testing.assert_array_equal(load_nyu_fits(default_fits_dir(base), split, v + 1),
                                          load_nyu_fits(default_fits_dir(thick), split, v + 1))
            for i in range(n):  # the thick hand covers more pixels and is never farther where both are hand
                s0 = decode_depth(base / split / f"synthdepth_{v + 1}_{i + 1:07d}.png")
                s1 = decode_depth(thick / split / f"synthdepth_{v + 1}_{i + 1:07d}.png")
                both = (s0 > 0) & (s1 > 0)
                assert (s1 > 0).sum() > (s0 > 0).sum()
                assert np.mean(s1[both] <= s0[both] + 1) > 0.97
    info = json.loads((thick / "standin_nyu.json").read_text())
    assert info["mismatch"] == {"kind": "thick", "amount": None}
    assert "mismatch" not in json.loads((base / "standin_nyu.json").read_text())
    # cached separately: ensure with another option regenerates, with the same one does not
    stamp = (thick / "train" / "depth_1_0000001.png").stat().st_mtime_ns
    ensure_standin_nyu(thick, kw["n_train"], kw["n_test"], seed=7, mano_path=str(standin_pkl), views=2,
                       mismatch="thick")
    assert (thick / "train" / "depth_1_0000001.png").stat().st_mtime_ns == stamp
    ensure_standin_nyu(thick, kw["n_train"], kw["n_test"], seed=7, mano_path=str(standin_pkl), views=2,
                       mismatch="smooth")
    assert json.loads((thick / "standin_nyu.json").read_text())["mismatch"]["kind"] == "smooth"
