"""Config: defaults, command-line overrides, type checking and error messages."""
import json

import pytest

from config import Config, ConfigError, load_config


def test_defaults_are_the_official_values():
    cfg = Config()
    assert (cfg.phase, cfg.train_stage, cfg.stage_num, cfg.dataset) == ("train", "pretrain", 2, "nyu")
    assert cfg.cube == 250.0 and cfg.input_size == 128
    assert cfg.camera == (588.03, 587.07, 320.0, 240.0)
    assert (cfg.lr, cfg.weight_decay, cfg.step_size, cfg.max_epoch, cfg.batch_size) == (1e-3, 0.01, 10, 15, 32)
    assert (cfg.coord_weight, cfg.deconv_weight, cfg.shape_prior_weight, cfg.m2d_scale) == (100.0, 1.0, 1000.0, 0.1)


def test_overrides_all_syntaxes_and_types():
    cfg = load_config(["lr=5e-4", "--batch_size=8", "--demo", "true", "train_stage=Finetune",
                       "crop_hand_offsets=30,20,10", "cube_size=300"])
    assert cfg.lr == 5e-4 and cfg.batch_size == 8 and cfg.demo is True
    assert cfg.train_stage == "finetune"  # case-insensitive, normalised
    assert cfg.crop_hand_offsets == (30.0, 20.0, 10.0)
    assert cfg.cube == 300.0 and isinstance(cfg.cube_size, float)


def test_unknown_key_names_key_and_close_matches():
    with pytest.raises(ConfigError, match=r"unknown config key 'learning_rat'.*") :
        load_config(["learning_rat=1"])
    with pytest.raises(ConfigError, match=r"batch_size"):
        load_config(["batch_sise=4"])


@pytest.mark.parametrize("arg,match", [
    ("batch_size=abc", "batch_size.*integer"),
    ("lr=fast", "lr.*number"),
    ("demo=maybe", "demo.*boolean"),
    ("crop_hand_offsets=1,2", "crop_hand_offsets.*3 comma-separated"),
    ("train_stage=warmup", "train_stage must be one of"),
    ("renderer=opengl", "renderer must be one of"),
    ("stage_num=3", "stage_num"),
    ("oops", "cannot parse argument"),
])
def test_bad_values_give_one_clear_message(arg, match):
    with pytest.raises(ConfigError, match=match):
        load_config([arg])


def test_resolved_config_json(tmp_path):
    cfg = load_config(["width=0.25"])
    path = tmp_path / "config.json"
    cfg.save_json(str(path))
    data = json.loads(path.read_text())
    assert data["width"] == 0.25 and data["_derived"]["cube"] == 250.0
    assert "[default: 1.0]" in cfg.summary()


def test_bare_boolean_flag_and_dataset_overrides():
    cfg = load_config(["--demo", "--seed", "1"])
    assert cfg.demo is True and cfg.seed == 1
    cfg = load_config(["camera_intrinsics=500,501,160,120", "synth_depth=300,600"])
    assert cfg.camera == (500.0, 501.0, 160.0, 120.0) and cfg.synth_depth_range == (300.0, 600.0)
    assert load_config(["dataset=icvl"]).camera == (240.99, 240.96, 160.0, 120.0)
    with pytest.raises(ConfigError, match="camera_intrinsics must be 4 numbers"):
        load_config(["camera_intrinsics=1,2,3"])
    with pytest.raises(ConfigError, match="synth_depth"):
        load_config(["synth_depth=600,300"])
