"""Training checkpoints: atomic writes, RNG round trip, refusal of bad files, config diffs, rotation, NaN guard."""
from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from util import checkpointing as ck
from util.checkpointing import (
    CheckpointError, NonFiniteError, NonFiniteGuard, atomic_save, check_resume_compatible, load_checkpoint,
    restore_training_state, rng_state, rotate_checkpoints, save_checkpoint, set_rng_state,
)

REPO = Path(__file__).resolve().parents[2]


def tiny_model(seed: int = 0, width: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, 2))


def train_steps(model, opt, sched, n: int, gen: torch.Generator) -> None:
    for _ in range(n):
        x = torch.randn(8, 3, generator=gen)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def make_training(seed: int = 0):
    model = tiny_model(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def write_checkpoint(path: Path, **kw) -> tuple[nn.Module, torch.optim.Optimizer, object]:
    model, opt, sched = make_training()
    train_steps(model, opt, sched, 2, torch.Generator().manual_seed(1))
    save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, epoch=3, step=5,
                    config={"lr": 1e-2, "width": 4, "views": (1, 2)}, **kw)
    return model, opt, sched


# ---------------------------------------------------------------------------------------------------- atomic
def test_atomic_save_exception_mid_write_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "latest.pth"
    atomic_save({"w": torch.arange(5.0)}, target)
    before = target.read_bytes()

    def broken_save(obj, f, *a, **k):  # writes half a file, then fails like a full disk / crash would
        f.write(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"w": torch.zeros(5)}, target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(5.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pth"]  # temporary file removed


def test_atomic_save_hard_crash_mid_write_keeps_previous_file(tmp_path):
    """A process killed mid-write (no cleanup runs) leaves the old file readable and only a stale temp file."""
    target = tmp_path / "latest.pth"
    atomic_save({"w": torch.arange(5.0)}, target)
    script = textwrap.dedent(f"""
        import os, torch
        from util import checkpointing as ck
        def dying_save(obj, f, *a, **k):
            f.write(b"PK\\x03\\x04 partial")
            f.flush()
            os._exit(9)  # like SIGKILL: no exception handler, no finally
        ck.torch.save = dying_save
        ck.atomic_save({{"w": torch.zeros(5)}}, {str(target)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(5.0))
    stale = [p.name for p in tmp_path.iterdir() if p.name != "latest.pth"]
    assert len(stale) == 1 and stale[0].startswith(".latest.pth.") and stale[0].endswith(".tmp")
    assert [p.name for p in rotate_checkpoints(tmp_path, keep_last=2)] == stale
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pth"]


# ---------------------------------------------------------------------------------------------------- RNG
def draws(gens):
    return (random.random(), random.gauss(0, 1), float(np.random.rand()), float(np.random.randn()),
            torch.rand(3).tolist(), torch.rand(2, generator=gens["synth"]).tolist(),
            gens["np"].random(2).tolist())


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    random.seed(5)
    random.gauss(0, 1)  # leaves a cached gaussian in the Python state
    np.random.seed(6)
    np.random.randn()  # and one in numpy's
    torch.manual_seed(7)
    gens = {"synth": torch.Generator().manual_seed(8), "np": np.random.default_rng(9)}
    state = rng_state(gens)
    expected = draws(gens)
    atomic_save({"rng": state}, tmp_path / "rng.pth")
    loaded = torch.load(tmp_path / "rng.pth", weights_only=True)["rng"]
    draws(gens)  # move every generator on
    set_rng_state(loaded, gens)
    assert draws(gens) == expected


def test_set_rng_state_names_missing_generator():
    state = rng_state({"a": torch.Generator()})
    with pytest.raises(ValueError, match=r"no generator\(s\) \['b'\]"):
        set_rng_state(state, {"b": torch.Generator()})


# ---------------------------------------------------------------------------------------------------- resume
def test_save_load_restore_continues_exactly(tmp_path):
    path = tmp_path / "latest.pth"
    gen = torch.Generator().manual_seed(3)
    model, opt, sched = write_checkpoint(path, generators={"data": gen})
    train_steps(model, opt, sched, 3, gen)  # uninterrupted continuation

    model2, opt2, sched2 = make_training(seed=99)  # different initial weights, fresh optimiser state
    gen2 = torch.Generator().manual_seed(12345)
    ckpt = load_checkpoint(path)
    assert (ckpt["epoch"], ckpt["step"], ckpt["config"]["views"]) == (3, 5, (1, 2))
    restore_training_state(ckpt, model=model2, optimizer=opt2, scheduler=sched2, generators={"data": gen2},
                           source=str(path))
    train_steps(model2, opt2, sched2, 3, gen2)
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), name
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_restore_refuses_mismatched_architecture(tmp_path):
    path = tmp_path / "latest.pth"
    write_checkpoint(path)
    wider = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    with pytest.raises(CheckpointError) as err:
        restore_training_state(load_checkpoint(path), model=wider, source=str(path))
    msg = str(err.value)
    assert str(path) in msg and "0.weight (4, 3) != (6, 3)" in msg and "shape mismatches" in msg


def test_save_refuses_unreadable_content_before_writing(tmp_path):
    model = tiny_model()
    with pytest.raises(TypeError, match=r"checkpoint\['config'\]\['fn'\] holds a function"):
        save_checkpoint(tmp_path / "x.pth", model=model, epoch=0, step=0, config={"fn": tiny_model})
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------- bad files
def assert_clear_refusal(path: Path, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "weights_only=False" not in msg and "set to `False`" not in msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def test_truncated_empty_and_garbage_files_are_refused(tmp_path):
    good = tmp_path / "good.pth"
    write_checkpoint(good)
    data = good.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "garbage.pth").write_bytes(bytes(range(256)) * 3)
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # one corrupted byte inside the archive
    (tmp_path / "flipped.pth").write_bytes(bytes(flipped))
    assert_clear_refusal(tmp_path / "trunc.pth", "not a complete torch.save archive (truncated")
    assert_clear_refusal(tmp_path / "empty.pth", "the file is empty")
    assert_clear_refusal(tmp_path / "garbage.pth", "not a complete torch.save archive")
    assert_clear_refusal(tmp_path / "flipped.pth", "corrupt")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint(tmp_path / "missing.pth")


def test_weights_file_that_is_not_a_training_checkpoint_is_refused(tmp_path):
    torch.save(tiny_model().state_dict(), tmp_path / "weights.pth")
    assert_clear_refusal(tmp_path / "weights.pth", "not a DSF training checkpoint", "cannot be resumed")
    good = tmp_path / "good.pth"
    write_checkpoint(good)
    ckpt = torch.load(good, weights_only=True)
    ckpt["step"] = "five"
    torch.save(ckpt, tmp_path / "badstep.pth")
    assert_clear_refusal(tmp_path / "badstep.pth", "'step' must be a int")


class _Exploit:
    """Pickles to a call of os.system on load (what a hostile checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_executing_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    good = tmp_path / "good.pth"
    write_checkpoint(good)
    ckpt = torch.load(good, weights_only=True)
    ckpt["extra"] = {"payload": _Exploit(marker)}
    torch.save(ckpt, tmp_path / "hostile.pth")
    with open(tmp_path / "hostile_raw.pth", "wb") as f:  # a plain pickle, not even a torch zip file
        pickle.dump({"model": _Exploit(marker)}, f)
    assert_clear_refusal(tmp_path / "hostile.pth", "system", "may execute code")
    assert_clear_refusal(tmp_path / "hostile_raw.pth", "not a complete torch.save archive")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------- config diff
def test_check_resume_compatible_lists_every_difference():
    saved = {"lr": 1e-3, "width": 1.0, "views": (1, 2), "device": "cuda", "augment": True, "old_key": 3}
    now = {"lr": 1e-4, "width": 1.0, "views": [1, 2], "device": "cpu", "augment": 1, "new_key": "x"}
    with pytest.raises(CheckpointError) as err:
        check_resume_compatible(saved, now, ignore={"device"}, source="run/latest.pth")
    msg = str(err.value)
    assert msg.startswith("run/latest.pth: cannot resume")
    assert "(4 key(s), saved -> now)" in msg
    for fragment in ("lr: 0.001 -> 0.0001", "augment: True -> 1", "old_key: 3 -> '<absent>'",
                     "new_key: '<absent>' -> 'x'"):
        assert fragment in msg
    assert "device" not in msg and "views" not in msg and "width" not in msg
    check_resume_compatible(saved, {**saved, "device": "cpu", "views": [1, 2]}, ignore={"device"})


# ---------------------------------------------------------------------------------------------------- rotation
def test_rotate_keeps_last_k_epochs_numerically(tmp_path):
    for e in (1, 2, 9, 10, 999, 1000):
        (tmp_path / ck.epoch_checkpoint_name(e)).write_bytes(b"x")
    for name in ("latest.pth", "best.pth", "epoch_notes.txt", "config.json"):
        (tmp_path / name).write_bytes(b"x")
    removed = rotate_checkpoints(tmp_path, keep_last=3)
    assert sorted(p.name for p in removed) == ["epoch_001.pth", "epoch_002.pth", "epoch_009.pth"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pth", "config.json", "epoch_010.pth", "epoch_1000.pth", "epoch_999.pth", "epoch_notes.txt",
        "latest.pth"]
    rotate_checkpoints(tmp_path, keep_last=0)
    assert not list(tmp_path.glob("epoch_*.pth"))
    with pytest.raises(ValueError, match="keep_last"):
        rotate_checkpoints(tmp_path, keep_last=-1)


# ---------------------------------------------------------------------------------------------------- guard
def backward(model, x, scale=1.0):
    model.zero_grad()
    loss = model(x).pow(2).mean() * scale
    loss.backward()
    return loss


def test_non_finite_guard_skips_counts_and_stops():
    model = tiny_model()
    x = torch.randn(4, 3)
    guard = NonFiniteGuard(max_consecutive=3)
    assert guard.check(backward(model, x), model) and guard.skipped == 0
    bad = x.clone()
    bad[0, 0] = float("nan")
    assert not guard.check(backward(model, bad), model)  # NaN loss and gradients
    assert all(p.grad is None for p in model.parameters())  # cleared: an optimiser step would move nothing
    loss = backward(model, x)
    next(model.parameters()).grad[0, 0] = float("inf")  # finite loss, one infinite gradient entry
    assert not guard.check(loss, model)
    assert (guard.skipped, guard.consecutive) == (2, 2)
    assert guard.check(backward(model, x), model)  # a good step resets the run of failures
    assert (guard.skipped, guard.consecutive) == (2, 0)
    assert not guard.check(backward(model, bad), model)
    assert not guard.check(torch.tensor(float("inf")), model)
    with pytest.raises(NonFiniteError, match=r"3 consecutive .* \(5 skipped in total\)"):
        guard.check(backward(model, bad), model)
    restored = NonFiniteGuard(max_consecutive=3)
    restored.load_state_dict(guard.state_dict())
    assert (restored.skipped, restored.consecutive) == (5, 3)


def test_resolve_resume_and_epoch_copies(tmp_path):
    assert ck.resolve_resume("", tmp_path) is None
    assert ck.resolve_resume("auto", tmp_path) is None  # nothing saved yet: a fresh start
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        ck.resolve_resume(str(tmp_path / "nope.pth"), tmp_path)
    for epoch in range(4):
        atomic_save({"epoch": epoch}, tmp_path / "latest.pth")
        ck.keep_epoch_copy(tmp_path, epoch, keep_last=2)
    assert ck.resolve_resume("auto", tmp_path) == tmp_path / "latest.pth"
    assert ck.resolve_resume(str(tmp_path), tmp_path) == tmp_path / "latest.pth"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["epoch_002.pth", "epoch_003.pth", "latest.pth"]
    # each epoch file keeps its own content after latest.pth was rewritten
    assert [torch.load(tmp_path / n, weights_only=True)["epoch"] for n in names] == [2, 3, 3]
    # another state file name (the Consis-CycleGAN training state): same rules
    assert ck.resolve_resume("auto", tmp_path, "state.pth") is None
    with pytest.raises(FileNotFoundError, match="state.pth"):
        ck.resolve_resume(str(tmp_path), tmp_path, "state.pth")
    atomic_save({"epoch": 0}, tmp_path / "state.pth")
    assert ck.resolve_resume(str(tmp_path), tmp_path, "state.pth") == tmp_path / "state.pth"
