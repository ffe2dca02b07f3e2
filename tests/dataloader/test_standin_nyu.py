"""The NYU-format stand-in: tree contents, read back through the NYU loader, labels on the hand, augmentation
against re-rendered meshes, determinism and the 36-joint placement."""
from __future__ import annotations

import filecmp

import numpy as np
import pytest
import torch

from dataloader.augment import AugParams, augment_crop, rotate_points_2d
from dataloader.crop import crop_depth_mm, normalize_crop
from dataloader.depth_io import decode_depth, load_centers, load_joint_data
from dataloader.nyu import NYUDataset, center_frame_offsets
from dataloader.nyu_joints import nyu36_from_mano21
from dataloader.standin_nyu import (StandinConfig, ensure_standin_nyu, generate_standin_nyu,
                                    render_standin_batch, sample_standin_params)
from render.mano_layer import ManoLayer
from render.rasterizer import render_crop
from util.camera import NYU_CAMERA
from util.geometry import flip_y, uvd_to_norm_uvd, uvd_to_xyz, xyz_to_uvd
from util.joints import NYU36_TO_MANO21, NYU_EVAL_14, NYU_JOINT_NAMES_36

CAM = NYU_CAMERA.as_tuple()
NON_TIPS = [1, 3, 5, 7, 9, 10, 11, 12, 13]  # NYU-14 order: tips are 0, 2, 4, 6, 8
INNER = [1, 3, 5, 7, 9, 10, 13]  # neither tips nor the wrist points 11, 12 (at the open end of the hand mesh)
NOT_WRIST = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13]


@pytest.fixture(scope="module")
def tree(tmp_path_factory, standin_pkl):
    root = tmp_path_factory.mktemp("standin")
    generate_standin_nyu(root, n_train=6, n_test=4, seed=3, mano_path=str(standin_pkl), views=3, batch_size=4)
    return root


def test_tree_layout_and_formats(tree):
    for split, n in (("train", 6), ("test", 4)):
        d = tree / split
        jd = load_joint_data(d / "joint_data.mat")
        assert jd.joint_xyz.shape == (3, n, 36, 3) and jd.names == NYU_JOINT_NAMES_36
        # uvd is the projection of the y-up xyz (v = cy - fy y / z)
        fx, fy, cx, cy = CAM
        x, y, z = np.moveaxis(jd.joint_xyz, -1, 0)
        projected = np.stack([cx + fx * x / z, cy - fy * y / z, z], -1)
        np.testing.assert_allclose(jd.joint_uvd, projected, atol=1e-9)
        for v in (1, 2, 3):
            for i in range(n):
                depth = decode_depth(d / f"depth_{v}_{i + 1:07d}.png")
                synth = decode_depth(d / f"synthdepth_{v}_{i + 1:07d}.png")
                assert depth.shape == (480, 640) and depth.min() > 0  # as real NYU: no zeros, 2001 = invalid
                assert 0.0 < (depth == 2001).mean() < 1.0 and synth.max() > 0 and (synth == 0).mean() > 0.5
            per_view, ok = load_centers(d / f"center_{split}_{v - 1}_refined.txt", num_frames=n)
            assert ok.all()
            off = center_frame_offsets(per_view, flip_y(jd.joint_xyz[v - 1])[:, list(NYU_EVAL_14)])
            assert off["y_down"] < 35 < off["y_up"]  # DSF per-view files are y-down ...
        common, _ = load_centers(d / f"center_{split}_refined.txt", num_frames=n)
        view1 = load_centers(d / f"center_{split}_0_refined.txt")[0]
        np.testing.assert_allclose(flip_y(common), view1)  # ... the V2V-style file y-up


def test_views_show_the_same_articulation(tree):
    jd = load_joint_data(tree / "train" / "joint_data.mat")
    bones = [np.linalg.norm(jd.joint_xyz[v][:, 1:30] - jd.joint_xyz[v][:, :29], axis=-1) for v in range(3)]
    np.testing.assert_allclose(bones[1], bones[0], atol=1e-6)  # rigidly moved copies of one hand
    np.testing.assert_allclose(bones[2], bones[0], atol=1e-6)
    assert np.abs(jd.joint_xyz[1] - jd.joint_xyz[0]).max() > 10  # ... seen from other poses


