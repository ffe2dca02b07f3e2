"""phase=test on ICVL / MSRA stand-ins: community files in each data set's own frame, scored as the community
evaluator would (checked against the stand-in generator's own ground-truth file, independent of the loaders)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from config import load_config
from dataloader.standin_icvl import generate_standin_icvl
from dataloader.standin_msra import generate_standin_msra

ICVL_CAM = (240.99, 240.96, 160.0, 120.0)
MSRA_CAM = (241.42, 241.42, 160.0, 120.0)


def _lift(uvd, cam):
    fx, fy, cx, cy = cam
    return np.stack([(uvd[..., 0] - cx) * uvd[..., 2] / fx, (uvd[..., 1] - cy) * uvd[..., 2] / fy, uvd[..., 2]], -1)


def _run_test(tmp_path, pkl, *args):
    import train_render

    base = [f"mano_path={pkl}", "width=0.25", "stage_num=1", "batch_size=4", "num_workers=0", "device=cpu",
            "transfer=none", "phase=test", *args]
    cfg = load_config(base)
    torch.manual_seed(0)
    net = train_render.build_models(cfg, torch.device("cpu"), transfer=False).net
    torch.save({"model": net.state_dict(), "epoch": 0}, tmp_path / "m.pth")
    cfg = load_config(base + [f"load_model={tmp_path / 'm.pth'}"])
    out = tmp_path / "out"
    out.mkdir()
    train_render.test(cfg, str(out), torch.device("cpu"))
    return out, json.loads((out / "test_scores.json").read_text())["views"][0]


@pytest.mark.slow
def test_icvl_test_phase_files_are_community_frame(tmp_path, standin_pkl):
    root = generate_standin_icvl(tmp_path / "icvl", n_train=2, n_test=6, seed=7)
    out, view = _run_test(tmp_path, standin_pkl, "dataset=icvl", f"data_root={root}")
    gt = np.loadtxt(root / "icvl_test_groundtruth_label.txt").reshape(-1, 16, 3)  # written by the generator
    pred = np.loadtxt(out / view["scores"]["s1_mano"]["file"]).reshape(-1, 16, 3)
    err = np.linalg.norm(_lift(pred, ICVL_CAM) - _lift(gt, ICVL_CAM), axis=-1)  # (N, 16)
    ev = view["scores"]["s1_mano"]["evaluator"]
    assert ev["mean"] == pytest.approx(err.mean(), abs=1e-3)
    assert view["scores"]["s1_mano"]["dsf11"] == pytest.approx(err[:, :15].mean(), abs=1e-3)
    assert len(np.loadtxt(out / "result_1_0.txt")) == 6


@pytest.mark.slow
def test_msra_test_phase_per_subject(tmp_path, standin_pkl):
    root = generate_standin_msra(tmp_path / "msra", 1, ("1", "2"), seed=8)
    out, view = _run_test(tmp_path, standin_pkl, "dataset=msra", f"data_root={root}", "test_subject=7")
    gt_all = np.loadtxt(root / "msra_test_groundtruth_label.txt").reshape(-1, 21, 3)
    names = (root / "msra_test_list.txt").read_text().split()
    gt = gt_all[[i for i, n in enumerate(names) if n.startswith("P7/")]]
    pred = np.loadtxt(out / view["scores"]["s1_pwe"]["file"]).reshape(-1, 21, 3)
    err = np.linalg.norm(_lift(pred, MSRA_CAM) - _lift(gt, MSRA_CAM), axis=-1)
    ev = view["scores"]["s1_pwe"]["evaluator"]
    assert ev["mean"] == pytest.approx(err.mean(), abs=1e-3)
    assert ev["per_subject"][7] == pytest.approx(err.mean(), abs=1e-3)
    assert ev["per_subject"][0] is None
    assert view["scores"]["s1_pwe"]["dsf11"] == pytest.approx(err[:, 1:20].mean(), abs=1e-3)
