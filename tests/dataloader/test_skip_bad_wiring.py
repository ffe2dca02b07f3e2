"""``skip_bad`` reaches every real-data loader the trainer builds (issue 11), via dataloader.builders."""
from __future__ import annotations

import warnings

import pytest

from config import load_config
from dataloader.builders import build_real_dataset, build_real_loader
from dataloader.depth_io import DataFileError

from .conftest import write_ball_tree


@pytest.fixture()
def bad_tree(tmp_path):
    """A ball tree whose test frame 2 (0-based) is a truncated PNG; train frame 1 is a JPEG-like non-PNG."""
    root = tmp_path / "tree"
    write_ball_tree(root, n_train=4, n_test=5, seed=2)
    png = root / "test" / "depth_1_0000003.png"
    png.write_bytes(png.read_bytes()[:300])
    (root / "train" / "depth_1_0000002.png").write_bytes(b"\xff\xd8\xff\xe0 not a png")
    return root


def _cfg(root, skip_bad: bool):
    return load_config([f"data_root={root}", f"skip_bad={str(skip_bad).lower()}", "num_workers=0", "batch_size=2",
                        "augment=false"])


def test_skip_bad_true_reaches_the_built_datasets_and_loaders(bad_tree):
    cfg = _cfg(bad_tree, True)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        test_ds = build_real_dataset(cfg, "test")
        train_ds = build_real_dataset(cfg, "train", labels=False)
        loader = build_real_loader(cfg, "test", train=False)
        train_loader = build_real_loader(cfg, "train", train=True)
    assert test_ds.skip_bad and test_ds.frames.tolist() == [0, 1, 3, 4] and test_ds.num_skipped == 1
    assert len(train_ds) == 3  # frame 1 skipped (labels stripped: wrapped)
    indices = [int(i) for batch in loader for i in batch["index"]]
    assert indices == [0, 1, 3, 4]
    assert sorted(int(i) for batch in train_loader for i in batch["index"]) == [0, 2, 3]


def test_skip_bad_false_stops_on_the_bad_file(bad_tree):
    cfg = _cfg(bad_tree, False)
    loader = build_real_loader(cfg, "test", train=False)
    with pytest.raises(DataFileError, match=r"depth_1_0000003\.png"):
        for _ in loader:
            pass


def test_center_depth_range_reaches_the_built_dataset(bad_tree):
    """The config's centre range (not the loader default) decides: a range excluding every ball-tree centre
    (550-900 mm) stops construction naming the centre file and line; with skip_bad it is a counted skip."""
    cfg = load_config([f"data_root={bad_tree}", "center_depth_range=100,300", "num_workers=0"])
    with pytest.raises(DataFileError, match=r"center_test_0_refined\.txt, line 1: centre z = .* outside the "
                                            r"plausible range 100-300 mm"):
        build_real_dataset(cfg, "test")
    skipping = load_config([f"data_root={bad_tree}", "center_depth_range=100,300", "skip_bad=true", "num_workers=0"])
    with warnings.catch_warnings(record=True), pytest.raises(DataFileError, match="no usable frames"):
        warnings.simplefilter("always")
        build_real_dataset(skipping, "test")  # every frame skipped as an implausible centre
