"""The default real crop is the official one: bit-exact with a statement-by-statement re-implementation of the
official NYU loader (``tests.reference.official_nyu_test_crop``) on the real NYU frame in ../shared/nyu/sample."""
from __future__ import annotations

import inspect
import shutil

import numpy as np
import pytest

from config import Config
from dataloader.crop import crop_depth
from dataloader.depth_io import decode_depth, write_joint_data
from dataloader.nyu import NYUDataset
from tests.reference import official_nyu_read, official_nyu_test_crop
from util.camera import NYU_CAMERA
from util.geometry import uvd_to_xyz
from util.joints import NYU_EVAL_14

CAM = NYU_CAMERA.as_tuple()


@pytest.fixture(scope="module")
def frame(shared_dir):
    """The real test frame 1 (view 1), its refined centre (y down) and its 14 ground-truth joints (uvd)."""
    png = shared_dir / "nyu" / "sample" / "test" / "depth_1_0000001.png"
    line = (shared_dir / "nyu" / "center_test_refined.txt").read_text().splitlines()[0]
    center_yup = np.array([float(v) for v in line.split()])
    gt_uvd = np.loadtxt(shared_dir / "nyu" / "test_groundtruth_uvd.txt", max_rows=1).reshape(14, 3)
    return png, center_yup, gt_uvd


def test_the_default_sampling_is_the_official_resize():
    assert Config().crop_sampling == "resize"
    assert inspect.signature(NYUDataset).parameters["crop_sampling"].default == "resize"
    assert inspect.signature(crop_depth).parameters["sampling"].default == "resize"


def test_default_crop_is_bit_exact_with_the_official_loader(frame):
    png, center_yup, _ = frame
    depth = decode_depth(png)
    assert np.array_equal(depth, official_nyu_read(png))  # the reader first: depth = B + 256 G, float32
    center = center_yup * np.array([1.0, -1.0, 1.0])  # the official per-view files are y down
    rng = np.random.default_rng(0)
    # the refined centre, then shifted centres and both NYU test cubes (some boxes leave the image)
    cases = [(center, 250.0)] + [(center + rng.uniform(-80, 80, 3), cube)
                                 for cube in (250.0, 250.0 * 5 / 6) for _ in range(6)]
    for c, edge in cases:
        cube = np.full(3, edge)
        ours, M = crop_depth(depth, c, cube, CAM)  # the default sampling
        ref, M_ref = official_nyu_test_crop(depth, c, cube, CAM)
        assert ours.dtype == ref.dtype == np.float32
        assert np.array_equal(ours, ref), f"centre {c}, cube {edge}: max diff {np.abs(ours - ref).max()}"
        np.testing.assert_allclose(M, M_ref, rtol=0, atol=1e-12)
        assert 0.01 < (ours < 0.99).mean() < 0.9  # a real crop with hand / arm pixels, not an empty box


def test_nyu_dataset_default_item_is_the_official_crop(frame, tmp_path):
    """The loader's default path end to end: a one-frame NYU tree made of the real PNG and centre line."""
    png, center_yup, gt_uvd = frame
    (tmp_path / "test").mkdir()
    shutil.copy(png, tmp_path / "test" / "depth_1_0000001.png")
    (tmp_path / "test" / "center_test_refined.txt").write_text(" ".join(f"{v:.6f}" for v in center_yup) + "\n")
    xyz14 = uvd_to_xyz(gt_uvd, CAM) * np.array([1.0, -1.0, 1.0])  # joint_data.mat holds y-up xyz
    xyz36 = np.repeat(xyz14.mean(0, keepdims=True), 36, axis=0)
    xyz36[list(NYU_EVAL_14)] = xyz14
    uvd36 = np.repeat(gt_uvd.mean(0, keepdims=True), 36, axis=0)
    uvd36[list(NYU_EVAL_14)] = gt_uvd
    write_joint_data(tmp_path / "test" / "joint_data.mat", np.stack([uvd36[None]] * 3),
                     np.stack([xyz36[None]] * 3))

    item = NYUDataset(tmp_path, "test")[0]
    center = np.array([float(v) for v in f"{center_yup[0]:.6f} {center_yup[1]:.6f} {center_yup[2]:.6f}".split()])
    center[1] = -center[1]
    ref, M_ref = official_nyu_test_crop(decode_depth(png), center, np.full(3, 250.0), CAM)
    depth = np.asarray(item["depth"])[0]
    assert np.array_equal(depth, ref), f"max diff {np.abs(depth - ref).max()}"
    np.testing.assert_allclose(np.asarray(item["M"], np.float64), M_ref, rtol=0, atol=1e-4)  # stored float32
