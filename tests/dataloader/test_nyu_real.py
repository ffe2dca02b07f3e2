"""NYU loader pieces against the real files in ../shared/nyu: centre frame, real-frame crop, exact inverse."""
from __future__ import annotations

import numpy as np
import pytest

from dataloader.depth_io import load_centers
from dataloader.nyu import (center_frame_offsets, crop_depth, decode_depth, norm_uvd_to_image_uvd,
                            norm_xyz_to_mm, resolve_center_frame, yup_to_ydown)
from tests.reference import literal_crop
from util.camera import NYU_CAMERA
from util.geometry import uvd_to_norm_uvd, uvd_to_xyz, xyz_to_norm_xyz

CAM = NYU_CAMERA.as_tuple()
CUBE = np.array([250.0, 250.0, 250.0])


@pytest.fixture(scope="module")
def real(shared_dir):
    nyu = shared_dir / "nyu"
    gt_uvd = np.loadtxt(nyu / "test_groundtruth_uvd.txt").reshape(-1, 14, 3)
    centers, valid = load_centers(nyu / "center_test_refined.txt", num_frames=len(gt_uvd))
    return nyu, gt_uvd, centers, valid


def test_centre_files_are_y_up(real):
    # docs/formats.md §3.4: refined centres ~21 mm from the GT centroid when read y-up, ~134 mm when read y-down
    _, gt_uvd, centers, valid = real
    assert valid.all() and len(gt_uvd) == 8252
    joints = uvd_to_xyz(gt_uvd, CAM)  # uvd is frame-free; lifting with our camera gives y-down mm
    off = center_frame_offsets(centers, joints)
    assert 18 < off["y_up"] < 25 and 125 < off["y_down"] < 145
    # a file presumed y-down (wrong name) is overridden by the labels, with a warning; the right default is
    # kept
    with pytest.warns(UserWarning, match="using y_up"):
        assert resolve_center_frame(centers, joints, presumed="y_down") == "y_up"
    assert resolve_center_frame(centers, joints, presumed="y_up") == "y_up"
    with pytest.warns(UserWarning, match="keeping the requested y_down"):
        assert resolve_center_frame(centers, joints, presumed="y_up", requested="y_down") == "y_down"


def test_real_frame_crop_puts_gt_on_hand_pixels(real):
    nyu, gt_uvd, centers, _ = real
    depth = decode_depth(nyu / "sample" / "test" / "depth_1_0000001.png")
    center = yup_to_ydown(centers[0])
    crop, M = crop_depth(depth, center, CUBE, CAM, 128)
    assert crop.shape == (128, 128) and crop.dtype == np.float32
    assert crop.min() >= -1 and crop.max() <= 1
    fg = crop < 0.99
    assert 0.05 < fg.mean() < 0.7  # the hand (and some arm) without the 2001 background
    uvd_n = uvd_to_norm_uvd(gt_uvd[0], center, CUBE, M)
    px = np.round((uvd_n[:, :2] + 1.0) * 64).astype(int)
    assert ((px >= 0) & (px < 128)).all()
    observed = crop[px[:, 1], px[:, 0]] * 125.0 + center[2]  # back to mm
    gap = gt_uvd[0, :, 2] - observed  # joints lie inside the hand: the surface is in front of them
    assert (np.abs(gap) < 30).mean() >= 0.75
    assert fg[px[:, 1], px[:, 0]].all()


def test_crop_normalise_inverse_returns_originals(real):
    _, gt_uvd, centers, _ = real
    rng = np.random.default_rng(0)
    for i in rng.choice(len(gt_uvd), 20, replace=False):
        center = yup_to_ydown(centers[i])
        cube = CUBE * (5.0 / 6.0 if i >= 2440 else 1.0)
        _, M = crop_depth(np.zeros((480, 640), np.float32), center, cube, CAM, 128)
        uvd_n = uvd_to_norm_uvd(gt_uvd[i], center, cube, M)
        np.testing.assert_allclose(norm_uvd_to_image_uvd(uvd_n, center, cube, M), gt_uvd[i], atol=1e-3)
        xyz = uvd_to_xyz(gt_uvd[i], CAM)
        np.testing.assert_allclose(norm_xyz_to_mm(xyz_to_norm_xyz(xyz, center, cube), center, cube), xyz,
                                   atol=1e-3)


@pytest.mark.parametrize("sampling", ["resize", "warp"])
def test_real_frame_crop_matches_literal_spec(real, sampling):
    nyu, _, centers, _ = real
    depth = decode_depth(nyu / "sample" / "test" / "depth_1_0000001.png")
    center = centers[0] * np.array([1.0, -1.0, 1.0])  # the centre file is y up
    # the refined centre, then a shifted centre with a large cube whose box leaves the image (zero padding)
    for c, cube in ((center, CUBE), (center + [-60.0, -150.0, 0.0], np.array([500.0, 460.0, 300.0]))):
        crop, M = crop_depth(depth, c, cube, CAM, 128, sampling=sampling)
        ref, M_ref, premax, corner = literal_crop(depth.astype(np.float64), c, cube, CAM, sampling=sampling)
        assert c[2] - cube[2] / 2 < premax < c[2] + cube[2] / 2  # the quirk is active: a hand pixel is premax
        np.testing.assert_allclose(M, M_ref, rtol=0, atol=1e-12)
        np.testing.assert_allclose(crop, ref, rtol=0, atol=2e-6)  # float32 vs float64 arithmetic only
        assert np.array_equal(crop == 1.0, ref == 1.0)
    assert corner[0] < 0 and corner[1] < 0  # the second box starts left of and above the image
