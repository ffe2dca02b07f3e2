"""Hostile / careless NYU files (issue 11): one clear error naming the file (or a counted skip), never a hang,
a huge allocation or a silently wrong crop."""
from __future__ import annotations

import re
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

import dataloader.depth_io as depth_io
from dataloader.depth_io import DataFileError, decode_depth, load_centers, load_joint_data, write_depth_png
from dataloader.nyu import NYUDataset, find_center_file
from util.camera import CENTER_DEPTH_RANGES

from .conftest import write_ball_tree

REPO = Path(__file__).resolve().parents[2]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_bytes(width: int, height: int, idat: bytes) -> bytes:
    """A PNG whose IHDR says width x height, 8-bit RGB, with the given (compressed) IDAT payload."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _huge_png(path: Path, side: int) -> None:
    """A valid side x side all-zero RGB PNG, compressed in a stream (decoding it needs 3 side^2 bytes)."""
    comp = zlib.compressobj(1)
    row = b"\0" * (1 + 3 * side)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    path.write_bytes(_png_bytes(side, side, idat))


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "tree"
    write_ball_tree(root, n_train=3, n_test=4, seed=5)
    return root


def _strict_item_error(root: Path, frame: int) -> str:
    ds = NYUDataset(root, "test", augment=False)
    with pytest.raises(DataFileError) as info:
        ds[frame]
    return str(info.value)


# --- depth PNG --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(240, 320), (960, 1280)])
def test_wrong_size_png_is_refused_without_skip_bad(tree, shape):
    png = tree / "test" / "depth_1_0000002.png"
    write_depth_png(png, np.full(shape, 700.0))
    msg = _strict_item_error(tree, 1)
    assert "depth_1_0000002.png" in msg and f"640x480, got {shape[1]}x{shape[0]}" in msg, msg


def test_jpeg_named_png_is_refused(tree):
    png = tree / "test" / "depth_1_0000003.png"
    ok, data = cv2.imencode(".jpg", np.zeros((480, 640, 3), np.uint8))
    png.write_bytes(data.tobytes())
    msg = _strict_item_error(tree, 2)
    assert "depth_1_0000003.png: not a PNG" in msg, msg


def test_huge_png_header_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "depth_1_0000001.png"
    path.write_bytes(_png_bytes(20000, 20000, zlib.compress(b"\0" * 100)))  # header says 1.2 GB of pixels

    def no_decode(*_):
        raise AssertionError("decoded before checking the header")

    monkeypatch.setattr(depth_io.cv2, "imread", no_decode)
    with pytest.raises(DataFileError, match=r"depth_1_0000001\.png: expected an 8-bit RGB PNG of 640x480, "
                                            r"got 20000x20000"):
        decode_depth(path)


@pytest.mark.slow
def test_real_huge_png_is_refused_under_a_memory_cap(tmp_path):
    """A genuine 20000x20000 PNG (1.2 GB decoded) read in a process capped at 1.5 GB of address space."""
    path = tmp_path / "depth_1_0000001.png"
    _huge_png(path, 20000)
    assert path.stat().st_size < 20_000_000
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))\n"
            "from dataloader.depth_io import decode_depth, DataFileError\n"
            "try:\n    decode_depth(sys.argv[1])\nexcept DataFileError as e:\n    print('REFUSED', e)\n")
    res = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and "REFUSED" in res.stdout and "got 20000x20000" in res.stdout, res


# --- joint_data.mat -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,kind", [
    ("not numbers", "char array"),
    (np.array([[np.zeros(3), "x"]], dtype=object), "cell array"),
    ({"a": np.zeros(3)}, "struct"),
])
def test_non_numeric_joint_xyz_names_file_and_key(tmp_path, value, kind):
    path = tmp_path / "joint_data.mat"
    scipy.io.savemat(path, {"joint_uvd": np.zeros((1, 2, 36, 3)), "joint_xyz": value})
    with pytest.raises(DataFileError, match=rf"joint_data\.mat: 'joint_xyz' must be a numeric .* got a {kind}"):
        load_joint_data(path)


# --- centre files -------------------------------------------------------------------------------------------
def test_frame_count_mismatch_names_both_files(tree):
    centre = tree / "test" / "center_test_0_refined.txt"
    centre.write_text("".join(centre.read_text().splitlines(keepends=True)[:3]))
    with pytest.raises(DataFileError) as info:
        NYUDataset(tree, "test")
    msg = str(info.value)
    assert "center_test_0_refined.txt: 3 centre lines" in msg and "4 frames of" in msg, msg
    assert str(tree / "test" / "joint_data.mat") in msg, msg


@pytest.mark.parametrize("z", [1e9, 5.0, 1e-3, 0.0])
def test_implausible_centre_depth_names_the_line(tree, z):
    centre = tree / "test" / "center_test_0_refined.txt"
    lines = centre.read_text().splitlines()
    lines[2] = f"10 -20 {z:g}"
    centre.write_text("\n".join(lines) + "\n")
    if z <= 0:  # z <= 0 was already refused by the reader itself
        with pytest.raises(DataFileError, match=r"center_test_0_refined\.txt, line 3: centre must be finite with z"):
            NYUDataset(tree, "test")
        return
    shown = re.escape(f"{z:g}")
    with pytest.raises(DataFileError, match=rf"center_test_0_refined\.txt, line 3: centre z = {shown} mm outside "
                                            r"the plausible range 100-5000 mm"):
        NYUDataset(tree, "test")
    with pytest.raises(DataFileError, match=r"line 3: centre z"):
        load_centers(centre, z_range=(100.0, 5000.0))
    # skip_bad: a counted skip, the other frames untouched
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = NYUDataset(tree, "test", skip_bad=True, augment=False)
    assert ds.frames.tolist() == [0, 1, 3] and ds.num_skipped == 1
    assert dict(ds.skipped)[2].startswith("implausible centre: frame index 2: centre z")
    assert any("1 implausible centre" in str(w.message) for w in rec)
    assert ds[2]["index"] == 3


def test_centre_off_the_camera_view_and_a_custom_range(tree):
    centre = tree / "test" / "center_test_0_refined.txt"
    lines = centre.read_text().splitlines()
    original = lines[1]
    lines[1] = "5000 0 700"
    centre.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match=r"line 2: centre \(5000, 0, 700\) mm lies outside the camera's view"):
        NYUDataset(tree, "test")
    lines[1] = original
    centre.write_text("\n".join(lines) + "\n")
    z = [float(line.split()[2]) for line in lines]
    with pytest.raises(DataFileError, match=rf"line {int(np.argmin(z)) + 1}: centre z"):
        NYUDataset(tree, "test", center_depth_range=(min(z) + 1.0, 5000.0))
    assert len(NYUDataset(tree, "test", center_depth_range=(min(z) - 1.0, max(z) + 1.0))) == 4


def test_per_view_centre_path_that_is_a_directory_is_refused(tree):
    per_view = tree / "test" / "center_test_0_refined.txt"
    per_view.unlink()
    per_view.mkdir()  # the y-up V2V file is still there: it must not be used silently instead
    with pytest.raises(DataFileError, match=r"center_test_0_refined\.txt: is a directory"):
        find_center_file(tree, "test", 1)
    with pytest.raises(DataFileError, match=r"center_test_0_refined\.txt: is a directory"):
        NYUDataset(tree, "test")
    with pytest.raises(DataFileError, match=r"center_test_0_refined\.txt: is a directory"):
        NYUDataset(tree, "test", center_file=per_view)


def test_real_nyu_centres_pass_the_default_range(shared_dir):
    for split, n in (("train", 72757), ("test", 8252)):
        centres, valid = load_centers(shared_dir / "nyu" / f"center_{split}_refined.txt", num_frames=n,
                                      z_range=CENTER_DEPTH_RANGES["nyu"])
        assert valid.all() and centres.shape == (n, 3)
    depth = decode_depth(shared_dir / "nyu" / "sample" / "test" / "depth_1_0000001.png")
    assert depth.shape == (480, 640)


def test_oversized_centre_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "center_test_refined.txt"
    with open(path, "wb") as fh:
        fh.truncate(depth_io.MAX_CENTER_FILE_BYTES + 1)  # sparse
    with pytest.raises(DataFileError, match=r"center_test_refined\.txt: \d+ bytes, too large for a centre file"):
        load_centers(path)
