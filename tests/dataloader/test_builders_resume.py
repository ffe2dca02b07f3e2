"""Resumable data streams of dataloader/builders.py: synthetic source state, real loader order and augmentation."""
from __future__ import annotations

import pytest
import torch

from config import load_config
from dataloader.builders import build_real_loader, build_synthetic
from util.distributed import DistInfo


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory, standin_pkl):
    from dataloader.standin_nyu import generate_standin_nyu

    root = tmp_path_factory.mktemp("nyu")
    generate_standin_nyu(root, 6, 1, seed=4, mano_path=str(standin_pkl), views=1, view_mode="copy")
    return root


def cfg_for(standin_pkl, tiny_tree=None, **kw):
    return load_config(mano_path=str(standin_pkl), data_root=str(tiny_tree or "data/nyu"), batch_size=2,
                       num_workers=0, seed=3, **kw)


def test_synthetic_source_state_resumes_the_stream(standin_pkl):
    cfg = cfg_for(standin_pkl)
    src = build_synthetic(cfg, "cpu", "finetune")
    src.next_batch()
    state = src.state_dict()
    assert state["drawn"] == 2
    expected = [src.next_batch() for _ in range(2)]  # what an uninterrupted run draws next
    fresh = build_synthetic(cfg, "cpu", "finetune")
    fresh.load_state_dict(state)
    for want in expected:
        got = fresh.next_batch()
        for key, value in want.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(got[key], value), key


def collect(loader, epoch):
    loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
    return [b for b in loader]


def test_real_loader_order_and_augmentation_resume_mid_epoch(standin_pkl, tiny_tree):
    cfg = cfg_for(standin_pkl, tiny_tree, augment=True)
    loader = build_real_loader(cfg, "train", train=True)
    full = collect(loader, 1)
    assert len(full) == 3 and sorted(i for b in full for i in b["index"].tolist()) == sorted(
        loader.dataset.frames.tolist())
    # a resumed run: a fresh loader (other workers) that skips the first batch of epoch 1
    resumed = build_real_loader(load_config(**{**cfg.to_dict(), "num_workers": 2}), "train", train=True)
    resumed.sampler.set_epoch(1)
    resumed.dataset.set_epoch(1)
    resumed.sampler.skip(2)
    rest = list(resumed)
    assert len(rest) == 2
    for want, got in zip(full[1:], rest):
        assert torch.equal(want["index"], got["index"]) and torch.equal(want["depth"], got["depth"])
        assert torch.equal(want["center_xyz"], got["center_xyz"])
    assert not torch.equal(collect(loader, 2)[0]["depth"], full[0]["depth"])  # new epoch, new order / augmentation
    loader.sampler.set_epoch(7)  # the sampler passes the epoch on (loops that only know DistributedSampler)
    assert loader.dataset.epoch == 7


def test_real_loader_ranks_split_the_epoch(standin_pkl, tiny_tree):
    cfg = cfg_for(standin_pkl, tiny_tree, augment=False)
    single = [i for b in collect(build_real_loader(cfg, "train", train=True), 0) for i in b["index"].tolist()]
    per_rank = [[i for b in collect(build_real_loader(cfg, "train", train=True, dist=DistInfo(r, 2, r)), 0)
                 for i in b["index"].tolist()] for r in range(2)]
    # DistributedSampler convention: the shared permutation dealt round-robin, so the global batch of 2 x 2 at each
    # step holds the same frames as the single-process batch of 4
    assert per_rank[0] == single[0::2] and per_rank[1] == single[1::2]
