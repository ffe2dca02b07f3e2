"""``skip_bad=true`` reaches every loader a demo run builds (issue 11): pre-training's test, fine-tuning's real
training loader and the final test all skip the corrupt frames of the stand-in tree instead of stopping."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import train_render as T
from config import load_config

FRAMES = ["demo_train_frames=8", "demo_test_frames=4"]
TINY = ["width=0.125", "batch_size=2", "num_workers=0", "iters_per_epoch=1", "max_epoch=1", "num_points=256",
        "img_log_every=1000"]


@pytest.fixture(scope="module")
def corrupt_demo_dir(tmp_path_factory) -> Path:
    """A demo folder whose stand-in NYU tree has 6 of 8 train and 1 of 4 test view-1 PNGs truncated (read only)."""
    demo = tmp_path_factory.mktemp("skipbad") / "demo"
    T.ensure_demo_assets(load_config([f"demo_dir={demo}", *FRAMES]))
    tree = demo / "nyu"
    bad = [tree / "train" / f"depth_1_{i:07d}.png" for i in (1, 2, 3, 5, 6, 7)] + [tree / "test" / "depth_1_0000002.png"]
    for png in bad:
        png.write_bytes(png.read_bytes()[:200])
    return demo


@pytest.mark.slow
def test_demo_with_skip_bad_skips_bad_frames_in_every_loader(tmp_path, corrupt_demo_dir, capsys, recwarn):
    out = tmp_path / "out"
    rc = T.main(["demo=true", "skip_bad=true", f"demo_dir={corrupt_demo_dir}", f"output_dir={out}", "run_name=d",
                 *FRAMES, *TINY])
    err = capsys.readouterr().err
    assert rc == 0, err
    # the skip summaries are only produced by data sets built with skip_bad (fine-tuning's training set, the test
    # set); the frame counts below show that both phases' tests used a skip_bad test set
    summaries = [str(w.message) for w in recwarn if "skipping" in str(w.message)]
    assert sum("train (view 1): skipping 6 of 8 frames (6 bad PNG)" in m for m in summaries) >= 1, summaries
    assert any("test (view 1): skipping 1 of 4 frames (1 bad PNG)" in m for m in summaries), summaries
    for phase in ("pretrain", "finetune"):
        scores = json.loads((out / "nyu" / "d" / phase / "test_scores.json").read_text())
        assert scores["views"][0]["frames"] == 3, scores["views"][0]  # 4 test frames, 1 skipped
    # the demo profile re-estimates BN statistics on real crops, so its table carries the BN-only control row
    table = (out / "nyu" / "d" / "demo_table.txt").read_text().splitlines()
    labels = [line[:28].strip() for line in table[3:6]]
    assert labels == ["pre-trained (synthetic only)", "pre-trained + real BN stats", "fine-tuned (self-supervised)"]


@pytest.mark.slow
def test_demo_without_skip_bad_stops_naming_the_file(tmp_path, corrupt_demo_dir, capsys):
    rc = T.main(["demo=true", f"demo_dir={corrupt_demo_dir}", f"output_dir={tmp_path / 'out'}", "run_name=d",
                 *FRAMES, *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "depth_1_0000002.png" in err and "Traceback" not in err, err
