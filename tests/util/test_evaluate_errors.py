"""Evaluator error paths (issue 11): a bad --out stops before any work; unusable depths are clear errors."""
from __future__ import annotations

import numpy as np
import pytest

import util.evaluate as evaluate
from util.evaluate import (NUM_JOINTS, PredictionFormatError, evaluate_dataset, evaluate_nyu, load_predictions,
                           main, save_predictions)


def _uvd(n: int = 5, seed: int = 0) -> np.ndarray:
    """(n, 14, 3) plausible NYU uvd: u, v in the 640x480 image, d 600-1000 mm."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(100, 500, (n, NUM_JOINTS)), rng.uniform(100, 400, (n, NUM_JOINTS)),
                     rng.uniform(600, 1000, (n, NUM_JOINTS))], axis=-1)


def _files(tmp_path, pred: np.ndarray, gt: np.ndarray):
    p, g = tmp_path / "pred.txt", tmp_path / "gt.txt"
    for path, arr in ((p, pred), (g, gt)):
        path.write_text("".join(" ".join(f"{v:.17g}" for v in row) + "\n" for row in arr.reshape(len(arr), -1)))
    return p, g


@pytest.mark.parametrize("make_out", [
    lambda d: (d / "scores.txt", "is an existing file"),
    lambda d: (d / "scores.txt" / "sub", "lies under"),
])
def test_out_naming_a_file_is_refused_before_any_work(tmp_path, capsys, monkeypatch, make_out):
    out, message = make_out(tmp_path)
    (tmp_path / "scores.txt").write_text("precious")
    pred, gt = _files(tmp_path, _uvd(), _uvd(seed=1))
    read = []
    monkeypatch.setattr(evaluate, "load_predictions", lambda *a, **k: read.append(a) or load_predictions(*a, **k))
    for dataset in ("nyu", "icvl"):
        rc = main([str(pred), "--gt", str(gt), "--out", str(out), "--dataset", dataset])
        err = capsys.readouterr()
        assert rc == 2 and f"--out {out}" in err.err and message in err.err and "Traceback" not in err.err
        assert err.out == "" and read == []  # no table, no file read
    assert (tmp_path / "scores.txt").read_text() == "precious"


def test_out_as_new_folder_still_works(tmp_path, capsys):
    pred, gt = _files(tmp_path, _uvd(), _uvd(seed=1))
    assert main([str(pred), "--gt", str(gt), "--out", str(tmp_path / "new" / "eval")]) == 0
    assert (tmp_path / "new" / "eval" / "scores.json").is_file()


@pytest.mark.parametrize("depth,line,joint", [(1e308, 1, 1), (0.0, 3, 5), (-250.0, 2, 14)])
def test_unusable_depth_in_a_file_names_line_and_joint(tmp_path, capsys, depth, line, joint):
    pred = _uvd()
    if depth == 1e308:
        pred[..., 2] = depth  # every depth: the file scored "fine" before
    else:
        pred[line - 1, joint - 1, 2] = depth
    p, g = _files(tmp_path, pred, _uvd(seed=1))
    with pytest.raises(PredictionFormatError, match=rf"pred\.txt, line {line}: joint {joint} \(.*0 < d <= 100000"):
        load_predictions(p)
    assert main([str(p), "--gt", str(g)]) == 2
    err = capsys.readouterr()
    assert f"pred.txt, line {line}: joint {joint}" in err.err and err.out == ""


def test_huge_pixel_coordinate_is_refused(tmp_path):
    pred = _uvd()
    pred[4, 0, 0] = -3e7
    p, _ = _files(tmp_path, pred, pred)
    with pytest.raises(PredictionFormatError, match=r"line 5: joint 1 .*\|u\|, \|v\| <= 1e\+06"):
        load_predictions(p)


@pytest.mark.parametrize("score", [
    lambda pred, gt: evaluate_nyu(pred, gt),
    lambda pred, gt: evaluate_dataset(pred, gt, "nyu"),
])
def test_array_entry_points_refuse_unusable_depths(score):
    gt = _uvd(seed=1)
    for bad in (1e308, 0.0, -1.0):
        pred = _uvd()
        pred[2, 7, 2] = bad
        with pytest.raises(ValueError, match=r"pred_uvd: frame 2, joint 7 .*0 < d"):
            score(pred, gt)
        with pytest.raises(ValueError, match=r"gt_uvd: frame 2, joint 7"):
            score(gt, pred)


def test_save_then_load_of_plausible_predictions_round_trips(tmp_path):
    pred = _uvd()
    save_predictions(tmp_path / "p.txt", pred)
    np.testing.assert_allclose(load_predictions(tmp_path / "p.txt"), pred, atol=5e-5)
