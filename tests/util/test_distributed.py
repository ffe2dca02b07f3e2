"""util/distributed.py: single-process behaviour, sharding arithmetic, and a real 2-process gloo run."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch

from util.distributed import (
    DistInfo, gather_rows, init_distributed, rank_seed, reduce_mean, shard_range, unwrap_model, wrap_ddp,
)

from tests.launch import run_torchrun

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
    from util.distributed import (any_rank, barrier, broadcast_buffers, check_replicas_in_sync, cleanup_distributed, gather_rows,
                                  init_distributed, reduce_mean, shard_range, unwrap_model, wrap_ddp)

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
    bn = torch.nn.BatchNorm1d(2)
    bn(torch.randn(4, 2, generator=torch.Generator().manual_seed(info.rank)))  # rank-specific running stats
    broadcast_buffers(bn, info)
    out["bn_after"] = bn.running_mean.tolist()
    check_replicas_in_sync(ddp, info)  # identical after a DDP step: no error
    if info.rank == 1:
        with torch.no_grad():
            net.bias[0] += 1e-6
    try:
        check_replicas_in_sync(ddp, info)
        out["diverged"] = None
    except RuntimeError as err:
        out["diverged"] = str(err)
    barrier(info)
    cleanup_distributed()
    json.dump(out, open(os.path.join(sys.argv[1], f"rank{info.rank}.json"), "w"))
""")


@pytest.mark.slow
def test_two_gloo_processes_reduce_gather_and_ddp(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    run_torchrun(script, tmp_path, timeout=120)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world"], r0["distributed"], r0["backend"]) == (0, 1, 2, True, "gloo")
    assert r0["mean"] == r1["mean"] == {"a": 1.5, "b": 1.0}
    assert (r0["block"], r1["block"]) == ([0, 4], [4, 7])
    expected = [[10.0 * i, -float(i)] for i in range(7)]  # frame order, from both ranks' blocks
    assert r0["gathered"] == r1["gathered"] == expected
    assert r0["gathered_bool"] == r1["gathered_bool"] == [i > 3 for i in range(7)]
    assert r0["any"] == r1["any"] == [True, False]
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(2)
    bn(torch.randn(4, 2, generator=torch.Generator().manual_seed(0)))
    assert r0["bn_after"] == r1["bn_after"] == bn.running_mean.tolist()  # rank 0's statistics everywhere
    assert r0["diverged"] == r1["diverged"] == "model replicas diverged: rank(s) [1] differ from rank 0"
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


def test_resumable_sampler_matches_distributed_sampler_and_skips():
    from torch.utils.data.distributed import DistributedSampler

    from util.distributed import ResumableSampler

    data = list(range(11))
    for world in (1, 2, 3):
        for rank in range(world):
            info = DistInfo(rank=rank, world_size=world)
            ours, ref = ResumableSampler(data, info, seed=5), DistributedSampler(
                data, num_replicas=world, rank=rank, seed=5)
            for epoch in (0, 3):
                ours.set_epoch(epoch)
                ref.set_epoch(epoch)
                full = list(ref)
                assert list(ours) == full and len(ours) == len(full)
                ours.skip(2)
                assert list(ours) == full[2:] and len(ours) == len(full) - 2
    # the rank blocks of one epoch cover the data set (padding repeats at most world - 1 items)
    order = [list(ResumableSampler(data, DistInfo(rank=r, world_size=3), seed=1)) for r in range(3)]
    assert sorted(set(i for o in order for i in o)) == data
    with pytest.raises(ValueError, match="cannot skip 5"):
        ResumableSampler(data, DistInfo(rank=0, world_size=3)).skip(5)


def test_tensor_fingerprints_see_single_bit_changes():
    from util.distributed import tensor_fingerprints

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    before = tensor_fingerprints(net)
    assert before.shape == (7,) and torch.equal(before, tensor_fingerprints(net))
    with torch.no_grad():
        w = net[0].weight.view(-1)
        w[5] = torch.nextafter(w[5], torch.tensor(2.0))  # one ulp
    after = tensor_fingerprints(net)
    assert not torch.equal(before[0], after[0]) and torch.equal(before[1:], after[1:])
    with torch.no_grad():  # swapping two entries changes the checksum (position sensitive)
        w[[0, 1]] = w[[1, 0]]
    assert not torch.equal(after[0], tensor_fingerprints(net)[0])
