"""Trainer scale and resilience (issue 15): torchrun DDP on CPU (gloo), exact resume after SIGKILL, refusal of bad
checkpoints, the non-finite guard, sharded test inference. Every run is tiny (width 0.125, batch 2, 2-3 steps)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import train_render as T
from config import load_config
from tests.launch import launch_env, run_torchrun, torchrun_cmd

REPO = Path(__file__).resolve().parents[1]
TINY = ["width=0.125", "batch_size=2", "transfer=none", "num_workers=0", "epoch_test=false", "img_log_every=1000",
        "num_points=256", "test_views=1"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Stand-in MANO model, a small NYU-format tree (8 train / 4 test frames) and a pre-training checkpoint."""
    root = tmp_path_factory.mktemp("assets")
    mano, tree = T.ensure_demo_assets(load_config([f"demo_dir={root}", "demo_train_frames=8",
                                                   "demo_test_frames=4"]))
    from model.pose_net import build_pose_net

    torch.manual_seed(0)
    torch.save({"model": build_pose_net(2, 21, width=0.125).state_dict()}, root / "pre.pth")
    return {"args": [f"mano_path={mano}", f"data_root={tree}"], "pre": str(root / "pre.pth"), "root": root}


_env = launch_env


def _cmd(*args: str, nproc: int = 1) -> list[str]:
    script = REPO / "train_render.py"
    return torchrun_cmd(script, *args, nproc=nproc) if nproc > 1 else [sys.executable, str(script), *args]


