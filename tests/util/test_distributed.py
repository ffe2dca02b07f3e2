"""util/distributed.py: single-process behaviour, sharding arithmetic, and a real 2-process gloo run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from util.distributed import (
    DistInfo, gather_rows, init_distributed, rank_seed, reduce_mean, shard_range, unwrap_model, wrap_ddp,
)

REPO = Path(__file__).resolve().parents[2]
LAUNCH_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@pytest.fixture
def no_launcher(monkeypatch):
    for key in LAUNCH_KEYS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_without_launcher_single_process_and_nothing_initialised(no_launcher):
    info = init_distributed("cpu")
    assert info == DistInfo(0, 1, 0, torch.device("cpu"))
    assert info.is_main and not info.distributed
    assert not torch.distributed.is_initialized()
    model = torch.nn.Linear(2, 2)
    assert wrap_ddp(model, info) is model and unwrap_model(model) is model
    assert reduce_mean({"a": 2.5, "b": torch.tensor([4.0])}, info) == {"a": 2.5, "b": 4.0}
    rows = torch.arange(6).reshape(3, 2)
    assert gather_rows(rows, 3, info) is rows
    with pytest.raises(ValueError, match="holds 3 rows but its block of 4 is 4 rows"):
        gather_rows(rows, 4, info)
    with pytest.raises(ValueError, match="must be a scalar"):
        reduce_mean({"v": torch.ones(2)}, info)


def test_incomplete_or_bad_launcher_environment_is_refused(no_launcher):
    no_launcher.setenv("RANK", "0")
    with pytest.raises(ValueError, match="WORLD_SIZE, LOCAL_RANK missing"):
        init_distributed("cpu")
    no_launcher.setenv("WORLD_SIZE", "2")
    no_launcher.setenv("LOCAL_RANK", "x")
    with pytest.raises(ValueError, match="LOCAL_RANK must be an integer"):
        init_distributed("cpu")
    no_launcher.setenv("LOCAL_RANK", "0")
    no_launcher.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2, WORLD_SIZE=2"):
        init_distributed("cpu")
    for key in LAUNCH_KEYS:
        no_launcher.delenv(key)
    with pytest.raises(ValueError, match="device must be"):
        init_distributed("tpu")


@pytest.mark.parametrize("n", [0, 1, 5, 7, 8, 8252])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shard_range_tiles_frames_in_rank_order(n, world):
    blocks = [shard_range(n, DistInfo(rank=r, world_size=world)) for r in range(world)]
    assert [i for b in blocks for i in b] == list(range(n))  # contiguous, in rank order, nothing twice
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_rank_seed_keeps_rank0_and_separates_ranks():
    seeds = [rank_seed(7, DistInfo(rank=r, world_size=4)) for r in range(4)]
    assert seeds[0] == 7 and len(set(seeds)) == 4


WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    from util.distributed import (any_rank, barrier, cleanup_distributed, gather_rows, init_distributed,
                                  reduce_mean, shard_range, unwrap_model, wrap_ddp)

    info = init_distributed("cpu")
    out = {"rank": info.rank, "world": info.world_size, "distributed": info.distributed,
           "backend": torch.distributed.get_backend()}
    out["mean"] = reduce_mean({"a": info.rank + 1.0, "b": torch.tensor(2.0 * info.rank)}, info)
    n = 7
    block = shard_range(n, info)
    out["block"] = [block.start, block.stop]
    frames = torch.arange(n, dtype=torch.float64)[block.start:block.stop]
    rows = torch.stack([frames * 10, -frames], dim=1)  # (len(block), 2): what this rank predicted
    out["gathered"] = gather_rows(rows, n, info).tolist()
    out["gathered_bool"] = gather_rows(frames > 3, n, info).tolist()
    out["any"] = [any_rank(info.rank == 1, info), any_rank(False, info)]
    # one DDP step, each rank with its half of a global batch of 8
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    ddp = wrap_ddp(net, info)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    ddp(x[4 * info.rank: 4 * info.rank + 4]).pow(2).mean().backward()
    opt.step()
    out["weights"] = [p.detach().tolist() for p in unwrap_model(ddp).parameters()]
    barrier(info)
    cleanup_distributed()
    json.dump(out, open(os.path.join(sys.argv[1], f"rank{info.rank}.json"), "w"))
""")


@pytest.mark.slow
def test_two_gloo_processes_reduce_gather_and_ddp(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_KEYS}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           str(script), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world"], r0["distributed"], r0["backend"]) == (0, 1, 2, True, "gloo")
    assert r0["mean"] == r1["mean"] == {"a": 1.5, "b": 1.0}
    assert (r0["block"], r1["block"]) == ([0, 4], [4, 7])
    expected = [[10.0 * i, -float(i)] for i in range(7)]  # frame order, from both ranks' blocks
    assert r0["gathered"] == r1["gathered"] == expected
    assert r0["gathered_bool"] == r1["gathered_bool"] == [i > 3 for i in range(7)]
    assert r0["any"] == r1["any"] == [True, False]
    # reference: one single-process SGD step on the whole batch of 8 (DDP averages the two half-batch gradients)
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    net(x).pow(2).mean().backward()
    with torch.no_grad():
        reference = [(p - 0.1 * p.grad).tolist() for p in net.parameters()]
    assert r0["weights"] == r1["weights"]  # replicas identical
    for got, want in zip(r0["weights"], reference):
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-6, atol=1e-7)
