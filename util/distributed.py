"""Multi-process training helpers around ``torch.distributed`` for runs launched with ``torchrun``.

One process per device: ``torchrun`` sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (plus the rendezvous
variables); :func:`init_distributed` reads them and joins the process group (``gloo`` on CPU, ``nccl`` on CUDA).
Without those variables everything here is a no-op on a single process, so the same code runs with and
without a launcher. Nothing here reads the project config; callers pass plain values.

Sharded inference convention: rank ``r`` of ``W`` owns the contiguous block ``shard_range(n, info)`` of the
``n`` frames (the first ``n % W`` ranks hold one extra frame); :func:`gather_rows` concatenates the blocks in
rank order, which is frame order.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data.distributed import DistributedSampler

_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the run.

    Attributes:
        rank: global index of this process, 0 .. world_size - 1.
        world_size: number of processes (1 = plain single-process run, no process group).
        local_rank: index of this process on its node (selects the CUDA device).
        device: the device this process computes on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on the one process that logs, writes checkpoints and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when several processes train together (a process group exists)."""
        return self.world_size > 1


def _env_int(name: str) -> int:
    text = os.environ[name]
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer (set by torchrun), got {text!r}") from None
    if value < 0:
        raise ValueError(f"environment variable {name} must be >= 0, got {value}")
    return value


def _resolve_device(device_pref: str, local_rank: int, launched: bool) -> torch.device:
    """``auto``/"" = CUDA when available else CPU; ``cpu``; ``cuda`` / ``cuda:N`` (under torchrun: cuda:LOCAL_RANK)."""
    pref = (device_pref or "auto").strip().lower()
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref == "cpu":
        return torch.device("cpu")
    if not pref.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device_pref!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {device_pref!r} requested but CUDA is not available (use device=cpu)")
    requested = torch.device(pref)
    if launched:
        # one process per GPU: the launcher's LOCAL_RANK picks the GPU; an explicit different index is a mistake
        if requested.index is not None and requested.index != local_rank:
            raise ValueError(f"device {device_pref!r} conflicts with torchrun's LOCAL_RANK={local_rank}; "
                             "use device=cuda (each process takes cuda:LOCAL_RANK)")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are "
                             "visible; start at most one process per GPU (torchrun --nproc_per_node)")
        return torch.device("cuda", local_rank)
    return requested if requested.index is not None else torch.device("cuda", torch.cuda.current_device())


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Join the torchrun process group, or describe a plain single-process run.

    Args:
        device_pref: ``"auto"`` (or ``""``), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    Returns:
        the :class:`DistInfo` of this process. With ``WORLD_SIZE`` > 1 the default process group is
        initialised (``nccl`` for CUDA devices, ``gloo`` for CPU) and, on CUDA, ``cuda:LOCAL_RANK`` is made current.
    Raises:
        ValueError: incomplete or invalid launcher variables, or an impossible device choice.
    """
    present = [k for k in _ENV_KEYS if k in os.environ]
    if not present:
        return DistInfo(device=_resolve_device(device_pref, 0, launched=False))
    if len(present) != len(_ENV_KEYS):
        missing = [k for k in _ENV_KEYS if k not in os.environ]
        raise ValueError(f"incomplete distributed environment: {', '.join(present)} set but {', '.join(missing)} "
                         "missing; launch with torchrun (or unset these variables for a single process)")
    rank, world_size, local_rank = (_env_int(k) for k in _ENV_KEYS)
    if world_size < 1 or rank >= world_size:
        raise ValueError(f"invalid distributed environment: RANK={rank}, WORLD_SIZE={world_size}")
    device = _resolve_device(device_pref, local_rank, launched=True)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kwargs)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup_distributed() -> None:
    """Leave the process group (if one was joined); safe to call in every run."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait until every rank arrives here (no-op for a single process)."""
    if not info.distributed:
        return
    if info.device.type == "cuda":
        dist.barrier(device_ids=[info.device.index])
    else:
        dist.barrier()


