"""The DSF-claim benchmark's bookkeeping (bench/dsf_claim.py, bench/claim_report.py) on fake result sets: gap
arithmetic and targets by hand, scoring against a hand-made error, the table, the plan's fairness (same width,
batch, seed and budget for every arm; every run a valid trainer command) and the plots / logs it writes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.claim_report import (ArmResult, format_summary, format_table, gap_closed, plot_ablation,
                                plot_loss_curves, plot_success, read_scalar_log, save_results, score_file,
                                summarize, tree_gt_uvd)
from bench.dsf_claim import MODES, build_plan, final_branch_file, overrides_to_argv
from config import load_config
from dataloader.depth_io import write_joint_data
from util.evaluate import save_predictions

PATHS = {"mano": "/m/MANO_RIGHT.pkl", "clean": "/d/nyu", "thick": "/d/nyu_thick", "runs": "/r"}


def _curve(frac20: float, frac40: float) -> np.ndarray:
    c = np.zeros(81)
    c[20:40], c[40:] = frac20, frac40
    return c


def _arm(name, group, err, tree="clean", branch="pwe"):
    return ArmResult(name, name, group, branch, tree, err, err + 1.0, _curve(0.25, 0.75), 60.0)


def test_gap_closed_by_hand():
    assert gap_closed(30.0, 18.0, 10.0) == pytest.approx(0.6)
    assert gap_closed(30.0, 35.0, 10.0) == pytest.approx(-0.25)  # worse than synthetic-only
    assert gap_closed(30.0, 10.0, 10.0) == pytest.approx(1.0)
    assert gap_closed(10.0, 12.0, 10.0) is None and gap_closed(9.0, 12.0, 10.0) is None  # no gap to close
    assert gap_closed(10.5, 10.2, 10.0) is None  # a 0.5 mm gap: below MIN_GAP_MM, its fraction would be noise


def test_summary_targets_on_a_fake_result_set():
    res = {r.name: r for r in [
        _arm("synthetic", "main", 30.0), _arm("dsf", "main", 18.5), _arm("supervised", "main", 10.0),
        _arm("synthetic_mano", "main", 28.0, branch="mano"), _arm("dsf_mano", "main", 19.0, branch="mano"),
        _arm("supervised_mano", "main", 12.0, branch="mano"),
        _arm("mano_only", "ablation", 20.0, branch="mano"), _arm("pwe_only", "ablation", 25.0),
        _arm("no_collision", "ablation", 18.0),
        _arm("synthetic_thick", "mismatch", 32.0, "thick"), _arm("dsf_thick", "mismatch", 26.0, "thick"),
        _arm("supervised_thick", "mismatch", 12.0, "thick")]}
    s = summarize(res)
    assert s["gap_closed"] == pytest.approx(11.5 / 20.0)  # 57.5 %: below the 60 % target
    assert s["gap_closed_mismatch"] == pytest.approx(6.0 / 20.0)
    assert s["gap_closed_mano_branch"] == pytest.approx(9.0 / 16.0)
    assert s["dual_beats_single"] is True  # 18.5 < 25 (pixel) and 19 < 20 (MANO)
    worse = dict(res, mano_only=_arm("mano_only", "ablation", 18.9, branch="mano"))
    assert summarize(worse)["dual_beats_single"] is False  # the MANO branch alone does better than DSF's
    assert s["ablation_deltas"] == {"mano_only": 1.0, "pwe_only": 6.5, "no_collision": -0.5}  # vs same branch
    assert list(s["targets"].values()) == [False, True, False]
    text = format_summary(s)
    assert "57.5%" in text and "30.0%" in text and text.count("FAIL") == 2 and text.count("PASS") == 1
    # a missing arm makes its target undecidable, not passed
    del res["supervised_thick"]
    s = summarize(res)
    assert s["gap_closed_mismatch"] is None and list(s["targets"].values())[2] is None


def test_table_rows():
    rows = format_table([_arm("dsf", "main", 18.5), ArmResult("x", "re-scored", "mismatch", "mano", "thick", 21.0,
                                                              22.25, _curve(0.1, 0.5), None)]).splitlines()
    assert rows[2] == "| dsf | pwe | clean | 18.50 | 19.50 | 25.0% | 75.0% | 1.0 min |"
    assert rows[3] == "| re-scored | mano | thick | 21.00 | 22.25 | 10.0% | 50.0% | — |"


def test_score_file_against_a_known_error(tmp_path):
    """Predictions = ground truth moved 10 mm along each joint's viewing ray (depth + 10 mm at the same pixel):
    every 3D error is exactly 10 mm * |ray| / z ... computed here independently in numpy."""
    rng = np.random.default_rng(0)
    n = 6
    xyz = np.concatenate([rng.uniform(-80, 80, (n, 36, 2)), rng.uniform(600, 900, (n, 36, 1))], -1)  # y up
    fx, fy, cx, cy = 588.03, 587.07, 320.0, 240.0
    uvd = np.stack([cx + fx * xyz[..., 0] / xyz[..., 2], cy - fy * xyz[..., 1] / xyz[..., 2], xyz[..., 2]], -1)
    (tmp_path / "test").mkdir()
    write_joint_data(tmp_path / "test" / "joint_data.mat", uvd[None], xyz[None])
    gt = tree_gt_uvd(tmp_path)
    assert gt.shape == (n, 14, 3)
    pred = gt.copy()
    pred[..., 2] += 10.0
    save_predictions(tmp_path / "pred.txt", pred)
    m11, m14, succ = score_file(tmp_path / "pred.txt", gt)
    ray = np.sqrt(((gt[..., 0] - cx) / fx) ** 2 + ((gt[..., 1] - cy) / fy) ** 2 + 1.0)  # |X| / z at that pixel
    err = 10.0 * ray
    assert m14 == pytest.approx(err.mean(), abs=1e-3) and m11 == pytest.approx(err[:, :11].mean(), abs=1e-3)
    assert succ[10] == 0.0 and succ[11] == 1.0  # every frame's worst joint is a little over 10 mm


def test_plan_is_fair_and_every_run_is_a_valid_command():
    for mode, budget in MODES.items():
        runs, arms = build_plan(budget, PATHS)
        names = [r.name for r in runs]
        assert len(set(names)) == len(names) and {a.run for a in arms} <= set(names)
        for r in runs:
            cfg = load_config(overrides_to_argv(r.overrides))  # raises on an unknown key or a bad value
            assert (cfg.width, cfg.batch_size, cfg.seed, cfg.run_name) == (budget.width, budget.batch_size,
                                                                           budget.seed, r.name)
            if r.kind in ("finetune", "supervised") or r.name == "synthetic":
                assert cfg.iters_per_epoch == budget.arm_iters and cfg.max_epoch == 1
                assert cfg.finetune_dir.endswith("pretrain/latest.pth")
        by = {r.name: load_config(overrides_to_argv(r.overrides)) for r in runs}
        assert by["no_inter_branch"].inter_branch is False and by["dsf"].inter_branch is True
        assert by["one_stage"].stage_num == 1 and by["no_collision"].coll_weight == 0
        assert by["no_part_icp"].partICP_weight == 0 and by["no_transfer"].transfer == "none"
        assert by["dsf"].transfer == "consis" and by["dsf_thick"].data_root == PATHS["thick"]
        assert by["supervised"].train_stage == "supervised" and by["synthetic"].train_stage == "pretrain"


def test_report_files(tmp_path):
    res = [_arm("synthetic", "main", 30.0), _arm("dsf", "main", 18.5), _arm("supervised", "main", 10.0),
           _arm("no_collision", "ablation", 18.0), _arm("dsf_thick", "mismatch", 26.0, "thick")]
    plot_success(tmp_path / "s.png", res, "t")
    plot_ablation(tmp_path / "a.png", res)
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "train_log.jsonl", "w") as f:
        for step in range(1, 6):
            f.write(json.dumps({"step": step, "loss/real/m2d/s2": 0.1 / step, "stat/m2p_selected": step % 2,
                                "note": "x"}) + "\n")
    scal = read_scalar_log(run)
    assert set(scal) == {"loss/real/m2d/s2", "stat/m2p_selected"}
    np.testing.assert_array_equal(scal["stat/m2p_selected"][1], [1, 0, 1, 0, 1])
    plot_loss_curves(tmp_path / "l.png", scal, "t", count_keys=("stat/m2p_selected",))
    save_results(tmp_path / "r.json", res, summarize({r.name: r for r in res}), {"mode": "test"})
    back = json.loads((tmp_path / "r.json").read_text())
    assert ArmResult.from_dict(back["arms"][1]).mean_11 == 18.5
    for name in ("s.png", "a.png", "l.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    assert final_branch_file(run, "mano", 1).name == "predictions_s1_mano_v1.txt"


def test_dsf_diagnostics_from_the_step_log():
    from bench.dsf_claim import diagnostics

    steps = np.arange(1, 11)
    d = diagnostics({"stat/m2p_selected": (steps, np.array([0, 0, 3, 5, 0, 0, 0, 0, 0, 8.0])),
                     "err/pwe_s2": (steps, np.array([10.0] * 5 + [20.0] * 5))})
    assert d["m2p_selected"] == {"steps": 10, "steps_with_any": 3, "mean_per_step": 1.6, "max": 8.0}
    assert d["err/pwe_s2"] == {"first": 10.0, "last": 20.0}  # first / last fifth (2 steps each)
    assert diagnostics({}) == {}


def test_bn_recalibration_rescoring_plan():
    """``--bn-recalibration N``: one test run per fine-tuning run (and the synthetic-only control) on that run's
    last checkpoint and data, with bn_recalibration=N; the fine-tuning arms are scored from those runs."""
    from bench.dsf_claim import with_bn_recalibration

    runs, arms = build_plan(MODES["default"], PATHS)
    extra, bn_arms = with_bn_recalibration(runs, arms, PATHS, 64)
    fine = {r.name for r in runs if r.kind == "finetune"}
    assert {r.name for r in extra} == {f"{n}_bn" for n in fine} | {"synthetic_bn"}
    by_name = {r.name: r for r in runs}
    for r in extra:
        cfg = load_config(overrides_to_argv(r.overrides))
        src = r.name[:-3]
        assert cfg.phase == "test" and cfg.bn_recalibration == 64 and r.needs == (src,)
        assert cfg.load_model.endswith(f"nyu/{src}/latest.pth")
        assert cfg.data_root == load_config(overrides_to_argv(by_name[src].overrides)).data_root
        assert cfg.stage_num == load_config(overrides_to_argv(by_name[src].overrides)).stage_num
    runs_of = {a.name: a.run for a in bn_arms}
    assert runs_of["dsf"] == "dsf_bn" and runs_of["dsf_thick"] == "dsf_thick_bn" and runs_of["one_stage"] == "one_stage_bn"
    assert runs_of["synthetic"] == "synthetic" and runs_of["supervised"] == "supervised"  # baselines unchanged
    assert runs_of["synthetic_bn"] == "synthetic_bn"
