"""Released-format MANO fits: file round trip, clear errors, and the stand-in's fits re-posed through the MANO
layer landing on the frame's joint labels and on its rendered hand surface."""
from __future__ import annotations

import numpy as np
import pytest

from dataloader.depth_io import DataFileError, decode_depth, load_joint_data
from dataloader.nyu import NYUDataset
from dataloader.nyu_fits import FitPointLabels, default_fits_dir, load_nyu_fits, write_nyu_fits
from dataloader.nyu_joints import nyu36_from_mano21
from dataloader.standin_nyu import generate_standin_nyu
from render.mano_layer import ManoLayer
from util.camera import NYU_CAMERA
from util.geometry import flip_y, xyz_to_uvd

CAM = NYU_CAMERA.as_tuple()


@pytest.fixture(scope="module")
def fit_tree(tmp_path_factory, standin_pkl):
    root = tmp_path_factory.mktemp("fits")
    generate_standin_nyu(root, n_train=4, n_test=3, seed=5, mano_path=str(standin_pkl), views=3, batch_size=4)
    return root


@pytest.fixture(scope="module")
def layer(standin_model):
    return ManoLayer(standin_model)


def test_write_read_round_trip_official_names(tmp_path):
    rng = np.random.default_rng(0)
    fits = rng.normal(0, 1, (5, 62)) * np.r_[np.ones(58), 0.1, 300, 300, 300]
    write_nyu_fits(tmp_path, "test", 2, fits)
    d = tmp_path / "posePara_lm_collosion"
    widths = {"glb": 3, "pose": 45, "shape": 10, "scale": 1, "trans": 3}
    for name, w in widths.items():  # the official names and column counts, %.6f text
        a = np.loadtxt(d / f"nyu-test-2-{name}.txt", ndmin=2)
        assert a.shape == (5, w)
    np.testing.assert_allclose(np.loadtxt(d / "nyu-test-2-glb.txt"), fits[:, :3], atol=5e-7)
    np.testing.assert_allclose(np.loadtxt(d / "nyu-test-2-trans.txt"), fits[:, 59:], atol=5e-7)
    back = load_nyu_fits(d, "test", view=3, num_frames=5)
    assert back.shape == (5, 62) and back.dtype == np.float32
    np.testing.assert_allclose(back, fits, atol=1e-4, rtol=1e-6)


def test_reader_errors_name_the_file(tmp_path):
    write_nyu_fits(tmp_path, "train", 0, np.zeros((3, 62)))
    d = default_fits_dir(tmp_path)
    with pytest.raises(DataFileError, match="nyu-train-0-glb.txt.*3 rows.*5 frames"):
        load_nyu_fits(d, "train", 1, num_frames=5)
    with pytest.raises(FileNotFoundError, match="nyu-test-0-glb.txt"):
        load_nyu_fits(d, "test", 1)
    (d / "nyu-train-0-shape.txt").write_text("1 2 3\n4 5 6\n7 8 9\n")
    with pytest.raises(DataFileError, match="nyu-train-0-shape.txt: expected 10 columns"):
        load_nyu_fits(d, "train", 1)
    with pytest.raises(ValueError, match="view must be"):
        load_nyu_fits(d, "train", 0)


def test_fits_repose_onto_joint_labels(fit_tree, layer):
    """MANO(fit) -> 21 joints -> NYU-36 placement equals joint_data.mat (y up there) in every view/split."""
    for split, n in (("train", 4), ("test", 3)):
        labels = load_joint_data(fit_tree / split / "joint_data.mat")
        for view in (1, 2, 3):
            fits = load_nyu_fits(default_fits_dir(fit_tree), split, view, num_frames=n)
            pts = FitPointLabels(fits, layer).batch(range(n))
            assert pts.shape == (n, 800, 3)
            joints36 = flip_y(nyu36_from_mano21(pts[:, :21]))
            np.testing.assert_allclose(joints36, labels.joint_xyz[view - 1], atol=0.01)  # mm (%.6f text)


def test_fit_mesh_lies_on_the_rendered_hand(fit_tree, layer):
    """Independent of the labels: the fit's vertices project onto the clean hand render (synthdepth) and none
    lies clearly in front of the visible surface; the visible ones lie on it."""
    fits = load_nyu_fits(default_fits_dir(fit_tree), "test", 1)
    verts = FitPointLabels(fits, layer).batch(range(len(fits)))[:, 21:]
    for i, v in enumerate(verts):
        synth = decode_depth(fit_tree / "test" / f"synthdepth_1_{i + 1:07d}.png")
        uvd = xyz_to_uvd(v, CAM)
        u, r = np.round(uvd[:, 0]).astype(int), np.round(uvd[:, 1]).astype(int)
        surf = synth[r, u]
        on_hand = surf > 0
        assert on_hand.mean() > 0.7  # off: silhouette round-off, wrist vertices behind the forearm
        gap = surf[on_hand] - uvd[on_hand, 2]  # > 0: vertex in front of the rendered surface
        assert np.mean(np.abs(gap) < 3.0) > 0.25  # the visible side sits on the surface (1 mm steps)
        assert np.mean(gap > 3.0) < 0.1  # only silhouette round-off lands on a farther surface


def test_point_labels_follow_the_augmentation(fit_tree, layer):
    """The dataset's point labels (fit joints) equal its own MANO-order joint labels (from joint_data.mat) under
    every augmentation mode: the fits and the annotation agree after the crop transforms."""
    from dataloader.augment import AugParams

    fits = load_nyu_fits(default_fits_dir(fit_tree), "train", 1)
    ds = NYUDataset(fit_tree, "train", joints21=True, point_labels=FitPointLabels(fits, layer))
    for aug in (AugParams("none"), AugParams("rot", rotation=70.0), AugParams("com", offset=(8.0, -5.0, 6.0)),
                AugParams("sc", scale=1.15)):
        for i in range(len(ds)):
            item = ds.load(i, aug)
            assert item["points_xyz_norm"].shape == (800, 3)
            np.testing.assert_allclose(item["points_xyz_norm"][:21], item["joints_xyz_norm21"], atol=2e-4)
            np.testing.assert_allclose(item["points_uvd_norm"][:21], item["joints_uvd_norm21"], atol=2e-4)
