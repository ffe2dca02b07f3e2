"""The DeepPrior++ normalisation quirk (docs/method.md §3) pinned on hand-built data: the farthest
in-range pixel (== ``premax``) becomes background (+1), and ``premax`` is taken *before* augmentation."""
from __future__ import annotations

import numpy as np
import pytest

from dataloader.augment import AugParams
from dataloader.crop import crop_depth, normalize_crop
from dataloader.depth_io import write_centers, write_depth_png, write_joint_data
from dataloader.nyu import NYUDataset
from util.geometry import flip_y

from .conftest import CAM, FAR

C = np.array([0.0, 0.0, 700.0])  # crop centre (mm, y down), projects to the principal point
PLATE, MID, BACK = 650.0, 790.0, 815.0  # depths (mm) of the hand-built surfaces; all inside [575, 825]


def test_normalize_crop_turns_premax_into_background():
    crop = np.array([[0.0, 600.0, 700.0], [810.0, 700.0, 760.0]], np.float32)  # max 810 < far plane 825
    out = normalize_crop(crop, float(crop.max()), 700.0, 250.0)
    expected = np.array([[1.0, -0.8, 0.0], [1.0, 0.0, 0.48]], np.float32)  # (d - 700) / 125; 810 -> +1
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # with a larger premax (e.g. taken before an augmentation that removed the farthest pixel) 810 stays hand
    out = normalize_crop(crop, 900.0, 700.0, 250.0)
    np.testing.assert_allclose(out[1, 0], 0.88, atol=1e-6)


def _plate_frame() -> np.ndarray:
    """480 x 640 mm: far wall 2001; an 80 x 80 px plate at 650 mm around the principal point with two 20 x 20
    px patches on it, at 790 mm (upper left) and 815 mm (lower right, the farthest in-range depth)."""
    d = np.full((480, 640), FAR)
    d[200:280, 280:360] = PLATE
    d[205:225, 285:305] = MID
    d[255:275, 335:355] = BACK
    return d


def test_crop_depth_premax_on_a_hand_built_frame():
    crop, _ = crop_depth(_plate_frame(), C, (250.0, 250.0, 250.0), CAM)
    values = np.unique(crop)
    # 2001 is beyond the far plane -> 0 -> +1; 815 is in range but == premax -> +1 as well
    np.testing.assert_allclose(values, [(PLATE - 700) / 125, (MID - 700) / 125, 1.0], atol=1e-6)


@pytest.fixture(scope="module")
def plate_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("plate")
    d = root / "train"
    d.mkdir()
    write_depth_png(d / "depth_1_0000001.png", _plate_frame())
    # 36 joints on the plate, centroid exactly below C (so neither centre frame is preferred)
    grid = np.array([(x, y) for x in np.linspace(-25, 25, 6) for y in np.linspace(-25, 25, 6)])
    joints = np.concatenate([grid, np.full((36, 1), PLATE + 10.0)], 1)[None, None]  # (1, 1, 36, 3) y down
    up = flip_y(joints)
    uvd = np.stack([CAM[2] + CAM[0] * up[..., 0] / up[..., 2], CAM[3] - CAM[1] * up[..., 1] / up[..., 2],
                    up[..., 2]], -1)
    write_joint_data(d / "joint_data.mat", uvd, up)
    write_centers(d / "center_train_0_refined.txt", C[None])
    return root


@pytest.mark.parametrize("aug, center_z, half, expected", [
    # no augmentation: 815 (premax) -> +1
    (AugParams("none"), 700.0, 125.0, [PLATE, MID]),
    # com: the shifted range [580, 830] keeps 815, which still equals the pre-augmentation premax -> +1
    (AugParams("com", offset=(4.0, -3.0, 5.0)), 705.0, 125.0, [PLATE, MID]),
    # sc 0.82: range [597.5, 802.5] drops 815 (-> 0 -> +1); the new maximum 790 is NOT premax and stays hand
    (AugParams("sc", scale=0.82), 700.0, 102.5, [PLATE, MID]),
    # sc 1.1: range [562.5, 837.5]; premax 815 -> +1 although in range
    (AugParams("sc", scale=1.1), 700.0, 137.5, [PLATE, MID]),
])
def test_loader_takes_premax_before_augmentation(plate_tree, aug, center_z, half, expected):
    ds = NYUDataset(plate_tree, "train", augment=False)
    item = ds.load(0, aug)
    assert item["center_xyz"][2].item() == pytest.approx(center_z)
    assert item["cube"][2].item() == pytest.approx(2 * half, rel=1e-6)
    depth = item["depth"][0].numpy()
    want = [(v - center_z) / half for v in expected] + [1.0]
    np.testing.assert_allclose(np.unique(depth), want, atol=1e-5)
    mid = np.isclose(depth, (MID - center_z) / half, atol=1e-5).sum()
    assert mid > 40  # the 790 mm patch (about 12 x 12 crop pixels) is there, as hand