def reduce_mean(values: Mapping[str, float | torch.Tensor], info: DistInfo) -> dict[str, float]:
    """Average named scalars over the ranks (one collective for all of them).

    Every rank must pass the same keys. Scalars are reduced in float64; a non-finite value on any rank makes
    the mean non-finite.

    Args:
        values: {name: Python number or one-element tensor} of this rank.
    Returns:
        {name: mean over ranks} as Python floats, identical on every rank.
    """
    keys = sorted(values)
    local = []
    for key in keys:
        value = values[key]
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(f"reduce_mean: {key!r} must be a scalar, got a tensor of shape {tuple(value.shape)}")
            value = value.detach().reshape(()).to("cpu", torch.float64)
        local.append(torch.as_tensor(value, dtype=torch.float64))
    if not keys:
        return {}
    stacked = torch.stack(local)  # (K,) float64
    if info.distributed:
        stacked = stacked.to(info.device)
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        stacked = stacked.cpu() / info.world_size
    return {key: float(v) for key, v in zip(keys, stacked.tolist())}


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is True on at least one rank (keeps per-rank decisions in lockstep)."""
    if not info.distributed:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (picklable; between our own processes only), in rank order, on every rank."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def _shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_range(n: int, info: DistInfo) -> range:
    """This rank's contiguous block of ``range(n)``; blocks in rank order tile ``range(n)`` exactly.

    The first ``n % world_size`` ranks hold ``n // world_size + 1`` items, the others ``n // world_size``.
    """
    if n < 0:
        raise ValueError(f"shard_range: n must be >= 0, got {n}")
    return range(*_shard_bounds(n, info.rank, info.world_size))


def gather_rows(t: torch.Tensor, n_total: int, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's block of rows in rank order (frame order for :func:`shard_range` blocks).

    Args:
        t: (len(shard_range(n_total, info)), ...) this rank's rows; trailing shape and dtype equal on all ranks.
        n_total: total number of rows over all ranks.
    Returns:
        (n_total, ...) on every rank, on ``t``'s device.
    """
    own = shard_range(n_total, info)
    if t.shape[0] != len(own):
        raise ValueError(f"gather_rows: rank {info.rank} holds {t.shape[0]} rows but its block of {n_total} "
                         f"is {len(own)} rows ({own.start}..{own.stop - 1})")
    if not info.distributed:
        return t
    # all_gather needs equal shapes: pad every block to the largest one, then cut the padding off
    rows = -(-n_total // info.world_size)
    send = t.to(info.device)
    is_bool = send.dtype == torch.bool
    if is_bool:  # gloo has no bool reduction kernels for every op; uint8 is always supported
        send = send.to(torch.uint8)
    padded = send.new_zeros((rows, *send.shape[1:]))
    padded[: send.shape[0]] = send
    parts = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded.contiguous())
    blocks = [part[: (stop - start)] for part, (start, stop) in
              zip(parts, (_shard_bounds(n_total, r, info.world_size) for r in range(info.world_size)))]
    out = torch.cat(blocks)
    return (out.bool() if is_bool else out).to(t.device)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (also for a single process) that can start in the middle of an epoch.

    The order of epoch ``e`` is a pure function of (seed, e) -- a permutation shared by all ranks, rank ``r``
    taking every ``world_size``-th index from position ``r`` (padded by repetition so all ranks step together,
    as DistributedSampler does). :meth:`set_epoch` starts an epoch from its beginning; :meth:`skip` then drops the
    first ``n`` indices of this rank (the samples a resumed run already trained on).
    """

    def __init__(self, dataset, info: DistInfo, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        super().__init__(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning; a data set with ``set_epoch`` (per-item augmentation seeds,
        :class:`util.seed.SeededItems`) is told the epoch too, so one call serves every training loop."""
        super().set_epoch(epoch)
        self.start = 0
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def skip(self, n: int) -> None:
        """Leave out this rank's first ``n`` indices of the current epoch."""
        if not 0 <= n <= self.num_samples:
            raise ValueError(f"cannot skip {n} of this rank's {self.num_samples} samples")
        self.start = int(n)

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def tensor_fingerprints(module: nn.Module) -> torch.Tensor:
    """(N,) int64: an exact, position-sensitive checksum of the bits of every parameter and buffer."""
    sums = []
    for t in list(module.parameters()) + list(module.buffers()):
        flat = t.detach().reshape(-1)
        bits = flat.view(_INT_OF_SIZE[flat.element_size()])  # the raw bits, whatever the dtype
        weights = torch.arange(1, bits.numel() + 1, device=bits.device, dtype=torch.int64) % 65521 + 1
        sums.append((bits.to(torch.int64) * weights).sum())  # int64 wrap-around is deterministic
    return torch.stack(sums) if sums else torch.zeros(0, dtype=torch.int64)


def broadcast_buffers(model: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BN running statistics) to every rank (no-op for one process).

    DDP broadcasts buffers at the start of each forward, so after the last training forward every rank still holds
    the statistics of its own last batch; call this before evaluating or comparing replicas.
    """
    if not info.distributed:
        return
    with torch.no_grad():
        for buf in unwrap_model(model).buffers():
            moved = buf.to(info.device)
            dist.broadcast(moved, src=0)
            if moved is not buf:
                buf.copy_(moved)


def check_replicas_in_sync(model: nn.Module, info: DistInfo) -> None:
    """Raise RuntimeError unless every rank holds bit-identical parameters and buffers (no-op for one process).

    DDP keeps replicas identical by construction; this catches a rank that skipped or repeated an optimiser step.
    """
    if not info.distributed:
        return
    local = tensor_fingerprints(unwrap_model(model)).to(info.device)
    gathered = [torch.empty_like(local) for _ in range(info.world_size)]
    dist.all_gather(gathered, local)
    differing = [r for r, other in enumerate(gathered) if not torch.equal(other, gathered[0])]
    if differing:
        raise RuntimeError(f"model replicas diverged: rank(s) {differing} differ from rank 0")


def wrap_ddp(model: nn.Module, info: DistInfo, **ddp_kwargs) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else ``model`` unchanged.

    The model must already be on ``info.device``. Extra keyword arguments go to DDP (e.g.
    ``find_unused_parameters=True`` when a stage does not use every parameter).
    """
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP and ``torch.compile`` wrappers (whose state-dict keys carry no prefix)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):  # torch.compile's wrapper
            model = model._orig_mod
        else:
            return model


def rank_seed(seed: int, info: DistInfo) -> int:
    """A per-rank seed for data that every rank draws independently (synthetic hands, augmentation).

    Rank 0 keeps ``seed`` so a single-process run and rank 0 of a distributed run draw the same stream.
    """
    return seed + 1_000_003 * info.rank


__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "barrier", "reduce_mean", "any_rank",
           "gather_objects", "shard_range", "gather_rows", "wrap_ddp", "unwrap_model", "rank_seed",
           "ResumableSampler", "tensor_fingerprints", "broadcast_buffers", "check_replicas_in_sync"]
