"""ICVL and MSRA loaders on format-exact stand-in trees: file formats, conventions (mirror, y/z), splits,
labels on the hand in the crop, the NYU item keys."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dataloader.augment import AugParams
from dataloader.depth_io import DataFileError, write_centers
from dataloader.icvl import (ICVLDataset, is_original_sequence, read_icvl_depth, read_icvl_labels,
                             write_icvl_depth, write_icvl_labels)
from dataloader.msra import (MSRADataset, read_joint_txt, read_msra_bin, write_joint_txt, write_msra_bin)
from dataloader.nyu import NYUDataset
from dataloader.standin_icvl import generate_standin_icvl
from dataloader.standin_msra import generate_standin_msra
from util.camera import ICVL_CAMERA, MSRA_CAMERA, MSRA_SUBJECT_CUBES

GESTURES = ("1", "IP")


@pytest.fixture(scope="module")
def icvl_root(tmp_path_factory):
    return generate_standin_icvl(tmp_path_factory.mktemp("icvl"), n_train=6, n_test=5, seed=3)


@pytest.fixture(scope="module")
def msra_root(tmp_path_factory):
    return generate_standin_msra(tmp_path_factory.mktemp("msra"), 1, GESTURES, seed=4)


def _on_hand(item: dict) -> tuple[float, np.ndarray]:
    """Fraction of joints whose crop pixel is foreground, and (observed - joint) depth (mm) there."""
    d = item["depth"][0].numpy()
    uvd = item["joints_uvd_norm"].numpy()
    px = np.clip(np.floor((uvd[:, :2] + 1) * 64 + 0.5).astype(int), 0, 127)
    obs = d[px[:, 1], px[:, 0]]
    fg = obs < 0.99
    half = float(item["cube"][2]) / 2
    return float(fg.mean()), (obs[fg] - uvd[fg, 2]) * half


# ---------------------------------------------------------------------------------------------------
# ICVL
# ---------------------------------------------------------------------------------------------------
def test_icvl_public_label_files_parse(shared_dir):
    d = shared_dir / "icvl"
    lab = read_icvl_labels([d / "test_seq_1.txt", d / "test_seq_2.txt"])  # CRLF files
    assert len(lab.names) == 1596 and lab.names[0] == "test_seq_1/image_0000.png"
    assert lab.names[702].startswith("test_seq_2/")
    gt = np.loadtxt(d / "icvl_test_groundtruth_label.txt").reshape(-1, 16, 3)
    np.testing.assert_array_equal(lab.uvd, gt)
    listed = (d / "icvl_test_list.txt").read_text().split()
    assert list(lab.names) == listed


def test_icvl_label_writer_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    uvd = np.round(rng.uniform(0, 300, (3, 16, 3)), 3)
    names = [f"seq/image_{i:04d}.png" for i in range(3)]
    write_icvl_labels(tmp_path / "a.txt", names, uvd, crlf=True)
    raw = (tmp_path / "a.txt").read_bytes()
    assert raw.count(b"\r\n") == 3
    lab = read_icvl_labels([tmp_path / "a.txt"])
    assert list(lab.names) == names
    np.testing.assert_allclose(lab.uvd, uvd, atol=5e-4)
    (tmp_path / "b.txt").write_text("x.png 1 2 3\n")
    with pytest.raises(DataFileError, match=r"b\.txt, line 1.*48 numbers"):
        read_icvl_labels([tmp_path / "b.txt"])


def test_icvl_depth_png_round_trip(tmp_path):
    d = np.zeros((240, 320), np.float32)
    d[100:110, 50:60] = 345.0
    write_icvl_depth(tmp_path / "x" / "a.png", d)
    np.testing.assert_array_equal(read_icvl_depth(tmp_path / "x" / "a.png"), d)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataFileError, match="bad.png"):
        read_icvl_depth(tmp_path / "bad.png")


def test_icvl_sequence_rule():
    assert is_original_sequence("201403121135/image_0000.png")
    assert is_original_sequence("test_seq_1/image_0000.png")
    assert is_original_sequence("0/201403121135/image_0000.png")
    assert not is_original_sequence("-30/201403121135/image_0000.png")
    assert not is_original_sequence("22.5/201403121135/image_0000.png")


def test_icvl_splits_invalid_centres_and_rotated_copies(icvl_root):
    with pytest.warns(UserWarning, match="invalid"):
        train = ICVLDataset(icvl_root, "train", augment=False)
    assert len(train) == 5 and train.skipped == [(5, "'invalid' centre")]  # the 6th original frame
    assert all(not n.startswith(("-30/", "45/")) for n in train.names)
    with pytest.warns(UserWarning):
        both = ICVLDataset(icvl_root, "train", augment=False, all_sequences=True)
    assert len(both) == 7 and sum(n.startswith(("-30/", "45/")) for n in both.names) == 2
    test = ICVLDataset(icvl_root, "test")
    assert len(test) == 5 and not test.augment
    assert test.names[0].startswith("test_seq_1/") and test.names[-1].startswith("test_seq_2/")


def test_icvl_labels_land_on_the_hand(icvl_root):
    test = ICVLDataset(icvl_root, "test")
    with pytest.warns(UserWarning):
        rot = ICVLDataset(icvl_root, "train", augment=False, all_sequences=True)
    items = [test[i] for i in range(len(test))] + [rot[i] for i in range(len(rot))]
    fractions, gaps = zip(*(_on_hand(it) for it in items))
    assert np.mean(fractions) > 0.85
    gaps = np.concatenate(gaps)
    # joints lie inside the hand: the observed surface is a few mm in front of them
    assert -30.0 < np.median(gaps) < 0.0


def test_icvl_mirror_convention(tmp_path):
    """A marker pixel at column j0 of the file and a joint at u = j0: after the loader's mirror the marker sits
    at column 319 - j0 and the label at u' = 320 - j0 (official, one pixel right), or 319 - j0 with
    mirror_width=319; in xyz the official mirror is exactly x -> -x."""
    j0, i0, z = 100, 90, 300.0
    depth = np.zeros((240, 320), np.float32)
    depth[i0, j0] = z
    write_icvl_depth(tmp_path / "Depth" / "test_seq_1" / "image_0000.png", depth)
    write_icvl_depth(tmp_path / "Depth" / "test_seq_2" / "image_0000.png", depth)
    uvd = np.tile([float(j0), float(i0), z], (16, 1))
    uvd[1:, 0] += np.arange(1, 16)  # distinct joints
    write_icvl_labels(tmp_path / "test_seq_1.txt", ["test_seq_1/image_0000.png"], uvd[None], crlf=True)
    write_icvl_labels(tmp_path / "test_seq_2.txt", ["test_seq_2/image_0000.png"], uvd[None], crlf=True)
    fx, fy, cx, cy = ICVL_CAMERA.as_tuple()
    centre = np.array([(j0 - cx) * z / fx, (i0 - cy) * z / fy, z])
    write_centers(tmp_path / "center_test_refined.txt", np.stack([centre, centre]))
    ds = ICVLDataset(tmp_path, "test")
    frame = ds.read_depth(0)
    assert frame[i0, 319 - j0] == z and frame[i0, j0] == 0
    xyz = ds.joints_mm()[0]
    u_loaded = cx + fx * xyz[:, 0] / xyz[:, 2]
    assert u_loaded[0] == pytest.approx(320 - j0)
    x_file = (uvd[:, 0] - cx) * z / fx
    np.testing.assert_allclose(xyz[:, 0], -x_file, atol=1e-9)
    assert ds.centers_mm()[0, 0] == pytest.approx(-centre[0])
    np.testing.assert_allclose(ds.to_file_uvd(np.stack([u_loaded, np.full(16, i0), np.full(16, z)], 1))[:, 0],
                               uvd[:, 0], atol=1e-9)
    exact = ICVLDataset(tmp_path, "test", mirror_width=319)
    xyz = exact.joints_mm()[0]
    assert cx + fx * xyz[0, 0] / xyz[0, 2] == pytest.approx(319 - j0)
    unmirrored = ICVLDataset(tmp_path, "test", mirror=False)
    assert unmirrored.read_depth(0)[i0, j0] == z
    np.testing.assert_allclose(unmirrored.joints_uvd_file(), uvd[None].repeat(2, 0), atol=5e-4)


def test_icvl_file_uvd_round_trip(icvl_root):
    from util.geometry import xyz_to_uvd

    ds = ICVLDataset(icvl_root, "test")
    back = ds.to_file_uvd(xyz_to_uvd(ds.joints_mm(), ds.camera))
    np.testing.assert_allclose(back, ds.joints_uvd_file(), atol=1e-9)


def test_icvl_missing_png_is_named(icvl_root, tmp_path):
    import shutil

    root = tmp_path / "t"
    shutil.copytree(icvl_root, root)
    (root / "Depth" / "test_seq_2" / "image_0000.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_seq_2/image_0000\.png.*skip_bad"):
        ICVLDataset(root, "test")
    with pytest.warns(UserWarning, match="missing"):
        assert len(ICVLDataset(root, "test", skip_bad=True)) == 4


# ---------------------------------------------------------------------------------------------------
# MSRA
# ---------------------------------------------------------------------------------------------------
def test_msra_bin_round_trip_and_header_checks(tmp_path):
    d = np.zeros((240, 320), np.float32)
    d[50:60, 70:75] = np.arange(50, dtype=np.float32).reshape(10, 5) + 300
    box = write_msra_bin(tmp_path / "a.bin", d)
    assert box == (70, 50, 75, 60)
    raw = (tmp_path / "a.bin").read_bytes()
    assert np.frombuffer(raw[:24], "<i4").tolist() == [320, 240, 70, 50, 75, 60]
    assert len(raw) == 24 + 4 * 50
    np.testing.assert_array_equal(read_msra_bin(tmp_path / "a.bin"), d)
    (tmp_path / "short.bin").write_bytes(raw[:-4])
    with pytest.raises(DataFileError, match=r"short\.bin.*bytes"):
        read_msra_bin(tmp_path / "short.bin")
    bad = np.frombuffer(raw[:24], "<i4").copy()
    bad[4] = 400  # right > width
    (tmp_path / "hdr.bin").write_bytes(bad.tobytes() + raw[24:])
    with pytest.raises(DataFileError, match=r"hdr\.bin: header"):
        read_msra_bin(tmp_path / "hdr.bin")


def test_msra_joint_txt(tmp_path):
    j = np.random.default_rng(1).normal(size=(3, 21, 3))
    write_joint_txt(tmp_path / "joint.txt", j)
    assert (tmp_path / "joint.txt").read_text().splitlines()[0] == "3"
    np.testing.assert_allclose(read_joint_txt(tmp_path / "joint.txt"), j, atol=1e-6)
    (tmp_path / "bad.txt").write_text("2\n" + " ".join(["1"] * 63) + "\n")
    with pytest.raises(DataFileError, match="header says 2"):
        read_joint_txt(tmp_path / "bad.txt")


def test_msra_leave_one_subject_out(msra_root):
    test = MSRADataset(msra_root, "test", 4, gestures=GESTURES)
    train = MSRADataset(msra_root, "train", 4, gestures=GESTURES, augment=False)
    assert len(test) == 2 and len(train) == 16
    assert set(test.subjects_of_frames()) == {4}
    assert set(train.subjects_of_frames()) == set(range(9)) - {4}
    assert [k[:2] for k in train.frame_keys()[:4]] == [(0, "1"), (0, "IP"), (1, "1"), (1, "IP")]
    np.testing.assert_array_equal(train.cubes_mm()[:, 0],
                                  np.array(MSRA_SUBJECT_CUBES)[train.subjects_of_frames()])
    assert (test.cubes_mm() == MSRA_SUBJECT_CUBES[4]).all()
    with pytest.raises(ValueError, match="test_subject"):
        MSRADataset(msra_root, "test", 9, gestures=GESTURES)


def test_msra_axis_conventions(msra_root):
    """Internal joints = the joint.txt values with y and z negated; centres = file centres with y negated."""
    ds = MSRADataset(msra_root, "test", 2, gestures=GESTURES)
    raw = read_joint_txt(msra_root / "P2" / "1" / "joint.txt")
    assert (raw[..., 2] < 0).all()
    expect = raw * np.array([1.0, -1.0, -1.0])
    np.testing.assert_allclose(ds.joints_mm()[0], expect[0], atol=1e-9)
    assert ds.center_frame == "y_up"
    file_c = np.loadtxt(msra_root / "center_test_2_refined.txt")
    np.testing.assert_allclose(ds.centers_mm(), file_c * np.array([1.0, -1.0, 1.0]))
    assert np.linalg.norm(ds.centers_mm() - ds.joints_mm().mean(1), axis=1).max() < 60.0
    # the community ground truth (u, v, d) of these frames
    gt = np.loadtxt(msra_root / "msra_test_groundtruth_label.txt").reshape(-1, 21, 3)
    listed = (msra_root / "msra_test_list.txt").read_text().split()
    rows = [i for i, n in enumerate(listed) if n.startswith("P2/")]
    np.testing.assert_allclose(ds.joints_uvd(), gt[rows], atol=1e-3)
    fx, fy, cx, cy = MSRA_CAMERA.as_tuple()
    # by hand from the file values: u = cx + fx x / (-z), v = cy + fy (-y) / (-z)
    np.testing.assert_allclose(ds.joints_uvd()[0, :, 0], cx + fx * raw[0, :, 0] / -raw[0, :, 2], atol=1e-9)
    np.testing.assert_allclose(ds.joints_uvd()[0, :, 1], cy + fy * -raw[0, :, 1] / -raw[0, :, 2], atol=1e-9)


def test_msra_labels_land_on_the_hand(msra_root):
    ds = MSRADataset(msra_root, "train", 0, gestures=GESTURES, augment=False)
    fractions, gaps = zip(*(_on_hand(ds[i]) for i in range(len(ds))))
    assert np.mean(fractions) > 0.8
    assert -30.0 < np.median(np.concatenate(gaps)) < 0.0


def test_items_have_the_nyu_keys_and_collate(ball_tree, icvl_root, msra_root):
    root, _ = ball_tree
    nyu_keys = set(NYUDataset(root, "test")[0].keys())
    icvl = ICVLDataset(icvl_root, "test")
    msra = MSRADataset(msra_root, "train", 0, gestures=GESTURES)
    for ds, j in ((icvl, 16), (msra, 21)):
        item = ds[0]
        assert set(item.keys()) == nyu_keys
        assert item["depth"].shape == (1, 128, 128) and item["joints_xyz_norm"].shape == (j, 3)
        batch = torch.utils.data.default_collate([ds[0], ds[1]])
        assert batch["depth"].shape == (2, 1, 128, 128)


def test_augmented_item_keeps_labels_on_hand(icvl_root):
    ds = ICVLDataset(icvl_root, "test")
    plain = ds.load(0)
    rot = ds.load(0, AugParams("rot", rotation=90.0))
    assert not torch.equal(plain["depth"], rot["depth"])
    assert _on_hand(rot)[0] >= _on_hand(plain)[0] - 0.15
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = ICVLDataset(icvl_root, "train")
    assert train.augment and torch.isfinite(train[0]["joints_xyz_norm"]).all()


def test_dataset_joint_maps_and_dsf_errors():
    from dataloader.dataset_joints import community_uvd, dataset_joints, dsf_frame_errors

    rng = np.random.default_rng(5)
    j21 = rng.normal(size=(4, 21, 3)) * 30 + np.array([0.0, 0.0, 350.0])
    icvl = dataset_joints(j21, "icvl")
    assert icvl.shape == (4, 16, 3)
    np.testing.assert_array_equal(icvl[:, 0], j21[:, 0])  # Palm = MANO wrist
    np.testing.assert_array_equal(icvl[:, 3], j21[:, 15])  # Thumb.T = MANO thumb IP (DSF's map)
    msra = dataset_joints(torch.as_tensor(j21), "msra")
    assert tuple(msra.shape) == (4, 21, 3)
    np.testing.assert_array_equal(msra[:, 4].numpy(), j21[:, 16])  # Index.T = MANO index tip
    # errors: shift the labels of DSF's joints by 3 mm and the excluded ones by 50 mm
    lab = dataset_joints(j21, "msra").copy()
    lab[:, 1:20, 0] += 3.0
    lab[:, [0, 20], 1] += 50.0
    np.testing.assert_allclose(dsf_frame_errors(j21, lab, "msra"), 3.0)
    lab = dataset_joints(j21, "icvl").copy()
    lab[:, :15, 2] += 4.0
    lab[:, 15, 2] += 40.0
    np.testing.assert_allclose(dsf_frame_errors(torch.as_tensor(j21), torch.as_tensor(lab), "icvl").numpy(), 4.0)


def test_community_uvd_unmirrors_icvl(icvl_root):
    from dataloader.dataset_joints import community_uvd

    ds = ICVLDataset(icvl_root, "test")
    np.testing.assert_allclose(community_uvd(ds.joints_mm(), ds, ds.camera), ds.joints_uvd_file(), atol=1e-9)
    msra_like = community_uvd(torch.ones(1, 2, 3) * 100, object(), (100.0, 100.0, 10.0, 20.0))
    np.testing.assert_allclose(msra_like[0, 0], [110.0, 120.0, 100.0])


def test_builders_dispatch_icvl_and_msra(icvl_root, msra_root):
    from config import load_config
    from dataloader.builders import build_real_dataset

    cfg = load_config([f"data_root={icvl_root}", "dataset=icvl", "crop_sampling=warp"])
    ds = build_real_dataset(cfg, "test")
    assert isinstance(ds, ICVLDataset) and len(ds) == 5 and ds.crop_sampling == "warp"
    cfg = load_config([f"data_root={msra_root}", "dataset=msra", "test_subject=6"])
    ds = build_real_dataset(cfg, "test", labels=False)
    assert len(ds) == 2 and "joints_xyz_norm" not in ds[0]
    assert (ds.cubes_mm() == MSRA_SUBJECT_CUBES[6]).all()
    cfg = load_config([f"data_root={msra_root}", "dataset=msra", "cube_size=230"])
    assert (build_real_dataset(cfg, "test").cubes_mm() == 230.0).all()


def test_implausible_centre_is_refused_with_its_line(icvl_root, tmp_path):
    import shutil

    root = tmp_path / "c"
    shutil.copytree(icvl_root, root)
    lines = (root / "center_test_refined.txt").read_text().splitlines()
    lines[2] = "10 20 30000"
    (root / "center_test_refined.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match=r"center_test_refined\.txt.*line 3"):
        ICVLDataset(root, "test")


def test_loaders_write_nothing(icvl_root, msra_root, tmp_path, monkeypatch):
    """The official MSRA loader writes msra_label.txt / msra_record_list.txt into the working directory."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = {p: p.stat().st_mtime_ns for root in (icvl_root, msra_root) for p in root.rglob("*")}
    MSRADataset(msra_root, "train", 1, gestures=GESTURES)[0]
    ICVLDataset(icvl_root, "test")[0]
    assert list(work.iterdir()) == []
    after = {p: p.stat().st_mtime_ns for root in (icvl_root, msra_root) for p in root.rglob("*")}
    assert after == before
