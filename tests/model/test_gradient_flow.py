"""Gradient flow of the two-stage real-batch loss block (docs/method.md, gradient-flow table): which leaf each term
reaches. The block is ``bench/losses.py``'s composition of the library terms (teacher = detached stage 2)."""
from __future__ import annotations

import pytest
import torch

from bench.losses import CAM, loss_block, make_batch
from render.hand_renderer import HandRenderer
from render.mano_layer import ManoLayer

LEAVES = ("maps1", "maps2", "theta1", "theta2")
#: term -> the leaves it must reach (every other leaf must get exactly no gradient)
EXPECTED = {
    "distil_map": {"maps1"}, "distil_pwe": {"maps1"}, "distil_joint": {"theta1"}, "distil_mesh": {"theta1"},
    "coll1": {"theta1"}, "m2d1": {"theta1"}, "d2m1": {"theta1"}, "pd2m1": {"theta1"},
    "p2m": {"theta2"}, "coll2": {"theta2"}, "m2d2": {"theta2"}, "d2m2": {"theta2"}, "pd2m2": {"theta2"},
    "m2p": {"maps2"},
}


@pytest.fixture(scope="module")
def block(standin_model):
    layer = ManoLayer(standin_model)
    renderer = HandRenderer(layer, CAM)
    batch = make_batch(layer, renderer, 2, seed=0)
    return batch, loss_block(batch, layer, renderer, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("term", sorted(EXPECTED))
def test_each_term_reaches_only_its_leaves(block, term):
    batch, terms = block
    value = terms[term]
    assert torch.isfinite(value) and value.ndim == 0
    if term == "m2p":
        assert terms["_selected"].item() > 0, "the test batch should select some M2P pairs"
    grads = torch.autograd.grad(value, [batch[k] for k in LEAVES], retain_graph=True, allow_unused=True)
    reached = {k for k, g in zip(LEAVES, grads) if g is not None and bool(g.abs().sum() > 0)}
    if term.startswith("coll") and value.item() == 0.0:  # no penetration in this batch: nothing to reach
        assert reached <= EXPECTED[term]
    else:
        assert reached == EXPECTED[term]


def test_selection_and_labels_are_constants(block):
    _, terms = block
    assert not terms["_selected"].requires_grad
