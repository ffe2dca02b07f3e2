"""``train_stage=supervised`` (the benchmark's upper bound, not DSF) end to end through ``train_render.main``: the
labelled-real-crop loss terms are logged, no synthetic or self-supervised term runs, missing fits are one clear
error."""
from __future__ import annotations

import json
import shutil

import pytest

import train_render
from dataloader.standin_nyu import generate_standin_nyu


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory, standin_pkl):
    root = tmp_path_factory.mktemp("suptree")
    generate_standin_nyu(root, n_train=4, n_test=2, seed=2, mano_path=str(standin_pkl), views=1, batch_size=4)
    return root


def _argv(tree, mano, out, **extra):
    kw = {"train_stage": "supervised", "data_root": tree, "mano_path": mano, "width": 0.125, "batch_size": 2,
          "max_epoch": 1, "iters_per_epoch": 1, "output_dir": out, "run_name": "sup", "num_workers": 0,
          "epoch_test": "false", "img_log_every": 1000, **extra}
    return [f"{k}={v}" for k, v in kw.items()]


@pytest.mark.slow
def test_supervised_stage_end_to_end(tiny_tree, standin_pkl, tmp_path):
    assert train_render.main(_argv(tiny_tree, standin_pkl, tmp_path)) == 0
    run = tmp_path / "nyu" / "sup"
    rec = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    terms = {k for r in rec for k in r if k.startswith("loss/") and k != "loss/total"}
    assert terms == {f"loss/sup/{t}/s{k}" for t in ("pix", "coord", "joint", "vert", "shape", "negscale")
                     for k in (1, 2)}
    assert all(r["loss/sup/joint/s2"] > 0 for r in rec if "loss/sup/joint/s2" in r)
    scores = json.loads((run / "test_scores.json").read_text())
    assert set(scores["views"][0]["scores"]) == {"s1_pwe", "s1_mano", "s2_pwe", "s2_mano"}
    assert (run / "predictions_s2_pwe_v1.txt").is_file() and (run / "latest.pth").is_file()


def test_supervised_stage_without_fits_is_a_clear_error(tiny_tree, standin_pkl, tmp_path, capsys):
    tree = tmp_path / "nofits"
    shutil.copytree(tiny_tree, tree)
    shutil.rmtree(tree / "posePara_lm_collosion")
    assert train_render.main(_argv(tree, standin_pkl, tmp_path / "out")) == 2
    assert "nyu-train-0-glb.txt" in capsys.readouterr().err