def _model(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


# ----------------------------------------------------------------------------------------------------
# exact resume
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finetune_args(assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return [f"output_dir={out}", *assets["args"], *TINY, "train_stage=finetune", f"finetune_dir={assets['pre']}",
            "iters_per_epoch=2", "max_epoch=2", "ckpt_every=1", "augment=true"], out / "nyu"


@pytest.fixture(scope="module")
def reference_run(finetune_args):
    """An uninterrupted fine-tuning run: 2 epochs x 2 iterations, latest.pth after every iteration."""
    args, runs = finetune_args
    proc = subprocess.run(_cmd(*args, "run_name=ref"), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return runs / "ref"


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(finetune_args, reference_run):
    args, runs = finetune_args
    victim = subprocess.Popen(_cmd(*args, "run_name=killed"), env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    latest = runs / "killed" / "latest.pth"
    deadline = time.time() + 240
    while not latest.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)  # wherever it is: mid-step, mid-write or between steps
    assert victim.wait(timeout=60) == -signal.SIGKILL
    saved = torch.load(latest, weights_only=True)
    assert (saved["epoch"], saved["step"]) < (1, 2), "the run finished before it was killed: nothing resumed"
    proc = subprocess.run(_cmd(*args, "run_name=killed", "resume=auto"), env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {latest}" in proc.stdout
    want, got = (torch.load(r / "latest.pth", weights_only=True) for r in (reference_run, runs / "killed"))
    assert (got["epoch"], got["step"]) == (want["epoch"], want["step"]) == (1, 2)
    for key, value in want["model"].items():
        assert torch.equal(got["model"][key], value), key  # bit for bit, BN statistics included
    for i, state in want["optimizer"]["state"].items():
        assert all(torch.equal(got["optimizer"]["state"][i][k], v) for k, v in state.items())


@pytest.mark.slow
def test_resume_refuses_truncated_mismatched_and_hostile_checkpoints(finetune_args, reference_run, tmp_path,
                                                                    capsys):
    args, _ = finetune_args
    good = reference_run / "latest.pth"
    data = good.read_bytes()

    def refused(path: Path, *extra: str) -> str:
        assert T.main([*args, f"run_name=r{time.monotonic_ns()}", f"resume={path}", *extra]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and "weights_only=False" not in err
        return err

    (tmp_path / "trunc.pth").write_bytes(data[: len(data) * 2 // 3])
    assert "truncated" in refused(tmp_path / "trunc.pth")
    err = refused(good, "lr=0.002", "seed=5")
    assert "cannot resume" in err and "lr: 0.001 -> 0.002" in err and "seed: 0 -> 5" in err
    assert "width" not in err  # only what differs
    older = torch.load(good, weights_only=True)
    del older["config"]["inter_branch"]  # a checkpoint from before a key existed: the key counts as its default
    torch.save(older, tmp_path / "older.pth")
    err = refused(tmp_path / "older.pth", "lr=0.002")
    assert "(1 key(s), saved -> now): lr: 0.001 -> 0.002." in err
    wider = load_config([*args, "width=0.25"])
    torch.save({"model": T.build_models(wider, torch.device("cpu"), transfer=False).net.state_dict()},
               tmp_path / "weights.pth")
    assert "not a DSF training checkpoint" in refused(tmp_path / "weights.pth")

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = torch.load(good, weights_only=True)
    ckpt["extra"]["payload"] = Exploit()
    torch.save(ckpt, tmp_path / "hostile.pth")
    assert "may execute code" in refused(tmp_path / "hostile.pth")
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------
# non-finite guard
# ----------------------------------------------------------------------------------------------------
def _poisoned_pretrain_step(bad_calls: set[int]):
    original = T.pretrain_step
    calls = {"n": 0}

    def step(models, syn, cfg):
        calls["n"] += 1
        res = original(models, syn, cfg)
        if calls["n"] in bad_calls:  # an injected NaN batch: every term of this step becomes NaN
            res.terms = {k: v * float("nan") for k, v in res.terms.items()}
        return res

    return step


@pytest.mark.slow
def test_nan_batch_is_skipped_counted_and_repeated_failures_stop(assets, tmp_path, monkeypatch, capsys):
    base = [f"output_dir={tmp_path}", *assets["args"], *TINY, "train_stage=pretrain", "iters_per_epoch=3",
            "max_epoch=1", "nan_max_consecutive=2"]
    monkeypatch.setattr(T, "pretrain_step", _poisoned_pretrain_step({2}))
    assert T.main([*base, "run_name=one_nan"]) == 0
    run = tmp_path / "nyu" / "one_nan"
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [s["stat/skipped_steps"] for s in log] == [0, 1, 1]
    assert np.isnan(log[1]["loss/total"]) and np.isfinite(log[2]["loss/total"])
    ckpt = torch.load(run / "latest.pth", weights_only=True)
    assert ckpt["extra"]["guard"] == {"skipped": 1, "consecutive": 0}
    assert all(int(s["step"]) == 2 for s in ckpt["optimizer"]["state"].values())  # 3 iterations, 2 updates
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert json.loads((run / "test_scores.json").read_text())["skipped_steps"] == 1

    monkeypatch.setattr(T, "pretrain_step", _poisoned_pretrain_step({1, 2, 3}))
    assert T.main([*base, "run_name=all_nan"]) == 3
    err = capsys.readouterr().err
    latest = tmp_path / "nyu" / "all_nan" / "latest.pth"
    assert "2 consecutive training steps had a non-finite loss" in err and f"finetune_dir={latest}" in err
    stopped = torch.load(latest, weights_only=True)
    assert (stopped["epoch"], stopped["step"], stopped["extra"]["guard"]["skipped"]) == (0, 2, 2)
    assert stopped["optimizer"]["state"] == {}  # never stepped: the saved weights are the initial, finite ones
    assert all(torch.isfinite(v).all() for v in stopped["model"].values())


# ----------------------------------------------------------------------------------------------------
# torchrun, 2 processes, gloo
# ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_process_training_keeps_replicas_identical(assets, tmp_path):
    args = [f"output_dir={tmp_path}", *assets["args"], *TINY, "train_stage=pretrain", "iters_per_epoch=2",
            "max_epoch=1", "run_name=ddp"]
    proc = subprocess.run(_cmd(*args, nproc=2), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the trainer all-gathers a bit-exact fingerprint of every parameter and buffer at the end and raises on any
    # difference; rank 0 reports the result
    assert proc.stdout.count("replicas in sync: 2 ranks hold bit-identical weights and buffers") == 1
    run = tmp_path / "nyu" / "ddp"
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # rank 0 logs, once per step
    ckpt = torch.load(run / "latest.pth", weights_only=True)
    assert ckpt["extra"]["world_size"] == 2 and len(ckpt["extra"]["ranks"]) == 2
    syn = [r["synthetic"]["generator"] for r in ckpt["extra"]["ranks"]]
    assert not torch.equal(syn[0], syn[1])  # each rank draws its own synthetic hands


DDP_STEP_WORKER = textwrap.dedent("""
    import sys
    import torch
    import train_render as T
    from config import load_config
    from util.distributed import cleanup_distributed, init_distributed, unwrap_model, wrap_ddp

    folder = sys.argv[1]
    info = init_distributed("cpu")
    cfg = load_config(sys.argv[2:])
    torch.manual_seed(0)
    models = T.build_models(cfg, torch.device("cpu"), transfer=False)
    models.net = wrap_ddp(models.net, info)
    opt, _ = T.build_optimizer(cfg, models.net)
    glob = torch.load(folder + "/global_batch.pt", weights_only=True)
    half = {k: v[2 * info.rank: 2 * info.rank + 2] for k, v in glob.items()}  # this rank's half of the batch
    res = T.pretrain_step(models, half, cfg)
    opt.zero_grad()
    T.weighted_total(res.terms, T.loss_weights(cfg)).backward()
    opt.step()
    torch.save({k: v for k, v in unwrap_model(models.net).named_parameters()}, f"{folder}/rank{info.rank}.pt")
    cleanup_distributed()
""")


@pytest.mark.slow
def test_ddp_step_equals_single_process_step_on_the_same_global_batch(assets, tmp_path):
    """DDP averages the ranks' gradients: one step of 2 ranks x 2 samples equals one single-process step whose
    gradient is the mean over the same two half-batches (BatchNorm normalises each half, as on each rank)."""
    args = [*assets["args"], *TINY, "opt=sgd", "lr=0.01"]
    cfg = load_config(args)
    from dataloader.builders import build_synthetic

    glob = build_synthetic(cfg, "cpu", "pretrain", batch_size=4).next_batch()
    torch.save({k: v for k, v in glob.items() if isinstance(v, torch.Tensor)}, tmp_path / "global_batch.pt")
    (tmp_path / "worker.py").write_text(DDP_STEP_WORKER)
    run_torchrun(tmp_path / "worker.py", tmp_path, *args, timeout=300)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # reference: one process, the two halves one after the other, gradients averaged, one SGD step
    torch.manual_seed(0)
    models = T.build_models(cfg, torch.device("cpu"), transfer=False)
    opt, _ = T.build_optimizer(cfg, models.net)
    initial = {k: v.detach().clone() for k, v in models.net.named_parameters()}
    opt.zero_grad()
    for r in (0, 1):
        half = {k: v[2 * r: 2 * r + 2] for k, v in glob.items() if isinstance(v, torch.Tensor)}
        (T.weighted_total(T.pretrain_step(models, half, cfg).terms, T.loss_weights(cfg)) / 2).backward()
    opt.step()
    moved = 0
    for name, want in models.net.named_parameters():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # replicas identical
        # float32 sums in another order (2 processes, other thread counts): agree to 0.1% of the update
        update = (want.detach() - initial[name]).abs().max()
        assert (ranks[0][name] - want.detach()).abs().max() <= 1e-3 * update + 1e-7, name
        moved += int(not torch.equal(want.detach(), initial[name]))
    assert moved > len(initial) // 2  # the comparison is about a real update


@pytest.mark.slow
def test_sharded_test_phase_equals_single_process(assets, tmp_path):
    args = [f"output_dir={tmp_path}", *assets["args"], *TINY, "phase=test", f"load_model={assets['pre']}"]
    single = subprocess.run(_cmd(*args, "run_name=one"), env=_env(), capture_output=True, text=True, timeout=300)
    sharded = subprocess.run(_cmd(*args, "run_name=two", nproc=2), env=_env(), capture_output=True, text=True,
                             timeout=300)
    assert single.returncode == 0 and sharded.returncode == 0, (single.stderr + sharded.stderr)[-3000:]
    one, two = tmp_path / "nyu" / "one", tmp_path / "nyu" / "two"
    for name in ("result_0_0.txt", "result_1_0.txt", "predictions_s2_mano_v1.txt"):
        a, b = np.loadtxt(one / name), np.loadtxt(two / name)
        assert a.shape == b.shape and a.shape[0] == 4  # every frame once, in frame order
        np.testing.assert_allclose(b, a, atol=2e-3)  # %.3f files


@pytest.mark.slow
def test_seed_makes_a_cpu_run_repeatable_bit_for_bit(assets, tmp_path):
    base = [f"output_dir={tmp_path}", *assets["args"], *TINY, "train_stage=pretrain", "iters_per_epoch=2",
            "max_epoch=1"]
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert T.main([*base, f"run_name={name}", f"seed={seed}"]) == 0
    a, b, c = (_model(tmp_path / "nyu" / n / "latest.pth") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed: identical weights and BN statistics
    assert not all(torch.equal(a[k], c[k]) for k in a)  # another seed: another run


def test_amp_path_keeps_geometry_and_losses_float32(assets, monkeypatch):
    """The CUDA bf16 path, exercised with CPU autocast: the network runs in bf16, the renderer called inside its
    forward gets float32 inputs, the step's losses and gradients are float32 and finite and close to fp32."""
    import contextlib
    import dataclasses

    import util.precision as P
    from dataloader.builders import build_synthetic

    cfg = load_config([*assets["args"], *TINY, "train_stage=pretrain"])
    torch.manual_seed(0)
    models = T.build_models(cfg, torch.device("cpu"), transfer=False)
    syn = build_synthetic(cfg, "cpu", "pretrain", batch_size=2).next_batch()
    fp32 = {k: float(v.detach()) for k, v in T.pretrain_step(models, syn, cfg).terms.items()}
    seen = []
    render = models.renderer.render_prediction

    def spy(theta, *a, **k):
        seen.append((theta.dtype, torch.is_autocast_enabled("cpu")))
        return render(theta, *a, **k)

    monkeypatch.setattr(models.renderer, "render_prediction", spy)
    monkeypatch.setattr(P, "autocast_context", lambda device, enabled: torch.autocast("cpu", dtype=torch.bfloat16)
                        if enabled else contextlib.nullcontext())
    amp_models = dataclasses.replace(models, renderer=P.Float32Calls(models.renderer), amp=True)
    res = T.pretrain_step(amp_models, syn, cfg)
    total = T.weighted_total(res.terms, T.loss_weights(cfg))
    total.backward()
    assert seen and all(s == (torch.float32, False) for s in seen)  # the stage-2 render: a float32 island
    assert res.syn_out.final.mano.dtype == torch.float32 and total.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in models.net.parameters() if p.grad is not None)
    for k, v in res.terms.items():  # bf16 network, same losses within bf16 rounding
        assert v.dtype == torch.float32 and float(v.detach()) == pytest.approx(fp32[k], rel=0.1, abs=1e-3), k
