"""Seeding and determinism: one call seeds every generator; per-item seeds make data augmentation a pure function
of (seed, epoch, item) so that it does not depend on loader workers, ranks or where a run was resumed.

See docs/DEVIATIONS.md, "Distributed/resume" (the official code seeds nothing).
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 62-bit seed for item ``index`` in ``epoch`` of a run seeded with ``seed``."""
    words = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(2, np.uint32)
    return (int(words[0]) << 30) ^ int(words[1])


class SeededItems(Dataset):
    """Wraps a data set whose ``__getitem__`` draws from torch's global CPU generator (augmentation): each item is
    loaded under its own seed :func:`item_seed` (seed, epoch, index), with the caller's generator state restored
    afterwards.

    Augmentation then depends only on (seed, epoch, index): the same with 0 or 8 loader workers, on any rank,
    and after resuming in the middle of an epoch. Call :meth:`set_epoch` before iterating an epoch (the loader must
    not keep persistent workers, which would hold a stale copy).
    """

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base, self.seed, self.epoch = base, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, self.epoch, index))
            return self.base[index]

    def __getattr__(self, name: str):  # frames, camera, ... of the wrapped data set
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)


def configure_determinism(*, deterministic: bool, cudnn_benchmark: bool) -> None:
    """CPU runs are repeatable without this; on CUDA, ``deterministic`` selects deterministic kernels (slower;
    ops without one raise) and turns cuDNN autotuning off, else ``cudnn_benchmark`` (official: on) applies."""
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark) and not deterministic
    torch.backends.cudnn.deterministic = bool(deterministic)
    torch.use_deterministic_algorithms(bool(deterministic), warn_only=False)


__all__ = ["seed_everything", "item_seed", "SeededItems", "configure_determinism"]
