"""util/seed.py: per-item seeded augmentation independent of order, workers and the caller's generator."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from util.seed import SeededItems, item_seed, seed_everything


class DrawsFromTorch(Dataset):
    """Each item is (index, one draw from torch's global generator), like NYUDataset's augmentation."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i):
        return torch.tensor([float(i), torch.rand(()).item()])


def test_items_depend_only_on_seed_epoch_index():
    items = SeededItems(DrawsFromTorch(), seed=3)
    forward = [items[i] for i in range(10)]
    backward = [items[i] for i in reversed(range(10))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    # each item's draw is torch's first draw after seeding with item_seed: an independent re-computation
    for i, item in enumerate(forward):
        torch.manual_seed(item_seed(3, 0, i))
        assert item[1].item() == torch.rand(()).item()
    items.set_epoch(1)
    assert not torch.equal(items[4], forward[4])
    assert len({round(float(x[1]), 6) for x in forward}) == 10


def test_caller_generator_is_untouched_and_workers_do_not_matter():
    seed_everything(0)
    expected = torch.rand(3)
    seed_everything(0)
    items = SeededItems(DrawsFromTorch(), seed=9)
    _ = items[2]
    assert torch.equal(torch.rand(3), expected)
    serial = torch.cat(list(DataLoader(items, batch_size=3, num_workers=0)))
    parallel = torch.cat(list(DataLoader(items, batch_size=3, num_workers=2)))
    assert torch.equal(serial, parallel)


def test_item_seed_is_well_spread():
    seeds = {item_seed(0, e, i) for e in range(3) for i in range(1000)}
    assert len(seeds) == 3000 and all(0 <= s < 2**62 for s in seeds)
