"""Checkpoint reading and state-dict checks on hostile / careless files (issue 11)."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

from model.checkpoint import CheckpointError, as_state_dict, check_state_dict, read_checkpoint
from model.pose_net import load_pose_checkpoint

EXPECTED = "a test state dict"


class _RunsCode:
    """Unpickling this calls os.system (what a hostile checkpoint does)."""

    def __reduce__(self):
        return (os.system, ("echo this-must-never-run",))


class _Custom:
    pass


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def _refused(path) -> str:
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path, expected=EXPECTED)
    msg = str(info.value)
    assert msg.startswith(str(path)) and EXPECTED in msg, msg
    assert "weights_only=False" not in msg and "weights_only` set to `False" not in msg, msg
    assert info.value.__cause__ is None and info.value.__suppress_context__, "torch's advice must not be chained"
    return msg


@pytest.mark.parametrize("payload,global_name", [
    (_RunsCode(), "system"),  # posix.system / nt.system
    (_Custom(), "_Custom"),
])
def test_hostile_file_names_the_refused_global_and_warns_of_code_execution(tmp_path, capfd, payload, global_name):
    path = tmp_path / "hostile.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": payload}, path)
    msg = _refused(path)
    assert "refused" in msg and "may execute code" in msg, msg
    assert "global '" in msg and global_name in msg.split("global '")[1].split("'")[0], msg
    assert "this-must-never-run" not in capfd.readouterr().out


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_raw_pickle_and_garbage_are_refused_without_the_advice(tmp_path):
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_RunsCode(), protocol=4))
    assert "not a readable PyTorch checkpoint" in _refused(raw)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(bytes(range(256)) * 8)
    assert "not a readable PyTorch checkpoint" in _refused(garbage)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_naming_the_key(bad):
    state = _net().state_dict()
    state["0.weight"][1, 2] = bad
    with pytest.raises(CheckpointError, match=r"file\.pth: entry '0\.weight' holds 1 NaN or infinite value"):
        as_state_dict(state, source="file.pth", expected=EXPECTED)


def test_integer_tensor_for_a_float_parameter_is_refused_naming_the_key():
    net = _net()
    state = net.state_dict()
    state["0.bias"] = torch.tensor([1, 2], dtype=torch.int64)
    state["1.num_batches_tracked"] = torch.tensor(3.0)  # float for the int64 counter
    with pytest.raises(CheckpointError) as info:
        check_state_dict(net, as_state_dict(state, source="f.pth", expected=EXPECTED), source="f.pth",
                         expected=EXPECTED)
    msg = str(info.value)
    assert "dtype mismatches (2" in msg and "0.bias torch.int64 for torch.float32" in msg, msg
    assert "1.num_batches_tracked torch.float32 for torch.int64" in msg, msg
    # float16 / float64 for float32 is the same kind: accepted (load_state_dict casts exactly as intended)
    ok = {k: (v.double() if v.is_floating_point() else v) for k, v in net.state_dict().items()}
    check_state_dict(net, ok, source="f.pth", expected=EXPECTED)


def test_module_prefixed_and_plain_copies_of_one_key_are_refused(tmp_path):
    state = {f"module.{k}": v for k, v in _net().state_dict().items()}
    state["0.weight"] = torch.ones(2, 3)  # which copy wins would depend on dict order
    with pytest.raises(CheckpointError, match=r"both 'module\.0\.weight' and '0\.weight'"):
        as_state_dict(state, source="f.pth", expected=EXPECTED)
    path = tmp_path / "dup.pth"
    torch.save({"model": state, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match=r"dup\.pth: holds both 'module\.0\.weight' and '0\.weight'"):
        load_pose_checkpoint(path)  # the pose loader strips 'module.': it must see the duplicate first


def test_a_clean_checkpoint_still_loads(tmp_path):
    net = _net()
    path = tmp_path / "ok.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    state = as_state_dict(read_checkpoint(path, expected=EXPECTED), source=str(path), expected=EXPECTED)
    assert set(state) == {f"module.{k}" for k in net.state_dict()}
