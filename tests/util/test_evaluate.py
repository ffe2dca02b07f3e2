"""NYU community evaluation: published numbers, analytic cases, file format round trip, bad input, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from util.evaluate import (
    SUCCESS_THRESHOLDS_MM, NYUScores, PredictionFormatError, evaluate_nyu, load_predictions, main,
    save_predictions, success_curve,
)

# file -> (published mean error over the 14 joints in mm, decimals it was published with).
# Point-to-Point's paper gives 9.045 mm; tables that print 9.05 rounded that value again.
PUBLISHED = {
    "CVPR18_NYU_V2V_PoseNet.txt": (8.42, 2),
    "ICCVW17_NYU_DeepPrior++.txt": (12.24, 2),
    "CVPR18_NYU_HandPointNet.txt": (10.54, 2),
    "CVPR19_NYU_CrossInfoNet.txt": (10.08, 2),
    "ECCV18_NYU_Point-to-Point.txt": (9.045, 3),
    "WACV19_NYU_murauer_n72757_uvd.txt": (9.47, 2),
}
FX, FY, CX, CY = 588.03, -587.07, 320.0, 240.0  # the community evaluator's own constants (y up)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _plain_parse(path: Path) -> np.ndarray:
    """Independent reader: plain Python, one float list per line (as the community's get_positions)."""
    with open(path) as fh:
        rows = [[float(t) for t in line.split()] for line in fh]
    return np.array(rows, dtype=np.float64).reshape(len(rows), -1, 3)


def _lift(uvd: np.ndarray) -> np.ndarray:
    x = (uvd[..., 0] - CX) * uvd[..., 2] / FX
    y = (uvd[..., 1] - CY) * uvd[..., 2] / FY
    return np.stack([x, y, uvd[..., 2]], axis=-1)


def _project(xyz: np.ndarray) -> np.ndarray:
    u = CX + FX * xyz[..., 0] / xyz[..., 2]
    v = CY + FY * xyz[..., 1] / xyz[..., 2]
    return np.stack([u, v, xyz[..., 2]], axis=-1)


@pytest.fixture(scope="module")
def nyu_dir(shared_dir) -> Path:
    return shared_dir / "nyu"


@pytest.fixture(scope="module")
def gt_uvd(nyu_dir) -> np.ndarray:
    return _plain_parse(nyu_dir / "test_groundtruth_uvd.txt")


def _write(path: Path, rows: np.ndarray, fmt: str = "%.3f") -> Path:
    np.savetxt(path, rows.reshape(len(rows), -1), fmt=fmt)
    return path


# --- published numbers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fname", sorted(PUBLISHED))
def test_reproduces_published_results(nyu_dir, gt_uvd, fname):
    path = nyu_dir / "published_results" / fname
    gt_ours = load_predictions(nyu_dir / "test_groundtruth_uvd.txt")
    scores = evaluate_nyu(load_predictions(path, num_frames=8252), gt_ours)
    err = np.linalg.norm(_lift(_plain_parse(path)) - _lift(gt_uvd), axis=-1)  # (8252, 14), independent
    assert abs(scores.mean_14 - err.mean()) < 1e-3
    assert abs(scores.mean_11 - err[:, :11].mean()) < 1e-3
    np.testing.assert_allclose(scores.per_joint, err.mean(axis=0), atol=1e-3)
    assert abs(scores.seq1 - err[:2440].mean()) < 1e-3 and abs(scores.seq2 - err[2440:].mean()) < 1e-3
    worst = err.max(axis=1)
    np.testing.assert_array_equal(scores.success, [(worst <= d).mean() for d in range(81)])
    value, decimals = PUBLISHED[fname]
    assert round(scores.mean_14, decimals) == value
    assert scores.num_frames == 8252 and scores.split == 2440


# --- analytic cases -------------------------------------------------------------------------------------

def test_perfect_prediction_scores_zero(gt_uvd):
    s = evaluate_nyu(gt_uvd, gt_uvd)
    assert s.mean_14 == 0 and s.mean_11 == 0 and s.seq1 == 0 and s.seq2 == 0
    assert not s.per_joint.any()
    assert (s.success == 1).all() and s.auc == 1.0


def test_known_per_joint_offset_scores_that_offset(gt_uvd):
    gt = gt_uvd[:500]
    rng = np.random.default_rng(0)
    radius = np.arange(1.0, 15.0) * 1.5 + 0.25  # (14,) mm: 1.75, 3.25, ..., 21.25
    direction = rng.normal(size=(len(gt), 14, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    pred = _project(_lift(gt) + radius[:, None] * direction)
    s = evaluate_nyu(pred, gt)
    np.testing.assert_allclose(s.per_joint, radius, atol=1e-9)
    assert s.mean_14 == pytest.approx(radius.mean(), abs=1e-9)
    assert s.mean_11 == pytest.approx(radius[:11].mean(), abs=1e-9)
    assert s.seq1 is None and s.seq2 is None  # 500 frames: no default split
    # every frame's worst joint is the 21.25 mm one: a step from 0 to 1 between D = 21 and D = 22
    np.testing.assert_array_equal(s.success, (SUCCESS_THRESHOLDS_MM >= 22).astype(float))


def test_success_curve_hand_computed_monotone_and_reaches_one():
    errors = np.array([[0.0, 0.5], [10.0, 3.0], [2.0, 9.999], [79.9, 1.0]])  # worst: 0.5, 10, 9.999, 79.9
    curve = success_curve(errors)
    assert curve.shape == (81,)
    np.testing.assert_array_equal(curve[[0, 1, 9, 10, 11, 79, 80]], [0, 0.25, 0.25, 0.75, 0.75, 0.75, 1.0])
    rng = np.random.default_rng(1)
    curve = success_curve(rng.uniform(0, 80, size=(1000, 14)))
    assert (np.diff(curve) >= 0).all() and curve[-1] == 1.0


def test_split_argument_and_auc():
    rng = np.random.default_rng(2)
    gt = np.concatenate([rng.uniform(100, 400, (40, 14, 2)), rng.uniform(500, 900, (40, 14, 1))], -1)
    pred = gt.copy()
    pred[30:, :, 2] += 5.0  # frames 30.. are 5 mm too deep: xyz error = 5 mm * |(x, y, z)| / z
    s = evaluate_nyu(pred, gt, split=30)
    ref = np.linalg.norm(_lift(pred) - _lift(gt), axis=-1)
    assert s.seq1 == 0.0 and s.seq2 == pytest.approx(ref[30:].mean(), abs=1e-12)
    assert s.auc == pytest.approx(np.trapezoid(s.success, np.arange(81)) / 80)
    for bad in (0, 40, -1):
        with pytest.raises(ValueError, match="split"):
            evaluate_nyu(pred, gt, split=bad)
    with pytest.raises(ValueError, match="7 frames but the ground truth has 40"):
        evaluate_nyu(pred[:7], gt)
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluate_nyu(np.full_like(gt, np.nan), gt)
    assert isinstance(s, NYUScores) and json.dumps(s.to_dict())
    s_torch = evaluate_nyu(torch.tensor(pred, dtype=torch.float32), torch.tensor(gt), split=30)
    assert s_torch.seq2 == pytest.approx(s.seq2, rel=1e-5)


# --- the file format ------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path, nyu_dir):
    rng = np.random.default_rng(3)
    uvd = rng.uniform(0, 1000, (50, 14, 3))
    path = tmp_path / "sub" / "pred.txt"
    save_predictions(path, uvd)
    lines = path.read_text().splitlines()
    assert len(lines) == 50 and all(len(ln.split()) == 42 for ln in lines)
    assert all(len(t.split(".")[1]) == 4 for t in lines[0].split())
    np.testing.assert_allclose(load_predictions(path, num_frames=50), uvd, atol=5e-5 + 1e-12)
    save_predictions(path, torch.tensor(uvd))  # tensors are accepted too
    np.testing.assert_allclose(load_predictions(path), uvd, atol=5e-5 + 1e-12)
    # a 3-decimal community file survives a save/load exactly
    v2v = load_predictions(nyu_dir / "published_results" / "CVPR18_NYU_V2V_PoseNet.txt")
    save_predictions(tmp_path / "v2v.txt", v2v)
    np.testing.assert_array_equal(load_predictions(tmp_path / "v2v.txt"), v2v)
    with pytest.raises(ValueError, match=r"shape \(N, 14, 3\)"):
        save_predictions(tmp_path / "x.txt", uvd[:, :11])


def test_lenient_whitespace_crlf_and_trailing_blank_lines(tmp_path):
    uvd = np.random.default_rng(4).uniform(1, 500, (3, 14, 3)).round(3)
    text = "\r\n".join("\t".join(f"{v:g}" for v in row) + "  " for row in uvd.reshape(3, -1)) + "\r\n\n  \n"
    (tmp_path / "p.txt").write_text(text, newline="")
    np.testing.assert_array_equal(load_predictions(tmp_path / "p.txt"), uvd)


def _good_lines(n: int = 6) -> list[str]:
    uvd = np.random.default_rng(5).uniform(1, 500, (n, 42))
    return [" ".join(f"{v:.3f}" for v in row) for row in uvd]


@pytest.mark.parametrize("case, edit, message", [
    ("columns", lambda ls: ls.__setitem__(4, ls[4].rsplit(" ", 1)[0]),
     r"line 5: expected 42 numbers .* found 41"),
    ("extra column", lambda ls: ls.__setitem__(1, ls[1] + " 1.0"),
     r"line 2: expected 42 numbers .* found 43"),
    ("nan", lambda ls: ls.__setitem__(2, "nan " + ls[2].split(" ", 1)[1]),
     r"line 3: column 1 \(Pinky.T u\) is 'nan'; expected finite"),
    ("inf", lambda ls: ls.__setitem__(5, ls[5].rsplit(" ", 1)[0] + " -inf"),
     r"line 6: column 42 \(Palm d\) is '-inf'; expected finite"),
    ("overflow", lambda ls: ls.__setitem__(0, ls[0].rsplit(" ", 1)[0] + " 1e999"), r"line 1: .* is '1e999'"),
    ("text", lambda ls: ls.__setitem__(3, " ".join(ls[3].split()[:1] + ["abc"] + ls[3].split()[2:])),
     r"line 4: column 2: cannot parse 'abc' as a number; expected 42 numbers"),
    ("word", lambda ls: ls.__setitem__(3, " ".join(["12.5x"] + ls[3].split()[1:])),
     r"line 4: column 1: cannot parse '12.5x' as a number"),
    ("blank line", lambda ls: ls.insert(2, ""), r"line 3: expected 42 numbers .* found 0"),
])
def test_bad_input_names_file_line_and_expectation(tmp_path, case, edit, message):
    lines = _good_lines()
    edit(lines)
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PredictionFormatError, match=message) as info:
        load_predictions(path)
    assert str(path) in str(info.value) and info.value.path == str(path)


def test_bad_input_whole_file_cases(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("\n".join(_good_lines(5)) + "\n")
    with pytest.raises(PredictionFormatError, match=r"short.txt: 5 lines \(frames\), expected 8252"):
        load_predictions(path, num_frames=8252)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(PredictionFormatError, match="empty.txt: empty file"):
        load_predictions(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"1.0 2.0\n\xff\xfe\n")
    with pytest.raises(PredictionFormatError, match="bin.txt, line 2: non-ASCII"):
        load_predictions(tmp_path / "bin.txt")


# --- CLI ------------------------------------------------------------------------------------------------

def test_cli_writes_table_plots_and_numbers(tmp_path, nyu_dir, capsys):
    files = [str(nyu_dir / "published_results" / f) for f in sorted(PUBLISHED)]
    out = tmp_path / "out"
    assert main([*files, "--gt", str(nyu_dir / "test_groundtruth_uvd.txt"), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "V2V_PoseNet" in table and "8.419" in table and "Point-to-Point" in table
    for png in ("success_curve.png", "per_joint_error.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    meta = json.loads((out / "scores.json").read_text())
    by_name = {m["name"]: m for m in meta["methods"]}
    assert len(by_name) == 6 and len(by_name["DeepPrior++"]["success"]) == 81
    assert round(by_name["DeepPrior++"]["mean_14"], 2) == 12.24
    csv_lines = (out / "scores.csv").read_text().splitlines()
    assert len(csv_lines) == 7 and csv_lines[0].split(",")[8] == "Pinky.T"


def test_cli_subset_split_and_errors(tmp_path, gt_uvd, capsys):
    gt = _write(tmp_path / "gt.txt", gt_uvd[:20])
    pred = _write(tmp_path / "pred.txt", gt_uvd[:20] + [1.0, 0.0, 0.0])
    assert main([str(pred), "--gt", str(gt), "--names", "shifted"]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row[0] == "shifted" and row[1] == "20" and row[4] == row[5] == "-"  # no split for a subset
    assert main([str(pred), "--gt", str(gt), "--split", "10"]) == 0
    assert "-" not in capsys.readouterr().out.splitlines()[-1].split()
    short = _write(tmp_path / "short.txt", gt_uvd[:19])
    assert main([str(short), "--gt", str(gt)]) == 2
    err = capsys.readouterr().err
    assert "short.txt: 19 lines (frames), but the ground truth" in err and "has 20" in err
    (tmp_path / "nan.txt").write_text("NaN " + pred.read_text().split(" ", 1)[1])
    assert main([str(tmp_path / "nan.txt"), "--gt", str(gt)]) == 2
    assert "nan.txt, line 1: column 1 (Pinky.T u) is 'NaN'" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.txt"), "--gt", str(gt)]) == 2
    assert "missing.txt" in capsys.readouterr().err


def test_directory_instead_of_file_is_a_clear_error(tmp_path):
    from util.evaluate import PredictionFormatError, load_predictions, main

    with pytest.raises(PredictionFormatError, match="a directory"):
        load_predictions(tmp_path)
    assert main([str(tmp_path), "--gt", str(tmp_path)]) == 2
