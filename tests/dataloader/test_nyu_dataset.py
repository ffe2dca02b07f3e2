"""NYUDataset on a tiny analytic tree (tests/dataloader/conftest.py): items, labels on the hand, inverse,
augmentation, centre frames, test cube rule, error messages and ``skip_bad``."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dataloader.augment import AugParams, augment_crop
from dataloader.crop import crop_depth_mm
from dataloader.depth_io import (DataFileError, load_joint_data, write_centers, write_depth_png,
                                 write_joint_data)
from dataloader.nyu import NYUDataset, norm_uvd_to_image_uvd, norm_xyz_to_mm
from util.geometry import flip_y, xyz_to_uvd
from util.joints import NYU_EVAL_14

from .conftest import BALL_R, CAM, write_ball_tree

EVAL = list(NYU_EVAL_14)


def _surface_gap(item) -> np.ndarray:
    """Per joint: label depth minus crop depth at the label's crop pixel (mm); ~BALL_R when on its ball."""
    c, s = item["center_xyz"].numpy(), item["cube"].numpy()
    crop = item["depth"][0].numpy()
    uvd = item["joints_uvd_norm"].numpy()
    px = np.clip(np.round((uvd[:, :2] + 1.0) * 64).astype(int), 0, 127)
    observed = crop[px[:, 1], px[:, 0]] * s[2] / 2 + c[2]
    return uvd[:, 2] * s[2] / 2 + c[2] - observed


def test_items_shapes_labels_and_collate(ball_tree):
    root, joints = ball_tree
    ds = NYUDataset(root, "test", joints21=True)
    assert len(ds) == len(joints["test"]) and ds.center_frame == "y_down" and not ds.augment
    item = ds[0]
    shapes = {"depth": (1, 128, 128), "joints_xyz_norm": (14, 3), "joints_uvd_norm": (14, 3),
              "center_xyz": (3,), "cube": (3,), "M": (3, 3), "joints_xyz_norm21": (21, 3),
              "joints_uvd_norm21": (21, 3)}
    for k, shp in shapes.items():
        assert tuple(item[k].shape) == shp and item[k].dtype == torch.float32, k
    assert item["index"] == 0
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["depth"].shape == (3, 1, 128, 128) and batch["index"].tolist() == [0, 1, 2]
    for i in range(len(ds)):
        it = ds[i]
        gap = _surface_gap(it)
        assert np.all(np.abs(gap - BALL_R) < 4.0), (i, gap)  # each joint on its own ball, ~R behind surface
        # exact inverse back to mm (y down) and to the full-image uvd of the file
        xyz = norm_xyz_to_mm(it["joints_xyz_norm"].double(), it["center_xyz"].double(), it["cube"].double())
        np.testing.assert_allclose(xyz.numpy(), joints["test"][i, EVAL], atol=1e-3)
        uvd = norm_uvd_to_image_uvd(it["joints_uvd_norm"].double(), it["center_xyz"].double(),
                                    it["cube"].double(), it["M"].double())
        np.testing.assert_allclose(uvd.numpy(), xyz_to_uvd(joints["test"][i, EVAL], CAM), atol=2e-3)


def test_centre_frames_and_joint_mean(ball_tree, tmp_path):
    root, joints = ball_tree
    ds = NYUDataset(root, "test")
    per_view = ds.centers_mm()
    # the common y-up file gives the same centres once converted
    common = NYUDataset(root, "test", center_file=root / "test" / "center_test_refined.txt")
    assert common.center_frame == "y_up"
    np.testing.assert_allclose(common.centers_mm(), per_view, atol=1e-9)
    # a y-up file under a per-view name is detected through the labels (all hands here are off-axis enough)
    wrong = tmp_path / "center_test_0_refined.txt"
    write_centers(wrong, flip_y(per_view))
    with pytest.warns(UserWarning, match="using y_up"):
        fixed = NYUDataset(root, "test", center_file=wrong)
    np.testing.assert_allclose(fixed.centers_mm(), per_view, atol=1e-9)
    jm = NYUDataset(root, "test", center_type="joint_mean")
    np.testing.assert_allclose(jm.centers_mm(), joints["test"][:, EVAL].mean(1), atol=1e-9)


