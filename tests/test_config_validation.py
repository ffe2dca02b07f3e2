"""Config validation at load time (issue 11): every bad value stops with one ConfigError naming the key."""
import dataclasses
import math

import pytest
import torch

import config
from config import CHECKS, CHOICES, RANGES, Config, ConfigError, load_config


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(Config)}


def test_every_table_entry_names_a_config_key():
    names = set(_fields())
    assert set(CHOICES) <= names, set(CHOICES) - names
    assert set(RANGES) <= names, set(RANGES) - names
    Config().validate()  # the defaults pass every rule


@pytest.mark.parametrize("arg,key", [
    ("seed=-1", "seed"), ("seed=99999999999", "seed"),
    ("input_size=8", "input_size"), ("input_size=100", "input_size"),
    ("joint_num=0", "joint_num"), ("joint_num=5", "joint_num"),
    ("width=inf", "width"), ("width=nan", "width"), ("width=0", "width"),
    ("camera_intrinsics=0,0,0,0", "camera_intrinsics"), ("camera_intrinsics=500,nan,160,120", "camera_intrinsics"),
    ("camera_intrinsics=500,-500,160,120", "camera_intrinsics"),
    ("demo_test_frames=0", "demo_test_frames"), ("demo_train_frames=-3", "demo_train_frames"),
    ("cube_size=-50", "cube_size"), ("cube_size=1e9", "cube_size"),
    ("run_name=../../x", "run_name"), ("run_name=a/b", "run_name"), ("run_name=..", "run_name"),
    ("run_name=a\\b", "run_name"),
    ("lr=0", "lr"), ("lr=-1e-3", "lr"), ("lr=nan", "lr"), ("lr=inf", "lr"),
    ("gamma=0", "gamma"), ("gamma=1.5", "gamma"), ("weight_decay=-0.1", "weight_decay"),
    ("step_size=0", "step_size"), ("num_workers=-1", "num_workers"), ("batch_size=0", "batch_size"),
    ("max_epoch=0", "max_epoch"), ("test_views=1,4", "test_views"),
    ("center_depth_range=500,100", "center_depth_range"), ("center_depth_range=0,100", "center_depth_range"),
    ("occlusion_joints=5,2", "occlusion_joints"), ("feature_size=32", "feature_size"),
    ("device=tpu", "device"), ("aug_scale=0.9", "aug_scale"),
])
def test_bad_value_is_refused_naming_the_key(arg, key):
    with pytest.raises(ConfigError, match=rf"\b{key}\b") as info:
        load_config([arg])
    assert "Traceback" not in str(info.value)


def test_good_values_are_kept():
    cfg = load_config(["seed=4294967295", "input_size=64", "feature_size=32", "cube_size=300", "run_name=my_run-2.b",
                       "camera_intrinsics=475,475,315,245", "lr=1e-5", "gamma=1", "weight_decay=0", "num_workers=0",
                       "center_depth_range=300,900", "device=cpu"])
    assert (cfg.seed, cfg.input_size, cfg.feature_size, cfg.cube) == (2**32 - 1, 64, 32, 300.0)
    assert cfg.run_name == "my_run-2.b"
    assert cfg.camera == (475.0, 475.0, 315.0, 245.0) and cfg.center_depth_limits == (300.0, 900.0)
    assert (cfg.lr, cfg.gamma, cfg.weight_decay, cfg.num_workers, cfg.device) == (1e-5, 1.0, 0.0, 0, "cpu")
    assert load_config(["seed=0"]).seed == 0
    assert Config().center_depth_limits == (100.0, 5000.0)  # the NYU default of util/camera.py


def test_negative_cube_is_not_silently_replaced():
    assert load_config(["cube_size=0"]).cube == 250.0  # 0 means "dataset default" (documented)
    with pytest.raises(ConfigError, match="cube_size must be >= 0"):
        load_config(["cube_size=-50"])


def test_python_keyword_overrides_and_direct_construction_are_validated_too():
    with pytest.raises(ConfigError, match="seed"):
        load_config(seed=-1)
    with pytest.raises(ConfigError, match="batch_size"):
        Config(batch_size=0)


def test_every_float_key_refuses_non_finite_values():
    for name, f in _fields().items():
        if isinstance(f.default, float):
            for bad in (math.inf, -math.inf, math.nan):
                with pytest.raises(ConfigError, match=rf"\b{name}\b"):
                    load_config(**{name: bad})


def test_every_range_bound_is_enforced():
    """Just outside each finite bound of RANGES -> ConfigError naming the key (tuple keys: one element)."""
    defaults = Config()
    for key, bound in RANGES.items():
        default = getattr(defaults, key)
        elem_type = type(default[0]) if isinstance(default, tuple) and default else (
            float if isinstance(default, tuple) else type(default))
        length = len(default) if isinstance(default, tuple) and default else (
            {"camera_intrinsics": 4}.get(key, 2) if isinstance(default, tuple) else None)
        for edge, step in ((bound.lo, -1), (bound.hi, +1)):
            if not math.isfinite(edge):
                continue
            open_ = bound.lo_open if step < 0 else bound.hi_open
            bad = elem_type(edge) if open_ else elem_type(edge + step * max(1.0, abs(edge) * 1e-3))
            value = (bad,) * length if length else bad
            with pytest.raises(ConfigError, match=rf"\b{key}\b"):
                load_config(**{key: value})


def test_cuda_device_on_a_cpu_only_torch_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"device='cuda'.*no CUDA device.*device=cpu"):
        load_config(["device=cuda"])
    with pytest.raises(ConfigError, match=r"device='cuda:1'"):
        load_config(["device=cuda:1"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable CUDA device")
def test_cuda_device_refused_on_this_cpu_machine():
    with pytest.raises(ConfigError, match="device"):
        load_config(["device=cuda"])


def test_missing_cuda_index_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert load_config(["device=cuda:0"]).device == "cuda:0"
    with pytest.raises(ConfigError, match=r"cuda:3.*1 CUDA device"):
        load_config(["device=cuda:3"])


def test_extension_hook_registers_a_rule(monkeypatch):
    """A helper adding a rule with @config_check gets it applied at load time."""
    monkeypatch.setattr(config, "CHECKS", list(CHECKS))

    def no_odd_seeds(cfg):
        if cfg.seed % 2:
            raise ConfigError("seed must be even (test rule)")

    config.config_check(no_odd_seeds)
    assert load_config(["seed=2"]).seed == 2
    with pytest.raises(ConfigError, match="even"):
        load_config(["seed=3"])


def test_tuples_of_strings_are_left_to_their_own_rules():
    """A key holding a tuple of names (no RANGES entry) is not a numeric error; a ranged tuple must be numeric."""
    assert config._numbers("gestures", ("1", "IP", 2.5)) == [2.5]
    with pytest.raises(ConfigError, match="test_views must hold numbers only"):
        config._numbers("test_views", (1, "two"), numeric=True)
