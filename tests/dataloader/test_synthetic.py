"""Synthetic pre-training data: parameter sources, the endless sampler, occlusion, and batch labels that agree
with the rendered crops and with the NYU loader's conventions."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from dataloader.nyu_joints import nyu36_from_mano21
from dataloader.depth_io import DataFileError
from dataloader.synthetic import (PALM_TO_CAMERA, InfiniteShuffleSampler, SyntheticParams, SyntheticRenderer,
                                  SyntheticSettings, builtin_pose_params, find_hands_params, load_hands_params,
                                  occlusion_mask, occlusion_spheres, param_loader, random_rotations,
                                  render_synthetic_batch)
from render.mano_layer import ManoLayer, batch_rodrigues
from render.mano_params import ManoParams
from util.camera import NYU_CAMERA
from tests.reference import literal_crop_matrix
from util.geometry import norm_xyz_to_norm_uvd, norm_xyz_to_xyz
from util.joints import NYU_EVAL_14

CAM = NYU_CAMERA.as_tuple()


@pytest.fixture(scope="module")
def layer(standin_model):
    return ManoLayer(standin_model)


@pytest.fixture(scope="module")
def batch(layer, standin_model):
    params = torch.from_numpy(builtin_pose_params(standin_model.hands_coeffs, 12, seed=1))
    return render_synthetic_batch(params, layer, CAM, SyntheticSettings(cube=250.0, occlusion=True),
                                  torch.Generator().manual_seed(0))


def test_hands_param_files(tmp_path):
    rng = np.random.default_rng(0)
    widths = {"glb": 3, "pose": 45, "shape": 10, "scale": 1, "trans": 3}
    cols = {k: rng.normal(size=(7, w)) for k, w in widths.items()}
    for k, a in cols.items():
        np.savetxt(tmp_path / f"hands-{k}.txt", a, fmt="%.6f")
    p = load_hands_params(tmp_path)
    assert p.shape == (7, 62)
    v = ManoParams.from_vector(torch.from_numpy(p))
    for name, key in (("global_orient", "glb"), ("pose_pca", "pose"), ("betas", "shape"), ("scale", "scale"),
                      ("transl", "trans")):
        np.testing.assert_allclose(getattr(v, name).numpy(), cols[key], atol=1e-6)
    np.savetxt(tmp_path / "hands-shape.txt", cols["shape"][:5], fmt="%.6f")
    with pytest.raises(ValueError, match=r"hands-shape\.txt: 5 rows"):
        load_hands_params(tmp_path)
    np.savetxt(tmp_path / "hands-shape.txt", cols["shape"][:, :9], fmt="%.6f")
    with pytest.raises(ValueError, match=r"hands-shape\.txt: expected 10 columns"):
        load_hands_params(tmp_path)
    (tmp_path / "hands-shape.txt").write_text("\n  \n")  # empty (whitespace only)
    with pytest.raises(DataFileError, match=r"hands-shape\.txt: file is empty \(expected N > 0 rows of 10"):
        load_hands_params(tmp_path)
    (tmp_path / "hands-shape.txt").write_bytes(b"")
    with pytest.raises(DataFileError, match=r"hands-shape\.txt: file is empty"):
        load_hands_params(tmp_path)
    np.savetxt(tmp_path / "hands-shape.txt", cols["shape"], fmt="%.6f")
    (tmp_path / "hands-trans.txt").unlink()
    with pytest.raises(FileNotFoundError, match="hands-trans.txt"):
        load_hands_params(tmp_path)


def _write_hands(d, n: int, value: float) -> None:
    d.mkdir(parents=True)
    for k, w in {"glb": 3, "pose": 45, "shape": 10, "scale": 1, "trans": 3}.items():
        np.savetxt(d / f"hands-{k}.txt", np.full((n, w), value), fmt="%.3f")


def test_find_hands_params_and_source_choice(tmp_path, capsys):
    data = tmp_path / "data" / "nyu"  # a data root; the official files sit next to it
    data.mkdir(parents=True)
    assert find_hands_params(tmp_path / "data") is None and find_hands_params(tmp_path / "nowhere") is None
    coeffs = np.random.default_rng(0).normal(size=(4, 45))
    roots = (data.parent, data)
    builtin = SyntheticParams.from_source("", coeffs, n_builtin=6, search_roots=roots, cube=250.0)
    assert len(builtin) == 6 and builtin.source.startswith("built-in: 6 vectors from MANO hands_coeffs")
    assert str(data.parent) in builtin.source and "uniform SO(3)" in builtin.source
    printed = capsys.readouterr().out.splitlines()  # the substitute is announced on stdout, in one line
    assert printed == [f"synthetic pose source: {builtin.source}"]
    cone = SyntheticParams.from_source("", coeffs, n_builtin=6, search_roots=roots, rotation="cone", cone_deg=30,
                                       cube=250.0)
    assert "camera-facing cone 30 deg" in cone.source and "6 vectors" in capsys.readouterr().out

    _write_hands(data / "posePara_lm_collosion", 3, 0.5)  # second layout, under the data root
    assert find_hands_params(data) == data / "posePara_lm_collosion"
    p = SyntheticParams.from_source("", coeffs, search_roots=roots, cube=250.0)
    assert len(p) == 3 and torch.all(p.params == 0.5)
    assert p.source == f"hands files: {data / 'posePara_lm_collosion'} (3 vectors)"

    official = data.parent / "hands20" / "posePara_lm_collosion"  # official layout, first search root wins
    _write_hands(official, 2, 0.25)
    assert find_hands_params(data.parent) == official
    capsys.readouterr()
    p = SyntheticParams.from_source("", coeffs, search_roots=roots, cube=250.0)
    assert len(p) == 2 and torch.all(p.params == 0.25) and str(official) in p.source
    assert capsys.readouterr().out == f"synthetic pose source: hands files: {official} (2 vectors)\n"
    # an explicit directory beats the search; an incomplete set is an error, not a silent fallback
    p = SyntheticParams.from_source(str(data / "posePara_lm_collosion"), coeffs, search_roots=roots,
                                    cube=250.0)
    assert len(p) == 3
    (official / "hands-scale.txt").unlink()
    assert find_hands_params(data.parent) == official
    with pytest.raises(FileNotFoundError, match="hands-scale.txt"):
        SyntheticParams.from_source("", coeffs, search_roots=roots, cube=250.0)


def test_builtin_source_interpolates_captured_poses():
    coeffs = np.array([[1.0] * 45, [-2.0] * 45]) * np.linspace(1, 2, 45)
    p = builtin_pose_params(coeffs, 200, seed=0, pose_noise=0.0)
    pose = ManoParams.from_vector(torch.from_numpy(p)).pose_pca.double().numpy()
    t = (pose - coeffs[0]) / (coeffs[1] - coeffs[0])  # every pose on the segment between the two rows
    assert np.allclose(t, t[:, :1], atol=1e-5) and t.min() >= -1e-6 and t.max() <= 1 + 1e-6
    v = ManoParams.from_vector(torch.from_numpy(p))
    assert (v.betas == 0).all() and (v.scale == 1).all() and (v.transl == 0).all()
    noisy = builtin_pose_params(coeffs, 2000, seed=0, pose_noise=0.5)
    resid = noisy[:, 3:48] - builtin_pose_params(coeffs, 2000, seed=0, pose_noise=0.0)[:, 3:48]
    np.testing.assert_allclose(resid.std(0), 0.5 * coeffs.std(0), rtol=0.1)  # noise in component units


def test_rotation_modes():
    g = torch.Generator().manual_seed(0)
    r = batch_rodrigues(random_rotations(6000, g, "so3").double())
    assert r.mean(0).abs().max() < 0.03  # uniform on SO(3): E[R] = 0
    oct_ = random_rotations(1000, g, "octant")
    assert oct_.min() >= 0 and oct_.max() < 2 * math.pi  # official U(0, 2 pi) per component
    assert (random_rotations(3, g, "none") == 0).all()
    with pytest.raises(ValueError, match="rotation mode"):
        random_rotations(3, g, "uniform")


def test_infinite_sampler_and_param_loader():
    s = InfiniteShuffleSampler(5, seed=3)
    first = list(itertools.islice(iter(s), 15))
    for k in range(3):
        assert sorted(first[5 * k:5 * k + 5]) == list(range(5))  # every pass is a permutation
    assert first[:5] != first[5:10] or first[5:10] != first[10:15]
    assert first == list(itertools.islice(iter(InfiniteShuffleSampler(5, seed=3)), 15))
    ds = SyntheticParams(np.zeros((3, 62), np.float32), cube=230.0)
    it = iter(param_loader(ds, batch_size=2))
    batches = [next(it) for _ in range(7)]  # beyond the 3 items
    assert batches[-1]["params"].shape == (2, 62) and torch.all(batches[0]["cube"] == 230.0)
    with pytest.raises(ValueError, match=r"\(N, 62\)"):
        SyntheticParams(np.zeros((3, 61)), cube=250.0)


def test_batch_shapes_and_consistent_labels(batch):
    B = 12
    shapes = {"depth": (B, 1, 128, 128), "depth_unoccluded": (B, 1, 128, 128), "joints_xyz_norm": (B, 14, 3),
              "joints_uvd_norm": (B, 14, 3), "mano_joints_xyz_norm": (B, 21, 3),
              "mano_joints_uvd_norm": (B, 21, 3), "mano_verts_xyz_norm": (B, 779, 3), "center_xyz": (B, 3),
              "cube": (B, 3), "M": (B, 3, 3), "params": (B, 62)}
    for k, shp in shapes.items():
        assert tuple(batch[k].shape) == shp and batch[k].dtype == torch.float32, k
    c, s, M = batch["center_xyz"], batch["cube"], batch["M"]
    # the DeepPrior++ matrix of each sample's (C, S), recomputed literally in float64 (tests.reference)
    np.testing.assert_allclose(M.numpy(), literal_crop_matrix(c.double().numpy(), s.double().numpy(), CAM),
                               rtol=1e-6, atol=1e-4)
    for tag in ("", "mano_"):  # norm-xyz and norm-uvd agree through util.geometry
        xyz = batch[f"{tag}joints_xyz_norm"].double()
        uvd = norm_xyz_to_norm_uvd(xyz, c.double(), s.double(), M.double(), CAM)
        np.testing.assert_allclose(uvd.numpy(), batch[f"{tag}joints_uvd_norm"].numpy(), atol=2e-4)
    # the mesh vertices, projected in float64, land on the rendered hand and never far in front of its surface
    # (the z-buffer keeps the nearest surface; misses are silhouette pixels and pixel rounding)
    uvd = norm_xyz_to_norm_uvd(batch["mano_verts_xyz_norm"].double(), c.double(), s.double(), M.double(), CAM)
    clean = batch["depth_unoccluded"][:, 0].double()
    px = ((uvd[..., :2] + 1) * 64).round().long().clamp(0, 127)
    val = clean[torch.arange(B)[:, None], px[..., 1], px[..., 0]]
    on = val < 0.99
    assert on.float().mean() >= 0.85
    gap = ((uvd[..., 2] - val) * s[:, None, 2].double() / 2)[on]  # mm the surface lies in front of a vertex
    assert (gap > -10).float().mean() > 0.9 and 0 < gap.median() < 25  # back vertices: about half the thickness
    # NYU-order joints are the 36-joint placement of the MANO joints
    j14 = nyu36_from_mano21(batch["mano_joints_xyz_norm"].double())[:, list(NYU_EVAL_14)]
    np.testing.assert_allclose(j14.numpy(), batch["joints_xyz_norm"].numpy(), atol=1e-5)
    # placement: joint mean on the optical axis at 500-1200 mm, crop centre within 20 mm, cube 200-300 mm
    mm = norm_xyz_to_xyz(batch["mano_joints_xyz_norm"].double(), c.double(), s.double())
    mean = mm.mean(1)
    assert mean[:, :2].abs().max() < 1e-2 and mean[:, 2].min() >= 500 and mean[:, 2].max() <= 1200
    assert (c.double() - mean).abs().max() <= 20 + 1e-3
    assert s.min() >= 200 - 1e-3 and s.max() <= 300 + 1e-3 and torch.all(s[:, :1] == s)
    # shape noise sigma 3 on betas (built-in source: betas 0)
    assert 2.0 < ManoParams.from_vector(batch["params"]).betas.std().item() < 4.0


def test_joints_land_on_rendered_hand_pixels(batch):
    clean = batch["depth_unoccluded"][:, 0]  # joints vs the whole hand (occlusion removes some of it)
    assert clean.min() >= -1 and clean.max() <= 1 and (clean == 1).float().mean() > 0.15
    uvd = batch["mano_joints_uvd_norm"]
    px = ((uvd[..., :2] + 1) * 64).round().long().clamp(0, 127)
    val = clean[torch.arange(clean.shape[0])[:, None], px[..., 1], px[..., 0]]
    on = val < 0.99
    assert on[:, :16].float().mean() >= 0.95  # the 16 regressed joints lie inside the hand
    assert on.float().mean() >= 0.85  # tips (surface vertices) may sit on the silhouette
    gap = ((uvd[..., 2] - val) * batch["cube"][:, None, 2] / 2)[on]  # mm the surface lies in front of a joint
    assert 0 < gap.median() < 25 and (gap > -10).float().mean() > 0.9


def test_occlusion_spheres_and_mask(batch):
    g = torch.Generator().manual_seed(4)
    uvd = batch["mano_joints_uvd_norm"]
    occ = occlusion_spheres(uvd, g)
    n = occ.joint_ids.numel()
    assert 3 <= n <= 9 and occ.joint_ids.unique().numel() == n
    assert ((occ.centers - uvd[:, occ.joint_ids]).abs() <= 0.15 + 1e-6).all() and occ.radii.max() <= 0.3
    depth = batch["depth_unoccluded"]
    mask = occlusion_mask(depth, occ).numpy()
    # float64 loop reference with pixel centres 2 (j + 0.5) / 128 - 1 and each pixel's own depth
    d = depth.double().numpy()[:, 0]
    for b in (0, 5):
        ref = np.zeros((128, 128), bool)
        for i in range(128):
            for j in range(0, 128, 3):
                p = np.array([2 * (j + 0.5) / 128 - 1, 2 * (i + 0.5) / 128 - 1, d[b, i, j]])
                ref[i, j] = np.any(np.linalg.norm(occ.centers[b].double().numpy() - p, axis=1)
                                   < occ.radii[b].double().numpy())
        np.testing.assert_array_equal(mask[b, 0][:, ::3], ref[:, ::3])
    # in the batch: the masked depth differs from the un-occluded render only by pixels set to background
    diff = batch["depth"] != batch["depth_unoccluded"]
    assert diff.any() and (batch["depth"][diff] == 1).all()


def test_deterministic_module_and_view_augmentation(layer, standin_model):
    params = torch.from_numpy(builtin_pose_params(standin_model.hands_coeffs, 3, seed=2))
    ren = SyntheticRenderer(layer, CAM, SyntheticSettings(cube=250.0, occlusion=False))
    a = ren(params, torch.Generator().manual_seed(9))
    b = ren(params, torch.Generator().manual_seed(9))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(a["depth"], a["depth_unoccluded"])  # occlusion off
    rotating = SyntheticRenderer(layer, CAM, SyntheticSettings(cube=250.0, occlusion=False, view_aug="octant"))
    rot = rotating(params, torch.Generator().manual_seed(9))

    def pairwise_mm(out):
        mm = out["mano_joints_xyz_norm"] * out["cube"][:, None, :1] / 2
        return torch.cdist(mm, mm)

    # the view rotation turns the hand about its centre: distances between joints are kept, positions change
    assert (pairwise_mm(a) - pairwise_mm(rot)).abs().max() < 1e-2
    assert (a["mano_joints_xyz_norm"] - rot["mano_joints_xyz_norm"]).abs().max() > 0.05
    # a per-call cube overrides the settings' cube
    small = ren(params, torch.Generator().manual_seed(9), cube=200.0)
    torch.testing.assert_close(small["cube"], a["cube"] * 0.8)


@pytest.mark.parametrize("bad, match", [
    (dict(view_aug="random"), "view_aug"), (dict(depth_range=(900.0, 500.0)), "depth_range"),
    (dict(cube=0.0), "cube"), (dict(size=0), "size"), (dict(cube_jitter=1.0), "cube_jitter"),
    (dict(occlusion_joints=(5, 2)), "occlusion_joints"), (dict(shape_noise=-1.0), "shape_noise"),
    (dict(occlusion="yes"), "occlusion"), (dict(center_jitter=float("nan")), "center_jitter"),
])
def test_settings_validated_at_construction(bad, match):
    """A bad value fails when the settings are built, naming the field (not at the first rendered batch)."""
    with pytest.raises(ValueError, match=match):
        SyntheticSettings(**{"cube": 250.0, **bad})
    with pytest.raises(TypeError):  # a typo in a name is an error too
        SyntheticSettings(cube=250.0, view_agu="none")
    st = SyntheticSettings(cube=250, depth_range=[400, 900], occlusion_joints=[2, 4])
    assert st.cube == 250.0 and st.depth_range == (400.0, 900.0) and st.occlusion_joints == (2, 4)
    with pytest.raises(AttributeError):  # frozen
        st.cube = 300.0


def test_cone_rotations_face_the_camera():
    """The cone source turns the palm normal (-y of the MANO rest hand) within the half-angle of -z."""
    from scipy.spatial.transform import Rotation

    coeffs = np.random.default_rng(0).normal(size=(5, 45))
    for half in (0.0, 30.0):
        p = builtin_pose_params(coeffs, 400, seed=3, rotation="cone", cone_deg=half)
        normals = Rotation.from_rotvec(p[:, :3].astype(np.float64)).apply([0.0, -1.0, 0.0])
        angle = np.degrees(np.arccos(np.clip(-normals[:, 2], -1, 1)))  # to the direction of the camera
        assert angle.max() <= half + 1e-3
        if half:
            assert angle.max() > 0.8 * half  # the cap is filled, not only its centre
    assert np.allclose(Rotation.from_rotvec(PALM_TO_CAMERA).apply([0.0, -1.0, 0.0]), [0, 0, -1], atol=1e-12)
    with pytest.raises(ValueError, match="rotation"):
        builtin_pose_params(coeffs, 2, rotation="octant")


def test_upright_rotations_hold_the_hand_up():
    """The upright source: with no spread, fingers (-x of the MANO rest hand) point up (-y) and the palm normal (-y of
    the rest hand) to the camera (-z), or away from it for the back-facing draw; with the default spread every
    hand keeps its fingers above the horizontal and about half show their back."""
    from scipy.spatial.transform import Rotation

    from dataloader.synthetic import UPRIGHT_RANGES, upright_rotations

    rng = np.random.default_rng(0)
    for back, normal_z in ((0.0, -1.0), (1.0, 1.0)):
        r = Rotation.from_rotvec(upright_rotations(3, rng, (0.0, 0.0, 0.0, back)))
        assert np.allclose(r.apply([-1.0, 0.0, 0.0]), [0, -1, 0], atol=1e-9)
        assert np.allclose(r.apply([0.0, -1.0, 0.0]), [0, 0, normal_z], atol=1e-9)
    coeffs = np.random.default_rng(1).normal(size=(5, 45))
    p = builtin_pose_params(coeffs, 2000, seed=4, rotation="upright")
    r = Rotation.from_rotvec(p[:, :3].astype(np.float64))
    fingers, normals = r.apply([-1.0, 0.0, 0.0]), r.apply([0.0, -1.0, 0.0])
    assert fingers[:, 1].max() < 0.0  # roll <= 45 and pitch <= 35 degrees keep every hand pointing up
    assert 0.45 < (normals[:, 2] < 0).mean() < 0.55  # palm or back to the camera, half each
    tilt = np.degrees(np.arccos(np.clip(-fingers[:, 1], -1, 1)))
    assert tilt.max() > 40.0  # the spread is used, not only the upright centre
    assert UPRIGHT_RANGES[3] == 0.5