def test_test_cube_rule_only_for_standard_size(ball_tree):
    root, _ = ball_tree
    assert np.all(NYUDataset(root, "test").cubes_mm() == 250.0)  # 5 frames != 8252: no 5/6 rule
    ds = NYUDataset(root, "test", standard_test_frames=5, test_cube_split=2)
    np.testing.assert_allclose(ds.cubes_mm()[:, 0], [250, 250] + [250 * 5 / 6] * 3)
    assert ds[3]["cube"][0].item() == pytest.approx(250 * 5 / 6)
    assert np.all(NYUDataset(root, "train", standard_test_frames=6, test_cube_split=2).cubes_mm() == 250.0)


@pytest.mark.parametrize("aug", [AugParams("rot", rotation=73.0), AugParams("rot", rotation=-150.0),
                                 AugParams("com", offset=(9.0, -7.0, 8.0)), AugParams("sc", scale=0.82),
                                 AugParams("sc", scale=1.19)])
def test_augmentation_keeps_labels_on_the_hand(ball_tree, aug):
    root, joints = ball_tree
    ds = NYUDataset(root, "train")
    for i in range(3):
        it = ds.load(i, aug)
        gap = _surface_gap(it)
        tol = 6.0 if aug.mode == "rot" else 4.0  # rot labels move in the image plane only
        assert np.mean(np.abs(gap - BALL_R) < tol) >= 13 / 14, (aug, i, gap)
        c, s = it["center_xyz"].numpy(), it["cube"].numpy()
        if aug.mode == "com":
            np.testing.assert_allclose(c, ds.centers_mm()[i] + aug.offset, atol=1e-4)
        if aug.mode == "sc":
            np.testing.assert_allclose(s, 250 * aug.scale, rtol=1e-6)
        if aug.mode != "rot":  # label mm unchanged, only re-expressed against the new centre / cube
            c, s = it["center_xyz"].double(), it["cube"].double()
            xyz = norm_xyz_to_mm(it["joints_xyz_norm"].double(), c, s)
            np.testing.assert_allclose(xyz.numpy(), joints["train"][i, EVAL], atol=1e-3)