def _on_pixels(item) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per joint: on a foreground crop pixel, within two pixels of one, and label depth - crop depth (mm).

    (A tip vertex lies on the silhouette, crop pixels sample floor-mapped source pixels, and the ``premax``
    quirk blanks the farthest pixel, often a tip: two pixels of slack.)"""
    crop = item["depth"][0].numpy()
    uvd = item["joints_uvd_norm"].numpy()
    px = np.clip(np.round((uvd[:, :2] + 1) * 64).astype(int), 2, 125)
    fg = crop < 0.99
    on = fg[px[:, 1], px[:, 0]]
    near = np.stack([fg[px[:, 1] + di, px[:, 0] + dj] for di in range(-2, 3) for dj in range(-2, 3)]).any(0)
    gap = (uvd[:, 2] - crop[px[:, 1], px[:, 0]]) * item["cube"][2].item() / 2
    return on, near, gap


def test_loader_reads_standin_with_labels_on_the_hand(tree):
    for split in ("train", "test"):
        for view in (1, 2, 3):
            clean = NYUDataset(tree, split, view=view, augment=False, depth_kind="synthdepth")
            sensor = NYUDataset(tree, split, view=view, augment=False, joints21=True)
            assert sensor.center_frame == "y_down"
            for i in range(len(sensor)):
                it = clean[i]
                on, near, gap = _on_pixels(it)
                assert on[INNER].sum() >= len(INNER) - 1, (split, view, i)
                assert near[NOT_WRIST].all(), (split, view, i)  # tips may sit on the silhouette
                # the visible surface lies in front of (or at) each inner joint (inside the hand or behind
                # other fingers), unless the joint is clipped by the cube's near/far plane
                sel = np.zeros(14, bool)
                sel[INNER] = True
                sel &= on & (np.abs(it["joints_uvd_norm"][:, 2].numpy()) < 0.9)
                assert (gap[sel] > -12.0).all() and np.median(gap[sel]) > 0, (split, view, i, gap)
                on, near, _ = _on_pixels(sensor[i])  # sensor frames lose thin-finger edges and holes
                assert on.mean() >= 0.5 and near.mean() >= 0.9, (split, view, i, on, near)


@pytest.mark.parametrize("aug", [AugParams("rot", rotation=120.0), AugParams("com", offset=(8.0, -9.0, 6.0)),
                                 AugParams("sc", scale=0.83), AugParams("sc", scale=1.18)])
def test_augmentation_matches_rerendered_mesh(standin_model, aug):
    """Augment a sensor crop, then render the GT mesh under the augmented crop geometry: both must agree."""
    layer = ManoLayer(standin_model)
    rng = np.random.default_rng(7)
    cfg = StandinConfig()
    params = sample_standin_params(standin_model.hands_coeffs, 2, cfg, rng)
    res = render_standin_batch(layer, params, 1, CAM, (480, 640), cfg, rng)
    for b in range(2):
        depth, verts = res["depth"][0][b], res["verts"][0][b]
        joints = res["joints36"][0][b][list(NYU_EVAL_14)]
        center, cube = joints.mean(0) + [5.0, -4.0, 3.0], np.full(3, 250.0)
        crop, M = crop_depth_mm(depth, center, cube, CAM)
        out = augment_crop(crop, joints, center, cube, M, CAM, aug)
        img = normalize_crop(out.crop_mm, float(crop.max()), out.center_xyz[2], out.cube[2])
        mesh = verts
        if aug.mode == "rot":  # the mesh turned like the labels: in the image plane about the centre
            uvd = xyz_to_uvd(verts, CAM)
            uvd[:, :2] = rotate_points_2d(uvd[:, :2], xyz_to_uvd(center, CAM), aug.rotation)
            mesh = uvd_to_xyz(uvd, CAM)
        ren, M_r = render_crop(torch.tensor(mesh[None], dtype=torch.float32), layer.faces_closed,
                               torch.tensor(out.center_xyz[None], dtype=torch.float32),
                               torch.tensor(out.cube[None], dtype=torch.float32), CAM)
        np.testing.assert_allclose(M_r[0].numpy(), out.M, rtol=1e-5, atol=1e-3)
        hand = ren.mask[0].numpy()
        seen = img < 0.99
        assert hand.sum() > 300
        assert seen[hand].mean() > 0.9  # the augmented crop has data where the mesh lands
        both = hand & seen
        err = np.abs(img[both] * out.cube[2] / 2 + out.center_xyz[2] - ren.depth[0].numpy()[both])
        assert np.mean(err < 8.0) > 0.85, (aug, b, np.median(err))
        # augmented labels land on re-rendered hand pixels
        uvd_n = uvd_to_norm_uvd(xyz_to_uvd(out.joints_xyz, CAM), out.center_xyz, out.cube, out.M)
        px = np.clip(np.round((uvd_n[:, :2] + 1) * 64).astype(int), 1, 126)
        near_hand = np.stack([hand[px[:, 1] + di, px[:, 0] + dj]
                              for di in (-1, 0, 1) for dj in (-1, 0, 1)]).any(0)
        assert hand[px[:, 1], px[:, 0]][NON_TIPS].all()  # tips may sit on the silhouette edge ...
        assert near_hand.all()  # ... but within a pixel of the hand


def test_deterministic_for_a_seed_and_ensure(tmp_path, standin_pkl):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for root, seed in ((a, 1), (b, 1), (c, 2)):
        generate_standin_nyu(root, 2, 1, seed=seed, mano_path=str(standin_pkl), views=1)
    for name in ("train/depth_1_0000002.png", "train/synthdepth_1_0000001.png",
                 "test/center_test_0_refined.txt"):
        assert filecmp.cmp(a / name, b / name, shallow=False)
        assert not filecmp.cmp(a / name, c / name, shallow=False)
    stamp = (a / "train" / "depth_1_0000001.png").stat().st_mtime_ns
    ensure_standin_nyu(a, 2, 1, seed=1, mano_path=str(standin_pkl), views=1)  # same settings: no rewrite
    assert (a / "train" / "depth_1_0000001.png").stat().st_mtime_ns == stamp
    generate_standin_nyu(tmp_path / "d", 2, 1, seed=1, mano_path=str(standin_pkl), views=3, view_mode="copy")
    assert filecmp.cmp(tmp_path / "d" / "train" / "depth_3_0000002.png",
                       tmp_path / "d" / "train" / "depth_1_0000002.png", shallow=False)
    with pytest.raises(ValueError, match="view_mode"):
        generate_standin_nyu(tmp_path / "e", 1, 1, view_mode="mirror")


def test_nyu36_joints_from_mano():
    rng = np.random.default_rng(0)
    j21 = rng.normal(size=(4, 21, 3)) * 50
    j36 = nyu36_from_mano21(j21)
    np.testing.assert_array_equal(j36[:, list(NYU36_TO_MANO21)], j21)  # the 21 mapped joints are MANO's
    np.testing.assert_allclose(j36[:, 2], (j21[:, 8] + j21[:, 9]) / 2)  # pinky KNU2_A: PIP-DIP midpoint
    torch_out = nyu36_from_mano21(torch.tensor(j21))
    np.testing.assert_allclose(torch_out.numpy(), j36, atol=1e-9)
    # PALM_1: beside the wrist (PALM_2), towards the pinky, orthogonal to the wrist -> middle-MCP direction
    f = j21[:, 4] - j21[:, 0]
    side = j36[:, 30] - j36[:, 31]
    np.testing.assert_allclose((side * f).sum(-1), 0, atol=1e-9)
    assert np.all((side * (j21[:, 7] - j21[:, 1])).sum(-1) > 0)


def test_regenerating_over_linked_views_keeps_view_1(tmp_path, standin_pkl):
    root = tmp_path / "t"
    generate_standin_nyu(root, 2, 1, seed=4, mano_path=str(standin_pkl), views=2, view_mode="copy")
    generate_standin_nyu(root, 2, 1, seed=4, mano_path=str(standin_pkl), views=2, view_mode="render")
    fresh = tmp_path / "f"
    generate_standin_nyu(fresh, 2, 1, seed=4, mano_path=str(standin_pkl), views=2, view_mode="render")
    for name in ("train/depth_1_0000001.png", "train/depth_2_0000001.png"):
        assert filecmp.cmp(root / name, fresh / name, shallow=False)
