"""ICVL / MSRA community evaluation: the public ICVL files, hand-computed scores, MSRA folds and viewpoint
curves, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from util.evaluate import (MSRA_PITCH_BINS, MSRA_YAW_BINS, PROTOCOLS, DatasetScores, PredictionFormatError,
                           dsf_icvl_bias_mean, evaluate_dataset, load_predictions, main, msra_subjects_from_list,
                           msra_viewpoint_angles, subject_means, viewpoint_curve)
from util.joints import ICVL_DSF_DEPTH_BIAS_MM, MSRA_GESTURES, MSRA_SUBJECT_FRAMES

ICVL_CAM = (240.99, 240.96, 160.0, 120.0)  # awesome-hand-pose-estimation evaluation/src/util.py
MSRA_CAM = (241.42, 241.42, 160.0, 120.0)


def _plain_rows(path: Path) -> np.ndarray:
    with open(path) as fh:
        return np.array([[float(t) for t in line.split()] for line in fh if line.strip()])


def _lift(uvd, cam):
    fx, fy, cx, cy = cam
    return np.stack([(uvd[..., 0] - cx) * uvd[..., 2] / fx, (uvd[..., 1] - cy) * uvd[..., 2] / fy,
                     uvd[..., 2]], -1)


def _project(xyz, cam):
    fx, fy, cx, cy = cam
    return np.stack([cx + fx * xyz[..., 0] / xyz[..., 2], cy + fy * xyz[..., 1] / xyz[..., 2], xyz[..., 2]], -1)


def _unit_dirs(rng, shape):
    d = rng.normal(size=shape + (3,))
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def icvl_dir(shared_dir) -> Path:
    return shared_dir / "icvl"


@pytest.fixture(scope="module")
def icvl_gt(icvl_dir) -> np.ndarray:
    return _plain_rows(icvl_dir / "icvl_test_groundtruth_label.txt").reshape(-1, 16, 3)


def test_icvl_files_read_and_agree(icvl_dir, icvl_gt):
    gt = load_predictions(icvl_dir / "icvl_test_groundtruth_label.txt", joint_names=PROTOCOLS["icvl"].joint_names)
    np.testing.assert_array_equal(gt, icvl_gt)
    assert gt.shape == (1596, 16, 3)
    seqs = []
    for name, n in (("test_seq_1.txt", 702), ("test_seq_2.txt", 894)):
        lines = (icvl_dir / name).read_bytes().decode().splitlines()
        rows = [ln.split() for ln in lines if ln.strip()]
        assert len(rows) == n and all(len(r) == 49 for r in rows)
        seqs.append(np.array([[float(t) for t in r[1:]] for r in rows]))
    np.testing.assert_array_equal(np.concatenate(seqs).reshape(-1, 16, 3), icvl_gt)
    assert PROTOCOLS["icvl"].default_gt.resolve() == (icvl_dir / "icvl_test_groundtruth_label.txt").resolve()


def test_icvl_hand_computed_scores(icvl_gt):
    """Sequence 1 frames are off by 5.5 mm at every joint, sequence 2 by 10.5 mm, and Pinky.T always 20.5 mm:
    every number follows by hand."""
    rng = np.random.default_rng(0)
    xyz = _lift(icvl_gt, ICVL_CAM)
    mag = np.where(np.arange(1596)[:, None] < 702, 5.5, 10.5) * np.ones((1, 16))
    mag[:, 15] = 20.5
    pred = _project(xyz + mag[..., None] * _unit_dirs(rng, (1596, 16)), ICVL_CAM)
    s = evaluate_dataset(pred, icvl_gt, "icvl")
    assert isinstance(s, DatasetScores) and s.num_frames == 1596
    seq1, seq2 = (15 * 5.5 + 20.5) / 16, (15 * 10.5 + 20.5) / 16
    assert s.seq1 == pytest.approx(seq1, abs=1e-9) and s.seq2 == pytest.approx(seq2, abs=1e-9)
    assert s.mean == pytest.approx((702 * seq1 + 894 * seq2) / 1596, abs=1e-9)
    assert s.dsf == pytest.approx((702 * 5.5 + 894 * 10.5) / 1596, abs=1e-9)  # Pinky.T not in DSF's 15
    np.testing.assert_allclose(s.per_joint[:15], (702 * 5.5 + 894 * 10.5) / 1596, atol=1e-9)
    assert s.per_joint[15] == pytest.approx(20.5, abs=1e-9)
    assert s.success.shape == (81,)
    assert (s.success[:21] == 0).all() and (s.success[21:] == 1).all()  # max joint error 20.5 everywhere
    # the other camera (DeepPrior++'s 241.42) changes the numbers: the protocol's intrinsics are used
    other = evaluate_dataset(pred, icvl_gt, "icvl", camera=PROTOCOLS["msra"].camera)
    assert other.mean != pytest.approx(s.mean, abs=1e-6)


def test_icvl_success_curve_by_hand(icvl_gt):
    rng = np.random.default_rng(1)
    xyz = _lift(icvl_gt, ICVL_CAM)
    worst = rng.uniform(0.2, 79.8, 1596)
    mag = worst[:, None] * rng.uniform(0.1, 0.9, (1596, 16))
    mag[np.arange(1596), rng.integers(0, 16, 1596)] = worst
    pred = _project(xyz + mag[..., None] * _unit_dirs(rng, (1596, 16)), ICVL_CAM)
    s = evaluate_dataset(pred, icvl_gt, "icvl")
    for d in (0, 7, 33, 80):
        assert s.success[d] == pytest.approx(np.mean(worst <= d), abs=1e-12)
    assert s.auc == pytest.approx(np.trapezoid(s.success, np.arange(81.0)) / 80)


def test_icvl_dsf_bias_column_is_separate(icvl_gt):
    assert dsf_icvl_bias_mean(icvl_gt, icvl_gt) == pytest.approx(np.mean(ICVL_DSF_DEPTH_BIAS_MM), abs=1e-9)
    assert evaluate_dataset(icvl_gt, icvl_gt, "icvl").mean == 0.0  # no bias inside the metric


def test_partial_icvl_has_no_sequences(icvl_gt):
    s = evaluate_dataset(icvl_gt[:10], icvl_gt[:10], "icvl")
    assert s.seq1 is None and s.seq2 is None and s.mean == 0.0


def _msra_gt(rng, n):
    xyz = np.stack([rng.uniform(-60, 60, (n, 21)), rng.uniform(-60, 60, (n, 21)), rng.uniform(250, 450, (n, 21))],
                   -1)
    return xyz, _project(xyz, MSRA_CAM)


def test_msra_hand_computed_subjects_and_dsf():
    rng = np.random.default_rng(2)
    n = 90
    subjects = np.repeat(np.arange(9), 10)
    xyz, gt = _msra_gt(rng, n)
    mag = np.repeat(np.arange(1.0, 10.0), 10)[:, None] * np.ones((1, 21))  # subject k: k + 1 mm
    mag[:, 0] += 7.0  # wrist and thumb tip are outside DSF's joints
    mag[:, 20] += 3.0
    pred = _project(xyz + mag[..., None] * _unit_dirs(rng, (n, 21)), MSRA_CAM)
    s = evaluate_dataset(pred, gt, "msra", subjects=subjects)
    np.testing.assert_allclose(s.per_subject, np.arange(1.0, 10.0) + 10.0 / 21, atol=1e-9)
    assert s.dsf == pytest.approx(5.0, abs=1e-9)
    assert s.mean == pytest.approx(5.0 + 10.0 / 21, abs=1e-9)
    assert s.seq1 is None and s.seq2 is None
    # without subject ids (a partial test set) there are no per-subject means
    assert evaluate_dataset(pred, gt, "msra").per_subject is None
    # one subject missing -> NaN for it
    part = subject_means(np.ones(20), np.r_[np.zeros(10, int), np.full(10, 3)])
    assert part[0] == 1.0 and part[3] == 1.0 and np.isnan(part[1])


def test_msra_full_size_uses_community_folds():
    n = sum(MSRA_SUBJECT_FRAMES)
    gt = np.tile(np.array([160.0, 120.0, 300.0]), (n, 21, 1))
    pred = gt.copy()
    err_by_subject = np.repeat(np.arange(9.0), MSRA_SUBJECT_FRAMES)
    pred[..., 2] += err_by_subject[:, None]  # on the optical axis a depth offset is the 3D error
    s = evaluate_dataset(pred, gt, "msra")
    np.testing.assert_allclose(s.per_subject, np.arange(9.0), atol=1e-9)


def test_msra_folds_match_the_public_test_list(shared_dir):
    path = shared_dir / "msra" / "msra_test_list.txt"
    subjects = msra_subjects_from_list(path)
    assert np.bincount(subjects).tolist() == list(MSRA_SUBJECT_FRAMES)
    assert (np.diff(subjects) >= 0).all()  # P0..P8 concatenated in order
    gestures = []
    for line in path.read_text().splitlines()[:MSRA_SUBJECT_FRAMES[0]]:
        g = line.split("/")[1]
        if not gestures or gestures[-1] != g:
            gestures.append(g)
    assert tuple(gestures) == MSRA_GESTURES


def test_viewpoint_bins_by_hand():
    err = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    yaw = np.array([1.0, -1.0, 3.0, 2.9, 100.0])  # bins 0 (1/2 -> 0), 0 (-0.5 -> -0), 4 (1.5 -> 2), 2, out
    curve = viewpoint_curve(err, yaw, MSRA_YAW_BINS)
    at = {b: curve[k] for k, b in enumerate(MSRA_YAW_BINS)}
    assert at[0.0] == 1.5 and at[4.0] == 3.0 and at[2.0] == 4.0
    assert np.isnan(at[-40.0]) and np.isfinite(curve).sum() == 3
    assert len(MSRA_PITCH_BINS) == 51 and MSRA_PITCH_BINS[0] == -10 and MSRA_PITCH_BINS[-1] == 90


def test_bad_inputs():
    with pytest.raises(ValueError, match="dataset"):
        evaluate_dataset(np.zeros((1, 16, 3)), np.zeros((1, 16, 3)), "hands17")
    with pytest.raises(ValueError, match=r"\(N >= 1, 21, 3\)"):
        evaluate_dataset(np.ones((2, 16, 3)), np.ones((2, 16, 3)), "msra")
    with pytest.raises(ValueError, match="frames"):
        evaluate_dataset(np.ones((2, 16, 3)), np.ones((3, 16, 3)), "icvl")


def test_load_predictions_names_icvl_joints(tmp_path, icvl_gt):
    rows = icvl_gt[:3].reshape(3, -1).copy()
    rows[1, 47] = np.nan
    p = tmp_path / "bad.txt"
    np.savetxt(p, rows, fmt="%.3f")
    with pytest.raises(PredictionFormatError, match=r"line 2.*Pinky\.T d"):
        load_predictions(p, joint_names=PROTOCOLS["icvl"].joint_names)
    with pytest.raises(PredictionFormatError, match="expected 42 numbers per line.*found 48"):
        load_predictions(p)  # NYU default: 42 expected


def test_cli_icvl_default_gt(tmp_path, icvl_gt, capsys):
    pred = icvl_gt.copy()
    pred[..., 2] += 4.0  # a pure depth offset moves x and y too (lifted with d): compute the reference
    ref = np.linalg.norm(_lift(pred, ICVL_CAM) - _lift(icvl_gt, ICVL_CAM), axis=-1).mean()
    f = tmp_path / "CVPR99_ICVL_Mine.txt"
    np.savetxt(f, pred.reshape(len(pred), -1), fmt="%.3f")
    assert main(["--dataset", "icvl", str(f), "--dsf-bias", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "Mine" in out and f"{ref:7.3f}" in out and "dsf_bias" in out
    meta = json.loads((tmp_path / "o" / "scores.json").read_text())
    assert meta["methods"][0]["mean"] == pytest.approx(ref, abs=1e-9)
    assert (tmp_path / "o" / "per_joint_error.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_msra(tmp_path, capsys):
    rng = np.random.default_rng(3)
    n = 36
    _, gt = _msra_gt(rng, n)
    pred = gt.copy()
    pred[..., 2] += 2.0
    np.savetxt(tmp_path / "gt.txt", gt.reshape(n, -1), fmt="%.3f")
    np.savetxt(tmp_path / "pred.txt", pred.reshape(n, -1), fmt="%.3f")
    (tmp_path / "list.txt").write_text("".join(f"P{k // 4}/1/{k:06d}_depth.bin\n" for k in range(n)))
    np.savetxt(tmp_path / "angles.txt", np.stack([rng.uniform(-40, 40, n), rng.uniform(-10, 90, n)], 1), fmt="%.3f")
    assert main(["--dataset", "msra", str(tmp_path / "pred.txt")]) == 2
    assert "--gt" in capsys.readouterr().err
    args = ["--dataset", "msra", str(tmp_path / "pred.txt"), "--gt", str(tmp_path / "gt.txt"),
            "--list", str(tmp_path / "list.txt"), "--angles", str(tmp_path / "angles.txt"),
            "--out", str(tmp_path / "o")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "P8" in out
    meta = json.loads((tmp_path / "o" / "scores.json").read_text())
    assert len(meta["viewpoint"]["yaw"][0]) == len(MSRA_YAW_BINS)
    assert (tmp_path / "o" / "yaw_pitch.png").read_bytes()[:4] == b"\x89PNG"
    # without --angles the viewpoint curves use the angles of the ground truth itself
    assert main(["--dataset", "msra", str(tmp_path / "pred.txt"), "--gt", str(tmp_path / "gt.txt"),
                 "--out", str(tmp_path / "o2")]) == 0
    meta2 = json.loads((tmp_path / "o2" / "scores.json").read_text())
    curve = np.array([np.nan if v is None else v for v in meta2["viewpoint"]["yaw"][0]])
    ref = viewpoint_curve(np.linalg.norm(_lift(pred, MSRA_CAM) - _lift(gt, MSRA_CAM), axis=-1).mean(1),
                          msra_viewpoint_angles(gt)[:, 0], MSRA_YAW_BINS)
    np.testing.assert_allclose(curve, ref, atol=1e-2)
    (tmp_path / "short.txt").write_text("P0/1/000000_depth.bin\n")
    assert main(args[:5] + ["--list", str(tmp_path / "short.txt")]) == 2
    assert "short.txt" in capsys.readouterr().err


def test_msra_viewpoint_angles_by_hand():
    """Palm axis (wrist -> middle MCP) up the image: yaw = pitch = 0; turned by b about the vertical axis: yaw b;
    tilted by a towards the camera: pitch a (REN get_angle.py conventions, y down)."""
    def frame(direction):
        xyz = np.zeros((21, 3))
        xyz[:] = [10.0, -5.0, 400.0]
        xyz[5] = xyz[0] + 80.0 * np.asarray(direction)  # Mid.M
        return _project(xyz, MSRA_CAM)

    a, b = np.radians(30.0), np.radians(-20.0)
    uvd = np.stack([frame([0.0, -1.0, 0.0]), frame([np.sin(b), -np.cos(b), 0.0]),
                    frame([0.0, -np.cos(a), -np.sin(a)])])
    np.testing.assert_allclose(msra_viewpoint_angles(uvd), [[0.0, 0.0], [-20.0, 0.0], [0.0, 30.0]], atol=1e-9)