def test_recrop_equals_direct_crop(ball_tree):
    """com/sc re-warp of the crop == cropping the full frame at the new centre/cube (nearest sampling twice
    may move a few edge pixels)."""
    root, joints = ball_tree
    ds = NYUDataset(root, "train")
    from dataloader.depth_io import decode_depth
    depth = decode_depth(ds.file_path(1))
    c, s = ds.centers_mm()[1], ds.cubes_mm()[1]
    crop, M = crop_depth_mm(depth, c, s, CAM)
    for aug, c2, s2 in ((AugParams("com", offset=(6.0, -4.0, 5.0)), c + [6.0, -4.0, 5.0], s),
                        (AugParams("sc", scale=1.15), c, s * 1.15)):
        res = augment_crop(crop, joints["train"][1, EVAL], c, s, M, CAM, aug)
        direct, M2 = crop_depth_mm(depth, c2, s2, CAM)
        np.testing.assert_allclose(res.M, M2)
        # each re-warped pixel equals a direct-crop pixel at most one pixel away
        pad = np.pad(direct, 1)
        near = np.min([np.abs(res.crop_mm - pad[1 + dy:129 + dy, 1 + dx:129 + dx])
                       for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
        assert (res.crop_mm > 0).sum() > 500
        assert np.mean(near < 4.0) > 0.995  # ball rims change depth by a few mm per pixel
        assert np.mean((res.crop_mm > 0) == (direct > 0)) > 0.97


def test_random_augmentation_reproducible_and_varied(ball_tree):
    root, _ = ball_tree
    ds = NYUDataset(root, "train")
    assert ds.augment
    torch.manual_seed(5)
    a = [ds[0] for _ in range(8)]
    torch.manual_seed(5)
    b = [ds[0] for _ in range(8)]
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["depth"], y["depth"]) and torch.equal(x["joints_uvd_norm"], y["joints_uvd_norm"])
    distinct = {tuple(np.round(x["joints_uvd_norm"][0].numpy(), 4)) for x in a}
    assert len(distinct) >= 3
    loader = DataLoader(ds, batch_size=2, num_workers=0)
    assert next(iter(loader))["depth"].shape == (2, 1, 128, 128)


def _warnings_of(fn):
    """(result, [warning messages]) of fn()."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = fn()
    return out, [str(w.message) for w in rec]


def test_missing_and_corrupt_files(tmp_path):
    root = tmp_path / "tree"
    write_ball_tree(root, n_train=3, n_test=7, seed=3)
    test_dir = root / "test"
    png = [test_dir / f"depth_1_{i + 1:07d}.png" for i in range(7)]
    png[1].unlink()
    with pytest.raises(FileNotFoundError, match="depth_1_0000002.png"):
        NYUDataset(root, "test")
    png[2].write_bytes(b"not a png")
    data = png[3].read_bytes()
    png[3].write_bytes(data[:len(data) // 2])  # truncated
    write_depth_png(png[4], np.full((240, 320), 700.0))  # a valid PNG of the wrong size
    bad_inside = bytearray(png[5].read_bytes())
    bad_inside[len(bad_inside) // 2:len(bad_inside) // 2 + 16] = b"0123456789abcdef"  # header and IEND intact
    png[5].write_bytes(bytes(bad_inside))

    # without skip_bad a corrupt PNG stops __getitem__ with the file's name
    strict = NYUDataset(root, "test", frames=[0, 2, 3, 5, 6])
    for i, name in ((1, "depth_1_0000003.png"), (2, "depth_1_0000004.png"), (3, "depth_1_0000006.png")):
        with pytest.raises(DataFileError, match=name):
            strict[i]

    # skip_bad: every frame checked at construction, ONE summary warning, final frame list and a count
    ds, msgs = _warnings_of(lambda: NYUDataset(root, "test", skip_bad=True))
    assert len(msgs) == 1, msgs
    assert "skipping 4 of 7 frames (1 missing PNG, 3 bad PNG); first: missing PNG" in msgs[0]
    assert "depth_1_0000002.png" in msgs[0]
    assert ds.frames.tolist() == [0, 5, 6] and ds.num_skipped == 4 and len(ds) == 3
    reasons = dict(ds.skipped)
    assert set(reasons) == {1, 2, 3, 4}
    assert "not a PNG" in reasons[2] and "truncated" in reasons[3]
    assert "expected an 8-bit RGB PNG of 640x480, got 320x240" in reasons[4]
    # a frame that passes the header check but fails to decode is reported, never replaced by another frame
    assert ds[0]["index"] == 0 and ds[2]["index"] == 6
    with pytest.raises(DataFileError, match=r"depth_1_0000006\.png.*never substituted"):
        ds[1]
    _, msgs = _warnings_of(lambda: NYUDataset(root, "test", skip_bad=True, frames=[0, 6]))
    assert msgs == []  # nothing bad among the requested frames

    centre = test_dir / "center_test_0_refined.txt"
    lines = centre.read_text().splitlines()
    centre.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataFileError, match="center_test_0_refined.txt: 6 centre lines"):
        NYUDataset(root, "test", skip_bad=True)
    centre.write_text("\n".join(lines[:6] + ["invalid"]) + "\n")
    ds, msgs = _warnings_of(lambda: NYUDataset(root, "test", skip_bad=True))
    assert len(msgs) == 1
    assert "skipping 5 of 7 frames (1 'invalid' centre, 1 missing PNG, 3 bad PNG)" in msgs[0]
    assert ds.frames.tolist() == [0, 5] and dict(ds.skipped)[6].startswith("'invalid' centre")

    (root / "train" / "joint_data.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 50)
    with pytest.raises(DataFileError, match="train.joint_data.mat"):
        NYUDataset(root, "train")
    shutil.rmtree(root / "train")
    with pytest.raises(FileNotFoundError, match="joint_data.mat"):
        NYUDataset(root, "train")


def test_invalid_label_depths(tmp_path):
    """Non-finite or non-positive z in joint_xyz / joint_uvd of the used view: an error naming the file, the
    frame and the joint, or a skip with skip_bad; other views are not affected."""
    root = tmp_path / "tree"
    write_ball_tree(root, n_train=1, n_test=5, seed=6, views=2)
    mat = root / "test" / "joint_data.mat"
    jd = load_joint_data(mat)
    xyz, uvd = jd.joint_xyz.copy(), jd.joint_uvd.copy()
    xyz[0, 3, 7, 2] = -5.0  # view 1, frame 3, joint 7: z behind the camera
    uvd[0, 1, 20, 2] = np.nan  # view 1, frame 1, joint 20 (a joint outside the 14): uvd only
    xyz[0, 4, 0, 2] = 0.0  # view 1, frame 4, joint 0: z = 0
    xyz[1, 2, 5, 0] = np.inf  # view 2 only
    write_joint_data(mat, uvd, xyz)
    with pytest.raises(DataFileError, match=r"test.joint_data\.mat: invalid label at view 1, frame index "
                                            r"1 \(file number 2\), joint 20 .*joint_uvd.*nan.*3 frames "
                                            "affected"):
        NYUDataset(root, "test")
    with pytest.raises(DataFileError, match=rf"frame index 3 .*joint 7 \({jd.names[7]}\): joint_xyz.*-5"):
        NYUDataset(root, "test", frames=[0, 3])
    with pytest.raises(DataFileError, match=r"view 2, frame index 2 .*joint 5 .*joint_xyz.*inf"):
        NYUDataset(root, "test", view=2)
    ds, msgs = _warnings_of(lambda: NYUDataset(root, "test", skip_bad=True))
    assert len(msgs) == 1 and "skipping 3 of 5 frames (3 bad label)" in msgs[0]
    assert "joint_data.mat" in msgs[0]
    assert ds.frames.tolist() == [0, 2] and ds.num_skipped == 3 and "joint 0" in dict(ds.skipped)[4]
    # the same frames under center_type='joint_mean' are reported as bad labels, not as 'invalid' centres
    ds = _warnings_of(lambda: NYUDataset(root, "test", skip_bad=True, center_type="joint_mean"))[0]
    assert ds.frames.tolist() == [0, 2] and all(r.startswith("bad label") for _, r in ds.skipped)
    v2, msgs = _warnings_of(lambda: NYUDataset(root, "test", view=2, frames=[0, 1, 3, 4]))
    assert msgs == [] and len(v2) == 4  # view 1's bad labels do not touch view 2


def test_views_and_argument_checks(tmp_path):
    root = tmp_path / "tree3"
    write_ball_tree(root, n_train=2, n_test=2, seed=4, views=3)
    a, b = NYUDataset(root, "test", view=1), NYUDataset(root, "test", view=3)
    assert torch.equal(a[1]["depth"], b[1]["depth"])  # the ball tree writes identical views
    with pytest.raises(ValueError, match="view must be 1..3"):
        NYUDataset(root, "test", view=4)
    with pytest.raises(ValueError, match="split"):
        NYUDataset(root, "val")
    (root / "test" / "center_test_1_refined.txt").unlink()
    with pytest.raises(FileNotFoundError, match="center_test_1_refined.txt"):
        NYUDataset(root, "test", view=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NYUDataset(root, "test", view=2, center_type="joint_mean")
