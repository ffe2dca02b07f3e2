"""NYU file readers/writers: depth PNG codec, joint_data.mat, centre files, and their error messages."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from dataloader.depth_io import (DataFileError, JointData, check_depth_png, decode_depth, encode_depth,
                                 invalid_joints, load_centers, load_joint_data, write_centers,
                                 write_depth_png, write_joint_data)
from util.joints import NYU_JOINT_NAMES_36


def test_depth_png_round_trip_full_uint16_range(tmp_path):
    rng = np.random.default_rng(0)
    depth = rng.integers(0, 65536, (48, 64)).astype(np.float32)
    depth[0, :4] = [0, 255, 256, 65535]  # byte boundaries
    depth[1, :2] = [2001, 731]
    path = tmp_path / "depth_1_0000001.png"
    write_depth_png(path, depth)
    back = decode_depth(path, depth.shape)
    assert back.dtype == np.float32 and back.shape == depth.shape
    np.testing.assert_array_equal(back, depth)
    # independent decode of the stored bytes: OpenCV's BGR order, green = high byte, blue = low byte, red = 0
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.int64)
    np.testing.assert_array_equal(raw[..., 1] * 256 + raw[..., 0], depth.astype(np.int64))
    assert raw[..., 2].max() == 0
    # an explicit zlib level changes the file size, never the content
    fast, small = tmp_path / "fast.png", tmp_path / "small.png"
    write_depth_png(fast, depth, compression=1)
    write_depth_png(small, depth, compression=9)
    for p in (fast, small):
        check_depth_png(p, depth.shape)
        np.testing.assert_array_equal(decode_depth(p, depth.shape), depth)
    assert small.stat().st_size < fast.stat().st_size


def test_encode_rounds_and_rejects_bad_depth():
    np.testing.assert_array_equal(encode_depth(np.array([[1.4, 1.6]]))[0, :, 0], [1, 2])
    for bad, msg in ((np.array([[-1.0]]), "lie in"), (np.array([[70000.0]]), "lie in"),
                     (np.array([[np.nan]]), "NaN"), (np.zeros(3), r"\(H, W\)")):
        with pytest.raises(ValueError, match=msg):
            encode_depth(bad)


def test_real_frame_decodes_like_the_spec(shared_dir):
    # docs/formats.md §6: the real test frame has no zeros, 61 % pixels at 2001 mm, the hand at 731-807 mm
    depth = decode_depth(shared_dir / "nyu" / "sample" / "test" / "depth_1_0000001.png")
    assert depth.shape == (480, 640) and depth.dtype == np.float32
    assert depth.min() == 731 and depth.max() == 2001
    assert abs((depth == 2001).mean() - 0.61) < 0.01
    check_depth_png(shared_dir / "nyu" / "sample" / "test" / "depth_1_0000001.png")  # 640x480 RGB, IEND


def test_depth_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="depth_1_0000009.png"):
        decode_depth(tmp_path / "depth_1_0000009.png")
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataFileError, match="corrupt.png"):
        decode_depth(bad)
    gray = tmp_path / "gray16.png"
    cv2.imwrite(str(gray), np.full((4, 4), 700, np.uint16))
    with pytest.raises(DataFileError, match="gray16.png.*8-bit RGB PNG"):
        decode_depth(gray)


def test_png_header_check(tmp_path):
    real = tmp_path / "depth_1_0000001.png"  # a generated frame in the NYU format (any depth would do)
    write_depth_png(real, np.random.default_rng(0).integers(500, 2002, (480, 640)).astype(np.float32))
    check_depth_png(real)  # 640x480 8-bit RGB with an IEND trailer
    with pytest.raises(DataFileError, match=r"depth_1_0000001\.png: expected an 8-bit RGB PNG of 320x240, "
                                            r"got 640x480 with bit depth 8 and colour type 2"):
        check_depth_png(real, (240, 320))
    data = real.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[:-1])
    with pytest.raises(DataFileError, match=r"cut\.png: truncated PNG"):
        check_depth_png(cut)
    cut.write_bytes(data[:20])
    with pytest.raises(DataFileError, match=r"cut\.png: not a PNG"):
        check_depth_png(cut)
    gray = tmp_path / "gray16.png"
    cv2.imwrite(str(gray), np.full((480, 640), 700, np.uint16))
    with pytest.raises(DataFileError, match=r"gray16\.png: .*bit depth 16 and colour type 0"):
        check_depth_png(gray)
    with pytest.raises(FileNotFoundError, match="none.png"):
        check_depth_png(tmp_path / "none.png")


def test_invalid_joints_mask():
    xyz = np.ones((2, 3, 36, 3))
    uvd = np.ones((2, 3, 36, 3))
    xyz[1, 2, 4, 2], uvd[1, 0, 9, 0], uvd[1, 1, 3, 2], xyz[0, 0, 0, 2] = 0.0, np.nan, -1.0, -1.0
    bad = invalid_joints(JointData(uvd, xyz, NYU_JOINT_NAMES_36), view=2)
    assert bad.shape == (3, 36) and sorted(zip(*np.nonzero(bad))) == [(0, 9), (1, 3), (2, 4)]


def test_joint_data_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    uvd, xyz = rng.normal(size=(3, 5, 36, 3)), rng.normal(size=(3, 5, 36, 3))
    path = tmp_path / "joint_data.mat"
    write_joint_data(path, uvd, xyz)
    jd = load_joint_data(path)
    np.testing.assert_array_equal(jd.joint_xyz, xyz)
    np.testing.assert_array_equal(jd.joint_uvd, uvd)
    assert jd.names == NYU_JOINT_NAMES_36 and jd.num_views == 3 and jd.num_frames == 5

    truncated = tmp_path / "trunc" / "joint_data.mat"
    truncated.parent.mkdir()
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataFileError, match=r"trunc.joint_data\.mat"):
        load_joint_data(truncated)
    wrong = tmp_path / "wrong.mat"
    write_joint_data(wrong, uvd[:, :, :14], xyz[:, :, :14])
    with pytest.raises(DataFileError, match=r"wrong\.mat.*\(views, N, 36, 3\)"):
        load_joint_data(wrong)
    with pytest.raises(FileNotFoundError, match="nothere.mat"):
        load_joint_data(tmp_path / "nothere.mat")


def test_centre_file_invalid_lines_and_errors(tmp_path):
    c = np.array([[-133.28715515137, -12.867971420288, 761.99810791016], [np.nan] * 3, [1.5, 2.5, 900.0]])
    path = tmp_path / "center_test_refined.txt"
    write_centers(path, c)
    assert path.read_text().splitlines()[1] == "invalid"
    got, valid = load_centers(path, num_frames=3)
    np.testing.assert_array_equal(valid, [True, False, True])
    np.testing.assert_allclose(got[valid], c[valid], rtol=1e-13)

    with pytest.raises(DataFileError, match="center_test_refined.txt: 3 centre lines.*4"):
        load_centers(path, num_frames=4)
    path.write_text("1 2 700\n1 2\n")
    with pytest.raises(DataFileError, match="center_test_refined.txt, line 2"):
        load_centers(path)
    path.write_text("1 2 -5\n")
    with pytest.raises(DataFileError, match="line 1.*z > 0"):
        load_centers(path)
