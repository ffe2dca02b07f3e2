"""Label construction of the supervised upper bound (benchmark of issue 16): the labelled-batch view of real crops
with MANO-fit point labels, checked against an independent numpy computation from the tree's files (joints) and
against the crop's own hand surface (vertices), with and without the rotation augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from dataloader.augment import AugParams
from dataloader.depth_io import load_joint_data
from dataloader.nyu import NYUDataset
from dataloader.nyu_fits import FitPointLabels, default_fits_dir, load_nyu_fits
from dataloader.standin_nyu import generate_standin_nyu
from model.supervised import supervised_targets
from render.mano_layer import ManoLayer
from util.camera import NYU_CAMERA
from util.joints import NYU36_TO_MANO21

FX, FY, CX, CY = NYU_CAMERA.as_tuple()
MM = 1.0 / 125.0  # one millimetre in norm units of the 250 mm cube


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, standin_pkl, standin_model):
    root = tmp_path_factory.mktemp("sup")
    generate_standin_nyu(root, n_train=3, n_test=1, seed=11, mano_path=str(standin_pkl), views=1, batch_size=3)
    fits = load_nyu_fits(default_fits_dir(root), "train", 1, num_frames=3)
    ds = NYUDataset(root, "train", depth_kind="synthdepth", crop_sampling="warp",
                    point_labels=FitPointLabels(fits, ManoLayer(standin_model)))
    return root, ds


def test_joint_targets_match_numpy_from_files(labelled):
    root, ds = labelled
    batch = default_collate([ds.load(i, AugParams("none")) for i in range(len(ds))])
    t = supervised_targets(batch)
    assert t["mano_joints_xyz_norm"].shape == (3, 21, 3) and t["mano_verts_xyz_norm"].shape == (3, 779, 3)
    # independent: joint_data.mat (y up) -> MANO order -> y down; centre file (y down); cube 250
    xyz = load_joint_data(root / "train" / "joint_data.mat").joint_xyz[0][:, list(NYU36_TO_MANO21)] * [1, -1, 1]
    centre = np.loadtxt(root / "train" / "center_train_0_refined.txt")
    np.testing.assert_allclose(t["mano_joints_xyz_norm"].numpy(), (xyz - centre[:, None]) / 125.0, atol=2e-5)
    u, v = CX + FX * xyz[..., 0] / xyz[..., 2], CY + FY * xyz[..., 1] / xyz[..., 2]
    M = batch["M"].double().numpy()
    uc = M[:, None, 0, 0] * u + M[:, None, 0, 1] * v + M[:, None, 0, 2]
    vc = M[:, None, 1, 0] * u + M[:, None, 1, 1] * v + M[:, None, 1, 2]
    ref = np.stack([uc / 64 - 1, vc / 64 - 1, (xyz[..., 2] - centre[:, None, 2]) / 125.0], -1)
    np.testing.assert_allclose(t["mano_joints_uvd_norm"].numpy(), ref, atol=2e-5)
    assert torch.equal(t["depth"], batch["depth"]) and torch.equal(t["M"], batch["M"])


def _surface_check(depth: np.ndarray, verts_uvd: np.ndarray) -> tuple[float, float, float]:
    """(on-hand fraction, fraction on the surface, fraction clearly in front) of verts (V, 3) norm-uvd on a
    normalised crop (S, S), background +1."""
    size = depth.shape[0]
    j = np.clip(np.round((verts_uvd[:, 0] + 1) * size / 2).astype(int), 0, size - 1)
    i = np.clip(np.round((verts_uvd[:, 1] + 1) * size / 2).astype(int), 0, size - 1)
    surf = depth[i, j]
    hand = surf < 0.99
    gap = surf[hand] - verts_uvd[hand, 2]
    return hand.mean(), np.mean(np.abs(gap) < 3 * MM), np.mean(gap > 3 * MM)


@pytest.mark.parametrize("aug", [AugParams("none"), AugParams("rot", rotation=120.0),
                                 AugParams("sc", scale=0.85)], ids=["none", "rot", "sc"])
def test_vertex_targets_lie_on_the_crop_hand(labelled, aug):
    """The mesh targets (norm-xyz -> norm-uvd via the crop's M) sit on the clean crop's hand surface; a label
    transform that missed the augmentation would land beside the rotated hand."""
    from util.geometry import norm_xyz_to_norm_uvd

    _, ds = labelled
    batch = default_collate([ds.load(i, aug) for i in range(len(ds))])
    t = supervised_targets(batch)
    uvd = norm_xyz_to_norm_uvd(t["mano_verts_xyz_norm"].double(), batch["center_xyz"].double(),
                               batch["cube"].double(), batch["M"].double(), NYU_CAMERA.as_tuple())
    for b in range(len(ds)):
        on_hand, on_surface, in_front = _surface_check(batch["depth"][b, 0].numpy(), uvd[b].numpy())
        assert on_hand > 0.7 and on_surface > 0.25 and in_front < 0.1, (on_hand, on_surface, in_front)


def test_missing_point_labels_is_a_clear_error(labelled):
    _, ds = labelled
    item = ds.load(0, AugParams("none"))
    del item["points_xyz_norm"]
    with pytest.raises(KeyError, match="point labels"):
        supervised_targets(default_collate([item]))
